package postgreskv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"

	"github.com/prism-gateway/plugins/core"
	"github.com/prism-gateway/plugins/core/apierr"
	"github.com/prism-gateway/plugins/core/config"
	keyvaluev1 "github.com/prism-gateway/plugins/gen/prism/keyvalue/v1"
)

// Plugin serves KeyValue on PostgreSQL.
type Plugin struct {
	log     *slog.Logger
	backend *BackendConfig

	mu   sync.RWMutex
	pool *pgxpool.Pool
}

// New returns an unconfigured plugin for core.Run.
func New() *Plugin { return &Plugin{} }

// Info implements core.Plugin.
func (p *Plugin) Info() core.Info {
	return core.Info{
		Name:     "postgres",
		Backend:  "postgresql",
		Services: []string{keyvaluev1.KeyValueService_ServiceDesc.ServiceName},
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
	keyvaluev1.RegisterKeyValueServiceServer(s, &server{plugin: p})
}

// Start implements core.Plugin. The pool connects lazily, so a database that is down or refuses
// the credentials shows up in Health, not here.
func (p *Plugin) Start(context.Context) error {
	pc, err := p.backend.poolConfig()
	if err != nil {
		return err
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		return fmt.Errorf("create postgres pool: %w", err)
	}
	p.mu.Lock()
	p.pool = pool
	p.mu.Unlock()
	return nil
}

// Health implements core.Plugin with a real round trip.
func (p *Plugin) Health(ctx context.Context) error {
	pool := p.currentPool()
	if pool == nil {
		return errors.New("postgres pool not started")
	}
	if err := pool.Ping(ctx); err != nil {
		return apierr.Unavailable("ping postgres", err)
	}
	return nil
}

// Stop implements core.Plugin.
func (p *Plugin) Stop(context.Context) error {
	p.mu.Lock()
	pool := p.pool
	p.pool = nil
	p.mu.Unlock()
	if pool != nil {
		pool.Close()
	}
	return nil
}

func (p *Plugin) currentPool() *pgxpool.Pool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.pool
}

var _ core.Plugin = (*Plugin)(nil)
