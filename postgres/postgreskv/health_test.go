package postgreskv_test

import (
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/prism-gateway/plugins/conformance/healthtest"
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

func TestHealth(t *testing.T) {
	base := testsvc.PostgresURL(t)
	u, err := url.Parse(base)
	require.NoError(t, err)
	healthtest.Run(t, healthtest.Harness{
		Service: kvService, Backend: u.Host, Password: testsvc.Password,
		Start: func(t *testing.T, addr, password, yaml string) *coretest.Running {
			t.Helper()
			return coretest.Start(t, postgreskv.New(), coretest.Options{
				YAML: yaml, Env: map[string]string{"DATABASE_URL": withHostAndPassword(t, base, addr, password)},
			})
		},
		RefusedLog: "password authentication failed",
	})
}

func TestPasswordKeyOverridesTheURLPassword(t *testing.T) {
	dsn := withHostAndPassword(t, testsvc.PostgresURL(t), "", "wrong-in-url")
	r := coretest.Start(t, postgreskv.New(), coretest.Options{Env: map[string]string{
		"DATABASE_URL":           dsn,
		"PRISM_BACKEND_PASSWORD": testsvc.Password,
	}})
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 10*time.Second)
}
