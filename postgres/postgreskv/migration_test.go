package postgreskv_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/prism-gateway/plugins/core/coretest"
	"github.com/prism-gateway/plugins/postgres/postgreskv"
)

// migrationLockID mirrors the plugin's advisory lock key ("prismkv" in ASCII).
const migrationLockID int64 = 0x707269736d6b76

// A replica that has to wait for another one's migration lock for longer than a health check may
// take must still finish its migration and serve, without a restart.
func TestMigrationWaitsForAnotherReplicasLockLongerThanAHealthCheck(t *testing.T) {
	dsn := newDatabase(t)
	holder := connect(t, dsn)
	_, err := holder.Exec(t.Context(), "SELECT pg_advisory_lock($1)", migrationLockID)
	require.NoError(t, err)

	r := coretest.Start(t, postgreskv.New(), coretest.Options{
		YAML: "control_plane:\n  health_timeout: 500ms\n  health_interval: 300ms\n",
		Env:  map[string]string{"DATABASE_URL": dsn},
	})
	require.Eventually(t, func() bool { return r.Logs.Contains("postgres schema migration started") },
		10*time.Second, 20*time.Millisecond)
	// Hold the lock for several health timeouts: the plugin stays NOT_SERVING meanwhile.
	time.Sleep(3 * time.Second)
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_NOT_SERVING, time.Second)
	assert.Contains(t, r.Logs.String(), "postgres schema migration not finished", "health says why it does not serve")

	_, err = holder.Exec(t.Context(), "SELECT pg_advisory_unlock($1)", migrationLockID)
	require.NoError(t, err)
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 15*time.Second)
	logs := r.Logs.String()
	assert.Contains(t, logs, "postgres schema migration finished")
	assert.NotContains(t, logs, "postgres schema migration failed", "the one attempt waited for the lock instead of being cancelled")
}

// An attempt that outlives backend.migration_timeout is logged and retried until it succeeds.
func TestMigrationRetriesAfterItsTimeout(t *testing.T) {
	dsn := newDatabase(t)
	holder := connect(t, dsn)
	_, err := holder.Exec(t.Context(), "SELECT pg_advisory_lock($1)", migrationLockID)
	require.NoError(t, err)

	r := coretest.Start(t, postgreskv.New(), coretest.Options{
		YAML: "control_plane:\n  health_interval: 300ms\nbackend:\n  migration_timeout: 400ms\n",
		Env:  map[string]string{"DATABASE_URL": dsn},
	})
	require.Eventually(t, func() bool { return r.Logs.Contains("postgres schema migration failed; retrying") },
		10*time.Second, 20*time.Millisecond)
	_, err = holder.Exec(t.Context(), "SELECT pg_advisory_unlock($1)", migrationLockID)
	require.NoError(t, err)
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 20*time.Second)
	assert.Contains(t, r.Logs.String(), "postgres schema migration finished")
}
