package core_test

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/prism-gateway/plugins/core/config"
)

// The README's config reference must list every common key with its environment variable.
func TestREADMEDocumentsEveryCommonConfigKey(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	for _, key := range config.EnvKeys(config.Default(config.Schema{})) {
		path, env := key[0], key[1]
		if strings.HasPrefix(path, "limits") || strings.HasPrefix(path, "backend") {
			continue
		}
		assert.Contains(t, string(readme), "`"+path+"`", "README config table lacks %s", path)
		assert.Contains(t, string(readme), "`"+env+"`", "README config table lacks %s", env)
	}
}
