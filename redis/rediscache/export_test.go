package rediscache

import "github.com/prism-gateway/plugins/core/credentials"

// CurrentCredentials lets the credential tests see what the source issued, to scan the logs for
// the passwords Vault made.
func (p *Plugin) CurrentCredentials() (credentials.Credentials, error) {
	return p.credentialsSource().Current()
}
