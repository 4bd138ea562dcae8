package core

import (
	"context"
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/prism-gateway/plugins/core/config"
)

// Plugin is one abstraction served on one backend. Core calls Initialize, Register, Start, then
// Health periodically, and Stop once at the end (also after a failed Start).
type Plugin interface {
	// Info describes the plugin; it must be valid before Initialize.
	Info() Info
	// ConfigSchema declares the plugin's config sections, defaults and env aliases.
	ConfigSchema() config.Schema
	// Initialize validates and keeps the configuration; it must not need the backend to be up.
	Initialize(ctx context.Context, cfg *config.Config, env Env) error
	// Register adds the plugin's data services to the server.
	Register(s grpc.ServiceRegistrar)
	// Start creates backend clients and background work. It returns quickly and does not fail
	// because the backend is down: Health reports that, and the plugin reconnects on its own. It
	// fails when no backend credentials can be obtained at all (core/credentials).
	Start(ctx context.Context) error
	// Health makes a real round trip to the backend; nil means the plugin can serve.
	Health(ctx context.Context) error
	// Stop releases everything Start made. It is safe before Start and safe twice.
	Stop(ctx context.Context) error
}

// Info is what GetInfo reports about a plugin.
type Info struct {
	// Name is the plugin's short name, e.g. "postgres".
	Name string
	// Backend names the datastore, e.g. "postgresql".
	Backend string
	// Services are the full names of the data services, e.g. "prism.keyvalue.v1.KeyValueService".
	Services []string
}

// Env is what core hands a plugin at Initialize.
type Env struct {
	Logger *slog.Logger
	// Metrics registers the plugin's own collectors next to core's.
	Metrics prometheus.Registerer
	// Draining is closed when the server starts draining, so long-lived streams can end cleanly.
	Draining <-chan struct{}
}

// Reconfigurer is implemented by plugins that apply config changes live. Reconfigure receives the
// new, validated configuration and the changed paths, applies what it can, and returns the paths
// that only take effect after a restart. An error rejects the whole reload.
type Reconfigurer interface {
	Reconfigure(ctx context.Context, cfg *config.Config, changed []string) (restartRequired []string, err error)
}

// CapabilityReporter is implemented by plugins that list their features in GetInfo.
type CapabilityReporter interface {
	Capabilities() map[string]string
}

// DevModeSupporter is implemented by plugins that can run on an embedded backend (--dev).
type DevModeSupporter interface {
	EnableDevMode(dataDir string) error
}

// ErrNoDevBackends is what EnableDevMode returns in a binary built with -tags nodev (the
// container images), which leaves the embedded backends out.
var ErrNoDevBackends = errors.New("built without dev backends (-tags nodev); --dev needs a binary from make binaries")

// MessageSizer is implemented by plugins whose limits allow requests larger than
// control_plane.max_recv_message_bytes; the server raises its limit to fit.
type MessageSizer interface {
	MinRecvMessageBytes() int
}
