package postgreskv_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/prism-gateway/plugins/core/coretest"
	"github.com/prism-gateway/plugins/internal/testsvc"
	"github.com/prism-gateway/plugins/postgres/postgreskv"
)

// newDatabase creates an empty database on the test PostgreSQL, dropped when the test ends, and
// returns its URL.
func newDatabase(tb testing.TB) string {
	tb.Helper()
	base := testsvc.PostgresURL(tb)
	var b [6]byte
	_, err := rand.Read(b[:])
	require.NoError(tb, err)
	name := "prism_kv_test_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	require.NoError(tb, err)
	defer func() { _ = conn.Close(context.Background()) }()
	_, err = conn.Exec(ctx, "CREATE DATABASE "+name)
	require.NoError(tb, err)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, base)
		if err != nil {
			tb.Errorf("drop test database: %v", err)
			return
		}
		defer func() { _ = c.Close(context.Background()) }()
		// FORCE may not end a session of a role a test already dropped (SQLSTATE 42501); such a
		// session is one the stopped plugin just closed, and goes away by itself.
		for {
			_, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "42501" && ctx.Err() == nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			if err != nil {
				tb.Errorf("drop test database: %v", err)
			}
			return
		}
	})
	u, err := url.Parse(base)
	require.NoError(tb, err)
	u.Path = "/" + name
	return u.String()
}

// startPlugin runs the plugin against databaseURL and waits until it serves.
func startPlugin(tb testing.TB, databaseURL, yaml string) *coretest.Running {
	tb.Helper()
	r := coretest.Start(tb, postgreskv.New(), coretest.Options{
		YAML: yaml,
		Env:  map[string]string{"DATABASE_URL": databaseURL},
	})
	r.WaitHealth(tb, "", healthpb.HealthCheckResponse_SERVING, 30*time.Second)
	return r
}

// connect opens a direct connection for inspecting what the plugin stored.
func connect(tb testing.TB, databaseURL string) *pgx.Conn {
	tb.Helper()
	conn, err := pgx.Connect(tb.Context(), databaseURL)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}
