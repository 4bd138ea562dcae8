package credentials

import (
	"fmt"
	"strconv"
	"time"
)

// Capabilities renders a description as GetInfo capability entries, all prefixed
// "credentials_": source, location, username, expiry (RFC 3339, absent when never), serial and
// last_error (absent when the last refresh worked). Never values.
func (d Description) Capabilities() map[string]string {
	m := map[string]string{
		"credentials_source": d.Kind,
		"credentials_serial": strconv.FormatUint(d.Serial, 10),
	}
	if d.Location != "" {
		m["credentials_location"] = d.Location
	}
	if d.Username != "" {
		m["credentials_username"] = d.Username
	}
	if !d.Expiry.IsZero() {
		m["credentials_expiry"] = d.Expiry.UTC().Format(time.RFC3339)
	}
	if d.LastError != "" {
		m["credentials_last_error"] = d.LastError
	}
	return m
}

// Check is what a plugin's Health calls: nil while the source holds usable credentials, else an
// error saying why (expired, and why renewal failed), fit for a NOT_SERVING reason.
func Check(src Source) error {
	if _, err := src.Current(); err != nil {
		return fmt.Errorf("backend credentials (%s): %w", src.Describe().Kind, err)
	}
	return nil
}
