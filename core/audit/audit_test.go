package audit_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/prism-gateway/plugins/core/audit"
	"github.com/prism-gateway/plugins/core/config"
	cachev1 "github.com/prism-gateway/plugins/gen/prism/cache/v1"
	keyvaluev1 "github.com/prism-gateway/plugins/gen/prism/keyvalue/v1"
	streamv1 "github.com/prism-gateway/plugins/gen/prism/stream/v1"
)

var when = time.Date(2026, 12, 2, 14, 3, 11, 520000000, time.UTC)

func TestLineFormat(t *testing.T) {
	tests := []struct {
		name  string
		event audit.Event
		want  string
	}{
		{
			name: "a unary call has every field",
			event: audit.Event{
				Time: when, Kind: audit.KindCall, RequestID: "req-1", Identity: "spiffe://prod/ns/orders/sa/api", Source: "spiffe",
				Peer:   audit.PeerOf(&net.TCPAddr{IP: net.IPv4(10, 0, 3, 7), Port: 51234}),
				Method: "/prism.keyvalue.v1.KeyValueService/Put", Noun: "namespace", Targets: []string{"orders.eu"},
				RequestItems: 2, ResponseItems: 2, Code: "OK", Duration: 812 * time.Microsecond,
			},
			want: `{"time":"2026-12-02T14:03:11.52Z","event":"call","request_id":"req-1","identity":"spiffe://prod/ns/orders/sa/api",` +
				`"identity_source":"spiffe","peer":"10.0.3.7:51234","method":"/prism.keyvalue.v1.KeyValueService/Put",` +
				`"namespaces":["orders.eu"],"request_items":2,"response_items":2,"code":"OK","duration_us":812}` + "\n",
		},
		{
			name: "a stream start has no counts, code or duration",
			event: audit.Event{
				Time: when, Kind: audit.KindStreamStart, RequestID: "req-2", Identity: "reader", Source: "cn",
				Peer:   audit.PeerOf(&net.TCPAddr{IP: net.ParseIP("::1"), Port: 4000}),
				Method: "/prism.stream.v1.StreamService/Subscribe", Noun: "topic", Targets: []string{"a", "b"},
			},
			want: `{"time":"2026-12-02T14:03:11.52Z","event":"stream_start","request_id":"req-2","identity":"reader",` +
				`"identity_source":"cn","peer":"[::1]:4000","method":"/prism.stream.v1.StreamService/Subscribe","topics":["a","b"]}` + "\n",
		},
		{
			name: "a stream end counts messages and items",
			event: audit.Event{
				Time: when, Kind: audit.KindStreamEnd, RequestID: "req-3", Identity: "writer", Source: "dns",
				Peer:   audit.PeerOf(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1).To16(), Port: 1}),
				Method: "/prism.stream.v1.StreamService/PublishStream", Noun: "topic", Targets: []string{"t"},
				RequestItems: 30, ResponseItems: 3, RequestMessages: 3, ResponseMessages: 3, Code: "OK", Duration: 2 * time.Second,
			},
			want: `{"time":"2026-12-02T14:03:11.52Z","event":"stream_end","request_id":"req-3","identity":"writer",` +
				`"identity_source":"dns","peer":"127.0.0.1:1","method":"/prism.stream.v1.StreamService/PublishStream","topics":["t"],` +
				`"request_items":30,"response_items":3,"request_messages":3,"response_messages":3,"code":"OK","duration_us":2000000}` + "\n",
		},
		{
			name: "a refused control-plane call carries the error and no targets",
			event: audit.Event{
				Time: when, Kind: audit.KindCall, RequestID: "req-4", Identity: "anonymous", Source: "anonymous",
				Method: "/prism.plugin.v1.PluginService/Drain", Code: "PermissionDenied",
				Error: `identity "anonymous" may not call Drain (needs the admin grant)`,
			},
			want: `{"time":"2026-12-02T14:03:11.52Z","event":"call","request_id":"req-4","identity":"anonymous",` +
				`"identity_source":"anonymous","peer":"","method":"/prism.plugin.v1.PluginService/Drain","request_items":0,` +
				`"response_items":0,"code":"PermissionDenied","duration_us":0,` +
				`"error":"identity \"anonymous\" may not call Drain (needs the admin grant)"}` + "\n",
		},
		{
			name: "quotes, control characters and invalid UTF-8 are escaped",
			event: audit.Event{
				Time: when, Kind: audit.KindCall, Identity: "a\"b\\c\nd\x01é\xff", Peer: audit.PeerOf(&net.UnixAddr{Name: "/run/p.sock", Net: "unix"}),
				Noun: "namespace", Targets: []string{"ns\t1"}, Code: "OK",
			},
			want: `{"time":"2026-12-02T14:03:11.52Z","event":"call","request_id":"","identity":"a\"b\\c\u000ad\u0001é\ufffd",` +
				`"identity_source":"","peer":"/run/p.sock","method":"","namespaces":["ns\u00091"],"request_items":0,` +
				`"response_items":0,"code":"OK","duration_us":0}` + "\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(tt.event.AppendJSON(nil))
			assert.Equal(t, tt.want, got)
			var parsed map[string]any
			require.NoError(t, json.Unmarshal([]byte(got), &parsed), "the line is valid JSON")
			assert.Equal(t, strings.ToValidUTF8(tt.event.Identity, "\uFFFD"), parsed["identity"], "the identity reads back")
		})
	}
}

func TestEncodingAllocatesNothing(t *testing.T) {
	e := audit.Event{
		Time: when, Kind: audit.KindCall, RequestID: "req", Identity: "id", Source: "cn",
		Peer: audit.PeerOf(&net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 9}), Method: "/m", Noun: "namespace",
		Targets: []string{"ns"}, Code: "OK",
	}
	buf := make([]byte, 0, 1024)
	allocs := testing.AllocsPerRun(100, func() { buf = e.AppendJSON(buf[:0]) })
	t.Logf("AppendJSON: %.0f allocs per line", allocs)
	assert.Zero(t, allocs)
}

func TestPeerPrintsAsNetPrintsIt(t *testing.T) {
	for _, a := range []net.Addr{
		&net.TCPAddr{IP: net.IPv4(192, 168, 1, 2), Port: 80},
		&net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 443},
		&net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 443, Zone: "eth0"},
		&net.TCPAddr{IP: net.IPv4(1, 2, 3, 4).To16(), Port: 5},
		&net.UnixAddr{Name: "@abstract", Net: "unix"},
	} {
		assert.Equal(t, a.String(), audit.PeerOf(a).String())
	}
	assert.Empty(t, audit.PeerOf(nil).String())
}

func TestCount(t *testing.T) {
	dyn := dynamicpb.NewMessage((&keyvaluev1.GetRequest{}).ProtoReflect().Descriptor())
	keys := dyn.Mutable(dyn.Descriptor().Fields().ByName("keys")).List()
	keys.Append(protoreflect.ValueOfBytes([]byte("a")))
	tests := []struct {
		name string
		msg  any
		want int
	}{
		{"a Put counts its items", &keyvaluev1.PutRequest{Items: make([]*keyvaluev1.PutItem, 3)}, 3},
		{"a Get of a whole record counts no keys", &keyvaluev1.GetRequest{Id: "x"}, 0},
		{"a Get of two keys counts them", &keyvaluev1.GetRequest{Keys: [][]byte{[]byte("a"), []byte("b")}}, 2},
		{"a Cache Get addresses one key", &cachev1.GetRequest{Key: "k"}, 1},
		{"an MGet counts its keys", &cachev1.MGetRequest{Keys: []string{"a", "b", "c"}}, 3},
		{"a Publish counts its records", &streamv1.PublishRequest{Records: make([]*streamv1.Record, 5)}, 5},
		{"a nil message counts nothing", (*keyvaluev1.PutRequest)(nil), 0},
		{"a non-protobuf value counts nothing", "text", 0},
		{"a dynamic message is counted by protobuf reflection", dyn, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, audit.Count(tt.msg))
		})
	}
	put := &keyvaluev1.PutRequest{Items: make([]*keyvaluev1.PutItem, 3)}
	assert.Zero(t, testing.AllocsPerRun(100, func() { audit.Count(put) }), "counting a generated message allocates nothing")
}

// readLines returns the lines of a file, each checked to be one whole JSON object.
func readLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var lines []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), "a whole JSON line: %q", sc.Text())
		lines = append(lines, m)
	}
	require.NoError(t, sc.Err())
	return lines
}

func event(id string) *audit.Event {
	return &audit.Event{Time: time.Now(), Kind: audit.KindCall, RequestID: id, Identity: "tester", Source: "cn", Method: "/m", Code: "OK"}
}

func ids(lines []map[string]any) []string {
	out := make([]string, 0, len(lines))
	for _, l := range lines {
		out = append(out, fmt.Sprint(l["request_id"]))
	}
	return out
}

func TestOpen(t *testing.T) {
	s, err := audit.Open(config.AuditConfig{Enabled: false, Output: "stderr"}, audit.Options{})
	require.NoError(t, err)
	assert.Nil(t, s, "a disabled audit log has no sink")
	s.Write(event("ignored"))
	require.NoError(t, s.Close(), "a nil sink is safe to use")

	_, err = audit.Open(config.AuditConfig{Enabled: true, Output: filepath.Join(t.TempDir(), "missing", "audit.log")}, audit.Options{})
	require.ErrorContains(t, err, "auth.audit.output")

	s, err = audit.Open(config.AuditConfig{Enabled: true, Output: "stderr"}, audit.Options{})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "closing twice is fine")
	_, err = os.Stderr.Stat()
	assert.NoError(t, err, "closing a stderr sink leaves stderr open")
}

func TestCloseWritesWhatIsBuffered(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	stats := &audit.Stats{}
	s, err := audit.Open(config.AuditConfig{Enabled: true, Output: path}, audit.Options{FlushInterval: time.Hour, Stats: stats})
	require.NoError(t, err)
	for i := range 100 {
		s.Write(event(fmt.Sprint(i)))
	}
	require.NoError(t, s.Close())
	lines := readLines(t, path)
	assert.Len(t, lines, 100, "Close wrote every line although no flush interval had passed")

	s.Write(event("late"))
	assert.Equal(t, uint64(1), stats.Dropped(), "a line after Close is dropped and counted")
	assert.Len(t, readLines(t, path), 100)
}

func TestLinesAreWrittenWithinTheFlushInterval(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	s, err := audit.Open(config.AuditConfig{Enabled: true, Output: path}, audit.Options{FlushInterval: 20 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	s.Write(event("one"))
	require.Eventually(t, func() bool {
		data, _ := os.ReadFile(path)
		return bytes.Contains(data, []byte(`"request_id":"one"`))
	}, 10*time.Second, 10*time.Millisecond, "the line reached the file without Close")
}

func TestReopenForLogrotate(t *testing.T) {
	dir := t.TempDir()
	path, rotated := filepath.Join(dir, "audit.log"), filepath.Join(dir, "audit.log.1")
	cfg := config.AuditConfig{Enabled: true, Output: path}
	stats := &audit.Stats{}
	old, err := audit.Open(cfg, audit.Options{Stats: stats})
	require.NoError(t, err)
	for i := range 10 {
		old.Write(event(fmt.Sprintf("before-%d", i)))
	}
	// logrotate moves the file away, then the plugin reloads: a new sink on the same path.
	require.NoError(t, os.Rename(path, rotated))
	next, err := audit.Open(cfg, audit.Options{Stats: stats})
	require.NoError(t, err)
	old.Write(event("in-flight"))
	require.NoError(t, old.CloseInto(next))
	old.Write(event("late"))
	for i := range 10 {
		next.Write(event(fmt.Sprintf("after-%d", i)))
	}
	require.NoError(t, next.Close())

	var before, after []string
	for i := range 10 {
		before = append(before, fmt.Sprintf("before-%d", i))
		after = append(after, fmt.Sprintf("after-%d", i))
	}
	assert.Equal(t, append(before, "in-flight"), ids(readLines(t, rotated)), "the old sink finished its lines in the rotated file")
	assert.Equal(t, append([]string{"late"}, after...), ids(readLines(t, path)), "new lines, and a late one handed on, are in the new file")
	assert.Zero(t, stats.Dropped())
}

func TestConcurrentWritersNeitherLoseNorSplitLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	// A small flush size makes the writer run many times while the calls write.
	s, err := audit.Open(config.AuditConfig{Enabled: true, Output: path}, audit.Options{FlushBytes: 2048, FlushInterval: time.Millisecond})
	require.NoError(t, err)
	const writers, perWriter = 8, 500
	long := strings.Repeat("x", 3000) // lines longer than a pipe's atomic write
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				e := event(fmt.Sprintf("%d-%d", w, i))
				if i%50 == 0 {
					e.Error = long
				}
				s.Write(e)
			}
		})
	}
	wg.Wait()
	require.NoError(t, s.Close())
	lines := readLines(t, path)
	require.Len(t, lines, writers*perWriter)
	seen := map[string]bool{}
	for _, id := range ids(lines) {
		assert.False(t, seen[id], "line %s written twice", id)
		seen[id] = true
	}
	t.Logf("%d writers wrote %d whole lines", writers, len(lines))
}
