//go:build !nodev

package postgreskv_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/prism-gateway/plugins/core/apierr"
	"github.com/prism-gateway/plugins/postgres/postgreskv"
)

// engine is what both stores offer.
type engine interface {
	Put(ctx context.Context, r postgreskv.PutRequest) ([]int64, error)
	Delete(ctx context.Context, r postgreskv.DeleteRequest) (int64, error)
	Get(ctx context.Context, r postgreskv.GetRequest) ([]postgreskv.Item, string, error)
	Scan(ctx context.Context, r postgreskv.ScanRequest) ([]postgreskv.Record, string, error)
	PurgeExpired(ctx context.Context, limit int) (int64, error)
	PurgeTokens(ctx context.Context, limit int) (int64, error)
}

// engines opens each store on fresh storage: a new PostgreSQL database or a new SQLite file,
// keeping idempotency tokens for retention. Every test below runs its cases on both, so the
// SQLite dev engine is held to the PostgreSQL engine's answers, wording included.
var engines = []struct {
	name string
	open func(t *testing.T, retention time.Duration) engine
}{
	{"postgres", func(t *testing.T, retention time.Duration) engine {
		t.Helper()
		_, pool := newTestStore(t, 4)
		key, err := postgreskv.Migrate(t.Context(), pool)
		require.NoError(t, err)
		return postgreskv.NewStore(pool, key, func() time.Duration { return retention })
	}},
	{"sqlite", func(t *testing.T, retention time.Duration) engine {
		t.Helper()
		st, err := postgreskv.OpenSQLiteStore(t.Context(), filepath.Join(t.TempDir(), "kv.db"), func() time.Duration { return retention })
		require.NoError(t, err)
		t.Cleanup(func() { assert.NoError(t, st.Close()) })
		return st
	}},
}

func put(t *testing.T, st engine, id string, keys ...string) []int64 {
	t.Helper()
	items := make([]postgreskv.PutItem, len(keys))
	for i, k := range keys {
		items[i] = postgreskv.PutItem{Key: []byte(k), Value: []byte("value of " + k)}
	}
	vs, err := st.Put(t.Context(), postgreskv.PutRequest{Namespace: "ns", ID: id, Items: items})
	require.NoError(t, err)
	return vs
}

func TestEnginesPreconditionFailures(t *testing.T) {
	cases := []struct {
		name string
		// pcs are built from the version of item "a" (present) and "gone" (never written).
		pcs  func(va int64) []postgreskv.Precondition
		want string // %d is va
	}{
		{"an item that exists when absence was required", func(va int64) []postgreskv.Precondition {
			return []postgreskv.Precondition{{Key: []byte("a"), Absent: true}}
		}, "preconditions[0]: item exists (version %d) but absent was required"},
		{"an item that does not exist when a version was required", func(va int64) []postgreskv.Precondition {
			return []postgreskv.Precondition{{Key: []byte("a"), Version: va}, {Key: []byte("gone"), Version: 7}}
		}, "preconditions[1]: item does not exist but version 7 was required"},
		{"an item at another version than the one required", func(va int64) []postgreskv.Precondition {
			return []postgreskv.Precondition{{Key: []byte("gone"), Absent: true}, {Key: []byte("a"), Version: va + 100}}
		}, "preconditions[1]: item has version %d but version %d was required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, eng := range engines {
				t.Run(eng.name, func(t *testing.T) {
					st := eng.open(t, time.Hour)
					va := put(t, st, "r", "a")[0]
					want := tc.want
					switch n := countVerbs(want); n {
					case 1:
						want = fmt.Sprintf(want, va)
					case 2:
						want = fmt.Sprintf(want, va, va+100)
					}
					_, err := st.Put(t.Context(), postgreskv.PutRequest{Namespace: "ns", ID: "r",
						Items: []postgreskv.PutItem{{Key: []byte("a"), Value: []byte("new")}}, Preconditions: tc.pcs(va)})
					require.ErrorIs(t, err, apierr.ErrAborted)
					require.EqualError(t, err, want)
					_, err = st.Delete(t.Context(), postgreskv.DeleteRequest{Namespace: "ns", ID: "r", Preconditions: tc.pcs(va)})
					require.ErrorIs(t, err, apierr.ErrAborted)
					require.EqualError(t, err, want, "a Delete words it the same")

					items, _, err := st.Get(t.Context(), postgreskv.GetRequest{Namespace: "ns", ID: "r", PageSize: 10, MaxBytes: 1 << 20})
					require.NoError(t, err)
					require.Len(t, items, 1, "nothing was written or deleted")
					assert.Equal(t, va, items[0].Version)
					assert.Equal(t, "value of a", string(items[0].Value))
				})
			}
		})
	}
}

func countVerbs(s string) int {
	n := 0
	for i := 0; i+1 < len(s); i++ {
		if s[i] == '%' && s[i+1] == 'd' {
			n++
		}
	}
	return n
}

func TestEnginesPreconditionsThatHoldLetTheWriteThrough(t *testing.T) {
	for _, eng := range engines {
		t.Run(eng.name, func(t *testing.T) {
			st := eng.open(t, time.Hour)
			va := put(t, st, "r", "a")[0]
			vs, err := st.Put(t.Context(), postgreskv.PutRequest{Namespace: "ns", ID: "r",
				Items:         []postgreskv.PutItem{{Key: []byte("a"), Value: []byte("x")}, {Key: []byte("b"), Value: []byte("y")}},
				Preconditions: []postgreskv.Precondition{{Key: []byte("a"), Version: va}, {Key: []byte("b"), Absent: true}}})
			require.NoError(t, err)
			require.Len(t, vs, 2)
			assert.Greater(t, vs[0], va, "a rewrite gets a newer version")
			n, err := st.Delete(t.Context(), postgreskv.DeleteRequest{Namespace: "ns", ID: "r",
				Preconditions: []postgreskv.Precondition{{Key: []byte("b"), Version: vs[1]}}})
			require.NoError(t, err)
			assert.Equal(t, int64(2), n)
		})
	}
}

func TestEnginesIdempotencyTokens(t *testing.T) {
	for _, eng := range engines {
		t.Run(eng.name, func(t *testing.T) {
			st := eng.open(t, time.Hour)
			req := postgreskv.PutRequest{Namespace: "ns", ID: "r", IdempotencyToken: "tok",
				Items: []postgreskv.PutItem{{Key: []byte("b"), Value: []byte("1")}, {Key: []byte("a"), Value: []byte("2")}}}
			first, err := st.Put(t.Context(), req)
			require.NoError(t, err)
			again, err := st.Put(t.Context(), req)
			require.NoError(t, err)
			assert.Equal(t, first, again, "a retry gets the first call's versions")

			other := req
			other.Items = other.Items[:1]
			_, err = st.Put(t.Context(), other)
			require.ErrorIs(t, err, apierr.ErrInvalidArgument, "the token belongs to a different request")

			del := postgreskv.DeleteRequest{Namespace: "ns", ID: "r", IdempotencyToken: "del"}
			n, err := st.Delete(t.Context(), del)
			require.NoError(t, err)
			assert.Equal(t, int64(2), n)
			n, err = st.Delete(t.Context(), del)
			require.NoError(t, err)
			assert.Equal(t, int64(2), n, "a retried Delete reports what the first one removed")
			_, err = st.Put(t.Context(), postgreskv.PutRequest{Namespace: "ns", ID: "r", IdempotencyToken: "del", Items: req.Items})
			require.ErrorIs(t, err, apierr.ErrInvalidArgument, "a Delete's token cannot answer a Put")
		})
	}
}

func TestEnginesPaging(t *testing.T) {
	cases := []struct {
		name     string
		pageSize int
		maxBytes int64
		wantGet  []int // items per Get page over keys k0..k4
		wantScan []int // items per Scan page over records r0..r2 holding k0..k4 each
	}{
		{"pages cut by count", 2, 1 << 20, []int{2, 2, 1}, []int{2, 2, 2, 2, 2, 2, 2, 1}},
		{"one page holds everything", 100, 1 << 20, []int{5}, []int{15}},
		// Each item is 2+11 bytes; the budget is soft, so the item that crosses it is in the page.
		{"pages cut by a soft byte budget", 100, 25, []int{2, 2, 1}, []int{2, 2, 2, 2, 2, 2, 2, 1}},
		{"a budget below one item still returns one", 100, 1, []int{1, 1, 1, 1, 1}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, eng := range engines {
				t.Run(eng.name, func(t *testing.T) {
					st := eng.open(t, time.Hour)
					keys := []string{"k3", "k0", "k4", "k1", "k2"}
					for _, id := range []string{"r1", "r0", "r2"} {
						put(t, st, id, keys...)
					}
					put(t, st, "other", "k0")

					var sizes []int
					var got []string
					token := ""
					for {
						items, next, err := st.Get(t.Context(), postgreskv.GetRequest{Namespace: "ns", ID: "r0",
							PageSize: tc.pageSize, MaxBytes: tc.maxBytes, PageToken: token})
						require.NoError(t, err)
						sizes = append(sizes, len(items))
						for _, it := range items {
							got = append(got, string(it.Key))
						}
						if next == "" {
							break
						}
						token = next
					}
					assert.Equal(t, tc.wantGet, sizes, "Get page sizes")
					assert.Equal(t, []string{"k0", "k1", "k2", "k3", "k4"}, got, "every key once, in order")

					if tc.wantScan == nil {
						return
					}
					sizes, got, token = nil, nil, ""
					for {
						recs, next, err := st.Scan(t.Context(), postgreskv.ScanRequest{Namespace: "ns", IDPrefix: "r",
							PageSize: tc.pageSize, MaxBytes: tc.maxBytes, PageToken: token})
						require.NoError(t, err)
						n := 0
						for _, rec := range recs {
							for _, it := range rec.Items {
								got = append(got, rec.ID+"/"+string(it.Key))
								n++
							}
						}
						sizes = append(sizes, n)
						if next == "" {
							break
						}
						token = next
					}
					assert.Equal(t, tc.wantScan, sizes, "Scan page sizes")
					require.Len(t, got, 15, "the prefix keeps record other out")
					assert.Equal(t, "r0/k0", got[0])
					assert.Equal(t, "r2/k4", got[14])
				})
			}
		})
	}
}

func TestEnginesRejectForeignPageTokens(t *testing.T) {
	for _, eng := range engines {
		t.Run(eng.name, func(t *testing.T) {
			st := eng.open(t, time.Hour)
			put(t, st, "r", "a", "b")
			_, token, err := st.Get(t.Context(), postgreskv.GetRequest{Namespace: "ns", ID: "r", PageSize: 1, MaxBytes: 1 << 20})
			require.NoError(t, err)
			require.NotEmpty(t, token)
			cases := []struct {
				name string
				call func() error
			}{
				{"a Get token on another record", func() error {
					_, _, err := st.Get(t.Context(), postgreskv.GetRequest{Namespace: "ns", ID: "s", PageSize: 1, MaxBytes: 1 << 20, PageToken: token})
					return err
				}},
				{"a Get token on a Scan", func() error {
					_, _, err := st.Scan(t.Context(), postgreskv.ScanRequest{Namespace: "ns", PageSize: 1, MaxBytes: 1 << 20, PageToken: token})
					return err
				}},
				{"a token that is not one", func() error {
					_, _, err := st.Get(t.Context(), postgreskv.GetRequest{Namespace: "ns", ID: "r", PageSize: 1, MaxBytes: 1 << 20, PageToken: "nope"})
					return err
				}},
			}
			for _, tc := range cases {
				err := tc.call()
				require.ErrorIs(t, err, apierr.ErrInvalidArgument, tc.name)
				assert.EqualError(t, err, "page_token: not a valid page token for this request", tc.name)
			}
		})
	}
}

func TestEnginesPurge(t *testing.T) {
	for _, eng := range engines {
		t.Run(eng.name, func(t *testing.T) {
			st := eng.open(t, time.Millisecond)
			_, err := st.Put(t.Context(), postgreskv.PutRequest{Namespace: "ns", ID: "r", IdempotencyToken: "tok", Items: []postgreskv.PutItem{
				{Key: []byte("short"), Value: []byte("x"), TTL: time.Millisecond},
				{Key: []byte("kept"), Value: []byte("y")},
			}})
			require.NoError(t, err)
			time.Sleep(50 * time.Millisecond) // past the item's TTL and the token's retention

			items, _, err := st.Get(t.Context(), postgreskv.GetRequest{Namespace: "ns", ID: "r", PageSize: 10, MaxBytes: 1 << 20})
			require.NoError(t, err)
			require.Len(t, items, 1, "an expired item is not read even before it is purged")
			assert.Equal(t, "kept", string(items[0].Key))

			n, err := st.PurgeExpired(t.Context(), 100)
			require.NoError(t, err)
			assert.Equal(t, int64(1), n, "the expired item is purged")
			n, err = st.PurgeExpired(t.Context(), 100)
			require.NoError(t, err)
			assert.Zero(t, n, "nothing is left to purge")
			n, err = st.PurgeTokens(t.Context(), 100)
			require.NoError(t, err)
			assert.Equal(t, int64(1), n, "the token past its retention is purged")
			t.Logf("purged 1 item and 1 token")
		})
	}
}
