package core

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/prism-gateway/plugins/core/apierr"
	"github.com/prism-gateway/plugins/core/audit"
	"github.com/prism-gateway/plugins/core/config"
	pluginv1 "github.com/prism-gateway/plugins/gen/prism/plugin/v1"
)

// controlStreamLinger is how long shutdown waits for control-plane streams after the data calls
// have finished.
const controlStreamLinger = 250 * time.Millisecond

// Options tune how a Server is built.
type Options struct {
	// Source is where Reload re-reads the configuration from.
	Source config.Source
	// Config is the initial configuration; when nil it is loaded from Source.
	Config *config.Config
	// DevMode runs the plugin on its embedded backend; DevDataDir is where it keeps data.
	DevMode    bool
	DevDataDir string
	// LogOutput receives the JSON log; os.Stderr when nil.
	LogOutput io.Writer
}

// Server runs one plugin behind one gRPC listener and one metrics HTTP listener.
type Server struct {
	plugin Plugin
	info   Info
	schema config.Schema
	opts   Options

	cfg      atomic.Pointer[config.Config]
	level    *slog.LevelVar
	scrub    *scrubber
	log      atomic.Pointer[slog.Logger]
	registry *prometheus.Registry
	metrics  *serverMetrics
	tls      *tlsReloader
	sec      atomic.Pointer[security]
	// auditStats counts lost audit lines across the sinks that reloads open.
	auditStats audit.Stats

	filesWatch  *fileWatcher // certificate, CA and JWKS files
	configWatch *fileWatcher // the config file, with plugin.watch_config

	grpcServer   *grpc.Server
	health       *health.Server
	listener     net.Listener
	httpServer   *http.Server
	httpListener net.Listener
	started      time.Time

	draining      atomic.Bool
	drainOnce     sync.Once
	drainCh       chan struct{}
	streamsCtx    context.Context
	cancelStreams context.CancelFunc
	inflight      inflight
	healthy       atomic.Bool
	healthWake    chan struct{}

	// codec decodes requests, turning invalid UTF-8 into INVALID_ARGUMENT.
	codec *requestCodec
	// dataMethods are the full names of the data services' methods, the calls admission counts.
	dataMethods map[string]struct{}
	reloadMu    sync.Mutex
	// stopping is set under reloadMu before the plugin stops, so no Reload runs during or after
	// Stop (a plugin's Reconfigure may start work that Stop would have to wait for).
	stopping bool
	bgCancel context.CancelFunc
	bg       sync.WaitGroup
	stopOnce sync.Once
	stopErr  error
}

// New loads configuration (unless given), initializes the plugin, and opens both listeners, so
// Addr is known before Serve. When it fails, what it opened (listeners, the audit file) is closed
// and an initialized plugin is stopped.
func New(ctx context.Context, p Plugin, opts Options) (_ *Server, err error) {
	s := &Server{
		plugin:     p,
		info:       p.Info(),
		schema:     p.ConfigSchema(),
		opts:       opts,
		level:      new(slog.LevelVar),
		scrub:      &scrubber{},
		registry:   prometheus.NewRegistry(),
		drainCh:    make(chan struct{}),
		healthWake: make(chan struct{}, 1),
		codec:      newRequestCodec(),
	}
	s.streamsCtx, s.cancelStreams = context.WithCancel(context.Background())
	cfg := opts.Config
	if cfg == nil {
		if cfg, err = config.Load(s.schema, opts.Source); err != nil {
			return nil, err
		}
	}
	s.cfg.Store(cfg)
	s.scrub.update(cfg.Secrets())
	s.level.Set(levelOf(cfg.Log.Level))
	out := opts.LogOutput
	if out == nil {
		out = os.Stderr
	}
	s.log.Store(newLogger(out, cfg.Log.Format, s.level, s.scrub).With("plugin", cfg.Plugin.Name))

	if opts.DevMode {
		dev, ok := p.(DevModeSupporter)
		if !ok {
			return nil, fmt.Errorf("--dev: the %s plugin has no embedded backend", s.info.Name)
		}
		if err := dev.EnableDevMode(opts.DevDataDir); err != nil {
			return nil, fmt.Errorf("enable dev mode: %w", err)
		}
		// The plugin now names its embedded backend.
		s.info = p.Info()
		s.logger().Warn("DEV MODE: serving from an embedded backend; not for production", "backend", s.info.Backend, "data_dir", opts.DevDataDir)
	}
	s.metrics = newServerMetrics(s.registry, s.info)
	s.registerAuditMetrics()
	env := Env{Logger: s.logger(), Metrics: s.registry, Draining: s.drainCh}
	if err := p.Initialize(ctx, cfg, env); err != nil {
		return nil, fmt.Errorf("initialize %s plugin: %w", s.info.Name, err)
	}
	// From here a failure must let the plugin release what Initialize took (Stop is safe before
	// Start).
	defer func() {
		if err != nil {
			_ = p.Stop(context.WithoutCancel(ctx))
		}
	}()

	maxMsg := cfg.ControlPlane.MaxRecvMessageBytes
	if sizer, ok := p.(MessageSizer); ok {
		maxMsg = max(maxMsg, sizer.MinRecvMessageBytes())
	}
	serverOpts := []grpc.ServerOption{
		grpc.StatsHandler(admission{s: s}),
		grpc.ForceServerCodecV2(s.codec),
		// Received frames go into the codec's pool, which does not clear buffers: grpc-go's
		// default pool zeroes every buffer it hands out (13 % of a PublishStream's CPU), yet each
		// server-side Get is filled before it is read (io.ReadFull of a whole DATA frame, a copy
		// of exactly the bytes compacted, a write buffer flushed only up to what was written).
		experimental.BufferPool(s.codec.pool),
		grpc.ChainUnaryInterceptor(s.unaryInterceptor, s.securityUnary),
		grpc.ChainStreamInterceptor(s.streamInterceptor, s.securityStream),
		grpc.MaxRecvMsgSize(maxMsg),
		grpc.MaxSendMsgSize(maxMsg),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		// Reuse a worker goroutine per call instead of starting one (and growing its stack).
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
	}
	if cfg.TLS.Enabled {
		reloader, err := newTLSReloader(cfg.TLS)
		if err != nil {
			return nil, err
		}
		s.tls = reloader
		serverOpts = append(serverOpts, grpc.Creds(credentials.NewTLS(reloader.serverConfig())))
	}
	sec, err := buildSecurity(cfg.Auth, nil, s.auditOptions())
	if err != nil {
		return nil, err
	}
	s.sec.Store(sec)
	defer func() {
		if err != nil {
			_ = sec.audit.Close()
		}
	}()
	if sec.policies.Enabled() && (!cfg.TLS.Enabled || cfg.TLS.ClientAuth != "require") && !cfg.Auth.JWT.Enabled {
		s.logger().Warn("auth.policies are set but nothing can authenticate callers (no mTLS, no auth.jwt): every data call will be refused as UNAUTHENTICATED")
	}
	s.grpcServer = grpc.NewServer(serverOpts...)
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpcServer, s.health)
	pluginv1.RegisterPluginServiceServer(s.grpcServer, &controlPlane{s: s})
	p.Register(s.grpcServer)
	reflection.Register(s.grpcServer)
	s.dataMethods = dataMethods(s.grpcServer.GetServiceInfo())
	s.setServing(false)

	addr := net.JoinHostPort(cfg.ControlPlane.Host, strconv.Itoa(cfg.ControlPlane.Port))
	if s.listener, err = listen(ctx, cfg.ControlPlane.ReusePort, addr); err != nil {
		return nil, fmt.Errorf("listen on control_plane.port: %w", err)
	}
	if cfg.Metrics.Enabled {
		maddr := net.JoinHostPort(cfg.Metrics.Host, strconv.Itoa(cfg.Metrics.Port))
		if s.httpListener, err = listen(ctx, cfg.ControlPlane.ReusePort, maddr); err != nil {
			_ = s.listener.Close()
			return nil, fmt.Errorf("listen on metrics.port: %w", err)
		}
		s.httpServer = &http.Server{
			Handler:           newMetricsHandler(s.registry, s.Ready),
			ReadHeaderTimeout: 5 * time.Second,
		}
	}
	return s, nil
}

// Addr is the gRPC listener's address.
func (s *Server) Addr() net.Addr { return s.listener.Addr() }

// MetricsAddr is the metrics listener's address, or nil when metrics are disabled.
func (s *Server) MetricsAddr() net.Addr {
	if s.httpListener == nil {
		return nil
	}
	return s.httpListener.Addr()
}

// Ready reports whether the plugin serves data calls: the backend answers and no drain has begun.
func (s *Server) Ready() bool { return s.healthy.Load() && !s.draining.Load() }

// Config returns the configuration in force.
func (s *Server) Config() *config.Config { return s.cfg.Load() }

func (s *Server) logger() *slog.Logger { return s.log.Load() }

// Serve starts the plugin and serves until ctx ends, then drains and stops within
// control_plane.shutdown_grace. It returns nil after a clean shutdown.
func (s *Server) Serve(ctx context.Context) error {
	s.started = time.Now()
	// Background work a plugin derives from this context must outlive the shutdown signal: it
	// ends in Stop, after in-flight calls have drained.
	if err := s.plugin.Start(context.WithoutCancel(ctx)); err != nil {
		_ = s.plugin.Stop(context.WithoutCancel(ctx))
		_ = s.listener.Close()
		if s.httpListener != nil {
			_ = s.httpListener.Close()
		}
		return fmt.Errorf("start %s plugin: %w", s.info.Name, err)
	}
	bgCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.bgCancel = cancel
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		s.healthLoop(bgCtx)
	}()
	if err := s.startWatchers(bgCtx); err != nil {
		s.logger().Error("file watch unavailable; certificate, JWKS and config changes need SIGHUP", "error", err)
	}

	serveErr := make(chan error, 2)
	go func() { serveErr <- s.grpcServer.Serve(s.listener) }()
	if s.httpServer != nil {
		go func() {
			if err := s.httpServer.Serve(s.httpListener); !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("metrics server: %w", err)
			}
		}()
	}
	cfg := s.Config()
	s.logger().Info("plugin started",
		"addr", s.Addr().String(), "metrics_addr", addrString(s.MetricsAddr()),
		"backend", s.info.Backend, "services", s.info.Services, "version", Version, "dev_mode", s.opts.DevMode)

	var runErr error
	select {
	case <-ctx.Done():
		s.logger().Info("shutdown requested", "grace", cfg.ControlPlane.ShutdownGrace.String())
	case runErr = <-serveErr:
		s.logger().Error("server failed", "error", runErr)
	}
	shutdownCtx, cancelShutdown := context.WithTimeout(context.WithoutCancel(ctx), s.Config().ControlPlane.ShutdownGrace)
	defer cancelShutdown()
	return errors.Join(runErr, s.Shutdown(shutdownCtx))
}

// startWatchers watches the certificate, CA and JWKS files, and with plugin.watch_config the
// config file, reloading when their contents change. The goroutines end with ctx.
func (s *Server) startWatchers(ctx context.Context) error {
	cfg := s.Config()
	files := securityFiles(cfg)
	if len(files) > 0 {
		fw, err := newFileWatcher(files, cfg.Plugin.WatchDebounce, func() {
			s.logger().Info("certificate or JWKS files changed; reloading them")
			_, _ = s.reloadFiles(ctx)
		})
		if err != nil {
			return err
		}
		s.reloadMu.Lock()
		s.filesWatch = fw
		s.reloadMu.Unlock()
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			fw.run(ctx)
		}()
	}
	if cfg.Plugin.WatchConfig && s.opts.Source.Path != "" {
		cw, err := newFileWatcher([]string{s.opts.Source.Path}, cfg.Plugin.WatchDebounce, func() {
			s.logger().Info("config file changed; reloading", "path", s.opts.Source.Path)
			_, _ = s.Reload(ctx)
		})
		if err != nil {
			return err
		}
		s.configWatch = cw
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			cw.run(ctx)
		}()
	}
	return nil
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// Shutdown drains in-flight calls, stops the gRPC and metrics servers and the plugin. Calls still
// running when ctx ends are cut off. Safe to call more than once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() {
		remaining := s.drain(ctx)
		s.cancelStreams()
		stopped := make(chan struct{})
		go func() {
			s.grpcServer.GracefulStop()
			close(stopped)
		}()
		// Once every data call is done, only control-plane streams (health Watch, reflection) can
		// hold GracefulStop; they block in Recv and never end on their own, so they get a moment to
		// flush and are then cut.
		var linger <-chan time.Time
		if remaining == 0 {
			linger = time.After(controlStreamLinger)
		}
		select {
		case <-stopped:
		case <-linger:
			s.grpcServer.Stop()
			<-stopped
		case <-ctx.Done():
			s.grpcServer.Stop()
			<-stopped
		}
		if s.bgCancel != nil {
			s.bgCancel()
		}
		s.bg.Wait()
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if s.httpServer != nil {
			_ = s.httpServer.Shutdown(stopCtx)
		}
		s.reloadMu.Lock() // waits for a reload in progress
		s.stopping = true
		s.reloadMu.Unlock()
		// The servers close only listeners they were serving; before Serve both are still
		// open here, and closing one twice is harmless.
		_ = s.listener.Close()
		if s.httpListener != nil {
			_ = s.httpListener.Close()
		}
		s.stopErr = s.plugin.Stop(stopCtx)
		if err := s.sec.Load().audit.Close(); err != nil {
			s.logger().Error("closing the audit sink", "error", err)
		}
		s.logger().Info("plugin stopped", "cut_off_calls", remaining)
	})
	return s.stopErr
}

// drain turns health NOT_SERVING, refuses new data calls and waits for in-flight ones until ctx
// ends. Streams get the first half of the time to finish on their own, then are cancelled. It
// returns how many calls were still running at the end.
func (s *Server) drain(ctx context.Context) int64 {
	s.drainOnce.Do(func() {
		s.draining.Store(true)
		s.metrics.draining.Set(1)
		s.health.Shutdown()
		close(s.drainCh)
		s.logger().Info("draining", "in_flight", s.inflight.count())
	})
	half := ctx
	if deadline, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		half, cancel = context.WithDeadline(ctx, time.Now().Add(time.Until(deadline)/2))
		defer cancel()
	}
	if s.inflight.wait(half) == 0 {
		return 0
	}
	s.cancelStreams()
	return s.inflight.wait(ctx)
}

// setServing publishes the serving state to gRPC health for "" and every data service.
func (s *Server) setServing(ok bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ok {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
	for _, svc := range s.info.Services {
		s.health.SetServingStatus(svc, st)
	}
}

// ReloadResult says what a reload did.
type ReloadResult struct {
	// Changed are the config paths applied live.
	Changed []string
	// RestartRequired are changed paths that take effect only after a restart.
	RestartRequired []string
}

// restartOnly are core paths that cannot change while the listeners are open.
var restartOnly = []string{
	"plugin.", "control_plane.host", "control_plane.port", "control_plane.max_recv_message_bytes",
	"metrics.", "log.format", "tls.enabled", "tls.client_auth",
}

// errShuttingDown refuses a reload that arrives once the plugin has begun to stop.
var errShuttingDown = apierr.New(apierr.ErrUnavailable, "reload: plugin is shutting down")

// Reload re-reads the configuration and applies what can change live, all or nothing: new TLS
// material, policies, JWKS keys, the audit sink and the plugin's changes are all prepared first,
// and swapped in only once every one of them is accepted. A configuration that fails to load or
// validate, or that any part rejects, leaves the old one wholly in force. Restart-only values
// keep their running values (and are listed under RestartRequired). The audit file is reopened
// (for logrotate).
func (s *Server) Reload(ctx context.Context) (ReloadResult, error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if s.stopping {
		return ReloadResult{}, errShuttingDown
	}
	next, err := config.Load(s.schema, s.opts.Source)
	if err != nil {
		return ReloadResult{}, s.rejectReload(err)
	}
	return s.apply(ctx, next, true)
}

// reloadFiles re-reads the certificate, CA and JWKS files under the running configuration, when
// the watcher sees them change.
func (s *Server) reloadFiles(ctx context.Context) (ReloadResult, error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if s.stopping {
		return ReloadResult{}, errShuttingDown
	}
	return s.apply(ctx, s.Config(), false)
}

func (s *Server) rejectReload(err error) error {
	s.metrics.reloads.WithLabelValues("rejected").Inc()
	s.logger().Error("config reload rejected; keeping the running config", "error", err)
	return fmt.Errorf("reload: %w", err)
}

// keepRestartOnly copies into next the running values of what cannot change live.
func keepRestartOnly(old, next *config.Config) {
	next.Plugin = old.Plugin
	next.ControlPlane.Host = old.ControlPlane.Host
	next.ControlPlane.Port = old.ControlPlane.Port
	next.ControlPlane.MaxRecvMessageBytes = old.ControlPlane.MaxRecvMessageBytes
	next.Metrics = old.Metrics
	next.Log.Format = old.Log.Format
	next.TLS.Enabled = old.TLS.Enabled
	next.TLS.ClientAuth = old.TLS.ClientAuth
}

// apply prepares every part of next, then swaps them all in. Callers hold reloadMu.
func (s *Server) apply(ctx context.Context, next *config.Config, reopenAudit bool) (ReloadResult, error) {
	old := s.Config()
	changed := config.Changes(old, next)
	if next != old {
		keepRestartOnly(old, next)
		if err := next.Validate(); err != nil {
			return ReloadResult{}, s.rejectReload(fmt.Errorf("invalid config with the restart-only values in force: %w", err))
		}
	}
	var tlsNext *tlsMaterial
	if s.tls != nil {
		// Certificate files are re-read on every reload: rotation keeps the same paths.
		m, rotated, err := s.tls.load(next.TLS)
		if err != nil {
			return ReloadResult{}, s.rejectReload(err)
		}
		tlsNext = m
		if rotated {
			changed = append(changed, "tls.certificates")
		}
	}
	oldSec := s.sec.Load()
	reuse := oldSec
	if reopenAudit {
		reuse = nil
	}
	secNext, err := buildSecurity(next.Auth, reuse, s.auditOptions())
	if err != nil {
		return ReloadResult{}, s.rejectReload(err)
	}
	discard := func() {
		if secNext.audit != oldSec.audit {
			_ = secNext.audit.Close()
		}
	}
	if !secNext.sameKeys(oldSec) && next.Auth.JWT.Enabled && oldSec.jwt != nil {
		changed = append(changed, "auth.jwt.keys")
	}
	var result ReloadResult
	var pluginChanged []string
	for _, path := range changed {
		switch {
		case hasAnyPrefix(path, restartOnly):
			result.RestartRequired = append(result.RestartRequired, path)
		case strings.HasPrefix(path, "limits.") || strings.HasPrefix(path, "backend."):
			pluginChanged = append(pluginChanged, path)
		default:
			result.Changed = append(result.Changed, path)
		}
	}
	// The plugin goes last: accepting its changes applies them, so nothing may fail after it.
	if len(pluginChanged) > 0 {
		rc, ok := s.plugin.(Reconfigurer)
		if !ok {
			result.RestartRequired = append(result.RestartRequired, pluginChanged...)
		} else {
			restart, err := rc.Reconfigure(ctx, next, pluginChanged)
			if err != nil {
				discard()
				s.metrics.reloads.WithLabelValues("rejected").Inc()
				s.logger().Error("config reload rejected by plugin; keeping the running config", "error", err)
				return ReloadResult{}, fmt.Errorf("reload: %w", err)
			}
			live := map[string]bool{}
			for _, p := range pluginChanged {
				live[p] = true
			}
			for _, p := range restart {
				delete(live, p)
				result.RestartRequired = append(result.RestartRequired, p)
			}
			for _, p := range pluginChanged {
				if live[p] {
					result.Changed = append(result.Changed, p)
				}
			}
		}
	}
	if tlsNext != nil {
		s.tls.commit(tlsNext)
	}
	s.sec.Store(secNext)
	if oldSec.audit != secNext.audit {
		// Calls that began before the swap hand their lines on to the new sink.
		if err := oldSec.audit.CloseInto(secNext.audit); err != nil {
			s.logger().Error("closing the previous audit sink", "error", err)
		}
	}
	s.scrub.update(next.Secrets())
	s.level.Set(levelOf(next.Log.Level))
	s.cfg.Store(next)
	if s.filesWatch != nil {
		s.filesWatch.setFiles(securityFiles(next))
	}
	if len(changed) == 0 {
		s.metrics.reloads.WithLabelValues("unchanged").Inc()
		s.logger().Info("config reloaded: nothing changed")
		return result, nil
	}
	s.metrics.reloads.WithLabelValues("applied").Inc()
	s.logger().Info("config reloaded", "changed", result.Changed, "restart_required", result.RestartRequired)
	s.wakeHealth()
	return result, nil
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if s == p || strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
