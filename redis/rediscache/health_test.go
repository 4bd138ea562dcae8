package rediscache_test

import (
	"strings"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/prism-gateway/plugins/conformance/healthtest"
	"github.com/prism-gateway/plugins/core/coretest"
	"github.com/prism-gateway/plugins/internal/testsvc"
	"github.com/prism-gateway/plugins/redis/rediscache"
)

const cacheService = "prism.cache.v1.CacheService"

func TestHealth(t *testing.T) {
	healthtest.Run(t, healthtest.Harness{
		Service: cacheService, Backend: testsvc.RedisAddr(t), Password: testsvc.Password,
		Start: func(t *testing.T, addr, password, yaml string) *coretest.Running {
			t.Helper()
			return coretest.Start(t, rediscache.New(), coretest.Options{YAML: yaml, Env: map[string]string{
				"REDIS_ADDRESS": addr, "REDIS_USERNAME": testsvc.User, "REDIS_PASSWORD": password,
			}})
		},
		RefusedLog: "WRONGPASS",
	})
}

func TestHealthServesAgainstTheRedisCluster(t *testing.T) {
	r := coretest.Start(t, rediscache.New(), coretest.Options{Env: map[string]string{
		"REDIS_ADDRESS":  strings.Join(testsvc.RedisClusterAddrs(t), ","),
		"REDIS_USERNAME": testsvc.User,
		"REDIS_PASSWORD": testsvc.Password,
	}})
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 10*time.Second)
}
