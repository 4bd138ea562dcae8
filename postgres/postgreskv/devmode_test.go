package postgreskv_test

import (
	"database/sql"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	_ "modernc.org/sqlite"

	"github.com/prism-gateway/plugins/conformance/keyvaluetest"
	"github.com/prism-gateway/plugins/core/coretest"
	keyvaluev1 "github.com/prism-gateway/plugins/gen/prism/keyvalue/v1"
	pluginv1 "github.com/prism-gateway/plugins/gen/prism/plugin/v1"
	"github.com/prism-gateway/plugins/postgres/postgreskv"
)

// unreachablePostgres proves dev mode never dials PostgreSQL.
const unreachablePostgres = "postgres://prism@127.0.0.1:1/nowhere"

// startDev runs the plugin in dev mode on dataDir and waits until it serves.
func startDev(tb testing.TB, dataDir, yaml string) *coretest.Running {
	tb.Helper()
	r := coretest.Start(tb, postgreskv.New(), coretest.Options{
		YAML:       yaml,
		Env:        map[string]string{"DATABASE_URL": unreachablePostgres},
		DevMode:    true,
		DevDataDir: dataDir,
	})
	r.WaitHealth(tb, "", healthpb.HealthCheckResponse_SERVING, 30*time.Second)
	return r
}

func TestConformanceInDevMode(t *testing.T) {
	t.Parallel()
	r := startDev(t, t.TempDir(), "backend:\n  purge_interval: 200ms\n")
	assert.True(t, r.Logs.Contains("DEV MODE"), "dev mode is clearly logged")
	keyvaluetest.Run(t, r.Conn, keyvaluetest.Options{})
}

func TestDevModeReportsItsBackend(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "nested", "odd ?#%20 name")
	r := startDev(t, dir, "")
	info, err := pluginv1.NewPluginServiceClient(r.Conn).GetInfo(t.Context(), &pluginv1.GetInfoRequest{})
	require.NoError(t, err)
	assert.True(t, info.GetDevMode())
	assert.Equal(t, "sqlite (dev mode)", info.GetBackend())
	p := postgreskv.New()
	assert.Equal(t, "postgresql", p.Info().Backend)
	require.NoError(t, p.EnableDevMode(dir))
	assert.Equal(t, "sqlite (dev mode)", p.Info().Backend)

	st, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), st.Mode().Perm(), "the data directory is private")
	_, err = os.Stat(filepath.Join(dir, "keyvalue.db"))
	require.NoError(t, err, "data lives in <dataDir>/keyvalue.db")
}

func TestDevModeDataSurvivesARestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first := startDev(t, dir, "")
	c := kv(first)
	resp, err := c.Put(t.Context(), &keyvaluev1.PutRequest{Namespace: "restart", Id: "user:1", Items: []*keyvaluev1.PutItem{
		{Key: []byte("name"), Value: []byte("Ada")},
		{Key: []byte{0x00, 0xff}, Value: []byte{}},
	}, IdempotencyToken: "signup-1"})
	require.NoError(t, err)
	before := resp.GetVersions()
	for _, id := range []string{"user:2", "user:3"} {
		putOne(t, c, "restart", id, "name", "x")
	}
	page, err := c.Scan(t.Context(), &keyvaluev1.ScanRequest{Namespace: "restart", PageSize: 2})
	require.NoError(t, err)
	require.NotEmpty(t, page.GetNextPageToken())
	require.NoError(t, first.Stop())

	second := startDev(t, dir, "")
	c = kv(second)
	got, err := c.Get(t.Context(), &keyvaluev1.GetRequest{Namespace: "restart", Id: "user:1"})
	require.NoError(t, err)
	require.Len(t, got.GetItems(), 2)
	assert.Equal(t, []byte{0x00, 0xff}, got.GetItems()[0].GetKey())
	assert.Equal(t, before[1].GetVersion(), got.GetItems()[0].GetVersion())
	assert.Equal(t, "Ada", string(got.GetItems()[1].GetValue()))
	assert.Equal(t, before[0].GetVersion(), got.GetItems()[1].GetVersion())

	// The idempotency token, the page token key and the version counter survive too.
	retry, err := c.Put(t.Context(), &keyvaluev1.PutRequest{Namespace: "restart", Id: "user:1", Items: []*keyvaluev1.PutItem{
		{Key: []byte("name"), Value: []byte("Ada")},
		{Key: []byte{0x00, 0xff}, Value: []byte{}},
	}, IdempotencyToken: "signup-1"})
	require.NoError(t, err)
	assert.Equal(t, before[0].GetVersion(), retry.GetVersions()[0].GetVersion(), "the retry after a restart writes nothing")
	rest, err := c.Scan(t.Context(), &keyvaluev1.ScanRequest{Namespace: "restart", PageSize: 2, PageToken: page.GetNextPageToken()})
	require.NoError(t, err)
	require.Len(t, rest.GetRecords(), 2, "the first page held user:1's two items")
	assert.Equal(t, "user:2", rest.GetRecords()[0].GetId())
	after := putOne(t, c, "restart", "user:1", "name", "Ada Lovelace")
	assert.Greater(t, after, before[1].GetVersion(), "versions keep growing across restarts")
}

func TestDevModePurgesExpiredItemsAndTokens(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r := startDev(t, dir, "backend:\n  purge_interval: 100ms\n  purge_batch_size: 2\n  idempotency_retention: 1s\n")
	c := kv(r)
	var its []*keyvaluev1.PutItem
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		its = append(its, &keyvaluev1.PutItem{Key: []byte(k), Value: []byte("v"), Ttl: durationpb.New(50 * time.Millisecond)})
	}
	its = append(its, &keyvaluev1.PutItem{Key: []byte("keep"), Value: []byte("v")})
	_, err := c.Put(t.Context(), &keyvaluev1.PutRequest{Namespace: "purge", Id: "rec", Items: its, IdempotencyToken: "tok"})
	require.NoError(t, err)

	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "keyvalue.db")+"?_pragma=query_only(1)&_busy_timeout=5000")
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	count := func(query string) int {
		var n int
		require.NoError(t, db.QueryRowContext(t.Context(), query).Scan(&n))
		return n
	}
	require.Eventually(t, func() bool {
		return count(`SELECT count(*) FROM prism_kv_items WHERE namespace = 'purge'`) == 1 &&
			count(`SELECT count(*) FROM prism_kv_idempotency WHERE namespace = 'purge'`) == 0
	}, 20*time.Second, 50*time.Millisecond, "expired items (in batches of 2) and tokens past retention are deleted")
	got, err := c.Get(t.Context(), &keyvaluev1.GetRequest{Namespace: "purge", Id: "rec"})
	require.NoError(t, err)
	require.Len(t, got.GetItems(), 1)
	assert.Equal(t, "keep", string(got.GetItems()[0].GetKey()))
}

func TestTwoDevPluginsOnOneDirectoryShareVersions(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a, b := kv(startDev(t, dir, "")), kv(startDev(t, dir, ""))
	var last int64
	for i := range 10 {
		c := a
		if i%2 == 1 {
			c = b
		}
		v := putOne(t, c, "shared", "rec", "k", "v")
		require.Greater(t, v, last, "write %d", i)
		last = v
	}
}

func TestDevModeReloadAppliesLimitsAndDefersConnectionSettings(t *testing.T) {
	t.Parallel()
	r := startDev(t, t.TempDir(), "")
	c := kv(r)
	putOne(t, c, "reload", "r", "k", "a value longer than ten bytes")

	r.WriteConfig(t, "backend:\n  pool_size: 3\nlimits:\n  max_value_bytes: 10\n")
	res, err := pluginv1.NewPluginServiceClient(r.Conn).Reload(t.Context(), &pluginv1.ReloadRequest{})
	require.NoError(t, err)
	assert.Contains(t, res.GetChanged(), "limits.max_value_bytes")
	assert.Equal(t, []string{"backend.pool_size"}, res.GetRestartRequired(), "there is no pool to swap in dev mode")

	_, err = c.Put(t.Context(), &keyvaluev1.PutRequest{Namespace: "reload", Id: "r", Items: []*keyvaluev1.PutItem{{Key: []byte("k"), Value: []byte("01234567890")}}})
	assert.Equal(t, codes.InvalidArgument, status.Code(err))
	assert.Contains(t, status.Convert(err).Message(), "items[0].value: must be at most 10 bytes (limits.max_value_bytes), got 11")
	putOne(t, c, "reload", "r", "k", "short")
}
