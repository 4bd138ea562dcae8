package rediscache

import (
	"context"
	"fmt"
	"time"

	"github.com/prism-gateway/plugins/core"
	"github.com/prism-gateway/plugins/core/credentials"
	"github.com/prism-gateway/plugins/core/retire"
)

// retireAhead is how long before their expiry a client whose connections logged in with
// credentials is replaced; from then on no new connection logs in with them.
const retireAhead = time.Second

// newCredentialsSource builds the source backend.credentials selects, with the backend section's
// username and password as the static values. It is started in Start.
func newCredentialsSource(b *BackendConfig, env core.Env) (credentials.Source, error) {
	return credentials.Open(b.Credentials, b.staticCredentials(), env.Logger, env.Metrics)
}

// credentialsProvider is go-redis's per-connection login: the source's current user and
// password, or an error once they have expired (or are about to) without a replacement.
func credentialsProvider(src credentials.Source) func(context.Context) (string, string, error) {
	return func(context.Context) (string, string, error) {
		creds, err := src.Current()
		if err != nil {
			return "", "", fmt.Errorf("backend credentials (%s): %w", src.Describe().Kind, err)
		}
		if !creds.Expiry.IsZero() && time.Until(creds.Expiry) < retireAhead {
			return "", "", fmt.Errorf("backend credentials (%s) for user %s expire at %s and were not renewed",
				src.Describe().Kind, creds.Username, creds.Expiry.UTC().Format(time.RFC3339))
		}
		return creds.Username, creds.Password.Reveal(), nil
	}
}

// retireLoop moves calls to a new client whenever the credentials change, so every connection
// logs in as the new user, and closes the old client once its calls are done (at the latest just
// before the old credentials expire, when Vault drops that ACL user and Redis closes its
// connections). When credentials near their expiry with no replacement (Vault unreachable), it
// replaces the client at once: no connection outlives its credentials, and calls fail with
// UNAVAILABLE until new ones come.
func (p *Plugin) retireLoop(ctx context.Context, src credentials.Source) {
	credentials.Follow(ctx, src, retireAhead, credentials.Follower{
		Changed: func(prev, next credentials.Credentials) {
			grace := retire.Grace
			if !prev.Expiry.IsZero() {
				grace = max(0, min(grace, time.Until(prev.Expiry.Add(-retireAhead))))
			}
			p.replaceClient("backend credentials changed; calls move to a client that logs in with the new ones", grace)
			p.log.Info("backend credentials changed", "source", src.Describe().Kind,
				"username", next.Username, "serial", next.Serial, "old_client_closes_in", grace.String())
		},
		Expiring: func(cur credentials.Credentials) {
			p.replaceClient("backend credentials expire and were not renewed; closing their connections", 0)
			p.log.Warn("backend credentials expire and were not renewed", "source", src.Describe().Kind,
				"username", cur.Username, "expiry", cur.Expiry, "last_error", src.Describe().LastError)
		},
	})
}

// replaceClient swaps in a new client on the same settings and closes the old one after grace.
func (p *Plugin) replaceClient(reason string, grace time.Duration) {
	p.reconfigMu.Lock()
	defer p.reconfigMu.Unlock()
	if p.current.Load() == nil {
		return // stopped
	}
	st, err := newStore(p.backend, p.metrics, p.creds)
	if err != nil {
		p.log.Error("cannot replace the redis client", "reason", reason, "error", err)
		return
	}
	if prev := p.current.Swap(st); prev != nil {
		p.retire(prev, grace)
	}
}
