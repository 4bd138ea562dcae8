package core_test

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prism-gateway/plugins/core"
	cachev1 "github.com/prism-gateway/plugins/gen/prism/cache/v1"
	"github.com/prism-gateway/plugins/internal/testsvc"
	"github.com/prism-gateway/plugins/redis/rediscache"
)

// BenchmarkGCSettings runs cache Gets of 64 KiB from the shared Redis at 32 concurrent callers
// under three garbage collector settings, switched in alternating blocks in one run: Go's
// default, the memory limit a plugin sets in a 256 MiB container (90 %), and that limit with
// GOGC=400. It reports time and GC cycles per call for each.
func BenchmarkGCSettings(b *testing.B) {
	ctx := context.Background()
	cache := rediscache.New()
	startBarePlugin(b, cache, map[string]string{
		"REDIS_ADDRESS": testsvc.RedisAddr(b), "REDIS_USERNAME": testsvc.User, "REDIS_PASSWORD": testsvc.Password,
	})
	client := cachev1.NewCacheServiceClient(serveWithCodec(b, cache, core.NewServerCodec()))
	ns := fmt.Sprintf("gcbench%d", time.Now().UnixNano())
	_, err := client.Set(ctx, &cachev1.SetRequest{Namespace: ns, Key: "64k", Value: bytes.Repeat([]byte("v"), 64<<10)})
	require.NoError(b, err)
	b.Cleanup(func() {
		_, _ = client.Delete(context.Background(), &cachev1.DeleteRequest{Namespace: ns, Keys: []string{"64k"}})
	})

	prevPercent, prevLimit := debug.SetGCPercent(100), debug.SetMemoryLimit(-1)
	b.Cleanup(func() { debug.SetGCPercent(prevPercent); debug.SetMemoryLimit(prevLimit) })
	settings := []struct {
		name    string
		percent int
		limit   int64
	}{
		{"default", 100, prevLimit},
		{"limit", 100, 256 << 20 * 9 / 10},
		{"limit+gogc400", 400, 256 << 20 * 9 / 10},
	}
	const conc, block = 32, 320
	wall := make([]time.Duration, len(settings))
	gcs := make([]uint32, len(settings))
	calls := 0
	var ms runtime.MemStats
	for b.Loop() {
		for i, s := range settings {
			debug.SetGCPercent(s.percent)
			debug.SetMemoryLimit(s.limit)
			runtime.ReadMemStats(&ms)
			gc0, t0 := ms.NumGC, time.Now()
			var wg sync.WaitGroup
			for range conc {
				wg.Go(func() {
					for range block / conc {
						if _, err := client.Get(ctx, &cachev1.GetRequest{Namespace: ns, Key: "64k"}); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			wall[i] += time.Since(t0)
			runtime.ReadMemStats(&ms)
			gcs[i] += ms.NumGC - gc0
		}
		calls += block
	}
	for i, s := range settings {
		b.ReportMetric(float64(wall[i].Nanoseconds())/float64(calls)/1e3, s.name+"-µs/op")
		b.ReportMetric(float64(gcs[i])/float64(calls)*1000, s.name+"-gc/1000op")
	}
}
