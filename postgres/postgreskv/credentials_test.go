package postgreskv_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/prism-gateway/plugins/core/coretest"
	"github.com/prism-gateway/plugins/core/credentials"
	keyvaluev1 "github.com/prism-gateway/plugins/gen/prism/keyvalue/v1"
	pluginv1 "github.com/prism-gateway/plugins/gen/prism/plugin/v1"
	"github.com/prism-gateway/plugins/internal/binarytest"
	"github.com/prism-gateway/plugins/internal/credtest"
	"github.com/prism-gateway/plugins/internal/testsvc"
	"github.com/prism-gateway/plugins/postgres/postgreskv"
)

// The role OpenBao's database engine logs in to PostgreSQL as (scripts/services.sh creates it
// with CREATEROLE); the private OpenBao of the outage test configures its engine with it.
const (
	vaultPGUser     = "prism_vault"
	vaultPGPassword = "prism_vault"
)

// The statements the tests' own database roles use: the same as the shared prism-postgres role.
const (
	pgCreation   = `CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE prism;`
	pgRevocation = `REASSIGN OWNED BY "{{name}}" TO prism; DROP OWNED BY "{{name}}"; DROP ROLE IF EXISTS "{{name}}";`
)

// staticRolePassword is the current password of prism_static, managed by the static role
// prism-postgres-static on the shared OpenBao: a unique value the log scans can look for.
func staticRolePassword(t *testing.T, admin *vault.Client) string {
	t.Helper()
	s, err := admin.Logical().ReadWithContext(t.Context(), "database/static-creds/prism-postgres-static")
	require.NoError(t, err)
	require.NotNil(t, s, "static role prism-postgres-static: run `make services`")
	return s.Data["password"].(string)
}

// migratedDatabase is a new test database whose schema the prism user created, as a deployment
// that moves to short-lived users has it: objects owned by a lasting role, so revoking a dynamic
// role can drop it.
func migratedDatabase(t *testing.T) string {
	t.Helper()
	db := newDatabase(t)
	r := startPlugin(t, db, "")
	require.NoError(t, r.Stop())
	return db
}

// withoutPassword keeps the URL's host, port, database and user; the credentials source
// supplies the rest.
func withoutPassword(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	require.NoError(t, err)
	u.User = url.User(u.User.Username())
	return u.String()
}

func withUser(t *testing.T, raw, user, password string) string {
	t.Helper()
	u, err := url.Parse(raw)
	require.NoError(t, err)
	u.User = url.UserPassword(user, password)
	return u.String()
}

func databaseName(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	require.NoError(t, err)
	return strings.TrimPrefix(u.Path, "/")
}

// sessionUsers counts the client sessions in db by user; "" counts sessions whose role no
// longer exists. (backend_type is hidden from an unprivileged user; a role id tells sessions
// from autovacuum workers.)
func sessionUsers(t *testing.T, conn *pgx.Conn, db string) map[string]int {
	t.Helper()
	rows, err := conn.Query(t.Context(), `SELECT coalesce(usename, ''), count(*) FROM pg_stat_activity
		WHERE datname = $1 AND usesysid IS NOT NULL GROUP BY 1`, db)
	require.NoError(t, err)
	out := map[string]int{}
	for rows.Next() {
		var user string
		var n int
		require.NoError(t, rows.Scan(&user, &n))
		out[user] = n
	}
	require.NoError(t, rows.Err())
	return out
}

// kvLoad keeps Put and Get calls going through the plugin, alternately.
func kvLoad(t *testing.T, c keyvaluev1.KeyValueServiceClient, workers int) *credtest.Load {
	t.Helper()
	return credtest.StartLoad(t, workers, func(ctx context.Context, w, i int) error {
		id := fmt.Sprintf("worker-%d", w)
		if i%2 == 0 {
			_, err := c.Put(ctx, &keyvaluev1.PutRequest{Namespace: "load", Id: id,
				Items: []*keyvaluev1.PutItem{{Key: []byte("k"), Value: []byte(strconv.Itoa(i))}}})
			return err
		}
		_, err := c.Get(ctx, &keyvaluev1.GetRequest{Namespace: "load", Id: id})
		return err
	})
}

// credentialLog polls the plugin's current credentials and keeps every set it yields, by serial,
// with the last expiry seen and when it was replaced.
type credentialLog struct {
	mu       sync.Mutex
	seen     map[uint64]credentials.Credentials
	replaced map[uint64]time.Time
	last     uint64
}

func watchCredentials(t *testing.T, p *postgreskv.Plugin) *credentialLog {
	t.Helper()
	cl := &credentialLog{seen: map[uint64]credentials.Credentials{}, replaced: map[uint64]time.Time{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			if c, _ := postgreskv.CurrentCredentials(p); c.Serial > 0 {
				cl.mu.Lock()
				if c.Serial != cl.last && cl.last != 0 {
					cl.replaced[cl.last] = time.Now()
				}
				cl.seen[c.Serial], cl.last = c, c.Serial
				cl.mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	t.Cleanup(func() { close(stop); wg.Wait() })
	return cl
}

func (cl *credentialLog) serial() uint64 {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.last
}

func (cl *credentialLog) get(serial uint64) (credentials.Credentials, time.Time) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.seen[serial], cl.replaced[serial]
}

func (cl *credentialLog) passwords() []string {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	var out []string
	for _, c := range cl.seen {
		out = append(out, c.Password.Reveal())
	}
	return out
}

// sessionLog samples pg_stat_activity of one database and remembers when each user last had a
// session there, and whether a session outlived its role.
type sessionLog struct {
	mu       sync.Mutex
	lastSeen map[string]time.Time
	orphans  int
	samples  int
}

func watchSessions(t *testing.T, db string) *sessionLog {
	t.Helper()
	conn := connect(t, testsvc.PostgresURL(t))
	name := databaseName(t, db)
	sl := &sessionLog{lastSeen: map[string]time.Time{}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			rows, err := conn.Query(ctx, `SELECT coalesce(usename, '') FROM pg_stat_activity
				WHERE datname = $1 AND usesysid IS NOT NULL`, name)
			if err == nil {
				now := time.Now()
				sl.mu.Lock()
				for rows.Next() {
					var user string
					if rows.Scan(&user) == nil {
						if user == "" {
							sl.orphans++
						}
						sl.lastSeen[user] = now
					}
				}
				sl.samples++
				sl.mu.Unlock()
				rows.Close()
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return sl
}

func (sl *sessionLog) seen(user string) (time.Time, bool) {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	at, ok := sl.lastSeen[user]
	return at, ok
}

func (sl *sessionLog) stats() (samples, orphans int) {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	return sl.samples, sl.orphans
}

// leaseIDs lists the leases of a database role, for the log scan.
func leaseIDs(t *testing.T, admin *vault.Client, role string) []string {
	t.Helper()
	prefix := "database/creds/" + role + "/"
	s, err := admin.Logical().ListWithContext(t.Context(), "sys/leases/lookup/"+prefix)
	if err != nil || s == nil {
		return nil
	}
	keys, _ := s.Data["keys"].([]any)
	var out []string
	for _, k := range keys {
		if id, ok := k.(string); ok {
			out = append(out, prefix+id, id)
		}
	}
	return out
}

// requireLoginRefused connects as a user whose credentials have expired until PostgreSQL refuses
// it. Vault drops the role when it revokes the lease at its expiry; when Vault is down, the
// role's VALID UNTIL, which Vault sets 5s past the lease's expiry, refuses it.
func requireLoginRefused(t *testing.T, db string, c credentials.Credentials) {
	t.Helper()
	deadline := c.Expiry.Add(vaultValidUntilSlack + 3*time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		conn, err := pgx.Connect(ctx, withUser(t, db, c.Username, c.Password.Reveal()))
		cancel()
		if err != nil {
			t.Logf("login as %s refused %s after its expiry", c.Username, time.Since(c.Expiry).Round(100*time.Millisecond))
			assert.Contains(t, err.Error(), "password authentication failed")
			assert.NotContains(t, err.Error(), c.Password.Reveal())
			return
		}
		_ = conn.Close(context.Background())
		require.True(t, time.Now().Before(deadline), "user %s still logs in %s after its expiry", c.Username, time.Since(c.Expiry))
		time.Sleep(250 * time.Millisecond)
	}
}

// vaultValidUntilSlack is how far past a lease's expiry Vault's database engine sets a role's
// VALID UNTIL.
const vaultValidUntilSlack = 5 * time.Second

// TestPluginAuthenticatesFromEverySource starts the plugin on each credentials source and checks
// that its sessions in PostgreSQL belong to the user the source gave, that GetInfo says where
// the credentials come from, and that no secret reaches the log.
func TestPluginAuthenticatesFromEverySource(t *testing.T) {
	t.Parallel()
	admin := credtest.VaultAdmin(t)
	staticPW := staticRolePassword(t, admin)
	vaultAddr := testsvc.VaultAddr(t)
	kvPath := "prism/pgtest-" + credtest.RandomSuffix(t)
	_, err := admin.KVv2("secret").Put(t.Context(), kvPath, map[string]any{"username": "prism_static", "password": staticPW})
	require.NoError(t, err)
	t.Cleanup(func() { _ = admin.KVv2("secret").DeleteMetadata(context.Background(), kvPath) })

	cases := []struct {
		name     string
		setup    func(t *testing.T) (yaml string, env map[string]string, secrets []string)
		kind     string
		user     string // "" = issued by Vault
		location string
	}{
		{"static from DATABASE_URL", func(t *testing.T) (string, map[string]string, []string) {
			t.Helper()
			return "", nil, []string{":" + testsvc.Password + "@"}
		}, credentials.KindStatic, testsvc.User, ""},
		{"file with JSON fields", func(t *testing.T) (string, map[string]string, []string) {
			t.Helper()
			path := filepath.Join(t.TempDir(), "pg.json")
			doc, err := json.Marshal(map[string]string{"username": "prism_static", "password": staticPW})
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(path, doc, 0o600))
			return "backend:\n  credentials:\n    source: file\n    file:\n      path: " + path + "\n", nil, []string{staticPW}
		}, credentials.KindFile, "prism_static", "pg.json"},
		{"vault KV v2 configured from the environment", func(t *testing.T) (string, map[string]string, []string) {
			t.Helper()
			token := credtest.PluginToken(t, admin)
			return "", map[string]string{
				"PRISM_BACKEND_CREDENTIALS_SOURCE":             "vault",
				"PRISM_BACKEND_CREDENTIALS_VAULT_ADDRESS":      vaultAddr,
				"PRISM_BACKEND_CREDENTIALS_VAULT_AUTH_TOKEN":   token,
				"PRISM_BACKEND_CREDENTIALS_VAULT_SECRET_KIND":  "kv",
				"PRISM_BACKEND_CREDENTIALS_VAULT_SECRET_MOUNT": "secret",
				"PRISM_BACKEND_CREDENTIALS_VAULT_SECRET_PATH":  kvPath,
			}, []string{staticPW, token}
		}, credentials.KindVault, "prism_static", "secret/data/" + kvPath},
		{"vault database dynamic role", func(t *testing.T) (string, map[string]string, []string) {
			t.Helper()
			token := credtest.PluginToken(t, admin)
			return vaultYAML(vaultAddr, "method: token\n        token: "+token, "kind: database\n        role: prism-postgres"),
				nil, []string{token}
		}, credentials.KindVault, "", "database/creds/prism-postgres"},
		{"vault database static role", func(t *testing.T) (string, map[string]string, []string) {
			t.Helper()
			token := credtest.PluginToken(t, admin)
			return vaultYAML(vaultAddr, "method: token\n        token: "+token, "kind: database-static\n        role: prism-postgres-static"),
				nil, []string{staticPW, token}
		}, credentials.KindVault, "prism_static", "database/static-creds/prism-postgres-static"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := migratedDatabase(t)
			yaml, env, secrets := tc.setup(t)
			if env == nil {
				env = map[string]string{}
			}
			env["DATABASE_URL"] = withoutPassword(t, db)
			if tc.kind == credentials.KindStatic {
				env["DATABASE_URL"] = db
			}
			p := postgreskv.New()
			r := coretest.Start(t, p, coretest.Options{YAML: yaml, Env: env})
			r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 30*time.Second)
			putOne(t, kv(r), "ns", "r", "k", "v")

			current, err := postgreskv.CurrentCredentials(p)
			require.NoError(t, err)
			want := tc.user
			if want == "" {
				want = current.Username
				assert.True(t, strings.HasPrefix(want, "v-"), "a user issued by Vault, got %s", want)
				assert.False(t, current.Expiry.IsZero(), "dynamic credentials expire")
			}
			users := sessionUsers(t, connect(t, testsvc.PostgresURL(t)), databaseName(t, db))
			assert.Equal(t, map[string]int{want: users[want]}, users, "every session belongs to the source's user")
			assert.Positive(t, users[want])

			caps := credtest.Capabilities(t, r)
			assert.Equal(t, tc.kind, caps["credentials_source"])
			assert.Equal(t, want, caps["credentials_username"])
			assert.Contains(t, caps["credentials_location"], tc.location)
			assert.Equal(t, "1", caps["credentials_serial"])
			// The static password "prism" is also the user and database name: only the other
			// sources' passwords can be looked for.
			if tc.kind != credentials.KindStatic {
				for _, v := range caps {
					assert.NotContains(t, v, current.Password.Reveal())
				}
				secrets = append(secrets, current.Password.Reveal())
			}
			credtest.AssertNoSecrets(t, r.Logs.String(), append(secrets, leaseIDs(t, admin, "prism-postgres")...)...)
		})
	}
}

// vaultYAML is a backend.credentials block for the vault source.
func vaultYAML(addr, auth, secret string) string {
	return "control_plane:\n  health_interval: 200ms\nbackend:\n  credentials:\n    source: vault\n    vault:\n      address: " + addr +
		"\n      retry_interval: 300ms\n      auth:\n        " + auth + "\n      secret:\n        mount: database\n        " + secret + "\n"
}

// TestFileCredentialsSwapUnderLoad rotates credentials the way a Kubernetes Secret volume does,
// by swapping its ..data symlink, while calls run: none fails, the sessions move to the new user,
// and a broken file keeps the credentials in use.
func TestFileCredentialsSwapUnderLoad(t *testing.T) {
	t.Parallel()
	staticPW := staticRolePassword(t, credtest.VaultAdmin(t))
	db := migratedDatabase(t)
	dir := t.TempDir()
	writeGeneration := func(name, user, password string) {
		gen := filepath.Join(dir, name)
		require.NoError(t, os.Mkdir(gen, 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(gen, "username"), []byte(user), 0o600))
		require.NoError(t, os.WriteFile(filepath.Join(gen, "password"), []byte(password), 0o600))
		tmp := filepath.Join(dir, "..data_tmp")
		require.NoError(t, os.Symlink(name, tmp))
		require.NoError(t, os.Rename(tmp, filepath.Join(dir, "..data")))
	}
	writeGeneration("..gen1", "prism_static", staticPW)
	for _, f := range []string{"username", "password"} {
		require.NoError(t, os.Symlink(filepath.Join("..data", f), filepath.Join(dir, f)))
	}

	p := postgreskv.New()
	r := coretest.Start(t, p, coretest.Options{
		YAML: "backend:\n  pool_size: 4\n  credentials:\n    source: file\n    file:\n      path: " + dir + "\n",
		Env:  map[string]string{"DATABASE_URL": withoutPassword(t, db)},
	})
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 30*time.Second)
	sessions := watchSessions(t, db)
	l := kvLoad(t, kv(r), 4)
	time.Sleep(time.Second)

	writeGeneration("..gen2", testsvc.User, testsvc.Password)
	require.Eventually(t, func() bool { c, _ := postgreskv.CurrentCredentials(p); return c.Username == testsvc.User },
		10*time.Second, 50*time.Millisecond, "the swapped secret is read")
	swapped := time.Now()
	time.Sleep(time.Second)
	last, _ := sessions.seen("prism_static")
	assert.True(t, last.Before(swapped.Add(time.Second)), "sessions of the old user were retired")

	// A broken generation (empty password) keeps the credentials in use.
	writeGeneration("..gen3", "someone_else", "")
	require.Eventually(t, func() bool { return r.Logs.Contains("credentials file unreadable; keeping the previous credentials") },
		10*time.Second, 50*time.Millisecond)
	time.Sleep(500 * time.Millisecond)
	c, err := postgreskv.CurrentCredentials(p)
	require.NoError(t, err)
	assert.Equal(t, testsvc.User, c.Username)

	calls, failures := l.Finish()
	t.Logf("file source: %d calls, %d failed, credentials serial %d", calls, len(failures), c.Serial)
	for _, f := range failures[:min(len(failures), 5)] {
		t.Logf("failed call: %v", f.Err)
	}
	assert.Empty(t, failures, "no call fails while the secret volume is swapped")
	assert.Positive(t, calls)
	users := sessionUsers(t, connect(t, testsvc.PostgresURL(t)), databaseName(t, db))
	assert.Zero(t, users["prism_static"], "no session of the old user remains")
	assert.Contains(t, credtest.MetricsText(t, r), `prism_credentials_rotations_total{source="file"} 1`)
	credtest.AssertNoSecrets(t, r.Logs.String(), staticPW)
}

// TestDynamicCredentialsRotateUnderSteadyLoad runs the plugin on database credentials with a 10s
// TTL and a 30s max TTL, logged in by AppRole, under steady load across two credential changes:
// no call fails, connections of old credentials are retired before they expire, and the expired
// users can no longer log in.
func TestDynamicCredentialsRotateUnderSteadyLoad(t *testing.T) {
	t.Parallel()
	admin := credtest.VaultAdmin(t)
	role := "prism-pgtest-" + credtest.RandomSuffix(t)
	_, err := admin.Logical().WriteWithContext(t.Context(), "database/roles/"+role, map[string]any{
		"db_name": "prism-postgres", "default_ttl": "10s", "max_ttl": "30s",
		"creation_statements": pgCreation, "revocation_statements": pgRevocation,
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = admin.Logical().WriteWithContext(ctx, "sys/leases/revoke-prefix/database/creds/"+role, nil)
		_, _ = admin.Logical().DeleteWithContext(ctx, "database/roles/"+role)
	})
	roleID, secretIDFile, secretID := appRoleLogin(t, admin)
	db := migratedDatabase(t)

	p := postgreskv.New()
	r := coretest.Start(t, p, coretest.Options{
		YAML: vaultYAML(testsvc.VaultAddr(t),
			"method: approle\n        role_id: "+roleID+"\n        secret_id_file: "+secretIDFile,
			"kind: database\n        role: "+role) +
			// Renew every 2s and issue new credentials 8s before the max TTL.
			"      renew_margin: 8s\n  pool_size: 4\n",
		Env: map[string]string{"DATABASE_URL": withoutPassword(t, db)},
	})
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 30*time.Second)
	creds := watchCredentials(t, p)
	sessions := watchSessions(t, db)
	leases := map[string]bool{}
	collectLeases := func() {
		for _, id := range leaseIDs(t, admin, role) {
			leases[id] = true
		}
	}
	l := kvLoad(t, kv(r), 4)
	started := time.Now()

	// Two changes: serial 3 is the third set of credentials.
	deadline := time.Now().Add(90 * time.Second)
	for creds.serial() < 3 {
		require.True(t, time.Now().Before(deadline), "no second credential change within 90s (serial %d)", creds.serial())
		collectLeases()
		time.Sleep(500 * time.Millisecond)
	}
	collectLeases()
	// Wait for the first two users to pass their expiry, as calls continue on the third.
	second, _ := creds.get(2)
	for time.Now().Before(second.Expiry.Add(time.Second)) {
		collectLeases()
		time.Sleep(500 * time.Millisecond)
	}
	calls, failures := l.Finish()
	elapsed := time.Since(started)
	text := credtest.MetricsText(t, r)
	rotations := credtest.MetricValue(text, `prism_credentials_rotations_total{source="vault"}`)
	renewals := credtest.MetricValue(text, `prism_credentials_lease_renewals_total{source="vault"}`)
	t.Logf("dynamic credentials: %d calls in %s, %d failed; %v rotations, %v lease renewals, serial %d",
		calls, elapsed.Round(time.Second), len(failures), rotations, renewals, creds.serial())
	for _, f := range failures[:min(len(failures), 5)] {
		t.Logf("failed call at +%s: %v", f.Started.Sub(started).Round(time.Millisecond), f.Err)
	}
	assert.Empty(t, failures, "no call fails across the credential changes")
	assert.GreaterOrEqual(t, rotations, 2.0)
	assert.Positive(t, renewals, "leases were renewed before they were replaced")

	for serial := uint64(1); serial <= 2; serial++ {
		c, replaced := creds.get(serial)
		require.NotEmpty(t, c.Username)
		last, ok := sessions.seen(c.Username)
		require.True(t, ok, "the plugin had sessions as %s", c.Username)
		t.Logf("user %d (%s): replaced %s before its expiry, last session seen %s after the change",
			serial, c.Username, c.Expiry.Sub(replaced).Round(100*time.Millisecond), last.Sub(replaced).Round(100*time.Millisecond))
		assert.True(t, last.Before(c.Expiry), "a session of %s outlived its credentials (last seen %s, expiry %s)", c.Username, last, c.Expiry)
		requireLoginRefused(t, db, c)
	}
	samples, orphans := sessions.stats()
	assert.Zero(t, orphans, "no session outlived its role")
	t.Logf("pg_stat_activity: %d samples", samples)
	caps := credtest.Capabilities(t, r)
	serial, err := strconv.Atoi(caps["credentials_serial"])
	require.NoError(t, err)
	assert.GreaterOrEqual(t, serial, 3)
	assert.NotEmpty(t, caps["credentials_expiry"])

	secrets := append(creds.passwords(), secretID)
	for id := range leases {
		secrets = append(secrets, id)
	}
	assert.NotEmpty(t, leases, "lease ids to scan for")
	credtest.AssertNoSecrets(t, r.Logs.String(), secrets...)
}

// appRoleLogin issues a secret id of the plugins' AppRole (destroyed when the test ends) into a
// file, as a deployment would mount it.
func appRoleLogin(t *testing.T, admin *vault.Client) (roleID, secretIDFile, secretID string) {
	t.Helper()
	r, err := admin.Logical().ReadWithContext(t.Context(), "auth/approle/role/prism-plugins/role-id")
	require.NoError(t, err)
	roleID = r.Data["role_id"].(string)
	s, err := admin.Logical().WriteWithContext(t.Context(), "auth/approle/role/prism-plugins/secret-id", nil)
	require.NoError(t, err)
	secretID = s.Data["secret_id"].(string)
	t.Cleanup(func() {
		_, _ = admin.Logical().WriteWithContext(context.Background(), "auth/approle/role/prism-plugins/secret-id/destroy",
			map[string]any{"secret_id": secretID})
	})
	secretIDFile = filepath.Join(t.TempDir(), "secret-id")
	require.NoError(t, os.WriteFile(secretIDFile, []byte(secretID+"\n"), 0o600))
	return roleID, secretIDFile, secretID
}

// privateBao is an OpenBao dev server of the test's own, which it may stop and start again.
// Dev mode keeps everything in memory, so each start configures the database engine anew.
type privateBao struct {
	bin, addr, token string
	pgHostPort       string
	cmd              *exec.Cmd
	exited           chan struct{}
	out              *coretest.Buffer
}

// baoBinary is the bao that `make services` caches (scripts/services.sh bao_fetch).
func baoBinary(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("PRISM_CACHE_DIR")
	if dir == "" {
		cache := os.Getenv("XDG_CACHE_HOME")
		if cache == "" {
			home, err := os.UserHomeDir()
			require.NoError(t, err)
			cache = filepath.Join(home, ".cache")
		}
		dir = filepath.Join(cache, "prism")
	}
	bin := filepath.Join(dir, "openbao-2.7.2", "bao")
	_, err := os.Stat(bin)
	require.NoError(t, err, "the bao binary is missing: run `make services`")
	return bin
}

func startPrivateBao(t *testing.T) *privateBao {
	t.Helper()
	u, err := url.Parse(testsvc.PostgresURL(t))
	require.NoError(t, err)
	b := &privateBao{
		bin:        baoBinary(t),
		addr:       "127.0.0.1:" + strconv.Itoa(binarytest.FreePort(t)),
		token:      "prism-private-" + credtest.RandomSuffix(t),
		pgHostPort: u.Host,
	}
	b.start(t)
	t.Cleanup(func() { b.stop(t) })
	return b
}

func (b *privateBao) url() string { return "http://" + b.addr }

func (b *privateBao) start(t *testing.T) {
	t.Helper()
	b.out = &coretest.Buffer{}
	b.cmd = exec.Command(b.bin, "server", "-dev", "-dev-listen-address="+b.addr, "-dev-root-token-id="+b.token)
	b.cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	b.cmd.Stdout, b.cmd.Stderr = b.out, b.out
	require.NoError(t, b.cmd.Start())
	b.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) { _ = cmd.Wait(); close(exited) }(b.cmd, b.exited)
	admin := credtest.VaultClient(t, b.url(), b.token)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := admin.Auth().Token().LookupSelfWithContext(t.Context()); err == nil {
			break
		}
		require.True(t, time.Now().Before(deadline), "private OpenBao did not start:\n%s", b.out.String())
		time.Sleep(100 * time.Millisecond)
	}
	require.NoError(t, admin.Sys().MountWithContext(t.Context(), "database", &vault.MountInput{Type: "database"}))
	_, err := admin.Logical().WriteWithContext(t.Context(), "database/config/prism-postgres", map[string]any{
		"plugin_name":       "postgresql-database-plugin",
		"connection_url":    "postgresql://{{username}}:{{password}}@" + b.pgHostPort + "/prism?sslmode=disable",
		"username":          vaultPGUser,
		"password":          vaultPGPassword,
		"allowed_roles":     "prism-*",
		"verify_connection": true,
	})
	require.NoError(t, err)
	_, err = admin.Logical().WriteWithContext(t.Context(), "database/roles/prism-outage", map[string]any{
		"db_name": "prism-postgres", "default_ttl": "8s", "max_ttl": "1m",
		"creation_statements": pgCreation, "revocation_statements": pgRevocation,
	})
	require.NoError(t, err)
}

// stop ends the server (its leases are forgotten; the roles they created stay in PostgreSQL
// until they are dropped).
func (b *privateBao) stop(t *testing.T) {
	t.Helper()
	if b.cmd == nil {
		return
	}
	_ = b.cmd.Process.Signal(os.Interrupt)
	select {
	case <-b.exited:
	case <-time.After(15 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.exited
	}
	b.cmd = nil
}

// dropRoles removes database users the private OpenBao created and can no longer revoke.
func dropRoles(t *testing.T, users []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u, err := url.Parse(testsvc.PostgresURL(t))
	require.NoError(t, err)
	u.User = url.UserPassword(vaultPGUser, vaultPGPassword)
	conn, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Errorf("drop test roles: %v", err)
		return
	}
	defer func() { _ = conn.Close(context.Background()) }()
	for _, user := range users {
		if _, err := conn.Exec(ctx, `DROP ROLE IF EXISTS `+pgx.Identifier{user}.Sanitize()); err != nil {
			t.Errorf("drop role %s: %v", user, err)
		}
	}
}

// TestVaultOutageServesOnCachedCredentialsThenRecovers stops the plugin's OpenBao while calls
// run: they keep succeeding on the cached credentials until those expire, then the plugin is
// NOT_SERVING with the reason, and once OpenBao is back it serves again by itself.
func TestVaultOutageServesOnCachedCredentialsThenRecovers(t *testing.T) {
	t.Parallel()
	bao := startPrivateBao(t)
	db := migratedDatabase(t)
	p := postgreskv.New()
	r := coretest.Start(t, p, coretest.Options{
		YAML: vaultYAML(bao.url(), "method: token\n        token: "+bao.token, "kind: database\n        role: prism-outage") +
			"      renew_margin: 2s\n  pool_size: 4\n",
		Env: map[string]string{"DATABASE_URL": withoutPassword(t, db)},
	})
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 30*time.Second)
	creds := watchCredentials(t, p)
	sessions := watchSessions(t, db)
	cached, err := postgreskv.CurrentCredentials(p)
	require.NoError(t, err)
	t.Cleanup(func() { dropRoles(t, []string{cached.Username}) })

	l := kvLoad(t, kv(r), 4)
	time.Sleep(500 * time.Millisecond)
	bao.stop(t)
	stopped := time.Now()
	cached, err = postgreskv.CurrentCredentials(p) // a renewal may have moved the expiry
	require.NoError(t, err)
	expiry := cached.Expiry

	// The lease cannot be renewed: the cached credentials serve until they expire.
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_NOT_SERVING, 30*time.Second)
	notServing := time.Now()
	assert.True(t, notServing.After(expiry.Add(-2*time.Second)), "serving until the credentials are about to expire (%s before)", expiry.Sub(notServing))
	require.Eventually(t, func() bool { return time.Now().After(expiry) }, 30*time.Second, 50*time.Millisecond)
	require.Eventually(t, func() bool { return r.Logs.Contains("credentials expired") }, 10*time.Second, 100*time.Millisecond,
		"the health log says why")
	err = p.Health(t.Context())
	require.ErrorIs(t, err, credentials.ErrExpired)
	caps := credtest.Capabilities(t, r)
	assert.Contains(t, caps["credentials_last_error"], "connection refused", "GetInfo says why renewal failed")
	calls, failures := l.Finish()
	var early int
	for _, f := range failures {
		// Connections close retireAhead (1s) before the expiry; allow a call that began just
		// before that moment to need a new connection.
		if f.Started.Before(expiry.Add(-1250 * time.Millisecond)) {
			early++
			t.Logf("call failed %s before the credentials expired: %v", expiry.Sub(f.Started).Round(time.Millisecond), f.Err)
		}
	}
	t.Logf("outage: OpenBao stopped %s before the credentials expired; NOT_SERVING %s before the expiry; %d calls, %d failed before the expiry, %d after",
		expiry.Sub(stopped).Round(100*time.Millisecond), expiry.Sub(notServing).Round(100*time.Millisecond), calls, early, len(failures)-early)
	t.Logf("while not serving: %v", err)
	assert.Zero(t, early, "calls succeed on the cached credentials until they expire")
	assert.Greater(t, expiry.Sub(stopped), 3*time.Second, "the test gave the cached credentials time to serve")
	time.Sleep(time.Second)
	users := sessionUsers(t, connect(t, testsvc.PostgresURL(t)), databaseName(t, db))
	assert.Zero(t, users[cached.Username], "no session of the expired user remains")
	if last, ok := sessions.seen(cached.Username); ok {
		assert.True(t, last.Before(expiry), "a session of %s outlived its credentials", cached.Username)
	}

	bao.start(t)
	restarted := time.Now()
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 30*time.Second)
	fresh, err := postgreskv.CurrentCredentials(p)
	require.NoError(t, err)
	t.Cleanup(func() { dropRoles(t, []string{fresh.Username}) })
	assert.NotEqual(t, cached.Username, fresh.Username)
	putOne(t, kv(r), "ns", "r", "k", "after the outage")
	assert.Empty(t, credtest.Capabilities(t, r)["credentials_last_error"])
	requireLoginRefused(t, db, cached) // no Vault revoked it: its VALID UNTIL does
	t.Logf("recovered with new credentials (serial %d) %s after OpenBao came back", creds.serial(), time.Since(restarted).Round(100*time.Millisecond))
	credtest.AssertNoSecrets(t, r.Logs.String(), cached.Password.Reveal(), fresh.Password.Reveal(), bao.token)
}

// TestCredentialsChangeOnReloadNeedsARestart: a new credentials block is reported as
// restart-required and the running source stays in use.
func TestCredentialsChangeOnReloadNeedsARestart(t *testing.T) {
	t.Parallel()
	db := newDatabase(t)
	r := startPlugin(t, db, "")
	path := filepath.Join(t.TempDir(), "password")
	require.NoError(t, os.WriteFile(path, []byte(testsvc.Password), 0o600))
	r.WriteConfig(t, "backend:\n  credentials:\n    source: file\n    file:\n      path: "+path+"\n")
	res, err := pluginv1.NewPluginServiceClient(r.Conn).Reload(t.Context(), &pluginv1.ReloadRequest{})
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"backend.credentials.source", "backend.credentials.file.path"}, res.GetRestartRequired())
	assert.Empty(t, res.GetChanged())
	assert.Equal(t, credentials.KindStatic, credtest.Capabilities(t, r)["credentials_source"])
	putOne(t, kv(r), "ns", "r", "k", "still static")
}
