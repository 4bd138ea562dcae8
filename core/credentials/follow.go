package credentials

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Open builds the source cfg selects for a plugin, with its metrics registered on reg (nil:
// unregistered). static is the backend section's own credentials. The source is not started.
func Open(cfg Config, static Credentials, log *slog.Logger, reg prometheus.Registerer) (Source, error) {
	metrics, err := NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	src, err := New(cfg, Options{Static: static, Log: log, Metrics: metrics})
	if err != nil {
		return nil, fmt.Errorf("backend.credentials: %w", err)
	}
	return src, nil
}

// Follower is what a plugin does when its credentials move on.
type Follower struct {
	// Changed runs after each change of credentials, with the ones replaced (prev) and the new
	// ones (next): the plugin moves its connections to next.
	Changed func(prev, next Credentials)
	// Expiring runs once, ahead before the current credentials expire, when nothing renewed or
	// replaced them (Vault unreachable): the plugin stops using them, so no connection outlives
	// its credentials.
	Expiring func(cur Credentials)
}

// Follow calls f's hooks as src's credentials change or near their expiry, until ctx ends. It
// is the loop every plugin runs next to its backend client.
func Follow(ctx context.Context, src Source, ahead time.Duration, f Follower) {
	var actedOn time.Time // the expiry deadline last acted on
	for {
		changed := src.Changes() // before Current, so a change in between is not missed
		cur, _ := src.Current()
		var deadline <-chan time.Time
		var timer *time.Timer
		at := cur.Expiry.Add(-ahead)
		if !cur.Expiry.IsZero() && at.After(actedOn) {
			timer = time.NewTimer(time.Until(at))
			deadline = timer.C
		}
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return
		case <-changed:
			if timer != nil {
				timer.Stop()
			}
			next, _ := src.Current()
			f.Changed(cur, next)
		case <-deadline:
			actedOn = at
			// A renewed lease moves the expiry without a change: nothing to do then.
			if now, _ := src.Current(); now.Serial == cur.Serial && !now.Expiry.After(cur.Expiry) {
				f.Expiring(cur)
			}
		}
	}
}
