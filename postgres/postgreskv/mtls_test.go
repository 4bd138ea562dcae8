package postgreskv_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/prism-gateway/plugins/conformance/keyvaluetest"
	"github.com/prism-gateway/plugins/core/coretest"
	keyvaluev1 "github.com/prism-gateway/plugins/gen/prism/keyvalue/v1"
	"github.com/prism-gateway/plugins/postgres/postgreskv"
)

// tlsServer is a throwaway PostgreSQL that only accepts TLS: certificate auth for certUser,
// SCRAM password auth for pwUser.
type tlsServer struct {
	port                   int
	caFile                 string
	clientCert, clientKey  string
	otherCAFile            string
	otherCert, otherKey    string
	certUser, pwUser, pwPW string
}

// startTLSPostgres runs initdb into a temporary directory as the postgres OS user and starts a
// server with ssl=on and a hostssl … cert rule, with certificates made here. It leaves the
// shared test server alone.
func startTLSPostgres(t *testing.T) *tlsServer {
	t.Helper()
	bins, err := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	require.NoError(t, err)
	require.NotEmpty(t, bins, "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin (run `make services`)")
	sort.Strings(bins)
	bin := filepath.Dir(bins[len(bins)-1])
	pgUser, err := user.Lookup("postgres")
	require.NoError(t, err, "the postgres OS user runs the throwaway server")
	uid, _ := strconv.Atoi(pgUser.Uid)
	gid, _ := strconv.Atoi(pgUser.Gid)

	// t.TempDir's parents are private to root; the server needs its own readable tree.
	dir, err := os.MkdirTemp("", "prism-pg-tls-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	require.NoError(t, os.Chown(dir, uid, gid))
	data := filepath.Join(dir, "data")
	asPostgres := func(args ...string) {
		t.Helper()
		out, err := exec.CommandContext(t.Context(), "runuser", append([]string{"-u", "postgres", "--"}, args...)...).CombinedOutput()
		require.NoError(t, err, "%v: %s", args, out)
	}
	asPostgres(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

	s := &tlsServer{certUser: "prism_cert", pwUser: "prism_pw", pwPW: "pw-secret-123"}
	ca, caKey := newCA(t, "prism test CA")
	other, otherKey := newCA(t, "some other CA")
	certDir := t.TempDir()
	s.caFile = writePEM(t, certDir, "ca.crt", ca.Raw, nil)
	s.otherCAFile = writePEM(t, certDir, "other-ca.crt", other.Raw, nil)
	srvDER, srvKey := issue(t, ca, caKey, "localhost", true)
	cliDER, cliKey := issue(t, ca, caKey, s.certUser, false)
	s.clientCert = writePEM(t, certDir, "client.crt", cliDER, nil)
	s.clientKey = writePEM(t, certDir, "client.key", nil, cliKey)
	oDER, oKey := issue(t, other, otherKey, s.certUser, false)
	s.otherCert = writePEM(t, certDir, "other.crt", oDER, nil)
	s.otherKey = writePEM(t, certDir, "other.key", nil, oKey)
	for _, f := range []string{
		writePEM(t, data, "server.crt", srvDER, nil),
		writePEM(t, data, "server.key", nil, srvKey),
		writePEM(t, data, "root.crt", ca.Raw, nil),
	} {
		require.NoError(t, os.Chown(f, uid, gid))
	}

	s.port = freePort(t)
	hba := "local all postgres trust\n" +
		"hostssl all " + s.certUser + " 127.0.0.0/8 cert\n" +
		"hostssl all " + s.pwUser + " 127.0.0.0/8 scram-sha-256\n"
	require.NoError(t, os.WriteFile(filepath.Join(data, "pg_hba.conf"), []byte(hba), 0o600))
	conf := fmt.Sprintf(`
listen_addresses = '127.0.0.1,127.0.0.2'
port = %d
unix_socket_directories = '%s'
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
ssl_ca_file = 'root.crt'
password_encryption = 'scram-sha-256'
max_connections = 60
fsync = off
synchronous_commit = off
`, s.port, dir)
	f, err := os.OpenFile(filepath.Join(data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString(conf)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	for _, name := range []string{"pg_hba.conf", "postgresql.conf"} {
		require.NoError(t, os.Chown(filepath.Join(data, name), uid, gid))
	}
	asPostgres(filepath.Join(bin, "pg_ctl"), "-D", data, "-l", filepath.Join(dir, "server.log"), "-w", "-t", "60", "start")
	t.Cleanup(func() {
		out, err := exec.Command("runuser", "-u", "postgres", "--", filepath.Join(bin, "pg_ctl"), "-D", data, "-m", "immediate", "stop").CombinedOutput()
		if err != nil {
			t.Logf("stop throwaway postgres: %v: %s", err, out)
		}
	})

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=disable", dir, s.port))
	require.NoError(t, err)
	defer func() { _ = admin.Close(context.Background()) }()
	for _, stmt := range []string{
		"CREATE ROLE " + s.certUser + " LOGIN",
		"CREATE ROLE " + s.pwUser + " LOGIN PASSWORD '" + s.pwPW + "'",
		"CREATE DATABASE kv_cert OWNER " + s.certUser,
		"CREATE DATABASE kv_pw OWNER " + s.pwUser,
	} {
		_, err := admin.Exec(ctx, stmt)
		require.NoError(t, err, stmt)
	}
	return s
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	return port
}

func newCA(t *testing.T, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return cert, key
}

func issue(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, server bool) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	require.NoError(t, err)
	return der, key
}

func writePEM(t *testing.T, dir, name string, certDER []byte, key *ecdsa.PrivateKey) string {
	t.Helper()
	block := &pem.Block{Type: "CERTIFICATE", Bytes: certDER}
	if key != nil {
		der, err := x509.MarshalPKCS8PrivateKey(key)
		require.NoError(t, err)
		block = &pem.Block{Type: "PRIVATE KEY", Bytes: der}
	}
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(block), 0o600))
	return path
}

func TestBackendTLS(t *testing.T) {
	t.Parallel()
	s := startTLSPostgres(t)
	certURL := fmt.Sprintf("postgres://%s@127.0.0.1:%d/kv_cert", s.certUser, s.port)
	run := func(t *testing.T, yaml string) *coretest.Running {
		t.Helper()
		return coretest.Start(t, postgreskv.New(), coretest.Options{YAML: yaml})
	}
	certYAML := func(url, ca, cert, key string) string {
		return fmt.Sprintf("backend:\n  database_url: %s\n  ssl_mode: verify-full\n  tls_ca_file: %s\n  tls_cert_file: %s\n  tls_key_file: %s\n  connect_timeout: 2s\n", url, ca, cert, key)
	}

	t.Run("client certificate over verify-full passes the conformance suite", func(t *testing.T) {
		t.Parallel()
		r := run(t, certYAML(certURL, s.caFile, s.clientCert, s.clientKey))
		r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 30*time.Second)
		keyvaluetest.Run(t, r.Conn, keyvaluetest.Options{NamespacePrefix: "mtls"})
	})

	t.Run("certificate options in the URL work too", func(t *testing.T) {
		t.Parallel()
		url := fmt.Sprintf("%s?sslmode=verify-full&sslrootcert=%s&sslcert=%s&sslkey=%s", certURL, s.caFile, s.clientCert, s.clientKey)
		r := run(t, "backend:\n  database_url: "+url+"\n")
		r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 30*time.Second)
		putOne(t, kv(r), "ns", "r", "k", "v")
	})

	t.Run("password over verify-full TLS", func(t *testing.T) {
		t.Parallel()
		url := fmt.Sprintf("postgres://%s@127.0.0.1:%d/kv_pw", s.pwUser, s.port)
		r := coretest.Start(t, postgreskv.New(), coretest.Options{
			YAML: fmt.Sprintf("backend:\n  database_url: %s\n  ssl_mode: verify-full\n  tls_ca_file: %s\n", url, s.caFile),
			Env:  map[string]string{"PRISM_BACKEND_PASSWORD": s.pwPW},
		})
		r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 30*time.Second)
		putOne(t, kv(r), "ns", "r", "k", "v")
		assert.False(t, r.Logs.Contains(s.pwPW))
	})

	accepted := []struct {
		name string
		yaml string
	}{
		{"verify-ca checks the chain but not the name", strings.Replace(
			certYAML(fmt.Sprintf("postgres://%s@127.0.0.2:%d/kv_cert", s.certUser, s.port), s.caFile, s.clientCert, s.clientKey),
			"verify-full", "verify-ca", 1)},
		{"require encrypts without checking the server", fmt.Sprintf(
			"backend:\n  database_url: %s\n  ssl_mode: require\n  tls_cert_file: %s\n  tls_key_file: %s\n", certURL, s.clientCert, s.clientKey)},
	}
	for _, tc := range accepted {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := run(t, tc.yaml)
			r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 30*time.Second)
			putOne(t, kv(r), "ns", "r", "k", "v")
		})
	}

	refused := []struct {
		name string
		yaml string
	}{
		{"a certificate from another CA is refused", certYAML(certURL, s.caFile, s.otherCert, s.otherKey)},
		{"no client certificate is refused", fmt.Sprintf("backend:\n  database_url: %s\n  ssl_mode: verify-full\n  tls_ca_file: %s\n  connect_timeout: 2s\n", certURL, s.caFile)},
		{"a server not signed by the configured CA is refused", certYAML(certURL, s.otherCAFile, s.clientCert, s.clientKey)},
		// The server listens on 127.0.0.2 too, but its certificate names only 127.0.0.1 and localhost.
		{"a server name that does not match is refused", certYAML(fmt.Sprintf("postgres://%s@127.0.0.2:%d/kv_cert", s.certUser, s.port), s.caFile, s.clientCert, s.clientKey)},
		{"plain TCP is refused", fmt.Sprintf("backend:\n  database_url: %s?sslmode=disable\n  connect_timeout: 2s\n", certURL)},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := run(t, tc.yaml)
			r.WaitHealth(t, "", healthpb.HealthCheckResponse_NOT_SERVING, 10*time.Second)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			_, err := kv(r).Get(ctx, &keyvaluev1.GetRequest{Namespace: "ns", Id: "r"})
			assert.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
		})
	}
}
