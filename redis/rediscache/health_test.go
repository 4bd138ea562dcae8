package rediscache_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/prism-gateway/plugins/core/coretest"
	"github.com/prism-gateway/plugins/internal/testsvc"
	"github.com/prism-gateway/plugins/redis/rediscache"
)

const cacheService = "prism.cache.v1.CacheService"

func TestHealthServesOnceAuthenticatedAsTheACLUser(t *testing.T) {
	r := coretest.Start(t, rediscache.New(), coretest.Options{Env: map[string]string{
		"REDIS_ADDRESS":  testsvc.RedisAddr(t),
		"REDIS_USERNAME": testsvc.User,
		"REDIS_PASSWORD": testsvc.Password,
	}})
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 10*time.Second)
	r.WaitHealth(t, cacheService, healthpb.HealthCheckResponse_SERVING, time.Second)
}

func TestHealthServesAgainstTheRedisCluster(t *testing.T) {
	r := coretest.Start(t, rediscache.New(), coretest.Options{Env: map[string]string{
		"REDIS_ADDRESS":  strings.Join(testsvc.RedisClusterAddrs(t), ","),
		"REDIS_USERNAME": testsvc.User,
		"REDIS_PASSWORD": testsvc.Password,
	}})
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 10*time.Second)
}

func TestWrongPasswordIsNotServingAndNeverLogged(t *testing.T) {
	const wrong = "definitely-not-the-password"
	r := coretest.Start(t, rediscache.New(), coretest.Options{
		YAML: "control_plane:\n  health_interval: 200ms\n",
		Env: map[string]string{
			"REDIS_ADDRESS":  testsvc.RedisAddr(t),
			"REDIS_USERNAME": testsvc.User,
			"REDIS_PASSWORD": wrong,
		},
	})
	require.Eventually(t, func() bool { return r.Logs.Contains("WRONGPASS") }, 10*time.Second, 50*time.Millisecond,
		"the log says why the backend is unusable")
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_NOT_SERVING, time.Second)
	assert.NotContains(t, r.Logs.String(), wrong)
}

func TestHealthFollowsARedisOutageWithoutRestart(t *testing.T) {
	proxy := testsvc.NewProxy(t, testsvc.RedisAddr(t))
	r := coretest.Start(t, rediscache.New(), coretest.Options{
		YAML: "control_plane:\n  health_interval: 200ms\n  health_timeout: 1s\n",
		Env: map[string]string{
			"REDIS_ADDRESS":  proxy.Addr(),
			"REDIS_USERNAME": testsvc.User,
			"REDIS_PASSWORD": testsvc.Password,
		},
	})
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 10*time.Second)

	proxy.Down()
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_NOT_SERVING, 10*time.Second)
	r.WaitHealth(t, cacheService, healthpb.HealthCheckResponse_NOT_SERVING, time.Second)

	proxy.Up()
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 15*time.Second)
}
