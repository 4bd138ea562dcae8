package auth

import (
	"crypto/x509"
	"net/url"
	"sync"
	"sync/atomic"
)

// Source says where an identity came from.
type Source string

// The identity sources, most specific first.
const (
	SourceJWT       Source = "jwt"
	SourceSPIFFE    Source = "spiffe"
	SourceDNS       Source = "dns"
	SourceCN        Source = "cn"
	SourceAnonymous Source = "anonymous"
)

// Anonymous is the identity of a caller that presented nothing: no client certificate, no token.
const Anonymous = "anonymous"

// Identity is who a caller is.
type Identity struct {
	Name   string
	Source Source
}

// FromCertificate names the holder of a verified client certificate: its SPIFFE URI SAN, else
// its first DNS SAN, else its subject CN.
func FromCertificate(cert *x509.Certificate) Identity {
	for _, u := range cert.URIs {
		if u.Scheme == "spiffe" {
			return Identity{Name: spiffeID(cert, u), Source: SourceSPIFFE}
		}
	}
	if len(cert.DNSNames) > 0 {
		return Identity{Name: cert.DNSNames[0], Source: SourceDNS}
	}
	if cert.Subject.CommonName != "" {
		return Identity{Name: cert.Subject.CommonName, Source: SourceCN}
	}
	return Identity{Name: Anonymous, Source: SourceAnonymous}
}

// maxCachedSPIFFE bounds the cache of rendered SPIFFE IDs; it is emptied when full.
const maxCachedSPIFFE = 1024

// spiffeIDs maps a connection's certificate (the same *x509.Certificate for every call on the
// connection) to its rendered SPIFFE ID, so a call does not build the string again.
var (
	spiffeIDs      sync.Map // *x509.Certificate -> string
	spiffeIDsCount atomic.Int64
)

func spiffeID(cert *x509.Certificate, u *url.URL) string {
	if v, ok := spiffeIDs.Load(cert); ok {
		return v.(string)
	}
	id := u.String()
	if spiffeIDsCount.Add(1) > maxCachedSPIFFE {
		spiffeIDs.Clear()
		spiffeIDsCount.Store(1)
	}
	spiffeIDs.Store(cert, id)
	return id
}
