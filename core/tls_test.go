package core_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/prism-gateway/plugins/core"
	"github.com/prism-gateway/plugins/core/coretest"
	pluginv1 "github.com/prism-gateway/plugins/gen/prism/plugin/v1"
)

// testCA issues certificates for the TLS tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "prism test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns PEM certificate and key for name, usable as server (127.0.0.1) and client.
func (ca *testCA) issue(t *testing.T, name string, serial int64) ([]byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, data, 0o600))
}

func dialTLS(t *testing.T, addr string, tc *tls.Config) error {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	require.NoError(t, err)
	defer func() { _ = conn.Close() }()
	_, err = healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
	return err
}

func TestMutualTLSRequiresAClientCertificateAndReloadsCertificates(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	serverCert, serverKey := ca.issue(t, "plugin", 2)
	clientCert, clientKey := ca.issue(t, "client", 3)
	certFile, keyFile, caFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt")
	writeFile(t, certFile, serverCert)
	writeFile(t, keyFile, serverKey)
	writeFile(t, caFile, ca.pem)
	yaml := "tls:\n  enabled: true\n  cert_file: " + certFile + "\n  key_file: " + keyFile +
		"\n  client_ca_file: " + caFile + "\n  client_auth: require\n"
	r := coretest.Start(t, newProbePlugin(), coretest.Options{YAML: yaml})

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.pem)
	pair, err := tls.X509KeyPair(clientCert, clientKey)
	require.NoError(t, err)
	withCert := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, Certificates: []tls.Certificate{pair}}
	require.NoError(t, dialTLS(t, r.Addr, withCert), "a client certificate from the CA is accepted")
	require.Error(t, dialTLS(t, r.Addr, &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}), "no client certificate, no service")

	// Rotate the server certificate in place; Reload picks it up without a restart.
	rotatedCert, rotatedKey := ca.issue(t, "plugin-rotated", 4)
	writeFile(t, certFile, rotatedCert)
	writeFile(t, keyFile, rotatedKey)
	admin, err := grpc.NewClient(r.Addr, grpc.WithTransportCredentials(credentials.NewTLS(withCert)))
	require.NoError(t, err)
	defer func() { _ = admin.Close() }()
	resp, err := pluginv1.NewPluginServiceClient(admin).Reload(t.Context(), &pluginv1.ReloadRequest{})
	require.NoError(t, err)
	assert.Contains(t, resp.GetChanged(), "tls.certificates")

	var served *x509.Certificate
	verifying := withCert.Clone()
	verifying.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
		var parseErr error
		served, parseErr = x509.ParseCertificate(raw[0])
		return parseErr
	}
	require.NoError(t, dialTLS(t, r.Addr, verifying))
	assert.Equal(t, "plugin-rotated", served.Subject.CommonName, "new handshakes get the rotated certificate")
}

func TestBackendTLSConfig(t *testing.T) {
	dir := t.TempDir()
	good, garbage := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "garbage.pem")
	writeFile(t, good, newTestCA(t).pem)
	writeFile(t, garbage, []byte("not a certificate"))
	tests := []struct {
		name, caFile, wantErr string
		wantRoots             bool
	}{
		{name: "system roots without a CA file"},
		{name: "a private CA", caFile: good, wantRoots: true},
		{name: "a missing file", caFile: filepath.Join(dir, "absent.pem"), wantErr: "backend.tls_ca_file"},
		{name: "a file without certificates", caFile: garbage, wantErr: "backend.tls_ca_file: no PEM certificates found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tc, err := core.BackendTLSConfig(tt.caFile)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, uint16(tls.VersionTLS12), tc.MinVersion)
			assert.Equal(t, tt.wantRoots, tc.RootCAs != nil)
		})
	}
}
