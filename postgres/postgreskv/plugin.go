package postgreskv

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
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
	// limits, retention and purge settings change live on Reload.
	limits     atomic.Pointer[limits]
	retention  atomic.Int64
	purgeEvery atomic.Int64
	purgeBatch atomic.Int64
	// msgBytes is the gRPC message size fixed at start; limits needing more take a restart.
	msgBytes int

	queries *prometheus.HistogramVec
	purged  *prometheus.CounterVec

	mu   sync.RWMutex
	pool *pgxpool.Pool

	// kv is set once the schema is migrated; until then data calls answer UNAVAILABLE.
	kv atomic.Pointer[Store]
	// migrating admits one migration attempt at a time; waiters give up with their context.
	migrating chan struct{}

	bgCancel context.CancelFunc
	bg       sync.WaitGroup
}

// New returns an unconfigured plugin for core.Run.
func New() *Plugin { return &Plugin{migrating: make(chan struct{}, 1)} }

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
	lc, ok := cfg.Limits.(*LimitsConfig)
	if !ok {
		return fmt.Errorf("limits config has type %T", cfg.Limits)
	}
	lim, err := newLimits(lc)
	if err != nil {
		return err
	}
	// Fail on bad TLS files now rather than on every connection attempt.
	if _, err := backend.poolConfig(); err != nil {
		return err
	}
	p.log, p.backend = env.Logger, backend
	p.limits.Store(lim)
	p.applyBackendLive(backend)
	p.msgBytes = max(cfg.ControlPlane.MaxRecvMessageBytes, lc.messageBytes())

	p.queries = newQueryHistogram()
	p.purged = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "prism_postgres_purged_total",
		Help: "Expired items and idempotency tokens deleted by the background purge.",
	}, []string{"kind"})
	if env.Metrics != nil {
		for _, c := range []prometheus.Collector{newPoolCollector(p), p.queries, p.purged} {
			if err := env.Metrics.Register(c); err != nil {
				return fmt.Errorf("register postgres metrics: %w", err)
			}
		}
	}
	return nil
}

func (p *Plugin) applyBackendLive(b *BackendConfig) {
	p.retention.Store(int64(b.IdempotencyRetention))
	p.purgeEvery.Store(int64(b.PurgeInterval))
	p.purgeBatch.Store(int64(b.PurgeBatchSize))
}

// Register implements core.Plugin.
func (p *Plugin) Register(s grpc.ServiceRegistrar) {
	keyvaluev1.RegisterKeyValueServiceServer(s, &server{plugin: p})
}

// Start implements core.Plugin. The pool connects lazily and the schema is migrated on the first
// health check that reaches the database, so a database that is down or refuses the credentials
// shows up in Health, not here.
func (p *Plugin) Start(ctx context.Context) error {
	pc, err := p.backend.poolConfig()
	if err != nil {
		return err
	}
	// The pool and the purge outlive Start's context; Stop ends them.
	ctx = context.WithoutCancel(ctx)
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return fmt.Errorf("create postgres pool: %w", err)
	}
	p.mu.Lock()
	p.pool = pool
	p.mu.Unlock()
	bgCtx, cancel := context.WithCancel(ctx)
	p.bgCancel = cancel
	p.bg.Add(1)
	go func() {
		defer p.bg.Done()
		p.purgeLoop(bgCtx)
	}()
	return nil
}

// Health implements core.Plugin with a real round trip, migrating the schema the first time the
// database answers.
func (p *Plugin) Health(ctx context.Context) error {
	pool := p.currentPool()
	if pool == nil {
		return errors.New("postgres pool not started")
	}
	if err := pool.Ping(ctx); err != nil {
		return apierr.Unavailable("ping postgres", err)
	}
	_, err := p.store(ctx)
	return err
}

// store returns the Store once the schema is migrated, migrating it if this is the first call
// that reaches the database.
func (p *Plugin) store(ctx context.Context) (*Store, error) {
	if st := p.kv.Load(); st != nil {
		return st, nil
	}
	select {
	case p.migrating <- struct{}{}:
	case <-ctx.Done():
		return nil, apierr.Unavailable("wait for postgres schema migration", ctx.Err())
	}
	defer func() { <-p.migrating }()
	if st := p.kv.Load(); st != nil {
		return st, nil
	}
	pool := p.currentPool()
	if pool == nil {
		return nil, apierr.Unavailable("postgres", errors.New("plugin not started"))
	}
	key, err := migrate(ctx, pool)
	if err != nil {
		return nil, apierr.Unavailable("migrate postgres schema", err)
	}
	if p.backend.PageTokenKey.IsSet() {
		sum := sha256.Sum256([]byte(p.backend.PageTokenKey.Reveal()))
		key = sum[:]
	}
	st := NewStore(pool, key, func() time.Duration { return time.Duration(p.retention.Load()) })
	st.observe = observer(p.queries)
	p.kv.Store(st)
	p.log.Info("postgres schema ready", "schema_version", SchemaVersion())
	return st, nil
}

// Stop implements core.Plugin.
func (p *Plugin) Stop(context.Context) error {
	if p.bgCancel != nil {
		p.bgCancel()
	}
	p.bg.Wait()
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

// purgeLoop deletes expired items and tokens every purge_interval, in batches of
// purge_batch_size, until a batch comes back short.
func (p *Plugin) purgeLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(p.purgeEvery.Load())):
		}
		st := p.kv.Load()
		if st == nil {
			continue
		}
		p.purge(ctx, "items", st.PurgeExpired)
		p.purge(ctx, "idempotency_tokens", st.PurgeTokens)
	}
}

func (p *Plugin) purge(ctx context.Context, kind string, batch func(context.Context, int) (int64, error)) {
	for ctx.Err() == nil {
		limit := int(p.purgeBatch.Load())
		bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		n, err := batch(bctx, limit)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				p.log.Warn("purge failed; retrying next interval", "kind", kind, "error", err)
			}
			return
		}
		p.purged.WithLabelValues(kind).Add(float64(n))
		if n < int64(limit) {
			return
		}
	}
}

// Reconfigure implements core.Reconfigurer: limits, idempotency retention and purge settings
// apply at once; connection settings need a restart.
func (p *Plugin) Reconfigure(_ context.Context, cfg *config.Config, changed []string) ([]string, error) {
	lc, ok := cfg.Limits.(*LimitsConfig)
	if !ok {
		return nil, fmt.Errorf("limits config has type %T", cfg.Limits)
	}
	b, ok := cfg.Backend.(*BackendConfig)
	if !ok {
		return nil, fmt.Errorf("backend config has type %T", cfg.Backend)
	}
	lim, err := newLimits(lc)
	if err != nil {
		return nil, err
	}
	live := []string{"backend.idempotency_retention", "backend.purge_interval", "backend.purge_batch_size"}
	var restart []string
	tooBig := lc.messageBytes() > p.msgBytes
	for _, path := range changed {
		switch {
		case strings.HasPrefix(path, "limits."):
			if tooBig {
				restart = append(restart, path)
			}
		case !slices.Contains(live, path):
			restart = append(restart, path)
		}
	}
	p.limits.Store(lim)
	p.applyBackendLive(b)
	if tooBig {
		p.log.Warn("new limits need larger gRPC messages than the server was started with; requests up to the old size work until a restart",
			"needed_bytes", lc.messageBytes(), "current_bytes", p.msgBytes)
	}
	return restart, nil
}

// MinRecvMessageBytes implements core.MessageSizer so the largest request and page allowed by
// the limits fit in one gRPC message.
func (p *Plugin) MinRecvMessageBytes() int { return p.msgBytes }

// Capabilities implements core.CapabilityReporter.
func (p *Plugin) Capabilities() map[string]string {
	l := p.limits.Load()
	caps := map[string]string{
		"versions":              "true",
		"preconditions":         "version,absent",
		"idempotency":           "true",
		"idempotency_retention": time.Duration(p.retention.Load()).String(),
		"ttl":                   "true",
		"scan":                  "true",
		"pagination":            "page_size,max_bytes",
		"transactions":          "single-record",
		"schema_version":        strconv.Itoa(SchemaVersion()),
	}
	if l != nil {
		caps["max_value_bytes"] = strconv.Itoa(l.MaxValueBytes)
		caps["max_key_bytes"] = strconv.Itoa(l.MaxKeyBytes)
		caps["max_id_bytes"] = strconv.Itoa(l.MaxIDBytes)
		caps["max_items_per_request"] = strconv.Itoa(l.MaxItemsPerRequest)
		caps["max_page_size"] = strconv.Itoa(l.MaxPageSize)
		caps["max_page_bytes"] = strconv.Itoa(l.MaxPageBytes)
	}
	return caps
}

var (
	_ core.Plugin             = (*Plugin)(nil)
	_ core.Reconfigurer       = (*Plugin)(nil)
	_ core.MessageSizer       = (*Plugin)(nil)
	_ core.CapabilityReporter = (*Plugin)(nil)
)
