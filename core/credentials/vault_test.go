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

	vault "github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/prism-gateway/plugins/core/config"
	"github.com/prism-gateway/plugins/core/coretest"
	"github.com/prism-gateway/plugins/core/credentials"
	"github.com/prism-gateway/plugins/internal/testsvc"
)

// adminClient is a root client for test setup on the OpenBao that `make services` starts.
func adminClient(t *testing.T) *vault.Client {
	t.Helper()
	cfg := vault.DefaultConfig()
	cfg.Address = testsvc.VaultAddr(t)
	c, err := vault.NewClient(cfg)
	require.NoError(t, err)
	c.SetToken(testsvc.VaultToken())
	_, err = c.Auth().Token().LookupSelfWithContext(t.Context())
	require.NoError(t, err, "OpenBao at %s does not accept the test token; run `make services`", cfg.Address)
	return c
}

func startVault(t *testing.T, cfg credentials.VaultConfig, logs *coretest.Buffer) (*credentials.Vault, *credentials.Metrics) {
	t.Helper()
	metrics, err := credentials.NewMetrics(prometheus.NewRegistry())
	require.NoError(t, err)
	cfg.Address = testsvc.VaultAddr(t)
	src, err := credentials.NewVault(cfg, credentials.Options{
		Log: slog.New(slog.NewJSONHandler(logs, nil)), Metrics: metrics,
	})
	require.NoError(t, err)
	require.NoError(t, src.Start(t.Context()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, src.Stop(ctx))
		assert.NoError(t, src.Stop(ctx))
	})
	return src, metrics
}

func TestVaultKVv2NewVersionRotates(t *testing.T) {
	admin := adminClient(t)
	path := fmt.Sprintf("prism/test-kv-%d", time.Now().UnixNano())
	_, err := admin.KVv2("secret").Put(t.Context(), path, map[string]any{"username": "kv-user", "password": "kv-pw-one"})
	require.NoError(t, err)
	cfg := credentials.DefaultConfig().Vault
	cfg.Auth.Token = config.Secret(testsvc.VaultToken())
	cfg.Secret.Path = path
	cfg.Secret.PollInterval = 300 * time.Millisecond
	var logs coretest.Buffer
	src, metrics := startVault(t, cfg, &logs)
	got, err := src.Current()
	require.NoError(t, err)
	assert.Equal(t, "kv-user", got.Username)
	assert.Equal(t, "kv-pw-one", got.Password.Reveal())

	changed := src.Changes()
	_, err = admin.KVv2("secret").Put(t.Context(), path, map[string]any{"username": "kv-user", "password": "kv-pw-two"})
	require.NoError(t, err)
	waitChange(t, changed)
	got, err = src.Current()
	require.NoError(t, err)
	assert.Equal(t, "kv-pw-two", got.Password.Reveal())
	assert.InDelta(t, 1, testutil.ToFloat64(metrics.Rotations(credentials.KindVault)), 0)
	assert.Contains(t, src.Describe().Location, "secret/data/"+path)
	assertNoSecrets(t, &logs, "kv-pw-one", "kv-pw-two", testsvc.VaultToken())
}

// TestVaultDatabaseDynamicCredentialsRenewAndReissue uses a role with a 3s TTL and a 9s max TTL:
// the lease is renewed, and new credentials are issued before the max TTL.
func TestVaultDatabaseDynamicCredentialsRenewAndReissue(t *testing.T) {
	admin := adminClient(t)
	role := dynamicRole(t, admin, "3s", "9s")

	// AppRole login, as a plugin would do it.
	roleID, secretIDFile, secretID := appRole(t, admin)
	cfg := credentials.DefaultConfig().Vault
	cfg.Auth = credentials.VaultAuthConfig{Method: "approle", RoleID: roleID, SecretIDFile: secretIDFile}
	cfg.Secret = credentials.VaultSecretConfig{Kind: "database", Mount: "database", Role: role, PollInterval: time.Second}
	cfg.RenewMargin = 2 * time.Second
	cfg.RetryInterval = 500 * time.Millisecond
	var logs coretest.Buffer
	src, metrics := startVault(t, cfg, &logs)

	first, err := src.Current()
	require.NoError(t, err)
	pingAs(t, first)
	changed := src.Changes()
	waitChangeWithin(t, changed, 20*time.Second)
	second, err := src.Current()
	require.NoError(t, err)
	assert.NotEqual(t, first.Username, second.Username, "new credentials before the max TTL")
	pingAs(t, second)
	assert.GreaterOrEqual(t, testutil.ToFloat64(metrics.Renewals(credentials.KindVault)), 1.0, "the lease was renewed")
	t.Logf("dynamic credentials: %d rotations, %v renewals, %v errors", second.Serial-first.Serial,
		testutil.ToFloat64(metrics.Renewals(credentials.KindVault)), testutil.ToFloat64(metrics.Errors(credentials.KindVault)))
	assertNoSecrets(t, &logs, first.Password.Reveal(), second.Password.Reveal(), secretID)
}

// A renew margin as long as the role's lease (the default 10s margin on a 10s role) must not
// make the source issue credentials in a loop: it acts at a third of each lease at the earliest.
func TestVaultMarginLongerThanTheLeaseDoesNotReissueInALoop(t *testing.T) {
	admin := adminClient(t)
	role := dynamicRole(t, admin, "3s", "60s")
	cfg := credentials.DefaultConfig().Vault
	cfg.Auth = credentials.VaultAuthConfig{Method: "token", Token: config.Secret(testsvc.VaultToken())}
	cfg.Secret = credentials.VaultSecretConfig{Kind: "database", Mount: "database", Role: role, PollInterval: time.Second}
	cfg.RenewMargin = 10 * time.Second // longer than the 3s lease
	var logs coretest.Buffer
	src, metrics := startVault(t, cfg, &logs)
	first, err := src.Current()
	require.NoError(t, err)

	time.Sleep(4 * time.Second)
	last, err := src.Current()
	require.NoError(t, err, "the credentials stay valid")
	issued := last.Serial - first.Serial
	t.Logf("margin 10s on a 3s lease: %d new credentials and %v renewals in 4s", issued,
		testutil.ToFloat64(metrics.Renewals(credentials.KindVault)))
	// At a third of each 3s lease at the earliest: at most 4 in 4s (a loop made one per tick).
	assert.LessOrEqual(t, issued, uint64(4))
	assert.Positive(t, issued, "credentials are still replaced before they expire")
}

// dynamicRole creates a database role on prism-postgres with the given lease TTLs, removed when
// the test ends.
func dynamicRole(t *testing.T, admin *vault.Client, defaultTTL, maxTTL string) string {
	t.Helper()
	role := fmt.Sprintf("prism-test-%d", time.Now().UnixNano())
	_, err := admin.Logical().WriteWithContext(t.Context(), "database/roles/"+role, map[string]any{
		"db_name": "prism-postgres", "default_ttl": defaultTTL, "max_ttl": maxTTL,
		"creation_statements":   `CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE prism;`,
		"revocation_statements": `DROP ROLE IF EXISTS "{{name}}";`,
	})
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = admin.Logical().Delete("database/roles/" + role) })
	return role
}

func appRole(t *testing.T, admin *vault.Client) (roleID, secretIDFile, secretID string) {
	t.Helper()
	r, err := admin.Logical().ReadWithContext(t.Context(), "auth/approle/role/prism-plugins/role-id")
	require.NoError(t, err)
	roleID = r.Data["role_id"].(string)
	s, err := admin.Logical().WriteWithContext(t.Context(), "auth/approle/role/prism-plugins/secret-id", nil)
	require.NoError(t, err)
	secretID = s.Data["secret_id"].(string)
	secretIDFile = filepath.Join(t.TempDir(), "secret-id")
	require.NoError(t, os.WriteFile(secretIDFile, []byte(secretID+"\n"), 0o600))
	return roleID, secretIDFile, secretID
}

func pingAs(t *testing.T, c credentials.Credentials) {
	t.Helper()
	u := strings.Replace(testsvc.PostgresURL(t), "prism:prism@", c.Username+":"+c.Password.Reveal()+"@", 1)
	conn, err := pgx.Connect(t.Context(), u)
	require.NoError(t, err, "log in as the issued user")
	defer func() { _ = conn.Close(context.Background()) }()
	require.NoError(t, conn.Ping(t.Context()))
}

func waitChangeWithin(t *testing.T, changed <-chan struct{}, d time.Duration) {
	t.Helper()
	select {
	case <-changed:
	case <-time.After(d):
		t.Fatalf("no credentials change within %s", d)
	}
}

// TestVaultOutageKeepsCachedCredentialsUntilExpiryThenRecovers cuts the link to OpenBao: the
// cached credentials stay in use until they expire, then Current reports why, and once OpenBao is
// reachable again the source issues new credentials by itself.
func TestVaultOutageKeepsCachedCredentialsUntilExpiryThenRecovers(t *testing.T) {
	admin := adminClient(t)
	role := dynamicRole(t, admin, "4s", "60s")
	proxy := testsvc.NewProxy(t, strings.TrimPrefix(testsvc.VaultAddr(t), "http://"))

	metrics, err := credentials.NewMetrics(prometheus.NewRegistry())
	require.NoError(t, err)
	var logs coretest.Buffer
	cfg := credentials.DefaultConfig().Vault
	cfg.Address = "http://" + proxy.Addr()
	cfg.Auth.Token = config.Secret(testsvc.VaultToken())
	cfg.Secret = credentials.VaultSecretConfig{Kind: "database", Mount: "database", Role: role, PollInterval: time.Second}
	cfg.RenewMargin = time.Second
	cfg.RetryInterval = 300 * time.Millisecond
	src, err := credentials.NewVault(cfg, credentials.Options{Log: slog.New(slog.NewJSONHandler(&logs, nil)), Metrics: metrics})
	require.NoError(t, err)
	require.NoError(t, src.Start(t.Context()))
	t.Cleanup(func() { assert.NoError(t, src.Stop(context.Background())) })

	cached, err := src.Current()
	require.NoError(t, err)
	proxy.Down()
	time.Sleep(time.Second)
	still, err := src.Current()
	require.NoError(t, err, "cached credentials serve while OpenBao is away")
	assert.Equal(t, cached.Username, still.Username)
	require.Eventually(t, func() bool { _, err := src.Current(); return err != nil }, 30*time.Second, 100*time.Millisecond)
	_, err = src.Current()
	require.ErrorIs(t, err, credentials.ErrExpired)
	assert.NotEmpty(t, src.Describe().LastError, "the reason renewal failed is reported")
	t.Logf("during the outage: %v", err)

	proxy.Up()
	require.Eventually(t, func() bool { _, err := src.Current(); return err == nil }, 30*time.Second, 100*time.Millisecond,
		"the source recovers by itself once OpenBao is back")
	fresh, err := src.Current()
	require.NoError(t, err)
	assert.NotEqual(t, cached.Username, fresh.Username)
	pingAs(t, fresh)
	t.Logf("outage: %v errors counted", testutil.ToFloat64(metrics.Errors(credentials.KindVault)))
	assertNoSecrets(t, &logs, cached.Password.Reveal(), fresh.Password.Reveal(), testsvc.VaultToken())
}

// TestVaultAppRoleLogsInAgainWhenItsTokenReachesMaxTTL uses an AppRole whose tokens live 2s
// at most; reading KV v2 keeps working across several logins.
func TestVaultAppRoleLogsInAgainWhenItsTokenReachesMaxTTL(t *testing.T) {
	admin := adminClient(t)
	name := fmt.Sprintf("prism-test-short-%d", time.Now().UnixNano())
	_, err := admin.Logical().WriteWithContext(t.Context(), "auth/approle/role/"+name, map[string]any{
		"token_policies": "prism-plugins", "token_ttl": "2s", "token_max_ttl": "3s",
	})
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = admin.Logical().Delete("auth/approle/role/" + name) })
	r, err := admin.Logical().ReadWithContext(t.Context(), "auth/approle/role/"+name+"/role-id")
	require.NoError(t, err)
	s, err := admin.Logical().WriteWithContext(t.Context(), "auth/approle/role/"+name+"/secret-id", nil)
	require.NoError(t, err)
	secretID := s.Data["secret_id"].(string)
	secretIDFile := filepath.Join(t.TempDir(), "secret-id")
	require.NoError(t, os.WriteFile(secretIDFile, []byte(secretID), 0o600))
	path := fmt.Sprintf("prism/test-approle-%d", time.Now().UnixNano())
	_, err = admin.KVv2("secret").Put(t.Context(), path, map[string]any{"username": "u", "password": "approle-pw-1"})
	require.NoError(t, err)

	cfg := credentials.DefaultConfig().Vault
	cfg.Auth = credentials.VaultAuthConfig{Method: "approle", RoleID: r.Data["role_id"].(string), SecretIDFile: secretIDFile}
	cfg.Secret.Path = path
	cfg.Secret.PollInterval = 200 * time.Millisecond
	cfg.RetryInterval = 200 * time.Millisecond
	var logs coretest.Buffer
	src, metrics := startVault(t, cfg, &logs)

	// Past two token lifetimes, a new KV version is still read.
	time.Sleep(7 * time.Second)
	changed := src.Changes()
	_, err = admin.KVv2("secret").Put(t.Context(), path, map[string]any{"username": "u", "password": "approle-pw-2"})
	require.NoError(t, err)
	waitChange(t, changed)
	got, err := src.Current()
	require.NoError(t, err)
	assert.Equal(t, "approle-pw-2", got.Password.Reveal())
	logins := strings.Count(logs.String(), "logged in to vault")
	assert.GreaterOrEqual(t, logins, 3, "the source logged in again as its tokens expired")
	t.Logf("approle: %d logins, %v errors", logins, testutil.ToFloat64(metrics.Errors(credentials.KindVault)))
	assertNoSecrets(t, &logs, "approle-pw-1", "approle-pw-2", secretID)
}

func TestVaultDatabaseStaticRole(t *testing.T) {
	adminClient(t)
	cfg := credentials.DefaultConfig().Vault
	cfg.Auth.Token = config.Secret(testsvc.VaultToken())
	cfg.Secret = credentials.VaultSecretConfig{Kind: "database-static", Mount: "database", Role: "prism-postgres-static", PollInterval: time.Second}
	var logs coretest.Buffer
	src, _ := startVault(t, cfg, &logs)
	got, err := src.Current()
	require.NoError(t, err)
	assert.Equal(t, "prism_static", got.Username)
	assert.False(t, got.Expiry.IsZero(), "a static role's credentials expire at its next rotation")
	pingAs(t, got)
}
