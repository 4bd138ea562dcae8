package auth_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/prism-gateway/plugins/core/auth"
)

func TestFromCertificate(t *testing.T) {
	spiffe, _ := url.Parse("spiffe://prod.example/ns/orders/sa/api")
	web, _ := url.Parse("https://example.com/")
	tests := []struct {
		name string
		cert *x509.Certificate
		want auth.Identity
	}{
		{"the SPIFFE URI SAN wins", &x509.Certificate{URIs: []*url.URL{web, spiffe}, DNSNames: []string{"api.example"}, Subject: pkix.Name{CommonName: "api"}},
			auth.Identity{Name: "spiffe://prod.example/ns/orders/sa/api", Source: auth.SourceSPIFFE}},
		{"else the first DNS SAN", &x509.Certificate{URIs: []*url.URL{web}, DNSNames: []string{"api.example", "b.example"}, Subject: pkix.Name{CommonName: "api"}},
			auth.Identity{Name: "api.example", Source: auth.SourceDNS}},
		{"else the CN", &x509.Certificate{Subject: pkix.Name{CommonName: "api"}}, auth.Identity{Name: "api", Source: auth.SourceCN}},
		{"else anonymous", &x509.Certificate{}, auth.Identity{Name: auth.Anonymous, Source: auth.SourceAnonymous}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, auth.FromCertificate(tt.cert))
			assert.Equal(t, tt.want, auth.FromCertificate(tt.cert), "the same again from the cache")
		})
	}
}

func TestASPIFFEIdentityIsBuiltOncePerCertificate(t *testing.T) {
	spiffe, _ := url.Parse("spiffe://prod.example/ns/orders/sa/api")
	cert := &x509.Certificate{URIs: []*url.URL{spiffe}}
	auth.FromCertificate(cert)
	allocs := testing.AllocsPerRun(100, func() { auth.FromCertificate(cert) })
	t.Logf("FromCertificate of a known SPIFFE certificate: %.0f allocs", allocs)
	assert.Zero(t, allocs)
}
