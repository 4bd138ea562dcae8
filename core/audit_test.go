package core_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/prism-gateway/plugins/core"
	"github.com/prism-gateway/plugins/core/config"
	"github.com/prism-gateway/plugins/core/coretest"
	keyvaluev1 "github.com/prism-gateway/plugins/gen/prism/keyvalue/v1"
)

// countLines counts the lines in a file.
func countLines(t *testing.T, path string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	return strings.Count(string(data), "\n")
}

func TestReloadReopensTheAuditFileForLogrotate(t *testing.T) {
	dir := t.TempDir()
	path, rotated := filepath.Join(dir, "audit.log"), filepath.Join(dir, "audit.log.1")
	r := coretest.Start(t, newProbePlugin(), coretest.Options{YAML: "auth:\n  audit:\n    enabled: true\n    output: " + path + "\n"})
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 10*time.Second)
	kv := keyvaluev1.NewKeyValueServiceClient(r.Conn)
	get := func(n int) {
		for range n {
			_, err := kv.Get(t.Context(), &keyvaluev1.GetRequest{Namespace: "ns", Id: "x"})
			require.NoError(t, err)
		}
	}
	get(3)
	require.NoError(t, os.Rename(path, rotated), "logrotate moves the file away")
	_, err := r.Server.Reload(t.Context())
	require.NoError(t, err)
	_, err = os.Stat(path)
	require.NoError(t, err, "the reload opened a new file at the configured path")
	get(2)
	_, metrics := httpGet(t, r.MetricsURL+"/metrics")
	assert.Contains(t, metrics, "prism_audit_lines_dropped_total 0", "no line was lost across the reload")
	assert.Contains(t, metrics, "prism_audit_write_errors_total 0")
	require.NoError(t, r.Stop(), "stopping writes what the sink still holds")

	assert.Equal(t, 3, countLines(t, rotated), "the calls before the reload are in the rotated file")
	assert.Equal(t, 2, countLines(t, path), "the calls after it are in the new file")
}

// openFiles lists the files this process has open.
func openFiles(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	var files []string
	for _, e := range entries {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil {
			files = append(files, target)
		}
	}
	return files
}

func TestNewClosesTheAuditFileWhenItFails(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = taken.Close() })
	takenPort := strconv.Itoa(taken.Addr().(*net.TCPAddr).Port) //nolint:forcetypeassert // a TCP listener
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string
	}{
		{"the gRPC port is taken", map[string]string{"PRISM_CONTROL_PLANE_PORT": takenPort, "PRISM_METRICS_PORT": "0"}, "control_plane.port"},
		{"the metrics port is taken", map[string]string{"PRISM_CONTROL_PLANE_PORT": "0", "PRISM_METRICS_PORT": takenPort}, "metrics.port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.log")
			env := map[string]string{
				"PRISM_CONTROL_PLANE_HOST": "127.0.0.1", "PRISM_METRICS_HOST": "127.0.0.1",
				"PRISM_AUTH_AUDIT_ENABLED": "true", "PRISM_AUTH_AUDIT_OUTPUT": path,
			}
			for k, v := range tt.env {
				env[k] = v
			}
			lookup := func(name string) (string, bool) { v, ok := env[name]; return v, ok }
			p := newProbePlugin()
			_, err := core.New(context.Background(), p, core.Options{
				Source: config.Source{LookupEnv: lookup}, LogOutput: &coretest.Buffer{},
			})
			require.ErrorContains(t, err, tt.wantErr)
			assert.Equal(t, 1, p.stops, "the initialized plugin was stopped")
			_, statErr := os.Stat(path)
			require.NoError(t, statErr, "the audit file had been opened")
			assert.NotContains(t, openFiles(t), path, "New closed the audit file on its way out")
		})
	}
}
