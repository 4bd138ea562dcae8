package benchkit

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/prism-gateway/plugins/core"
	"github.com/prism-gateway/plugins/core/config"
	"github.com/prism-gateway/plugins/core/healthwait"
)

// PluginProcessEnv marks the child process that serves the plugin when StartPlugin runs this
// binary again; a benchmark's main calls Child first, which serves the plugin instead.
const PluginProcessEnv = "PRISM_BENCH_PLUGIN_PROCESS"

// FloorProcessEnv marks the child process that serves the floor when StartFloor runs this binary
// again; its value is the loopback address to listen on.
const FloorProcessEnv = "PRISM_BENCH_FLOOR_PROCESS"

// cpuProfileEnv carries the file a child process writes its CPU profile to.
const cpuProfileEnv = "PRISM_BENCH_CHILD_CPUPROFILE"

// floorWorkersEnv carries FloorSpec.StreamWorkers to the floor process.
const floorWorkersEnv = "PRISM_BENCH_FLOOR_STREAM_WORKERS"

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
	// Exec, when set, is a plugin binary to run as the plugin's process instead of this binary.
	Exec string
	// CPUProfile, when set, is a file the plugin process writes its CPU profile to (not with
	// InProcess or Exec).
	CPUProfile string
	// Timeout bounds the wait for SERVING.
	Timeout time.Duration
	// Backend names the backend in the error when the plugin never serves, e.g. "Redis at
	// 127.0.0.1:6379".
	Backend string
	// ClientTLS, when set, is how the benchmark's connection dials the plugin (TLS or mTLS);
	// otherwise it dials in plaintext.
	ClientTLS *tls.Config
}

// FloorSpec says how StartFloor runs the floor: a bare grpc-go server, no interceptors, whose
// handlers make the same backend round trip as the direct client.
type FloorSpec struct {
	// Env is read by the benchmark's FloorFunc in the floor process (backend address and the
	// like); the process environment overrides it.
	Env map[string]string
	// Service is the gRPC service whose health must be SERVING before the benchmark starts.
	Service string
	// CPUProfile, when set, is a file the floor process writes its CPU profile to.
	CPUProfile string
	// StreamWorkers, when positive, gives the floor grpc.NumStreamWorkers (as the plugins'
	// core does); zero keeps it bare, a goroutine per call.
	StreamWorkers int
	// Timeout bounds the wait for SERVING.
	Timeout time.Duration
	// Backend names the backend in the error when the floor never serves.
	Backend string
}

// FloorFunc registers the floor's service on srv and connects it to its backend, reading its
// settings from the environment; the returned release closes the backend client.
type FloorFunc func(ctx context.Context, srv *grpc.Server) (release func(), err error)

// Server is a gRPC server the benchmark started (the plugin or the floor) and its connection.
type Server struct {
	// Conn is the benchmark's connection to the server.
	Conn *grpc.ClientConn
	// PID is the server's process, whose CPU time CPU reads; 0 when it runs in this process.
	PID  int
	stop func()
}

// CPU is the CPU time the server's process has used so far; ok is false when the server has no
// process of its own (or s is nil), so its time cannot be told apart from the benchmark's.
func (s *Server) CPU() (d time.Duration, ok bool, err error) {
	if s == nil || s.PID == 0 {
		return 0, false, nil
	}
	d, err = ProcessCPU(s.PID)
	return d, err == nil, err
}

// Close closes the connection and stops the server; it is safe on nil and safe twice.
func (s *Server) Close() {
	if s == nil || s.stop == nil {
		return
	}
	_ = s.Conn.Close()
	s.stop()
	s.stop = nil
}

// Child serves the plugin (made by newPlugin) or the floor (set up by floor) when this process
// is a child that StartPlugin or StartFloor started, and then returns its exit code and true;
// in any other process it returns 0 and false at once. A benchmark's main calls it first.
func Child(newPlugin func() core.Plugin, floor FloorFunc) (int, bool) {
	if os.Getenv(PluginProcessEnv) == "" && os.Getenv(FloorProcessEnv) == "" {
		return 0, false
	}
	stopProfile, err := StartCPUProfile(os.Getenv(cpuProfileEnv))
	if err != nil {
		_, _ = fmt.Fprintln(os.Stderr, "bench child:", err)
		return 1, true
	}
	defer stopProfile()
	if os.Getenv(PluginProcessEnv) != "" {
		return core.Run(nil, newPlugin()), true
	}
	if floor == nil {
		_, _ = fmt.Fprintln(os.Stderr, "bench floor: this benchmark has no floor")
		return 1, true
	}
	if err := serveFloor(os.Getenv(FloorProcessEnv), floor); err != nil {
		_, _ = fmt.Fprintln(os.Stderr, "bench floor:", err)
		return 1, true
	}
	return 0, true
}

// serveFloor serves the floor on addr until SIGTERM or SIGINT: a grpc.NewServer with no options
// beyond the defaults (and stream workers when asked), the floor's service and the standard
// health service.
func serveFloor(addr string, floor FloorFunc) error {
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	var opts []grpc.ServerOption
	if v := os.Getenv(floorWorkersEnv); v != "" {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return fmt.Errorf("%s: %w", floorWorkersEnv, err)
		}
		opts = append(opts, grpc.NumStreamWorkers(uint32(n)))
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := grpc.NewServer(opts...)
	release, err := floor(ctx, srv)
	if err != nil {
		_ = lis.Close()
		return err
	}
	defer release()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	for name := range srv.GetServiceInfo() {
		hs.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	select {
	case <-ctx.Done():
		srv.Stop()
		if err := <-served; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("serve: %w", err)
		}
		return nil
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	}
}

// StartPlugin runs the plugin on a free loopback port, by default in a process of its own (this
// binary started again with PluginProcessEnv set), as it is deployed, so the plugin and the
// benchmark's client do not share a Go scheduler. It returns a connection once the plugin's
// service is SERVING, and a stop that closes the connection and stops the plugin.
func StartPlugin(ctx context.Context, spec PluginSpec) (*grpc.ClientConn, func(), error) {
	s, err := StartPluginServer(ctx, spec)
	if err != nil {
		return nil, nil, err
	}
	return s.Conn, s.Close, nil
}

// StartPluginServer is StartPlugin returning the Server, whose process CPU time the benchmark
// reads.
func StartPluginServer(ctx context.Context, spec PluginSpec) (*Server, error) {
	port := "0"
	if !spec.InProcess {
		var err error
		if port, err = FreePort(); err != nil {
			return nil, err
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
	s := &Server{}
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
			return nil, fmt.Errorf("start plugin: %w", err)
		}
		serveCtx, cancelServe := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = srv.Serve(serveCtx)
		}()
		target = srv.Addr().String()
		s.stop = func() {
			cancelServe()
			<-done
		}
	} else {
		mode := map[string]string{PluginProcessEnv: "1"}
		if spec.CPUProfile != "" {
			mode[cpuProfileEnv] = spec.CPUProfile
		}
		if spec.Exec != "" {
			mode = map[string]string{}
		}
		if _, set := os.LookupEnv(config.PathEnv); !set {
			// Keep a config file in the working directory out of the run: the environment
			// is the whole configuration.
			mode[config.PathEnv] = os.DevNull
		}
		pid, stop, err := startChild(ctx, spec.Exec, mode, env)
		if err != nil {
			return nil, fmt.Errorf("start plugin process: %w", err)
		}
		target = net.JoinHostPort("127.0.0.1", port)
		s.PID, s.stop = pid, stop
	}
	if err := s.dial(ctx, target, spec.ClientTLS, spec.Service, spec.Timeout); err != nil {
		return nil, fmt.Errorf("plugin not serving after %s (is %s up? run make services): %w", spec.Timeout, spec.Backend, err)
	}
	return s, nil
}

// StartFloor runs the floor in a process of its own (this binary started again with
// FloorProcessEnv set) on a free loopback port and returns it once its service is SERVING.
func StartFloor(ctx context.Context, spec FloorSpec) (*Server, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	target := net.JoinHostPort("127.0.0.1", port)
	mode := map[string]string{FloorProcessEnv: target}
	if spec.CPUProfile != "" {
		mode[cpuProfileEnv] = spec.CPUProfile
	}
	if spec.StreamWorkers > 0 {
		mode[floorWorkersEnv] = strconv.Itoa(spec.StreamWorkers)
	}
	pid, stop, err := startChild(ctx, "", mode, spec.Env)
	if err != nil {
		return nil, fmt.Errorf("start floor process: %w", err)
	}
	s := &Server{PID: pid, stop: stop}
	if err := s.dial(ctx, target, nil, spec.Service, spec.Timeout); err != nil {
		return nil, fmt.Errorf("floor not serving after %s (is %s up? run make services): %w", spec.Timeout, spec.Backend, err)
	}
	return s, nil
}

// startChild starts path (this binary when empty) with mode set in its environment and env
// added where the process environment does not set it, and returns its pid and a stop that
// sends SIGTERM and waits.
func startChild(ctx context.Context, path string, mode, env map[string]string) (int, func(), error) {
	if path == "" {
		self, err := os.Executable()
		if err != nil {
			return 0, nil, fmt.Errorf("find this binary: %w", err)
		}
		path = self
	}
	cmd := exec.CommandContext(ctx, path)
	cmd.Env = os.Environ()
	for k, v := range mode {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	for k, v := range env {
		if _, set := os.LookupEnv(k); !set {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return 0, nil, err
	}
	return cmd.Process.Pid, func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}, nil
}

// dial connects to target and waits until service is SERVING; on failure it stops the server.
func (s *Server) dial(ctx context.Context, target string, clientTLS *tls.Config, service string, timeout time.Duration) error {
	creds := insecure.NewCredentials()
	if clientTLS != nil {
		creds = credentials.NewTLS(clientTLS)
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
	if err != nil {
		s.stop()
		return fmt.Errorf("dial %s: %w", target, err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := healthwait.Until(waitCtx, conn, service, healthpb.HealthCheckResponse_SERVING, nil); err != nil {
		_ = conn.Close()
		s.stop()
		return err
	}
	s.Conn = conn
	return nil
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
