package credentials

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prism-gateway/plugins/core/config"
)

// ErrExpired is returned by Current when the newest credentials a source holds have expired and
// no replacement could be obtained.
var ErrExpired = errors.New("credentials expired")

// ErrNoCredentials is returned by Current before a source has obtained any credentials.
var ErrNoCredentials = errors.New("no credentials obtained yet")

// Credentials is one set of backend credentials.
type Credentials struct {
	// Username is the backend user; it is not secret and may be logged.
	Username string
	// Password is the backend password.
	Password config.Secret
	// ClientCertPEM and ClientKeyPEM are an optional client certificate and key (postgres mTLS).
	ClientCertPEM []byte
	ClientKeyPEM  config.Secret
	// Expiry is when the backend stops accepting these credentials; zero means never.
	Expiry time.Time
	// Serial increases by one each time the source yields different credentials.
	Serial uint64
}

// Expired reports whether the credentials are no longer valid at now.
func (c Credentials) Expired(now time.Time) bool {
	return !c.Expiry.IsZero() && !now.Before(c.Expiry)
}

// sameValues reports whether two credentials carry the same values, ignoring serial and expiry.
func (c Credentials) sameValues(o Credentials) bool {
	return c.Username == o.Username && c.Password == o.Password &&
		string(c.ClientCertPEM) == string(o.ClientCertPEM) && c.ClientKeyPEM == o.ClientKeyPEM
}

// Source yields the current credentials of one backend and announces changes.
type Source interface {
	// Start obtains the first credentials and starts any background watching or renewal. It fails
	// when no credentials can be obtained.
	Start(ctx context.Context) error
	// Stop ends background work and waits for it. It is idempotent and safe before Start.
	Stop(ctx context.Context) error
	// Current returns the newest credentials; ErrNoCredentials before Start, ErrExpired (wrapped
	// with the reason renewal failed) once they have expired.
	Current() (Credentials, error)
	// Changes returns a channel that is closed at the next change of credentials. Call it again
	// after each close to keep listening.
	Changes() <-chan struct{}
	// Describe says where credentials come from, for GetInfo and --check-config; never values.
	Describe() Description
}

// Description is what operators may see about a source.
type Description struct {
	// Kind is static, file or vault.
	Kind string `json:"kind" yaml:"kind"`
	// Location is the file path, or the Vault address and secret path; empty for static.
	Location string `json:"location,omitempty" yaml:"location,omitempty"`
	// Username is the current backend user.
	Username string `json:"username,omitempty" yaml:"username,omitempty"`
	// Expiry is when the current credentials expire; zero means never.
	Expiry time.Time `json:"expiry,omitzero" yaml:"expiry,omitempty"`
	// Serial counts credential changes.
	Serial uint64 `json:"serial" yaml:"serial"`
	// LastError is the last failure to refresh, with no secret in it; empty when the last
	// attempt worked.
	LastError string `json:"last_error,omitempty" yaml:"last_error,omitempty"`
}

// holder keeps the current credentials of a source and broadcasts their changes. Sources embed it.
type holder struct {
	mu      sync.Mutex
	creds   Credentials
	have    bool
	lastErr string
	changed chan struct{}
	now     func() time.Time
}

func newHolder() *holder {
	return &holder{changed: make(chan struct{}), now: time.Now}
}

// set stores creds; it returns true (and wakes listeners) when the values changed. onChange, if
// not nil, runs with the stored credentials before listeners wake, so metrics and logs are in
// place when they look.
func (h *holder) set(creds Credentials, onChange func(Credentials)) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastErr = ""
	if h.have && h.creds.sameValues(creds) {
		h.creds.Expiry = creds.Expiry // a later expiry for the same values is no rotation
		return false
	}
	creds.Serial = h.creds.Serial + 1
	h.creds, h.have = creds, true
	if onChange != nil {
		onChange(creds)
	}
	close(h.changed)
	h.changed = make(chan struct{})
	return true
}

// updateExpiry moves the current credentials' expiry (a renewed lease) without a change signal.
func (h *holder) updateExpiry(expiry time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.creds.Expiry = expiry
	h.lastErr = ""
}

func (h *holder) setError(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastErr = err.Error()
}

func (h *holder) current() (Credentials, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.have {
		return Credentials{}, ErrNoCredentials
	}
	if h.creds.Expired(h.now()) {
		if h.lastErr != "" {
			return h.creds, errors.Join(ErrExpired, errors.New(h.lastErr))
		}
		return h.creds, ErrExpired
	}
	return h.creds, nil
}

func (h *holder) changes() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.changed
}

func (h *holder) describe(kind, location string) Description {
	h.mu.Lock()
	defer h.mu.Unlock()
	return Description{
		Kind: kind, Location: location, Username: h.creds.Username,
		Expiry: h.creds.Expiry, Serial: h.creds.Serial, LastError: h.lastErr,
	}
}
