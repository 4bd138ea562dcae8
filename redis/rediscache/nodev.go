//go:build nodev

package rediscache

import "github.com/prism-gateway/plugins/core"

// EnableDevMode implements core.DevModeSupporter in a build without dev backends (-tags nodev,
// as in the container images): --dev fails and says why, and miniredis is not linked.
func (p *Plugin) EnableDevMode(string) error { return core.ErrNoDevBackends }

// startDevRedis is unreachable here: EnableDevMode never succeeds.
func (p *Plugin) startDevRedis() error { return core.ErrNoDevBackends }
