// Package coretest runs a plugin in-process for tests: on free loopback ports, with a config file
// the test can rewrite, an environment that does not touch the process's, and its log captured.
package coretest

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/prism-gateway/plugins/core"
	"github.com/prism-gateway/plugins/core/config"
	"github.com/prism-gateway/plugins/core/healthwait"
)

// Options configure a plugin under test.
type Options struct {
	// YAML is the config file's content.
	YAML string
	// Env is the whole environment the config loader sees (the process env is not read).
	Env map[string]string
	// DevMode and DevDataDir select the embedded backend.
	DevMode    bool
	DevDataDir string
}

// Running is a plugin serving in this process.
type Running struct {
	Server *core.Server
	// Conn is a client connection to the plugin's gRPC listener.
	Conn *grpc.ClientConn
	// Addr is the gRPC address; MetricsURL the base URL of the metrics listener.
	Addr       string
	MetricsURL string
	// ConfigPath is the config file; rewrite it with WriteConfig and call Reload.
	ConfigPath string
	// Logs holds everything the plugin logged.
	Logs *Buffer

	cancel   context.CancelFunc
	done     chan struct{}
	serveErr error
}

// Start runs p until the test ends. Ports default to 0 (free) on 127.0.0.1.
func Start(tb testing.TB, p core.Plugin, opts Options) *Running {
	tb.Helper()
	dir := tb.TempDir()
	r := &Running{ConfigPath: filepath.Join(dir, "plugin.yaml"), Logs: &Buffer{}, done: make(chan struct{})}
	r.WriteConfig(tb, opts.YAML)
	env := map[string]string{
		"PRISM_CONTROL_PLANE_HOST": "127.0.0.1",
		"PRISM_CONTROL_PLANE_PORT": "0",
		"PRISM_METRICS_HOST":       "127.0.0.1",
		"PRISM_METRICS_PORT":       "0",
	}
	maps.Copy(env, opts.Env)
	lookup := func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	srv, err := core.New(ctx, p, core.Options{
		Source:     config.Source{Path: r.ConfigPath, Required: true, LookupEnv: lookup},
		DevMode:    opts.DevMode,
		DevDataDir: opts.DevDataDir,
		LogOutput:  r.Logs,
	})
	if err != nil {
		cancel()
		tb.Fatalf("start %s plugin: %v", p.Info().Name, err)
	}
	r.Server = srv
	r.Addr = srv.Addr().String()
	if a := srv.MetricsAddr(); a != nil {
		r.MetricsURL = "http://" + a.String()
	}
	go func() {
		defer close(r.done)
		r.serveErr = srv.Serve(ctx)
	}()
	conn, err := grpc.NewClient(r.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatalf("dial plugin: %v", err)
	}
	r.Conn = conn
	tb.Cleanup(func() {
		_ = conn.Close()
		if err := r.Stop(); err != nil {
			tb.Errorf("stop plugin: %v", err)
		}
	})
	return r
}

// Stop ends Serve (as SIGTERM would) and returns its error. Safe to call more than once.
func (r *Running) Stop() error {
	r.cancel()
	select {
	case <-r.done:
	case <-time.After(30 * time.Second):
		return errors.New("plugin did not stop within 30s")
	}
	return r.serveErr
}

// WriteConfig replaces the config file's content.
func (r *Running) WriteConfig(tb testing.TB, yaml string) {
	tb.Helper()
	if err := os.WriteFile(r.ConfigPath, []byte(yaml), 0o600); err != nil {
		tb.Fatalf("write config: %v", err)
	}
}

// WaitHealth polls grpc.health.v1 until service reports want, failing the test after timeout.
func (r *Running) WaitHealth(tb testing.TB, service string, want healthpb.HealthCheckResponse_ServingStatus, timeout time.Duration) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := healthwait.Until(ctx, r.Conn, service, want, nil); err != nil {
		tb.Fatalf("%v\nplugin log:\n%s", err, r.Logs.String())
	}
}

// Buffer is a goroutine-safe log sink.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Contains reports whether the log holds s.
func (b *Buffer) Contains(s string) bool { return strings.Contains(b.String(), s) }
