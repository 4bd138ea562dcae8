package core_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/prism-gateway/plugins/core"
	"github.com/prism-gateway/plugins/core/apierr"
	"github.com/prism-gateway/plugins/core/config"
	keyvaluev1 "github.com/prism-gateway/plugins/gen/prism/keyvalue/v1"
)

// probePlugin is a test double for the plugin side of core: these tests exercise core's own
// machinery (health, drain, reload, error mapping), not a backend. Its "backend" is a flag the
// test flips; the real backends are tested in each plugin's package.
type probePlugin struct {
	backendDown atomic.Bool
	backend     *probeBackend
	// healthChecks counts Health calls, to bound the check rate during an outage.
	healthChecks atomic.Int64

	mu      sync.Mutex
	started bool
	stops   int
	// reconfigsAfterStop counts Reconfigure calls that arrived once Stop had run.
	reconfigsAfterStop int
	release            chan struct{} // blocks Get calls with id "block" until closed
	entered            chan struct{} // receives once per blocked call
	reconfig           []string
}

type probeBackend struct {
	Password config.Secret `yaml:"password"`
	Label    string        `yaml:"label"`
}

func (*probeBackend) Validate() error { return nil }

type probeLimits struct {
	MaxThings int `yaml:"max_things"`
}

func (l *probeLimits) Validate() error {
	if l.MaxThings < 0 {
		return errors.New("max_things: must not be negative")
	}
	return nil
}

func newProbePlugin() *probePlugin {
	return &probePlugin{release: make(chan struct{}), entered: make(chan struct{}, 16)}
}

func (p *probePlugin) Info() core.Info {
	return core.Info{Name: "probe", Backend: "none", Services: []string{keyvaluev1.KeyValueService_ServiceDesc.ServiceName}}
}

func (p *probePlugin) ConfigSchema() config.Schema {
	return config.Schema{
		Plugin: "probe", Port: 0, MetricsPort: 0,
		NewBackend: func() config.Section { return &probeBackend{} },
		NewLimits:  func() config.Section { return &probeLimits{} },
		EnvAliases: map[string]string{"PROBE_PASSWORD": "backend.password"},
	}
}

func (p *probePlugin) Initialize(_ context.Context, cfg *config.Config, _ core.Env) error {
	p.backend = cfg.Backend.(*probeBackend)
	return nil
}

func (p *probePlugin) Register(s grpc.ServiceRegistrar) {
	keyvaluev1.RegisterKeyValueServiceServer(s, &probeServer{p: p})
}

func (p *probePlugin) Start(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.started = true
	return nil
}

func (p *probePlugin) Health(context.Context) error {
	p.healthChecks.Add(1)
	if p.backendDown.Load() {
		// Backend client errors can quote credentials; core must scrub them.
		return errors.New("connect as probe:" + p.backend.Password.Reveal() + " refused")
	}
	return nil
}

func (p *probePlugin) Stop(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stops++
	return nil
}

func (p *probePlugin) Reconfigure(_ context.Context, cfg *config.Config, changed []string) ([]string, error) {
	if cfg.Backend.(*probeBackend).Label == "reject" {
		return nil, errors.New("label: rejected by plugin")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stops > 0 {
		p.reconfigsAfterStop++
	}
	p.reconfig = append(p.reconfig, changed...)
	var restart []string
	for _, c := range changed {
		if c == "backend.label" {
			restart = append(restart, c)
		}
	}
	return restart, nil
}

func (p *probePlugin) Capabilities() map[string]string { return map[string]string{"probing": "true"} }

// probeServer answers KeyValue Get according to the id, to drive core's edge behaviour.
type probeServer struct {
	keyvaluev1.UnimplementedKeyValueServiceServer
	p *probePlugin
}

func (s *probeServer) Get(ctx context.Context, req *keyvaluev1.GetRequest) (*keyvaluev1.GetResponse, error) {
	switch req.GetId() {
	case "block":
		s.p.entered <- struct{}{}
		select {
		case <-s.p.release:
			return &keyvaluev1.GetResponse{Found: true}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	case "slow":
		select {
		case <-time.After(time.Second):
			return &keyvaluev1.GetResponse{Found: true}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	case "invalid":
		return nil, apierr.Invalid("id", "must be at most 3 bytes (limits.max_things)")
	case "panic":
		panic("probe panic")
	case "leak":
		return nil, errors.New("backend said: password " + s.p.backend.Password.Reveal() + " is wrong")
	case "plain":
		return nil, errors.New("something broke")
	}
	return &keyvaluev1.GetResponse{Found: false}, nil
}

// Put echoes each item's value back as the key of its version, so tests can check that request
// bytes arrive intact.
func (s *probeServer) Put(_ context.Context, req *keyvaluev1.PutRequest) (*keyvaluev1.PutResponse, error) {
	resp := &keyvaluev1.PutResponse{}
	for i, it := range req.GetItems() {
		resp.Versions = append(resp.Versions, &keyvaluev1.ItemVersion{Key: it.GetValue(), Version: int64(i + 1)})
	}
	return resp, nil
}

var (
	_ core.Plugin             = (*probePlugin)(nil)
	_ core.Reconfigurer       = (*probePlugin)(nil)
	_ core.CapabilityReporter = (*probePlugin)(nil)
)
