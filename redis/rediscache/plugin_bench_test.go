package rediscache_test

import (
	"bytes"
	"fmt"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/prism-gateway/plugins/core/coretest"
	cachev1 "github.com/prism-gateway/plugins/gen/prism/cache/v1"
	"github.com/prism-gateway/plugins/internal/testsvc"
	"github.com/prism-gateway/plugins/redis/rediscache"
)

// BenchmarkPluginGet drives the whole plugin (core server, interceptors, metrics, store) with
// cache Gets of 1 KiB from the shared Redis, from one caller and from 32, in this process, so
// -cpuprofile and -memprofile show where a call's time and allocations go. cpu-µs/op is the
// process's CPU per call: plugin and benchmark client together.
func BenchmarkPluginGet(b *testing.B) {
	r := coretest.Start(b, rediscache.New(), coretest.Options{Env: map[string]string{
		"REDIS_ADDRESS": testsvc.RedisAddr(b), "REDIS_USERNAME": testsvc.User, "REDIS_PASSWORD": testsvc.Password,
	}})
	r.WaitHealth(b, "prism.cache.v1.CacheService", healthpb.HealthCheckResponse_SERVING, 15*time.Second)
	client := cachev1.NewCacheServiceClient(r.Conn)
	ns := fmt.Sprintf("plugbench%d", time.Now().UnixNano())
	_, err := client.Set(b.Context(), &cachev1.SetRequest{Namespace: ns, Key: "k", Value: bytes.Repeat([]byte("v"), 1<<10)})
	require.NoError(b, err)
	b.Cleanup(func() { _, _ = client.Delete(b.Context(), &cachev1.DeleteRequest{Namespace: ns, Keys: []string{"k"}}) })
	req := &cachev1.GetRequest{Namespace: ns, Key: "k"}
	for _, conc := range []int{1, 32} {
		b.Run(fmt.Sprintf("conc=%d", conc), func(b *testing.B) {
			b.ReportAllocs()
			var ru0 syscall.Rusage
			require.NoError(b, syscall.Getrusage(syscall.RUSAGE_SELF, &ru0))
			defer func() {
				var ru1 syscall.Rusage
				require.NoError(b, syscall.Getrusage(syscall.RUSAGE_SELF, &ru1))
				cpu := ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano()
				b.ReportMetric(float64(cpu)/1e3/float64(b.N), "cpu-µs/op")
			}()
			get := func() bool {
				resp, err := client.Get(b.Context(), req)
				if err != nil || !resp.GetFound() {
					b.Errorf("get: %v (found %t)", err, resp.GetFound())
					return false
				}
				return true
			}
			if conc == 1 {
				for b.Loop() {
					if !get() {
						return
					}
				}
				return
			}
			b.SetParallelism(max(1, conc/runtime.GOMAXPROCS(0)))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if !get() {
						return
					}
				}
			})
		})
	}
	if strings.Contains(r.Logs.String(), `"level":"ERROR"`) {
		b.Errorf("plugin logged errors:\n%s", r.Logs.String())
	}
}
