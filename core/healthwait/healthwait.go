// Package healthwait waits for a gRPC server's health to reach a status, for the tests and
// benchmarks that start plugins and must not talk to them before they serve.
package healthwait

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// poll is the pause between two health checks.
const poll = 20 * time.Millisecond

// ErrAborted is returned when abort is closed before the status was reached.
var ErrAborted = errors.New("stopped waiting for health")

// Until polls grpc.health.v1 Check on conn for service until it reports want. It gives up when
// ctx ends or abort is closed (e.g. the plugin's process exited; nil never aborts), and then says
// what it saw last.
func Until(ctx context.Context, conn grpc.ClientConnInterface, service string, want healthpb.HealthCheckResponse_ServingStatus, abort <-chan struct{}) error {
	client := healthpb.NewHealthClient(conn)
	var last string
	for {
		checkCtx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := client.Check(checkCtx, &healthpb.HealthCheckRequest{Service: service})
		cancel()
		switch {
		case err == nil && resp.GetStatus() == want:
			return nil
		case err != nil && last != "" && waitOver(ctx):
			// The wait itself ended during this check: keep what the server said before.
		case err != nil:
			last = err.Error()
		default:
			last = resp.GetStatus().String()
		}
		select {
		case <-abort:
			return fmt.Errorf("%w: health of %q last %s", ErrAborted, service, last)
		case <-ctx.Done():
			return fmt.Errorf("health of %q: want %s, last saw %s: %w", service, want, last, ctx.Err())
		case <-time.After(poll):
		}
	}
}

// waitOver reports whether ctx has ended or reached its deadline; grpc-go's own deadline timer
// can fail a call a moment before ctx reports it.
func waitOver(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	d, ok := ctx.Deadline()
	return ok && time.Until(d) < time.Millisecond
}
