package postgreskv

import (
	"errors"

	"github.com/prism-gateway/plugins/core/credentials"
)

// CurrentCredentials exposes the plugin's current backend credentials to the external tests,
// which need the issued passwords to prove that they never reach a log and that they stop
// working once expired.
func CurrentCredentials(p *Plugin) (credentials.Credentials, error) {
	src := p.credentialsSource()
	if src == nil {
		return credentials.Credentials{}, errors.New("no credentials source (dev mode or not initialized)")
	}
	return src.Current()
}
