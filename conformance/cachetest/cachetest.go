// Package cachetest is the wire-level conformance suite for prism.cache.v1.CacheService. It talks
// gRPC only, so it runs unchanged against every Cache plugin (Redis, Redis Cluster, an embedded
// dev backend); a Raw client lets it check that data written through the plugin is the
// data in the backend, and the reverse.
//
// The three suites share one shape: Run holds a table of named cases, each a function testXxx(e
// env) of one env (its *testing.T, the suite, and its own namespace where the API has them),
// run as a parallel subtest.
package cachetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/prism-gateway/plugins/conformance/advertised"
	"github.com/prism-gateway/plugins/core/apierr"
	cachev1 "github.com/prism-gateway/plugins/gen/prism/cache/v1"
)

// Options describe the plugin under test.
type Options struct {
	// Limits the plugin enforces; zero fields are read from the limits it advertises in GetInfo.
	Limits Limits
	// Raw reads and writes the backend directly, for the interop checks. Required: every backend,
	// the embedded dev one too, has a raw client, so the checks never vanish silently.
	Raw RawBackend
}

// Limits mirror the plugin's `limits` section, so the suite can probe each bound exactly.
type Limits struct {
	MaxKeyBytes    int
	MaxValueBytes  int
	MaxKeysPerCall int
}

// RawBackend reaches the backend without the plugin, at the place the plugin documents for a
// namespace and key (for Redis: the key <key_prefix><namespace>:<key>).
type RawBackend interface {
	// Get reads the stored value; found is false when the key does not exist.
	Get(ctx context.Context, namespace, key string) (value []byte, found bool, err error)
	// Set stores value with no expiry.
	Set(ctx context.Context, namespace, key string, value []byte) error
	// TTL returns the key's remaining time to live, 0 when it has none.
	TTL(ctx context.Context, namespace, key string) (time.Duration, error)
}

// Run runs the whole suite against a CacheService reachable through conn. Every subtest works in
// its own random namespace, so runs can repeat and run in parallel with others.
func Run(t *testing.T, conn grpc.ClientConnInterface, opts Options) {
	t.Helper()
	advertised.Fill(t, conn, map[string]*int{
		"max_key_bytes": &opts.Limits.MaxKeyBytes, "max_value_bytes": &opts.Limits.MaxValueBytes,
		"max_keys_per_call": &opts.Limits.MaxKeysPerCall,
	})
	s := &suite{client: cachev1.NewCacheServiceClient(conn), opts: opts}
	tests := []testCase{
		{"get of a missing key is found=false without ttl", testGetMissing},
		{"set then get returns the value", testSetGet},
		{"values are binary safe and may be empty", testBinaryValues},
		{"keys may hold any characters", testOddKeys},
		{"namespaces keep the same key apart", testNamespaceIsolation},
		{"set with ttl reports the remaining ttl", testSetTTL},
		{"set without ttl clears an old expiry", testSetClearsTTL},
		{"keep_ttl keeps the expiry of an existing key", testKeepTTL},
		{"if_absent writes only a missing key", testIfAbsent},
		{"if_present writes only an existing key", testIfPresent},
		{"a key expires after its ttl", testExpires},
		{"delete counts the keys that existed", testDeleteCounts},
		{"mget returns entries in request order", testMgetOrder},
		{"mget spans many keys", testMgetMany},
		{"mset gives each entry its own ttl", testMsetTTLs},
		{"mset lets the last of a repeated key win", testMsetRepeats},
		{"expire sets, changes and removes a ttl", testExpire},
		{"expire of a missing key is found=false", testExpireMissing},
		{"requests outside the limits are invalid", testLimits},
		{"values at the limits are accepted", testAtLimits},
		{"the longest ttl is kept as an expiry", testLongestTTL},
	}
	require.NotNil(t, opts.Raw, "cachetest.Options.Raw: the interop checks need a raw client of the backend")
	tests = append(tests,
		testCase{"a value set through the plugin is in the backend", testInteropPluginToBackend},
		testCase{"a value written to the backend is read through the plugin", testInteropBackendToPlugin},
	)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(env{t: t, s: s, ns: Namespace(t)})
		})
	}
}

// RunAddress dials a CacheService at addr (host:port, plaintext) and runs the suite against it,
// for plugins running outside the test process.
func RunAddress(t *testing.T, addr string, opts Options) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	Run(t, conn, opts)
}

// Namespace returns a fresh namespace that matches every plugin's namespace rule.
func Namespace(tb testing.TB) string {
	tb.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "ct-" + hex.EncodeToString(b)
}

type testCase struct {
	name string
	run  func(e env)
}

// env is what one conformance case runs with. Cases take it as one value so they read as test
// bodies (failures point at their own lines), not as helpers.
type env struct {
	t  *testing.T
	s  *suite
	ns string
}

type suite struct {
	client cachev1.CacheServiceClient
	opts   Options
}

func (s *suite) set(t *testing.T, ns, key string, value []byte, ttl time.Duration) {
	t.Helper()
	req := &cachev1.SetRequest{Namespace: ns, Key: key, Value: value}
	if ttl > 0 {
		req.Ttl = durationpb.New(ttl)
	}
	resp, err := s.client.Set(t.Context(), req)
	require.NoError(t, err)
	require.True(t, resp.GetStored())
}

func (s *suite) get(t *testing.T, ns, key string) *cachev1.GetResponse {
	t.Helper()
	resp, err := s.client.Get(t.Context(), &cachev1.GetRequest{Namespace: ns, Key: key})
	require.NoError(t, err)
	return resp
}

func testGetMissing(e env) {
	t, s, ns := e.t, e.s, e.ns
	resp := s.get(t, ns, "nothing-here")
	assert.False(t, resp.GetFound())
	assert.Empty(t, resp.GetValue())
	assert.Nil(t, resp.GetTtl())
}

func testSetGet(e env) {
	t, s, ns := e.t, e.s, e.ns
	s.set(t, ns, "k", []byte("v1"), 0)
	resp := s.get(t, ns, "k")
	assert.True(t, resp.GetFound())
	assert.Equal(t, []byte("v1"), resp.GetValue())
	assert.Nil(t, resp.GetTtl(), "a key set without ttl has none")

	s.set(t, ns, "k", []byte("v2"), 0)
	assert.Equal(t, []byte("v2"), s.get(t, ns, "k").GetValue(), "set overwrites")
}

func testBinaryValues(e env) {
	t, s, ns := e.t, e.s, e.ns
	bin := []byte{0, 1, 2, 0xff, '\r', '\n', 0, 'x'}
	s.set(t, ns, "bin", bin, 0)
	assert.Equal(t, bin, s.get(t, ns, "bin").GetValue())

	s.set(t, ns, "empty", nil, 0)
	resp := s.get(t, ns, "empty")
	assert.True(t, resp.GetFound(), "an empty value is still a value")
	assert.Empty(t, resp.GetValue())
}

func testOddKeys(e env) {
	t, s, ns := e.t, e.s, e.ns
	keys := []string{"a:b:c", "{tag}x", "with space", "ünïcødé", "*?[]", "a\x00b", strings.Repeat("k", 200)}
	for i, k := range keys {
		s.set(t, ns, k, []byte(strconv.Itoa(i)), 0)
	}
	for i, k := range keys {
		assert.Equal(t, []byte(strconv.Itoa(i)), s.get(t, ns, k).GetValue(), "key %q", k)
	}
}

func testNamespaceIsolation(e env) {
	t, s, ns := e.t, e.s, e.ns
	other := Namespace(t)
	s.set(t, ns, "same", []byte("one"), 0)
	s.set(t, other, "same", []byte("two"), 0)
	assert.Equal(t, []byte("one"), s.get(t, ns, "same").GetValue())
	assert.Equal(t, []byte("two"), s.get(t, other, "same").GetValue())
}

func testSetTTL(e env) {
	t, s, ns := e.t, e.s, e.ns
	s.set(t, ns, "k", []byte("v"), time.Hour)
	ttl := s.get(t, ns, "k").GetTtl()
	require.NotNil(t, ttl)
	assert.LessOrEqual(t, ttl.AsDuration(), time.Hour)
	assert.Greater(t, ttl.AsDuration(), 59*time.Minute)
}

func testSetClearsTTL(e env) {
	t, s, ns := e.t, e.s, e.ns
	s.set(t, ns, "k", []byte("v"), time.Hour)
	s.set(t, ns, "k", []byte("w"), 0)
	resp := s.get(t, ns, "k")
	assert.Equal(t, []byte("w"), resp.GetValue())
	assert.Nil(t, resp.GetTtl())
}

func testKeepTTL(e env) {
	t, s, ns := e.t, e.s, e.ns
	ctx := t.Context()
	s.set(t, ns, "k", []byte("v"), time.Hour)
	resp, err := s.client.Set(ctx, &cachev1.SetRequest{Namespace: ns, Key: "k", Value: []byte("w"), KeepTtl: true})
	require.NoError(t, err)
	assert.True(t, resp.GetStored())
	got := s.get(t, ns, "k")
	assert.Equal(t, []byte("w"), got.GetValue())
	require.NotNil(t, got.GetTtl(), "keep_ttl kept the expiry")
	assert.Greater(t, got.GetTtl().AsDuration(), 59*time.Minute)

	resp, err = s.client.Set(ctx, &cachev1.SetRequest{Namespace: ns, Key: "new", Value: []byte("n"), KeepTtl: true})
	require.NoError(t, err)
	assert.True(t, resp.GetStored())
	assert.Nil(t, s.get(t, ns, "new").GetTtl(), "a new key written with keep_ttl has no expiry")

	_, err = s.client.Set(ctx, &cachev1.SetRequest{Namespace: ns, Key: "k", KeepTtl: true, Ttl: durationpb.New(time.Minute)})
	requireInvalid(t, err, "ttl", "keep_ttl")
}

func testIfAbsent(e env) {
	t, s, ns := e.t, e.s, e.ns
	ctx := t.Context()
	resp, err := s.client.Set(ctx, &cachev1.SetRequest{Namespace: ns, Key: "k", Value: []byte("first"),
		Condition: cachev1.Condition_CONDITION_IF_ABSENT, Ttl: durationpb.New(time.Hour)})
	require.NoError(t, err)
	assert.True(t, resp.GetStored(), "missing key is written")
	assert.NotNil(t, s.get(t, ns, "k").GetTtl(), "the condition and the ttl apply together")

	resp, err = s.client.Set(ctx, &cachev1.SetRequest{Namespace: ns, Key: "k", Value: []byte("second"),
		Condition: cachev1.Condition_CONDITION_IF_ABSENT})
	require.NoError(t, err)
	assert.False(t, resp.GetStored(), "existing key is not written")
	got := s.get(t, ns, "k")
	assert.Equal(t, []byte("first"), got.GetValue())
	assert.NotNil(t, got.GetTtl(), "a refused write leaves the expiry alone")
}

func testIfPresent(e env) {
	t, s, ns := e.t, e.s, e.ns
	ctx := t.Context()
	resp, err := s.client.Set(ctx, &cachev1.SetRequest{Namespace: ns, Key: "k", Value: []byte("x"),
		Condition: cachev1.Condition_CONDITION_IF_PRESENT})
	require.NoError(t, err)
	assert.False(t, resp.GetStored(), "missing key is not written")
	assert.False(t, s.get(t, ns, "k").GetFound())

	s.set(t, ns, "k", []byte("old"), 0)
	resp, err = s.client.Set(ctx, &cachev1.SetRequest{Namespace: ns, Key: "k", Value: []byte("new"),
		Condition: cachev1.Condition_CONDITION_IF_PRESENT, Ttl: durationpb.New(time.Hour)})
	require.NoError(t, err)
	assert.True(t, resp.GetStored(), "existing key is written")
	got := s.get(t, ns, "k")
	assert.Equal(t, []byte("new"), got.GetValue())
	assert.NotNil(t, got.GetTtl())
}

func testExpires(e env) {
	t, s, ns := e.t, e.s, e.ns
	s.set(t, ns, "short", []byte("v"), 150*time.Millisecond)
	s.set(t, ns, "long", []byte("v"), time.Hour)
	_, err := s.client.MSet(t.Context(), &cachev1.MSetRequest{Namespace: ns, Entries: []*cachev1.MSetEntry{
		{Key: "mshort", Value: []byte("v"), Ttl: durationpb.New(150 * time.Millisecond)},
	}})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return !s.get(t, ns, "short").GetFound() && !s.get(t, ns, "mshort").GetFound()
	}, 10*time.Second, 20*time.Millisecond, "keys with a 150ms ttl never expired")
	assert.True(t, s.get(t, ns, "long").GetFound())
	resp, err := s.client.MGet(t.Context(), &cachev1.MGetRequest{Namespace: ns, Keys: []string{"short", "mshort"}})
	require.NoError(t, err)
	for _, e := range resp.GetEntries() {
		assert.False(t, e.GetFound(), "expired key %s is invisible to mget", e.GetKey())
	}
}

func testDeleteCounts(e env) {
	t, s, ns := e.t, e.s, e.ns
	ctx := t.Context()
	for _, k := range []string{"a", "b", "c"} {
		s.set(t, ns, k, []byte(k), 0)
	}
	resp, err := s.client.Delete(ctx, &cachev1.DeleteRequest{Namespace: ns, Keys: []string{"a", "missing", "b", "a"}})
	require.NoError(t, err)
	assert.Equal(t, int64(2), resp.GetDeletedCount())
	assert.False(t, s.get(t, ns, "a").GetFound())
	assert.False(t, s.get(t, ns, "b").GetFound())
	assert.True(t, s.get(t, ns, "c").GetFound())

	resp, err = s.client.Delete(ctx, &cachev1.DeleteRequest{Namespace: ns, Keys: []string{"a"}})
	require.NoError(t, err)
	assert.Zero(t, resp.GetDeletedCount(), "deleting a missing key is not an error")
}

func testMgetOrder(e env) {
	t, s, ns := e.t, e.s, e.ns
	s.set(t, ns, "one", []byte("1"), 0)
	s.set(t, ns, "three", []byte("3"), 0)
	s.set(t, ns, "empty", nil, 0)
	keys := []string{"three", "two", "one", "three", "empty"}
	resp, err := s.client.MGet(t.Context(), &cachev1.MGetRequest{Namespace: ns, Keys: keys})
	require.NoError(t, err)
	require.Len(t, resp.GetEntries(), len(keys))
	want := []struct {
		found bool
		value string
	}{{true, "3"}, {false, ""}, {true, "1"}, {true, "3"}, {true, ""}}
	for i, e := range resp.GetEntries() {
		assert.Equal(t, keys[i], e.GetKey(), "entry %d", i)
		assert.Equal(t, want[i].found, e.GetFound(), "entry %d", i)
		assert.Equal(t, want[i].value, string(e.GetValue()), "entry %d", i)
	}
}

func testMgetMany(e env) {
	t, s, ns := e.t, e.s, e.ns
	ctx := t.Context()
	n := min(300, s.opts.Limits.MaxKeysPerCall)
	var entries []*cachev1.MSetEntry
	keys := make([]string, 0, n)
	for i := range n {
		k := "key-" + strconv.Itoa(i)
		keys = append(keys, k)
		if i%3 != 0 {
			entries = append(entries, &cachev1.MSetEntry{Key: k, Value: []byte("v" + strconv.Itoa(i))})
		}
	}
	_, err := s.client.MSet(ctx, &cachev1.MSetRequest{Namespace: ns, Entries: entries})
	require.NoError(t, err)
	resp, err := s.client.MGet(ctx, &cachev1.MGetRequest{Namespace: ns, Keys: keys})
	require.NoError(t, err)
	require.Len(t, resp.GetEntries(), n)
	for i, e := range resp.GetEntries() {
		require.Equal(t, keys[i], e.GetKey())
		if i%3 == 0 {
			assert.False(t, e.GetFound(), "key %d", i)
		} else {
			assert.True(t, e.GetFound(), "key %d", i)
			assert.Equal(t, "v"+strconv.Itoa(i), string(e.GetValue()), "key %d", i)
		}
	}
	del, err := s.client.Delete(ctx, &cachev1.DeleteRequest{Namespace: ns, Keys: keys})
	require.NoError(t, err)
	assert.Equal(t, int64(len(entries)), del.GetDeletedCount())
}

func testMsetTTLs(e env) {
	t, s, ns := e.t, e.s, e.ns
	s.set(t, ns, "had-ttl", []byte("old"), time.Hour)
	_, err := s.client.MSet(t.Context(), &cachev1.MSetRequest{Namespace: ns, Entries: []*cachev1.MSetEntry{
		{Key: "hour", Value: []byte("h"), Ttl: durationpb.New(time.Hour)},
		{Key: "minute", Value: []byte("m"), Ttl: durationpb.New(time.Minute)},
		{Key: "forever", Value: []byte("f")},
		{Key: "had-ttl", Value: []byte("new")},
	}})
	require.NoError(t, err)
	hour := s.get(t, ns, "hour")
	assert.Equal(t, []byte("h"), hour.GetValue())
	require.NotNil(t, hour.GetTtl())
	assert.Greater(t, hour.GetTtl().AsDuration(), 59*time.Minute)
	minute := s.get(t, ns, "minute")
	require.NotNil(t, minute.GetTtl())
	assert.LessOrEqual(t, minute.GetTtl().AsDuration(), time.Minute)
	assert.Nil(t, s.get(t, ns, "forever").GetTtl())
	replaced := s.get(t, ns, "had-ttl")
	assert.Equal(t, []byte("new"), replaced.GetValue())
	assert.Nil(t, replaced.GetTtl(), "an entry without ttl clears the old expiry")
}

func testMsetRepeats(e env) {
	t, s, ns := e.t, e.s, e.ns
	_, err := s.client.MSet(t.Context(), &cachev1.MSetRequest{Namespace: ns, Entries: []*cachev1.MSetEntry{
		{Key: "k", Value: []byte("first")},
		{Key: "other", Value: []byte("o")},
		{Key: "k", Value: []byte("last")},
	}})
	require.NoError(t, err)
	assert.Equal(t, []byte("last"), s.get(t, ns, "k").GetValue())
}

func testExpire(e env) {
	t, s, ns := e.t, e.s, e.ns
	ctx := t.Context()
	s.set(t, ns, "k", []byte("v"), 0)
	resp, err := s.client.Expire(ctx, &cachev1.ExpireRequest{Namespace: ns, Key: "k", Ttl: durationpb.New(time.Hour)})
	require.NoError(t, err)
	assert.True(t, resp.GetFound())
	ttl := s.get(t, ns, "k").GetTtl()
	require.NotNil(t, ttl)
	assert.Greater(t, ttl.AsDuration(), 59*time.Minute)

	resp, err = s.client.Expire(ctx, &cachev1.ExpireRequest{Namespace: ns, Key: "k", Ttl: durationpb.New(time.Minute)})
	require.NoError(t, err)
	assert.True(t, resp.GetFound())
	ttl = s.get(t, ns, "k").GetTtl()
	require.NotNil(t, ttl)
	assert.LessOrEqual(t, ttl.AsDuration(), time.Minute, "expire can shorten a ttl")

	resp, err = s.client.Expire(ctx, &cachev1.ExpireRequest{Namespace: ns, Key: "k"})
	require.NoError(t, err)
	assert.True(t, resp.GetFound())
	got := s.get(t, ns, "k")
	assert.True(t, got.GetFound())
	assert.Nil(t, got.GetTtl(), "ttl 0 removes the expiry")

	resp, err = s.client.Expire(ctx, &cachev1.ExpireRequest{Namespace: ns, Key: "k", Ttl: durationpb.New(0)})
	require.NoError(t, err)
	assert.True(t, resp.GetFound(), "removing the expiry of a key without one still finds it")

	resp, err = s.client.Expire(ctx, &cachev1.ExpireRequest{Namespace: ns, Key: "k", Ttl: durationpb.New(100 * time.Millisecond)})
	require.NoError(t, err)
	assert.True(t, resp.GetFound())
	require.Eventually(t, func() bool { return !s.get(t, ns, "k").GetFound() },
		10*time.Second, 20*time.Millisecond, "key given a 100ms ttl by expire never expired")
}

func testExpireMissing(e env) {
	t, s, ns := e.t, e.s, e.ns
	for _, ttl := range []*durationpb.Duration{nil, durationpb.New(time.Minute)} {
		resp, err := s.client.Expire(t.Context(), &cachev1.ExpireRequest{Namespace: ns, Key: "missing", Ttl: ttl})
		require.NoError(t, err)
		assert.False(t, resp.GetFound(), "ttl %v", ttl)
	}
	assert.False(t, s.get(t, ns, "missing").GetFound(), "expire does not create keys")
}

// requireInvalid checks for INVALID_ARGUMENT whose message holds every one of want.
func requireInvalid(t *testing.T, err error, want ...string) {
	t.Helper()
	require.Error(t, err)
	st := status.Convert(err)
	require.Equal(t, codes.InvalidArgument, st.Code(), "message: %s", st.Message())
	for _, w := range want {
		assert.Contains(t, st.Message(), w)
	}
}

func testLimits(e env) {
	t, s, ns := e.t, e.s, e.ns
	ctx := t.Context()
	lim := s.opts.Limits
	longKey := strings.Repeat("k", lim.MaxKeyBytes+1)
	bigValue := make([]byte, lim.MaxValueBytes+1)
	tooMany := make([]string, lim.MaxKeysPerCall+1)
	tooManyEntries := make([]*cachev1.MSetEntry, lim.MaxKeysPerCall+1)
	for i := range tooMany {
		tooMany[i] = "k" + strconv.Itoa(i)
		tooManyEntries[i] = &cachev1.MSetEntry{Key: tooMany[i]}
	}
	maxKey, maxValue, maxKeys := strconv.Itoa(lim.MaxKeyBytes), strconv.Itoa(lim.MaxValueBytes), strconv.Itoa(lim.MaxKeysPerCall)
	cases := []struct {
		name string
		call func() error
		want []string
	}{
		{"empty namespace", func() error {
			_, err := s.client.Get(ctx, &cachev1.GetRequest{Key: "k"})
			return err
		}, []string{"namespace"}},
		{"upper-case namespace", func() error {
			_, err := s.client.Get(ctx, &cachev1.GetRequest{Namespace: "Users", Key: "k"})
			return err
		}, []string{"namespace", `namespace: must match ` + apierr.NamespacePattern + ` (1 to 64 characters), got "Users"`}},
		{"namespace starting with a digit", func() error {
			_, err := s.client.Set(ctx, &cachev1.SetRequest{Namespace: "1abc", Key: "k"})
			return err
		}, []string{"namespace"}},
		{"namespace with a colon", func() error {
			_, err := s.client.MGet(ctx, &cachev1.MGetRequest{Namespace: "a:b", Keys: []string{"k"}})
			return err
		}, []string{"namespace"}},
		{"namespace of 65 characters", func() error {
			_, err := s.client.Delete(ctx, &cachev1.DeleteRequest{Namespace: "a" + strings.Repeat("b", 64), Keys: []string{"k"}})
			return err
		}, []string{"namespace", "64"}},
		{"empty key", func() error {
			_, err := s.client.Get(ctx, &cachev1.GetRequest{Namespace: ns})
			return err
		}, []string{"key", maxKey, "key: must be between 1 and " + maxKey + " bytes (limits.max_key_bytes), got 0"}},
		{"key over the limit", func() error {
			_, err := s.client.Set(ctx, &cachev1.SetRequest{Namespace: ns, Key: longKey})
			return err
		}, []string{"key", maxKey, "key: must be between 1 and " + maxKey + " bytes (limits.max_key_bytes), got " + strconv.Itoa(len(longKey))}},
		{"key over the limit in expire", func() error {
			_, err := s.client.Expire(ctx, &cachev1.ExpireRequest{Namespace: ns, Key: longKey})
			return err
		}, []string{"key", maxKey}},
		{"value over the limit", func() error {
			_, err := s.client.Set(ctx, &cachev1.SetRequest{Namespace: ns, Key: "k", Value: bigValue})
			return err
		}, []string{"value", maxValue, "value: must be at most " + maxValue + " bytes (limits.max_value_bytes), got " + strconv.Itoa(len(bigValue))}},
		{"negative ttl", func() error {
			_, err := s.client.Set(ctx, &cachev1.SetRequest{Namespace: ns, Key: "k", Ttl: durationpb.New(-time.Second)})
			return err
		}, []string{"ttl", "negative"}},
		{"negative ttl in expire", func() error {
			_, err := s.client.Expire(ctx, &cachev1.ExpireRequest{Namespace: ns, Key: "k", Ttl: durationpb.New(-time.Second)})
			return err
		}, []string{"ttl", "negative"}},
		{"unknown condition", func() error {
			_, err := s.client.Set(ctx, &cachev1.SetRequest{Namespace: ns, Key: "k", Condition: 42})
			return err
		}, []string{"condition"}},
		{"delete without keys", func() error {
			_, err := s.client.Delete(ctx, &cachev1.DeleteRequest{Namespace: ns})
			return err
		}, []string{"keys"}},
		{"mget without keys", func() error {
			_, err := s.client.MGet(ctx, &cachev1.MGetRequest{Namespace: ns})
			return err
		}, []string{"keys"}},
		{"mset without entries", func() error {
			_, err := s.client.MSet(ctx, &cachev1.MSetRequest{Namespace: ns})
			return err
		}, []string{"entries"}},
		{"too many keys in delete", func() error {
			_, err := s.client.Delete(ctx, &cachev1.DeleteRequest{Namespace: ns, Keys: tooMany})
			return err
		}, []string{"keys", maxKeys}},
		{"too many keys in mget", func() error {
			_, err := s.client.MGet(ctx, &cachev1.MGetRequest{Namespace: ns, Keys: tooMany})
			return err
		}, []string{"keys", maxKeys, "keys: must be at most " + maxKeys + " keys (limits.max_keys_per_call), got " + strconv.Itoa(len(tooMany))}},
		{"too many entries in mset", func() error {
			_, err := s.client.MSet(ctx, &cachev1.MSetRequest{Namespace: ns, Entries: tooManyEntries})
			return err
		}, []string{"entries", maxKeys}},
		{"empty key inside mget", func() error {
			_, err := s.client.MGet(ctx, &cachev1.MGetRequest{Namespace: ns, Keys: []string{"a", ""}})
			return err
		}, []string{"keys[1]", maxKey}},
		{"key over the limit inside mset", func() error {
			_, err := s.client.MSet(ctx, &cachev1.MSetRequest{Namespace: ns, Entries: []*cachev1.MSetEntry{{Key: "a"}, {Key: longKey}}})
			return err
		}, []string{"entries[1].key", maxKey}},
		{"value over the limit inside mset", func() error {
			_, err := s.client.MSet(ctx, &cachev1.MSetRequest{Namespace: ns, Entries: []*cachev1.MSetEntry{{Key: "a", Value: bigValue}}})
			return err
		}, []string{"entries[0].value", maxValue}},
		{"ttl beyond what an expiry can hold", func() error {
			_, err := s.client.Set(ctx, &cachev1.SetRequest{Namespace: ns, Key: "k", Ttl: &durationpb.Duration{Seconds: 315576000000}})
			return err
		}, []string{"ttl", "limits.max_ttl", "315576000000s"}},
		{"ttl beyond what an expiry can hold in expire", func() error {
			_, err := s.client.Expire(ctx, &cachev1.ExpireRequest{Namespace: ns, Key: "k", Ttl: durationpb.New(apierr.MaxTTL + time.Second)})
			return err
		}, []string{"ttl", "limits.max_ttl"}},
		{"ttl beyond what an expiry can hold inside mset", func() error {
			_, err := s.client.MSet(ctx, &cachev1.MSetRequest{Namespace: ns, Entries: []*cachev1.MSetEntry{{Key: "a", Ttl: &durationpb.Duration{Seconds: 1 << 62}}}})
			return err
		}, []string{"entries[0].ttl", "limits.max_ttl"}},
		{"ttl with nanos out of range", func() error {
			_, err := s.client.Set(ctx, &cachev1.SetRequest{Namespace: ns, Key: "k", Ttl: &durationpb.Duration{Seconds: 1, Nanos: 2e9}})
			return err
		}, []string{"ttl", "nanos"}},
		{"negative ttl inside mset", func() error {
			_, err := s.client.MSet(ctx, &cachev1.MSetRequest{Namespace: ns, Entries: []*cachev1.MSetEntry{{Key: "a", Ttl: durationpb.New(-time.Second)}}})
			return err
		}, []string{"entries[0].ttl"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			requireInvalid(t, tc.call(), tc.want...)
		})
	}
	// Rejected writes touched nothing.
	resp, err := s.client.MGet(ctx, &cachev1.MGetRequest{Namespace: ns, Keys: []string{"k", "a"}})
	require.NoError(t, err)
	for _, e := range resp.GetEntries() {
		assert.False(t, e.GetFound(), "key %s was written by a rejected request", e.GetKey())
	}
}

func testLongestTTL(e env) {
	t, s, ns := e.t, e.s, e.ns
	s.set(t, ns, "k", []byte("v"), apierr.MaxTTL)
	_, err := s.client.MSet(t.Context(), &cachev1.MSetRequest{Namespace: ns, Entries: []*cachev1.MSetEntry{{Key: "m", Ttl: durationpb.New(apierr.MaxTTL)}}})
	require.NoError(t, err)
	_, err = s.client.Set(t.Context(), &cachev1.SetRequest{Namespace: ns, Key: "e"})
	require.NoError(t, err)
	resp, err := s.client.Expire(t.Context(), &cachev1.ExpireRequest{Namespace: ns, Key: "e", Ttl: durationpb.New(apierr.MaxTTL)})
	require.NoError(t, err)
	require.True(t, resp.GetFound())
	for _, key := range []string{"k", "m", "e"} {
		ttl := s.get(t, ns, key).GetTtl()
		require.NotNil(t, ttl, "key %s written with the longest ttl must expire, not live forever", key)
		assert.Greater(t, ttl.AsDuration(), apierr.MaxTTL-time.Hour, "key %s", key)
	}
}

func testAtLimits(e env) {
	t, s, ns := e.t, e.s, e.ns
	ctx := t.Context()
	lim := s.opts.Limits
	key := strings.Repeat("k", lim.MaxKeyBytes)
	value := bytes.Repeat([]byte{'v'}, lim.MaxValueBytes)
	s.set(t, ns, key, value, time.Minute)
	assert.Equal(t, value, s.get(t, ns, key).GetValue())

	keys := make([]string, lim.MaxKeysPerCall)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%d", i)
	}
	resp, err := s.client.MGet(ctx, &cachev1.MGetRequest{Namespace: ns, Keys: keys})
	require.NoError(t, err)
	assert.Len(t, resp.GetEntries(), lim.MaxKeysPerCall)
	_, err = s.client.Delete(ctx, &cachev1.DeleteRequest{Namespace: ns, Keys: append(keys[:len(keys)-1], key)})
	require.NoError(t, err)
	assert.False(t, s.get(t, ns, key).GetFound())
}

func testInteropPluginToBackend(e env) {
	t, s, ns := e.t, e.s, e.ns
	ctx := t.Context()
	s.set(t, ns, "from-plugin", []byte("hello from the plugin"), time.Hour)
	got, found, err := s.opts.Raw.Get(ctx, ns, "from-plugin")
	require.NoError(t, err)
	require.True(t, found, "the backend holds the key where the plugin documents it")
	assert.Equal(t, "hello from the plugin", string(got))
	ttl, err := s.opts.Raw.TTL(ctx, ns, "from-plugin")
	require.NoError(t, err)
	assert.Greater(t, ttl, 59*time.Minute, "the expiry was written with the value")

	_, err = s.client.MSet(ctx, &cachev1.MSetRequest{Namespace: ns, Entries: []*cachev1.MSetEntry{
		{Key: "m1", Value: []byte("one")}, {Key: "m2", Value: []byte("two")},
	}})
	require.NoError(t, err)
	for k, want := range map[string]string{"m1": "one", "m2": "two"} {
		got, found, err := s.opts.Raw.Get(ctx, ns, k)
		require.NoError(t, err)
		assert.True(t, found, k)
		assert.Equal(t, want, string(got), k)
	}

	_, err = s.client.Delete(ctx, &cachev1.DeleteRequest{Namespace: ns, Keys: []string{"m1"}})
	require.NoError(t, err)
	_, found, err = s.opts.Raw.Get(ctx, ns, "m1")
	require.NoError(t, err)
	assert.False(t, found, "delete removed the key from the backend")
}

func testInteropBackendToPlugin(e env) {
	t, s, ns := e.t, e.s, e.ns
	ctx := t.Context()
	require.NoError(t, s.opts.Raw.Set(ctx, ns, "from-backend", []byte("hello from the backend")))
	require.NoError(t, s.opts.Raw.Set(ctx, ns, "second", []byte("two")))
	got := s.get(t, ns, "from-backend")
	assert.True(t, got.GetFound())
	assert.Equal(t, "hello from the backend", string(got.GetValue()))
	assert.Nil(t, got.GetTtl())

	resp, err := s.client.MGet(ctx, &cachev1.MGetRequest{Namespace: ns, Keys: []string{"second", "from-backend"}})
	require.NoError(t, err)
	require.Len(t, resp.GetEntries(), 2)
	assert.Equal(t, "two", string(resp.GetEntries()[0].GetValue()))
	assert.Equal(t, "hello from the backend", string(resp.GetEntries()[1].GetValue()))

	exp, err := s.client.Expire(ctx, &cachev1.ExpireRequest{Namespace: ns, Key: "second", Ttl: durationpb.New(time.Hour)})
	require.NoError(t, err)
	assert.True(t, exp.GetFound())
	ttl, err := s.opts.Raw.TTL(ctx, ns, "second")
	require.NoError(t, err)
	assert.Greater(t, ttl, 59*time.Minute, "expire through the plugin reached the backend key")
}
