package config

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Section is a plugin-owned part of the configuration (backend, limits). Implementations are
// pointers to structs with yaml tags; Validate reports problems as "key: problem", joined.
type Section interface {
	Validate() error
}

// Schema tells the loader what a plugin adds to the common configuration.
type Schema struct {
	// Plugin is the plugin's short name, e.g. "postgres".
	Plugin string
	// Port and MetricsPort are the plugin's default listening ports.
	Port        int
	MetricsPort int
	// NewBackend and NewLimits return the plugin's sections filled with their defaults.
	NewBackend func() Section
	NewLimits  func() Section
	// EnvAliases maps documented variable names (DATABASE_URL) to config paths (backend.database_url).
	// The generic PRISM_<SECTION>_<KEY> form wins when both are set.
	EnvAliases map[string]string
}

// Config is a plugin's whole configuration.
type Config struct {
	Plugin       PluginConfig       `yaml:"plugin"`
	ControlPlane ControlPlaneConfig `yaml:"control_plane"`
	Metrics      MetricsConfig      `yaml:"metrics"`
	Log          LogConfig          `yaml:"log"`
	TLS          TLSConfig          `yaml:"tls"`
	Auth         AuthConfig         `yaml:"auth"`
	Limits       Section            `yaml:"limits"`
	Backend      Section            `yaml:"backend"`
}

// PluginConfig names this instance.
type PluginConfig struct {
	// Name identifies the instance in logs and GetInfo; defaults to the plugin's name.
	Name string `yaml:"name"`
	// WatchConfig reloads the configuration when its file changes (Kubernetes ConfigMap updates
	// included), after WatchDebounce of quiet, with the same rules as SIGHUP.
	WatchConfig   bool          `yaml:"watch_config"`
	WatchDebounce time.Duration `yaml:"watch_debounce"`
}

// ControlPlaneConfig configures the one gRPC listener and the lifecycle timings.
type ControlPlaneConfig struct {
	Host           string        `yaml:"host"`
	Port           int           `yaml:"port"`
	HealthInterval time.Duration `yaml:"health_interval"`
	HealthTimeout  time.Duration `yaml:"health_timeout"`
	ShutdownGrace  time.Duration `yaml:"shutdown_grace"`
	// MaxRecvMessageBytes bounds one inbound gRPC message; plugins raise it to fit their limits.
	MaxRecvMessageBytes int `yaml:"max_recv_message_bytes"`
	// ReusePort sets SO_REUSEPORT on the gRPC and metrics listeners so a second process can bind
	// the same ports; prism-watcher sets it to swap a rebuilt plugin in without downtime.
	ReusePort bool `yaml:"reuse_port"`
}

// MetricsConfig configures the HTTP listener for /metrics, /healthz and /readyz.
type MetricsConfig struct {
	Enabled bool   `yaml:"enabled"`
	Host    string `yaml:"host"`
	Port    int    `yaml:"port"`
}

// LogConfig configures structured logging.
type LogConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// TLSConfig configures inbound TLS on the gRPC listener.
type TLSConfig struct {
	Enabled  bool   `yaml:"enabled"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile, with ClientAuth "require", turns on mTLS.
	ClientCAFile string `yaml:"client_ca_file"`
	ClientAuth   string `yaml:"client_auth"`
}

// AuthConfig configures inbound security (DESIGN §4): who a caller is (mTLS certificate or bearer
// JWT), what each identity may do (policies), and the audit log. Everything in it changes live on
// reload.
type AuthConfig struct {
	// Policies grant identities operations on namespaces (topics for Stream). None = allow all;
	// once one exists, everything not granted is denied.
	Policies []PolicyConfig `yaml:"policies"`
	// GetInfoRequiresAdmin puts PluginService/GetInfo behind the admin grant (open by default).
	GetInfoRequiresAdmin bool `yaml:"get_info_requires_admin"`
	// JWT accepts a bearer token in the authorization metadata as the caller's identity.
	JWT JWTConfig `yaml:"jwt"`
	// Audit writes one JSON line per call to its own sink.
	Audit AuditConfig `yaml:"audit"`
}

// PolicyConfig grants identities (globs) operations on namespaces or topics (globs).
type PolicyConfig struct {
	// Name labels the policy in errors.
	Name string `yaml:"name"`
	// Identities are globs over caller identities: SPIFFE IDs, DNS names, CNs or JWT subjects.
	Identities []string `yaml:"identities"`
	// Operations are method names (Get, Publish, Drain, ...), the groups read, write and admin, or *.
	Operations []string `yaml:"operations"`
	// Namespaces are globs over namespaces (KeyValue, Cache) or topics (Stream).
	Namespaces []string `yaml:"namespaces"`
}

// JWTConfig verifies bearer tokens against a JWKS file.
type JWTConfig struct {
	Enabled bool `yaml:"enabled"`
	// JWKSFile holds the public keys (JSON Web Key Set); it is watched and re-read on change.
	JWKSFile string `yaml:"jwks_file"`
	// Issuer and Audience must match the token's iss and aud claims.
	Issuer   string `yaml:"issuer"`
	Audience string `yaml:"audience"`
}

// AuditConfig configures the audit log.
type AuditConfig struct {
	Enabled bool `yaml:"enabled"`
	// Output is stderr or a file path; a file is reopened on every reload (logrotate).
	Output string `yaml:"output"`
}

// Default returns the configuration a plugin runs with when nothing is configured.
func Default(s Schema) *Config {
	cfg := &Config{
		Plugin: PluginConfig{Name: s.Plugin, WatchDebounce: time.Second},
		ControlPlane: ControlPlaneConfig{
			Host:                "0.0.0.0",
			Port:                s.Port,
			HealthInterval:      5 * time.Second,
			HealthTimeout:       2 * time.Second,
			ShutdownGrace:       15 * time.Second,
			MaxRecvMessageBytes: 4 << 20,
		},
		Metrics: MetricsConfig{Enabled: true, Host: "0.0.0.0", Port: s.MetricsPort},
		Log:     LogConfig{Level: "info", Format: "json"},
		TLS:     TLSConfig{ClientAuth: "none"},
		Auth:    AuthConfig{Audit: AuditConfig{Output: "stderr"}},
		Limits:  &emptySection{},
		Backend: &emptySection{},
	}
	if s.NewLimits != nil {
		cfg.Limits = s.NewLimits()
	}
	if s.NewBackend != nil {
		cfg.Backend = s.NewBackend()
	}
	return cfg
}

// Validate checks every section and returns all problems, each prefixed with its config path.
func (c *Config) Validate() error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{path}, args...)...))
	}
	// Port 0 asks the kernel for a free port (tests use it).
	checkPort := func(path string, port int) {
		errs = append(errs, Between(path, port, 0, 65535))
	}
	checkPort("control_plane.port", c.ControlPlane.Port)
	if c.ControlPlane.HealthInterval < 100*time.Millisecond {
		add("control_plane.health_interval", "must be at least 100ms, got %s", c.ControlPlane.HealthInterval)
	}
	if c.ControlPlane.HealthTimeout <= 0 {
		add("control_plane.health_timeout", "must be positive, got %s", c.ControlPlane.HealthTimeout)
	}
	if c.ControlPlane.ShutdownGrace < 0 {
		add("control_plane.shutdown_grace", "must not be negative, got %s", c.ControlPlane.ShutdownGrace)
	}
	errs = append(errs, Between("control_plane.max_recv_message_bytes", c.ControlPlane.MaxRecvMessageBytes, 1024, 256<<20))
	if c.Metrics.Enabled {
		checkPort("metrics.port", c.Metrics.Port)
		if c.Metrics.Port != 0 && c.Metrics.Port == c.ControlPlane.Port {
			add("metrics.port", "must differ from control_plane.port (%d)", c.ControlPlane.Port)
		}
	}
	if _, err := ParseLevel(c.Log.Level); err != nil {
		add("log.level", "%v", err)
	}
	if c.Log.Format != "json" && c.Log.Format != "text" {
		add("log.format", "must be json or text, got %q", c.Log.Format)
	}
	switch c.TLS.ClientAuth {
	case "none", "require":
	default:
		add("tls.client_auth", "must be none or require, got %q", c.TLS.ClientAuth)
	}
	if c.TLS.Enabled {
		if c.TLS.CertFile == "" {
			add("tls.cert_file", "required when tls.enabled is true")
		}
		if c.TLS.KeyFile == "" {
			add("tls.key_file", "required when tls.enabled is true")
		}
		if c.TLS.ClientAuth == "require" && c.TLS.ClientCAFile == "" {
			add("tls.client_ca_file", "required when tls.client_auth is require")
		}
	} else if c.TLS.ClientAuth == "require" {
		add("tls.client_auth", "require needs tls.enabled: true")
	}
	if c.Plugin.WatchDebounce < 10*time.Millisecond || c.Plugin.WatchDebounce > time.Minute {
		add("plugin.watch_debounce", "must be between 10ms and 1m, got %s", c.Plugin.WatchDebounce)
	}
	errs = append(errs, c.Auth.validate())
	errs = append(errs, prefixed("limits.", c.Limits.Validate()))
	errs = append(errs, prefixed("backend.", c.Backend.Validate()))
	return errors.Join(errs...)
}

// Secrets returns every secret value in the configuration, so logs and errors can scrub them.
func (c *Config) Secrets() []string {
	var out []string
	walkLeaves(c, func(l leaf) {
		switch v := l.value.Interface().(type) {
		case Secret:
			if v != "" {
				out = append(out, v.Reveal())
			}
		case SecretURL:
			if p := v.Password(); p != "" {
				out = append(out, p)
			}
		}
	})
	return out
}

// ParseLevel accepts debug, info, warn and error (any case).
func ParseLevel(s string) (Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return LevelDebug, nil
	case "info", "":
		return LevelInfo, nil
	case "warn", "warning":
		return LevelWarn, nil
	case "error":
		return LevelError, nil
	}
	return LevelInfo, fmt.Errorf("must be debug, info, warn or error, got %q", s)
}

// Level mirrors slog's levels without tying config to a logger.
type Level int

// The log levels, numerically equal to slog's.
const (
	LevelDebug Level = -4
	LevelInfo  Level = 0
	LevelWarn  Level = 4
	LevelError Level = 8
)

// prefixed adds prefix to each joined error's message.
func prefixed(prefix string, err error) error {
	if err == nil {
		return nil
	}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range joined.Unwrap() {
			out = append(out, prefixed(prefix, e))
		}
		return errors.Join(out...)
	}
	return fmt.Errorf("%s%w", prefix, err)
}

type emptySection struct{}

func (*emptySection) Validate() error { return nil }

// validate checks the shape of the auth section; the policies' operations and globs are checked
// when core/auth compiles them.
func (a *AuthConfig) validate() error {
	var errs []error
	for i, p := range a.Policies {
		path := fmt.Sprintf("auth.policies[%d]", i)
		if len(p.Identities) == 0 {
			errs = append(errs, fmt.Errorf("%s.identities: must list at least one identity glob", path))
		}
		if len(p.Operations) == 0 {
			errs = append(errs, fmt.Errorf("%s.operations: must list at least one operation", path))
		}
	}
	if a.JWT.Enabled {
		if a.JWT.JWKSFile == "" {
			errs = append(errs, errors.New("auth.jwt.jwks_file: required when auth.jwt.enabled is true"))
		}
		if a.JWT.Issuer == "" {
			errs = append(errs, errors.New("auth.jwt.issuer: required when auth.jwt.enabled is true"))
		}
		if a.JWT.Audience == "" {
			errs = append(errs, errors.New("auth.jwt.audience: required when auth.jwt.enabled is true"))
		}
	}
	if a.Audit.Enabled && a.Audit.Output == "" {
		errs = append(errs, errors.New("auth.audit.output: must be stderr or a file path"))
	}
	return errors.Join(errs...)
}
