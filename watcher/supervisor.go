package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/durationpb"

	pluginv1 "github.com/prism-gateway/plugins/gen/prism/plugin/v1"
)

// Options says which plugin the supervisor builds and runs, and how.
type Options struct {
	Plugin       string        // postgres, kafka or redis
	Root         string        // module root holding ./<plugin>
	OutDir       string        // where rebuilt binaries go
	Addr         string        // host:port of the plugin's gRPC listener, for health and control calls
	Args         []string      // arguments passed to the plugin (--config, --dev)
	ReadyTimeout time.Duration // how long a new process has to become SERVING
	DrainTimeout time.Duration // longest Drain of the old process
}

// process is one running generation of the plugin.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

// Supervisor builds the plugin, runs one process of it and swaps in rebuilt ones.
type Supervisor struct {
	opts Options
	log  *slog.Logger

	mu         sync.Mutex
	current    *process
	generation int
}

// NewSupervisor returns a supervisor that has started nothing yet.
func NewSupervisor(opts Options, log *slog.Logger) *Supervisor {
	return &Supervisor{opts: opts, log: log}
}

// Build compiles the plugin into a fresh file and returns its path.
func (s *Supervisor) Build(ctx context.Context, generation int) (string, error) {
	out, err := filepath.Abs(filepath.Join(s.opts.OutDir, s.opts.Plugin+"-plugin."+strconv.Itoa(generation)))
	if err != nil {
		return "", fmt.Errorf("resolve build output: %w", err)
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./"+s.opts.Plugin) //nolint:gosec // plugin name is checked in main
	cmd.Dir = s.opts.Root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %w\n%s", s.opts.Plugin, err, b)
	}
	return out, nil
}

// Swap builds the plugin, starts the new binary on the same ports, waits for it to be SERVING,
// then drains and stops the old process. Any failure leaves the old process running.
func (s *Supervisor) Swap(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.generation++
	bin, err := s.Build(ctx, s.generation)
	if err != nil {
		return err
	}
	next, err := s.start(bin, s.generation)
	if err != nil {
		return err
	}
	if err := s.waitServing(ctx, next); err != nil {
		s.stop(next, 0)
		return fmt.Errorf("new process did not become SERVING, old one kept: %w", err)
	}
	old := s.current
	s.current = next
	if old != nil {
		s.drain(ctx, old)
		s.stop(old, s.opts.DrainTimeout+5*time.Second)
		_ = os.Remove(old.cmd.Path)
	}
	s.log.Info("plugin swapped in", "process", next.name, "pid", next.cmd.Process.Pid)
	return nil
}

// Reload asks the running process to re-read its configuration.
func (s *Supervisor) Reload(ctx context.Context) error {
	conn, err := grpc.NewClient(s.opts.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dial plugin: %w", err)
	}
	defer func() { _ = conn.Close() }()
	resp, err := pluginv1.NewPluginServiceClient(conn).Reload(ctx, &pluginv1.ReloadRequest{})
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	s.log.Info("config reloaded", "response", resp.String())
	return nil
}

// Stop drains and stops the running process; it is safe to call more than once.
func (s *Supervisor) Stop(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current == nil {
		return
	}
	s.drain(ctx, s.current)
	s.stop(s.current, s.opts.DrainTimeout+5*time.Second)
	s.current = nil
}

func (s *Supervisor) start(bin string, generation int) (*process, error) {
	name := s.opts.Plugin + "-watch-" + strconv.Itoa(generation)
	cmd := exec.Command(bin, s.opts.Args...) //nolint:gosec // the binary was just built by us
	cmd.Dir = s.opts.Root
	// Both generations bind the same ports; the name tells the watcher which one answers.
	cmd.Env = append(os.Environ(), "PRISM_CONTROL_PLANE_REUSE_PORT=true", "PRISM_PLUGIN_NAME="+name)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

// waitServing polls over fresh connections until one lands on p (the kernel spreads connections
// over both listeners) and its health says SERVING.
func (s *Supervisor) waitServing(ctx context.Context, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.ReadyTimeout)
	defer cancel()
	for {
		if s.isServing(ctx, p.name) {
			return nil
		}
		select {
		case <-p.done:
			return errors.New("process exited")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (s *Supervisor) isServing(ctx context.Context, name string) bool {
	conn, err := grpc.NewClient(s.opts.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return false
	}
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	info, err := pluginv1.NewPluginServiceClient(conn).GetInfo(ctx, &pluginv1.GetInfoRequest{})
	if err != nil || info.GetName() != name {
		return false
	}
	h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err == nil && h.GetStatus() == healthpb.HealthCheckResponse_SERVING
}

// drain calls Drain on p. With both generations on the port a connection may land on either,
// so it dials until p answers; if it never does, SIGTERM alone drains p (the plugin drains on
// SIGTERM too).
func (s *Supervisor) drain(ctx context.Context, p *process) {
	for range 50 {
		if s.tryDrain(ctx, p) {
			return
		}
	}
	s.log.Warn("could not reach the old process for Drain; stopping it with SIGTERM", "process", p.name)
}

func (s *Supervisor) tryDrain(ctx context.Context, p *process) bool {
	conn, err := grpc.NewClient(s.opts.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return false
	}
	defer func() { _ = conn.Close() }()
	cctx, cancel := context.WithTimeout(ctx, s.opts.DrainTimeout+5*time.Second)
	defer cancel()
	client := pluginv1.NewPluginServiceClient(conn)
	info, err := client.GetInfo(cctx, &pluginv1.GetInfoRequest{})
	if err != nil || info.GetName() != p.name {
		return false
	}
	resp, err := client.Drain(cctx, &pluginv1.DrainRequest{Timeout: durationpb.New(s.opts.DrainTimeout)})
	if err != nil {
		s.log.Warn("drain failed", "process", p.name, "error", err)
		return true
	}
	s.log.Info("old process drained", "process", p.name, "drained", resp.GetDrained())
	return true
}

func (s *Supervisor) stop(p *process, grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}
