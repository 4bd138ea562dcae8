package credentials_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/prism-gateway/plugins/core/config"
	"github.com/prism-gateway/plugins/core/coretest"
	"github.com/prism-gateway/plugins/core/credentials"
)

func TestStaticSourceYieldsItsCredentialsAndNeverChanges(t *testing.T) {
	src, err := credentials.New(credentials.DefaultConfig(), credentials.Options{
		Static: credentials.Credentials{Username: "prism", Password: "s3cret-static"},
	})
	require.NoError(t, err)
	require.NoError(t, src.Stop(t.Context()), "stop before start")
	require.NoError(t, src.Start(t.Context()))
	got, err := src.Current()
	require.NoError(t, err)
	assert.Equal(t, "prism", got.Username)
	assert.Equal(t, "s3cret-static", got.Password.Reveal())
	d := src.Describe()
	assert.Equal(t, "static", d.Kind)
	assert.NotContains(t, fmt.Sprintf("%+v", d), "s3cret-static")
	select {
	case <-src.Changes():
		t.Fatal("static credentials announced a change")
	default:
	}
	require.NoError(t, src.Stop(t.Context()))
	require.NoError(t, src.Stop(t.Context()), "stop twice")
}

func TestFileFormats(t *testing.T) {
	cases := []struct {
		name, content, user, password string
	}{
		{"plain password file keeps the static username", "pw-plain\n", "fallback", "pw-plain"},
		{"json with both fields", `{"username":"u-json","password":"pw-json"}`, "u-json", "pw-json"},
		{"yaml with both fields", "username: u-yaml\npassword: pw-yaml\n", "u-yaml", "pw-yaml"},
		{"key=value lines with quotes and comments", "# from vault agent\nusername=u-env\npassword=\"pw=env\"\n", "u-env", "pw=env"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "creds")
			require.NoError(t, os.WriteFile(path, []byte(tc.content), 0o600))
			src := startFile(t, path, nil, nil)
			got, err := src.Current()
			require.NoError(t, err)
			assert.Equal(t, tc.user, got.Username)
			assert.Equal(t, tc.password, got.Password.Reveal())
		})
	}
}

func TestFileSourceFailsToStartOnAMissingPasswordField(t *testing.T) {
	path := filepath.Join(t.TempDir(), "creds.json")
	require.NoError(t, os.WriteFile(path, []byte(`{"username":"u","pass":"hidden-value"}`), 0o600))
	cfg := credentials.DefaultConfig().File
	cfg.Path = path
	src := credentials.NewFile(cfg, credentials.Credentials{}, nil, nil)
	err := src.Start(t.Context())
	require.ErrorContains(t, err, `field "password" is missing`)
	assert.NotContains(t, err.Error(), "hidden-value")
}

// TestFileSourceFollowsKubernetesSymlinkSwap writes a directory the way the kubelet updates a
// Secret volume: a new timestamped directory, then an atomic rename of the ..data symlink.
func TestFileSourceFollowsKubernetesSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	writeVersion := func(version, user, password string) {
		ts := filepath.Join(dir, "..2026_"+version)
		require.NoError(t, os.Mkdir(ts, 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(ts, "username"), []byte(user), 0o600))
		require.NoError(t, os.WriteFile(filepath.Join(ts, "password"), []byte(password), 0o600))
		tmp := filepath.Join(dir, "..data_tmp")
		require.NoError(t, os.Symlink(filepath.Base(ts), tmp))
		require.NoError(t, os.Rename(tmp, filepath.Join(dir, "..data")))
	}
	writeVersion("1", "user-one", "pw-one")
	for _, name := range []string{"username", "password"} {
		require.NoError(t, os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)))
	}
	reg := prometheus.NewRegistry()
	metrics, err := credentials.NewMetrics(reg)
	require.NoError(t, err)
	var logs coretest.Buffer
	src := startFile(t, dir, metrics, &logs)
	first, err := src.Current()
	require.NoError(t, err)
	require.Equal(t, "user-one", first.Username)

	changed := src.Changes()
	writeVersion("2", "user-two", "pw-two")
	waitChange(t, changed)
	got, err := src.Current()
	require.NoError(t, err)
	assert.Equal(t, "user-two", got.Username)
	assert.Equal(t, "pw-two", got.Password.Reveal())
	assert.Equal(t, first.Serial+1, got.Serial)
	assert.InDelta(t, 1, testutil.ToFloat64(metrics.Rotations(credentials.KindFile)), 0)
	assertNoSecrets(t, &logs, "pw-one", "pw-two")
}

func TestFileSourceFollowsInPlaceRewriteAndKeepsOldCredentialsOnABrokenFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db.json")
	require.NoError(t, os.WriteFile(path, []byte(`{"username":"a","password":"pw-a"}`), 0o600))
	reg := prometheus.NewRegistry()
	metrics, err := credentials.NewMetrics(reg)
	require.NoError(t, err)
	var logs coretest.Buffer
	src := startFile(t, path, metrics, &logs)

	changed := src.Changes()
	rewrite(t, path, `{"username":"b","password":"pw-b"}`)
	waitChange(t, changed)
	got, err := src.Current()
	require.NoError(t, err)
	assert.Equal(t, "b", got.Username)

	rewrite(t, path, `{"username":"c","password":"pw-broken-c"`)
	require.Eventually(t, func() bool { return testutil.ToFloat64(metrics.Errors(credentials.KindFile)) >= 1 },
		20*time.Second, 20*time.Millisecond, "the broken file was never re-read")
	got, err = src.Current()
	require.NoError(t, err)
	assert.Equal(t, "b", got.Username, "a broken file must keep the previous credentials")
	assert.Equal(t, "pw-b", got.Password.Reveal())
	assert.Contains(t, src.Describe().LastError, "not a JSON object")
	assert.Contains(t, logs.String(), "keeping the previous credentials")

	changed = src.Changes()
	rewrite(t, path, `{"username":"d","password":"pw-d"}`)
	waitChange(t, changed)
	got, err = src.Current()
	require.NoError(t, err)
	assert.Equal(t, "d", got.Username)
	assert.Empty(t, src.Describe().LastError)
	assertNoSecrets(t, &logs, "pw-a", "pw-b", "pw-broken-c", "pw-d")
}

func TestFileSourceReportsExpiredCredentials(t *testing.T) {
	path := filepath.Join(t.TempDir(), "creds.yaml")
	past := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	require.NoError(t, os.WriteFile(path, []byte("username: u\npassword: p\nexpiry: "+past+"\n"), 0o600))
	src := startFile(t, path, nil, nil)
	_, err := src.Current()
	require.ErrorIs(t, err, credentials.ErrExpired)
	assert.False(t, src.Describe().Expiry.IsZero())
}

func TestConfigValidateNamesTheKey(t *testing.T) {
	cfg := credentials.DefaultConfig()
	require.NoError(t, cfg.Validate())
	cfg.Source = "file"
	require.EqualError(t, cfg.Validate(), "credentials.file.path: required when credentials.source is file")
	cfg.Source = "ldap"
	require.EqualError(t, cfg.Validate(), `credentials.source: must be static, file or vault, got "ldap"`)
}

// backendSection stands in for a plugin's backend section embedding the shared block.
type backendSection struct {
	User        string             `yaml:"user"`
	Credentials credentials.Config `yaml:"credentials"`
}

func (b *backendSection) Validate() error { return b.Credentials.Validate() }

func TestConfigKeysHaveEnvOverridesAndRedactTheToken(t *testing.T) {
	schema := config.Schema{Plugin: "test", Port: 1, MetricsPort: 2, NewBackend: func() config.Section {
		return &backendSection{Credentials: credentials.DefaultConfig()}
	}}
	env := map[string]string{
		"PRISM_BACKEND_CREDENTIALS_SOURCE":           "file",
		"PRISM_BACKEND_CREDENTIALS_FILE_PATH":        "/var/run/secrets/db",
		"PRISM_BACKEND_CREDENTIALS_VAULT_AUTH_TOKEN": "hvs.token-value",
	}
	cfg, err := config.Load(schema, config.Source{LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }})
	require.NoError(t, err)
	b := cfg.Backend.(*backendSection)
	assert.Equal(t, "file", b.Credentials.Source)
	assert.Equal(t, "/var/run/secrets/db", b.Credentials.File.Path)
	assert.Equal(t, "hvs.token-value", b.Credentials.Vault.Auth.Token.Reveal())
	assert.Contains(t, cfg.Secrets(), "hvs.token-value")
	assert.NotContains(t, fmt.Sprintf("%v", b.Credentials), "hvs.token-value")
}

func startFile(t *testing.T, path string, metrics *credentials.Metrics, logs *coretest.Buffer) credentials.Source {
	t.Helper()
	cfg := credentials.DefaultConfig()
	cfg.Source = credentials.KindFile
	cfg.File.Path = path
	// A long poll proves that fsnotify, not the fallback, noticed the change.
	cfg.File.PollInterval = 10 * time.Second
	var log *slog.Logger
	if logs != nil {
		log = slog.New(slog.NewJSONHandler(logs, nil))
	}
	src, err := credentials.New(cfg, credentials.Options{
		Static: credentials.Credentials{Username: "fallback"}, Log: log, Metrics: metrics,
	})
	require.NoError(t, err)
	require.NoError(t, src.Start(t.Context()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, src.Stop(ctx))
		assert.NoError(t, src.Stop(ctx), "stop twice")
	})
	return src
}

// rewrite truncates and rewrites path in place, as an editor or a plain `echo >` does.
func rewrite(t *testing.T, path, content string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0o600)
	require.NoError(t, err)
	_, err = f.WriteString(content)
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

func waitChange(t *testing.T, changed <-chan struct{}) {
	t.Helper()
	select {
	case <-changed:
	case <-time.After(8 * time.Second):
		t.Fatal("no credentials change within 8s (fsnotify missed it; poll is 10s)")
	}
}

func assertNoSecrets(t *testing.T, buf *coretest.Buffer, secrets ...string) {
	t.Helper()
	require.Eventually(t, func() bool { return strings.Contains(buf.String(), "credentials changed") },
		10*time.Second, 10*time.Millisecond, "expected a change log line to scan")
	logs := buf.String()
	for _, s := range secrets {
		// Not assert.NotContains: its failure message would print the secret.
		assert.False(t, strings.Contains(logs, s), "a secret appeared in the logs") //nolint:testifylint // see above
	}
}

func TestDescriptionCapabilitiesAndCheck(t *testing.T) {
	src := credentials.NewStatic(credentials.Credentials{Username: "app", Password: "s3cret-value"})
	caps := src.Describe().Capabilities()
	assert.Equal(t, map[string]string{
		"credentials_source": "static", "credentials_serial": "1", "credentials_username": "app",
	}, caps)
	require.NoError(t, credentials.Check(src))

	expired := credentials.NewStatic(credentials.Credentials{Username: "app", Expiry: time.Now().Add(-time.Second)})
	err := credentials.Check(expired)
	require.ErrorIs(t, err, credentials.ErrExpired)
	assert.Contains(t, err.Error(), "backend credentials (static)")
	assert.Contains(t, expired.Describe().Capabilities(), "credentials_expiry")
	for _, v := range caps {
		assert.NotContains(t, v, "s3cret")
	}
}

// Follow reports each change with the credentials replaced and the new ones, and, when the
// current ones near their expiry with nothing renewing them, says so once.
func TestFollowReportsChangesAndAnExpiryAhead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "creds.json")
	expiry := time.Now().Add(1500 * time.Millisecond).UTC()
	write := func(user string, exp time.Time) {
		doc := fmt.Sprintf(`{"username": %q, "password": "pw-%s"`, user, user)
		if !exp.IsZero() {
			doc += fmt.Sprintf(`, "expiry": %q`, exp.Format(time.RFC3339Nano))
		}
		require.NoError(t, os.WriteFile(path, []byte(doc+"}"), 0o600))
	}
	write("first", time.Time{})
	src := startFile(t, path, nil, &coretest.Buffer{})
	type change struct{ prev, next string }
	changes, expiring := make(chan change, 4), make(chan string, 4)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		credentials.Follow(ctx, src, time.Second, credentials.Follower{
			Changed:  func(prev, next credentials.Credentials) { changes <- change{prev.Username, next.Username} },
			Expiring: func(cur credentials.Credentials) { expiring <- cur.Username },
		})
	}()
	t.Cleanup(func() { cancel(); <-done })

	write("second", expiry)
	select {
	case c := <-changes:
		assert.Equal(t, change{"first", "second"}, c)
	case <-time.After(10 * time.Second):
		t.Fatal("no change reported")
	}
	select {
	case u := <-expiring:
		assert.Equal(t, "second", u)
		assert.Less(t, time.Until(expiry), 1100*time.Millisecond, "reported about a second ahead of the expiry")
	case <-time.After(10 * time.Second):
		t.Fatal("the expiry ahead was not reported")
	}
	select {
	case u := <-expiring:
		t.Fatalf("the expiry of %s was reported twice", u)
	case <-time.After(700 * time.Millisecond):
	}
}
