// Package keyvaluetest is the wire-level conformance suite for prism.keyvalue.v1.KeyValueService.
// It talks only gRPC, so it runs against any KeyValue plugin (PostgreSQL, the embedded dev-mode
// backend, ...): Run(t, conn, Options{}) with a connection to a serving plugin.
//
// The three suites share one shape: Run holds a table of named cases, each a function testXxx(e
// env) of one env (its *testing.T, the suite, and its own namespace where the API has them),
// run as a parallel subtest.
package keyvaluetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/prism-gateway/plugins/conformance/advertised"
	keyvaluev1 "github.com/prism-gateway/plugins/gen/prism/keyvalue/v1"
)

// Limits are the plugin's configured limits; the suite probes both sides of each. Zero fields
// are read from the limits the plugin advertises in GetInfo.
type Limits struct {
	MaxIDBytes         int
	MaxKeyBytes        int
	MaxValueBytes      int
	MaxItemsPerRequest int
	DefaultPageSize    int
	MaxPageSize        int
}

// Options tune a run.
type Options struct {
	// NamespacePrefix starts every namespace the suite creates; each test gets a fresh random
	// namespace under it, so runs can repeat and run in parallel against one backend.
	// Default "kvt".
	NamespacePrefix string
	// Limits the plugin runs with.
	Limits Limits
	// ShortTTL is the TTL used to watch items expire; default 1s. ExpiryWait bounds how long
	// the suite waits for an expired item to disappear; default 10s.
	ShortTTL   time.Duration
	ExpiryWait time.Duration
	// Writers and Rounds size the precondition race test; defaults 8 and 20.
	Writers int
	Rounds  int
}

func (o Options) withDefaults() Options {
	if o.NamespacePrefix == "" {
		o.NamespacePrefix = "kvt"
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.Writers, 8)
	def(&o.Rounds, 20)
	if o.ShortTTL == 0 {
		o.ShortTTL = time.Second
	}
	if o.ExpiryWait == 0 {
		o.ExpiryWait = 10 * time.Second
	}
	return o
}

// Run runs the whole suite as parallel subtests of t.
func Run(t *testing.T, conn grpc.ClientConnInterface, opts Options) {
	t.Helper()
	l := &opts.Limits
	advertised.Fill(t, conn, map[string]*int{
		"max_id_bytes": &l.MaxIDBytes, "max_key_bytes": &l.MaxKeyBytes, "max_value_bytes": &l.MaxValueBytes,
		"max_items_per_request": &l.MaxItemsPerRequest, "default_page_size": &l.DefaultPageSize,
		"max_page_size": &l.MaxPageSize,
	})
	s := &suite{client: keyvaluev1.NewKeyValueServiceClient(conn), opts: opts.withDefaults()}
	tests := []testCase{
		{"put then get returns items sorted by key with versions", testPutGet},
		{"get of a missing record or keys is not an error", testGetMissing},
		{"keys are arbitrary bytes and SQL-looking text is stored literally", testBinaryKeys},
		{"versions increase on every write and after re-creation", testVersions},
		{"version precondition gates the write", testVersionPrecondition},
		{"absent precondition gates the write", testAbsentPrecondition},
		{"a failed precondition writes nothing", testPreconditionAtomic},
		{"delete removes keys or the whole record and counts live items", testDelete},
		{"delete preconditions gate the delete", testDeletePrecondition},
		{"a retried put with the same token returns the first result and writes nothing", testPutIdempotency},
		{"a retried delete with the same token returns the first result and deletes nothing", testDeleteIdempotency},
		{"idempotency tokens are per namespace and per request", testTokenScope},
		{"items with a ttl report expire_time and vanish when expired", testTTL},
		{"get pages through a record in key order", testGetPagination},
		{"scan pages through records in id and key order", testScanPagination},
		{"scan pages are bounded by bytes", testScanMaxBytes},
		{"scan with an id prefix returns only matching records", testScanPrefix},
		{"modified or misused page tokens are rejected", testTamperedTokens},
		{"a full scan sees every stable item exactly once while others write", testScanConcurrentWrites},
		{"concurrent writers racing with preconditions: exactly one wins each round", testRace},
		{"values at the size limit round-trip", testLargeValue},
		{"invalid requests are rejected naming the field and limit", testInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(env{t: t, s: s, ns: s.namespace(t)})
		})
	}
}

type testCase struct {
	name string
	run  func(e env)
}

// env is what one conformance case runs with: its own *testing.T, the suite and a fresh
// namespace. Cases take it as one value so they read as test bodies (failures point at their own
// lines), not as helpers.
type env struct {
	t  *testing.T
	s  *suite
	ns string
}

type suite struct {
	client keyvaluev1.KeyValueServiceClient
	opts   Options
}

// namespace returns a fresh namespace for one test.
func (s *suite) namespace(tb testing.TB) string {
	tb.Helper()
	var b [6]byte
	_, err := rand.Read(b[:])
	require.NoError(tb, err)
	return s.opts.NamespacePrefix + "_" + hex.EncodeToString(b[:])
}

func ctxOf(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func items(kv ...string) []*keyvaluev1.PutItem {
	out := make([]*keyvaluev1.PutItem, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, &keyvaluev1.PutItem{Key: []byte(kv[i]), Value: []byte(kv[i+1])})
	}
	return out
}

func (s *suite) put(t *testing.T, ns, id string, its ...*keyvaluev1.PutItem) *keyvaluev1.PutResponse {
	t.Helper()
	resp, err := s.client.Put(ctxOf(t), &keyvaluev1.PutRequest{Namespace: ns, Id: id, Items: its})
	require.NoError(t, err)
	require.Len(t, resp.GetVersions(), len(its))
	return resp
}

func (s *suite) getAll(t *testing.T, ns, id string, keys ...[]byte) map[string]*keyvaluev1.Item {
	t.Helper()
	resp, err := s.client.Get(ctxOf(t), &keyvaluev1.GetRequest{Namespace: ns, Id: id, Keys: keys})
	require.NoError(t, err)
	require.Empty(t, resp.GetNextPageToken())
	out := map[string]*keyvaluev1.Item{}
	for _, it := range resp.GetItems() {
		out[string(it.GetKey())] = it
	}
	return out
}

func requireCode(t *testing.T, err error, want codes.Code, msgAndArgs ...any) *status.Status {
	t.Helper()
	require.Error(t, err, msgAndArgs...)
	st, ok := status.FromError(err)
	require.True(t, ok, "not a gRPC status: %v", err)
	require.Equal(t, want, st.Code(), "status: %v", err)
	return st
}

func ttl(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

func requireSortedKeys(t *testing.T, its []*keyvaluev1.Item) {
	t.Helper()
	for i := 1; i < len(its); i++ {
		require.Negative(t, bytes.Compare(its[i-1].GetKey(), its[i].GetKey()), "keys out of order at %d", i)
	}
}
