package rediscache

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/prism-gateway/plugins/core/apierr"
	"github.com/prism-gateway/plugins/internal/testsvc"
)

// newTestStore builds a store on the shared Redis (or the cluster) as the restricted ACL user.
func newTestStore(tb testing.TB, cluster, autoPipeline bool) *store {
	tb.Helper()
	b := defaultBackend()
	b.Username, b.Password = testsvc.User, testsvc.Password
	b.AutoPipeline = autoPipeline
	if cluster {
		b.Address = strings.Join(testsvc.RedisClusterAddrs(tb), ",")
	} else {
		b.Address = testsvc.RedisAddr(tb)
	}
	m, _ := newMetrics()
	st, err := newStore(b, m, nil)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = st.client.Close() })
	return st
}

// testKey is a key of its own under the ACL user's prefix, removed when the test ends.
func testKey(tb testing.TB, st *store, name string) string {
	tb.Helper()
	key := fmt.Sprintf("prism:storetest-%d:%s", time.Now().UnixNano(), name)
	tb.Cleanup(func() { _ = st.client.Del(context.Background(), key).Err() })
	return key
}

func TestGetReadsValueAndRemainingTTLTogether(t *testing.T) {
	for _, mode := range []struct {
		name                  string
		cluster, autoPipeline bool
		// batched sends every Get as the MULTI block of a shared batch, as under load, even
		// when it would be sent alone.
		batched bool
	}{
		{"single redis", false, false, false},
		{"redis cluster", true, false, false},
		{"single redis with auto-pipelining", false, true, false},
		{"redis cluster with auto-pipelining", true, true, false},
		{"single redis in a pipelined batch", false, true, true},
		{"redis cluster in a pipelined batch", true, true, true},
	} {
		t.Run(mode.name, func(t *testing.T) {
			st := newTestStore(t, mode.cluster, mode.autoPipeline)
			ctx := t.Context()
			get := st.get
			if mode.batched {
				get = func(ctx context.Context, key string) (getResult, error) {
					got, err := st.getPipelined(ctx, key, false)
					if err != nil {
						err = backendError(ctx, "get", err)
					}
					return got, err
				}
			}
			withTTL, noTTL, missing, wrongType := testKey(t, st, "ttl"), testKey(t, st, "no-ttl"), testKey(t, st, "missing"), testKey(t, st, "hash")
			large := bytes.Repeat([]byte("v"), 1<<20)
			require.NoError(t, st.client.Set(ctx, withTTL, large, time.Minute).Err())
			require.NoError(t, st.client.Set(ctx, noTTL, "plain", 0).Err())
			require.NoError(t, st.client.HSet(ctx, wrongType, "f", "v").Err())

			got, err := get(ctx, withTTL)
			require.NoError(t, err)
			assert.True(t, got.found)
			assert.Equal(t, large, got.value)
			assert.Greater(t, got.ttl, 50*time.Second, "remaining ttl of a one-minute key")
			assert.LessOrEqual(t, got.ttl, time.Minute)

			got, err = get(ctx, noTTL)
			require.NoError(t, err)
			assert.Equal(t, getResult{found: true, value: []byte("plain")}, got, "a key without expiry has no ttl")

			got, err = get(ctx, missing)
			require.NoError(t, err)
			assert.Equal(t, getResult{}, got, "a missing key is not an error")

			_, err = get(ctx, wrongType)
			require.ErrorContains(t, err, "WRONGTYPE", "a key of another type is the backend's error")

			_, err = get(ctx, "outside-the-acl-prefix")
			require.Error(t, err)
			assert.Equal(t, codes.PermissionDenied, apierr.Code(err), "%v", err)
			assert.Contains(t, err.Error(), "NOPERM", "the refusal names its reason, not EXECABORT")
		})
	}
}

// luaGetScript is the Lua script Get used before, kept here to measure against in the same run.
var luaGetScript = redis.NewScript(`local v = redis.call('GET', KEYS[1])
if not v then return false end
return {v, redis.call('PTTL', KEYS[1])}`)

// redisCPU is the Redis server's user+system CPU time so far (INFO cpu).
func redisCPU(tb testing.TB, c redis.UniversalClient) time.Duration {
	tb.Helper()
	info, err := c.Info(context.Background(), "cpu").Result()
	require.NoError(tb, err)
	var total float64
	for line := range strings.SplitSeq(info, "\r\n") {
		name, v, ok := strings.Cut(line, ":")
		if ok && (name == "used_cpu_sys" || name == "used_cpu_user") {
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(tb, err)
			total += f
		}
	}
	return time.Duration(total * float64(time.Second))
}

// BenchmarkGet compares, in one run, the store's MULTI GET PTTL EXEC with the Lua script it
// replaced, for 1 KiB, 64 KiB and 1 MiB values, one caller and 32 concurrent callers. Besides
// ns/op it reports the Redis server's CPU per Get (the shared Redis: other clients add noise).
func BenchmarkGet(b *testing.B) {
	st := newTestStore(b, false, false)
	lua := func(ctx context.Context, key string) error {
		res, err := luaGetScript.Run(ctx, st.client, []string{key}).Slice()
		if err == nil && len(res) != 2 {
			err = fmt.Errorf("script answered %d elements", len(res))
		}
		return err
	}
	multi := func(ctx context.Context, key string) error {
		got, err := st.get(ctx, key)
		if err == nil && !got.found {
			err = fmt.Errorf("%s not found", key)
		}
		return err
	}
	for _, size := range []int{1 << 10, 64 << 10, 1 << 20} {
		key := testKey(b, st, strconv.Itoa(size))
		require.NoError(b, st.client.Set(context.Background(), key, bytes.Repeat([]byte("x"), size), time.Hour).Err())
		for _, conc := range []int{1, 32} {
			for _, m := range []struct {
				name string
				get  func(context.Context, string) error
			}{{"lua", lua}, {"multi", multi}} {
				b.Run(fmt.Sprintf("size=%dKiB/conc=%d/method=%s", size>>10, conc, m.name), func(b *testing.B) {
					ctx := context.Background()
					cpu := redisCPU(b, st.client)
					b.SetParallelism(max(1, conc/runtime.GOMAXPROCS(0)))
					b.ResetTimer()
					if conc == 1 {
						for b.Loop() {
							if err := m.get(ctx, key); err != nil {
								b.Fatal(err)
							}
						}
					} else {
						b.RunParallel(func(pb *testing.PB) {
							for pb.Next() {
								if err := m.get(ctx, key); err != nil {
									b.Error(err)
									return
								}
							}
						})
					}
					b.StopTimer()
					b.ReportMetric(float64(redisCPU(b, st.client)-cpu)/float64(time.Microsecond)/float64(b.N), "redis-µs/op")
				})
			}
		}
	}
}
