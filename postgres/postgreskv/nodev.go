//go:build nodev

package postgreskv

import (
	"context"

	"github.com/prism-gateway/plugins/core"
)

// EnableDevMode implements core.DevModeSupporter in a build without dev backends (-tags nodev,
// as in the container images): --dev fails and says why, and SQLite is not linked.
func (p *Plugin) EnableDevMode(string) error { return core.ErrNoDevBackends }

// startDev is unreachable here: EnableDevMode never succeeds.
func (p *Plugin) startDev(context.Context) error { return core.ErrNoDevBackends }

// devSchemaVersion is unreachable here: there is no dev database.
func devSchemaVersion() int { return 0 }
