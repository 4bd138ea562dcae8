// Package binarytest builds a plugin binary and runs it as a separate process, the way operators
// and Kubernetes do, so tests can check flags, exit codes, signals and what the process prints.
package binarytest

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/prism-gateway/plugins/core/healthwait"
)

// Build compiles the main package in dir (relative to the test's working directory) with
// CGO_ENABLED=0, as `make binaries` does, and returns the binary's path.
func Build(tb testing.TB, dir string) string {
	tb.Helper()
	out := filepath.Join(tb.TempDir(), "plugin")
	cmd := exec.Command("go", "build", "-o", out, ".") //nolint:gosec // builds the test's own plugin package
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build %s: %v\n%s", dir, err, b)
	}
	return out
}

// Run executes the binary to completion and returns its exit code, stdout and stderr.
func Run(tb testing.TB, bin string, env []string, args ...string) (int, string, string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...) //nolint:gosec // runs the binary Build made
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		code = exitErr.ExitCode()
	} else if err != nil {
		tb.Fatalf("run %s: %v", bin, err)
	}
	return code, stdout.String(), stderr.String()
}

// Process is a plugin binary running in the background.
type Process struct {
	cmd         *exec.Cmd
	Port        int
	MetricsPort int
	Conn        *grpc.ClientConn

	mu     sync.Mutex
	stderr bytes.Buffer
	done   chan struct{}
	code   int
}

// Start runs bin with env plus free control-plane and metrics ports on 127.0.0.1.
func Start(tb testing.TB, bin string, env []string, args ...string) *Process {
	tb.Helper()
	p := &Process{Port: FreePort(tb), MetricsPort: FreePort(tb), done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...) //nolint:gosec // runs the binary Build made
	p.cmd.Env = append(append([]string{}, env...),
		"PRISM_CONTROL_PLANE_HOST=127.0.0.1", "PRISM_CONTROL_PLANE_PORT="+strconv.Itoa(p.Port),
		"PRISM_METRICS_HOST=127.0.0.1", "PRISM_METRICS_PORT="+strconv.Itoa(p.MetricsPort))
	p.cmd.Stderr = writerFunc(func(b []byte) (int, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.stderr.Write(b)
	})
	if err := p.cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		err := p.cmd.Wait()
		p.code = 0
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			p.code = exitErr.ExitCode()
		}
		close(p.done)
	}()
	conn, err := grpc.NewClient(p.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatalf("dial: %v", err)
	}
	p.Conn = conn
	tb.Cleanup(func() {
		_ = conn.Close()
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// Addr is the gRPC address.
func (p *Process) Addr() string { return "127.0.0.1:" + strconv.Itoa(p.Port) }

// MetricsURL is the metrics listener's base URL.
func (p *Process) MetricsURL() string { return "http://127.0.0.1:" + strconv.Itoa(p.MetricsPort) }

// Stderr is everything the process logged so far.
func (p *Process) Stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// Signal sends sig to the process.
func (p *Process) Signal(tb testing.TB, sig syscall.Signal) {
	tb.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		tb.Fatalf("signal: %v", err)
	}
}

// Wait waits up to timeout for the process to exit and returns its exit code.
func (p *Process) Wait(tb testing.TB, timeout time.Duration) int {
	tb.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(timeout):
		tb.Fatalf("process still running after %s\n%s", timeout, p.Stderr())
		return -1
	}
}

// WaitServing polls gRPC health for service "" until SERVING.
func (p *Process) WaitServing(tb testing.TB, timeout time.Duration) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := healthwait.Until(ctx, p.Conn, "", healthpb.HealthCheckResponse_SERVING, p.done)
	if errors.Is(err, healthwait.ErrAborted) {
		tb.Fatalf("process exited with %d before serving\n%s", p.code, p.Stderr())
	}
	if err != nil {
		tb.Fatalf("not SERVING within %s: %v\n%s", timeout, err, p.Stderr())
	}
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("free port: %v", err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

// BaseEnv is a minimal environment for a plugin process: PATH and HOME only, so the developer's
// own PRISM_* variables cannot leak into a test.
func BaseEnv(extra ...string) []string {
	return append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, extra...)
}

// SIGTERM is re-exported for readability at call sites.
const SIGTERM = syscall.SIGTERM

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }
