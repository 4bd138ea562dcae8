package rediscache_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/prism-gateway/plugins/core/coretest"
	"github.com/prism-gateway/plugins/core/credentials"
	cachev1 "github.com/prism-gateway/plugins/gen/prism/cache/v1"
	"github.com/prism-gateway/plugins/internal/credtest"
	"github.com/prism-gateway/plugins/internal/testsvc"
	"github.com/prism-gateway/plugins/redis/rediscache"
)

// The permissions of the ACL users the tests create: those of the shared prism user.
var aclRules = []string{"on", "~prism:*", "&prism:*", "+@all", "-@dangerous", "+info", "+ping", "+hello", "+auth",
	"+client|setname", "+client|getname", "+client|id", "+client|info"}

// redisAdmin is a client of the single test Redis as its admin user.
func redisAdmin(t *testing.T) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: testsvc.RedisAddr(t), Username: testsvc.RedisAdminUser, Password: testsvc.RedisAdminPassword})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// aclUser creates an ACL user with the plugin's permissions and a random password, deleted when
// the test ends.
func aclUser(t *testing.T, admin *redis.Client) (user, password string) {
	t.Helper()
	user, password = "prism-test-"+credtest.RandomSuffix(t), "pw-"+credtest.RandomSuffix(t)
	require.NoError(t, admin.Do(t.Context(), append([]any{"ACL", "SETUSER", user, "reset", ">" + password},
		toAny(aclRules)...)...).Err())
	t.Cleanup(func() { _ = admin.Do(context.Background(), "ACL", "DELUSER", user).Err() })
	return user, password
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// clientUsers counts the connections to Redis by ACL user.
func clientUsers(t *testing.T, admin *redis.Client) map[string]int {
	t.Helper()
	list, err := admin.ClientList(t.Context()).Result()
	require.NoError(t, err)
	users := map[string]int{}
	for _, line := range strings.Split(list, "\n") {
		for _, field := range strings.Fields(line) {
			if u, ok := strings.CutPrefix(field, "user="); ok {
				users[u]++
			}
		}
	}
	return users
}

// aclUserExists reports whether Redis still has the ACL user.
func aclUserExists(t *testing.T, admin *redis.Client, user string) bool {
	t.Helper()
	users, err := admin.Do(t.Context(), "ACL", "USERS").StringSlice()
	require.NoError(t, err)
	for _, u := range users {
		if u == user {
			return true
		}
	}
	return false
}

// startWithCredentials runs the plugin on the single test Redis with yaml and env (no static
// user or password unless given) and waits until it serves.
func startWithCredentials(t *testing.T, yaml string, env map[string]string) *coretest.Running {
	t.Helper()
	r, _ := startPluginWithCredentials(t, yaml, env)
	return r
}

func startPluginWithCredentials(t *testing.T, yaml string, env map[string]string) (*coretest.Running, *rediscache.Plugin) {
	t.Helper()
	full := map[string]string{"REDIS_ADDRESS": testsvc.RedisAddr(t)}
	for k, v := range env {
		full[k] = v
	}
	p := rediscache.New()
	r := coretest.Start(t, p, coretest.Options{
		YAML: "control_plane:\n  health_interval: 200ms\n" + yaml, Env: full,
	})
	r.WaitHealth(t, cacheService, healthpb.HealthCheckResponse_SERVING, 15*time.Second)
	return r, p
}

// cacheLoad keeps Set and Get calls going through the plugin.
func cacheLoad(t *testing.T, r *coretest.Running, workers int) *credtest.Load {
	t.Helper()
	c := cachev1.NewCacheServiceClient(r.Conn)
	return credtest.StartLoad(t, workers, func(ctx context.Context, w, i int) error {
		key := fmt.Sprintf("load-%d", w)
		if i%2 == 0 {
			_, err := c.Set(ctx, &cachev1.SetRequest{Namespace: "creds", Key: key, Value: []byte(fmt.Sprint(i))})
			return err
		}
		_, err := c.Get(ctx, &cachev1.GetRequest{Namespace: "creds", Key: key})
		return err
	})
}

// reportLoad logs the figures of a finished load and fails on any failed call.
func reportLoad(t *testing.T, what string, l *credtest.Load, extra string) {
	t.Helper()
	calls, failures := l.Finish()
	t.Logf("%s: %d calls, %d failed%s", what, calls, len(failures), extra)
	for _, f := range failures[:min(len(failures), 5)] {
		t.Logf("failed call started %s: %v", f.Started.Format("15:04:05.000"), f.Err)
	}
	assert.Positive(t, calls)
	assert.Empty(t, failures, "no call fails (%s)", what)
}

// TestPluginAuthenticatesFromEverySource starts the plugin on each credentials source and checks
// that its connections to Redis belong to the user the source gave, that GetInfo says where the
// credentials come from, and that no secret reaches the log.
func TestPluginAuthenticatesFromEverySource(t *testing.T) {
	admin := redisAdmin(t)
	vaultAdmin := credtest.VaultAdmin(t)
	fileUser, filePW := aclUser(t, admin)
	kvUser, kvPW := aclUser(t, admin)
	kvPath := "prism/redistest-" + credtest.RandomSuffix(t)
	_, err := vaultAdmin.KVv2("secret").Put(t.Context(), kvPath, map[string]any{"username": kvUser, "password": kvPW})
	require.NoError(t, err)
	t.Cleanup(func() { _ = vaultAdmin.KVv2("secret").DeleteMetadata(context.Background(), kvPath) })

	cases := []struct {
		name  string
		setup func(t *testing.T) (yaml string, env map[string]string, secrets []string)
		kind  string
		user  string // "" = issued by Vault
	}{
		{"static from REDIS_USERNAME and REDIS_PASSWORD", func(t *testing.T) (string, map[string]string, []string) {
			t.Helper()
			return "", map[string]string{"REDIS_USERNAME": testsvc.User, "REDIS_PASSWORD": testsvc.Password}, nil
		}, credentials.KindStatic, testsvc.User},
		{"file with key=value lines", func(t *testing.T) (string, map[string]string, []string) {
			t.Helper()
			path := filepath.Join(t.TempDir(), "redis.env")
			require.NoError(t, os.WriteFile(path, []byte("username="+fileUser+"\npassword="+filePW+"\n"), 0o600))
			return "backend:\n  credentials:\n    source: file\n    file:\n      path: " + path + "\n", nil, []string{filePW}
		}, credentials.KindFile, fileUser},
		{"vault KV v2 configured from the environment", func(t *testing.T) (string, map[string]string, []string) {
			t.Helper()
			token := credtest.PluginToken(t, vaultAdmin)
			return "", map[string]string{
				"PRISM_BACKEND_CREDENTIALS_SOURCE":            "vault",
				"PRISM_BACKEND_CREDENTIALS_VAULT_ADDRESS":     testsvc.VaultAddr(t),
				"PRISM_BACKEND_CREDENTIALS_VAULT_AUTH_TOKEN":  token,
				"PRISM_BACKEND_CREDENTIALS_VAULT_SECRET_PATH": kvPath,
			}, []string{kvPW, token}
		}, credentials.KindVault, kvUser},
		{"vault dynamic ACL user from the database engine", func(t *testing.T) (string, map[string]string, []string) {
			t.Helper()
			token := credtest.PluginToken(t, vaultAdmin)
			return "backend:\n  credentials:\n    source: vault\n    vault:\n      address: " + testsvc.VaultAddr(t) +
					"\n      auth:\n        token: " + token + "\n      secret:\n        kind: database\n        mount: database\n        role: prism-redis\n",
				nil, []string{token}
		}, credentials.KindVault, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			yaml, env, secrets := tc.setup(t)
			r := startWithCredentials(t, yaml, env)
			c := cachev1.NewCacheServiceClient(r.Conn)
			_, err := c.Set(t.Context(), &cachev1.SetRequest{Namespace: "creds", Key: "k", Value: []byte("v")})
			require.NoError(t, err)

			caps := credtest.Capabilities(t, r)
			assert.Equal(t, tc.kind, caps["credentials_source"])
			user := caps["credentials_username"]
			if tc.user != "" {
				assert.Equal(t, tc.user, user)
			} else {
				assert.True(t, strings.HasPrefix(user, "V_"), "a user issued by the database engine, got %q", user)
			}
			assert.Positive(t, clientUsers(t, admin)[user], "the plugin's connections log in as %s", user)
			credtest.AssertNoSecrets(t, r.Logs.String(), secrets...)
		})
	}
}

// dynamicRole creates a redis database role on the shared OpenBao with short leases.
func dynamicRole(t *testing.T, admin *vault.Client, defaultTTL, maxTTL string) string {
	t.Helper()
	role := "prism-redistest-" + credtest.RandomSuffix(t)
	rules, err := json.Marshal(aclRules[1:]) // the engine adds "on" itself
	require.NoError(t, err)
	_, err = admin.Logical().WriteWithContext(t.Context(), "database/roles/"+role, map[string]any{
		"db_name": "prism-redis", "default_ttl": defaultTTL, "max_ttl": maxTTL, "creation_statements": string(rules),
	})
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = admin.Logical().DeleteWithContext(context.Background(), "database/roles/"+role) })
	return role
}

// Dynamic ACL users with short leases (renewed at 2/3 of their 4s TTL, replaced before their 8s
// max TTL) under steady load across at least two rotations: no call fails, and every replaced
// user is gone from Redis once its lease ended, with no connection left.
func TestDynamicACLUsersRotateUnderLoadWithoutFailedCalls(t *testing.T) {
	admin := redisAdmin(t)
	vaultAdmin := credtest.VaultAdmin(t)
	role := dynamicRole(t, vaultAdmin, "4s", "8s")
	token := credtest.PluginToken(t, vaultAdmin)
	r, p := startPluginWithCredentials(t, "backend:\n  credentials:\n    source: vault\n    vault:\n      address: "+testsvc.VaultAddr(t)+
		"\n      auth:\n        token: "+token+"\n      secret:\n        kind: database\n        mount: database\n        role: "+role+
		"\n      renew_margin: 3s\n      retry_interval: 200ms\n", nil)
	current := func() credentials.Credentials {
		c, err := p.CurrentCredentials()
		require.NoError(t, err)
		return c
	}
	first := current()
	users, passwords := []string{first.Username}, []string{first.Password.Reveal()}
	l := cacheLoad(t, r, 4)
	deadline := time.Now().Add(30 * time.Second)
	for len(users) < 3 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		if c := current(); c.Username != users[len(users)-1] {
			users, passwords = append(users, c.Username), append(passwords, c.Password.Reveal())
		}
	}
	require.Len(t, users, 3, "two rotations within 30s")
	time.Sleep(time.Second)
	text := credtest.MetricsText(t, r)
	reportLoad(t, "dynamic ACL users", l, fmt.Sprintf(", %d rotations (metric %v), %v lease renewals", len(users)-1,
		credtest.MetricValue(text, `prism_credentials_rotations_total{source="vault"}`),
		credtest.MetricValue(text, `prism_credentials_lease_renewals_total{source="vault"}`)))

	// Vault revokes each replaced user when its lease ends; the plugin closed its connections
	// before that.
	for _, old := range users[:2] {
		require.Eventually(t, func() bool { return !aclUserExists(t, admin, old) }, 15*time.Second, 100*time.Millisecond,
			"the replaced ACL user %s is revoked", old)
		assert.Zero(t, clientUsers(t, admin)[old], "no connection of the replaced user %s is left", old)
	}
	credtest.AssertNoSecrets(t, r.Logs.String(), append(passwords, token)...)
}

// k8sSecretVolume is a directory laid out as the kubelet writes a Secret volume: each key a
// symlink to ..data/<key>, ..data a symlink to a timestamped directory swapped atomically.
type k8sSecretVolume struct {
	dir string
	gen int
}

func (v *k8sSecretVolume) write(t *testing.T, fields map[string]string) {
	t.Helper()
	v.gen++
	ts := filepath.Join(v.dir, fmt.Sprintf("..2026_12_02_%02d", v.gen))
	require.NoError(t, os.Mkdir(ts, 0o755))
	for k, val := range fields {
		require.NoError(t, os.WriteFile(filepath.Join(ts, k), []byte(val), 0o600))
		if _, err := os.Lstat(filepath.Join(v.dir, k)); os.IsNotExist(err) {
			require.NoError(t, os.Symlink(filepath.Join("..data", k), filepath.Join(v.dir, k)))
		}
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	require.NoError(t, os.Symlink(filepath.Base(ts), tmp))
	require.NoError(t, os.Rename(tmp, filepath.Join(v.dir, "..data")))
}

// The file source under load: a Kubernetes Secret volume swapped to another user, a Vault Agent
// style file rewritten in place, and a broken file, without a failed call; the broken file keeps
// the credentials in force and GetInfo says why.
func TestFileSourceRotatesUnderLoadWithoutFailedCalls(t *testing.T) {
	admin := redisAdmin(t)
	t.Run("kubernetes secret volume swap", func(t *testing.T) {
		userA, pwA := aclUser(t, admin)
		userB, pwB := aclUser(t, admin)
		vol := &k8sSecretVolume{dir: t.TempDir()}
		vol.write(t, map[string]string{"username": userA, "password": pwA})
		r := startWithCredentials(t, "backend:\n  credentials:\n    source: file\n    file:\n      path: "+vol.dir+"\n", nil)
		l := cacheLoad(t, r, 4)
		time.Sleep(500 * time.Millisecond)
		vol.write(t, map[string]string{"username": userB, "password": pwB})
		require.Eventually(t, func() bool { return credtest.Capabilities(t, r)["credentials_username"] == userB },
			10*time.Second, 50*time.Millisecond, "the swapped volume's user is taken")
		time.Sleep(500 * time.Millisecond)
		// An operator removing the old user now drops its connections: no call notices.
		require.NoError(t, admin.Do(t.Context(), "ACL", "DELUSER", userA).Err())
		time.Sleep(500 * time.Millisecond)
		reportLoad(t, "secret volume swap", l, "")
		assert.Positive(t, clientUsers(t, admin)[userB])
		credtest.AssertNoSecrets(t, r.Logs.String(), pwA, pwB)
	})
	t.Run("file rewritten in place, then broken", func(t *testing.T) {
		userA, pwA := aclUser(t, admin)
		userB, pwB := aclUser(t, admin)
		path := filepath.Join(t.TempDir(), "redis.json")
		writeJSON := func(user, pw string) {
			doc, err := json.Marshal(map[string]string{"username": user, "password": pw})
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(path, doc, 0o600)) // truncate and write: not atomic
		}
		writeJSON(userA, pwA)
		r := startWithCredentials(t, "backend:\n  credentials:\n    source: file\n    file:\n      path: "+path+"\n", nil)
		l := cacheLoad(t, r, 4)
		time.Sleep(500 * time.Millisecond)
		writeJSON(userB, pwB)
		require.Eventually(t, func() bool { return credtest.Capabilities(t, r)["credentials_username"] == userB },
			10*time.Second, 50*time.Millisecond, "the rewritten file's user is taken")
		require.NoError(t, os.WriteFile(path, []byte(`{"username": "half-writ`), 0o600))
		require.Eventually(t, func() bool { return credtest.Capabilities(t, r)["credentials_last_error"] != "" },
			10*time.Second, 50*time.Millisecond, "GetInfo says the file did not parse")
		time.Sleep(500 * time.Millisecond)
		reportLoad(t, "file rewritten in place, then broken", l, "")
		assert.Equal(t, userB, credtest.Capabilities(t, r)["credentials_username"], "a broken file keeps the credentials in force")
		credtest.AssertNoSecrets(t, r.Logs.String(), pwA, pwB)
	})
}

// An AppRole login whose token lives 2s (4s at most): the source logs in again whenever the
// token cannot be renewed, and still sees a new KV version after many token lifetimes.
func TestAppRoleTokenExpiryLogsInAgain(t *testing.T) {
	admin := redisAdmin(t)
	vaultAdmin := credtest.VaultAdmin(t)
	role := "prism-redistest-" + credtest.RandomSuffix(t)
	_, err := vaultAdmin.Logical().WriteWithContext(t.Context(), "auth/approle/role/"+role, map[string]any{
		"token_policies": "prism-plugins", "token_ttl": "2s", "token_max_ttl": "4s",
	})
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = vaultAdmin.Logical().DeleteWithContext(context.Background(), "auth/approle/role/"+role) })
	rid, err := vaultAdmin.Logical().ReadWithContext(t.Context(), "auth/approle/role/"+role+"/role-id")
	require.NoError(t, err)
	sid, err := vaultAdmin.Logical().WriteWithContext(t.Context(), "auth/approle/role/"+role+"/secret-id", nil)
	require.NoError(t, err)
	secretID := sid.Data["secret_id"].(string)
	secretIDFile := filepath.Join(t.TempDir(), "secret-id")
	require.NoError(t, os.WriteFile(secretIDFile, []byte(secretID), 0o600))

	userA, pwA := aclUser(t, admin)
	userB, pwB := aclUser(t, admin)
	kvPath := "prism/redistest-" + credtest.RandomSuffix(t)
	_, err = vaultAdmin.KVv2("secret").Put(t.Context(), kvPath, map[string]any{"username": userA, "password": pwA})
	require.NoError(t, err)
	t.Cleanup(func() { _ = vaultAdmin.KVv2("secret").DeleteMetadata(context.Background(), kvPath) })

	r := startWithCredentials(t, "backend:\n  credentials:\n    source: vault\n    vault:\n      address: "+testsvc.VaultAddr(t)+
		"\n      auth:\n        method: approle\n        role_id: "+rid.Data["role_id"].(string)+"\n        secret_id_file: "+secretIDFile+
		"\n      secret:\n        path: "+kvPath+"\n        poll_interval: 500ms\n      retry_interval: 200ms\n", nil)
	l := cacheLoad(t, r, 2)
	time.Sleep(9 * time.Second) // past two max token lifetimes
	_, err = vaultAdmin.KVv2("secret").Put(t.Context(), kvPath, map[string]any{"username": userB, "password": pwB})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return credtest.Capabilities(t, r)["credentials_username"] == userB },
		5*time.Second, 50*time.Millisecond, "the source still reads Vault after its tokens expired")
	logins := strings.Count(r.Logs.String(), "logging in again")
	reportLoad(t, "approle with 2s tokens", l, fmt.Sprintf(", %d re-logins logged", logins))
	assert.Empty(t, credtest.Capabilities(t, r)["credentials_last_error"])
	credtest.AssertNoSecrets(t, r.Logs.String(), pwA, pwB, secretID)
}

// What a Vault outage comes to once the cached credentials expire, shown with a file whose expiry
// passes: the plugin stops using the user (calls are UNAVAILABLE, no connection outlives it),
// reports NOT_SERVING with the reason, and new credentials make it serve again by itself.
func TestExpiredCredentialsAreNotServingUntilReplaced(t *testing.T) {
	admin := redisAdmin(t)
	userA, pwA := aclUser(t, admin)
	userB, pwB := aclUser(t, admin)
	path := filepath.Join(t.TempDir(), "redis.json")
	expiry := time.Now().Add(3 * time.Second).UTC()
	doc := fmt.Sprintf(`{"username": %q, "password": %q, "expiry": %q}`, userA, pwA, expiry.Format(time.RFC3339Nano))
	require.NoError(t, os.WriteFile(path, []byte(doc), 0o600))
	r := startWithCredentials(t, "backend:\n  credentials:\n    source: file\n    file:\n      path: "+path+"\n", nil)
	c := cachev1.NewCacheServiceClient(r.Conn)
	_, err := c.Set(t.Context(), &cachev1.SetRequest{Namespace: "creds", Key: "k", Value: []byte("v")})
	require.NoError(t, err)
	assert.Equal(t, expiry.Format(time.RFC3339), credtest.Capabilities(t, r)["credentials_expiry"])

	r.WaitHealth(t, cacheService, healthpb.HealthCheckResponse_NOT_SERVING, 10*time.Second)
	t.Logf("NOT_SERVING at expiry%+v (the client is replaced 1s ahead)", time.Since(expiry).Round(time.Millisecond))
	require.Eventually(t, func() bool { return r.Logs.Contains("credentials expired") }, 5*time.Second, 50*time.Millisecond,
		"the log gives the reason")
	_, err = c.Get(t.Context(), &cachev1.GetRequest{Namespace: "creds", Key: "k"})
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	assert.Zero(t, clientUsers(t, admin)[userA], "no connection of the expired user is left")

	require.NoError(t, os.WriteFile(path, []byte(fmt.Sprintf(`{"username": %q, "password": %q}`, userB, pwB)), 0o600))
	r.WaitHealth(t, cacheService, healthpb.HealthCheckResponse_SERVING, 10*time.Second)
	caps := credtest.Capabilities(t, r)
	assert.Equal(t, userB, caps["credentials_username"])
	assert.NotContains(t, caps, "credentials_expiry")
	_, err = c.Get(t.Context(), &cachev1.GetRequest{Namespace: "creds", Key: "k"})
	require.NoError(t, err)
	credtest.AssertNoSecrets(t, r.Logs.String(), pwA, pwB)
}
