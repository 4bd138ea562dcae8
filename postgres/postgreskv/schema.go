package postgreskv

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrationLockID is the advisory lock that serialises schema migration across replicas
// (an arbitrary constant: "prismkv" in ASCII).
const migrationLockID int64 = 0x707269736d6b76

// migrations are applied in order, each once, in one transaction with the version bump. Never
// edit a released step: append a new one.
var migrations = []string{
	// 1: items, versions, idempotency tokens, settings, and the helper that aborts a statement
	// with a chosen SQLSTATE so multi-statement writes run in one round trip.
	`
CREATE TABLE prism_kv_items (
	namespace   text        NOT NULL COLLATE "C",
	id          bytea       NOT NULL,
	key         bytea       NOT NULL,
	value       bytea       NOT NULL,
	version     bigint      NOT NULL,
	expire_time timestamptz,
	PRIMARY KEY (namespace, id, key)
);
CREATE INDEX prism_kv_items_expiry ON prism_kv_items (expire_time) WHERE expire_time IS NOT NULL;
CREATE SEQUENCE prism_kv_version AS bigint;
CREATE TABLE prism_kv_idempotency (
	namespace     text        NOT NULL COLLATE "C",
	token         text        NOT NULL COLLATE "C",
	fingerprint   bytea       NOT NULL,
	versions      bigint[],
	deleted_count bigint,
	expire_time   timestamptz NOT NULL,
	PRIMARY KEY (namespace, token)
);
CREATE INDEX prism_kv_idempotency_expiry ON prism_kv_idempotency (expire_time);
CREATE TABLE prism_kv_settings (
	name  text  PRIMARY KEY,
	value bytea NOT NULL
);
CREATE FUNCTION prism_kv_fail(code text, msg text) RETURNS void LANGUAGE plpgsql VOLATILE AS $$
BEGIN
	RAISE EXCEPTION USING ERRCODE = code, MESSAGE = msg;
END
$$;
`,
}

// migrate brings the schema to the latest version and returns the page token key stored in the
// database. Replicas starting together queue on the advisory lock; the loser finds the work done.
func migrate(ctx context.Context, pool *pgxpool.Pool) ([]byte, error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin migration: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLockID); err != nil {
		return nil, fmt.Errorf("take migration lock: %w", err)
	}
	key, err := migrateSchema(ctx, migrationTx{
		exec:   func(ctx context.Context, q string, args ...any) error { _, err := tx.Exec(ctx, q, args...); return err },
		scan:   func(ctx context.Context, q string, dest ...any) error { return tx.QueryRow(ctx, q).Scan(dest...) },
		noRows: pgx.ErrNoRows,
	}, pgSchema)
	if err != nil {
		return nil, err
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("commit migration: %w", err)
	}
	return key, nil
}

// pgSchema is the PostgreSQL schema for migrateSchema.
var pgSchema = schemaPlan{
	steps:        migrations,
	versionTable: `CREATE TABLE IF NOT EXISTS prism_kv_schema (version int NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
	recordStep:   `INSERT INTO prism_kv_schema (version) VALUES ($1)`,
	args:         func(v int) []any { return []any{v} },
	noun:         "database",
	upgrade:      "upgrade the plugin",
}

// SchemaVersion is the schema version this plugin migrates a database to.
func SchemaVersion() int { return len(migrations) }
