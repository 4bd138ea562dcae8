package postgreskv_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/prism-gateway/plugins/postgres/postgreskv"
)

// newTestStore migrates a fresh database and returns a store and its pool.
func newTestStore(tb testing.TB, maxConns int32) (*postgreskv.Store, *pgxpool.Pool) {
	tb.Helper()
	cfg, err := pgxpool.ParseConfig(newDatabase(tb))
	require.NoError(tb, err)
	cfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(tb, err)
	tb.Cleanup(pool.Close)
	key, err := postgreskv.Migrate(context.Background(), pool)
	require.NoError(tb, err)
	return postgreskv.NewStore(pool, key, func() time.Duration { return time.Hour }), pool
}

// scanned is one item as a full scan returned it.
type scanned struct {
	id    string
	item  postgreskv.Item
	bytes int64
}

// scanPages runs a full scan and returns its pages.
func scanPages(t *testing.T, st *postgreskv.Store, r postgreskv.ScanRequest) [][]scanned {
	t.Helper()
	var pages [][]scanned
	for {
		records, next, err := st.Scan(t.Context(), r)
		require.NoError(t, err)
		var page []scanned
		for _, rec := range records {
			require.NotEmpty(t, rec.Items, "a record in a page has items")
			for _, it := range rec.Items {
				page = append(page, scanned{id: rec.ID, item: it, bytes: int64(len(it.Key) + len(it.Value))})
			}
		}
		pages = append(pages, page)
		if next == "" {
			return pages
		}
		require.NotEmpty(t, page, "a page with a next token holds items")
		require.Less(t, len(pages), 10000, "the scan ends")
		r.PageToken = next
	}
}

// expectedPages cuts items (in (id, key) order) into pages by the documented rule: at most
// pageSize items, and an item is in the page while the items before it stay under maxBytes.
func expectedPages(items []scanned, pageSize int, maxBytes int64) [][]scanned {
	pages := [][]scanned{}
	for len(items) > 0 {
		n := 0
		var used int64
		for n < len(items) && n < pageSize && used < maxBytes {
			used += items[n].bytes
			n++
		}
		pages = append(pages, items[:n])
		items = items[n:]
	}
	if len(pages) == 0 {
		pages = append(pages, nil)
	}
	return pages
}

func TestScanPagesFollowTheDocumentedLimits(t *testing.T) {
	st, _ := newTestStore(t, 4)
	ctx := t.Context()
	// Sizes on both sides of every inline bound the store may use (8 KiB and max_bytes/page_size).
	sizes := []int{0, 10, 1000, 5 << 10, 9 << 10, 40 << 10, 300 << 10, 3}
	var all []scanned
	for r := range 12 {
		id := fmt.Sprintf("rec-%02d", r)
		var items []postgreskv.PutItem
		for k := range 1 + r%5 {
			v := bytes.Repeat([]byte{byte('a' + r)}, sizes[(r+k)%len(sizes)])
			items = append(items, postgreskv.PutItem{Key: []byte("key-" + strconv.Itoa(k)), Value: v})
		}
		versions, err := st.Put(ctx, postgreskv.PutRequest{Namespace: "scan", ID: id, Items: items})
		require.NoError(t, err)
		for i, it := range items {
			all = append(all, scanned{id: id, item: postgreskv.Item{Key: it.Key, Value: it.Value, Version: versions[i]}, bytes: int64(len(it.Key) + len(it.Value))})
		}
	}
	// Another namespace's items never show.
	_, err := st.Put(ctx, postgreskv.PutRequest{Namespace: "other", ID: "rec-00", Items: []postgreskv.PutItem{{Key: []byte("x"), Value: []byte("y")}}})
	require.NoError(t, err)

	cases := []struct {
		name     string
		prefix   string
		pageSize int
		maxBytes int64
	}{
		{"pages cut by item count", "", 5, 8 << 20},
		{"pages cut by bytes, large values read in a second statement", "", 100, 50 << 10},
		{"one item per page with a one-byte budget", "", 1000, 1},
		{"small pages and a small budget", "", 3, 20 << 10},
		{"the whole namespace in one page", "", 1000, 8 << 20},
		{"an id prefix", "rec-1", 2, 100 << 10},
		{"a prefix that matches nothing", "zzz", 10, 1 << 20},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var want []scanned
			for _, s := range all {
				if strings.HasPrefix(s.id, tc.prefix) {
					want = append(want, s)
				}
			}
			got := scanPages(t, st, postgreskv.ScanRequest{Namespace: "scan", IDPrefix: tc.prefix, PageSize: tc.pageSize, MaxBytes: tc.maxBytes})
			exp := expectedPages(want, tc.pageSize, tc.maxBytes)
			require.Len(t, got, len(exp), "pages")
			for i := range exp {
				require.Len(t, got[i], len(exp[i]), "items in page %d", i)
				for j := range exp[i] {
					g, e := got[i][j], exp[i][j]
					assert.Equal(t, e.id, g.id)
					assert.Equal(t, e.item.Key, g.item.Key)
					assert.Equal(t, e.item.Version, g.item.Version)
					assert.Len(t, g.item.Value, len(e.item.Value), "value of %s/%s", e.id, e.item.Key)
					assert.True(t, bytes.Equal(e.item.Value, g.item.Value), "value of %s/%s", e.id, e.item.Key)
					assert.NotNil(t, g.item.Value, "an empty value is empty, not absent")
				}
			}
		})
	}
}

// getPages reads a whole record page by page.
func getPages(t *testing.T, st *postgreskv.Store, r postgreskv.GetRequest) [][]scanned {
	t.Helper()
	var pages [][]scanned
	for {
		items, next, err := st.Get(t.Context(), r)
		require.NoError(t, err)
		var page []scanned
		for _, it := range items {
			page = append(page, scanned{id: r.ID, item: it, bytes: int64(len(it.Key) + len(it.Value))})
		}
		pages = append(pages, page)
		if next == "" {
			return pages
		}
		require.NotEmpty(t, page, "a page with a next token holds items")
		require.Less(t, len(pages), 10000, "the record ends")
		r.PageToken = next
	}
}

func TestGetPagesFollowTheDocumentedLimits(t *testing.T) {
	st, _ := newTestStore(t, 4)
	sizes := []int{0, 10, 1000, 5 << 10, 9 << 10, 40 << 10, 300 << 10, 3}
	var items []postgreskv.PutItem
	var keys [][]byte
	for k := range 40 {
		key := []byte(fmt.Sprintf("key-%02d", k))
		items = append(items, postgreskv.PutItem{Key: key, Value: bytes.Repeat([]byte{byte('a' + k%26)}, sizes[k%len(sizes)])})
		if k%3 == 0 {
			keys = append(keys, key)
		}
	}
	versions, err := st.Put(t.Context(), postgreskv.PutRequest{Namespace: "get", ID: "record", Items: items})
	require.NoError(t, err)
	cases := []struct {
		name     string
		keys     [][]byte
		pageSize int
		maxBytes int64
	}{
		{"pages cut by item count", nil, 7, 8 << 20},
		{"pages cut by bytes, large values read in a second statement", nil, 100, 60 << 10},
		{"one item per page with a one-byte budget", nil, 1000, 1},
		{"named keys over several pages", keys, 4, 30 << 10},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var want []scanned
			for i, it := range items {
				named := tc.keys == nil
				for _, k := range tc.keys {
					named = named || bytes.Equal(k, it.Key)
				}
				if named {
					want = append(want, scanned{id: "record", item: postgreskv.Item{Key: it.Key, Value: it.Value, Version: versions[i]}, bytes: int64(len(it.Key) + len(it.Value))})
				}
			}
			got := getPages(t, st, postgreskv.GetRequest{Namespace: "get", ID: "record", Keys: tc.keys, PageSize: tc.pageSize, MaxBytes: tc.maxBytes})
			exp := expectedPages(want, tc.pageSize, tc.maxBytes)
			require.Len(t, got, len(exp), "pages")
			for i := range exp {
				require.Len(t, got[i], len(exp[i]), "items in page %d", i)
				for j := range exp[i] {
					assert.Equal(t, exp[i][j].item, got[i][j].item)
				}
			}
		})
	}
}

func TestScanOfLargeValuesWhileTheyAreRewritten(t *testing.T) {
	st, _ := newTestStore(t, 8)
	ctx := t.Context()
	// 24 KiB values are above the inline bound of max(200 KiB / 10, 8 KiB): each page reads them
	// in its second statement, while four writers rewrite them.
	const records, keys, size, writers = 6, 3, 24 << 10, 4
	put := func(id, key int, fill byte) {
		_, err := st.Put(ctx, postgreskv.PutRequest{Namespace: "busy", ID: fmt.Sprintf("rec-%02d", id),
			Items: []postgreskv.PutItem{{Key: []byte("k" + strconv.Itoa(key)), Value: bytes.Repeat([]byte{fill}, size)}}})
		require.NoError(t, err)
	}
	for r := range records {
		for k := range keys {
			put(r, k, 'a')
		}
	}
	stop := make(chan struct{})
	var writeCount atomic.Int64
	var writes sync.WaitGroup
	for w := range writers {
		writes.Go(func() {
			for n := w; ; n += writers {
				select {
				case <-stop:
					return
				default:
				}
				put(n%records, n%keys, byte('b'+n%20))
				writeCount.Add(1)
			}
		})
	}
	extraPages, scans := 0, 0
	// Without writes a scan has 2 pages: 9 items fit the byte budget (8 × 24 KiB is under 200 KiB).
	const fullPages = 2
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		pages := scanPages(t, st, postgreskv.ScanRequest{Namespace: "busy", PageSize: 10, MaxBytes: 200 << 10})
		seen := map[string]int{}
		assert.GreaterOrEqual(t, len(pages), fullPages)
		extraPages += len(pages) - fullPages
		for _, page := range pages {
			for _, s := range page {
				seen[s.id+"/"+string(s.item.Key)]++
				require.Len(t, s.item.Value, size)
				assert.Equal(t, size, bytes.Count(s.item.Value, s.item.Value[:1]), "a value is one write's, never mixed")
			}
		}
		assert.Len(t, seen, records*keys, "every item is in the scan")
		for k, n := range seen {
			assert.Equal(t, 1, n, "%s appears exactly once", k)
		}
		scans++
	}
	close(stop)
	writes.Wait()
	t.Logf("%d full scans during %d rewrites; %d extra pages from pages that ended early at a value rewritten between their two statements",
		scans, writeCount.Load(), extraPages)
}

// oldScanSQL is the window-function query Scan used before, kept to measure against in the same
// run (first page, no prefix).
const oldScanSQL = `SELECT id, key, fits, CASE WHEN fits THEN value END, version, expire_time FROM (
	SELECT id, key, value, version, expire_time,
		sum(sz) OVER w - sz < $3 AS fits,
		sum(sz) OVER w - sz - coalesce(lag(sz) OVER w, 0) < $3 AS keep
	FROM (SELECT id, key, value, version, expire_time, octet_length(key) + octet_length(value) AS sz
		FROM prism_kv_items WHERE namespace = $1 AND (expire_time IS NULL OR expire_time > now()) ORDER BY id, key LIMIT $2) b
	WINDOW w AS (ORDER BY id, key)) p
WHERE keep ORDER BY id, key`

// oldScan is the previous Scan's first page: the window query and its row loop.
func oldScan(ctx context.Context, pool *pgxpool.Pool, ns string, pageSize int, maxBytes int64) (int, error) {
	rows, err := pool.Query(ctx, oldScanSQL, ns, pageSize+1, maxBytes)
	if err != nil {
		return 0, err
	}
	var records []postgreskv.Record
	count := 0
	var id []byte
	var it postgreskv.Item
	var fits bool
	var exp *time.Time
	_, err = pgx.ForEachRow(rows, []any{&id, &it.Key, &fits, &it.Value, &it.Version, &exp}, func() error {
		if !fits || count == pageSize {
			return nil
		}
		if exp != nil {
			it.ExpireTime = *exp
		}
		if len(records) == 0 || records[len(records)-1].ID != string(id) {
			records = append(records, postgreskv.Record{ID: string(id)})
		}
		rec := &records[len(records)-1]
		rec.Items = append(rec.Items, it)
		count++
		it, id = postgreskv.Item{}, nil
		return nil
	})
	return count, err
}

// directScan is the plain keyset query with no byte budget at all, as a client of PostgreSQL
// would write it.
func directScan(ctx context.Context, pool *pgxpool.Pool, ns string, pageSize int) (int, error) {
	rows, err := pool.Query(ctx, `SELECT id, key, value, version, expire_time FROM prism_kv_items
	WHERE namespace = $1 AND (expire_time IS NULL OR expire_time > now()) ORDER BY id, key LIMIT $2`, ns, pageSize)
	if err != nil {
		return 0, err
	}
	n := 0
	var id, key, value []byte
	var version int64
	var exp *time.Time
	_, err = pgx.ForEachRow(rows, []any{&id, &key, &value, &version, &exp}, func() error { n++; return nil })
	return n, err
}

// backendCPU is the CPU time the PostgreSQL backend process pid has used (/proc schedstat), or
// false when the server is not on this machine.
func backendCPU(pid int) (time.Duration, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/schedstat")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	ns, err := strconv.ParseInt(f[0], 10, 64)
	return time.Duration(ns), err == nil
}

// processCPU is the user+system CPU this process used.
func processCPU(tb testing.TB) time.Duration {
	tb.Helper()
	var ru syscall.Rusage
	require.NoError(tb, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkScan compares, in one run, a Scan page through the store (plain keyset query, byte
// budget counted in Go) with the window-function query it replaced and with the plain query
// alone: 1000 items of 1 KiB in one 1000-item page, and 64 KiB values cut by a 2 MiB budget.
// pg-cpu-µs/op is the PostgreSQL backend's CPU per page (one pooled connection),
// client-cpu-µs/op this process's.
func BenchmarkScan(b *testing.B) {
	st, pool := newTestStore(b, 1)
	ctx := context.Background()
	load := func(ns string, n, size int) {
		for r := range n / 10 {
			items := make([]postgreskv.PutItem, 10)
			for k := range items {
				items[k] = postgreskv.PutItem{Key: []byte("key-" + strconv.Itoa(k)), Value: bytes.Repeat([]byte("v"), size)}
			}
			_, err := st.Put(ctx, postgreskv.PutRequest{Namespace: ns, ID: fmt.Sprintf("rec-%04d", r), Items: items})
			require.NoError(b, err)
		}
	}
	load("small", 1000, 1<<10)
	load("large", 200, 64<<10)
	var pid int
	require.NoError(b, pool.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid))
	_, err := pool.Exec(ctx, `ANALYZE prism_kv_items`)
	require.NoError(b, err)

	cases := []struct {
		ns       string
		pageSize int
		maxBytes int64
		want     int
	}{
		{"small", 1000, 8 << 20, 1000},
		{"large", 100, 2 << 20, 32},
	}
	for _, tc := range cases {
		methods := []struct {
			name string
			run  func() (int, error)
		}{
			{"window", func() (int, error) { return oldScan(ctx, pool, tc.ns, tc.pageSize, tc.maxBytes) }},
			{"go", func() (int, error) {
				records, _, err := st.Scan(ctx, postgreskv.ScanRequest{Namespace: tc.ns, PageSize: tc.pageSize, MaxBytes: tc.maxBytes})
				n := 0
				for _, r := range records {
					n += len(r.Items)
				}
				return n, err
			}},
			{"direct", func() (int, error) { return directScan(ctx, pool, tc.ns, tc.want) }},
		}
		for _, m := range methods {
			b.Run(fmt.Sprintf("ns=%s/page=%d/method=%s", tc.ns, tc.pageSize, m.name), func(b *testing.B) {
				cpu0, ok := backendCPU(pid)
				self0 := processCPU(b)
				for b.Loop() {
					n, err := m.run()
					if err != nil {
						b.Fatal(err)
					}
					if n != tc.want {
						b.Fatalf("page of %d items, want %d", n, tc.want)
					}
				}
				b.ReportMetric(float64(processCPU(b)-self0)/float64(time.Microsecond)/float64(b.N), "client-cpu-µs/op")
				if cpu1, ok1 := backendCPU(pid); ok && ok1 {
					b.ReportMetric(float64(cpu1-cpu0)/float64(time.Microsecond)/float64(b.N), "pg-cpu-µs/op")
				}
			})
		}
	}
}

// oldGetSQL is the window-function query a whole-record Get used before (first page).
const oldGetSQL = `SELECT key, fits, CASE WHEN fits THEN value END, version, expire_time FROM (
	SELECT key, value, version, expire_time,
		sum(sz) OVER w - sz < $4 AS fits,
		sum(sz) OVER w - sz - coalesce(lag(sz) OVER w, 0) < $4 AS keep
	FROM (SELECT key, value, version, expire_time, octet_length(key) + octet_length(value) AS sz
		FROM prism_kv_items WHERE namespace = $1 AND id = $2 AND (expire_time IS NULL OR expire_time > now()) ORDER BY key LIMIT $3) b
	WINDOW w AS (ORDER BY key)) p
WHERE keep ORDER BY key`

// oldGet is the previous Get's first page of a whole record: the window query and its row loop.
func oldGet(ctx context.Context, pool *pgxpool.Pool, ns, id string, pageSize int, maxBytes int64) (int, error) {
	rows, err := pool.Query(ctx, oldGetSQL, ns, []byte(id), pageSize+1, maxBytes)
	if err != nil {
		return 0, err
	}
	var items []postgreskv.Item
	var it postgreskv.Item
	var fits bool
	var exp *time.Time
	_, err = pgx.ForEachRow(rows, []any{&it.Key, &fits, &it.Value, &it.Version, &exp}, func() error {
		if !fits || len(items) == pageSize {
			return nil
		}
		if exp != nil {
			it.ExpireTime = *exp
		}
		items = append(items, it)
		it = postgreskv.Item{}
		return nil
	})
	return len(items), err
}

// BenchmarkGet compares, in one run, a whole-record Get of 100 items of 1 KiB (the default
// page) through the store with the window-function query it replaced. pg-cpu-µs/op is the
// PostgreSQL backend's CPU per call, client-cpu-µs/op this process's.
func BenchmarkGet(b *testing.B) {
	st, pool := newTestStore(b, 1)
	ctx := context.Background()
	items := make([]postgreskv.PutItem, 100)
	for k := range items {
		items[k] = postgreskv.PutItem{Key: []byte(fmt.Sprintf("key-%03d", k)), Value: bytes.Repeat([]byte("v"), 1<<10)}
	}
	_, err := st.Put(ctx, postgreskv.PutRequest{Namespace: "get", ID: "record", Items: items})
	require.NoError(b, err)
	var pid int
	require.NoError(b, pool.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid))
	const pageSize, maxBytes = 100, 2 << 20
	methods := []struct {
		name string
		run  func() (int, error)
	}{
		{"window", func() (int, error) { return oldGet(ctx, pool, "get", "record", pageSize, maxBytes) }},
		{"go", func() (int, error) {
			got, _, err := st.Get(ctx, postgreskv.GetRequest{Namespace: "get", ID: "record", PageSize: pageSize, MaxBytes: maxBytes})
			return len(got), err
		}},
	}
	for _, m := range methods {
		b.Run("items=100x1KiB/method="+m.name, func(b *testing.B) {
			cpu0, ok := backendCPU(pid)
			self0 := processCPU(b)
			for b.Loop() {
				n, err := m.run()
				if err != nil {
					b.Fatal(err)
				}
				if n != 100 {
					b.Fatalf("got %d items", n)
				}
			}
			b.ReportMetric(float64(processCPU(b)-self0)/float64(time.Microsecond)/float64(b.N), "client-cpu-µs/op")
			if cpu1, ok1 := backendCPU(pid); ok && ok1 {
				b.ReportMetric(float64(cpu1-cpu0)/float64(time.Microsecond)/float64(b.N), "pg-cpu-µs/op")
			}
		})
	}
}

// TestPagesReadAlikeInEveryQueryMode reads the same pages through pgx's default query mode,
// whose rows come in binary and are decoded by the store itself, and through the simple
// protocol, whose text rows pgx decodes: both must return the same items.
func TestPagesReadAlikeInEveryQueryMode(t *testing.T) {
	url := newDatabase(t)
	stores := map[string]*postgreskv.Store{}
	for mode, m := range map[string]pgx.QueryExecMode{"cache_statement": pgx.QueryExecModeCacheStatement, "simple_protocol": pgx.QueryExecModeSimpleProtocol} {
		cfg, err := pgxpool.ParseConfig(url)
		require.NoError(t, err)
		cfg.ConnConfig.DefaultQueryExecMode = m
		pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
		require.NoError(t, err)
		t.Cleanup(pool.Close)
		key, err := postgreskv.Migrate(t.Context(), pool)
		require.NoError(t, err)
		stores[mode] = postgreskv.NewStore(pool, key, func() time.Duration { return time.Hour })
	}
	st := stores["cache_statement"]
	_, err := st.Put(t.Context(), postgreskv.PutRequest{Namespace: "ns", ID: "a", Items: []postgreskv.PutItem{
		{Key: []byte("expiring"), Value: bytes.Repeat([]byte("e"), 1<<10), TTL: time.Hour},
		{Key: []byte("empty"), Value: nil},
		{Key: []byte("large"), Value: bytes.Repeat([]byte("l"), 200<<10)}, // read in the second statement
	}})
	require.NoError(t, err)
	_, err = st.Put(t.Context(), postgreskv.PutRequest{Namespace: "ns", ID: "b", Items: []postgreskv.PutItem{{Key: []byte("k"), Value: []byte("v")}}})
	require.NoError(t, err)

	type row struct {
		id, key, value string
		version        int64
		expireMicros   int64
	}
	read := func(st *postgreskv.Store) (scan, get []row) {
		records, _, err := st.Scan(t.Context(), postgreskv.ScanRequest{Namespace: "ns", PageSize: 10, MaxBytes: 1 << 20})
		require.NoError(t, err)
		for _, rec := range records {
			for _, it := range rec.Items {
				require.NotNil(t, it.Value, "a value is never nil, even an empty one")
				scan = append(scan, row{rec.ID, string(it.Key), string(it.Value), it.Version, it.ExpireTime.UnixMicro()})
			}
		}
		items, _, err := st.Get(t.Context(), postgreskv.GetRequest{Namespace: "ns", ID: "a", PageSize: 10, MaxBytes: 1 << 20})
		require.NoError(t, err)
		for _, it := range items {
			get = append(get, row{"a", string(it.Key), string(it.Value), it.Version, it.ExpireTime.UnixMicro()})
		}
		return scan, get
	}
	binScan, binGet := read(stores["cache_statement"])
	textScan, textGet := read(stores["simple_protocol"])
	require.Len(t, binScan, 4)
	require.Len(t, binGet, 3)
	assert.Equal(t, textScan, binScan, "scan page")
	assert.Equal(t, textGet, binGet, "get page")
	assert.Greater(t, binScan[1].expireMicros, time.Now().UnixMicro(), "the expiring item keeps its expire time")
	assert.Equal(t, time.Time{}.UnixMicro(), binScan[0].expireMicros, "an item without a TTL has no expire time")
	t.Logf("%d scanned and %d got items read alike in both modes", len(binScan), len(binGet))
}
