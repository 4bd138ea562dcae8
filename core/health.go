package core

import (
	"context"
	"time"
)

// firstRetry is the first pause after a failed health check; pauses double up to the interval.
const firstRetry = 100 * time.Millisecond

// healthLoop checks the backend at once, then every control_plane.health_interval while healthy
// and with capped exponential backoff while not, publishing each transition to gRPC health.
func (s *Server) healthLoop(ctx context.Context) {
	retry := firstRetry
	failures := 0
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-s.healthWake:
		}
		cfg := s.Config()
		checkCtx, cancel := context.WithTimeout(ctx, cfg.ControlPlane.HealthTimeout)
		err := s.plugin.Health(checkCtx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		next := cfg.ControlPlane.HealthInterval
		if err == nil {
			s.metrics.checks.WithLabelValues("ok").Inc()
			s.metrics.backendUp.Set(1)
			if !s.healthy.Swap(true) {
				s.logger().Info("backend healthy: serving", "after_failures", failures)
			}
			failures, retry = 0, firstRetry
		} else {
			s.metrics.checks.WithLabelValues("error").Inc()
			s.metrics.backendUp.Set(0)
			failures++
			wasHealthy := s.healthy.Swap(false)
			// Log every transition, then every 10th failure so a long outage stays visible but quiet.
			next = min(retry, cfg.ControlPlane.HealthInterval)
			if wasHealthy || failures == 1 || failures%10 == 0 {
				s.logger().Warn("backend unhealthy: not serving", "error", err, "failures", failures, "retry_in", next.String())
			}
			retry = nextRetry(retry, cfg.ControlPlane.HealthInterval)
		}
		if !s.draining.Load() {
			s.setServing(s.healthy.Load())
		}
		timer.Reset(next)
	}
}

// nextRetry doubles the pause after a failed check up to interval. Capping before doubling keeps
// it from overflowing into a negative or zero pause (a tight loop) during a long outage.
func nextRetry(retry, interval time.Duration) time.Duration {
	if retry >= interval/2 {
		return interval
	}
	return 2 * retry
}

// wakeHealth runs a health check now instead of at the next tick.
func (s *Server) wakeHealth() {
	select {
	case s.healthWake <- struct{}{}:
	default:
	}
}
