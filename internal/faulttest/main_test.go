package faulttest_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/prism-gateway/plugins/internal/faulttest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if err := faulttest.WriteSummary(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}

// Health timings of every plugin in this suite: a hang is seen within timeout+interval.
const (
	healthInterval = 200 * time.Millisecond
	healthTimeout  = 500 * time.Millisecond
	// slack covers the poll step and scheduling on a busy 2-core machine.
	slack = 100 * time.Millisecond
)

var controlPlaneYAML = fmt.Sprintf("control_plane:\n  health_interval: %s\n  health_timeout: %s\n", healthInterval, healthTimeout)

// healthStatus asks the plugin's health service once (service "": the whole plugin).
func healthStatus(conn *grpc.ClientConn) healthpb.HealthCheckResponse_ServingStatus {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return healthpb.HealthCheckResponse_UNKNOWN
	}
	return resp.GetStatus()
}

// untilHealth polls health every 10ms and returns how long it took to report want.
func untilHealth(t *testing.T, conn *grpc.ClientConn, want healthpb.HealthCheckResponse_ServingStatus, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for healthStatus(conn) != want {
		require.Less(t, time.Since(start), timeout, "health did not become %s", want)
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// hangScenario is one plugin with its backend link about to hang.
type hangScenario struct {
	conn   *grpc.ClientConn
	freeze func()
	thaw   func()
	// call makes one data call that needs the backend.
	call func(ctx context.Context) error
}

// checkHang freezes the backend and checks what the issue promises: every call returns
// DEADLINE_EXCEEDED (or UNAVAILABLE once health says NOT_SERVING) within its deadline + 100ms,
// health reports NOT_SERVING within health_timeout + health_interval, and after the thaw the
// plugin serves again by itself. It reports the figures.
func checkHang(t *testing.T, s hangScenario) {
	t.Helper()
	untilHealth(t, s.conn, healthpb.HealthCheckResponse_SERVING, 30*time.Second)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	require.NoError(t, s.call(ctx), "the backend answers before the freeze")
	cancel()

	s.freeze()
	frozenAt := time.Now()
	thawed := false
	t.Cleanup(func() { // a failed check must not leave the backend hung for the next test
		if !thawed {
			s.thaw()
		}
	})
	const deadline = 300 * time.Millisecond
	const calls = 10
	type result struct {
		took time.Duration
		err  error
	}
	results := make(chan result, calls)
	for range calls {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			start := time.Now()
			err := s.call(ctx)
			results <- result{time.Since(start), err}
		}()
	}
	untilHealth(t, s.conn, healthpb.HealthCheckResponse_NOT_SERVING, 10*time.Second)
	notServing := time.Since(frozenAt)
	var worst time.Duration
	for range calls {
		r := <-results
		require.Error(t, r.err, "a call succeeded while the backend hung")
		require.Contains(t, []codes.Code{codes.DeadlineExceeded, codes.Unavailable}, status.Code(r.err), "%v", r.err)
		worst = max(worst, r.took)
	}
	s.thaw()
	thawed = true
	thawedAt := time.Now()
	untilHealth(t, s.conn, healthpb.HealthCheckResponse_SERVING, 30*time.Second)
	recovered := time.Since(thawedAt)
	ctx, cancel = context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	require.NoError(t, s.call(ctx), "calls work again after the thaw")

	faulttest.Report(t, "deadline=%s worst_call=%s not_serving_after=%s (bound %s) serving_again_after_thaw=%s",
		deadline, worst.Round(time.Millisecond), notServing.Round(time.Millisecond),
		healthTimeout+healthInterval, recovered.Round(time.Millisecond))
	require.LessOrEqual(t, worst, deadline+100*time.Millisecond, "a call outlived its deadline by more than 100ms")
	require.LessOrEqual(t, notServing, healthTimeout+healthInterval+slack,
		"health saw the hang later than health_timeout + health_interval")
}
