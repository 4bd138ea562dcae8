package credentials

import (
	"fmt"
	"log/slog"
)

// Options are what New needs beyond the config block.
type Options struct {
	// Static is the backend section's own credentials: the static source's values, and the
	// fallback username of a file that holds only a password.
	Static Credentials
	// Log receives change and failure messages (never values).
	Log *slog.Logger
	// Metrics records rotations, errors, expiry and renewals; nil records nothing.
	Metrics *Metrics
}

// New returns the source cfg selects. It does not start it.
func New(cfg Config, opts Options) (Source, error) {
	switch cfg.Source {
	case KindStatic, "":
		return NewStatic(opts.Static), nil
	case KindFile:
		return NewFile(cfg.File, opts.Static, opts.Log, opts.Metrics), nil
	case KindVault:
		return newVault(cfg.Vault, opts)
	}
	return nil, fmt.Errorf("credentials.source: must be static, file or vault, got %q", cfg.Source)
}
