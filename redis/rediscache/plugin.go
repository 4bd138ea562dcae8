package rediscache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"

	"github.com/prism-gateway/plugins/core"
	"github.com/prism-gateway/plugins/core/apierr"
	"github.com/prism-gateway/plugins/core/config"
	"github.com/prism-gateway/plugins/core/credentials"
	"github.com/prism-gateway/plugins/core/retire"
	cachev1 "github.com/prism-gateway/plugins/gen/prism/cache/v1"
)

// Plugin serves Cache on Redis.
type Plugin struct {
	log     *slog.Logger
	backend *BackendConfig
	metrics *metrics
	// maxMessage is the gRPC message bound the server was built with; limits that need more
	// wait for a restart.
	maxMessage int

	settings atomic.Pointer[settings]
	current  atomic.Pointer[store]
	// creds yields the user and password of every new connection (nil in dev mode). A static
	// source is replaced when a reload changes the username or password; the others stay until a
	// restart. Guarded by reconfigMu.
	creds credentials.Source
	// bgCancel and bg own retireLoop.
	bgCancel context.CancelFunc
	bg       sync.WaitGroup

	// dev is set by EnableDevMode: the plugin then serves from devRedis, an embedded in-memory
	// Redis, and never touches the configured one (dev.go, left out by -tags nodev).
	dev      bool
	devRedis interface{ Close() }
	devAddr  string // devRedis's address, reported in GetInfo

	// reconfigMu orders reloads; retiring closes the clients a reload or a credential change
	// replaced once their grace has passed.
	reconfigMu sync.Mutex
	retiring   retire.Retirer
}

// devBackend is what Info, and so GetInfo, reports as the backend in dev mode.
const devBackend = "miniredis (dev mode)"

// New returns an unconfigured plugin for core.Run.
func New() *Plugin { return &Plugin{} }

// Info implements core.Plugin.
func (p *Plugin) Info() core.Info {
	backend := "redis"
	if p.dev {
		backend = devBackend
	}
	return core.Info{
		Name:     "redis",
		Backend:  backend,
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
	limits, ok := cfg.Limits.(*LimitsConfig)
	if !ok {
		return fmt.Errorf("limits config has type %T", cfg.Limits)
	}
	p.log, p.backend = env.Logger, backend
	if !p.dev {
		src, err := newCredentialsSource(backend, env)
		if err != nil {
			return err
		}
		p.creds = src
	}
	p.settings.Store(newSettings(backend, limits))
	p.maxMessage = max(cfg.ControlPlane.MaxRecvMessageBytes, limits.messageBytes())

	m, collectors := newMetrics()
	p.metrics = m
	if env.Metrics != nil {
		collectors = append(collectors, newPoolCollector(p.poolStats))
		for _, c := range collectors {
			if err := env.Metrics.Register(c); err != nil {
				return fmt.Errorf("register redis metrics: %w", err)
			}
		}
	}
	return nil
}

// Register implements core.Plugin.
func (p *Plugin) Register(s grpc.ServiceRegistrar) {
	cachev1.RegisterCacheServiceServer(s, &server{plugin: p})
}

// Start implements core.Plugin. It first obtains the backend credentials and fails if it cannot
// (a missing file, Vault unreachable or refusing): the plugin could not authenticate at all.
// go-redis connects lazily, so a Redis that is down or refuses the credentials shows up in
// Health, not here.
func (p *Plugin) Start(ctx context.Context) error {
	if p.dev {
		if err := p.startDevRedis(); err != nil {
			return err
		}
	} else if err := p.creds.Start(ctx); err != nil {
		return fmt.Errorf("backend credentials (%s): %w", p.creds.Describe().Kind, err)
	}
	st, err := newStore(p.backend, p.metrics, p.creds)
	if err != nil {
		return err
	}
	p.current.Store(st)
	p.logClient("redis client created", p.backend)
	if p.creds != nil {
		var bgCtx context.Context
		bgCtx, p.bgCancel = context.WithCancel(context.WithoutCancel(ctx))
		p.bg.Add(1)
		go func() {
			defer p.bg.Done()
			p.retireLoop(bgCtx, p.creds)
		}()
	}
	return nil
}

func (p *Plugin) logClient(msg string, b *BackendConfig) {
	username := b.Username
	if p.creds != nil {
		username = p.creds.Describe().Username
	}
	p.log.Info(msg, "addresses", b.addresses(), "cluster", b.cluster(), "auto_pipeline", b.AutoPipeline,
		"username", username, "key_prefix", b.KeyPrefix, "tls", b.TLSEnabled)
}

// newStore builds the go-redis client the backend section describes; with src, its connections
// log in with src's current credentials.
func newStore(b *BackendConfig, m *metrics, src credentials.Source) (*store, error) {
	opts, err := b.clientOptions(src)
	if err != nil {
		return nil, err
	}
	var client redis.UniversalClient
	cluster := b.cluster()
	if cluster {
		copts := opts.Cluster()
		// The store splits multi-key calls by hash slot itself; go-redis's own multi-shard
		// routing would refuse MGET and UNLINK inside the pipelines it sends.
		copts.DisableRoutingPolicies = true
		client = redis.NewClusterClient(copts)
	} else {
		client = redis.NewClient(opts.Simple())
	}
	st := &store{client: client, cluster: cluster, metrics: m}
	if b.AutoPipeline {
		st.pipe = newPipeliner(client)
	}
	return st, nil
}

// retire closes a replaced store once the calls that picked it up have had grace to finish, or at
// Stop, whichever comes first.
func (p *Plugin) retire(old *store, grace time.Duration) {
	p.retiring.Retire(grace, func() { _ = old.client.Close() })
}

// Health implements core.Plugin: usable credentials first (expired ones are NOT_SERVING with the
// reason renewal failed), then a real round trip (authenticated PING).
func (p *Plugin) Health(ctx context.Context) error {
	if src := p.credentialsSource(); src != nil {
		if err := credentials.Check(src); err != nil {
			return err
		}
	}
	st := p.current.Load()
	if st == nil {
		return errors.New("redis client not started")
	}
	if err := st.ping(ctx); err != nil {
		return apierr.Unavailable("ping redis", err)
	}
	return nil
}

// Stop implements core.Plugin.
func (p *Plugin) Stop(ctx context.Context) error {
	if p.bgCancel != nil {
		p.bgCancel()
	}
	p.bg.Wait()
	p.retiring.Close()
	var err error
	if st := p.current.Swap(nil); st != nil {
		err = st.client.Close()
	}
	if src := p.credentialsSource(); src != nil {
		if serr := src.Stop(ctx); serr != nil && err == nil {
			err = fmt.Errorf("stop backend credentials: %w", serr)
		}
	}
	if p.devRedis != nil {
		p.devRedis.Close()
		p.devRedis = nil
	}
	return err
}

// store returns the store in force, or UNAVAILABLE before Start and after Stop.
func (p *Plugin) store() (*store, error) {
	st := p.current.Load()
	if st == nil {
		return nil, apierr.New(apierr.ErrUnavailable, "redis client is not running")
	}
	return st, nil
}

func (p *Plugin) credentialsSource() credentials.Source {
	p.reconfigMu.Lock()
	defer p.reconfigMu.Unlock()
	return p.creds
}

func (p *Plugin) poolStats() *redis.PoolStats {
	st := p.current.Load()
	if st == nil {
		return nil
	}
	return st.client.PoolStats()
}

// settingKeys are backend keys that only change how requests are mapped; every other backend key
// describes the connection, and changing it replaces the client.
var settingKeys = []string{"backend.key_prefix", "backend.default_ttl", "backend.ttl_jitter"}

// Reconfigure implements core.Reconfigurer. Limits, key_prefix, default_ttl and ttl_jitter apply to
// the next request. A change to the connection (address, mode, username/password, pool, TLS)
// builds a new client and swaps it in; calls already running finish on the old one, which is
// closed after retire.Grace. Limits that need a larger gRPC message than the server was started
// with wait (all of them, so they stay consistent) for a restart, and so does
// backend.credentials (which source, which file or Vault secret): the running source keeps
// rotating the credentials it was started with.
func (p *Plugin) Reconfigure(_ context.Context, cfg *config.Config, changed []string) ([]string, error) {
	p.reconfigMu.Lock()
	defer p.reconfigMu.Unlock()
	backend, ok := cfg.Backend.(*BackendConfig)
	if !ok {
		return nil, fmt.Errorf("backend config has type %T", cfg.Backend)
	}
	limits, ok := cfg.Limits.(*LimitsConfig)
	if !ok {
		return nil, fmt.Errorf("limits config has type %T", cfg.Limits)
	}
	old := p.settings.Load()
	next := newSettings(backend, limits)
	var restart []string
	reconnect := false
	for _, path := range changed {
		switch {
		case strings.HasPrefix(path, "backend.credentials."):
			restart = append(restart, path)
		case strings.HasPrefix(path, "backend.") && !slices.Contains(settingKeys, path):
			reconnect = true
		case strings.HasPrefix(path, "limits.") && limits.messageBytes() > p.maxMessage:
			restart = append(restart, path)
			next.limits = old.limits
		}
	}
	if p.dev {
		// The embedded Redis stays; only the request settings change.
		dev := *p.backend
		dev.KeyPrefix, dev.DefaultTTL, dev.TTLJitter = backend.KeyPrefix, backend.DefaultTTL, backend.TTLJitter
		backend, reconnect = &dev, false
		next = newSettings(backend, &next.limits)
	}
	if reconnect && p.current.Load() != nil {
		// A static source takes the new username and password; file and Vault sources keep
		// supplying theirs.
		src := p.creds
		if src != nil && src.Describe().Kind == credentials.KindStatic {
			src = credentials.NewStatic(backend.staticCredentials())
		}
		st, err := newStore(backend, p.metrics, src)
		if err != nil {
			return nil, err
		}
		p.creds = src
		if prev := p.current.Swap(st); prev != nil {
			p.retire(prev, retire.Grace)
		}
		p.logClient("redis client replaced after a config change", backend)
	}
	p.backend = backend
	p.settings.Store(next)
	if len(restart) > 0 {
		p.log.Warn("some redis settings take effect only after a restart", "paths", restart,
			"max_message_bytes", strconv.Itoa(p.maxMessage))
	}
	return restart, nil
}

// MinRecvMessageBytes implements core.MessageSizer: the largest Set, MSet or MGet the limits
// allow must fit in one gRPC message.
func (p *Plugin) MinRecvMessageBytes() int {
	return p.settings.Load().limits.messageBytes()
}

// Capabilities implements core.CapabilityReporter.
func (p *Plugin) Capabilities() map[string]string {
	s := p.settings.Load()
	if s == nil {
		return nil
	}
	mode := "single"
	if s.cluster {
		mode = "cluster"
	}
	caps := map[string]string{
		"mode":              mode,
		"key_prefix":        s.keyPrefix,
		"max_key_bytes":     strconv.Itoa(s.limits.MaxKeyBytes),
		"max_value_bytes":   strconv.Itoa(s.limits.MaxValueBytes),
		"max_keys_per_call": strconv.Itoa(s.limits.MaxKeysPerCall),
		"max_batch_bytes":   strconv.Itoa(s.limits.MaxBatchBytes),
		"atomic_get_ttl":    "true",
		"conditional_set":   "if_absent,if_present,keep_ttl",
	}
	if p.devAddr != "" {
		caps["dev_address"] = p.devAddr
	}
	if src := p.credentialsSource(); src != nil {
		maps.Copy(caps, src.Describe().Capabilities())
	}
	return caps
}

var (
	_ core.Plugin             = (*Plugin)(nil)
	_ core.Reconfigurer       = (*Plugin)(nil)
	_ core.MessageSizer       = (*Plugin)(nil)
	_ core.CapabilityReporter = (*Plugin)(nil)
	_ core.DevModeSupporter   = (*Plugin)(nil)
)

var _ prometheus.Collector = (*poolCollector)(nil)
