package rediscache

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseValuesReadsRawGetAndMGetReplies(t *testing.T) {
	v := func(s string) mgetEntry { return mgetEntry{found: true, value: []byte(s)} }
	cases := []struct {
		name    string
		raw     string
		keys    int
		want    []mgetEntry
		wantErr string
	}{
		{"an array of values and RESP3 nulls", "*3\r\n$1\r\na\r\n_\r\n$0\r\n\r\n", 3, []mgetEntry{v("a"), {}, v("")}, ""},
		{"a RESP2 null bulk string", "*2\r\n$-1\r\n$2\r\nbc\r\n", 2, []mgetEntry{{}, v("bc")}, ""},
		{"binary values with CR and LF inside", "*1\r\n$4\r\n\r\n\r\n\r\n", 1, []mgetEntry{v("\r\n\r\n")}, ""},
		{"one GET value", "$3\r\nxyz\r\n", 1, []mgetEntry{v("xyz")}, ""},
		{"one missing GET value", "_\r\n", 1, []mgetEntry{{}}, ""},
		{"an error reply keeps its text", "-NOPERM this user has no permissions\r\n", 1, nil, "NOPERM this user"},
		{"a redirect is an error of its own", "-MOVED 3999 127.0.0.1:7002\r\n", 1, nil, "MOVED 3999"},
		{"a RESP3 blob error", "!9\r\nWRONGTYPE\r\n", 1, nil, "WRONGTYPE"},
		{"fewer values than keys", "*1\r\n$1\r\na\r\n", 2, nil, "answered 1 values for 2 keys"},
		{"a value cut short", "*1\r\n$5\r\nab\r\n", 1, nil, "cut short"},
		{"bytes after the last value", "*1\r\n$1\r\na\r\n$1\r\nb\r\n", 1, nil, "after the last value"},
		{"an unexpected type", "*1\r\n:1\r\n", 1, nil, "unexpected RESP reply"},
		{"an empty reply", "", 1, nil, "unexpected RESP reply"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := make([]mgetEntry, tc.keys)
			err := parseValues([]byte(tc.raw), out, nil)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			for i := range out {
				assert.Equal(t, tc.want[i].found, out[i].found, "entry %d", i)
				assert.Equal(t, string(tc.want[i].value), string(out[i].value), "entry %d", i)
			}
		})
	}
	t.Run("values land at the group's request positions", func(t *testing.T) {
		out := make([]mgetEntry, 4)
		require.NoError(t, parseValues([]byte("*2\r\n$1\r\na\r\n$1\r\nb\r\n"), out, []int{3, 1}))
		assert.Equal(t, []mgetEntry{{}, v("b"), {}, v("a")}, out)
	})
}

// BenchmarkMGet compares, in one run, the store's MGet of 100 × 1 KiB (raw reply, values viewed
// in place) with go-redis's parsed MGET that the store used before (a string and an interface
// per value), on one Redis and on the cluster.
func BenchmarkMGet(b *testing.B) {
	for _, cluster := range []bool{false, true} {
		st := newTestStore(b, cluster, false)
		prefix := testKey(b, st, "mget")
		keys := make([]string, 100)
		for i := range keys {
			keys[i] = prefix + ":" + strconv.Itoa(i)
			require.NoError(b, st.client.Set(context.Background(), keys[i], bytes.Repeat([]byte("v"), 1024), time.Hour).Err())
		}
		b.Cleanup(func() { _, _ = st.delete(context.Background(), keys) })
		parsed := func(ctx context.Context) error {
			vals, err := st.client.MGet(ctx, keys...).Result()
			if err != nil {
				return err
			}
			out := make([]mgetEntry, len(keys))
			for i, v := range vals {
				if s, ok := v.(string); ok {
					out[i] = mgetEntry{found: true, value: readOnlyBytes(s)}
				}
			}
			return nil
		}
		raw := func(ctx context.Context) error {
			_, err := st.fetch(ctx, keys)
			return err
		}
		for _, m := range []struct {
			name string
			get  func(context.Context) error
		}{{"parsed", parsed}, {"raw", raw}} {
			if cluster && m.name == "parsed" {
				// A plain MGET cannot span the cluster's slots.
				continue
			}
			b.Run(fmt.Sprintf("cluster=%t/method=%s", cluster, m.name), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if err := m.get(context.Background()); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
