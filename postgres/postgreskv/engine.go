package postgreskv

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/prism-gateway/plugins/core/apierr"
)

// This file holds what the two engines (Store on PostgreSQL, SQLiteStore in dev mode) share:
// the rules and texts of the KeyValue semantics that do not depend on SQL. Each engine keeps
// only its statements and its transaction handling, so a fix to paging, preconditions,
// migration or purge lands once and both engines keep answering alike.

// preconditionFailure is the ABORTED error for preconditions[i] given the item's current
// version (exists false: the item is absent or expired), or nil when the precondition holds.
func preconditionFailure(i int, absent bool, want int64, cur int64, exists bool) error {
	switch {
	case absent && exists:
		return apierr.New(apierr.ErrAborted, "preconditions[%d]: item exists (version %d) but absent was required", i, cur)
	case absent:
		return nil
	case !exists:
		return apierr.New(apierr.ErrAborted, "preconditions[%d]: item does not exist but version %d was required", i, want)
	case cur != want:
		return apierr.New(apierr.ErrAborted, "preconditions[%d]: item has version %d but version %d was required", i, cur, want)
	}
	return nil
}

// decodePreconditionFailure turns the facts an engine reports from inside its write (index,
// absent as 0/1, wanted version, then the current version when the item exists, separated by
// spaces) into preconditionFailure's error. PostgreSQL raises them as the error message so the
// write stays one round trip while the wording stays here.
func decodePreconditionFailure(facts string) error {
	f := strings.Fields(facts)
	n := make([]int64, len(f))
	for i, s := range f {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			n = nil
			break
		}
		n[i] = v
	}
	if len(n) != 3 && len(n) != 4 {
		return fmt.Errorf("check preconditions: malformed failure report %q", facts)
	}
	var cur int64
	if len(n) == 4 {
		cur = n[3]
	}
	err := preconditionFailure(int(n[0]), n[1] != 0, n[2], cur, len(n) == 4)
	if err == nil {
		return fmt.Errorf("check preconditions: failure reported for a precondition that holds (%q)", facts)
	}
	return err
}

// errTokenReused answers a retry whose idempotency token was first used by a different request.
var errTokenReused = apierr.Invalid("idempotency_token", "already used in this namespace for a different request")

// replayedPut checks that a Put's stored result fits the request that replays its token: a
// token first used by a Delete stores no versions.
func replayedPut(r PutRequest, stored []int64) ([]int64, error) {
	if len(stored) != len(r.Items) {
		return nil, errTokenReused
	}
	return stored, nil
}

// getBinding ties a Get page token to the record and the keys it was minted for.
func getBinding(ns, id string, keys [][]byte) []byte {
	fields := append([][]byte{[]byte(ns), []byte(id)}, keys...)
	return binding('g', fields...)
}

// scanBinding ties a Scan page token to the namespace and id prefix it was minted for.
func scanBinding(ns, idPrefix string) []byte {
	return binding('s', []byte(ns), []byte(idPrefix))
}

// openPosition opens a client's page token; a bad one is the client's error.
func (t pageTokens) openPosition(bind []byte, token string) (position, error) {
	pos, err := t.open(bind, token)
	if err != nil {
		return position{}, apierr.New(apierr.ErrInvalidArgument, "%v", err)
	}
	return pos, nil
}

// page assembles one Get or Scan page from rows read in page order, one more than the page
// holds, so that a full page knows whether another follows.
type page struct {
	pageSize int
	maxBytes int64
	records  []Record
	count    int
	used     int64
	more     bool
	// slab holds the items of all records in page order; each record's Items is a part of it,
	// the last record's always its tail, so that a page costs a few allocations, not one a row.
	slab []Item
}

// pageStartCap bounds what newPage reserves up front (about 120 bytes a row): pages are
// usually full, and growing a page's arrays while the GC runs costs write barriers per item.
const pageStartCap = 1024

// newPage returns an empty page with room reserved for its first rows.
func newPage(pageSize int, maxBytes int64) *page {
	n := min(pageSize, pageStartCap)
	return &page{pageSize: pageSize, maxBytes: maxBytes, records: make([]Record, 0, n), slab: make([]Item, 0, n)}
}

// add puts an item of record id in the page; it returns false, and marks that more rows
// follow, when the page is full. The byte budget is soft, as documented: an item is in the
// page when the items before it stay under max_bytes, so a page always holds at least one.
// valueBytes is the value's stored size: the value itself may be read later.
func (p *page) add(id []byte, it Item, valueBytes int64) bool {
	if p.count == p.pageSize || p.used >= p.maxBytes {
		p.more = true
		return false
	}
	p.used += int64(len(it.Key)) + valueBytes
	if len(p.records) == 0 || p.records[len(p.records)-1].ID != string(id) {
		p.records = append(p.records, Record{ID: string(id)})
	}
	rec := &p.records[len(p.records)-1]
	// The record's items are the slab's tail; if append moves the slab, the records before
	// keep the old array, which still holds their items.
	start := len(p.slab) - len(rec.Items)
	p.slab = append(p.slab, it)
	rec.Items = p.slab[start:len(p.slab):len(p.slab)]
	p.count++
	return true
}

// truncate drops the item at (record, item) and everything after it: the next page starts there.
func (p *page) truncate(record, item int) {
	if item == 0 {
		p.records = p.records[:record]
	} else {
		p.records[record].Items = p.records[record].Items[:item]
		p.records = p.records[:record+1]
	}
	p.more = true
}

// items is a Get page: the one record's items.
func (p *page) items() []Item {
	if len(p.records) == 0 {
		return nil
	}
	return p.records[0].Items
}

// next mints the token of the page after this one, or "" when this is the last. A Get's
// position is the last key alone (withID false), a Scan's the last (id, key).
func (p *page) next(t pageTokens, bind []byte, withID bool) string {
	if !p.more || len(p.records) == 0 {
		return ""
	}
	last := p.records[len(p.records)-1]
	pos := position{key: last.Items[len(last.Items)-1].Key}
	if withID {
		pos.id = []byte(last.ID)
	}
	return t.mint(bind, pos)
}

// migrationTx is the part of an open migration transaction the runner needs, as functions so
// that each engine adapts its own transaction type in a line or two.
type migrationTx struct {
	exec func(ctx context.Context, query string, args ...any) error
	// scan reads the first row of an argument-free query into dest.
	scan func(ctx context.Context, query string, dest ...any) error
	// noRows is the engine's error for a query that found no row.
	noRows error
}

// schemaPlan is one engine's schema: its steps and how it spells the bookkeeping statements.
type schemaPlan struct {
	// steps are applied in order, each once. Never edit a released step: append a new one.
	steps []string
	// versionTable creates the table of applied steps if it is missing.
	versionTable string
	// recordStep inserts an applied step; args returns its arguments for step v.
	recordStep string
	args       func(v int) []any
	// noun names the database in errors ("database", "dev database"); engine qualifies the
	// step ("", "sqlite "); upgrade says what to do about a schema newer than the plugin.
	noun, engine, upgrade string
}

// migrateSchema applies the plan's missing steps in tx and returns the page token key stored
// in the database, generating it on the first run. The caller begins and commits tx, and keeps
// other processes out while it runs.
func migrateSchema(ctx context.Context, tx migrationTx, plan schemaPlan) ([]byte, error) {
	if err := tx.exec(ctx, plan.versionTable); err != nil {
		return nil, fmt.Errorf("create schema version table: %w", err)
	}
	var current int
	if err := tx.scan(ctx, `SELECT coalesce(max(version), 0) FROM prism_kv_schema`, &current); err != nil {
		return nil, fmt.Errorf("read schema version: %w", err)
	}
	if current > len(plan.steps) {
		return nil, fmt.Errorf("%s schema version %d is newer than this plugin's %d: %s", plan.noun, current, len(plan.steps), plan.upgrade)
	}
	for v := current + 1; v <= len(plan.steps); v++ {
		if err := tx.exec(ctx, plan.steps[v-1]); err != nil {
			return nil, fmt.Errorf("apply %sschema migration %d: %w", plan.engine, v, err)
		}
		if err := tx.exec(ctx, plan.recordStep, plan.args(v)...); err != nil {
			return nil, fmt.Errorf("record %sschema migration %d: %w", plan.engine, v, err)
		}
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate page token key: %w", err)
	}
	if err := tx.exec(ctx, `INSERT INTO prism_kv_settings (name, value) VALUES ('page_token_key', $1) ON CONFLICT (name) DO NOTHING`, key); err != nil {
		return nil, fmt.Errorf("store page token key: %w", err)
	}
	if err := tx.scan(ctx, `SELECT value FROM prism_kv_settings WHERE name = 'page_token_key'`, &key); err != nil {
		if errors.Is(err, tx.noRows) {
			return nil, errors.New("page token key missing after migration")
		}
		return nil, fmt.Errorf("read page token key: %w", err)
	}
	return key, nil
}

// purgeTarget is a table whose rows expire: expired items, or idempotency tokens past their
// retention. Each engine turns it into one bounded DELETE.
type purgeTarget struct {
	op    string   // names the purge in errors
	table string   // the table purged
	key   []string // its primary key columns
}

var (
	purgeItems  = purgeTarget{op: "purge expired items", table: "prism_kv_items", key: []string{"namespace", "id", "key"}}
	purgeTokens = purgeTarget{op: "purge idempotency tokens", table: "prism_kv_idempotency", key: []string{"namespace", "token"}}
)

// canceled reports the caller's cancellation or deadline as such, whatever the engine made of
// it, so that a client that gave up is not told the backend is down.
func canceled(ctx context.Context, op string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("%s: %w", op, ctxErr)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}
