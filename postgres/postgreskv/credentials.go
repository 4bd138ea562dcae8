package postgreskv

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/prism-gateway/plugins/core/credentials"
)

// retireAhead is how long before their expiry the connections made with credentials are closed;
// from then on no new connection is made with them. A call still running on such a connection
// finishes first, so this is its time to do so before the database stops accepting the
// credentials (and Vault drops the role).
const retireAhead = time.Second

// credentialsHook is the pool's BeforeConnect: every new connection logs in with the source's
// current credentials, so rotated ones are used without a new pool.
func credentialsHook(src credentials.Source) func(context.Context, *pgx.ConnConfig) error {
	return func(_ context.Context, cc *pgx.ConnConfig) error {
		creds, err := src.Current()
		if err != nil {
			return fmt.Errorf("backend credentials (%s): %w", src.Describe().Kind, err)
		}
		if !creds.Expiry.IsZero() && time.Until(creds.Expiry) < retireAhead {
			return fmt.Errorf("backend credentials (%s) for user %s expire at %s and were not renewed",
				src.Describe().Kind, creds.Username, creds.Expiry.UTC().Format(time.RFC3339))
		}
		if creds.Username != "" {
			cc.User = creds.Username
		}
		cc.Password = creds.Password.Reveal()
		if len(creds.ClientCertPEM) == 0 && !creds.ClientKeyPEM.IsSet() {
			return nil
		}
		// The error of X509KeyPair names what is wrong, never the PEM it was given.
		cert, err := tls.X509KeyPair(creds.ClientCertPEM, []byte(creds.ClientKeyPEM.Reveal()))
		if err != nil {
			return fmt.Errorf("backend credentials (%s): client certificate: %w", src.Describe().Kind, err)
		}
		// cc is the pool's per-connection copy, TLS configurations cloned: changing them here
		// touches no other connection.
		withTLS := 0
		if cc.TLSConfig != nil {
			useClientCert(cc.TLSConfig, &cert)
			withTLS++
		}
		for _, fb := range cc.Fallbacks {
			if fb.TLSConfig != nil {
				useClientCert(fb.TLSConfig, &cert)
				withTLS++
			}
		}
		if withTLS == 0 {
			return errors.New("backend credentials: a client certificate needs TLS to the database: set backend.ssl_mode")
		}
		return nil
	}
}

// useClientCert makes tc present cert, in place of any backend.tls_cert_file.
func useClientCert(tc *tls.Config, cert *tls.Certificate) {
	tc.Certificates = nil
	tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
}

// retireLoop closes the pool's connections whenever the credentials they were made with are
// replaced, and retireAhead before the current ones expire when no replacement came (Vault
// unreachable). pgxpool's Reset closes idle connections at once and the ones in use when their
// call returns them, so no call fails; every connection opened after the Reset logs in with the
// newer credentials.
func (p *Plugin) retireLoop(ctx context.Context, src credentials.Source) {
	credentials.Follow(ctx, src, retireAhead, credentials.Follower{
		Changed: func(_, next credentials.Credentials) {
			p.retireConnections()
			p.log.Info("backend credentials changed; connections made with the previous ones are closed as their calls finish",
				"source", src.Describe().Kind, "username", next.Username, "serial", next.Serial)
		},
		Expiring: func(cur credentials.Credentials) {
			p.retireConnections()
			p.log.Warn("backend credentials expire and were not renewed; closing their connections",
				"source", src.Describe().Kind, "username", cur.Username, "expiry", cur.Expiry, "last_error", src.Describe().LastError)
		},
	})
}

// retireConnections closes every connection of the current pool without failing a call: the
// ones in use close when released.
func (p *Plugin) retireConnections() {
	if pool := p.currentPool(); pool != nil {
		pool.Reset()
	}
}
