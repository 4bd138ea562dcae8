// Package healthtest is the health suite every plugin passes: grpc.health.v1 follows the real
// backend — SERVING once authenticated, NOT_SERVING (with the reason logged and the password
// never) when the credentials are refused, NOT_SERVING during an outage and SERVING again after
// it without a restart, and a plugin started while its backend is down serves once it comes.
package healthtest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/prism-gateway/plugins/core/coretest"
	"github.com/prism-gateway/plugins/internal/testsvc"
)

// Harness describes one plugin to the suite.
type Harness struct {
	// Service is the plugin's data service, e.g. "prism.cache.v1.CacheService".
	Service string
	// Backend is the real backend's host:port; the suite puts a fault proxy in front of it.
	Backend string
	// Password is the backend password that works.
	Password string
	// Start runs the plugin dialling addr instead of Backend, authenticating with password, with
	// yaml as its config file.
	Start func(t *testing.T, addr, password, yaml string) *coretest.Running
	// RefusedLog is what the plugin logs when the backend refuses its credentials.
	RefusedLog string
	// Patience bounds each wait for a health change that needs the backend (a Kafka client
	// reconnects more slowly than a Redis one); zero means 10s.
	Patience time.Duration
}

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.Patience == 0 {
		h.Patience = 10 * time.Second
	}
	const fast = "control_plane:\n  health_interval: 200ms\n  health_timeout: 1s\n"

	t.Run("serves once authenticated", func(t *testing.T) {
		r := h.Start(t, h.Backend, h.Password, "")
		r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, h.Patience)
		r.WaitHealth(t, h.Service, healthpb.HealthCheckResponse_SERVING, time.Second)
	})

	t.Run("a refused password is NOT_SERVING, logged why and never logged itself", func(t *testing.T) {
		const wrong = "definitely-not-the-password"
		r := h.Start(t, h.Backend, wrong, fast)
		require.Eventually(t, func() bool { return r.Logs.Contains(h.RefusedLog) }, h.Patience, 50*time.Millisecond,
			"the log says why the backend is unusable (%q)", h.RefusedLog)
		r.WaitHealth(t, "", healthpb.HealthCheckResponse_NOT_SERVING, time.Second)
		r.WaitHealth(t, h.Service, healthpb.HealthCheckResponse_NOT_SERVING, time.Second)
		assert.NotContains(t, r.Logs.String(), wrong)
	})

	t.Run("follows an outage without a restart", func(t *testing.T) {
		proxy := testsvc.NewProxy(t, h.Backend)
		r := h.Start(t, proxy.Addr(), h.Password, fast)
		r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, h.Patience)

		proxy.Down()
		r.WaitHealth(t, "", healthpb.HealthCheckResponse_NOT_SERVING, h.Patience)
		r.WaitHealth(t, h.Service, healthpb.HealthCheckResponse_NOT_SERVING, time.Second)

		proxy.Up()
		r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 2*h.Patience)
		r.WaitHealth(t, h.Service, healthpb.HealthCheckResponse_SERVING, time.Second)
	})

	t.Run("starts while the backend is down and serves when it comes", func(t *testing.T) {
		proxy := testsvc.NewProxy(t, h.Backend)
		proxy.Down()
		r := h.Start(t, proxy.Addr(), h.Password, fast)
		require.Eventually(t, func() bool { return proxy.Accepted() > 0 }, h.Patience, 20*time.Millisecond,
			"the plugin tries to reach its backend")
		time.Sleep(500 * time.Millisecond) // a couple of failed checks
		r.WaitHealth(t, "", healthpb.HealthCheckResponse_NOT_SERVING, time.Second)
		proxy.Up()
		r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 2*h.Patience)
		r.WaitHealth(t, h.Service, healthpb.HealthCheckResponse_SERVING, time.Second)
	})
}
