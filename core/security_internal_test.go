package core

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"

	"github.com/prism-gateway/plugins/core/apierr"
	"github.com/prism-gateway/plugins/core/audit"
	"github.com/prism-gateway/plugins/core/config"
	keyvaluev1 "github.com/prism-gateway/plugins/gen/prism/keyvalue/v1"
	streamv1 "github.com/prism-gateway/plugins/gen/prism/stream/v1"
)

// headerStream stands in for the transport stream of a unary call, so SetHeader does the work
// it does in a server.
type headerStream struct{ header metadata.MD }

func (h *headerStream) Method() string { return "/prism.keyvalue.v1.KeyValueService/Get" }

func (h *headerStream) SetHeader(md metadata.MD) error {
	h.header = metadata.Join(h.header, md)
	return nil
}
func (h *headerStream) SendHeader(metadata.MD) error { return nil }
func (h *headerStream) SetTrailer(metadata.MD) error { return nil }

// callContext is the context of a unary call from an mTLS client whose certificate names cn.
func callContext(cn string, hs *headerStream) context.Context {
	cert := &x509.Certificate{Subject: pkix.Name{CommonName: cn}}
	ctx := peer.NewContext(context.Background(), &peer.Peer{
		Addr:     &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 52044},
		AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}},
	})
	return grpc.NewContextWithServerTransportStream(ctx, hs)
}

func benchServer(tb testing.TB, auth config.AuthConfig) *Server {
	tb.Helper()
	sec, err := buildSecurity(auth, nil, audit.Options{})
	require.NoError(tb, err)
	s := &Server{}
	s.sec.Store(sec)
	tb.Cleanup(func() { _ = sec.audit.Close() })
	return s
}

// BenchmarkSecurityUnary measures what the security interceptor adds to an allowed unary call:
// identity, one policy decision, the request id header and the audit line to a file.
func BenchmarkSecurityUnary(b *testing.B) {
	policies := []config.PolicyConfig{{Name: "bench", Identities: []string{"bench-client"}, Operations: []string{"read"}, Namespaces: []string{"orders*"}}}
	for _, mode := range []struct {
		name string
		auth config.AuthConfig
	}{
		{"off", config.AuthConfig{}},
		{"policy", config.AuthConfig{Policies: policies}},
		{"policy+audit", config.AuthConfig{Policies: policies, Audit: config.AuditConfig{Enabled: true, Output: filepath.Join(b.TempDir(), "audit.log")}}},
	} {
		b.Run(mode.name, func(b *testing.B) {
			s := benchServer(b, mode.auth)
			info := &grpc.UnaryServerInfo{FullMethod: "/prism.keyvalue.v1.KeyValueService/Get"}
			req := &keyvaluev1.GetRequest{Namespace: "orders.eu", Id: "x"}
			resp := &keyvaluev1.GetResponse{Found: true, Items: []*keyvaluev1.Item{{Key: []byte("k")}}}
			handler := func(context.Context, any) (any, error) { return resp, nil }
			hs := &headerStream{}
			ctx := callContext("bench-client", hs)
			b.ReportAllocs()
			for b.Loop() {
				hs.header = nil
				if _, err := s.securityUnary(ctx, req, info, handler); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// auditServer is a server with one policy per test and the audit log in a file; lines reads
// the file after closing the sink, which writes everything it holds.
func auditServer(t *testing.T, policies []config.PolicyConfig) (*Server, func() []map[string]any) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.log")
	s := benchServer(t, config.AuthConfig{Policies: policies, Audit: config.AuditConfig{Enabled: true, Output: path}})
	return s, func() []map[string]any {
		t.Helper()
		require.NoError(t, s.sec.Load().audit.Close())
		data, err := os.ReadFile(path)
		require.NoError(t, err)
		var lines []map[string]any
		for _, raw := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
			var line map[string]any
			require.NoError(t, json.Unmarshal(raw, &line), "%s", raw)
			lines = append(lines, line)
		}
		return lines
	}
}

var writerPolicy = []config.PolicyConfig{{Name: "w", Identities: []string{"writer"}, Operations: []string{"write"}, Namespaces: []string{"orders*"}}}

func TestUnaryAuditLines(t *testing.T) {
	const secretKey, secretValue = "key-never-logged", "value-never-logged"
	put := &keyvaluev1.PutRequest{Namespace: "orders.eu", Id: "record-never-logged", Items: []*keyvaluev1.PutItem{
		{Key: []byte(secretKey), Value: []byte(secretValue)}, {Key: []byte(secretKey + "2"), Value: []byte(secretValue)},
	}}
	tests := []struct {
		name      string
		identity  string
		namespace string
		requestID string // sent by the client, "" for none
		want      map[string]any
	}{
		{
			name: "an allowed call is counted and timed", identity: "writer", namespace: "orders.eu", requestID: "client-id-7",
			want: map[string]any{
				"event": "call", "request_id": "client-id-7", "identity": "writer", "identity_source": "cn",
				"peer": "127.0.0.1:52044", "method": "/prism.keyvalue.v1.KeyValueService/Put", "namespaces": []any{"orders.eu"},
				"request_items": 2.0, "response_items": 2.0, "code": "OK",
			},
		},
		{
			name: "a denied call names the refusal and never reaches the handler", identity: "writer", namespace: "billing",
			want: map[string]any{
				"event": "call", "identity": "writer", "identity_source": "cn", "peer": "127.0.0.1:52044",
				"method": "/prism.keyvalue.v1.KeyValueService/Put", "namespaces": []any{"billing"},
				"request_items": 2.0, "response_items": 0.0, "code": "PermissionDenied",
				"error": `identity "writer" may not call Put on namespace "billing"`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, lines := auditServer(t, writerPolicy)
			hs := &headerStream{}
			ctx := callContext(tt.identity, hs)
			if tt.requestID != "" {
				ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("x-request-id", tt.requestID))
			}
			req := proto.Clone(put).(*keyvaluev1.PutRequest) //nolint:forcetypeassert // a clone has the type of its source
			req.Namespace = tt.namespace
			reached := false
			handler := func(context.Context, any) (any, error) {
				reached = true
				return &keyvaluev1.PutResponse{Versions: make([]*keyvaluev1.ItemVersion, 2)}, nil
			}
			_, err := s.securityUnary(ctx, req, &grpc.UnaryServerInfo{FullMethod: "/prism.keyvalue.v1.KeyValueService/Put"}, handler)
			assert.Equal(t, tt.want["code"] == "OK", reached, "the handler ran only for the allowed call")
			assert.Equal(t, tt.want["code"], apierr.Code(err).String())

			got := lines()
			require.Len(t, got, 1)
			line := got[0]
			for k, v := range tt.want {
				assert.Equal(t, v, line[k], k)
			}
			assert.Contains(t, line, "duration_us")
			_, err = time.Parse(time.RFC3339Nano, line["time"].(string)) //nolint:forcetypeassert // a string or the test fails here
			require.NoError(t, err)
			id := line["request_id"].(string) //nolint:forcetypeassert // a string or the test fails here
			if tt.requestID == "" {
				assert.Regexp(t, "^[0-9a-f]{32}$", id, "a generated request id")
			}
			assert.Equal(t, []string{id}, hs.header.Get("x-request-id"), "the request id is returned in the response header")
			raw, _ := json.Marshal(line)
			for _, secret := range []string{secretKey, secretValue, "record-never-logged"} {
				assert.NotContains(t, string(raw), secret, "no ids, keys or values in the audit line")
			}
		})
	}
}

func TestAuditOffSetsNoHeader(t *testing.T) {
	s := benchServer(t, config.AuthConfig{Policies: writerPolicy})
	hs := &headerStream{}
	_, err := s.securityUnary(callContext("writer", hs), &keyvaluev1.PutRequest{Namespace: "orders"},
		&grpc.UnaryServerInfo{FullMethod: "/prism.keyvalue.v1.KeyValueService/Put"},
		func(context.Context, any) (any, error) { return &keyvaluev1.PutResponse{}, nil })
	require.NoError(t, err)
	assert.Empty(t, hs.header, "no audit, no request id header")
}

// fakeStream is a server stream that yields recv and records what the handler sends.
type fakeStream struct {
	grpc.ServerStream
	ctx    context.Context
	recv   []proto.Message
	sent   int
	header metadata.MD
}

func (f *fakeStream) Context() context.Context { return f.ctx }

func (f *fakeStream) SetHeader(md metadata.MD) error {
	f.header = metadata.Join(f.header, md)
	return nil
}

func (f *fakeStream) RecvMsg(m any) error {
	if len(f.recv) == 0 {
		return io.EOF
	}
	proto.Merge(m.(proto.Message), f.recv[0]) //nolint:forcetypeassert // the stream carries protobuf messages
	f.recv = f.recv[1:]
	return nil
}

func (f *fakeStream) SendMsg(any) error {
	f.sent++
	return nil
}

func TestStreamAuditLines(t *testing.T) {
	pub := func(topic string, records int) proto.Message {
		return &streamv1.PublishRequest{Topic: topic, Records: make([]*streamv1.Record, records)}
	}
	tests := []struct {
		name      string
		recv      []proto.Message
		wantStart bool
		wantEnd   map[string]any
	}{
		{
			name:      "start and end lines count messages and items",
			recv:      []proto.Message{pub("orders.a", 2), pub("orders.b", 3), pub("orders.a", 1)},
			wantStart: true,
			wantEnd: map[string]any{
				"event": "stream_end", "topics": []any{"orders.a", "orders.b"}, "request_messages": 3.0, "response_messages": 3.0,
				"request_items": 6.0, "response_items": 3.0, "code": "OK",
			},
		},
		{
			name: "a stream refused at its first message has only an end line",
			recv: []proto.Message{pub("billing", 2)},
			wantEnd: map[string]any{
				"event": "stream_end", "topics": []any{"billing"}, "request_messages": 1.0, "response_messages": 0.0,
				"request_items": 0.0, "response_items": 0.0, "code": "PermissionDenied",
				"error": `identity "writer" may not call PublishStream on topic "billing"`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, lines := auditServer(t, writerPolicy)
			fs := &fakeStream{ctx: callContext("writer", &headerStream{}), recv: tt.recv}
			handler := func(_ any, ss grpc.ServerStream) error {
				for {
					req := &streamv1.PublishRequest{}
					if err := ss.RecvMsg(req); err != nil {
						if errors.Is(err, io.EOF) {
							return nil
						}
						return err
					}
					if err := ss.SendMsg(&streamv1.PublishResponse{Acks: make([]*streamv1.RecordAck, 1)}); err != nil {
						return err
					}
				}
			}
			info := &grpc.StreamServerInfo{FullMethod: "/prism.stream.v1.StreamService/PublishStream", IsClientStream: true, IsServerStream: true}
			err := s.securityStream(nil, fs, info, handler)
			assert.Equal(t, tt.wantEnd["code"], apierr.Code(err).String())

			got := lines()
			if tt.wantStart {
				require.Len(t, got, 2)
				start := got[0]
				assert.Equal(t, "stream_start", start["event"])
				assert.Equal(t, []any{"orders.a"}, start["topics"], "the start line names the first message's topic")
				assert.NotContains(t, start, "code")
				assert.NotContains(t, start, "request_items")
				assert.Equal(t, start["request_id"], got[1]["request_id"], "start and end share the request id")
			} else {
				require.Len(t, got, 1)
			}
			end := got[len(got)-1]
			for k, v := range tt.wantEnd {
				assert.Equal(t, v, end[k], k)
			}
			assert.Equal(t, "writer", end["identity"])
			assert.Equal(t, "127.0.0.1:52044", end["peer"])
			assert.Equal(t, []string{end["request_id"].(string)}, fs.header.Get("x-request-id")) //nolint:forcetypeassert // a string or the test fails
		})
	}
}

func TestAnAllowedCallWithoutAuditAllocatesNothingForSecurity(t *testing.T) {
	s := benchServer(t, config.AuthConfig{Policies: writerPolicy})
	info := &grpc.UnaryServerInfo{FullMethod: "/prism.keyvalue.v1.KeyValueService/Put"}
	req := &keyvaluev1.PutRequest{Namespace: "orders.eu", Items: make([]*keyvaluev1.PutItem, 2)}
	resp := &keyvaluev1.PutResponse{}
	handler := func(context.Context, any) (any, error) { return resp, nil }
	ctx := callContext("writer", &headerStream{})
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := s.securityUnary(ctx, req, info, handler); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("identity + policy decision: %.0f allocs per call", allocs)
	assert.Zero(t, allocs)
}
