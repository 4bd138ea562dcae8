package binarytest

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	pluginv1 "github.com/prism-gateway/plugins/gen/prism/plugin/v1"
)

// Spec describes one plugin binary for the acceptance checks every plugin must pass.
type Spec struct {
	// Dir holds the plugin's main package (usually ".").
	Dir string
	// Env connects the plugin to its real backend with the right credentials.
	Env []string
	// WrongEnv is Env with a wrong password.
	WrongEnv []string
	// Secrets must never appear in any output (the password in Env and in WrongEnv).
	Secrets []string
	// Services are the data services the plugin must list.
	Services []string
	// FailureLog is text the log must show when the password is wrong.
	FailureLog string
}

// Acceptance runs the checks from the operator's point of view: flags, config errors, health,
// reflection, GetInfo, metrics, JSON logs, wrong credentials and SIGTERM.
func Acceptance(t *testing.T, spec Spec) {
	t.Helper()
	bin := Build(t, spec.Dir)

	t.Run("version prints and exits 0", func(t *testing.T) {
		code, stdout, _ := Run(t, bin, BaseEnv(), "--version")
		assert.Equal(t, 0, code)
		assert.Contains(t, stdout, "-plugin ")
	})

	t.Run("check-config names a misspelled key and exits non-zero", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "bad.yaml")
		require.NoError(t, os.WriteFile(bad, []byte("control_plane:\n  port: 9999\nbackend:\n  pasword: x\n"), 0o600))
		code, _, stderr := Run(t, bin, BaseEnv(spec.Env...), "--check-config", "--config", bad)
		assert.NotEqual(t, 0, code)
		assert.Contains(t, stderr, `unknown key "backend.pasword"`)
		assert.Contains(t, stderr, bad)
	})

	t.Run("check-config with a missing named file fails", func(t *testing.T) {
		code, _, stderr := Run(t, bin, BaseEnv(spec.Env...), "--check-config", "--config", filepath.Join(t.TempDir(), "absent.yaml"))
		assert.NotEqual(t, 0, code)
		assert.Contains(t, stderr, "absent.yaml")
	})

	t.Run("check-config prints the effective config with secrets redacted", func(t *testing.T) {
		code, stdout, stderr := Run(t, bin, BaseEnv(spec.Env...), "--check-config")
		require.Equal(t, 0, code, stderr)
		assert.Contains(t, stdout, "control_plane:")
		assert.Contains(t, stdout, "REDACTED")
		for _, s := range spec.Secrets {
			assert.NotContains(t, stdout+stderr, s)
		}
	})

	t.Run("config.yaml is valid and documents every backend and limits key", func(t *testing.T) {
		example := filepath.Join(spec.Dir, "config.yaml")
		code, _, stderr := Run(t, bin, BaseEnv(spec.Env...), "--check-config", "--config", example)
		require.Equal(t, 0, code, stderr)
		_, stdout, _ := Run(t, bin, BaseEnv(spec.Env...), "--check-config")
		var effective map[string]any
		require.NoError(t, yaml.Unmarshal([]byte(stdout), &effective))
		text, err := os.ReadFile(example) //nolint:gosec // the plugin's own example config
		require.NoError(t, err)
		for _, section := range []string{"backend", "limits"} {
			for _, key := range leafKeys(effective[section]) {
				assert.Regexp(t, `(?m)^\s*#?\s*`+regexp.QuoteMeta(key)+`:`, string(text), "%s does not document %s.%s", example, section, key)
			}
		}
	})

	t.Run("serves with real credentials and stops cleanly on SIGTERM", func(t *testing.T) {
		p := Start(t, bin, BaseEnv(append(spec.Env, "PRISM_CONTROL_PLANE_SHUTDOWN_GRACE=5s")...))
		p.WaitServing(t, 15*time.Second)
		ctx := t.Context()

		for _, svc := range spec.Services {
			resp, err := healthpb.NewHealthClient(p.Conn).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
			require.NoError(t, err)
			assert.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.GetStatus(), svc)
		}
		listed := listServices(t, p)
		assert.Subset(t, listed, append([]string{
			"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
			"grpc.reflection.v1alpha.ServerReflection", "prism.plugin.v1.PluginService",
		}, spec.Services...))

		info, err := pluginv1.NewPluginServiceClient(p.Conn).GetInfo(ctx, &pluginv1.GetInfoRequest{})
		require.NoError(t, err)
		assert.Equal(t, spec.Services, info.GetServices())

		body := httpBody(t, p.MetricsURL()+"/metrics")
		assert.Contains(t, body, `prism_grpc_server_handled_total{grpc_code="OK",grpc_method="GetInfo"`)
		assert.Contains(t, body, "prism_backend_up 1")
		assert.Equal(t, "serving\n", httpBody(t, p.MetricsURL()+"/readyz"))

		start := time.Now()
		p.Signal(t, SIGTERM)
		assert.Equal(t, 0, p.Wait(t, 10*time.Second), p.Stderr())
		assert.Less(t, time.Since(start), 5*time.Second, "exits within the grace period:\n%s", p.Stderr())
		assertJSONLines(t, p.Stderr())
		for _, s := range spec.Secrets {
			assert.NotContains(t, p.Stderr(), s)
		}
	})

	t.Run("SIGHUP reloads the log level and rejects a broken file", func(t *testing.T) {
		cfgPath := filepath.Join(t.TempDir(), "plugin.yaml")
		require.NoError(t, os.WriteFile(cfgPath, []byte("log:\n  level: info\n"), 0o600))
		p := Start(t, bin, BaseEnv(spec.Env...), "--config", cfgPath)
		p.WaitServing(t, 15*time.Second)
		info := pluginv1.NewPluginServiceClient(p.Conn)

		require.NoError(t, os.WriteFile(cfgPath, []byte("log:\n  level: debug\n"), 0o600))
		p.Signal(t, syscall.SIGHUP)
		require.Eventually(t, func() bool { return strings.Contains(p.Stderr(), `"changed":["log.level"]`) }, 10*time.Second, 20*time.Millisecond, p.Stderr())
		_, err := info.GetInfo(t.Context(), &pluginv1.GetInfoRequest{})
		require.NoError(t, err)
		require.Eventually(t, func() bool { return strings.Contains(p.Stderr(), `"level":"DEBUG","msg":"rpc"`) }, 5*time.Second, 20*time.Millisecond,
			"debug lines appear after the reload")

		require.NoError(t, os.WriteFile(cfgPath, []byte("log:\n  level: debug\n  colour: red\n"), 0o600))
		p.Signal(t, syscall.SIGHUP)
		require.Eventually(t, func() bool { return strings.Contains(p.Stderr(), `unknown key \"log.colour\"`) }, 10*time.Second, 20*time.Millisecond, p.Stderr())
		_, err = info.GetInfo(t.Context(), &pluginv1.GetInfoRequest{})
		require.NoError(t, err, "the plugin keeps serving with the old config")
		p.WaitServing(t, time.Second)
		p.Signal(t, SIGTERM)
		assert.Equal(t, 0, p.Wait(t, 10*time.Second))
	})

	t.Run("wrong password starts NOT_SERVING, logs why, never the secret", func(t *testing.T) {
		p := Start(t, bin, BaseEnv(append(spec.WrongEnv, "PRISM_CONTROL_PLANE_HEALTH_INTERVAL=200ms")...))
		require.Eventually(t, func() bool { return strings.Contains(p.Stderr(), spec.FailureLog) }, 15*time.Second, 50*time.Millisecond,
			"log should mention %q:\n%s", spec.FailureLog, p.Stderr())
		resp, err := healthpb.NewHealthClient(p.Conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
		require.NoError(t, err)
		assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, resp.GetStatus())
		p.Signal(t, SIGTERM)
		assert.Equal(t, 0, p.Wait(t, 20*time.Second))
		assertJSONLines(t, p.Stderr())
		for _, s := range spec.Secrets {
			assert.NotContains(t, p.Stderr(), s)
		}
	})
}

func listServices(t *testing.T, p *Process) []string {
	t.Helper()
	stream, err := reflectionpb.NewServerReflectionClient(p.Conn).ServerReflectionInfo(t.Context())
	require.NoError(t, err)
	require.NoError(t, stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}))
	resp, err := stream.Recv()
	require.NoError(t, err)
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	return names
}

func httpBody(t *testing.T, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

func assertJSONLines(t *testing.T, text string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(text), "\n")
	require.NotEmpty(t, lines)
	for _, line := range lines {
		var v map[string]any
		assert.NoError(t, json.Unmarshal([]byte(line), &v), "not a JSON log line: %s", line)
	}
}

// leafKeys lists the names of the scalar (and list) keys in a decoded YAML mapping, nested ones
// by their own name.
func leafKeys(v any) []string {
	m, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	var keys []string
	for k, child := range m {
		if nested, ok := child.(map[string]any); ok && len(nested) > 0 {
			keys = append(keys, leafKeys(nested)...)
			continue
		}
		keys = append(keys, k)
	}
	return keys
}
