package postgreskv

import (
	"context"
	"crypto/sha256"
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

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/prism-gateway/plugins/core"
	"github.com/prism-gateway/plugins/core/apierr"
	"github.com/prism-gateway/plugins/core/config"
	"github.com/prism-gateway/plugins/core/credentials"
	"github.com/prism-gateway/plugins/core/retire"
	keyvaluev1 "github.com/prism-gateway/plugins/gen/prism/keyvalue/v1"
)

// Plugin serves KeyValue on PostgreSQL.
type Plugin struct {
	log     *slog.Logger
	backend *BackendConfig
	// settings is what changes live on Reload (limits, retention, purge); each Reload stores a
	// new snapshot, so every call sees one consistent set.
	settings atomic.Pointer[settings]
	// msgBytes is the gRPC message size fixed at start; limits needing more take a restart.
	msgBytes int

	queries *prometheus.HistogramVec
	purged  *prometheus.CounterVec

	mu   sync.RWMutex
	pool *pgxpool.Pool
	// creds yields the user and password of every new connection (nil in dev mode). A static
	// source is replaced when a reload changes the URL or password; the others stay until a
	// restart.
	creds credentials.Source

	// kv is set once the schema is migrated; until then data calls answer UNAVAILABLE.
	kv atomic.Pointer[Store]
	// dev is set by EnableDevMode: the plugin then serves from SQLite in devDir (devKV) and
	// never touches PostgreSQL (dev.go, left out by -tags nodev).
	dev    bool
	devDir string
	devKV  atomic.Pointer[devHandle]
	// migrating admits one migration attempt at a time; waiters give up with their context.
	migrating chan struct{}

	bgCtx    context.Context
	bgCancel context.CancelFunc
	bg       sync.WaitGroup
	// retiring closes the pools a reload replaced once their grace has passed.
	retiring retire.Retirer
}

// devBackend is what Info, and so GetInfo, reports as the backend in dev mode.
const devBackend = "sqlite (dev mode)"

// devStore is the embedded store of dev mode: SQLite in dev.go, absent from builds with
// -tags nodev.
type devStore interface {
	kvStore
	ping(ctx context.Context) error
	Close() error
}

// devHandle lets devKV hold a devStore atomically.
type devHandle struct{ devStore }

// New returns an unconfigured plugin for core.Run.
func New() *Plugin { return &Plugin{migrating: make(chan struct{}, 1)} }

// Info implements core.Plugin.
func (p *Plugin) Info() core.Info {
	backend := "postgresql"
	if p.dev {
		backend = devBackend
	}
	return core.Info{
		Name:     "postgres",
		Backend:  backend,
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
	if !p.dev {
		src, err := newCredentialsSource(backend, env)
		if err != nil {
			return err
		}
		p.creds = src
	}
	p.settings.Store(newSettings(backend, lim))
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

// newCredentialsSource builds the source backend.credentials selects, with the URL's user and
// password as the static values. It is started in Start.
func newCredentialsSource(b *BackendConfig, env core.Env) (credentials.Source, error) {
	static, err := b.staticCredentials()
	if err != nil {
		return nil, err
	}
	return credentials.Open(b.Credentials, static, env.Logger, env.Metrics)
}

// newPool returns a pool on b's connection settings whose connections log in with src.
func newPool(ctx context.Context, b *BackendConfig, src credentials.Source) (*pgxpool.Pool, error) {
	pc, err := b.poolConfig()
	if err != nil {
		return nil, err
	}
	pc.BeforeConnect = credentialsHook(src)
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("create postgres pool: %w", err)
	}
	return pool, nil
}

// Register implements core.Plugin.
func (p *Plugin) Register(s grpc.ServiceRegistrar) {
	keyvaluev1.RegisterKeyValueServiceServer(s, &server{plugin: p})
}

// Start implements core.Plugin. It first obtains the backend credentials and fails if it cannot
// (a missing file, Vault unreachable or refusing): the plugin could not authenticate at all.
// The pool connects lazily and the schema is migrated in the background (migrateLoop), so a
// database that is down or refuses the credentials shows up in Health, not here.
//
// In dev mode Start opens (or creates) the SQLite database instead, and fails if it cannot.
func (p *Plugin) Start(ctx context.Context) error {
	// The pool and the purge outlive Start's context; Stop ends them.
	ctx = context.WithoutCancel(ctx)
	if p.dev {
		if err := p.startDev(ctx); err != nil {
			return err
		}
	} else {
		if err := p.creds.Start(ctx); err != nil {
			return fmt.Errorf("backend credentials (%s): %w", p.creds.Describe().Kind, err)
		}
		pool, err := newPool(ctx, p.backend, p.creds)
		if err != nil {
			return err
		}
		p.mu.Lock()
		p.pool = pool
		p.mu.Unlock()
	}
	bgCtx, cancel := context.WithCancel(ctx)
	p.bgCtx, p.bgCancel = bgCtx, cancel
	p.bg.Add(1)
	go func() {
		defer p.bg.Done()
		p.purgeLoop(bgCtx)
	}()
	if !p.dev {
		p.bg.Add(2)
		go func() {
			defer p.bg.Done()
			p.migrateLoop(bgCtx)
		}()
		go func() {
			defer p.bg.Done()
			p.retireLoop(bgCtx, p.creds)
		}()
	}
	return nil
}

// Pauses between failed migration attempts: doubling from the first up to the last.
const (
	firstMigrationRetry = 250 * time.Millisecond
	maxMigrationRetry   = 10 * time.Second
)

// migrateLoop migrates the schema as its own step, each attempt bounded by
// backend.migration_timeout rather than by a health check's timeout, so a slow migration or a
// wait for another replica's migration lock completes instead of being cancelled and retried
// forever. Failed attempts are logged and retried with capped backoff until one succeeds.
func (p *Plugin) migrateLoop(ctx context.Context) {
	retry := firstMigrationRetry
	for attempt := 1; ; attempt++ {
		p.mu.RLock()
		timeout := p.backend.MigrationTimeout
		p.mu.RUnlock()
		started := time.Now()
		p.log.Info("postgres schema migration started", "attempt", attempt, "timeout", timeout.String())
		actx, cancel := context.WithTimeout(ctx, timeout)
		_, err := p.ensureSchema(actx)
		cancel()
		if err == nil {
			p.log.Info("postgres schema migration finished", "attempt", attempt, "duration", time.Since(started).String())
			return
		}
		if ctx.Err() != nil {
			return
		}
		p.log.Warn("postgres schema migration failed; retrying", "attempt", attempt, "error", err, "duration", time.Since(started).String(), "retry_in", retry.String())
		t := time.NewTimer(retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		retry = min(2*retry, maxMigrationRetry)
	}
}

// errNotMigrated is what Health and data calls report until migrateLoop has finished.
var errNotMigrated = errors.New("postgres schema migration not finished")

// Health implements core.Plugin: usable credentials first (expired ones are NOT_SERVING with the
// reason renewal failed), then a real round trip, migrating the schema the first time the
// database answers. In dev mode it queries SQLite.
func (p *Plugin) Health(ctx context.Context) error {
	if p.dev {
		st := p.devKV.Load()
		if st == nil {
			return errors.New("sqlite store not started")
		}
		return st.ping(ctx)
	}
	if err := credentials.Check(p.credentialsSource()); err != nil {
		return err
	}
	pool := p.currentPool()
	if pool == nil {
		return errors.New("postgres pool not started")
	}
	if err := pool.Ping(ctx); err != nil {
		return apierr.Unavailable("ping postgres", err)
	}
	if p.kv.Load() == nil {
		return errNotMigrated
	}
	return nil
}

// store returns the store data calls use: SQLite in dev mode, else PostgreSQL once its schema
// is migrated.
func (p *Plugin) store(ctx context.Context) (kvStore, error) {
	if p.dev {
		if st := p.devKV.Load(); st != nil {
			return st, nil
		}
		return nil, apierr.Unavailable("sqlite", errors.New("plugin not started"))
	}
	if st := p.kv.Load(); st != nil {
		return st, nil
	}
	return nil, apierr.Unavailable("postgres", errNotMigrated)
}

// ensureSchema returns the PostgreSQL Store once the schema is migrated, migrating it if it is
// not yet; data calls use store, which never waits for a migration.
func (p *Plugin) ensureSchema(ctx context.Context) (*Store, error) {
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
	p.mu.RLock()
	pool, backend := p.pool, p.backend
	p.mu.RUnlock()
	if pool == nil {
		return nil, apierr.Unavailable("postgres", errors.New("plugin not started"))
	}
	st, err := p.openStore(ctx, pool, backend)
	if err != nil {
		return nil, err
	}
	p.kv.Store(st)
	p.log.Info("postgres schema ready", "schema_version", SchemaVersion())
	return st, nil
}

// retention is how long idempotency tokens are kept, as the settings in force say.
func (p *Plugin) retention() time.Duration { return p.settings.Load().retention }

// openStore migrates the pool's database and returns a Store on it.
func (p *Plugin) openStore(ctx context.Context, pool *pgxpool.Pool, b *BackendConfig) (*Store, error) {
	key, err := migrate(ctx, pool)
	if err != nil {
		return nil, apierr.Unavailable("migrate postgres schema", err)
	}
	if b.PageTokenKey.IsSet() {
		sum := sha256.Sum256([]byte(b.PageTokenKey.Reveal()))
		key = sum[:]
	}
	st := NewStore(pool, key, p.retention)
	st.observe = observer(p.queries)
	return st, nil
}

// connectionKeys are the backend settings that need a new pool.
var connectionKeys = []string{
	"backend.database_url", "backend.password", "backend.pool_size", "backend.connect_timeout",
	"backend.ssl_mode", "backend.tls_ca_file", "backend.tls_cert_file", "backend.tls_key_file",
	"backend.page_token_key",
}

// swapPool connects with new connection settings and, once the database answers and its schema
// is in place, moves new calls to the new pool. Calls running on the old pool finish there; the
// old pool closes after oldPoolGrace (or at Stop), once the calls still holding its connections
// return them.
//
// A static credentials source takes the new URL's user and password; file and Vault sources keep
// supplying theirs.
func (p *Plugin) swapPool(ctx context.Context, b *BackendConfig) error {
	src := p.credentialsSource()
	if src.Describe().Kind == credentials.KindStatic {
		static, err := b.staticCredentials()
		if err != nil {
			return err
		}
		src = credentials.NewStatic(static)
	}
	pool, err := newPool(context.WithoutCancel(ctx), b, src)
	if err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	select {
	case p.migrating <- struct{}{}:
	case <-ctx.Done():
		pool.Close()
		return fmt.Errorf("backend: wait for schema migration: %w", ctx.Err())
	}
	defer func() { <-p.migrating }()
	cctx, cancel := context.WithTimeout(ctx, 2*b.ConnectTimeout)
	defer cancel()
	st, err := p.openStore(cctx, pool, b)
	if err != nil {
		pool.Close()
		return fmt.Errorf("backend: new connection settings do not work, keeping the old ones: %w", err)
	}
	p.mu.Lock()
	old := p.pool
	p.pool, p.backend, p.creds = pool, b, src
	p.mu.Unlock()
	p.kv.Store(st)
	if old != nil {
		p.retiring.Retire(retire.Grace, old.Close)
	}
	p.log.Info("postgres connection settings applied; new calls use the new pool")
	return nil
}

// Stop implements core.Plugin.
func (p *Plugin) Stop(ctx context.Context) error {
	if p.bgCancel != nil {
		p.bgCancel()
	}
	p.bg.Wait()
	p.retiring.Close()
	p.mu.Lock()
	pool := p.pool
	p.pool = nil
	p.mu.Unlock()
	if pool != nil {
		pool.Close()
	}
	if src := p.credentialsSource(); src != nil {
		if err := src.Stop(ctx); err != nil {
			return fmt.Errorf("stop backend credentials: %w", err)
		}
	}
	if st := p.devKV.Swap(nil); st != nil {
		if err := st.Close(); err != nil {
			return fmt.Errorf("close sqlite: %w", err)
		}
	}
	return nil
}

func (p *Plugin) currentPool() *pgxpool.Pool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.pool
}

func (p *Plugin) credentialsSource() credentials.Source {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.creds
}

// purgeLoop deletes expired items and tokens every purge_interval, in batches of
// purge_batch_size, until a batch comes back short.
func (p *Plugin) purgeLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(p.settings.Load().purgeEvery):
		}
		st, err := p.store(ctx)
		if err != nil {
			continue // not started or not migrated yet: nothing to purge
		}
		p.purge(ctx, "items", st.PurgeExpired)
		p.purge(ctx, "idempotency_tokens", st.PurgeTokens)
	}
}

func (p *Plugin) purge(ctx context.Context, kind string, batch func(context.Context, int) (int64, error)) {
	for ctx.Err() == nil {
		limit := p.settings.Load().purgeBatch
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

// Reconfigure implements core.Reconfigurer. Limits apply from the next request, except that
// limits needing larger gRPC messages than the server started with are reported as needing a
// restart (requests up to the old size keep working). idempotency_retention and purge_batch_size
// apply at once, purge_interval after the purge wait under way. New connection settings
// (connectionKeys) get a new pool that must reach the database and find its schema before it
// replaces the old one, or the reload is rejected; in dev mode they take a restart.
// backend.credentials (which source, which file or Vault secret) takes a restart: the running
// source keeps rotating the credentials it was started with.
func (p *Plugin) Reconfigure(ctx context.Context, cfg *config.Config, changed []string) ([]string, error) {
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
	// In dev mode there is no pool to swap: connection settings only matter without --dev.
	if !p.dev {
		live = append(live, connectionKeys...)
	}
	if !p.dev && slices.ContainsFunc(changed, func(path string) bool { return slices.Contains(connectionKeys, path) }) {
		if err := p.swapPool(ctx, b); err != nil {
			return nil, err
		}
	}
	var restart []string
	tooBig := lc.messageBytes() > p.msgBytes
	for _, path := range changed {
		switch {
		case strings.HasPrefix(path, "limits."):
			if tooBig {
				restart = append(restart, path)
			}
		case strings.HasPrefix(path, "backend.credentials."), !slices.Contains(live, path):
			restart = append(restart, path)
		}
	}
	p.settings.Store(newSettings(b, lim))
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
	set := p.settings.Load()
	if set == nil {
		set = &settings{} // before Initialize: no limits to report yet
	}
	caps := map[string]string{
		"versions":              "true",
		"preconditions":         "version,absent",
		"idempotency":           "true",
		"idempotency_retention": set.retention.String(),
		"ttl":                   "true",
		"scan":                  "true",
		"pagination":            "page_size,max_bytes",
		"transactions":          "single-record",
		"schema_version":        strconv.Itoa(SchemaVersion()),
	}
	if p.dev {
		caps["schema_version"] = strconv.Itoa(devSchemaVersion())
	}
	if src := p.credentialsSource(); src != nil {
		maps.Copy(caps, src.Describe().Capabilities())
	}
	if l := set.limits; l != nil {
		caps["max_value_bytes"] = strconv.Itoa(l.MaxValueBytes)
		caps["max_key_bytes"] = strconv.Itoa(l.MaxKeyBytes)
		caps["max_id_bytes"] = strconv.Itoa(l.MaxIDBytes)
		caps["max_items_per_request"] = strconv.Itoa(l.MaxItemsPerRequest)
		caps["max_page_size"] = strconv.Itoa(l.MaxPageSize)
		caps["default_page_size"] = strconv.Itoa(l.DefaultPageSize)
		caps["max_page_bytes"] = strconv.Itoa(l.MaxPageBytes)
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
