package postgreskv_test

import (
	"bytes"
	"context"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/prism-gateway/plugins/core/coretest"
	keyvaluev1 "github.com/prism-gateway/plugins/gen/prism/keyvalue/v1"
	pluginv1 "github.com/prism-gateway/plugins/gen/prism/plugin/v1"
	"github.com/prism-gateway/plugins/internal/testsvc"
	"github.com/prism-gateway/plugins/postgres/postgreskv"
)

func kv(r *coretest.Running) keyvaluev1.KeyValueServiceClient {
	return keyvaluev1.NewKeyValueServiceClient(r.Conn)
}

func putOne(t *testing.T, c keyvaluev1.KeyValueServiceClient, ns, id, key, value string) int64 {
	t.Helper()
	resp, err := c.Put(t.Context(), &keyvaluev1.PutRequest{Namespace: ns, Id: id, Items: []*keyvaluev1.PutItem{{Key: []byte(key), Value: []byte(value)}}})
	require.NoError(t, err)
	return resp.GetVersions()[0].GetVersion()
}

func TestReplicasStartingTogetherMigrateOnceAndShareTokens(t *testing.T) {
	t.Parallel()
	db := newDatabase(t)
	replicas := make([]*coretest.Running, 3)
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Go(func() { replicas[i] = startPlugin(t, db, "") })
	}
	wg.Wait()
	conn := connect(t, db)
	var versions []int
	rows, err := conn.Query(t.Context(), "SELECT version FROM prism_kv_schema ORDER BY version")
	require.NoError(t, err)
	for rows.Next() {
		var v int
		require.NoError(t, rows.Scan(&v))
		versions = append(versions, v)
	}
	require.NoError(t, rows.Err())
	want := []int{}
	for v := 1; v <= postgreskv.SchemaVersion(); v++ {
		want = append(want, v)
	}
	assert.Equal(t, want, versions, "each migration applied exactly once")

	// A page token minted by one replica continues on another: the key lives in the database.
	for _, id := range []string{"a", "b", "c"} {
		putOne(t, kv(replicas[0]), "shared", id, "k", "v")
	}
	first, err := kv(replicas[0]).Scan(t.Context(), &keyvaluev1.ScanRequest{Namespace: "shared", PageSize: 1})
	require.NoError(t, err)
	require.NotEmpty(t, first.GetNextPageToken())
	second, err := kv(replicas[1]).Scan(t.Context(), &keyvaluev1.ScanRequest{Namespace: "shared", PageSize: 1, PageToken: first.GetNextPageToken()})
	require.NoError(t, err)
	require.Len(t, second.GetRecords(), 1)
	assert.Equal(t, "b", second.GetRecords()[0].GetId())

	// A replica restarted on a migrated database comes up without migrating again.
	startPlugin(t, db, "")
	var n int
	require.NoError(t, conn.QueryRow(t.Context(), "SELECT count(*) FROM prism_kv_schema").Scan(&n))
	assert.Equal(t, postgreskv.SchemaVersion(), n)
}

func TestConfiguredPageTokenKeyIsShared(t *testing.T) {
	t.Parallel()
	db := newDatabase(t)
	yamlA := "backend:\n  page_token_key: first-secret-0123456789\n"
	a := startPlugin(t, db, yamlA)
	b := startPlugin(t, db, yamlA)
	c := startPlugin(t, db, "backend:\n  page_token_key: other-secret-0123456789\n")
	for _, id := range []string{"a", "b"} {
		putOne(t, kv(a), "ns", id, "k", "v")
	}
	first, err := kv(a).Scan(t.Context(), &keyvaluev1.ScanRequest{Namespace: "ns", PageSize: 1})
	require.NoError(t, err)
	_, err = kv(b).Scan(t.Context(), &keyvaluev1.ScanRequest{Namespace: "ns", PageSize: 1, PageToken: first.GetNextPageToken()})
	require.NoError(t, err)
	_, err = kv(c).Scan(t.Context(), &keyvaluev1.ScanRequest{Namespace: "ns", PageSize: 1, PageToken: first.GetNextPageToken()})
	assert.Equal(t, codes.InvalidArgument, status.Code(err), "a replica with another key rejects the token")
}

func TestExpiredItemsArePurgedInBatches(t *testing.T) {
	t.Parallel()
	db := newDatabase(t)
	r := startPlugin(t, db, "backend:\n  purge_interval: 100ms\n  purge_batch_size: 3\n")
	items := make([]*keyvaluev1.PutItem, 10)
	for i := range items {
		items[i] = &keyvaluev1.PutItem{Key: []byte{byte('a' + i)}, Value: []byte("v"), Ttl: durationpb.New(50 * time.Millisecond)}
	}
	items = append(items, &keyvaluev1.PutItem{Key: []byte("keep"), Value: []byte("v")})
	_, err := kv(r).Put(t.Context(), &keyvaluev1.PutRequest{Namespace: "ns", Id: "r", Items: items})
	require.NoError(t, err)
	conn := connect(t, db)
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, conn.QueryRow(t.Context(), "SELECT count(*) FROM prism_kv_items WHERE namespace = 'ns'").Scan(&n))
		return n == 1
	}, 15*time.Second, 50*time.Millisecond, "expired rows deleted from the table")
	metrics, err := pluginv1.NewPluginServiceClient(r.Conn).GetMetrics(t.Context(), &pluginv1.GetMetricsRequest{})
	require.NoError(t, err)
	assert.Contains(t, metrics.GetText(), `prism_postgres_purged_total{kind="items"} 10`)
}

func TestIdempotencyTokensExpireAfterRetention(t *testing.T) {
	t.Parallel()
	db := newDatabase(t)
	r := startPlugin(t, db, "backend:\n  purge_interval: 100ms\n  idempotency_retention: 1s\n")
	req := &keyvaluev1.PutRequest{Namespace: "ns", Id: "r", Items: []*keyvaluev1.PutItem{{Key: []byte("k"), Value: []byte("v")}}, IdempotencyToken: "t1"}
	first, err := kv(r).Put(t.Context(), req)
	require.NoError(t, err)
	conn := connect(t, db)
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, conn.QueryRow(t.Context(), "SELECT count(*) FROM prism_kv_idempotency").Scan(&n))
		return n == 0
	}, 15*time.Second, 50*time.Millisecond, "the token is purged after its retention")
	again, err := kv(r).Put(t.Context(), req)
	require.NoError(t, err)
	assert.Greater(t, again.GetVersions()[0].GetVersion(), first.GetVersions()[0].GetVersion(), "a forgotten token runs the call again")
}

func TestDatabaseDownAnswersUnavailableAndRecovers(t *testing.T) {
	t.Parallel()
	db := newDatabase(t)
	u, err := url.Parse(db)
	require.NoError(t, err)
	proxy := testsvc.NewProxy(t, u.Host)
	proxy.Down()
	u.Host = proxy.Addr()
	r := coretest.Start(t, postgreskv.New(), coretest.Options{
		YAML: "backend:\n  connect_timeout: 1s\n",
		Env:  map[string]string{"DATABASE_URL": u.String()},
	})
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_NOT_SERVING, 10*time.Second)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err = kv(r).Get(ctx, &keyvaluev1.GetRequest{Namespace: "ns", Id: "r"})
	assert.Equal(t, codes.Unavailable, status.Code(err), "before the schema exists: %v", err)

	proxy.Up()
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 30*time.Second)
	putOne(t, kv(r), "ns", "r", "k", "v")

	proxy.Down()
	_, err = kv(r).Get(ctx, &keyvaluev1.GetRequest{Namespace: "ns", Id: "r"})
	assert.Equal(t, codes.Unavailable, status.Code(err), "database gone: %v", err)
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_NOT_SERVING, 30*time.Second)
	proxy.Up()
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 30*time.Second)
	require.Eventually(t, func() bool {
		resp, err := kv(r).Get(t.Context(), &keyvaluev1.GetRequest{Namespace: "ns", Id: "r"})
		return err == nil && resp.GetFound()
	}, 30*time.Second, 50*time.Millisecond, "calls work again once the database is back")
}

func TestClientDeadlineCancelsTheQuery(t *testing.T) {
	t.Parallel()
	db := newDatabase(t)
	r := startPlugin(t, db, "")
	putOne(t, kv(r), "ns", "r", "k", "v")
	// Hold the item's row lock so the plugin's write has to wait.
	conn := connect(t, db)
	tx, err := conn.Begin(t.Context())
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.Background()) }()
	_, err = tx.Exec(t.Context(), "SELECT 1 FROM prism_kv_items WHERE namespace = 'ns' FOR UPDATE")
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, err = kv(r).Put(ctx, &keyvaluev1.PutRequest{Namespace: "ns", Id: "r", Items: []*keyvaluev1.PutItem{{Key: []byte("k"), Value: []byte("new")}}})
	assert.Equal(t, codes.DeadlineExceeded, status.Code(err), "%v", err)

	watcher := connect(t, db)
	require.Eventually(t, func() bool {
		var waiting int
		require.NoError(t, watcher.QueryRow(t.Context(),
			"SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'INSERT INTO prism_kv_items%' AND state = 'active'").Scan(&waiting))
		return waiting == 0
	}, 10*time.Second, 20*time.Millisecond, "the blocked statement was cancelled in the database")
	require.NoError(t, tx.Rollback(t.Context()))
	resp, err := kv(r).Get(t.Context(), &keyvaluev1.GetRequest{Namespace: "ns", Id: "r"})
	require.NoError(t, err)
	assert.Equal(t, "v", string(resp.GetItems()[0].GetValue()), "the cancelled write did not happen")
}

func TestLimitsChangeOnReload(t *testing.T) {
	t.Parallel()
	db := newDatabase(t)
	r := startPlugin(t, db, "")
	c := kv(r)
	putOne(t, c, "ns", "r", "k", strings.Repeat("v", 100))

	r.WriteConfig(t, "limits:\n  max_value_bytes: 10\n  namespace_pattern: '^ns[0-9]*$'\n")
	res, err := pluginv1.NewPluginServiceClient(r.Conn).Reload(t.Context(), &pluginv1.ReloadRequest{})
	require.NoError(t, err)
	assert.Contains(t, res.GetChanged(), "limits.max_value_bytes")
	assert.Empty(t, res.GetRestartRequired())

	_, err = c.Put(t.Context(), &keyvaluev1.PutRequest{Namespace: "ns", Id: "r", Items: []*keyvaluev1.PutItem{{Key: []byte("k"), Value: []byte("01234567890")}}})
	assert.Equal(t, codes.InvalidArgument, status.Code(err))
	assert.Contains(t, status.Convert(err).Message(), "items[0].value: must be at most 10 bytes (limits.max_value_bytes), got 11")
	_, err = c.Get(t.Context(), &keyvaluev1.GetRequest{Namespace: "other", Id: "r"})
	assert.Equal(t, codes.InvalidArgument, status.Code(err))
	putOne(t, c, "ns", "r", "k", "short")

}

func TestConnectionSettingsChangeLiveOnReload(t *testing.T) {
	t.Parallel()
	dbA, dbB := newDatabase(t), newDatabase(t)
	r := coretest.Start(t, postgreskv.New(), coretest.Options{YAML: "backend:\n  database_url: " + dbA + "\n"})
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 30*time.Second)
	c, pc := kv(r), pluginv1.NewPluginServiceClient(r.Conn)
	putOne(t, c, "ns", "r", "k", "in A")

	// Calls keep flowing while the pool is replaced underneath them.
	stop := make(chan struct{})
	callErrs := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := c.Get(t.Context(), &keyvaluev1.GetRequest{Namespace: "ns", Id: "r"}); err != nil {
				callErrs <- err
				return
			}
		}
	})

	r.WriteConfig(t, "backend:\n  database_url: "+dbB+"\n  pool_size: 3\n")
	res, err := pc.Reload(t.Context(), &pluginv1.ReloadRequest{})
	require.NoError(t, err)
	assert.Contains(t, res.GetChanged(), "backend.database_url")
	assert.Contains(t, res.GetChanged(), "backend.pool_size")
	assert.Empty(t, res.GetRestartRequired())

	putOne(t, c, "ns", "r", "k", "in B")
	var n int
	require.NoError(t, connect(t, dbB).QueryRow(t.Context(), "SELECT count(*) FROM prism_kv_items WHERE value = 'in B'").Scan(&n))
	assert.Equal(t, 1, n, "new writes go to the new database, migrated on the way")
	m, err := pc.GetMetrics(t.Context(), &pluginv1.GetMetricsRequest{})
	require.NoError(t, err)
	assert.Contains(t, m.GetText(), "prism_postgres_pool_max_connections 3")

	// Settings that cannot connect are rejected and the working ones stay.
	u, err := url.Parse(dbB)
	require.NoError(t, err)
	u.User = url.UserPassword(testsvc.User, "wrong-password")
	r.WriteConfig(t, "backend:\n  database_url: "+u.String()+"\n  pool_size: 4\n  connect_timeout: 1s\n")
	_, err = pc.Reload(t.Context(), &pluginv1.ReloadRequest{})
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "wrong-password")
	resp, err := c.Get(t.Context(), &keyvaluev1.GetRequest{Namespace: "ns", Id: "r"})
	require.NoError(t, err)
	assert.Equal(t, "in B", string(resp.GetItems()[0].GetValue()))

	close(stop)
	wg.Wait()
	close(callErrs)
	require.NoError(t, <-callErrs, "no call failed during the swap")
}

func TestLargeValueLimitRaisesMessageSize(t *testing.T) {
	t.Parallel()
	db := newDatabase(t)
	// 6 MiB is over core's default 4 MiB message size.
	r := startPlugin(t, db, "limits:\n  max_value_bytes: 6291456\n  max_request_bytes: 8388608\n")
	value := bytes.Repeat([]byte{1}, 6<<20)
	_, err := kv(r).Put(t.Context(), &keyvaluev1.PutRequest{Namespace: "ns", Id: "r", Items: []*keyvaluev1.PutItem{{Key: []byte("k"), Value: value}}})
	require.NoError(t, err)
	resp, err := kv(r).Get(t.Context(), &keyvaluev1.GetRequest{Namespace: "ns", Id: "r"}, grpc.MaxCallRecvMsgSize(16<<20))
	require.NoError(t, err)
	assert.Len(t, resp.GetItems()[0].GetValue(), 6<<20)
}

func TestInfoAndMetrics(t *testing.T) {
	t.Parallel()
	r := startPlugin(t, newDatabase(t), "backend:\n  pool_size: 7\n")
	putOne(t, kv(r), "ns", "r", "k", "v")
	pc := pluginv1.NewPluginServiceClient(r.Conn)
	info, err := pc.GetInfo(t.Context(), &pluginv1.GetInfoRequest{})
	require.NoError(t, err)
	for _, c := range []string{"versions", "preconditions", "idempotency", "ttl", "scan", "max_value_bytes"} {
		assert.Contains(t, info.GetCapabilities(), c)
	}
	assert.Equal(t, "1048576", info.GetCapabilities()["max_value_bytes"])
	m, err := pc.GetMetrics(t.Context(), &pluginv1.GetMetricsRequest{})
	require.NoError(t, err)
	for _, want := range []string{
		"prism_postgres_pool_max_connections 7",
		"prism_postgres_pool_acquired_connections",
		"prism_postgres_pool_idle_connections",
		`prism_postgres_query_duration_seconds_count{operation="put"} 1`,
	} {
		assert.Contains(t, m.GetText(), want)
	}
}

func TestWrongPasswordIsUnavailableNotServing(t *testing.T) {
	t.Parallel()
	u, err := url.Parse(newDatabase(t))
	require.NoError(t, err)
	u.User = url.UserPassword(testsvc.User, "wrong-password")
	r := coretest.Start(t, postgreskv.New(), coretest.Options{Env: map[string]string{"DATABASE_URL": u.String()}})
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_NOT_SERVING, 10*time.Second)
	_, err = kv(r).Get(t.Context(), &keyvaluev1.GetRequest{Namespace: "ns", Id: "r"})
	assert.Equal(t, codes.Unavailable, status.Code(err))
	assert.NotContains(t, status.Convert(err).Message(), "wrong-password")
	assert.False(t, r.Logs.Contains("wrong-password"), "the password never reaches the log")
}
