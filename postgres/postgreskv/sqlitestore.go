//go:build !nodev

package postgreskv

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/prism-gateway/plugins/core/apierr"
)

// sqliteMigrations build the dev-mode schema, applied in order, each once. Never edit a
// released step: append a new one. STRICT makes a string bound where bytes belong an error
// instead of a silently different sort order (SQLite orders all TEXT before all BLOBs).
var sqliteMigrations = []string{
	// 1: items, the version counter, idempotency tokens and settings.
	`
CREATE TABLE prism_kv_items (
	namespace   TEXT    NOT NULL,
	id          BLOB    NOT NULL,
	key         BLOB    NOT NULL,
	value       BLOB    NOT NULL,
	version     INTEGER NOT NULL,
	expire_time INTEGER, -- Unix microseconds; NULL: never expires
	PRIMARY KEY (namespace, id, key)
) STRICT, WITHOUT ROWID;
CREATE INDEX prism_kv_items_expiry ON prism_kv_items (expire_time) WHERE expire_time IS NOT NULL;
CREATE TABLE prism_kv_counters (
	name  TEXT    PRIMARY KEY,
	value INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
INSERT INTO prism_kv_counters (name, value) VALUES ('version', 0);
CREATE TABLE prism_kv_idempotency (
	namespace     TEXT    NOT NULL,
	token         TEXT    NOT NULL,
	fingerprint   BLOB    NOT NULL,
	versions      BLOB, -- big-endian int64s, in request order
	deleted_count INTEGER,
	expire_time   INTEGER NOT NULL,
	PRIMARY KEY (namespace, token)
) STRICT, WITHOUT ROWID;
CREATE INDEX prism_kv_idempotency_expiry ON prism_kv_idempotency (expire_time);
CREATE TABLE prism_kv_settings (
	name  TEXT PRIMARY KEY,
	value BLOB NOT NULL
) STRICT, WITHOUT ROWID;
`,
}

// sqliteLive keeps expired items out of reads and preconditions: $3 is always the current time
// in Unix microseconds, taken once per statement.
const sqliteLive = `(expire_time IS NULL OR expire_time > $3)`

// SQLiteStore runs KeyValue operations on an embedded SQLite database (dev mode) with the same
// semantics as Store. Writes share one connection, so concurrent writers queue in Go instead of
// sleeping in SQLite's busy handler, and each write is one BEGIN IMMEDIATE transaction, which
// also holds off writers in another process on the same file. Reads have their own connections
// and, in WAL mode, neither wait for the writer nor see its uncommitted work.
type SQLiteStore struct {
	writer, reader *sql.DB
	tokens         pageTokens
	retention      func() time.Duration
	observe        func(op string, start time.Time)
}

// OpenSQLiteStore opens (creating if needed) the database file at path, migrates it, and
// returns a store on it with the page token key stored in the database.
func OpenSQLiteStore(ctx context.Context, path string, retention func() time.Duration) (*SQLiteStore, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", path, err)
	}
	// A file: URI with an escaped path, so '?', '#' or '%' in a directory name stay part of it.
	// synchronous=NORMAL in WAL mode survives a crash of the process, not of the machine.
	base := "file:" + (&url.URL{Path: filepath.ToSlash(abs)}).EscapedPath() +
		"?_txlock=immediate&_busy_timeout=10000"
	writer, err := sql.Open("sqlite", base+"&_journal_mode=WAL&_synchronous=NORMAL")
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", abs, err)
	}
	writer.SetMaxOpenConns(1)
	writer.SetMaxIdleConns(1)
	writer.SetConnMaxIdleTime(0)
	st := &SQLiteStore{writer: writer, retention: retention, observe: func(string, time.Time) {}}
	key, err := st.migrate(ctx)
	if err != nil {
		_ = writer.Close()
		return nil, err
	}
	reader, err := sql.Open("sqlite", base+"&_synchronous=NORMAL&_query_only=1")
	if err != nil {
		_ = writer.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", abs, err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	reader.SetMaxOpenConns(n)
	reader.SetMaxIdleConns(n)
	st.reader = reader
	st.tokens = pageTokens{key: key}
	return st, nil
}

// migrate brings the schema to the latest version and returns the page token key stored in
// the database. The immediate transaction keeps a second process on the same file out.
func (s *SQLiteStore) migrate(ctx context.Context) ([]byte, error) {
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("begin sqlite migration: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	key, err := migrateSchema(ctx, migrationTx{
		exec: func(ctx context.Context, q string, args ...any) error {
			_, err := tx.ExecContext(ctx, q, args...)
			return err
		},
		scan: func(ctx context.Context, q string, dest ...any) error {
			return tx.QueryRowContext(ctx, q).Scan(dest...)
		},
		noRows: sql.ErrNoRows,
	}, sqliteSchema)
	if err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("commit sqlite migration: %w", err)
	}
	return key, nil
}

// sqliteSchema is the dev-mode schema for migrateSchema.
var sqliteSchema = schemaPlan{
	steps:        sqliteMigrations,
	versionTable: `CREATE TABLE IF NOT EXISTS prism_kv_schema (version INTEGER NOT NULL, applied_at INTEGER NOT NULL) STRICT`,
	recordStep:   `INSERT INTO prism_kv_schema (version, applied_at) VALUES ($1, $2)`,
	args:         func(v int) []any { return []any{v, time.Now().UnixMicro()} },
	noun:         "dev database",
	engine:       "sqlite ",
	upgrade:      "upgrade the plugin or remove the data directory",
}

// ping runs a real query on a read connection.
func (s *SQLiteStore) ping(ctx context.Context) error {
	var v int
	if err := s.reader.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM prism_kv_schema`).Scan(&v); err != nil {
		return s.fail(ctx, "query sqlite", err)
	}
	return nil
}

// Close closes the database; the WAL is checkpointed into the file when the last connection goes.
func (s *SQLiteStore) Close() error {
	return errors.Join(s.reader.Close(), s.writer.Close())
}

// errReplayed ends a write transaction whose idempotency token was already used: the stored
// result is the answer and nothing is written.
var errReplayed = errors.New("idempotency token replayed")

// write runs fn in one immediate transaction with the current time in Unix microseconds.
func (s *SQLiteStore) write(ctx context.Context, op string, fn func(tx *sql.Tx, now int64) error) error {
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return s.fail(ctx, op, err)
	}
	defer func() { _ = tx.Rollback() }()
	if err := fn(tx, time.Now().UnixMicro()); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return s.fail(ctx, op, err)
	}
	return nil
}

// Put writes the items in one transaction and returns their versions in request order.
func (s *SQLiteStore) Put(ctx context.Context, r PutRequest) ([]int64, error) {
	defer s.observe("put", time.Now())
	idb := []byte(r.ID)
	var versions []int64
	err := s.write(ctx, "put", func(tx *sql.Tx, now int64) error {
		var fp []byte
		if r.IdempotencyToken != "" {
			fp = putFingerprint(r)
			stored, _, found, err := s.readToken(ctx, tx, r.Namespace, r.IdempotencyToken, fp, now)
			if err != nil {
				return err
			}
			if found {
				if versions, err = replayedPut(r, stored); err != nil {
					return err
				}
				return errReplayed
			}
		}
		if err := s.checkPreconditions(ctx, tx, r.Namespace, idb, r.Preconditions, now); err != nil {
			return err
		}
		var last int64
		if err := tx.QueryRowContext(ctx, `UPDATE prism_kv_counters SET value = value + $1 WHERE name = 'version' RETURNING value`, len(r.Items)).Scan(&last); err != nil {
			return s.fail(ctx, "put", err)
		}
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO prism_kv_items (namespace, id, key, value, version, expire_time)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (namespace, id, key) DO UPDATE
	SET value = excluded.value, version = max(excluded.version, prism_kv_items.version + 1), expire_time = excluded.expire_time
RETURNING version`)
		if err != nil {
			return s.fail(ctx, "put", err)
		}
		defer func() { _ = stmt.Close() }()
		versions = make([]int64, len(r.Items))
		first := last - int64(len(r.Items)) + 1
		for i, it := range r.Items {
			value := it.Value
			if value == nil {
				value = []byte{} // nil would be NULL
			}
			var expire any
			if it.TTL > 0 {
				expire = now + max(it.TTL.Microseconds(), 1)
			}
			if err := stmt.QueryRowContext(ctx, r.Namespace, idb, it.Key, value, first+int64(i), expire).Scan(&versions[i]); err != nil {
				return s.fail(ctx, "put", err)
			}
		}
		if r.IdempotencyToken != "" {
			return s.storeToken(ctx, tx, r.Namespace, r.IdempotencyToken, fp, encodeVersions(versions), nil, now)
		}
		return nil
	})
	if errors.Is(err, errReplayed) {
		return versions, nil
	}
	if err != nil {
		return nil, err
	}
	return versions, nil
}

// Delete removes items in one transaction and returns how many live items it removed.
func (s *SQLiteStore) Delete(ctx context.Context, r DeleteRequest) (int64, error) {
	defer s.observe("delete", time.Now())
	idb := []byte(r.ID)
	var deleted int64
	err := s.write(ctx, "delete", func(tx *sql.Tx, now int64) error {
		var fp []byte
		if r.IdempotencyToken != "" {
			fp = deleteFingerprint(r)
			_, n, found, err := s.readToken(ctx, tx, r.Namespace, r.IdempotencyToken, fp, now)
			if err != nil {
				return err
			}
			if found {
				deleted = n
				return errReplayed
			}
		}
		if err := s.checkPreconditions(ctx, tx, r.Namespace, idb, r.Preconditions, now); err != nil {
			return err
		}
		q := sqlBuilder{args: []any{r.Namespace, idb, now}}
		where := `namespace = $1 AND id = $2`
		if len(r.Keys) > 0 {
			where += ` AND key IN (` + q.list(r.Keys) + `)`
		}
		count := `SELECT count(*) FROM prism_kv_items WHERE ` + where + ` AND ` + sqliteLive
		if err := tx.QueryRowContext(ctx, count, q.args...).Scan(&deleted); err != nil {
			return s.fail(ctx, "delete", err)
		}
		// The driver binds parameters by name, so the unused time ($3) is harmless here.
		remove := `DELETE FROM prism_kv_items WHERE ` + where
		if _, err := tx.ExecContext(ctx, remove, q.args...); err != nil {
			return s.fail(ctx, "delete", err)
		}
		if r.IdempotencyToken != "" {
			return s.storeToken(ctx, tx, r.Namespace, r.IdempotencyToken, fp, nil, deleted, now)
		}
		return nil
	})
	if errors.Is(err, errReplayed) {
		return deleted, nil
	}
	if err != nil {
		return 0, err
	}
	return deleted, nil
}

// readToken returns the stored result of the call that first used token, if it is still kept.
func (s *SQLiteStore) readToken(ctx context.Context, tx *sql.Tx, ns, token string, fp []byte, now int64) (versions []int64, deleted int64, found bool, err error) {
	var stored, encoded []byte
	var n sql.NullInt64
	err = tx.QueryRowContext(ctx, `SELECT fingerprint, versions, deleted_count FROM prism_kv_idempotency
WHERE namespace = $1 AND token = $2 AND expire_time > $3`, ns, token, now).Scan(&stored, &encoded, &n)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, 0, false, nil
	}
	if err != nil {
		return nil, 0, false, s.fail(ctx, "read idempotency token", err)
	}
	if string(stored) != string(fp) {
		return nil, 0, false, errTokenReused
	}
	return decodeVersions(encoded), n.Int64, true, nil
}

// storeToken records a call's result under its token; an expired, not yet purged row is taken over.
func (s *SQLiteStore) storeToken(ctx context.Context, tx *sql.Tx, ns, token string, fp, versions []byte, deleted any, now int64) error {
	expire := now + max(s.retention().Microseconds(), 1)
	var vs any
	if versions != nil {
		vs = versions
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO prism_kv_idempotency (namespace, token, fingerprint, versions, deleted_count, expire_time)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (namespace, token) DO UPDATE SET fingerprint = excluded.fingerprint, versions = excluded.versions,
	deleted_count = excluded.deleted_count, expire_time = excluded.expire_time`, ns, token, fp, vs, deleted, expire)
	if err != nil {
		return s.fail(ctx, "store idempotency token", err)
	}
	return nil
}

// checkPreconditions fails with ABORTED, naming the first precondition that does not hold.
func (s *SQLiteStore) checkPreconditions(ctx context.Context, tx *sql.Tx, ns string, id []byte, pcs []Precondition, now int64) error {
	if len(pcs) == 0 {
		return nil
	}
	query := `SELECT version FROM prism_kv_items WHERE namespace = $1 AND id = $2 AND key = $4 AND ` + sqliteLive
	stmt, err := tx.PrepareContext(ctx, query)
	if err != nil {
		return s.fail(ctx, "check preconditions", err)
	}
	defer func() { _ = stmt.Close() }()
	for i, pc := range pcs {
		var cur int64
		err := stmt.QueryRowContext(ctx, ns, id, now, pc.Key).Scan(&cur)
		exists := err == nil
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return s.fail(ctx, "check preconditions", err)
		}
		if err := preconditionFailure(i, pc.Absent, pc.Version, cur, exists); err != nil {
			return err
		}
	}
	return nil
}

// Get returns one page of a record's items and the token for the next page.
func (s *SQLiteStore) Get(ctx context.Context, r GetRequest) ([]Item, string, error) {
	defer s.observe("get", time.Now())
	bind := getBinding(r.Namespace, r.ID, r.Keys)
	q := sqlBuilder{args: []any{r.Namespace, []byte(r.ID), time.Now().UnixMicro(), r.PageSize + 1}}
	where := `namespace = $1 AND id = $2 AND ` + sqliteLive
	if len(r.Keys) > 0 {
		where += ` AND key IN (` + q.list(r.Keys) + `)`
	}
	if r.PageToken != "" {
		pos, err := s.tokens.openPosition(bind, r.PageToken)
		if err != nil {
			return nil, "", err
		}
		where += ` AND key > ` + q.arg(pos.key)
	}
	query := `SELECT key, value, version, expire_time FROM prism_kv_items WHERE ` + where + ` ORDER BY key LIMIT $4`
	rows, err := s.reader.QueryContext(ctx, query, q.args...)
	if err != nil {
		return nil, "", s.fail(ctx, "get", err)
	}
	defer func() { _ = rows.Close() }()
	pg := newPage(r.PageSize, r.MaxBytes)
	id := []byte(r.ID)
	for rows.Next() {
		var it Item
		var exp sql.NullInt64
		if err := rows.Scan(&it.Key, &it.Value, &it.Version, &exp); err != nil {
			return nil, "", s.fail(ctx, "get", err)
		}
		if !pg.add(id, finishItem(it, exp), int64(len(it.Value))) {
			break
		}
	}
	if err := rows.Err(); err != nil {
		return nil, "", s.fail(ctx, "get", err)
	}
	return pg.items(), pg.next(s.tokens, bind, false), nil
}

// Scan returns one page of a namespace's records in (id, key) order.
func (s *SQLiteStore) Scan(ctx context.Context, r ScanRequest) ([]Record, string, error) {
	defer s.observe("scan", time.Now())
	bind := scanBinding(r.Namespace, r.IDPrefix)
	q := sqlBuilder{args: []any{r.Namespace, r.PageSize + 1, time.Now().UnixMicro()}}
	where := `namespace = $1 AND ` + sqliteLive
	// One lower bound on id, the larger of the prefix and the page position, so the primary
	// key seeks straight to where the page starts.
	var lo []byte
	if r.IDPrefix != "" {
		lo = []byte(r.IDPrefix)
		if hi := prefixEnd(lo); hi != nil {
			where += ` AND id < ` + q.arg(hi)
		}
	}
	if r.PageToken != "" {
		pos, err := s.tokens.openPosition(bind, r.PageToken)
		if err != nil {
			return nil, "", err
		}
		if bytes.Compare(pos.id, lo) > 0 {
			lo = pos.id
		}
		where += ` AND (id > ` + q.arg(pos.id) + ` OR key > ` + q.arg(pos.key) + `)`
	}
	if lo != nil {
		where += ` AND id >= ` + q.arg(lo)
	}
	query := `SELECT id, key, value, version, expire_time FROM prism_kv_items WHERE ` + where + ` ORDER BY id, key LIMIT $2`
	rows, err := s.reader.QueryContext(ctx, query, q.args...)
	if err != nil {
		return nil, "", s.fail(ctx, "scan", err)
	}
	defer func() { _ = rows.Close() }()
	pg := newPage(r.PageSize, r.MaxBytes)
	for rows.Next() {
		var id []byte
		var it Item
		var exp sql.NullInt64
		if err := rows.Scan(&id, &it.Key, &it.Value, &it.Version, &exp); err != nil {
			return nil, "", s.fail(ctx, "scan", err)
		}
		if !pg.add(id, finishItem(it, exp), int64(len(it.Value))) {
			break
		}
	}
	if err := rows.Err(); err != nil {
		return nil, "", s.fail(ctx, "scan", err)
	}
	return pg.records, pg.next(s.tokens, bind, true), nil
}

func finishItem(it Item, exp sql.NullInt64) Item {
	if it.Value == nil {
		it.Value = []byte{}
	}
	if exp.Valid {
		it.ExpireTime = time.UnixMicro(exp.Int64).UTC()
	}
	return it
}

// PurgeExpired deletes up to limit expired items and returns how many it deleted.
func (s *SQLiteStore) PurgeExpired(ctx context.Context, limit int) (int64, error) {
	return s.purge(ctx, purgeItems, limit)
}

// PurgeTokens deletes up to limit idempotency tokens past their retention.
func (s *SQLiteStore) PurgeTokens(ctx context.Context, limit int) (int64, error) {
	return s.purge(ctx, purgeTokens, limit)
}

// purge deletes up to limit of t's expired rows, oldest first, on the writer connection.
func (s *SQLiteStore) purge(ctx context.Context, t purgeTarget, limit int) (int64, error) {
	res, err := s.writer.ExecContext(ctx, sqlitePurgeSQL(t), time.Now().UnixMicro(), limit)
	if err != nil {
		return 0, s.fail(ctx, t.op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, s.fail(ctx, t.op, err)
	}
	return n, nil
}

// sqlitePurgeSQL deletes up to $2 of t's rows expired at $1. Table and columns come from
// purgeTarget's constants, never from a request.
func sqlitePurgeSQL(t purgeTarget) string {
	key := strings.Join(t.key, ", ")
	return `DELETE FROM ` + t.table + ` WHERE (` + key + `) IN (
	SELECT ` + key + ` FROM ` + t.table + ` WHERE expire_time <= $1 ORDER BY expire_time LIMIT $2)`
}

// fail turns a SQLite error into one of apierr's kinds. As with PostgreSQL, only the result
// code of unexpected errors reaches the client.
func (s *SQLiteStore) fail(ctx context.Context, op string, err error) error {
	if cerr := canceled(ctx, op, err); cerr != nil {
		return cerr
	}
	if errors.Is(err, sql.ErrConnDone) || strings.Contains(err.Error(), "database is closed") {
		return apierr.Unavailable(op, errors.New("sqlite database closed"))
	}
	var sqErr *sqlite.Error
	if !errors.As(err, &sqErr) {
		return fmt.Errorf("%s: %w", op, err)
	}
	switch code := sqErr.Code() & 0xff; code {
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
		// Another process holds the file (a second plugin on the same data directory).
		return apierr.Unavailable(op, errors.New("sqlite database is locked by another connection"))
	case sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY,
		sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_PERM:
		return apierr.Unavailable(op, fmt.Errorf("sqlite error %d", sqErr.Code()))
	}
	return fmt.Errorf("%s: sqlite error %d", op, sqErr.Code())
}

func encodeVersions(vs []int64) []byte {
	out := make([]byte, 8*len(vs))
	for i, v := range vs {
		binary.BigEndian.PutUint64(out[8*i:], uint64(v))
	}
	return out
}

func decodeVersions(b []byte) []int64 {
	if b == nil {
		return nil
	}
	out := make([]int64, len(b)/8)
	for i := range out {
		out[i] = int64(binary.BigEndian.Uint64(b[8*i:]))
	}
	return out
}

// list binds each value and returns their placeholders, comma-separated.
func (q *sqlBuilder) list(values [][]byte) string {
	ph := make([]string, len(values))
	for i, v := range values {
		ph[i] = q.arg(v)
	}
	return strings.Join(ph, ", ")
}

var _ kvStore = (*SQLiteStore)(nil)
