package core_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/prism-gateway/plugins/conformance/securitytest"
	"github.com/prism-gateway/plugins/core/coretest"
	keyvaluev1 "github.com/prism-gateway/plugins/gen/prism/keyvalue/v1"
)

// BenchmarkSecureCall measures one unary call over mTLS end to end, in process, without and
// with one policy and the audit log to a file: the difference is what auth and audit cost a call.
func BenchmarkSecureCall(b *testing.B) {
	dir := b.TempDir()
	ca := securitytest.NewCA(b, "bench CA")
	cert, key := ca.Issue(b, securitytest.Leaf{CN: "plugin", Server: true})
	clientCert, clientKey := ca.Issue(b, securitytest.Leaf{CN: "bench-client"})
	certFile, keyFile, caFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt")
	for path, data := range map[string][]byte{certFile: cert, keyFile: key, caFile: ca.PEM} {
		require.NoError(b, os.WriteFile(path, data, 0o600))
	}
	tlsYAML := "tls:\n  enabled: true\n  cert_file: " + certFile + "\n  key_file: " + keyFile +
		"\n  client_ca_file: " + caFile + "\n  client_auth: require\n"
	authYAML := "auth:\n  policies:\n    - {name: bench, identities: [bench-client], operations: [read], namespaces: [\"orders*\"]}\n" +
		"  audit:\n    enabled: true\n    output: " + filepath.Join(dir, "audit.log") + "\n"
	for _, mode := range []struct{ name, yaml string }{
		{"mTLS", tlsYAML},
		{"mTLS+policy+audit", tlsYAML + authYAML},
	} {
		b.Run(mode.name, func(b *testing.B) {
			r := coretest.Start(b, newProbePlugin(), coretest.Options{YAML: mode.yaml})
			conn, err := grpc.NewClient(r.Addr, grpc.WithTransportCredentials(credentials.NewTLS(securitytest.ClientTLS(b, ca.PEM, clientCert, clientKey))))
			require.NoError(b, err)
			b.Cleanup(func() { _ = conn.Close() })
			kv := keyvaluev1.NewKeyValueServiceClient(conn)
			req := &keyvaluev1.GetRequest{Namespace: "orders.eu", Id: "x"}
			_, err = kv.Get(b.Context(), req)
			require.NoError(b, err)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := kv.Get(b.Context(), req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
