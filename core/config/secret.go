package config

import (
	"log/slog"
	"net/url"
)

// Redacted is what a secret prints as anywhere it is formatted, marshalled or logged.
const Redacted = "[REDACTED]"

// Secret holds a credential. Every way of printing it yields [REDACTED]; only Reveal gives the value.
type Secret string

// Reveal returns the secret's value, for the one place that hands it to a backend client.
func (s Secret) Reveal() string { return string(s) }

// IsSet reports whether the secret holds a value.
func (s Secret) IsSet() bool { return s != "" }

// String implements fmt.Stringer.
func (s Secret) String() string { return redactedOrEmpty(s != "") }

// GoString implements fmt.GoStringer so %#v is covered too.
func (s Secret) GoString() string { return redactedOrEmpty(s != "") }

// MarshalText implements encoding.TextMarshaler (JSON and text output).
func (s Secret) MarshalText() ([]byte, error) { return []byte(redactedOrEmpty(s != "")), nil }

// MarshalYAML implements yaml.Marshaler for --check-config output.
func (s Secret) MarshalYAML() (any, error) { return redactedOrEmpty(s != ""), nil }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redactedOrEmpty(s != "")) }

func redactedOrEmpty(set bool) string {
	if set {
		return Redacted
	}
	return ""
}

// SecretURL holds a connection URL whose password (and any password query parameter) is secret.
// It prints with those parts redacted, so hosts and options stay visible to operators.
type SecretURL string

// Reveal returns the full URL, for the one place that hands it to a backend client.
func (u SecretURL) Reveal() string { return string(u) }

// IsSet reports whether the URL holds a value.
func (u SecretURL) IsSet() bool { return u != "" }

// Password returns the password embedded in the URL, if any, so it can be scrubbed from logs.
func (u SecretURL) Password() string {
	parsed, err := url.Parse(string(u))
	if err != nil {
		return ""
	}
	if p, ok := parsed.User.Password(); ok {
		return p
	}
	return parsed.Query().Get("password")
}

// String implements fmt.Stringer with the password redacted.
func (u SecretURL) String() string {
	if u == "" {
		return ""
	}
	parsed, err := url.Parse(string(u))
	if err != nil || parsed.Scheme == "" {
		// Not a URL (perhaps a key=value DSN): the whole value may hold a password.
		return Redacted
	}
	if _, ok := parsed.User.Password(); ok {
		parsed.User = url.UserPassword(parsed.User.Username(), "REDACTED")
	}
	if q := parsed.Query(); q.Has("password") {
		q.Set("password", "REDACTED")
		parsed.RawQuery = q.Encode()
	}
	return parsed.String()
}

// GoString implements fmt.GoStringer.
func (u SecretURL) GoString() string { return u.String() }

// MarshalText implements encoding.TextMarshaler.
func (u SecretURL) MarshalText() ([]byte, error) { return []byte(u.String()), nil }

// MarshalYAML implements yaml.Marshaler.
func (u SecretURL) MarshalYAML() (any, error) { return u.String(), nil }

// LogValue implements slog.LogValuer.
func (u SecretURL) LogValue() slog.Value { return slog.StringValue(u.String()) }
