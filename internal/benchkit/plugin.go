package benchkit

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/prism-gateway/plugins/core"
	"github.com/prism-gateway/plugins/core/config"
	"github.com/prism-gateway/plugins/internal/healthwait"
)

// PluginProcessEnv marks the child process that serves the plugin when StartPlugin runs this
// binary again; a benchmark's main checks it first and, when set, serves the plugin instead.
const PluginProcessEnv = "PRISM_BENCH_PLUGIN_PROCESS"

// PluginSpec says which plugin StartPlugin runs and how.
type PluginSpec struct {
	// New makes the plugin when it is served in this process.
	New func() core.Plugin
	// Env is the plugin's configuration; the process environment overrides it. StartPlugin adds
	// the control-plane host and port.
	Env map[string]string
	// Service is the gRPC service whose health must be SERVING before the benchmark starts.
	Service string
	// InProcess serves the plugin inside this process rather than in a process of its own.
	InProcess bool
	// Timeout bounds the wait for SERVING.
	Timeout time.Duration
	// Backend names the backend in the error when the plugin never serves, e.g. "Redis at
	// 127.0.0.1:6379".
	Backend string
	// ClientTLS, when set, is how the benchmark's connection dials the plugin (TLS or mTLS);
	// otherwise it dials in plaintext.
	ClientTLS *tls.Config
}

// StartPlugin runs the plugin on a free loopback port, by default in a process of its own (this
// binary started again with PluginProcessEnv set), as it is deployed, so the plugin and the
// benchmark's client do not share a Go scheduler. It returns a connection once the plugin's
// service is SERVING, and a stop that closes the connection and stops the plugin.
func StartPlugin(ctx context.Context, spec PluginSpec) (*grpc.ClientConn, func(), error) {
	port := "0"
	if !spec.InProcess {
		var err error
		if port, err = FreePort(); err != nil {
			return nil, nil, err
		}
	}
	env := map[string]string{
		"PRISM_CONTROL_PLANE_HOST": "127.0.0.1",
		"PRISM_CONTROL_PLANE_PORT": port,
	}
	for k, v := range spec.Env {
		env[k] = v
	}
	var target string
	var stop func()
	if spec.InProcess {
		lookup := func(name string) (string, bool) {
			if v, ok := os.LookupEnv(name); ok {
				return v, true
			}
			v, ok := env[name]
			return v, ok
		}
		srv, err := core.New(ctx, spec.New(), core.Options{Source: config.Source{LookupEnv: lookup}, LogOutput: io.Discard})
		if err != nil {
			return nil, nil, fmt.Errorf("start plugin: %w", err)
		}
		serveCtx, cancelServe := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = srv.Serve(serveCtx)
		}()
		target = srv.Addr().String()
		stop = func() {
			cancelServe()
			<-done
		}
	} else {
		self, err := os.Executable()
		if err != nil {
			return nil, nil, fmt.Errorf("find this binary: %w", err)
		}
		cmd := exec.CommandContext(ctx, self) //nolint:gosec // this very binary, run again as the plugin
		cmd.Env = append(os.Environ(), PluginProcessEnv+"=1")
		for k, v := range env {
			if _, set := os.LookupEnv(k); !set {
				cmd.Env = append(cmd.Env, k+"="+v)
			}
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return nil, nil, fmt.Errorf("start plugin process: %w", err)
		}
		target = net.JoinHostPort("127.0.0.1", port)
		stop = func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
		}
	}
	creds := insecure.NewCredentials()
	if spec.ClientTLS != nil {
		creds = credentials.NewTLS(spec.ClientTLS)
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
	if err != nil {
		stop()
		return nil, nil, fmt.Errorf("dial plugin: %w", err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, spec.Timeout)
	defer cancel()
	if err := healthwait.Until(waitCtx, conn, spec.Service, healthpb.HealthCheckResponse_SERVING, nil); err != nil {
		_ = conn.Close()
		stop()
		return nil, nil, fmt.Errorf("plugin not serving after %s (is %s up? run make services): %w", spec.Timeout, spec.Backend, err)
	}
	return conn, func() { _ = conn.Close(); stop() }, nil
}

// FreePort is a loopback TCP port that was free a moment ago, for a plugin to listen on.
func FreePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer func() { _ = l.Close() }()
	_, port, err := net.SplitHostPort(l.Addr().String())
	return port, err
}
