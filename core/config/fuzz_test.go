package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prism-gateway/plugins/core/config"
)

// FuzzLoad feeds arbitrary YAML and environment values to the loader: it must return a config or
// an error, never panic, and never echo a secret value in its error.
func FuzzLoad(f *testing.F) {
	f.Add("backend:\n  pool_size: 8\n  hosts: [a, b]\n  timeout: 2s\n", "")
	f.Add("log:\n  level: debug\nlimits:\n  max_value_bytes: 10\n", "3")
	f.Add("backend: {password: hunter2-secret}\n", "not-a-number")
	f.Add("control_plane:\n  port: 70000\n", "-1")
	f.Add("- a\n- b\n", "")
	f.Add("backend:\n  pool_size: !!binary aGVsbG8=\n", "")
	f.Add("a: &x [*x]\n", "")
	f.Add("backend:\n  url: \"postgres://u:pw@h/db\"\n  nosuch: 1\n", "")
	f.Fuzz(func(t *testing.T, yamlText, poolEnv string) {
		path := filepath.Join(t.TempDir(), "plugin.yaml")
		if err := os.WriteFile(path, []byte(yamlText), 0o600); err != nil {
			t.Fatal(err)
		}
		const secret = "fuzz-secret-value-42"
		env := map[string]string{"EXAMPLE_POOL": poolEnv, "PRISM_BACKEND_PASSWORD": secret}
		cfg, err := config.Load(schema(), config.Source{Path: path, Required: true, LookupEnv: envOf(env)})
		if err != nil {
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("error leaks the secret: %v", err)
			}
			return
		}
		out, err := config.Render(cfg)
		if err != nil {
			t.Fatalf("render a config that loaded: %v", err)
		}
		if strings.Contains(string(out), secret) {
			t.Fatalf("rendered config leaks the secret:\n%s", out)
		}
	})
}
