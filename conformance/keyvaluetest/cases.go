package keyvaluetest

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/prism-gateway/plugins/core/apierr"
	keyvaluev1 "github.com/prism-gateway/plugins/gen/prism/keyvalue/v1"
)

func testPutGet(e env) {
	t, s, ns := e.t, e.s, e.ns
	resp := s.put(t, ns, "user-1", items("b", "2", "a", "1", "c", "")...)
	for i, want := range []string{"b", "a", "c"} {
		assert.Equal(t, want, string(resp.GetVersions()[i].GetKey()), "versions follow request order")
		assert.Positive(t, resp.GetVersions()[i].GetVersion())
	}
	got, err := s.client.Get(ctxOf(t), &keyvaluev1.GetRequest{Namespace: ns, Id: "user-1"})
	require.NoError(t, err)
	require.True(t, got.GetFound())
	require.Len(t, got.GetItems(), 3)
	for i, want := range []string{"a", "b", "c"} {
		it := got.GetItems()[i]
		assert.Equal(t, want, string(it.GetKey()))
		assert.Nil(t, it.GetExpireTime(), "no ttl, no expire_time")
	}
	assert.Equal(t, "1", string(got.GetItems()[0].GetValue()))
	assert.Empty(t, got.GetItems()[2].GetValue())
	assert.Equal(t, resp.GetVersions()[1].GetVersion(), got.GetItems()[0].GetVersion())

	sub := s.getAll(t, ns, "user-1", []byte("c"), []byte("a"), []byte("zz"))
	assert.Len(t, sub, 2)
	assert.Contains(t, sub, "a")
	assert.Contains(t, sub, "c")

	// Records are separate; namespaces are separate.
	assert.Empty(t, s.getAll(t, ns, "user-2"))
	assert.Empty(t, s.getAll(t, s.namespace(t), "user-1"))
}

func testGetMissing(e env) {
	t, s, ns := e.t, e.s, e.ns
	got, err := s.client.Get(ctxOf(t), &keyvaluev1.GetRequest{Namespace: ns, Id: "nobody"})
	require.NoError(t, err)
	assert.False(t, got.GetFound())
	assert.Empty(t, got.GetItems())
	assert.Empty(t, got.GetNextPageToken())

	s.put(t, ns, "r", items("a", "1")...)
	got, err = s.client.Get(ctxOf(t), &keyvaluev1.GetRequest{Namespace: ns, Id: "r", Keys: [][]byte{[]byte("x")}})
	require.NoError(t, err)
	assert.False(t, got.GetFound(), "found is about matching items")
}

func testBinaryKeys(e env) {
	t, s, ns := e.t, e.s, e.ns
	keys := [][]byte{{0xff}, {0x00}, {0x00, 0x00}, {0x7f, 0xff}, []byte("'; DROP TABLE prism_kv_items; --"), []byte("%_*\\")}
	var its []*keyvaluev1.PutItem
	for _, k := range keys {
		its = append(its, &keyvaluev1.PutItem{Key: k, Value: append([]byte("v:"), k...)})
	}
	id := "weird id ' \" ; -- ✓"
	s.put(t, ns, id, its...)
	got, err := s.client.Get(ctxOf(t), &keyvaluev1.GetRequest{Namespace: ns, Id: id})
	require.NoError(t, err)
	require.Len(t, got.GetItems(), len(keys))
	requireSortedKeys(t, got.GetItems())
	assert.Equal(t, []byte{0x00}, got.GetItems()[0].GetKey())
	assert.Equal(t, []byte{0xff}, got.GetItems()[len(keys)-1].GetKey())
	for _, it := range got.GetItems() {
		assert.Equal(t, append([]byte("v:"), it.GetKey()...), it.GetValue())
	}
	// The table is still there and the record scans back under its literal id.
	sc, err := s.client.Scan(ctxOf(t), &keyvaluev1.ScanRequest{Namespace: ns})
	require.NoError(t, err)
	require.Len(t, sc.GetRecords(), 1)
	assert.Equal(t, id, sc.GetRecords()[0].GetId())
}

func testVersions(e env) {
	t, s, ns := e.t, e.s, e.ns
	v1 := s.put(t, ns, "r", items("k", "1")...).GetVersions()[0].GetVersion()
	v2 := s.put(t, ns, "r", items("k", "2")...).GetVersions()[0].GetVersion()
	assert.Greater(t, v2, v1)
	v3 := s.put(t, ns, "r", items("k", "2", "other", "x")...).GetVersions()[0].GetVersion()
	assert.Greater(t, v3, v2, "rewriting the same value is still a write")
	_, err := s.client.Delete(ctxOf(t), &keyvaluev1.DeleteRequest{Namespace: ns, Id: "r", Keys: [][]byte{[]byte("k")}})
	require.NoError(t, err)
	v4 := s.put(t, ns, "r", items("k", "again")...).GetVersions()[0].GetVersion()
	assert.Greater(t, v4, v3, "a re-created item never reuses an old version")
	assert.Equal(t, v4, s.getAll(t, ns, "r")["k"].GetVersion())
}

func vpc(key string, version int64) *keyvaluev1.Precondition {
	return &keyvaluev1.Precondition{Key: []byte(key), Condition: &keyvaluev1.Precondition_Version{Version: version}}
}

func apc(key string) *keyvaluev1.Precondition {
	return &keyvaluev1.Precondition{Key: []byte(key), Condition: &keyvaluev1.Precondition_Absent{Absent: true}}
}

func testVersionPrecondition(e env) {
	t, s, ns := e.t, e.s, e.ns
	v := s.put(t, ns, "r", items("k", "1")...).GetVersions()[0].GetVersion()
	_, err := s.client.Put(ctxOf(t), &keyvaluev1.PutRequest{Namespace: ns, Id: "r", Items: items("k", "2"), Preconditions: []*keyvaluev1.Precondition{vpc("k", v+1000)}})
	st := requireCode(t, err, codes.Aborted)
	assert.Contains(t, st.Message(), "preconditions[0]")
	assert.Equal(t, "1", string(s.getAll(t, ns, "r")["k"].GetValue()))

	resp, err := s.client.Put(ctxOf(t), &keyvaluev1.PutRequest{Namespace: ns, Id: "r", Items: items("k", "2"), Preconditions: []*keyvaluev1.Precondition{vpc("k", v)}})
	require.NoError(t, err)
	assert.Greater(t, resp.GetVersions()[0].GetVersion(), v)

	// The old version is spent.
	_, err = s.client.Put(ctxOf(t), &keyvaluev1.PutRequest{Namespace: ns, Id: "r", Items: items("k", "3"), Preconditions: []*keyvaluev1.Precondition{vpc("k", v)}})
	requireCode(t, err, codes.Aborted)
	// A version precondition on a missing item fails.
	_, err = s.client.Put(ctxOf(t), &keyvaluev1.PutRequest{Namespace: ns, Id: "r", Items: items("new", "x"), Preconditions: []*keyvaluev1.Precondition{vpc("new", 1)}})
	requireCode(t, err, codes.Aborted)
	// A precondition may check an item other than the ones written.
	_, err = s.client.Put(ctxOf(t), &keyvaluev1.PutRequest{Namespace: ns, Id: "r", Items: items("other", "x"), Preconditions: []*keyvaluev1.Precondition{vpc("k", resp.GetVersions()[0].GetVersion())}})
	require.NoError(t, err)
}

func testAbsentPrecondition(e env) {
	t, s, ns := e.t, e.s, e.ns
	create := &keyvaluev1.PutRequest{Namespace: ns, Id: "r", Items: items("k", "first"), Preconditions: []*keyvaluev1.Precondition{apc("k")}}
	_, err := s.client.Put(ctxOf(t), create)
	require.NoError(t, err)
	create.Items = items("k", "second")
	_, err = s.client.Put(ctxOf(t), create)
	st := requireCode(t, err, codes.Aborted)
	assert.Contains(t, st.Message(), "preconditions[0]")
	assert.Equal(t, "first", string(s.getAll(t, ns, "r")["k"].GetValue()))

	_, err = s.client.Delete(ctxOf(t), &keyvaluev1.DeleteRequest{Namespace: ns, Id: "r"})
	require.NoError(t, err)
	_, err = s.client.Put(ctxOf(t), create)
	require.NoError(t, err, "absent holds again after a delete")
}

func testPreconditionAtomic(e env) {
	t, s, ns := e.t, e.s, e.ns
	v := s.put(t, ns, "r", items("a", "1", "b", "1")...).GetVersions()
	_, err := s.client.Put(ctxOf(t), &keyvaluev1.PutRequest{
		Namespace: ns, Id: "r", Items: items("a", "2", "b", "2", "c", "2"),
		Preconditions: []*keyvaluev1.Precondition{vpc("a", v[0].GetVersion()), vpc("b", v[1].GetVersion()+1)},
	})
	st := requireCode(t, err, codes.Aborted)
	assert.Contains(t, st.Message(), "preconditions[1]")
	got := s.getAll(t, ns, "r")
	assert.Len(t, got, 2, "c was not written")
	assert.Equal(t, "1", string(got["a"].GetValue()), "a was not written")
	assert.Equal(t, v[0].GetVersion(), got["a"].GetVersion())
}

func testDelete(e env) {
	t, s, ns := e.t, e.s, e.ns
	s.put(t, ns, "r", items("a", "1", "b", "2", "c", "3")...)
	s.put(t, ns, "keep", items("a", "1")...)
	resp, err := s.client.Delete(ctxOf(t), &keyvaluev1.DeleteRequest{Namespace: ns, Id: "r", Keys: [][]byte{[]byte("a"), []byte("zz")}})
	require.NoError(t, err)
	assert.Equal(t, int64(1), resp.GetDeletedCount())
	assert.Len(t, s.getAll(t, ns, "r"), 2)

	resp, err = s.client.Delete(ctxOf(t), &keyvaluev1.DeleteRequest{Namespace: ns, Id: "r"})
	require.NoError(t, err)
	assert.Equal(t, int64(2), resp.GetDeletedCount())
	assert.Empty(t, s.getAll(t, ns, "r"))
	assert.Len(t, s.getAll(t, ns, "keep"), 1, "other records untouched")

	resp, err = s.client.Delete(ctxOf(t), &keyvaluev1.DeleteRequest{Namespace: ns, Id: "r"})
	require.NoError(t, err, "deleting nothing is not an error")
	assert.Zero(t, resp.GetDeletedCount())
}

func testDeletePrecondition(e env) {
	t, s, ns := e.t, e.s, e.ns
	v := s.put(t, ns, "r", items("a", "1", "b", "2")...).GetVersions()
	_, err := s.client.Delete(ctxOf(t), &keyvaluev1.DeleteRequest{Namespace: ns, Id: "r", Preconditions: []*keyvaluev1.Precondition{vpc("a", v[0].GetVersion()+1)}})
	requireCode(t, err, codes.Aborted)
	assert.Len(t, s.getAll(t, ns, "r"), 2)
	_, err = s.client.Delete(ctxOf(t), &keyvaluev1.DeleteRequest{Namespace: ns, Id: "r", Preconditions: []*keyvaluev1.Precondition{apc("b")}})
	requireCode(t, err, codes.Aborted)
	resp, err := s.client.Delete(ctxOf(t), &keyvaluev1.DeleteRequest{Namespace: ns, Id: "r", Keys: [][]byte{[]byte("b")}, Preconditions: []*keyvaluev1.Precondition{vpc("a", v[0].GetVersion()), apc("zz")}})
	require.NoError(t, err)
	assert.Equal(t, int64(1), resp.GetDeletedCount())
}

func testPutIdempotency(e env) {
	t, s, ns := e.t, e.s, e.ns
	req := &keyvaluev1.PutRequest{Namespace: ns, Id: "r", Items: items("a", "1", "b", "1"), IdempotencyToken: "tok-1"}
	first, err := s.client.Put(ctxOf(t), req)
	require.NoError(t, err)
	// Someone else writes after the first call; the retry must not overwrite it.
	later := s.put(t, ns, "r", items("a", "other")...).GetVersions()[0].GetVersion()
	retry, err := s.client.Put(ctxOf(t), req)
	require.NoError(t, err)
	require.Len(t, retry.GetVersions(), 2)
	for i := range first.GetVersions() {
		assert.Equal(t, first.GetVersions()[i].GetVersion(), retry.GetVersions()[i].GetVersion())
		assert.Equal(t, first.GetVersions()[i].GetKey(), retry.GetVersions()[i].GetKey())
	}
	got := s.getAll(t, ns, "r")
	assert.Equal(t, "other", string(got["a"].GetValue()))
	assert.Equal(t, later, got["a"].GetVersion())

	// Concurrent duplicates (hedged requests): all get the same result, one write happens.
	req2 := &keyvaluev1.PutRequest{Namespace: ns, Id: "r2", Items: items("k", "v"), IdempotencyToken: "tok-2"}
	results := make([]int64, 6)
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() {
			resp, err := s.client.Put(ctxOf(t), req2)
			if assert.NoError(t, err) {
				results[i] = resp.GetVersions()[0].GetVersion()
			}
		})
	}
	wg.Wait()
	for _, v := range results {
		assert.Equal(t, results[0], v)
	}
	assert.Equal(t, results[0], s.getAll(t, ns, "r2")["k"].GetVersion())
}

func testDeleteIdempotency(e env) {
	t, s, ns := e.t, e.s, e.ns
	s.put(t, ns, "r", items("a", "1", "b", "2")...)
	req := &keyvaluev1.DeleteRequest{Namespace: ns, Id: "r", Keys: [][]byte{[]byte("a"), []byte("b")}, IdempotencyToken: "del-1"}
	first, err := s.client.Delete(ctxOf(t), req)
	require.NoError(t, err)
	assert.Equal(t, int64(2), first.GetDeletedCount())
	s.put(t, ns, "r", items("a", "back")...)
	retry, err := s.client.Delete(ctxOf(t), req)
	require.NoError(t, err)
	assert.Equal(t, int64(2), retry.GetDeletedCount(), "the first result")
	assert.Equal(t, "back", string(s.getAll(t, ns, "r")["a"].GetValue()), "the retry deleted nothing")

	// Concurrent duplicates of a whole-record delete all report the first call's count.
	s.put(t, ns, "r2", items("a", "1", "b", "2", "c", "3")...)
	counts := make([]int64, 5)
	var wg sync.WaitGroup
	for i := range counts {
		wg.Go(func() {
			resp, err := s.client.Delete(ctxOf(t), &keyvaluev1.DeleteRequest{Namespace: ns, Id: "r2", IdempotencyToken: "del-2"})
			if assert.NoError(t, err) {
				counts[i] = resp.GetDeletedCount()
			}
		})
	}
	wg.Wait()
	for _, n := range counts {
		assert.Equal(t, int64(3), n)
	}
}

func testTokenScope(e env) {
	t, s, ns := e.t, e.s, e.ns
	req := &keyvaluev1.PutRequest{Namespace: ns, Id: "r", Items: items("a", "1"), IdempotencyToken: "shared"}
	_, err := s.client.Put(ctxOf(t), req)
	require.NoError(t, err)
	other := s.namespace(t)
	req.Namespace = other
	_, err = s.client.Put(ctxOf(t), req)
	require.NoError(t, err)
	assert.Len(t, s.getAll(t, other, "r"), 1, "the same token in another namespace is a new call")

	// Reusing a token for a different request is a client bug, not a retry.
	_, err = s.client.Put(ctxOf(t), &keyvaluev1.PutRequest{Namespace: ns, Id: "r", Items: items("a", "different"), IdempotencyToken: "shared"})
	st := requireCode(t, err, codes.InvalidArgument)
	assert.Contains(t, st.Message(), "idempotency_token")
	assert.Equal(t, "1", string(s.getAll(t, ns, "r")["a"].GetValue()))

	// A failed call does not spend its token.
	v := s.getAll(t, ns, "r")["a"].GetVersion()
	failing := &keyvaluev1.PutRequest{Namespace: ns, Id: "r", Items: items("a", "2"), IdempotencyToken: "after-fail", Preconditions: []*keyvaluev1.Precondition{vpc("a", v+1)}}
	_, err = s.client.Put(ctxOf(t), failing)
	requireCode(t, err, codes.Aborted)
	failing.Preconditions = []*keyvaluev1.Precondition{vpc("a", v)}
	failing.Items = items("a", "2")
	_, err = s.client.Put(ctxOf(t), failing)
	require.NoError(t, err, "a token whose call failed can be used again")
}

func testTTL(e env) {
	t, s, ns := e.t, e.s, e.ns
	short := s.opts.ShortTTL
	before := time.Now()
	s.put(t, ns, "r",
		&keyvaluev1.PutItem{Key: []byte("short"), Value: []byte("x"), Ttl: ttl(short)},
		&keyvaluev1.PutItem{Key: []byte("long"), Value: []byte("y"), Ttl: ttl(time.Hour)},
		&keyvaluev1.PutItem{Key: []byte("forever"), Value: []byte("z")},
	)
	got := s.getAll(t, ns, "r")
	require.Len(t, got, 3)
	exp := got["long"].GetExpireTime()
	require.NotNil(t, exp)
	// Server and test clocks may differ a little; an hour-long TTL leaves room for that.
	assert.WithinDuration(t, before.Add(time.Hour), exp.AsTime(), time.Minute)
	assert.Nil(t, got["forever"].GetExpireTime())
	require.NotNil(t, got["short"].GetExpireTime())

	require.Eventually(t, func() bool {
		return len(s.getAll(t, ns, "r")) == 2
	}, s.opts.ExpiryWait, 50*time.Millisecond, "the short-lived item disappears")
	got = s.getAll(t, ns, "r")
	assert.NotContains(t, got, "short")
	sc, err := s.client.Scan(ctxOf(t), &keyvaluev1.ScanRequest{Namespace: ns})
	require.NoError(t, err)
	require.Len(t, sc.GetRecords(), 1)
	for _, it := range sc.GetRecords()[0].GetItems() {
		assert.NotEqual(t, "short", string(it.GetKey()), "scans skip expired items too")
		if string(it.GetKey()) == "long" {
			assert.NotNil(t, it.GetExpireTime(), "scans report expire_time")
		}
	}

	// An expired item counts as absent and is not counted by Delete.
	_, err = s.client.Put(ctxOf(t), &keyvaluev1.PutRequest{Namespace: ns, Id: "r", Items: items("short2", "x"), Preconditions: []*keyvaluev1.Precondition{apc("short")}})
	require.NoError(t, err)
	resp, err := s.client.Delete(ctxOf(t), &keyvaluev1.DeleteRequest{Namespace: ns, Id: "r", Keys: [][]byte{[]byte("short")}})
	require.NoError(t, err)
	assert.Zero(t, resp.GetDeletedCount())

	// The longest ttl is kept exactly, not cut short or turned into "never expires".
	s.put(t, ns, "r", &keyvaluev1.PutItem{Key: []byte("longest"), Value: []byte("w"), Ttl: ttl(apierr.MaxTTL)})
	longest := s.getAll(t, ns, "r")["longest"].GetExpireTime()
	require.NotNil(t, longest)
	assert.WithinDuration(t, before.Add(apierr.MaxTTL), longest.AsTime(), 10*time.Minute)

	// Writing without a ttl clears it.
	s.put(t, ns, "r", items("long", "y2")...)
	assert.Nil(t, s.getAll(t, ns, "r")["long"].GetExpireTime())
}

func testGetPagination(e env) {
	t, s, ns := e.t, e.s, e.ns
	var its []*keyvaluev1.PutItem
	for i := range 25 {
		its = append(its, &keyvaluev1.PutItem{Key: fmt.Appendf(nil, "k%03d", i), Value: []byte("v")})
	}
	s.put(t, ns, "r", its...)
	var all []*keyvaluev1.Item
	token := ""
	pages := 0
	for {
		resp, err := s.client.Get(ctxOf(t), &keyvaluev1.GetRequest{Namespace: ns, Id: "r", PageSize: 10, PageToken: token})
		require.NoError(t, err)
		require.LessOrEqual(t, len(resp.GetItems()), 10)
		all = append(all, resp.GetItems()...)
		pages++
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
		require.Less(t, pages, 10)
	}
	assert.Equal(t, 3, pages)
	require.Len(t, all, 25)
	requireSortedKeys(t, all)

	// Pages of a key subset.
	keys := [][]byte{[]byte("k003"), []byte("k001"), []byte("k020"), []byte("nope")}
	first, err := s.client.Get(ctxOf(t), &keyvaluev1.GetRequest{Namespace: ns, Id: "r", Keys: keys, PageSize: 2})
	require.NoError(t, err)
	require.Len(t, first.GetItems(), 2)
	require.NotEmpty(t, first.GetNextPageToken())
	second, err := s.client.Get(ctxOf(t), &keyvaluev1.GetRequest{Namespace: ns, Id: "r", Keys: keys, PageSize: 2, PageToken: first.GetNextPageToken()})
	require.NoError(t, err)
	require.Len(t, second.GetItems(), 1)
	assert.Equal(t, "k020", string(second.GetItems()[0].GetKey()))
	assert.Empty(t, second.GetNextPageToken())

	// The default page size applies when page_size is zero.
	if s.opts.Limits.DefaultPageSize < 25 {
		resp, err := s.client.Get(ctxOf(t), &keyvaluev1.GetRequest{Namespace: ns, Id: "r"})
		require.NoError(t, err)
		assert.Len(t, resp.GetItems(), s.opts.Limits.DefaultPageSize)
	}
}

// scanAll follows a scan to its end and returns every (id, key) → item it saw, failing on a
// repeat or on order going backwards.
func (s *suite) scanAll(t *testing.T, req *keyvaluev1.ScanRequest, seen func(id string, it *keyvaluev1.Item)) int {
	t.Helper()
	var lastID string
	var lastKey []byte
	pages := 0
	for {
		resp, err := s.client.Scan(ctxOf(t), req)
		require.NoError(t, err)
		pages++
		n := 0
		for _, rec := range resp.GetRecords() {
			require.NotEmpty(t, rec.GetItems(), "records carry items")
			for _, it := range rec.GetItems() {
				n++
				if lastKey != nil {
					require.True(t, rec.GetId() > lastID || (rec.GetId() == lastID && bytes.Compare(it.GetKey(), lastKey) > 0),
						"scan order: (%q,%q) after (%q,%q)", rec.GetId(), it.GetKey(), lastID, lastKey)
				}
				lastID, lastKey = rec.GetId(), it.GetKey()
				seen(rec.GetId(), it)
			}
		}
		if req.GetPageSize() > 0 {
			require.LessOrEqual(t, n, int(req.GetPageSize()))
		}
		if resp.GetNextPageToken() == "" {
			return pages
		}
		require.NotZero(t, n, "a page with a next token holds items")
		req.PageToken = resp.GetNextPageToken()
		require.Less(t, pages, 100000)
	}
}

func testScanPagination(e env) {
	t, s, ns := e.t, e.s, e.ns
	want := map[string]bool{}
	for r := range 7 {
		id := fmt.Sprintf("rec-%02d", r)
		var its []*keyvaluev1.PutItem
		for k := range r + 1 {
			key := fmt.Sprintf("key-%02d", k)
			its = append(its, &keyvaluev1.PutItem{Key: []byte(key), Value: []byte(id + "/" + key)})
			want[id+"/"+key] = true
		}
		s.put(t, ns, id, its...)
	}
	got := map[string]bool{}
	pages := s.scanAll(t, &keyvaluev1.ScanRequest{Namespace: ns, PageSize: 5}, func(id string, it *keyvaluev1.Item) {
		k := id + "/" + string(it.GetKey())
		require.False(t, got[k], "seen twice: %s", k)
		got[k] = true
		assert.Equal(t, k, string(it.GetValue()))
	})
	assert.Equal(t, want, got)
	assert.GreaterOrEqual(t, pages, 6, "28 items in pages of 5")

	// Everything on one page when it fits.
	resp, err := s.client.Scan(ctxOf(t), &keyvaluev1.ScanRequest{Namespace: ns, PageSize: 100})
	require.NoError(t, err)
	assert.Len(t, resp.GetRecords(), 7)
	assert.Empty(t, resp.GetNextPageToken())

	// An empty namespace scans to nothing.
	resp, err = s.client.Scan(ctxOf(t), &keyvaluev1.ScanRequest{Namespace: s.namespace(t)})
	require.NoError(t, err)
	assert.Empty(t, resp.GetRecords())
	assert.Empty(t, resp.GetNextPageToken())
}

func testScanMaxBytes(e env) {
	t, s, ns := e.t, e.s, e.ns
	value := bytes.Repeat([]byte("x"), 1000)
	var its []*keyvaluev1.PutItem
	for k := range 10 {
		its = append(its, &keyvaluev1.PutItem{Key: fmt.Appendf(nil, "k%d", k), Value: value})
	}
	s.put(t, ns, "big", its...)
	resp, err := s.client.Scan(ctxOf(t), &keyvaluev1.ScanRequest{Namespace: ns, MaxBytes: 2500})
	require.NoError(t, err)
	require.Len(t, resp.GetRecords(), 1)
	n := len(resp.GetRecords()[0].GetItems())
	assert.GreaterOrEqual(t, n, 2)
	assert.LessOrEqual(t, n, 3, "a soft cap: at most one item crosses it")
	assert.NotEmpty(t, resp.GetNextPageToken())

	// A page always holds at least one item, even if it alone is over the cap.
	count := 0
	s.scanAll(t, &keyvaluev1.ScanRequest{Namespace: ns, MaxBytes: 1}, func(id string, it *keyvaluev1.Item) {
		assert.Equal(t, "big", id)
		assert.Equal(t, value, it.GetValue())
		count++
	})
	assert.Equal(t, 10, count)
}

func testScanPrefix(e env) {
	t, s, ns := e.t, e.s, e.ns
	for _, id := range []string{"a", "ab", "abc", "abd", "ac", "b", "ab\u00ff", "ab\U0010ffff"} {
		s.put(t, ns, id, items("k", id)...)
	}
	var ids []string
	s.scanAll(t, &keyvaluev1.ScanRequest{Namespace: ns, IdPrefix: "ab", PageSize: 2}, func(id string, _ *keyvaluev1.Item) {
		ids = append(ids, id)
	})
	assert.Equal(t, []string{"ab", "abc", "abd", "ab\u00ff", "ab\U0010ffff"}, ids)
}

func testTamperedTokens(e env) {
	t, s, ns := e.t, e.s, e.ns
	var its []*keyvaluev1.PutItem
	for k := range 5 {
		its = append(its, &keyvaluev1.PutItem{Key: fmt.Appendf(nil, "k%d", k), Value: []byte("v")})
	}
	s.put(t, ns, "r", its...)
	s.put(t, ns, "r2", its...)
	scan, err := s.client.Scan(ctxOf(t), &keyvaluev1.ScanRequest{Namespace: ns, PageSize: 2})
	require.NoError(t, err)
	scanToken := scan.GetNextPageToken()
	require.NotEmpty(t, scanToken)
	get, err := s.client.Get(ctxOf(t), &keyvaluev1.GetRequest{Namespace: ns, Id: "r", PageSize: 2})
	require.NoError(t, err)
	getToken := get.GetNextPageToken()
	require.NotEmpty(t, getToken)

	flip := func(tok string, i int) string {
		b := []byte(tok)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	cases := []struct {
		name string
		call func() error
	}{
		{"scan token with a changed first character", func() error {
			_, err := s.client.Scan(ctxOf(t), &keyvaluev1.ScanRequest{Namespace: ns, PageSize: 2, PageToken: flip(scanToken, 0)})
			return err
		}},
		{"scan token with a changed middle character", func() error {
			_, err := s.client.Scan(ctxOf(t), &keyvaluev1.ScanRequest{Namespace: ns, PageSize: 2, PageToken: flip(scanToken, len(scanToken)/2)})
			return err
		}},
		{"scan token with a changed last character", func() error {
			_, err := s.client.Scan(ctxOf(t), &keyvaluev1.ScanRequest{Namespace: ns, PageSize: 2, PageToken: flip(scanToken, len(scanToken)-1)})
			return err
		}},
		{"truncated scan token", func() error {
			_, err := s.client.Scan(ctxOf(t), &keyvaluev1.ScanRequest{Namespace: ns, PageSize: 2, PageToken: scanToken[:len(scanToken)-3]})
			return err
		}},
		{"garbage token", func() error {
			_, err := s.client.Scan(ctxOf(t), &keyvaluev1.ScanRequest{Namespace: ns, PageToken: "not a token!"})
			return err
		}},
		{"scan token used in another namespace", func() error {
			_, err := s.client.Scan(ctxOf(t), &keyvaluev1.ScanRequest{Namespace: s.namespace(t), PageSize: 2, PageToken: scanToken})
			return err
		}},
		{"scan token used with a different prefix", func() error {
			_, err := s.client.Scan(ctxOf(t), &keyvaluev1.ScanRequest{Namespace: ns, IdPrefix: "r2", PageSize: 2, PageToken: scanToken})
			return err
		}},
		{"get token used for another record", func() error {
			_, err := s.client.Get(ctxOf(t), &keyvaluev1.GetRequest{Namespace: ns, Id: "r2", PageSize: 2, PageToken: getToken})
			return err
		}},
		{"get token used as a scan token", func() error {
			_, err := s.client.Scan(ctxOf(t), &keyvaluev1.ScanRequest{Namespace: ns, PageSize: 2, PageToken: getToken})
			return err
		}},
		{"modified get token", func() error {
			_, err := s.client.Get(ctxOf(t), &keyvaluev1.GetRequest{Namespace: ns, Id: "r", PageSize: 2, PageToken: flip(getToken, len(getToken)/2)})
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := requireCode(t, tc.call(), codes.InvalidArgument)
			assert.Contains(t, st.Message(), "page_token")
		})
	}
	// The untouched tokens still work.
	_, err = s.client.Scan(ctxOf(t), &keyvaluev1.ScanRequest{Namespace: ns, PageSize: 2, PageToken: scanToken})
	require.NoError(t, err)
}

func testScanConcurrentWrites(e env) {
	t, s, ns := e.t, e.s, e.ns
	// Stable items exist before the scan starts and are only ever overwritten, never deleted.
	stable := map[string]bool{}
	for r := range 20 {
		id := fmt.Sprintf("r%02d", r)
		var its []*keyvaluev1.PutItem
		for k := range 5 {
			key := fmt.Sprintf("s%d", k)
			its = append(its, &keyvaluev1.PutItem{Key: []byte(key), Value: []byte("0")})
			stable[id+"/"+key] = true
		}
		s.put(t, ns, id, its...)
	}
	stop := make(chan struct{})
	var writes atomic.Int64
	var wg sync.WaitGroup
	writeErrs := make(chan error, 4)
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("r%02d", (i*7+w)%20)
				// Overwrite a stable item, add and delete transient items and records.
				_, err := s.client.Put(ctxOf(t), &keyvaluev1.PutRequest{Namespace: ns, Id: id, Items: []*keyvaluev1.PutItem{
					{Key: fmt.Appendf(nil, "s%d", i%5), Value: fmt.Appendf(nil, "%d", i)},
					{Key: fmt.Appendf(nil, "t%d-%d", w, i), Value: []byte("t")},
				}})
				if err == nil {
					_, err = s.client.Put(ctxOf(t), &keyvaluev1.PutRequest{Namespace: ns, Id: fmt.Sprintf("%s-x%d", id, w), Items: items("x", "x")})
				}
				if err == nil {
					_, err = s.client.Delete(ctxOf(t), &keyvaluev1.DeleteRequest{Namespace: ns, Id: id, Keys: [][]byte{fmt.Appendf(nil, "t%d-%d", w, i-1)}})
				}
				if err == nil {
					_, err = s.client.Delete(ctxOf(t), &keyvaluev1.DeleteRequest{Namespace: ns, Id: fmt.Sprintf("%s-x%d", id, w)})
				}
				if err != nil {
					writeErrs <- err
					return
				}
				writes.Add(1)
			}
		})
	}
	// Make sure the scan overlaps writing.
	require.Eventually(t, func() bool { return writes.Load() > 0 }, 10*time.Second, time.Millisecond)
	got := map[string]int{}
	s.scanAll(t, &keyvaluev1.ScanRequest{Namespace: ns, PageSize: 3}, func(id string, it *keyvaluev1.Item) {
		got[id+"/"+string(it.GetKey())]++
	})
	close(stop)
	wg.Wait()
	close(writeErrs)
	for err := range writeErrs {
		require.NoError(t, err, "a concurrent writer failed")
	}
	for k := range stable {
		assert.Equal(t, 1, got[k], "stable item %s seen once", k)
	}
	for k, n := range got {
		assert.Equal(t, 1, n, "item %s seen once", k)
	}
}

func testRace(e env) {
	t, s, ns := e.t, e.s, e.ns
	const id = "contended"
	var version int64 // 0: the item does not exist yet, so the race is on "absent"
	for round := range s.opts.Rounds {
		var wins atomic.Int64
		var winner atomic.Int64
		var wg sync.WaitGroup
		start := make(chan struct{})
		for w := range s.opts.Writers {
			wg.Go(func() {
				pc := apc("k")
				if version != 0 {
					pc = vpc("k", version)
				}
				<-start
				resp, err := s.client.Put(ctxOf(t), &keyvaluev1.PutRequest{
					Namespace: ns, Id: id, Items: items("k", fmt.Sprintf("round %d writer %d", round, w)),
					Preconditions: []*keyvaluev1.Precondition{pc},
				})
				if err == nil {
					wins.Add(1)
					winner.Store(resp.GetVersions()[0].GetVersion())
					return
				}
				assert.Equal(t, codes.Aborted, status.Code(err), "losers get ABORTED: %v", err)
			})
		}
		close(start)
		wg.Wait()
		require.Equal(t, int64(1), wins.Load(), "round %d: exactly one writer wins", round)
		got := s.getAll(t, ns, id)["k"]
		require.Equal(t, winner.Load(), got.GetVersion(), "round %d: the winner's write is the one stored", round)
		require.Greater(t, got.GetVersion(), version)
		version = got.GetVersion()
	}
}

func testLargeValue(e env) {
	t, s, ns := e.t, e.s, e.ns
	l := s.opts.Limits
	value := bytes.Repeat([]byte{0xab}, l.MaxValueBytes)
	key := bytes.Repeat([]byte{'k'}, l.MaxKeyBytes)
	id := strings.Repeat("i", l.MaxIDBytes)
	s.put(t, ns, id, &keyvaluev1.PutItem{Key: key, Value: value})
	got := s.getAll(t, ns, id)
	require.Len(t, got, 1)
	assert.True(t, bytes.Equal(value, got[string(key)].GetValue()))
}

func testInvalid(e env) {
	t, s, ns := e.t, e.s, e.ns
	l := s.opts.Limits
	one := items("k", "v")
	tooMany := make([]*keyvaluev1.PutItem, l.MaxItemsPerRequest+1)
	for i := range tooMany {
		tooMany[i] = &keyvaluev1.PutItem{Key: fmt.Appendf(nil, "k%d", i)}
	}
	type call func() error
	put := func(r *keyvaluev1.PutRequest) call {
		return func() error { _, err := s.client.Put(ctxOf(t), r); return err }
	}
	get := func(r *keyvaluev1.GetRequest) call {
		return func() error { _, err := s.client.Get(ctxOf(t), r); return err }
	}
	del := func(r *keyvaluev1.DeleteRequest) call {
		return func() error { _, err := s.client.Delete(ctxOf(t), r); return err }
	}
	scan := func(r *keyvaluev1.ScanRequest) call {
		return func() error { _, err := s.client.Scan(ctxOf(t), r); return err }
	}
	cases := []struct {
		name string
		call call
		want []string // fragments of the message
	}{
		{"missing namespace", put(&keyvaluev1.PutRequest{Id: "r", Items: one}), []string{"namespace"}},
		{"namespace with upper case", put(&keyvaluev1.PutRequest{Namespace: "Bad", Id: "r", Items: one}), []string{"namespace", "namespace: must match ", `, got "Bad"`}},
		{"namespace starting with a digit", get(&keyvaluev1.GetRequest{Namespace: "1abc", Id: "r"}), []string{"namespace"}},
		{"namespace of 65 characters", get(&keyvaluev1.GetRequest{Namespace: "a" + strings.Repeat("b", 64), Id: "r"}), []string{"namespace"}},
		{"namespace with SQL in it", scan(&keyvaluev1.ScanRequest{Namespace: "a'; drop table x; --"}), []string{"namespace"}},
		{"missing id", put(&keyvaluev1.PutRequest{Namespace: ns, Items: one}), []string{"id"}},
		{"id over the limit", put(&keyvaluev1.PutRequest{Namespace: ns, Id: strings.Repeat("i", l.MaxIDBytes+1), Items: one}), []string{"id", "max_id_bytes", fmt.Sprint(l.MaxIDBytes)}},
		{"put without items", put(&keyvaluev1.PutRequest{Namespace: ns, Id: "r"}), []string{"items"}},
		{"empty key", put(&keyvaluev1.PutRequest{Namespace: ns, Id: "r", Items: []*keyvaluev1.PutItem{{Key: nil, Value: []byte("v")}}}), []string{"items[0].key"}},
		{"key over the limit", put(&keyvaluev1.PutRequest{Namespace: ns, Id: "r", Items: []*keyvaluev1.PutItem{{Key: bytes.Repeat([]byte("k"), l.MaxKeyBytes+1)}}}), []string{"items[0].key", "max_key_bytes", fmt.Sprint(l.MaxKeyBytes),
			fmt.Sprintf("items[0].key: must be between 1 and %d bytes (limits.max_key_bytes), got %d", l.MaxKeyBytes, l.MaxKeyBytes+1)}},
		{"value over the limit", put(&keyvaluev1.PutRequest{Namespace: ns, Id: "r", Items: []*keyvaluev1.PutItem{{Key: []byte("a")}, {Key: []byte("k"), Value: make([]byte, l.MaxValueBytes+1)}}}), []string{"items[1].value", "max_value_bytes", fmt.Sprint(l.MaxValueBytes),
			fmt.Sprintf("items[1].value: must be at most %d bytes (limits.max_value_bytes), got %d", l.MaxValueBytes, l.MaxValueBytes+1)}},
		{"too many items", put(&keyvaluev1.PutRequest{Namespace: ns, Id: "r", Items: tooMany}), []string{"items", "max_items_per_request", fmt.Sprint(l.MaxItemsPerRequest),
			fmt.Sprintf("items: must be at most %d items (limits.max_items_per_request), got %d", l.MaxItemsPerRequest, len(tooMany))}},
		{"duplicate keys in one put", put(&keyvaluev1.PutRequest{Namespace: ns, Id: "r", Items: items("a", "1", "a", "2")}), []string{"items[1].key"}},
		{"negative ttl", put(&keyvaluev1.PutRequest{Namespace: ns, Id: "r", Items: []*keyvaluev1.PutItem{{Key: []byte("k"), Ttl: ttl(-time.Second)}}}), []string{"items[0].ttl"}},
		{"ttl beyond what an expiry can hold", put(&keyvaluev1.PutRequest{Namespace: ns, Id: "r", Items: []*keyvaluev1.PutItem{{Key: []byte("k"), Ttl: &durationpb.Duration{Seconds: 315576000000}}}}), []string{"items[0].ttl", "limits.max_ttl", "315576000000s"}},
		{"ttl just over the longest", put(&keyvaluev1.PutRequest{Namespace: ns, Id: "r", Items: []*keyvaluev1.PutItem{{Key: []byte("k"), Ttl: ttl(apierr.MaxTTL + time.Second)}}}), []string{"items[0].ttl", "limits.max_ttl"}},
		{"ttl with nanos out of range", put(&keyvaluev1.PutRequest{Namespace: ns, Id: "r", Items: []*keyvaluev1.PutItem{{Key: []byte("k"), Ttl: &durationpb.Duration{Seconds: 1, Nanos: -5}}}}), []string{"items[0].ttl", "same sign"}},
		{"precondition without a condition", put(&keyvaluev1.PutRequest{Namespace: ns, Id: "r", Items: one, Preconditions: []*keyvaluev1.Precondition{{Key: []byte("k")}}}), []string{"preconditions[0]"}},
		{"absent false is not a condition", put(&keyvaluev1.PutRequest{Namespace: ns, Id: "r", Items: one, Preconditions: []*keyvaluev1.Precondition{{Key: []byte("k"), Condition: &keyvaluev1.Precondition_Absent{}}}}), []string{"preconditions[0]"}},
		{"precondition with an empty key", del(&keyvaluev1.DeleteRequest{Namespace: ns, Id: "r", Preconditions: []*keyvaluev1.Precondition{apc("")}}), []string{"preconditions[0].key"}},
		{"get with an empty key", get(&keyvaluev1.GetRequest{Namespace: ns, Id: "r", Keys: [][]byte{[]byte("a"), {}}}), []string{"keys[1]"}},
		{"page size over the limit", get(&keyvaluev1.GetRequest{Namespace: ns, Id: "r", PageSize: int32(l.MaxPageSize + 1)}), []string{"page_size", "max_page_size", fmt.Sprint(l.MaxPageSize)}},
		{"negative page size", scan(&keyvaluev1.ScanRequest{Namespace: ns, PageSize: -1}), []string{"page_size"}},
		{"negative max bytes", scan(&keyvaluev1.ScanRequest{Namespace: ns, MaxBytes: -1}), []string{"max_bytes"}},
		{"delete with an id over the limit", del(&keyvaluev1.DeleteRequest{Namespace: ns, Id: strings.Repeat("i", l.MaxIDBytes+1)}), []string{"id"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := requireCode(t, tc.call(), codes.InvalidArgument)
			for _, w := range tc.want {
				assert.Contains(t, st.Message(), w)
			}
		})
	}
	// Nothing above reached storage.
	resp, err := s.client.Scan(ctxOf(t), &keyvaluev1.ScanRequest{Namespace: ns})
	require.NoError(t, err)
	assert.Empty(t, resp.GetRecords())
}
