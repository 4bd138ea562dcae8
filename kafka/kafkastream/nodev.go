//go:build nodev

package kafkastream

import (
	"fmt"

	"github.com/prism-gateway/plugins/core"
)

// EnableDevMode implements core.DevModeSupporter in a build without dev backends (-tags nodev,
// as in the container images): --dev fails and says why, and kfake is not linked.
func (p *Plugin) EnableDevMode(string) error { return core.ErrNoDevBackends }

// startDevKafka is unreachable here: EnableDevMode never succeeds.
func (p *Plugin) startDevKafka() error {
	return fmt.Errorf("embedded kafka in %q: %w", p.devDir, core.ErrNoDevBackends)
}
