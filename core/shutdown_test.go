package core_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prism-gateway/plugins/core"
	"github.com/prism-gateway/plugins/core/config"
)

// Shutdown before Serve (a start that fails later in main, a test's cleanup) must release both
// ports, and a second Shutdown is harmless.
func TestShutdownBeforeServeReleasesBothPorts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "plugin.yaml")
	require.NoError(t, os.WriteFile(path, []byte("control_plane:\n  host: 127.0.0.1\n  port: 0\nmetrics:\n  host: 127.0.0.1\n  port: 0\n"), 0o600))
	srv, err := core.New(t.Context(), newProbePlugin(), core.Options{
		Source:    config.Source{Path: path, Required: true, LookupEnv: func(string) (string, bool) { return "", false }},
		LogOutput: &bytes.Buffer{},
	})
	require.NoError(t, err)
	addrs := []string{srv.Addr().String(), srv.MetricsAddr().String()}
	require.NoError(t, srv.Shutdown(t.Context()))
	require.NoError(t, srv.Shutdown(t.Context()), "a second Shutdown is harmless")
	for _, a := range addrs {
		l, err := net.Listen("tcp", a)
		require.NoError(t, err, "port %s is free again after Shutdown", a)
		_ = l.Close()
	}
}

// Reloads racing a shutdown (SIGHUP or PluginService/Reload during SIGTERM) never reach the
// plugin during or after its Stop: a reconfiguration could start work Stop no longer waits for.
func TestReloadNeverRunsDuringOrAfterStop(t *testing.T) {
	p, r := startProbe(t, "backend:\n  label: a\n", nil)
	done := make(chan struct{})
	var reloads, refused atomic.Int64
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				label := []string{"a", "b"}[(i+w)%2]
				r.WriteConfig(t, "backend:\n  label: "+label+"\n")
				if _, err := r.Server.Reload(context.Background()); err != nil {
					refused.Add(1)
				} else {
					reloads.Add(1)
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	require.NoError(t, r.Stop())
	close(done)
	wg.Wait()
	t.Logf("%d reloads applied, %d refused or failed around the shutdown", reloads.Load(), refused.Load())
	p.mu.Lock()
	defer p.mu.Unlock()
	require.Equal(t, 1, p.stops)
	require.Zero(t, p.reconfigsAfterStop, "no reload reached the plugin after Stop")
	require.Positive(t, reloads.Load(), "reloads ran before the shutdown")
}
