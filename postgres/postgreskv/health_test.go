package postgreskv_test

import (
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/prism-gateway/plugins/core/coretest"
	"github.com/prism-gateway/plugins/internal/testsvc"
	"github.com/prism-gateway/plugins/postgres/postgreskv"
)

const kvService = "prism.keyvalue.v1.KeyValueService"

// withHostAndPassword rewrites a PostgreSQL URL to dial host and use password.
func withHostAndPassword(t *testing.T, raw, host, password string) string {
	t.Helper()
	u, err := url.Parse(raw)
	require.NoError(t, err)
	if host != "" {
		u.Host = host
	}
	if password != "" {
		u.User = url.UserPassword(u.User.Username(), password)
	}
	return u.String()
}

func TestHealthServesOnceAuthenticatedWithPassword(t *testing.T) {
	r := coretest.Start(t, postgreskv.New(), coretest.Options{Env: map[string]string{"DATABASE_URL": testsvc.PostgresURL(t)}})
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 10*time.Second)
	r.WaitHealth(t, kvService, healthpb.HealthCheckResponse_SERVING, time.Second)
}

func TestWrongPasswordIsNotServingAndNeverLogged(t *testing.T) {
	const wrong = "definitely-not-the-password"
	dsn := withHostAndPassword(t, testsvc.PostgresURL(t), "", wrong)
	r := coretest.Start(t, postgreskv.New(), coretest.Options{
		YAML: "control_plane:\n  health_interval: 200ms\n",
		Env:  map[string]string{"DATABASE_URL": dsn},
	})
	require.Eventually(t, func() bool { return r.Logs.Contains("password authentication failed") }, 10*time.Second, 50*time.Millisecond,
		"the log says why the backend is unusable")
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_NOT_SERVING, time.Second)
	assert.NotContains(t, r.Logs.String(), wrong)
}

func TestPasswordKeyOverridesTheURLPassword(t *testing.T) {
	dsn := withHostAndPassword(t, testsvc.PostgresURL(t), "", "wrong-in-url")
	r := coretest.Start(t, postgreskv.New(), coretest.Options{Env: map[string]string{
		"DATABASE_URL":           dsn,
		"PRISM_BACKEND_PASSWORD": testsvc.Password,
	}})
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 10*time.Second)
}

func TestHealthFollowsADatabaseOutageWithoutRestart(t *testing.T) {
	base := testsvc.PostgresURL(t)
	u, err := url.Parse(base)
	require.NoError(t, err)
	proxy := testsvc.NewProxy(t, u.Host)
	r := coretest.Start(t, postgreskv.New(), coretest.Options{
		YAML: "control_plane:\n  health_interval: 200ms\n  health_timeout: 1s\n",
		Env:  map[string]string{"DATABASE_URL": withHostAndPassword(t, base, proxy.Addr(), "")},
	})
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 10*time.Second)

	proxy.Down()
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_NOT_SERVING, 10*time.Second)
	r.WaitHealth(t, kvService, healthpb.HealthCheckResponse_NOT_SERVING, time.Second)

	proxy.Up()
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 15*time.Second)
	r.WaitHealth(t, kvService, healthpb.HealthCheckResponse_SERVING, time.Second)
}

func TestStartsWhileTheDatabaseIsDownAndServesWhenItComes(t *testing.T) {
	base := testsvc.PostgresURL(t)
	u, err := url.Parse(base)
	require.NoError(t, err)
	proxy := testsvc.NewProxy(t, u.Host)
	proxy.Down()
	r := coretest.Start(t, postgreskv.New(), coretest.Options{
		YAML: "control_plane:\n  health_interval: 200ms\n",
		Env:  map[string]string{"DATABASE_URL": withHostAndPassword(t, base, proxy.Addr(), "")},
	})
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_NOT_SERVING, 5*time.Second)
	proxy.Up()
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 15*time.Second)
}
