package core

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/prism-gateway/plugins/core/config"
)

// tlsReloader serves the current certificate and client CA, which Reload can replace while
// connections keep flowing.
type tlsReloader struct {
	current atomic.Pointer[tlsMaterial]
}

type tlsMaterial struct {
	cert       tls.Certificate
	clientCAs  *x509.CertPool
	clientAuth tls.ClientAuthType
	raw        []byte // cert, key and CA bytes, to tell whether a reload changed anything
}

func newTLSReloader(cfg config.TLSConfig) (*tlsReloader, error) {
	r := &tlsReloader{}
	m, _, err := r.load(cfg)
	if err != nil {
		return nil, err
	}
	r.current.Store(m)
	return r, nil
}

// load reads the files again into new material, without putting it in force (a reload swaps it
// in with commit once everything else is accepted), and reports whether their contents changed.
func (r *tlsReloader) load(cfg config.TLSConfig) (*tlsMaterial, bool, error) {
	certPEM, err := os.ReadFile(cfg.CertFile)
	if err != nil {
		return nil, false, fmt.Errorf("tls.cert_file: %w", err)
	}
	keyPEM, err := os.ReadFile(cfg.KeyFile)
	if err != nil {
		return nil, false, fmt.Errorf("tls.key_file: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, false, fmt.Errorf("tls.cert_file/tls.key_file: %w", err)
	}
	m := &tlsMaterial{cert: cert, clientAuth: tls.NoClientCert}
	m.raw = append(append([]byte{}, certPEM...), keyPEM...)
	if cfg.ClientAuth == "require" {
		caPEM, err := os.ReadFile(cfg.ClientCAFile)
		if err != nil {
			return nil, false, fmt.Errorf("tls.client_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, false, errors.New("tls.client_ca_file: no PEM certificates found")
		}
		m.clientCAs, m.clientAuth = pool, tls.RequireAndVerifyClientCert
		m.raw = append(m.raw, caPEM...)
	}
	prev := r.current.Load()
	return m, prev != nil && !bytes.Equal(prev.raw, m.raw), nil
}

// commit puts loaded material in force for new handshakes; open connections keep theirs.
func (r *tlsReloader) commit(m *tlsMaterial) { r.current.Store(m) }

// serverConfig builds each handshake's config from the material current at that moment.
func (r *tlsReloader) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := r.current.Load()
			return &tls.Config{
				MinVersion:   tls.VersionTLS12,
				Certificates: []tls.Certificate{m.cert},
				ClientCAs:    m.clientCAs,
				ClientAuth:   m.clientAuth,
				NextProtos:   []string{"h2"},
			}, nil
		},
	}
}

// BackendTLSConfig is the client TLS configuration plugins use to reach their backends: TLS 1.2
// or later, the system roots, or only the PEM bundle in caFile when it is set. Errors name the
// backend.tls_ca_file key.
func BackendTLSConfig(caFile string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile == "" {
		return tc, nil
	}
	pem, err := os.ReadFile(caFile) //nolint:gosec // the path is the operator's own config value
	if err != nil {
		return nil, fmt.Errorf("backend.tls_ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("backend.tls_ca_file: no PEM certificates found")
	}
	tc.RootCAs = pool
	return tc, nil
}
