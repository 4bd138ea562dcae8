package kafkastream

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/prism-gateway/plugins/core"
	"github.com/prism-gateway/plugins/core/credentials"
)

// saslMechanism returns the SASL mechanism name, taking its user and password from src each
// time a connection authenticates: when it is opened and when the broker asks for a new
// session (connections.max.reauth.ms, KIP-368). Rotated credentials are so used without new
// clients, and no call fails for the switch. Nil for none.
func saslMechanism(name string, src credentials.Source) sasl.Mechanism {
	current := func() (user, pass string, err error) {
		creds, err := src.Current()
		if err != nil {
			return "", "", fmt.Errorf("backend credentials (%s): %w", src.Describe().Kind, err)
		}
		if creds.Username == "" {
			return "", "", errors.New("backend credentials: no SASL username (set backend.sasl_username or a username field)")
		}
		return creds.Username, creds.Password.Reveal(), nil
	}
	scramAuth := func(context.Context) (scram.Auth, error) {
		user, pass, err := current()
		return scram.Auth{User: user, Pass: pass}, err
	}
	switch name {
	case MechanismPlain:
		return plain.Plain(func(context.Context) (plain.Auth, error) {
			user, pass, err := current()
			return plain.Auth{User: user, Pass: pass}, err
		})
	case MechanismScramSHA256:
		return scram.Sha256(scramAuth)
	case MechanismScramSHA512:
		return scram.Sha512(scramAuth)
	}
	return nil
}

// staticCredentials are backend.sasl_username and backend.sasl_password: the static source's
// values, and the username of a file or KV secret that holds only a password.
func (b *BackendConfig) staticCredentials() credentials.Credentials {
	return credentials.Credentials{Username: b.SASLUsername, Password: b.SASLPassword}
}

// credentialsSource is the source Initialize set, or the static keys before that.
func (b *BackendConfig) credentialsSource() credentials.Source {
	if b.creds != nil {
		return b.creds
	}
	return credentials.NewStatic(b.staticCredentials())
}

// newCredentialsSource builds the source backend.credentials selects. It is started in Start.
func newCredentialsSource(b *BackendConfig, env core.Env) (credentials.Source, error) {
	return credentials.Open(b.Credentials, b.staticCredentials(), env.Logger, env.Metrics)
}
