package core

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/prism-gateway/plugins/core/audit"
	"github.com/prism-gateway/plugins/core/config"
	keyvaluev1 "github.com/prism-gateway/plugins/gen/prism/keyvalue/v1"
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
