package healthwait_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/prism-gateway/plugins/core/healthwait"
)

func TestUntil(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	hs.SetServingStatus("svc", healthpb.HealthCheckResponse_NOT_SERVING)

	t.Run("returns once the status is reached", func(t *testing.T) {
		time.AfterFunc(100*time.Millisecond, func() { hs.SetServingStatus("svc", healthpb.HealthCheckResponse_SERVING) })
		require.NoError(t, healthwait.Until(t.Context(), conn, "svc", healthpb.HealthCheckResponse_SERVING, nil))
	})
	t.Run("gives up at the deadline and says what it saw", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		defer cancel()
		err := healthwait.Until(ctx, conn, "svc", healthpb.HealthCheckResponse_NOT_SERVING, nil)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Contains(t, err.Error(), "last saw SERVING")
	})
	t.Run("stops when aborted", func(t *testing.T) {
		abort := make(chan struct{})
		close(abort)
		err := healthwait.Until(t.Context(), conn, "unknown", healthpb.HealthCheckResponse_SERVING, abort)
		require.ErrorIs(t, err, healthwait.ErrAborted)
	})
}
