package kafkastream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"

	"github.com/prism-gateway/plugins/core"
	"github.com/prism-gateway/plugins/core/apierr"
	"github.com/prism-gateway/plugins/core/config"
	streamv1 "github.com/prism-gateway/plugins/gen/prism/stream/v1"
)

// Plugin serves Stream on Apache Kafka.
type Plugin struct {
	log     *slog.Logger
	backend *BackendConfig

	mu     sync.RWMutex
	client *kgo.Client
}

// New returns an unconfigured plugin for core.Run.
func New() *Plugin { return &Plugin{} }

// Info implements core.Plugin.
func (p *Plugin) Info() core.Info {
	return core.Info{
		Name:     "kafka",
		Backend:  "kafka",
		Services: []string{streamv1.StreamService_ServiceDesc.ServiceName},
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
	streamv1.RegisterStreamServiceServer(s, &server{plugin: p})
}

// Start implements core.Plugin. franz-go connects lazily, so brokers that are down or refuse the
// credentials show up in Health, not here.
func (p *Plugin) Start(context.Context) error {
	opts, err := p.backend.clientOptions()
	if err != nil {
		return err
	}
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("create kafka client: %w", err)
	}
	p.mu.Lock()
	p.client = client
	p.mu.Unlock()
	return nil
}

// Health implements core.Plugin with a real round trip (authenticated metadata request).
func (p *Plugin) Health(ctx context.Context) error {
	client := p.currentClient()
	if client == nil {
		return errors.New("kafka client not started")
	}
	if err := client.Ping(ctx); err != nil {
		return apierr.Unavailable("ping kafka", err)
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
		client.Close()
	}
	return nil
}

func (p *Plugin) currentClient() *kgo.Client {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.client
}

var _ core.Plugin = (*Plugin)(nil)
