package postgreskv

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/fnv"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/prism-gateway/plugins/core/apierr"
)

// SQLSTATEs raised by prism_kv_fail.
const (
	codeReplay       = "PK001" // idempotency token already used: nothing was written
	codePrecondition = "PK002" // a precondition failed: nothing was written
)

// PutItem is one item to write.
type PutItem struct {
	Key, Value []byte
	// TTL is the item's time to live; zero means none.
	TTL time.Duration
}

// Precondition must hold for a write to happen: the item exists with Version, or, when Absent,
// does not exist (or has expired).
type Precondition struct {
	Key     []byte
	Version int64
	Absent  bool
}

// Item is a stored item as read back.
type Item struct {
	Key, Value []byte
	Version    int64
	// ExpireTime is zero when the item has no time to live.
	ExpireTime time.Time
}

// Record is one record's items within a scan page.
type Record struct {
	ID    string
	Items []Item
}

// PutRequest writes items into one record.
type PutRequest struct {
	Namespace, ID    string
	Items            []PutItem
	IdempotencyToken string
	Preconditions    []Precondition
}

// DeleteRequest removes items (all when Keys is empty) of one record.
type DeleteRequest struct {
	Namespace, ID    string
	Keys             [][]byte
	IdempotencyToken string
	Preconditions    []Precondition
}

// GetRequest reads a page of one record's items.
type GetRequest struct {
	Namespace, ID string
	Keys          [][]byte
	PageSize      int
	MaxBytes      int64
	PageToken     string
	// MaxItemBytes is the largest key plus value any item can have (from the limits); it lets
	// a Get of a few named keys skip the byte accounting when they cannot overflow the page.
	MaxItemBytes int64
}

// ScanRequest reads a page of a namespace's records.
type ScanRequest struct {
	Namespace, IDPrefix string
	PageSize            int
	MaxBytes            int64
	PageToken           string
}

// Store runs KeyValue operations on a migrated PostgreSQL database. Every write is one
// pipelined batch: PostgreSQL runs a batch's statements as one implicit transaction, so a
// failed precondition or a replayed token aborts the whole write and costs one round trip.
type Store struct {
	pool      *pgxpool.Pool
	tokens    pageTokens
	retention func() time.Duration
	observe   func(op string, start time.Time)
}

// NewStore returns a store on a pool whose database is migrated (see Migrate). pageTokenKey
// signs page tokens; retention says how long idempotency tokens are kept.
func NewStore(pool *pgxpool.Pool, pageTokenKey []byte, retention func() time.Duration) *Store {
	return &Store{pool: pool, tokens: pageTokens{key: pageTokenKey}, retention: retention, observe: func(string, time.Time) {}}
}

// Migrate creates or upgrades the schema and returns the page token key stored in the database.
func Migrate(ctx context.Context, pool *pgxpool.Pool) ([]byte, error) { return migrate(ctx, pool) }

const live = `(expire_time IS NULL OR expire_time > now())`

const (
	sqlLockRecord = `SELECT pg_advisory_xact_lock($1)`

	// A token row is claimed first; a concurrent retry blocks on it and then finds it taken.
	// Expired but not yet purged tokens are taken over.
	sqlClaimToken = `WITH claimed AS (
	INSERT INTO prism_kv_idempotency AS t (namespace, token, fingerprint, expire_time)
	VALUES ($1, $2, $3, now() + $4 * interval '1 microsecond')
	ON CONFLICT (namespace, token) DO UPDATE
		SET fingerprint = EXCLUDED.fingerprint, expire_time = EXCLUDED.expire_time, versions = NULL, deleted_count = NULL
		WHERE t.expire_time <= now()
	RETURNING 1)
SELECT prism_kv_fail('` + codeReplay + `', 'idempotency token already used') WHERE NOT EXISTS (SELECT 1 FROM claimed)`

	// A failed precondition is reported as its facts (see decodePreconditionFailure): the
	// wording lives in Go, shared with SQLite.
	sqlCheckPreconditions = `SELECT prism_kv_fail('` + codePrecondition + `', concat_ws(' ', c.ord - 1, c.want_absent::int, c.want_version, c.cur))
FROM (
	SELECT pc.ord, pc.want_absent, pc.want_version, i.version AS cur
	FROM unnest($3::bytea[], $4::int8[], $5::bool[]) WITH ORDINALITY AS pc(key, want_version, want_absent, ord)
	LEFT JOIN prism_kv_items i ON i.namespace = $1 AND i.id = $2 AND i.key = pc.key AND (i.expire_time IS NULL OR i.expire_time > now())
) c
WHERE (c.want_absent AND c.cur IS NOT NULL) OR (NOT c.want_absent AND c.cur IS DISTINCT FROM c.want_version)
ORDER BY c.ord LIMIT 1`

	// Versions come from one sequence so a re-created item never reuses an old version (no ABA
	// for compare-and-set); GREATEST keeps them increasing even if the sequence were reset.
	sqlUpsert = `INSERT INTO prism_kv_items AS t (namespace, id, key, value, version, expire_time)
	SELECT $1, $2, u.k, u.v, nextval('prism_kv_version'), CASE WHEN u.ttl > 0 THEN now() + u.ttl * interval '1 microsecond' END
	FROM unnest($3::bytea[], $4::bytea[], $5::int8[]) AS u(k, v, ttl)
	ON CONFLICT (namespace, id, key) DO UPDATE
		SET value = EXCLUDED.value, version = GREATEST(EXCLUDED.version, t.version + 1), expire_time = EXCLUDED.expire_time
	RETURNING key, version`

	// Without a token or preconditions a Put is one statement; the lock comes first because
	// every inserted row is joined with it.
	sqlPut = `WITH l AS (SELECT pg_advisory_xact_lock($6))
INSERT INTO prism_kv_items AS t (namespace, id, key, value, version, expire_time)
	SELECT $1, $2, u.k, u.v, nextval('prism_kv_version'), CASE WHEN u.ttl > 0 THEN now() + u.ttl * interval '1 microsecond' END
	FROM unnest($3::bytea[], $4::bytea[], $5::int8[]) AS u(k, v, ttl) CROSS JOIN l
	ON CONFLICT (namespace, id, key) DO UPDATE
		SET value = EXCLUDED.value, version = GREATEST(EXCLUDED.version, t.version + 1), expire_time = EXCLUDED.expire_time
	RETURNING key, version`

	// A Get of a few named keys that cannot exceed the page's byte budget needs no running sum.
	sqlGetKeys = `SELECT key, value, version, expire_time FROM prism_kv_items
WHERE namespace = $1 AND id = $2 AND key = ANY($3::bytea[]) AND ` + live + ` ORDER BY key`

	sqlPutWithToken = `WITH w AS (` + sqlUpsert + `),
r AS (
	UPDATE prism_kv_idempotency SET versions = (
		SELECT array_agg(w.version ORDER BY u.ord) FROM w JOIN unnest($3::bytea[]) WITH ORDINALITY AS u(k, ord) ON w.key = u.k)
	WHERE namespace = $1 AND token = $6)
SELECT key, version FROM w`

	sqlReadToken = `SELECT fingerprint, versions, deleted_count FROM prism_kv_idempotency WHERE namespace = $1 AND token = $2`
)

func deleteSQL(byKeys, withToken bool) string {
	where := `namespace = $1 AND id = $2`
	next := 3
	if byKeys {
		where += ` AND key = ANY($3::bytea[])`
		next = 4
	}
	del := `WITH d AS (DELETE FROM prism_kv_items WHERE ` + where + ` RETURNING expire_time),
n AS (SELECT count(*) FILTER (WHERE expire_time IS NULL OR expire_time > now()) AS c FROM d)`
	if withToken {
		del += `,
r AS (UPDATE prism_kv_idempotency SET deleted_count = (SELECT c FROM n) WHERE namespace = $1 AND token = $` + strconv.Itoa(next) + `)`
	}
	return del + `
SELECT c FROM n`
}

var sqlDelete = [2][2]string{
	{deleteSQL(false, false), deleteSQL(false, true)},
	{deleteSQL(true, false), deleteSQL(true, true)},
}

// Put writes the items in one transaction and returns their versions in request order.
func (s *Store) Put(ctx context.Context, r PutRequest) ([]int64, error) {
	defer s.observe("put", time.Now())
	idb := []byte(r.ID)
	keys := make([][]byte, len(r.Items))
	values := make([][]byte, len(r.Items))
	ttls := make([]int64, len(r.Items))
	for i, it := range r.Items {
		keys[i], values[i], ttls[i] = it.Key, it.Value, it.TTL.Microseconds()
		if values[i] == nil {
			values[i] = []byte{} // nil would be NULL
		}
		if it.TTL > 0 && ttls[i] == 0 {
			ttls[i] = 1
		}
	}
	got := make(map[string]int64, len(r.Items))
	collect := func(rows pgx.Rows) error {
		var k []byte
		var v int64
		_, err := pgx.ForEachRow(rows, []any{&k, &v}, func() error {
			got[string(k)] = v
			return nil
		})
		return err
	}
	versions := func() []int64 {
		out := make([]int64, len(r.Items))
		for i, it := range r.Items {
			out[i] = got[string(it.Key)]
		}
		return out
	}
	if r.IdempotencyToken == "" && len(r.Preconditions) == 0 {
		rows, err := s.pool.Query(ctx, sqlPut, r.Namespace, idb, keys, values, ttls, recordLockKey(r.Namespace, r.ID))
		if err == nil {
			err = collect(rows)
		}
		if err != nil {
			return nil, s.fail(ctx, "put", err)
		}
		return versions(), nil
	}
	var fp []byte
	b := &pgx.Batch{}
	b.Queue(sqlLockRecord, recordLockKey(r.Namespace, r.ID))
	if r.IdempotencyToken != "" {
		fp = putFingerprint(r)
		b.Queue(sqlClaimToken, r.Namespace, r.IdempotencyToken, fp, s.retention().Microseconds())
	}
	s.queuePreconditions(b, r.Namespace, idb, r.Preconditions)
	if r.IdempotencyToken != "" {
		b.Queue(sqlPutWithToken, r.Namespace, idb, keys, values, ttls, r.IdempotencyToken)
	} else {
		b.Queue(sqlUpsert, r.Namespace, idb, keys, values, ttls)
	}
	err := s.runBatch(ctx, b, func(br pgx.BatchResults) error {
		rows, err := br.Query()
		if err != nil {
			return err
		}
		return collect(rows)
	})
	if isCode(err, codeReplay) {
		versions, _, rerr := s.replay(ctx, r.Namespace, r.IdempotencyToken, fp)
		if rerr != nil {
			return nil, rerr
		}
		return replayedPut(r, versions)
	}
	if err != nil {
		return nil, s.fail(ctx, "put", err)
	}
	return versions(), nil
}

// Delete removes items in one transaction and returns how many live items it removed.
func (s *Store) Delete(ctx context.Context, r DeleteRequest) (int64, error) {
	defer s.observe("delete", time.Now())
	idb := []byte(r.ID)
	var fp []byte
	b := &pgx.Batch{}
	b.Queue(sqlLockRecord, recordLockKey(r.Namespace, r.ID))
	if r.IdempotencyToken != "" {
		fp = deleteFingerprint(r)
		b.Queue(sqlClaimToken, r.Namespace, r.IdempotencyToken, fp, s.retention().Microseconds())
	}
	s.queuePreconditions(b, r.Namespace, idb, r.Preconditions)
	args := []any{r.Namespace, idb}
	if len(r.Keys) > 0 {
		args = append(args, r.Keys)
	}
	withToken := r.IdempotencyToken != ""
	if withToken {
		args = append(args, r.IdempotencyToken)
	}
	b.Queue(sqlDelete[boolIndex(len(r.Keys) > 0)][boolIndex(withToken)], args...)
	var deleted int64
	err := s.runBatch(ctx, b, func(br pgx.BatchResults) error {
		return br.QueryRow().Scan(&deleted)
	})
	if isCode(err, codeReplay) {
		_, n, rerr := s.replay(ctx, r.Namespace, r.IdempotencyToken, fp)
		return n, rerr
	}
	if err != nil {
		return 0, s.fail(ctx, "delete", err)
	}
	return deleted, nil
}

func (s *Store) queuePreconditions(b *pgx.Batch, ns string, id []byte, pcs []Precondition) {
	if len(pcs) == 0 {
		return
	}
	keys := make([][]byte, len(pcs))
	versions := make([]int64, len(pcs))
	absent := make([]bool, len(pcs))
	for i, pc := range pcs {
		keys[i], versions[i], absent[i] = pc.Key, pc.Version, pc.Absent
	}
	b.Queue(sqlCheckPreconditions, ns, id, keys, versions, absent)
}

// runBatch sends b, checks every statement but the last, and hands the last to last.
func (s *Store) runBatch(ctx context.Context, b *pgx.Batch, last func(pgx.BatchResults) error) error {
	br := s.pool.SendBatch(ctx, b)
	var err error
	for i := 0; i < b.Len()-1 && err == nil; i++ {
		_, err = br.Exec()
	}
	if err == nil {
		err = last(br)
	}
	return errors.Join(err, br.Close())
}

// replay returns the stored result of the call that first used token.
func (s *Store) replay(ctx context.Context, ns, token string, fp []byte) ([]int64, int64, error) {
	var stored []byte
	var versions []int64
	var deleted *int64
	err := s.pool.QueryRow(ctx, sqlReadToken, ns, token).Scan(&stored, &versions, &deleted)
	if errors.Is(err, pgx.ErrNoRows) {
		// Expired and purged between the claim and now: a retry will run the call afresh.
		return nil, 0, apierr.New(apierr.ErrAborted, "idempotency token expired during the call: retry")
	}
	if err != nil {
		return nil, 0, s.fail(ctx, "read idempotency token", err)
	}
	if string(stored) != string(fp) {
		return nil, 0, errTokenReused
	}
	var n int64
	if deleted != nil {
		n = *deleted
	}
	return versions, n, nil
}

// Get returns one page of a record's items and the token for the next page.
func (s *Store) Get(ctx context.Context, r GetRequest) ([]Item, string, error) {
	defer s.observe("get", time.Now())
	if r.PageToken == "" && len(r.Keys) > 0 && len(r.Keys) <= r.PageSize && r.MaxItemBytes > 0 &&
		int64(len(r.Keys))*r.MaxItemBytes <= r.MaxBytes {
		return s.getKeys(ctx, r)
	}
	bind := getBinding(r.Namespace, r.ID, r.Keys)
	var after []byte
	if r.PageToken != "" {
		pos, err := s.tokens.openPosition(bind, r.PageToken)
		if err != nil {
			return nil, "", err
		}
		after = pos.key
	}
	id := []byte(r.ID)
	q := sqlBuilder{args: []any{r.Namespace, r.PageSize + 1, inlineValueBytes(r.PageSize, r.MaxBytes), id}}
	where := `namespace = $1 AND id = $4 AND ` + live
	if len(r.Keys) > 0 {
		where += ` AND key = ANY(` + q.arg(r.Keys) + `::bytea[])`
	}
	if after != nil {
		where += ` AND key > ` + q.arg(after)
	}
	sql := `SELECT key, octet_length(value), CASE WHEN octet_length(value) <= $3 THEN value END, version, expire_time
	FROM prism_kv_items WHERE ` + where + ` ORDER BY key LIMIT $2`
	pg, err := s.readPage(ctx, "get", pageQuery{ns: r.Namespace, oneRecord: true, id: id, sql: sql, args: q.args, pageSize: r.PageSize, maxBytes: r.MaxBytes})
	if err != nil {
		return nil, "", err
	}
	return pg.items(), pg.next(s.tokens, bind, false), nil
}

// getKeys reads named keys that fit one page whatever their size.
func (s *Store) getKeys(ctx context.Context, r GetRequest) ([]Item, string, error) {
	rows, err := s.pool.Query(ctx, sqlGetKeys, r.Namespace, []byte(r.ID), r.Keys)
	if err != nil {
		return nil, "", s.fail(ctx, "get", err)
	}
	var items []Item
	var it Item
	var exp *time.Time
	_, err = pgx.ForEachRow(rows, []any{&it.Key, &it.Value, &it.Version, &exp}, func() error {
		if exp != nil {
			it.ExpireTime = *exp
		}
		items = append(items, it)
		it = Item{}
		return nil
	})
	if err != nil {
		return nil, "", s.fail(ctx, "get", err)
	}
	return items, "", nil
}

// Scan returns one page of a namespace's records in (id, key) order.
func (s *Store) Scan(ctx context.Context, r ScanRequest) ([]Record, string, error) {
	defer s.observe("scan", time.Now())
	bind := scanBinding(r.Namespace, r.IDPrefix)
	q := sqlBuilder{args: []any{r.Namespace, r.PageSize + 1, inlineValueBytes(r.PageSize, r.MaxBytes)}}
	where := `namespace = $1 AND ` + live
	if r.IDPrefix != "" {
		where += ` AND id >= ` + q.arg([]byte(r.IDPrefix))
		if hi := prefixEnd([]byte(r.IDPrefix)); hi != nil {
			where += ` AND id < ` + q.arg(hi)
		}
	}
	if r.PageToken != "" {
		pos, err := s.tokens.openPosition(bind, r.PageToken)
		if err != nil {
			return nil, "", err
		}
		where += ` AND (id, key) > (` + q.arg(pos.id) + `, ` + q.arg(pos.key) + `)`
	}
	sql := `SELECT id, key, octet_length(value), CASE WHEN octet_length(value) <= $3 THEN value END, version, expire_time
	FROM prism_kv_items WHERE ` + where + ` ORDER BY id, key LIMIT $2`
	pg, err := s.readPage(ctx, "scan", pageQuery{ns: r.Namespace, sql: sql, args: q.args, pageSize: r.PageSize, maxBytes: r.MaxBytes})
	if err != nil {
		return nil, "", err
	}
	return pg.records, pg.next(s.tokens, bind, true), nil
}

// inlineValueFloor is the smallest value size a page always reads along with its row; see
// inlineValueBytes.
const inlineValueFloor = 8 << 10

// inlineValueBytes is the largest value a Get or Scan page reads with its row. Larger values
// are read only for rows that fit the page's byte budget, in a second statement: the page's rows
// come from one plain keyset query (cheaper for PostgreSQL than a running sum in SQL) and the
// budget is counted here, so without this bound a page of 1000 rows of 1 MiB values would pull
// a gigabyte to return 8 MiB. With it the first statement moves at most about
// max(max_bytes, page_size × 8 KiB).
func inlineValueBytes(pageSize int, maxBytes int64) int64 {
	return max(maxBytes/int64(max(pageSize, 1)), inlineValueFloor)
}

// pageQuery is one Get or Scan page. sql selects at most pageSize+1 rows in page order, with
// the columns [id,] key, octet_length(value), value (NULL above the inline bound), version,
// expire_time; id is left out when the page is one record's (Get: oneRecord), whose id is id.
type pageQuery struct {
	ns        string
	oneRecord bool
	id        []byte
	sql       string
	args      []any
	pageSize  int
	maxBytes  int64
}

// deferredValue is a row of a page whose value was too large to read with it.
type deferredValue struct {
	record, item int
	id, key      []byte
	version      int64
}

// readPage reads one page. If a row holding a large value changed before its value was read
// and it was the page's first, the page is read again.
func (s *Store) readPage(ctx context.Context, op string, pq pageQuery) (*page, error) {
	for {
		pg, retry, err := s.readPageOnce(ctx, op, pq)
		if !retry || err != nil {
			return pg, err
		}
		if err := ctx.Err(); err != nil {
			return nil, s.fail(ctx, op, err)
		}
	}
}

func (s *Store) readPageOnce(ctx context.Context, op string, pq pageQuery) (pg *page, retry bool, err error) {
	rows, err := s.pool.Query(ctx, pq.sql, pq.args...)
	if err != nil {
		return nil, false, s.fail(ctx, op, err)
	}
	defer rows.Close()
	pg = newPage(pq.pageSize, pq.maxBytes)
	var deferred []deferredValue
	var r pageRow
	var slab byteSlab
	cols := 5
	if !pq.oneRecord {
		cols = 6
	}
	raw := false
	for n := 0; rows.Next(); n++ {
		if n == 0 {
			raw = binaryColumns(rows.FieldDescriptions(), cols)
		}
		if raw {
			err = r.decode(rows.RawValues(), pq.oneRecord, &slab)
		} else {
			err = r.scan(rows, pq.oneRecord)
		}
		if err != nil {
			return nil, false, s.fail(ctx, op, err)
		}
		id := r.id
		if pq.oneRecord {
			id = pq.id
		}
		large := r.item.Value == nil && r.valueBytes > 0
		if r.item.Value == nil && !large {
			r.item.Value = []byte{}
		}
		if !pg.add(id, r.item, r.valueBytes) {
			break
		}
		if large {
			rec := len(pg.records) - 1
			deferred = append(deferred, deferredValue{record: rec, item: len(pg.records[rec].Items) - 1, id: []byte(pg.records[rec].ID), key: r.item.Key, version: r.item.Version})
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, false, s.fail(ctx, op, err)
	}
	if len(deferred) > 0 {
		cut, err := s.readDeferred(ctx, op, pq.ns, pg.records, deferred)
		if err != nil {
			return nil, false, err
		}
		if cut >= 0 {
			d := deferred[cut]
			if d.record == 0 && d.item == 0 {
				return nil, true, nil
			}
			pg.truncate(d.record, d.item)
		}
	}
	return pg, false, nil
}

// pageRow is one row of a page query: [id,] key, octet_length(value), value, version,
// expire_time.
type pageRow struct {
	id         []byte
	item       Item
	valueBytes int64
}

// binaryColumns reports whether the n columns of a page query came in PostgreSQL's binary
// format, as pgx asks for them unless the connection uses the simple or exec query mode. Only
// then can rows be decoded from their raw bytes (pageRow.decode); otherwise pgx scans them.
func binaryColumns(fields []pgconn.FieldDescription, n int) bool {
	if len(fields) != n {
		return false
	}
	for _, f := range fields {
		if f.Format != pgx.BinaryFormatCode {
			return false
		}
	}
	return true
}

// y2kMicros is PostgreSQL's timestamp epoch, 2000-01-01 UTC, in microseconds since Unix's.
const y2kMicros = 946_684_800 * 1_000_000

// decode reads a row in binary format. pgx hands out its read buffer, valid until the next
// row: the key and value are copied once, into the page's slab, instead of into an allocation
// each. The id is not copied: page.add keeps it as a string when it starts a record.
func (r *pageRow) decode(vals [][]byte, oneRecord bool, slab *byteSlab) error {
	if !oneRecord {
		r.id, vals = vals[0], vals[1:]
	}
	if len(vals) != 5 || vals[0] == nil || len(vals[1]) != 4 || len(vals[3]) != 8 {
		return errors.New("decode page row: unexpected columns")
	}
	r.item = Item{Key: slab.copy(vals[0]), Version: int64(binary.BigEndian.Uint64(vals[3]))}
	r.valueBytes = int64(int32(binary.BigEndian.Uint32(vals[1])))
	if vals[2] != nil {
		r.item.Value = slab.copy(vals[2])
	}
	if exp := vals[4]; exp != nil {
		if len(exp) != 8 {
			return errors.New("decode page row: malformed expire_time")
		}
		us := int64(binary.BigEndian.Uint64(exp))
		if us == math.MaxInt64 || us == math.MinInt64 {
			return errors.New("decode page row: infinite expire_time")
		}
		// The same arithmetic as pgx's, so both paths return the same time.Time.
		r.item.ExpireTime = time.Unix(y2kMicros/1_000_000+us/1_000_000, (y2kMicros%1_000_000*1_000)+(us%1_000_000*1_000))
	}
	return nil
}

// scan reads a row in text format through pgx's decoders.
func (r *pageRow) scan(rows pgx.Rows, oneRecord bool) error {
	*r = pageRow{}
	var exp *time.Time
	dest := []any{&r.item.Key, &r.valueBytes, &r.item.Value, &r.item.Version, &exp}
	if !oneRecord {
		dest = append([]any{&r.id}, dest...)
	}
	if err := rows.Scan(dest...); err != nil {
		return err
	}
	if exp != nil {
		r.item.ExpireTime = *exp
	}
	return nil
}

// byteSlab hands out copies of byte strings from a few large allocations instead of one each:
// a page's keys and values live as long as the page, so they can share their memory.
type byteSlab struct{ buf []byte }

// A slab's chunks double from slabFirstChunk to slabMaxChunk; a string over a quarter of the
// next chunk gets an allocation of its own.
const (
	slabFirstChunk = 4 << 10
	slabMaxChunk   = 1 << 20
)

// copy returns a copy of b whose capacity ends with it, so that appending to it never writes
// over the next copy. A chunk is never written again once handed out.
func (s *byteSlab) copy(b []byte) []byte {
	if len(b) == 0 {
		return []byte{}
	}
	if len(b) > cap(s.buf)-len(s.buf) {
		size := min(max(2*cap(s.buf), slabFirstChunk), slabMaxChunk)
		if len(b) > size/4 {
			// Big strings get an allocation of their own, so the chunk in use is not cut short.
			return append([]byte{}, b...)
		}
		s.buf = make([]byte, 0, size)
	}
	n := len(s.buf)
	s.buf = append(s.buf, b...)
	return s.buf[n:len(s.buf):len(s.buf)]
}

// sqlDeferredValues reads large values of a page, by key and the version the page saw.
const sqlDeferredValues = `SELECT u.ord, i.value FROM unnest($2::bytea[], $3::bytea[], $4::int8[]) WITH ORDINALITY AS u(id, key, version, ord)
	JOIN prism_kv_items i ON i.namespace = $1 AND i.id = u.id AND i.key = u.key AND i.version = u.version AND (i.expire_time IS NULL OR i.expire_time > now())
	ORDER BY u.ord`

// readDeferred fills in the large values of a page. A row rewritten, deleted or expired since
// the page was read has no value at its version any more; the index of the first such row is
// returned (-1 when there is none), and the page must end before it: the next page reads it
// as it is then.
func (s *Store) readDeferred(ctx context.Context, op, ns string, records []Record, deferred []deferredValue) (int, error) {
	ids := make([][]byte, len(deferred))
	keys := make([][]byte, len(deferred))
	versions := make([]int64, len(deferred))
	for i, d := range deferred {
		ids[i], keys[i], versions[i] = d.id, d.key, d.version
	}
	rows, err := s.pool.Query(ctx, sqlDeferredValues, ns, ids, keys, versions)
	if err != nil {
		return -1, s.fail(ctx, op, err)
	}
	want := 0
	cut := -1
	var ord int
	var value []byte
	_, err = pgx.ForEachRow(rows, []any{&ord, &value}, func() error {
		if cut >= 0 {
			return nil
		}
		if ord-1 != want {
			cut = want
			return nil
		}
		d := deferred[want]
		records[d.record].Items[d.item].Value = value
		value = nil
		want++
		return nil
	})
	if err != nil {
		return -1, s.fail(ctx, op, err)
	}
	if cut < 0 && want < len(deferred) {
		cut = want
	}
	return cut, nil
}

// PurgeExpired deletes up to limit expired items and returns how many it deleted.
func (s *Store) PurgeExpired(ctx context.Context, limit int) (int64, error) {
	return s.purge(ctx, purgeItems, limit)
}

// PurgeTokens deletes up to limit idempotency tokens past their retention.
func (s *Store) PurgeTokens(ctx context.Context, limit int) (int64, error) {
	return s.purge(ctx, purgeTokens, limit)
}

// purge deletes up to limit of t's expired rows. Rows locked by writers (or by another
// replica's purge) are skipped and left for the next round.
func (s *Store) purge(ctx context.Context, t purgeTarget, limit int) (int64, error) {
	tag, err := s.pool.Exec(ctx, pgPurgeSQL(t), limit)
	if err != nil {
		return 0, s.fail(ctx, t.op, err)
	}
	return tag.RowsAffected(), nil
}

// pgPurgeSQL deletes up to $1 of t's expired rows. Table and columns come from purgeTarget's
// constants, never from a request.
func pgPurgeSQL(t purgeTarget) string {
	join := make([]string, len(t.key))
	for i, c := range t.key {
		join[i] = "i." + c + " = d." + c
	}
	return `DELETE FROM ` + t.table + ` i USING (
	SELECT ` + strings.Join(t.key, ", ") + ` FROM ` + t.table + ` WHERE expire_time <= now()
	ORDER BY expire_time LIMIT $1 FOR UPDATE SKIP LOCKED) d
WHERE ` + strings.Join(join, " AND ") + ` AND i.expire_time <= now()`
}

// fail turns a database error into one of apierr's kinds. Server messages can quote stored
// data, so only the SQLSTATE of unexpected errors reaches the client.
func (s *Store) fail(ctx context.Context, op string, err error) error {
	if cerr := canceled(ctx, op, err); cerr != nil {
		return cerr
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		// Dial, TLS, closed pool, broken connection: a retry may cure them.
		return apierr.Unavailable(op, err)
	}
	switch {
	case pgErr.Code == codePrecondition:
		return decodePreconditionFailure(pgErr.Message)
	case pgErr.Code == "40001" || pgErr.Code == "40P01": // serialization failure, deadlock
		return apierr.New(apierr.ErrAborted, "%s: concurrent update, retry", op)
	case pgErr.Code == "57014": // query_canceled (statement_timeout)
		return apierr.Unavailable(op, errors.New("statement cancelled by the server"))
	case strings.HasPrefix(pgErr.Code, "08"), strings.HasPrefix(pgErr.Code, "53"),
		strings.HasPrefix(pgErr.Code, "57"), strings.HasPrefix(pgErr.Code, "28"),
		pgErr.Code == "42P01", pgErr.Code == "3D000":
		// Connection, resources, shutdown, auth, missing table/database: backend trouble.
		return apierr.Unavailable(op, fmt.Errorf("postgres error SQLSTATE %s", pgErr.Code))
	}
	return fmt.Errorf("%s: postgres error SQLSTATE %s", op, pgErr.Code)
}

func isCode(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}

// recordLockKey names the transaction advisory lock that serialises writers of one record.
// Without it two writers could both find an item absent and both write it. Hash collisions only
// serialise unrelated records a little.
func recordLockKey(ns, id string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(ns))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(id))
	return int64(h.Sum64())
}

func putFingerprint(r PutRequest) []byte {
	h := sha256.New()
	h.Write([]byte("put"))
	writeLenPrefixed(h, []byte(r.ID))
	for _, it := range r.Items {
		writeLenPrefixed(h, it.Key)
		writeLenPrefixed(h, it.Value)
		writeInt(h, int64(it.TTL))
	}
	writePreconditions(h, r.Preconditions)
	return h.Sum(nil)
}

func deleteFingerprint(r DeleteRequest) []byte {
	h := sha256.New()
	h.Write([]byte("delete"))
	writeLenPrefixed(h, []byte(r.ID))
	writeInt(h, int64(len(r.Keys)))
	for _, k := range r.Keys {
		writeLenPrefixed(h, k)
	}
	writePreconditions(h, r.Preconditions)
	return h.Sum(nil)
}

func writePreconditions(h hash.Hash, pcs []Precondition) {
	writeInt(h, int64(len(pcs)))
	for _, pc := range pcs {
		writeLenPrefixed(h, pc.Key)
		writeInt(h, pc.Version)
		if pc.Absent {
			h.Write([]byte{1})
		} else {
			h.Write([]byte{0})
		}
	}
}

func writeInt(h hash.Hash, v int64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(v))
	h.Write(b[:])
}

// prefixEnd is the smallest byte string greater than every string starting with p, or nil when
// there is none (p is all 0xff).
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

func boolIndex(b bool) int {
	if b {
		return 1
	}
	return 0
}

// sqlBuilder numbers positional parameters as a statement grows.
type sqlBuilder struct{ args []any }

func (q *sqlBuilder) arg(v any) string {
	q.args = append(q.args, v)
	return "$" + strconv.Itoa(len(q.args))
}

var _ kvStore = (*Store)(nil)
