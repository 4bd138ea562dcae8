package faulttest_test

import (
	"context"
	"testing"

	"github.com/prism-gateway/plugins/core/coretest"
	cachev1 "github.com/prism-gateway/plugins/gen/prism/cache/v1"
	"github.com/prism-gateway/plugins/internal/testsvc"
	"github.com/prism-gateway/plugins/redis/rediscache"
)

// Redis hung (every byte held, connections open): Cache calls keep their deadline and health
// says NOT_SERVING in time.
func TestRedisHangKeepsDeadlinesAndHealth(t *testing.T) {
	proxy := testsvc.NewProxy(t, testsvc.RedisAddr(t))
	r := coretest.Start(t, rediscache.New(), coretest.Options{
		YAML: controlPlaneYAML,
		Env: map[string]string{
			"REDIS_ADDRESS": proxy.Addr(), "REDIS_USERNAME": testsvc.User, "REDIS_PASSWORD": testsvc.Password,
		},
	})
	cache := cachev1.NewCacheServiceClient(r.Conn)
	checkHang(t, hangScenario{conn: r.Conn, freeze: proxy.Freeze, thaw: proxy.Thaw,
		call: func(ctx context.Context) error {
			_, err := cache.Set(ctx, &cachev1.SetRequest{Namespace: "hang", Key: "k", Value: []byte("v")})
			return err
		}})
}
