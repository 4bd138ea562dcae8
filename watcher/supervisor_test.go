package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	cachev1 "github.com/prism-gateway/plugins/gen/prism/cache/v1"
)

// clientServiceConfig is what a well-behaved client of a draining plugin uses: UNAVAILABLE
// (Drain's answer to new calls) is retried, and calls wait for a ready connection.
const clientServiceConfig = `{"methodConfig":[{"name":[{}],"waitForReady":true,
 "retryPolicy":{"maxAttempts":5,"initialBackoff":"0.05s","maxBackoff":"1s",
 "backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}}]}`

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

func newTestSupervisor(t *testing.T) (*Supervisor, string) {
	t.Helper()
	port, metricsPort := freePort(t), freePort(t)
	t.Setenv("PRISM_CONTROL_PLANE_PORT", strconv.Itoa(port))
	t.Setenv("PRISM_CONTROL_PLANE_HOST", "127.0.0.1")
	t.Setenv("PRISM_METRICS_PORT", strconv.Itoa(metricsPort))
	t.Setenv("PRISM_METRICS_HOST", "127.0.0.1")
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	sup := NewSupervisor(Options{
		Plugin: "redis", Root: root, OutDir: t.TempDir(), Addr: addr,
		Args:         []string{"--config", filepath.Join(root, "redis", "config.yaml"), "--dev"},
		ReadyTimeout: 2 * time.Minute, DrainTimeout: 5 * time.Second,
	}, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	t.Cleanup(func() { sup.Stop(context.Background()) })
	return sup, addr
}

func TestSwapsUnderContinuousCallsFailNone(t *testing.T) {
	sup, addr := newTestSupervisor(t)
	// Build once before any clock starts: the first compile on a loaded machine is slow.
	_, err := sup.Build(t.Context(), 0)
	require.NoError(t, err)
	require.NoError(t, sup.Swap(t.Context()), "first start")

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(clientServiceConfig))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	client := cachev1.NewCacheServiceClient(conn)

	var calls, failures atomic.Int64
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				cctx, ccancel := context.WithTimeout(ctx, 20*time.Second)
				_, err := client.Set(cctx, &cachev1.SetRequest{
					Namespace: "watcher", Key: fmt.Sprintf("k%d-%d", w, i), Value: []byte("v"),
				})
				ccancel()
				if ctx.Err() != nil {
					return
				}
				calls.Add(1)
				if err != nil {
					failures.Add(1)
					t.Logf("call failed: %v", err)
				}
			}
		})
	}
	for swap := 1; swap <= 3; swap++ {
		time.Sleep(500 * time.Millisecond)
		require.NoError(t, sup.Swap(t.Context()), "swap %d", swap)
	}
	time.Sleep(500 * time.Millisecond)
	cancel()
	wg.Wait()
	t.Logf("calls=%d failed=%d over 3 swaps", calls.Load(), failures.Load())
	assert.Positive(t, calls.Load())
	assert.Zero(t, failures.Load(), "failed calls during swaps")
}

func TestNewProcessThatNeverServesLeavesOldRunning(t *testing.T) {
	sup, addr := newTestSupervisor(t)
	require.NoError(t, sup.Swap(t.Context()), "first start")
	first := sup.current

	sup.opts.Args = append(sup.opts.Args, "--no-such-flag")
	require.Error(t, sup.Swap(t.Context()))
	assert.Same(t, first, sup.current, "the old process stays current")

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	_, err = cachev1.NewCacheServiceClient(conn).Set(t.Context(), &cachev1.SetRequest{Namespace: "watcher", Key: "k", Value: []byte("v")})
	require.NoError(t, err, "the old process still serves")
}

func TestFailedBuildLeavesOldRunning(t *testing.T) {
	sup, _ := newTestSupervisor(t)
	require.NoError(t, sup.Swap(t.Context()), "first start")
	first := sup.current
	// A package that does not compile, made here so no broken Go file is checked in.
	broken, err := os.MkdirTemp(filepath.Join(sup.opts.Root, "watcher"), "broken-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(broken) })
	require.NoError(t, os.WriteFile(filepath.Join(broken, "main.go"), []byte("package main\n\nfunc main() { not go }\n"), 0o600))
	sup.opts.Plugin = "watcher/" + filepath.Base(broken)
	require.ErrorContains(t, sup.Swap(t.Context()), "build")
	assert.Same(t, first, sup.current)
	select {
	case <-first.done:
		t.Fatal("old process exited after a failed build")
	default:
	}
}
