package core_test

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"testing"

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
