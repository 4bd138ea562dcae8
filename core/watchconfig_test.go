package core_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prism-gateway/plugins/core/coretest"
)

func logLevelIs(r *coretest.Running, level string) func() bool {
	return func() bool { return r.Server.Config().Log.Level == level }
}

// With plugin.watch_config the plugin reloads when its config file changes, whether the file is
// rewritten in place, replaced by a rename, or swapped as Kubernetes updates a ConfigMap volume
// (the file is a symlink through ..data, and ..data is re-pointed at a new directory).
func TestConfigFileChangesReloadWithWatchConfig(t *testing.T) {
	base := "plugin:\n  watch_config: true\n  watch_debounce: 50ms\n"
	_, r := startProbe(t, base+"log:\n  level: info\n", nil)

	// In place.
	require.NoError(t, os.WriteFile(r.ConfigPath, []byte(base+"log:\n  level: debug\n"), 0o600))
	require.Eventually(t, logLevelIs(r, "debug"), 10*time.Second, 20*time.Millisecond, "an in-place rewrite reloads")

	// Replaced by a rename, as editors and config management do.
	dir := filepath.Dir(r.ConfigPath)
	tmp := filepath.Join(dir, "plugin.yaml.tmp")
	require.NoError(t, os.WriteFile(tmp, []byte(base+"log:\n  level: warn\n"), 0o600))
	require.NoError(t, os.Rename(tmp, r.ConfigPath))
	require.Eventually(t, logLevelIs(r, "warn"), 10*time.Second, 20*time.Millisecond, "a rename over the file reloads")

	// Kubernetes: plugin.yaml -> ..data/plugin.yaml, ..data -> ..<timestamp>/.
	writeGeneration := func(name, label string) {
		gen := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(gen, 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(gen, "plugin.yaml"), []byte(base+"log:\n  level: "+label+"\n"), 0o600))
		link := filepath.Join(dir, "..data_tmp")
		require.NoError(t, os.Symlink(name, link))
		require.NoError(t, os.Rename(link, filepath.Join(dir, "..data")))
	}
	writeGeneration("..2026_12_02_1", "error")
	link := filepath.Join(dir, "plugin.yaml.link")
	require.NoError(t, os.Symlink(filepath.Join("..data", "plugin.yaml"), link))
	require.NoError(t, os.Rename(link, r.ConfigPath))
	require.Eventually(t, logLevelIs(r, "error"), 10*time.Second, 20*time.Millisecond, "the file turning into a ConfigMap symlink reloads")
	writeGeneration("..2026_12_02_2", "info")
	require.Eventually(t, logLevelIs(r, "info"), 10*time.Second, 20*time.Millisecond, "a ..data swap reloads")

	// A broken file is rejected and the running config stays.
	writeGeneration("..2026_12_02_3", "info\n  nosuchkey: 1")
	require.Eventually(t, func() bool { return r.Logs.Contains("config reload rejected") }, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, "info", r.Server.Config().Log.Level)
}
