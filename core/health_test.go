package core_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// A long outage must not turn the health loop into a tight loop: however many checks fail, they
// stay at most one per health_interval (the backoff once overflowed after ~37 failures).
func TestHealthCheckRateStaysBoundedInALongOutage(t *testing.T) {
	const interval = 100 * time.Millisecond
	p, r := startProbe(t, "control_plane:\n  health_interval: 100ms\n", nil)
	p.backendDown.Store(true)
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_NOT_SERVING, 5*time.Second)

	// Past the point where doubling from 100 ms overflowed (37 failures at one per interval).
	const window = 6 * time.Second
	before := p.healthChecks.Load()
	time.Sleep(window)
	checks := p.healthChecks.Load() - before
	t.Logf("%d health checks in %s of outage (interval %s)", checks, window, interval)
	assert.LessOrEqual(t, checks, int64(window/interval)+5, "at most one check per health_interval")
	assert.GreaterOrEqual(t, checks, int64(window/interval)/2, "checks go on during the outage")
	assert.NotContains(t, r.Logs.String(), `"retry_in":"0s"`)
	assert.NotContains(t, r.Logs.String(), `"retry_in":"-`)
}
