package rediscache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"

	"github.com/prism-gateway/plugins/core"
	"github.com/prism-gateway/plugins/core/apierr"
	"github.com/prism-gateway/plugins/core/config"
	cachev1 "github.com/prism-gateway/plugins/gen/prism/cache/v1"
)

// Plugin serves Cache on Redis.
type Plugin struct {
	log     *slog.Logger
	backend *BackendConfig

	mu     sync.RWMutex
	client redis.UniversalClient
}

// New returns an unconfigured plugin for core.Run.
func New() *Plugin { return &Plugin{} }

// Info implements core.Plugin.
func (p *Plugin) Info() core.Info {
	return core.Info{
		Name:     "redis",
		Backend:  "redis",
		Services: []string{cachev1.CacheService_ServiceDesc.ServiceName},
	}
}

// ConfigSchema implements core.Plugin.
func (p *Plugin) ConfigSchema() config.Schema { return Schema() }

// Initialize implements core.Plugin.
func (p *Plugin) Initialize(_ context.Context, cfg *config.Config, env core.Env) error {
	backend, ok := cfg.Backend.(*BackendConfig)
	if !ok {
		return fmt.Errorf("backend config has type %T", cfg.Backend)
	}
	p.log, p.backend = env.Logger, backend
	return nil
}

// Register implements core.Plugin.
func (p *Plugin) Register(s grpc.ServiceRegistrar) {
	cachev1.RegisterCacheServiceServer(s, &server{plugin: p})
}

// Start implements core.Plugin. go-redis connects lazily, so a Redis that is down or refuses the
// credentials shows up in Health, not here.
func (p *Plugin) Start(context.Context) error {
	opts, err := p.backend.clientOptions()
	if err != nil {
		return err
	}
	client := redis.NewUniversalClient(opts)
	p.mu.Lock()
	p.client = client
	p.mu.Unlock()
	return nil
}

// Health implements core.Plugin with a real round trip (authenticated PING).
func (p *Plugin) Health(ctx context.Context) error {
	client := p.currentClient()
	if client == nil {
		return errors.New("redis client not started")
	}
	if err := client.Ping(ctx).Err(); err != nil {
		return apierr.Unavailable("ping redis", err)
	}
	return nil
}

// Stop implements core.Plugin.
func (p *Plugin) Stop(context.Context) error {
	p.mu.Lock()
	client := p.client
	p.client = nil
	p.mu.Unlock()
	if client != nil {
		return client.Close()
	}
	return nil
}

func (p *Plugin) currentClient() redis.UniversalClient {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.client
}

var _ core.Plugin = (*Plugin)(nil)
