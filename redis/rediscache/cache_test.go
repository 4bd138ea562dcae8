package rediscache_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/prism-gateway/plugins/conformance/cachetest"
	"github.com/prism-gateway/plugins/core/coretest"
	cachev1 "github.com/prism-gateway/plugins/gen/prism/cache/v1"
	pluginv1 "github.com/prism-gateway/plugins/gen/prism/plugin/v1"
	"github.com/prism-gateway/plugins/internal/testsvc"
	"github.com/prism-gateway/plugins/redis/rediscache"
)

const cacheServiceName = "prism.cache.v1.CacheService"

// startRedisCache runs the plugin against addrs as the restricted ACL user prism and waits until
// it serves.
func startRedisCache(t *testing.T, addrs []string, yaml string) *coretest.Running {
	t.Helper()
	r := coretest.Start(t, rediscache.New(), coretest.Options{
		YAML: yaml,
		Env: map[string]string{
			"REDIS_ADDRESS":  strings.Join(addrs, ","),
			"REDIS_USERNAME": testsvc.User,
			"REDIS_PASSWORD": testsvc.Password,
		},
	})
	r.WaitHealth(t, cacheServiceName, healthpb.HealthCheckResponse_SERVING, 15*time.Second)
	return r
}

// redisCLI reaches Redis with the real redis-cli binary, as an operator would, to prove the plugin
// stores keys where the README says.
type redisCLI struct {
	addr      string
	cluster   bool
	user      string
	password  string
	keyPrefix string
}

func newRedisCLI(addr string, cluster bool) *redisCLI {
	return &redisCLI{addr: addr, cluster: cluster, user: testsvc.User, password: testsvc.Password, keyPrefix: "prism:"}
}

// run executes one command; stdin, when set, is sent as the last argument (redis-cli -x).
func (c *redisCLI) run(ctx context.Context, stdin []byte, args ...string) ([]byte, error) {
	host, port, err := net.SplitHostPort(c.addr)
	if err != nil {
		return nil, err
	}
	base := []string{"--no-auth-warning", "-h", host, "-p", port}
	if c.user != "" {
		base = append(base, "--user", c.user, "--pass", c.password)
	}
	if c.cluster {
		base = append(base, "-c")
	}
	if stdin != nil {
		base = append(base, "-x")
	}
	cmd := exec.CommandContext(ctx, "redis-cli", append(base, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("redis-cli %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	// redis-cli ends every reply with a newline; server errors come back on stdout too.
	out = bytes.TrimSuffix(out, []byte("\n"))
	if bytes.HasPrefix(out, []byte("ERR")) || bytes.HasPrefix(out, []byte("NOPERM")) || bytes.HasPrefix(out, []byte("WRONGTYPE")) {
		return nil, fmt.Errorf("redis-cli %s: %s", strings.Join(args, " "), out)
	}
	return out, nil
}

func (c *redisCLI) key(namespace, key string) string { return c.keyPrefix + namespace + ":" + key }

// Get implements cachetest.RawBackend.
func (c *redisCLI) Get(ctx context.Context, namespace, key string) ([]byte, bool, error) {
	exists, err := c.run(ctx, nil, "EXISTS", c.key(namespace, key))
	if err != nil || string(exists) != "1" {
		return nil, false, err
	}
	v, err := c.run(ctx, nil, "GET", c.key(namespace, key))
	return v, err == nil, err
}

// Set implements cachetest.RawBackend.
func (c *redisCLI) Set(ctx context.Context, namespace, key string, value []byte) error {
	out, err := c.run(ctx, value, "SET", c.key(namespace, key))
	if err == nil && string(out) != "OK" {
		err = fmt.Errorf("redis-cli SET answered %q", out)
	}
	return err
}

// TTL implements cachetest.RawBackend.
func (c *redisCLI) TTL(ctx context.Context, namespace, key string) (time.Duration, error) {
	out, err := c.run(ctx, nil, "PTTL", c.key(namespace, key))
	if err != nil {
		return 0, err
	}
	ms, err := strconv.ParseInt(string(out), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("PTTL answered %q", out)
	}
	return time.Duration(max(ms, 0)) * time.Millisecond, nil
}

func TestConformanceOnSingleRedis(t *testing.T) {
	addr := testsvc.RedisAddr(t)
	r := startRedisCache(t, []string{addr}, "")
	cachetest.Run(t, r.Conn, cachetest.Options{Raw: newRedisCLI(addr, false)})
}

func TestConformanceOnRedisCluster(t *testing.T) {
	addrs := testsvc.RedisClusterAddrs(t)
	r := startRedisCache(t, addrs, "")
	cachetest.RunAddress(t, r.Addr, cachetest.Options{Raw: newRedisCLI(addrs[0], true)})
}

func TestConformanceInDevMode(t *testing.T) {
	r := coretest.Start(t, rediscache.New(), coretest.Options{DevMode: true, DevDataDir: t.TempDir()})
	r.WaitHealth(t, cacheServiceName, healthpb.HealthCheckResponse_SERVING, 15*time.Second)
	assert.True(t, r.Logs.Contains("DEV MODE"), "dev mode is clearly logged")
	// The embedded Redis's address is in that log line; redis-cli speaks to it without a user.
	m := regexp.MustCompile(`"addr":"([0-9.]+:[0-9]+)"`).FindStringSubmatch(r.Logs.String())
	require.NotNil(t, m, "the dev-mode log line gives the embedded Redis's address")
	info, err := pluginv1.NewPluginServiceClient(r.Conn).GetInfo(t.Context(), &pluginv1.GetInfoRequest{})
	require.NoError(t, err)
	assert.True(t, info.GetDevMode())
	assert.Equal(t, "miniredis (dev mode)", info.GetBackend())
	assert.Equal(t, m[1], info.GetCapabilities()["dev_address"], "GetInfo names the embedded Redis too")
	raw := newRedisCLI(m[1], false)
	raw.user, raw.password = "", ""
	cachetest.Run(t, r.Conn, cachetest.Options{Raw: raw})
}

func TestConformanceWithAutoPipelining(t *testing.T) {
	t.Run("single redis", func(t *testing.T) {
		addr := testsvc.RedisAddr(t)
		r := startRedisCache(t, []string{addr}, "backend:\n  auto_pipeline: true\n")
		cachetest.Run(t, r.Conn, cachetest.Options{Raw: newRedisCLI(addr, false)})
	})
	t.Run("redis cluster", func(t *testing.T) {
		addrs := testsvc.RedisClusterAddrs(t)
		r := startRedisCache(t, addrs, "backend:\n  auto_pipeline: true\n")
		cachetest.Run(t, r.Conn, cachetest.Options{Raw: newRedisCLI(addrs[0], true)})
	})
}

func TestCallsRecoverAfterARedisOutage(t *testing.T) {
	for _, autoPipeline := range []bool{false, true} {
		t.Run("auto_pipeline "+strconv.FormatBool(autoPipeline), func(t *testing.T) {
			proxy := testsvc.NewProxy(t, testsvc.RedisAddr(t))
			r := startRedisCache(t, []string{proxy.Addr()}, "backend:\n  auto_pipeline: "+strconv.FormatBool(autoPipeline)+"\n")
			client := cachev1.NewCacheServiceClient(r.Conn)
			ns := cachetest.Namespace(t)
			set := func() error {
				_, err := client.Set(t.Context(), &cachev1.SetRequest{Namespace: ns, Key: "k", Value: []byte("v")})
				return err
			}
			require.NoError(t, set())

			proxy.Down()
			err := set()
			require.Error(t, err)
			assert.Equal(t, codes.Unavailable, status.Code(err), "%v", err)

			proxy.Up()
			require.Eventually(t, func() bool { return set() == nil }, 10*time.Second, 50*time.Millisecond,
				"calls work again once Redis is back, without a restart")
			resp, err := client.Get(t.Context(), &cachev1.GetRequest{Namespace: ns, Key: "k"})
			require.NoError(t, err)
			assert.True(t, resp.GetFound())
		})
	}
}

func TestClusterModeWithOneSeedAddress(t *testing.T) {
	addrs := testsvc.RedisClusterAddrs(t)
	r := startRedisCache(t, addrs[:1], "backend:\n  mode: cluster\n")
	client := cachev1.NewCacheServiceClient(r.Conn)
	ns := cachetest.Namespace(t)
	keys := make([]string, 50)
	entries := make([]*cachev1.MSetEntry, 50)
	for i := range keys {
		keys[i] = "k" + strconv.Itoa(i)
		entries[i] = &cachev1.MSetEntry{Key: keys[i], Value: []byte(keys[i])}
	}
	_, err := client.MSet(t.Context(), &cachev1.MSetRequest{Namespace: ns, Entries: entries})
	require.NoError(t, err, "keys in many slots are written through one seed node")
	resp, err := client.MGet(t.Context(), &cachev1.MGetRequest{Namespace: ns, Keys: keys})
	require.NoError(t, err)
	for i, e := range resp.GetEntries() {
		assert.Equal(t, keys[i], string(e.GetValue()))
	}
	del, err := client.Delete(t.Context(), &cachev1.DeleteRequest{Namespace: ns, Keys: keys})
	require.NoError(t, err)
	assert.Equal(t, int64(len(keys)), del.GetDeletedCount())

	// Keys sharing a hash tag share a slot: their MSet is one MULTI/EXEC on one node.
	tagged := []string{"{user42}:profile", "{user42}:cart", "{user42}:session"}
	_, err = client.MSet(t.Context(), &cachev1.MSetRequest{Namespace: ns, Entries: []*cachev1.MSetEntry{
		{Key: tagged[0], Value: []byte("p")}, {Key: tagged[1], Value: []byte("c"), Ttl: durationpb.New(time.Minute)}, {Key: tagged[2], Value: []byte("s")},
	}})
	require.NoError(t, err)
	resp, err = client.MGet(t.Context(), &cachev1.MGetRequest{Namespace: ns, Keys: tagged})
	require.NoError(t, err)
	for i, want := range []string{"p", "c", "s"} {
		assert.Equal(t, want, string(resp.GetEntries()[i].GetValue()))
	}
}

func TestDefaultTTLAndJitter(t *testing.T) {
	addr := testsvc.RedisAddr(t)
	r := startRedisCache(t, []string{addr}, "backend:\n  default_ttl: 1h\n  ttl_jitter: 20\n")
	client := cachev1.NewCacheServiceClient(r.Conn)
	cli := newRedisCLI(addr, false)
	ctx := t.Context()
	ns := cachetest.Namespace(t)

	seen := map[time.Duration]bool{}
	for i := range 20 {
		key := "default-" + strconv.Itoa(i)
		_, err := client.Set(ctx, &cachev1.SetRequest{Namespace: ns, Key: key, Value: []byte("v")})
		require.NoError(t, err)
		ttl, err := cli.TTL(ctx, ns, key)
		require.NoError(t, err)
		assert.GreaterOrEqual(t, ttl, 47*time.Minute, "default_ttl 1h jittered by at most 20%%")
		assert.LessOrEqual(t, ttl, 72*time.Minute, "default_ttl 1h jittered by at most 20%%")
		seen[ttl.Round(time.Second)] = true
	}
	assert.Greater(t, len(seen), 1, "jitter spreads the expiries")

	_, err := client.MSet(ctx, &cachev1.MSetRequest{Namespace: ns, Entries: []*cachev1.MSetEntry{
		{Key: "explicit", Value: []byte("v"), Ttl: durationpb.New(10 * time.Second)},
		{Key: "defaulted", Value: []byte("v")},
	}})
	require.NoError(t, err)
	ttl, err := cli.TTL(ctx, ns, "explicit")
	require.NoError(t, err)
	assert.LessOrEqual(t, ttl, 12*time.Second)
	assert.Greater(t, ttl, 7*time.Second)
	ttl, err = cli.TTL(ctx, ns, "defaulted")
	require.NoError(t, err)
	assert.Greater(t, ttl, 47*time.Minute, "MSet entries without ttl get default_ttl")

	_, err = client.Set(ctx, &cachev1.SetRequest{Namespace: ns, Key: "keep", Value: []byte("v"), KeepTtl: true})
	require.NoError(t, err)
	ttl, err = cli.TTL(ctx, ns, "keep")
	require.NoError(t, err)
	assert.Zero(t, ttl, "keep_ttl on a new key writes no expiry, not default_ttl")
}

func TestKeyPrefix(t *testing.T) {
	addr := testsvc.RedisAddr(t)

	t.Run("keys are stored under the configured prefix", func(t *testing.T) {
		ctx := t.Context()
		r := startRedisCache(t, []string{addr}, "backend:\n  key_prefix: \"prism:custom.\"\n")
		client := cachev1.NewCacheServiceClient(r.Conn)
		ns := cachetest.Namespace(t)
		_, err := client.Set(ctx, &cachev1.SetRequest{Namespace: ns, Key: "k", Value: []byte("prefixed")})
		require.NoError(t, err)
		out, err := newRedisCLI(addr, false).run(ctx, nil, "GET", "prism:custom."+ns+":k")
		require.NoError(t, err)
		assert.Equal(t, "prefixed", string(out))
	})

	t.Run("a prefix outside the ACL user's keys is refused", func(t *testing.T) {
		r := startRedisCache(t, []string{addr}, "backend:\n  key_prefix: \"elsewhere:\"\n")
		client := cachev1.NewCacheServiceClient(r.Conn)
		_, err := client.Get(t.Context(), &cachev1.GetRequest{Namespace: "ns", Key: "k"})
		require.Error(t, err)
		assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
		assert.Contains(t, status.Convert(err).Message(), "key_prefix")
	})
}

func TestLimitsApplyOnReload(t *testing.T) {
	addr := testsvc.RedisAddr(t)
	r := startRedisCache(t, []string{addr}, "limits:\n  max_key_bytes: 8\n")
	client := cachev1.NewCacheServiceClient(r.Conn)
	ctx := t.Context()
	ns := cachetest.Namespace(t)

	_, err := client.Set(ctx, &cachev1.SetRequest{Namespace: ns, Key: "123456789"})
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	assert.Contains(t, status.Convert(err).Message(), "limits.max_key_bytes")
	assert.Contains(t, status.Convert(err).Message(), "8")

	r.WriteConfig(t, "limits:\n  max_key_bytes: 16\n  max_value_bytes: 4\n")
	resp, err := pluginv1.NewPluginServiceClient(r.Conn).Reload(ctx, &pluginv1.ReloadRequest{})
	require.NoError(t, err)
	assert.Contains(t, resp.GetChanged(), "limits.max_key_bytes")
	assert.Empty(t, resp.GetRestartRequired())

	_, err = client.Set(ctx, &cachev1.SetRequest{Namespace: ns, Key: "123456789", Value: []byte("1234")})
	require.NoError(t, err, "the larger key limit applies without a restart")
	_, err = client.Set(ctx, &cachev1.SetRequest{Namespace: ns, Key: "k", Value: []byte("12345")})
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	assert.Contains(t, status.Convert(err).Message(), "max_value_bytes")

	r.WriteConfig(t, "limits:\n  max_value_bytes: 104857600\n  max_batch_bytes: 104857600\n")
	resp, err = pluginv1.NewPluginServiceClient(r.Conn).Reload(ctx, &pluginv1.ReloadRequest{})
	require.NoError(t, err)
	assert.Contains(t, resp.GetRestartRequired(), "limits.max_value_bytes",
		"a limit beyond the gRPC message size the server started with waits for a restart")
	_, err = client.Set(ctx, &cachev1.SetRequest{Namespace: ns, Key: "k", Value: []byte("12345")})
	require.Equal(t, codes.InvalidArgument, status.Code(err), "the old limits stay in force")
}

func TestCredentialsChangeOnReloadWithoutRestart(t *testing.T) {
	addr := testsvc.RedisAddr(t)
	const wrong = "rotated-away-3c9d"
	yaml := func(password string) string {
		return "control_plane:\n  health_interval: 100ms\nbackend:\n  address: " + addr +
			"\n  username: " + testsvc.User + "\n  password: " + password + "\n"
	}
	r := coretest.Start(t, rediscache.New(), coretest.Options{YAML: yaml(wrong)})
	client := cachev1.NewCacheServiceClient(r.Conn)
	ctx := t.Context()
	_, err := client.Get(ctx, &cachev1.GetRequest{Namespace: "ns", Key: "k"})
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)

	r.WriteConfig(t, yaml(testsvc.Password))
	resp, err := pluginv1.NewPluginServiceClient(r.Conn).Reload(ctx, &pluginv1.ReloadRequest{})
	require.NoError(t, err)
	assert.Contains(t, resp.GetChanged(), "backend.password")
	assert.Empty(t, resp.GetRestartRequired())

	r.WaitHealth(t, cacheServiceName, healthpb.HealthCheckResponse_SERVING, 10*time.Second)
	ns := cachetest.Namespace(t)
	_, err = client.Set(ctx, &cachev1.SetRequest{Namespace: ns, Key: "k", Value: []byte("v")})
	require.NoError(t, err, "the new credentials are in use")
	assert.NotContains(t, r.Logs.String(), wrong)
}

func TestCallsWithAWrongPasswordAreUnavailable(t *testing.T) {
	addr := testsvc.RedisAddr(t)
	const secret = "not-the-password-5f3a"
	r := coretest.Start(t, rediscache.New(), coretest.Options{
		YAML: "control_plane:\n  health_interval: 100ms\n",
		Env: map[string]string{
			"REDIS_ADDRESS":  addr,
			"REDIS_USERNAME": testsvc.User,
			"REDIS_PASSWORD": secret,
		},
	})
	client := cachev1.NewCacheServiceClient(r.Conn)
	_, err := client.Get(t.Context(), &cachev1.GetRequest{Namespace: "ns", Key: "k"})
	require.Error(t, err)
	assert.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	assert.NotContains(t, status.Convert(err).Message(), secret)
	r.WaitHealth(t, cacheServiceName, healthpb.HealthCheckResponse_NOT_SERVING, 5*time.Second)
	assert.NotContains(t, r.Logs.String(), secret)
}

func TestDeadlineReachesRedisCall(t *testing.T) {
	for _, autoPipeline := range []bool{false, true} {
		t.Run("auto_pipeline "+strconv.FormatBool(autoPipeline), func(t *testing.T) {
			deadlineReachesRedisCall(t, autoPipeline)
		})
	}
}

func deadlineReachesRedisCall(t *testing.T, autoPipeline bool) {
	t.Helper()
	// A "Redis" that accepts connections and never answers: only the caller's deadline can end
	// the plugin's call, well before go-redis's own 3s read timeout.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = c.Close() })
		}
	}()
	r := coretest.Start(t, rediscache.New(), coretest.Options{
		YAML: "backend:\n  max_retries: -1\n  auto_pipeline: " + strconv.FormatBool(autoPipeline) + "\n",
		Env:  map[string]string{"REDIS_ADDRESS": l.Addr().String()},
	})
	client := cachev1.NewCacheServiceClient(r.Conn)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, err = client.Get(ctx, &cachev1.GetRequest{Namespace: "ns", Key: "k"})
	require.Equal(t, codes.DeadlineExceeded, status.Code(err), "%v", err)

	metrics := pluginv1.NewPluginServiceClient(r.Conn)
	// The handler ends when the deadline passes (DEADLINE_EXCEEDED, or CANCELLED when the client's
	// reset arrives first), not after go-redis's 3s read timeout with UNAVAILABLE.
	ended := func(code string) string {
		return `prism_grpc_server_handled_total{grpc_code="` + code + `",grpc_method="Get",grpc_service="prism.cache.v1.CacheService"} 1`
	}
	require.Eventually(t, func() bool {
		resp, err := metrics.GetMetrics(t.Context(), &pluginv1.GetMetricsRequest{})
		return err == nil && (strings.Contains(resp.GetText(), ended("DeadlineExceeded")) || strings.Contains(resp.GetText(), ended("Canceled")))
	}, 2*time.Second, 20*time.Millisecond, "the plugin's handler ended with the caller's deadline")
}

func TestMetrics(t *testing.T) {
	addr := testsvc.RedisAddr(t)
	r := startRedisCache(t, []string{addr}, "")
	client := cachev1.NewCacheServiceClient(r.Conn)
	ctx := t.Context()
	ns := cachetest.Namespace(t)

	_, err := client.Set(ctx, &cachev1.SetRequest{Namespace: ns, Key: "hit", Value: []byte("v")})
	require.NoError(t, err)
	_, err = client.Get(ctx, &cachev1.GetRequest{Namespace: ns, Key: "hit"})
	require.NoError(t, err)
	_, err = client.MGet(ctx, &cachev1.MGetRequest{Namespace: ns, Keys: []string{"hit", "miss", "miss2"}})
	require.NoError(t, err)

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.MetricsURL+"/metrics", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	text := string(body)
	assert.Contains(t, text, `prism_cache_hits_total{namespace="`+ns+`"} 2`)
	assert.Contains(t, text, `prism_cache_misses_total{namespace="`+ns+`"} 2`)
	assert.Contains(t, text, `prism_redis_command_duration_seconds_count{operation="get"} 1`)
	assert.Contains(t, text, `prism_redis_command_duration_seconds_count{operation="mget"} 1`)
	assert.Contains(t, text, "prism_redis_pool_connections ")
	assert.Contains(t, text, "prism_redis_pool_hits_total ")
}
