// Package securitytest is the shared inbound-security suite (RFC-011): mTLS identities, bearer
// JWTs, policies per operation and namespace, admin-only control-plane calls, all-or-nothing
// reloads, certificate rotation on disk and the audit log. It runs unchanged against every
// plugin; each plugin's test supplies how to start it and how to look at its backend directly,
// so a denied call is shown never to have reached the backend.
package securitytest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/prism-gateway/plugins/core/coretest"
	"github.com/prism-gateway/plugins/core/healthwait"
	pluginv1 "github.com/prism-gateway/plugins/gen/prism/plugin/v1"
)

// Backend is what the suite needs from one plugin.
type Backend struct {
	// Start runs the plugin with these extra YAML sections (tls, auth, plugin) added to what the
	// plugin's own tests need. The suite waits for SERVING itself, over TLS.
	Start func(tb testing.TB, yaml string) *coretest.Running
	// NewNamespace returns a fresh namespace (or topic, created) whose name starts with prefix.
	NewNamespace func(tb testing.TB, prefix string) string
	// Write stores value under key in namespace with one data call; Read reads key back.
	Write func(ctx context.Context, conn grpc.ClientConnInterface, namespace, key, value string) error
	Read  func(ctx context.Context, conn grpc.ClientConnInterface, namespace, key string, opts ...grpc.CallOption) error
	// Stored looks at the backend directly: is anything stored under key in namespace?
	Stored func(tb testing.TB, namespace, key string) bool
	// Exists looks at the backend directly: does it hold anything at all for namespace (for a
	// Stream: does the topic exist)? The suite asks it about a name nobody created.
	Exists func(tb testing.TB, namespace string) bool
	// Subscribe opens a Subscribe over topics and returns the stream's first error (Stream only).
	Subscribe func(ctx context.Context, conn grpc.ClientConnInterface, topics []string) error
	// Conformance runs the plugin's own conformance suite over conn.
	Conformance func(t *testing.T, conn grpc.ClientConnInterface)
}

// Identities the suite's certificates and tokens carry.
const (
	writerSPIFFE = "spiffe://test.prism/ns/app/sa/writer"
	readerCN     = "reader"
	dnsName      = "svc.test.prism"
	adminCN      = "ops-admin"
	jwtSubject   = "jwt-user"
	issuer       = "https://issuer.test.prism"
	audience     = "prism-plugins"
)

type pki struct {
	dir                      string
	ca, otherCA              *CA
	certFile, keyFile, caPEM string
	clients                  map[string]*tls.Config
	signer, wrongSigner      jose.Signer
	jwksFile, auditFile      string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir(), ca: NewCA(t, "prism test CA"), otherCA: NewCA(t, "some other CA"), clients: map[string]*tls.Config{}}
	p.certFile, p.keyFile = filepath.Join(p.dir, "tls.crt"), filepath.Join(p.dir, "tls.key")
	p.caPEM = filepath.Join(p.dir, "ca.crt")
	p.jwksFile, p.auditFile = filepath.Join(p.dir, "jwks.json"), filepath.Join(p.dir, "audit.log")
	cert, key := p.ca.Issue(t, Leaf{CN: "plugin", Server: true})
	write(t, p.certFile, cert)
	write(t, p.keyFile, key)
	write(t, p.caPEM, p.ca.PEM)
	for name, leaf := range map[string]Leaf{
		"writer":  {CN: "ignored-because-spiffe-wins", DNS: []string{"ignored.test.prism"}, SPIFFE: writerSPIFFE},
		"reader":  {CN: readerCN},
		"dns":     {CN: "ignored-because-dns-wins", DNS: []string{dnsName}},
		"admin":   {CN: adminCN},
		"expired": {CN: readerCN, Expired: true},
	} {
		c, k := p.ca.Issue(t, leaf)
		p.clients[name] = ClientTLS(t, p.ca.PEM, c, k)
	}
	c, k := p.otherCA.Issue(t, Leaf{CN: readerCN})
	p.clients["other-ca"] = ClientTLS(t, p.ca.PEM, c, k)
	p.clients["none"] = ClientTLS(t, p.ca.PEM, nil, nil)

	key1, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	key2, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	p.signer, err = jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key1, KeyID: "k1"}}, nil)
	require.NoError(t, err)
	p.wrongSigner, err = jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key2, KeyID: "k1"}}, nil)
	require.NoError(t, err)
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key1.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	require.NoError(t, err)
	write(t, p.jwksFile, jwks)
	return p
}

func write(tb testing.TB, path string, data []byte) {
	tb.Helper()
	tmp := path + ".tmp"
	require.NoError(tb, os.WriteFile(tmp, data, 0o600))
	require.NoError(tb, os.Rename(tmp, path))
}

func (p *pki) token(t *testing.T, signer jose.Signer, aud string, expiry time.Time) string {
	t.Helper()
	tok, err := jwt.Signed(signer).Claims(jwt.Claims{
		Issuer: issuer, Subject: jwtSubject, Audience: jwt.Audience{aud},
		Expiry: jwt.NewNumericDate(expiry), IssuedAt: jwt.NewNumericDate(time.Now().Add(-2 * time.Hour)),
	}).Serialize()
	require.NoError(t, err)
	return tok
}

// config is the YAML the suite runs the plugin with; policies is the auth.policies list.
func (p *pki) config(policies string) string {
	return "plugin:\n  watch_debounce: 100ms\n" +
		"tls:\n  enabled: true\n  cert_file: " + p.certFile + "\n  key_file: " + p.keyFile +
		"\n  client_ca_file: " + p.caPEM + "\n  client_auth: require\n" +
		"auth:\n  jwt:\n    enabled: true\n    jwks_file: " + p.jwksFile + "\n    issuer: " + issuer +
		"\n    audience: " + audience + "\n  audit:\n    enabled: true\n    output: " + p.auditFile +
		"\n  policies:\n" + policies
}

// policiesFor grants by glob on the seca prefix and by exact name on nsB.
func policiesFor(nsB string) string {
	const pa = "seca*"
	return "    - {name: writer, identities: [\"spiffe://test.prism/ns/app/*\"], operations: [read, write], namespaces: [\"" + pa + "\"]}\n" +
		"    - {name: reader, identities: [" + readerCN + "], operations: [read], namespaces: [\"" + pa + "\", \"" + nsB + "\"]}\n" +
		"    - {name: dns, identities: [\"*.test.prism\"], operations: [Get, Tail], namespaces: [\"" + nsB + "\"]}\n" +
		"    - {name: jwt, identities: [" + jwtSubject + "], operations: [write], namespaces: [\"" + nsB + "\"]}\n" +
		"    - {name: admin, identities: [\"ops-*\"], operations: [admin]}\n"
}

func dial(t *testing.T, addr string, tc *tls.Config) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func code(err error) codes.Code { return status.Code(err) }

func bearer(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

func unique(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// Run runs the whole suite. It starts the plugin twice: once with the suite's policies, once with
// a grant-everything policy for the plugin's own conformance suite over mTLS.
func Run(t *testing.T, b Backend) {
	t.Helper()
	p := newPKI(t)
	// Namespaces seca<hex> match the writer's glob seca*; nsB is granted by exact name.
	nsA := b.NewNamespace(t, "seca")
	nsB := b.NewNamespace(t, "secb")
	nsC := b.NewNamespace(t, "secc")
	r := b.Start(t, p.config(policiesFor(nsB)))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	admin := dial(t, r.Addr, p.clients["admin"])
	waitCtx, waitCancel := context.WithTimeout(ctx, 60*time.Second)
	require.NoError(t, healthwait.Until(waitCtx, admin, "", healthpb.HealthCheckResponse_SERVING, nil), r.Logs.String())
	waitCancel()
	writer, reader, dns := dial(t, r.Addr, p.clients["writer"]), dial(t, r.Addr, p.clients["reader"]), dial(t, r.Addr, p.clients["dns"])
	secretValue := unique("value-never-logged-")
	var keys []string
	newKey := func() string {
		k := unique("key-never-logged-")
		keys = append(keys, k)
		return k
	}

	t.Run("handshakes without a good client certificate are refused", func(t *testing.T) {
		for _, name := range []string{"none", "other-ca", "expired"} {
			conn := dial(t, r.Addr, p.clients[name])
			_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			assert.Equal(t, codes.Unavailable, code(err), "%s: %v", name, err)
		}
	})

	t.Run("the SPIFFE URI SAN is the identity and writes what its policy grants", func(t *testing.T) {
		key := newKey()
		require.NoError(t, b.Write(ctx, writer, nsA, key, secretValue))
		assert.True(t, b.Stored(t, nsA, key))
		assert.True(t, b.Exists(t, nsA), "the backend-side checks see what an allowed call stored")
		require.NoError(t, b.Read(ctx, writer, nsA, key))
	})

	t.Run("a denied write names identity, operation and namespace and never reaches the backend", func(t *testing.T) {
		key := newKey()
		err := b.Write(ctx, writer, nsB, key, secretValue)
		require.Equal(t, codes.PermissionDenied, code(err), "%v", err)
		msg := status.Convert(err).Message()
		assert.Contains(t, msg, writerSPIFFE)
		assert.Contains(t, msg, nsB)
		assert.NotContains(t, msg, key)
		assert.NotContains(t, msg, secretValue)
		assert.False(t, b.Stored(t, nsB, key), "the denied write is not in the backend")
	})

	t.Run("a CN identity may read but not write", func(t *testing.T) {
		key := newKey()
		require.NoError(t, b.Write(ctx, writer, nsA, key, secretValue))
		require.NoError(t, b.Read(ctx, reader, nsA, key))
		denied := newKey()
		err := b.Write(ctx, reader, nsA, denied, secretValue)
		require.Equal(t, codes.PermissionDenied, code(err), "%v", err)
		assert.Contains(t, status.Convert(err).Message(), `"reader"`)
		assert.False(t, b.Stored(t, nsA, denied))
		assert.Equal(t, codes.PermissionDenied, code(b.Read(ctx, reader, nsC, newKey())), "namespace outside the globs")
	})

	t.Run("the first DNS SAN is the identity when there is no SPIFFE ID", func(t *testing.T) {
		err := b.Read(ctx, dns, nsA, newKey())
		require.Equal(t, codes.PermissionDenied, code(err))
		assert.Contains(t, status.Convert(err).Message(), dnsName)
		assert.NoError(t, b.Read(ctx, dns, nsB, newKey()))
	})

	t.Run("a valid bearer JWT's sub is the identity; bad tokens are UNAUTHENTICATED", func(t *testing.T) {
		key := newKey()
		good := p.token(t, p.signer, audience, time.Now().Add(time.Hour))
		require.NoError(t, b.Write(bearer(ctx, good), reader, nsB, key, secretValue), "the token's grant, not the certificate's")
		assert.True(t, b.Stored(t, nsB, key))
		for name, tok := range map[string]string{
			"expired":        p.token(t, p.signer, audience, time.Now().Add(-time.Hour)),
			"wrong audience": p.token(t, p.signer, "someone-else", time.Now().Add(time.Hour)),
			"wrong key":      p.token(t, p.wrongSigner, audience, time.Now().Add(time.Hour)),
			"not a JWT":      "abc.def.ghi",
		} {
			k := newKey()
			err := b.Write(bearer(ctx, tok), reader, nsB, k, secretValue)
			assert.Equal(t, codes.Unauthenticated, code(err), "%s: %v", name, err)
			assert.False(t, b.Stored(t, nsB, k), name)
		}
	})

	t.Run("denied and unauthenticated calls to a namespace nobody created leave no trace in the backend", func(t *testing.T) {
		nsD := unique("secd") // matches no policy, and is never created
		bad := p.token(t, p.wrongSigner, audience, time.Now().Add(time.Hour))
		for name, call := range map[string]func() (codes.Code, error){
			"write by the SPIFFE writer": func() (codes.Code, error) {
				return codes.PermissionDenied, b.Write(ctx, writer, nsD, newKey(), secretValue)
			},
			"write by the CN reader": func() (codes.Code, error) {
				return codes.PermissionDenied, b.Write(ctx, reader, nsD, newKey(), secretValue)
			},
			"write with a bad token": func() (codes.Code, error) {
				return codes.Unauthenticated, b.Write(bearer(ctx, bad), reader, nsD, newKey(), secretValue)
			},
			"read by the CN reader": func() (codes.Code, error) { return codes.PermissionDenied, b.Read(ctx, reader, nsD, newKey()) },
		} {
			want, err := call()
			assert.Equal(t, want, code(err), "%s: %v", name, err)
		}
		if b.Subscribe != nil {
			assert.Equal(t, codes.PermissionDenied, code(b.Subscribe(ctx, reader, []string{nsD})))
		}
		assert.False(t, b.Exists(t, nsD), "the backend has nothing for %s", nsD)
	})

	if b.Subscribe != nil {
		t.Run("a multi-topic Subscribe needs every topic granted", func(t *testing.T) {
			err := b.Subscribe(ctx, reader, []string{nsA, nsC})
			require.Equal(t, codes.PermissionDenied, code(err), "%v", err)
			assert.Contains(t, status.Convert(err).Message(), nsC)
		})
	}

	t.Run("GetInfo is open, Reload and GetMetrics need admin", func(t *testing.T) {
		_, err := pluginv1.NewPluginServiceClient(reader).GetInfo(ctx, &pluginv1.GetInfoRequest{})
		require.NoError(t, err)
		_, err = pluginv1.NewPluginServiceClient(reader).Reload(ctx, &pluginv1.ReloadRequest{})
		assert.Equal(t, codes.PermissionDenied, code(err))
		_, err = pluginv1.NewPluginServiceClient(writer).GetMetrics(ctx, &pluginv1.GetMetricsRequest{})
		assert.Equal(t, codes.PermissionDenied, code(err))
		_, err = pluginv1.NewPluginServiceClient(admin).Reload(ctx, &pluginv1.ReloadRequest{})
		assert.NoError(t, err)
	})

	t.Run("a reload with a broken policy keeps the old policies", func(t *testing.T) {
		r.WriteConfig(t, p.config(policiesFor(nsB)+"    - {name: broken, identities: [reader], operations: [wirte]}\n"))
		_, err := pluginv1.NewPluginServiceClient(admin).Reload(ctx, &pluginv1.ReloadRequest{})
		require.Equal(t, codes.FailedPrecondition, code(err), "%v", err)
		assert.Contains(t, status.Convert(err).Message(), "wirte")
		denied := newKey()
		assert.Equal(t, codes.PermissionDenied, code(b.Write(ctx, reader, nsA, denied, secretValue)))
		assert.False(t, b.Stored(t, nsA, denied), "the old policy still keeps the write from the backend")
		require.NoError(t, b.Read(ctx, reader, nsA, newKey()))
		r.WriteConfig(t, p.config(policiesFor(nsB)))
	})

	t.Run("a certificate rotated on disk serves new handshakes while old connections live on", func(t *testing.T) {
		watch, err := healthpb.NewHealthClient(reader).Watch(ctx, &healthpb.HealthCheckRequest{})
		require.NoError(t, err)
		_, err = watch.Recv()
		require.NoError(t, err)
		cert, key := p.ca.Issue(t, Leaf{CN: "plugin-rotated", Server: true})
		write(t, p.keyFile, key)
		write(t, p.certFile, cert)
		require.Eventually(t, func() bool {
			var served string
			tc := p.clients["reader"].Clone()
			tc.SessionTicketsDisabled = true
			tc.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
				c, err := x509.ParseCertificate(raw[0])
				if err == nil {
					served = c.Subject.CommonName
				}
				return err
			}
			conn, err := tls.Dial("tcp", r.Addr, withH2(tc))
			if err != nil {
				return false
			}
			_ = conn.Close()
			return served == "plugin-rotated"
		}, 60*time.Second, 100*time.Millisecond, "the watcher did not load the rotated certificate")
		require.NoError(t, b.Read(ctx, reader, nsA, newKey()), "the old connection still works")
		recvErr := make(chan error, 1)
		go func() {
			_, err := watch.Recv()
			recvErr <- err
		}()
		select {
		case err := <-recvErr:
			t.Fatalf("the health Watch stream opened before the rotation ended: %v", err)
		case <-time.After(300 * time.Millisecond):
		}
	})

	t.Run("audit lines are complete, carry the request id and no keys or values", func(t *testing.T) {
		var header metadata.MD
		rctx := metadata.AppendToOutgoingContext(ctx, "x-request-id", "req-from-client-1")
		require.NoError(t, b.Read(rctx, reader, nsA, newKey(), grpc.Header(&header)))
		assert.Equal(t, []string{"req-from-client-1"}, header.Get("x-request-id"))
		require.NoError(t, b.Read(ctx, reader, nsA, newKey(), grpc.Header(&header)))

		generated := header.Get("x-request-id")
		require.NotEmpty(t, generated, "a generated request id is returned")
		// The sink writes in the background, within its flush interval after a call.
		var data []byte
		require.Eventually(t, func() bool {
			var err error
			data, err = os.ReadFile(p.auditFile)
			return err == nil && bytes.Contains(data, []byte(`"request_id":"req-from-client-1"`)) &&
				bytes.Contains(data, []byte(`"request_id":"`+generated[0]+`"`))
		}, 10*time.Second, 50*time.Millisecond, "the audit lines of the last calls reach the file")
		var lines []map[string]any
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			var line map[string]any
			require.NoError(t, json.Unmarshal(sc.Bytes(), &line), sc.Text())
			lines = append(lines, line)
		}
		find := func(identity, code, requestID string) bool {
			for _, l := range lines {
				if l["identity"] == identity && l["code"] == code && (requestID == "" || l["request_id"] == requestID) {
					return true
				}
			}
			return false
		}
		for _, k := range append(keys, secretValue) {
			assert.NotContains(t, string(data), k)
		}
		for _, line := range lines {
			for _, field := range []string{"time", "event", "request_id", "identity", "peer", "method"} {
				assert.NotEmpty(t, line[field], "%s missing in %v", field, line)
			}
			if line["event"] != "stream_start" {
				for _, field := range []string{"code", "duration_us", "request_items", "response_items"} {
					assert.Contains(t, line, field, line)
				}
			}
		}
		assert.True(t, find(writerSPIFFE, "OK", ""), "the allowed write")
		assert.True(t, find(writerSPIFFE, "PermissionDenied", ""), "the denied write")
		assert.True(t, find(jwtSubject, "OK", ""), "the JWT write")
		assert.True(t, find(readerCN, "OK", "req-from-client-1"), "the client's request id")
		assert.True(t, find(adminCN, "OK", ""), "the admin Reload")
	})

	t.Run("Drain needs admin", func(t *testing.T) {
		_, err := pluginv1.NewPluginServiceClient(reader).Drain(ctx, &pluginv1.DrainRequest{})
		require.Equal(t, codes.PermissionDenied, code(err))
		resp, err := pluginv1.NewPluginServiceClient(admin).Drain(ctx, &pluginv1.DrainRequest{})
		require.NoError(t, err)
		assert.True(t, resp.GetDrained())
	})

	if b.Conformance != nil {
		t.Run("the plugin's conformance suite passes with mTLS and policies on", func(t *testing.T) {
			p2 := newPKI(t)
			r2 := b.Start(t, p2.config("    - {name: all, identities: [\"spiffe://test.prism/*\"], operations: [\"*\"], namespaces: [\"*\"]}\n"))
			conn := dial(t, r2.Addr, p2.clients["writer"])
			waitCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
			defer cancel()
			require.NoError(t, healthwait.Until(waitCtx, conn, "", healthpb.HealthCheckResponse_SERVING, nil))
			b.Conformance(t, conn)
		})
	}
}

func withH2(tc *tls.Config) *tls.Config {
	tc = tc.Clone()
	tc.NextProtos = []string{"h2"}
	return tc
}
