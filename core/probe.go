package core

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/prism-gateway/plugins/core/config"
)

// probeHealth is --health-probe: container healthchecks in images with no shell (FROM scratch,
// distroless) run the plugin binary itself to ask the running plugin whether it is SERVING.
// It dials the loopback address of control_plane.port; inbound TLS is not supported here, so
// with tls.enabled use a gRPC probe that has certificates (Kubernetes' gRPC probe or grpc-health-probe).
func probeHealth(ctx context.Context, cfg *config.Config) error {
	if cfg.TLS.Enabled {
		return fmt.Errorf("health probe: tls.enabled is set; use a TLS-capable gRPC health probe")
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.ControlPlane.Port))
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("health probe: dial %s: %w", addr, err)
	}
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return fmt.Errorf("health probe: %s: %w", addr, err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("health probe: %s is %s", addr, resp.GetStatus())
	}
	return nil
}
