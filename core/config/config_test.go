package config_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/prism-gateway/plugins/core/config"
)

// exampleBackend stands in for a plugin's backend section.
type exampleBackend struct {
	URL      config.SecretURL `yaml:"url"`
	Password config.Secret    `yaml:"password"`
	PoolSize int              `yaml:"pool_size"`
	Hosts    []string         `yaml:"hosts"`
	Timeout  time.Duration    `yaml:"timeout"`
}

func (b *exampleBackend) Validate() error {
	if b.PoolSize < 1 {
		return errors.Join(fmt.Errorf("pool_size: must be at least 1, got %d", b.PoolSize))
	}
	return nil
}

type exampleLimits struct {
	MaxValueBytes int `yaml:"max_value_bytes"`
}

func (*exampleLimits) Validate() error { return nil }

func schema() config.Schema {
	return config.Schema{
		Plugin: "example", Port: 9999, MetricsPort: 9998,
		NewBackend: func() config.Section {
			return &exampleBackend{PoolSize: 4, URL: "postgres://u@h/db", Timeout: time.Second}
		},
		NewLimits:  func() config.Section { return &exampleLimits{MaxValueBytes: 1 << 20} },
		EnvAliases: map[string]string{"EXAMPLE_URL": "backend.url", "EXAMPLE_POOL": "backend.pool_size"},
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "plugin.yaml")
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func load(t *testing.T, yaml string, env map[string]string) (*config.Config, error) {
	t.Helper()
	return config.Load(schema(), config.Source{Path: writeFile(t, yaml), Required: true, LookupEnv: envOf(env)})
}

func TestDefaultsApplyWhenNothingIsConfigured(t *testing.T) {
	cfg, err := load(t, "", nil)
	require.NoError(t, err)
	assert.Equal(t, 9999, cfg.ControlPlane.Port)
	assert.Equal(t, 9998, cfg.Metrics.Port)
	assert.Equal(t, 5*time.Second, cfg.ControlPlane.HealthInterval)
	assert.Equal(t, 15*time.Second, cfg.ControlPlane.ShutdownGrace)
	assert.Equal(t, "info", cfg.Log.Level)
	assert.Equal(t, "example", cfg.Plugin.Name)
	assert.Equal(t, 4, cfg.Backend.(*exampleBackend).PoolSize)
}

func TestYAMLOverlaysDefaults(t *testing.T) {
	cfg, err := load(t, `
control_plane:
  port: 7000
  health_interval: 2s
log:
  level: debug
backend:
  pool_size: 12
  hosts: [a, b]
limits:
  max_value_bytes: 10
`, nil)
	require.NoError(t, err)
	assert.Equal(t, 7000, cfg.ControlPlane.Port)
	assert.Equal(t, 2*time.Second, cfg.ControlPlane.HealthInterval)
	assert.Equal(t, "debug", cfg.Log.Level)
	assert.Equal(t, 12, cfg.Backend.(*exampleBackend).PoolSize)
	assert.Equal(t, []string{"a", "b"}, cfg.Backend.(*exampleBackend).Hosts)
	assert.Equal(t, 10, cfg.Limits.(*exampleLimits).MaxValueBytes)
	// Unset keys keep their defaults.
	assert.Equal(t, 15*time.Second, cfg.ControlPlane.ShutdownGrace)
	assert.Equal(t, time.Second, cfg.Backend.(*exampleBackend).Timeout)
}

func TestUnknownKeysAreRejectedWithFileLineAndPath(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"misspelled section", "bakend:\n  pool_size: 1\n", `:1: unknown key "bakend"`},
		{"misspelled core key", "control_plane:\n  prot: 1\n", `:2: unknown key "control_plane.prot"`},
		{"misspelled plugin key", "backend:\n  pool_size: 2\n  pool_sise: 3\n", `:3: unknown key "backend.pool_sise"`},
		{"misspelt key in the auth section", "auth:\n  polices: []\n", `:2: unknown key "auth.polices"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, tt.yaml)
			_, err := config.Load(schema(), config.Source{Path: path, Required: true, LookupEnv: envOf(nil)})
			require.Error(t, err)
			assert.Contains(t, err.Error(), path+tt.want)
		})
	}
}

func TestEnvironmentOverrides(t *testing.T) {
	tests := []struct {
		name  string
		yaml  string
		env   map[string]string
		check func(t *testing.T, cfg *config.Config)
	}{
		{
			name: "generic name beats YAML",
			yaml: "control_plane:\n  port: 7000\n",
			env:  map[string]string{"PRISM_CONTROL_PLANE_PORT": "7100"},
			check: func(t *testing.T, cfg *config.Config) {
				t.Helper()
				assert.Equal(t, 7100, cfg.ControlPlane.Port)
			},
		},
		{
			name: "log level variable",
			env:  map[string]string{"PRISM_LOG_LEVEL": "warn"},
			check: func(t *testing.T, cfg *config.Config) {
				t.Helper()
				assert.Equal(t, "warn", cfg.Log.Level)
			},
		},
		{
			name: "documented alias beats YAML",
			yaml: "backend:\n  url: postgres://yaml@h/db\n",
			env:  map[string]string{"EXAMPLE_URL": "postgres://env@h/db"},
			check: func(t *testing.T, cfg *config.Config) {
				t.Helper()
				assert.Equal(t, "postgres://env@h/db", cfg.Backend.(*exampleBackend).URL.Reveal())
			},
		},
		{
			name: "generic name beats documented alias",
			env:  map[string]string{"EXAMPLE_POOL": "5", "PRISM_BACKEND_POOL_SIZE": "6"},
			check: func(t *testing.T, cfg *config.Config) {
				t.Helper()
				assert.Equal(t, 6, cfg.Backend.(*exampleBackend).PoolSize)
			},
		},
		{
			name: "durations, lists and secrets",
			env: map[string]string{
				"PRISM_CONTROL_PLANE_SHUTDOWN_GRACE": "3s",
				"PRISM_BACKEND_HOSTS":                "x:1, y:2",
				"PRISM_BACKEND_PASSWORD":             "hunter22",
				"PRISM_LIMITS_MAX_VALUE_BYTES":       "64",
			},
			check: func(t *testing.T, cfg *config.Config) {
				t.Helper()
				assert.Equal(t, 3*time.Second, cfg.ControlPlane.ShutdownGrace)
				assert.Equal(t, []string{"x:1", "y:2"}, cfg.Backend.(*exampleBackend).Hosts)
				assert.Equal(t, "hunter22", cfg.Backend.(*exampleBackend).Password.Reveal())
				assert.Equal(t, 64, cfg.Limits.(*exampleLimits).MaxValueBytes)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := load(t, tt.yaml, tt.env)
			require.NoError(t, err)
			tt.check(t, cfg)
		})
	}
}

func TestBadEnvironmentValueNamesVariableButNotValue(t *testing.T) {
	_, err := load(t, "", map[string]string{"PRISM_BACKEND_POOL_SIZE": "s3cr3t-ish"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "PRISM_BACKEND_POOL_SIZE (backend.pool_size)")
	assert.NotContains(t, err.Error(), "s3cr3t-ish")
}

func TestValidationErrorsCarryConfigPaths(t *testing.T) {
	_, err := load(t, `
control_plane:
  port: 70000
log:
  level: loud
backend:
  pool_size: 0
tls:
  enabled: true
`, nil)
	require.Error(t, err)
	for _, want := range []string{
		"control_plane.port: must be between 0 and 65535, got 70000",
		`log.level: must be debug, info, warn or error, got "loud"`,
		"backend.pool_size: must be at least 1, got 0",
		"tls.cert_file: required when tls.enabled is true",
	} {
		assert.Contains(t, err.Error(), want)
	}
}

func TestMissingFiles(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	_, err := config.Load(schema(), config.Source{Path: missing, Required: true, LookupEnv: envOf(nil)})
	require.Error(t, err, "a named file must exist")

	cfg, err := config.Load(schema(), config.Source{Path: missing, Required: false, LookupEnv: envOf(nil)})
	require.NoError(t, err, "the default file may be absent")
	assert.Equal(t, 9999, cfg.ControlPlane.Port)
}

func TestResolveSourcePrefersFlagThenEnvThenDefault(t *testing.T) {
	env := envOf(map[string]string{config.PathEnv: "/from/env.yaml"})
	assert.Equal(t, config.Source{Path: "/flag.yaml", Required: true}, stripLookup(config.ResolveSource("/flag.yaml", env)))
	assert.Equal(t, config.Source{Path: "/from/env.yaml", Required: true}, stripLookup(config.ResolveSource("", env)))
	assert.Equal(t, config.Source{Path: config.DefaultPath, Required: false}, stripLookup(config.ResolveSource("", envOf(nil))))
}

func stripLookup(s config.Source) config.Source { s.LookupEnv = nil; return s }

func TestRenderRedactsSecrets(t *testing.T) {
	cfg, err := load(t, "backend:\n  url: postgres://app:pa55word@db:5432/prism\n  password: topsecret\n", nil)
	require.NoError(t, err)
	out, err := config.Render(cfg)
	require.NoError(t, err)
	text := string(out)
	assert.NotContains(t, text, "pa55word")
	assert.NotContains(t, text, "topsecret")
	assert.Contains(t, text, "postgres://app:REDACTED@db:5432/prism")
	assert.Contains(t, text, "password: '[REDACTED]'")
	assert.Contains(t, text, "health_interval: 5s")
	assert.ElementsMatch(t, []string{"pa55word", "topsecret"}, cfg.Secrets())
}

func TestSecretsRedactEveryWayTheyArePrinted(t *testing.T) {
	s := config.Secret("hunter22")
	for _, text := range []string{fmt.Sprint(s), fmt.Sprintf("%v %s %#v", s, s, s), s.String()} {
		assert.NotContains(t, text, "hunter22")
	}
	b, err := s.MarshalText()
	require.NoError(t, err)
	assert.Equal(t, config.Redacted, string(b))
	assert.Equal(t, "hunter22", s.Reveal())

	dsn := config.SecretURL("host=db user=app password=hunter22")
	assert.Equal(t, config.Redacted, dsn.String(), "a key=value DSN is redacted whole")
}

func TestChangesListsDifferingPaths(t *testing.T) {
	a, err := load(t, "log:\n  level: info\n", nil)
	require.NoError(t, err)
	b, err := load(t, "log:\n  level: debug\nbackend:\n  password: new\n", nil)
	require.NoError(t, err)
	assert.Equal(t, []string{"backend.password", "log.level"}, config.Changes(a, b))
	assert.Empty(t, config.Changes(a, a))
}

func TestEnvKeysCoverEveryScalarKey(t *testing.T) {
	keys := config.EnvKeys(config.Default(schema()))
	byPath := map[string]string{}
	for _, k := range keys {
		byPath[k[0]] = k[1]
	}
	assert.Equal(t, "PRISM_CONTROL_PLANE_PORT", byPath["control_plane.port"])
	assert.Equal(t, "PRISM_METRICS_PORT", byPath["metrics.port"])
	assert.Equal(t, "PRISM_LOG_LEVEL", byPath["log.level"])
	assert.Equal(t, "PRISM_BACKEND_HOSTS", byPath["backend.hosts"])
	assert.Equal(t, "PRISM_LIMITS_MAX_VALUE_BYTES", byPath["limits.max_value_bytes"])
}

func TestBetween(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string // empty = accepted
	}{
		{"the lower bound is allowed", config.Between("pool_size", 1, 1, 1000), ""},
		{"the upper bound is allowed", config.Between("pool_size", 1000, 1, 1000), ""},
		{"below names the path, the range and the value", config.Between("pool_size", 0, 1, 1000), "pool_size: must be between 1 and 1000, got 0"},
		{"above", config.Between("max_tail_last_n", int64(1)<<40, 1, 100_000_000), "max_tail_last_n: must be between 1 and 100000000, got 1099511627776"},
		{"durations print as durations", config.Between("plugin.watch_debounce", 2*time.Minute, 10*time.Millisecond, time.Minute),
			"plugin.watch_debounce: must be between 10ms and 1m0s, got 2m0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.want == "" {
				assert.NoError(t, tt.err)
				return
			}
			assert.EqualError(t, tt.err, tt.want)
		})
	}
}
