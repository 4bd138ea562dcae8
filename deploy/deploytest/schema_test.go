package deploytest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/prism-gateway/plugins/core/config"
	"github.com/prism-gateway/plugins/kafka/kafkastream"
	"github.com/prism-gateway/plugins/postgres/postgreskv"
	"github.com/prism-gateway/plugins/redis/rediscache"
)

// schemas are the plugins' own config schemas, keyed by workload name.
var schemas = map[string]config.Schema{
	"postgres-plugin": postgreskv.Schema(),
	"kafka-plugin":    kafkastream.Schema(),
	"redis-plugin":    rediscache.Schema(),
}

// envNames is every environment variable the plugin reads: PRISM_<SECTION>_<KEY> for each key
// of its schema, its documented aliases, and PRISM_PLUGIN_CONFIG.
func envNames(s config.Schema) map[string]bool {
	names := map[string]bool{config.PathEnv: true}
	for _, kv := range config.EnvKeys(config.Default(s)) {
		names[kv[1]] = true
	}
	for alias := range s.EnvAliases {
		names[alias] = true
	}
	return names
}

// loadWith loads the plugin's config from yamlText (may be empty) and env, exactly as the
// plugin does at start, so unknown keys and bad values fail here too.
func loadWith(t *testing.T, s config.Schema, yamlText string, env map[string]string) *config.Config {
	t.Helper()
	src := config.Source{LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}
	if strings.TrimSpace(yamlText) != "" {
		src.Path = filepath.Join(t.TempDir(), "plugin.yaml")
		require.NoError(t, os.WriteFile(src.Path, []byte(yamlText), 0o600))
		src.Required = true
	}
	cfg, err := config.Load(s, src)
	require.NoError(t, err, "the plugin rejects this configuration")
	return cfg
}
