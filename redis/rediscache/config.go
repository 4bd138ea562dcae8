package rediscache

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/prism-gateway/plugins/core/config"
)

// BackendConfig is the plugin's `backend` section.
type BackendConfig struct {
	// Address is host:port; several comma-separated addresses name Redis Cluster seed nodes.
	Address  string        `yaml:"address"`
	Database int           `yaml:"database"`
	Username string        `yaml:"username"`
	Password config.Secret `yaml:"password"`
	// PoolSize is the maximum number of connections per node.
	PoolSize        int           `yaml:"pool_size"`
	MinIdleConns    int           `yaml:"min_idle_conns"`
	MaxRetries      int           `yaml:"max_retries"`
	ConnMaxIdleTime time.Duration `yaml:"conn_max_idle_time"`
	DialTimeout     time.Duration `yaml:"dial_timeout"`
	// TLSEnabled turns on TLS to Redis; TLSCAFile adds a private CA.
	TLSEnabled bool   `yaml:"tls_enabled"`
	TLSCAFile  string `yaml:"tls_ca_file"`
}

// LimitsConfig is the plugin's `limits` section.
type LimitsConfig struct{}

// Validate implements config.Section.
func (*LimitsConfig) Validate() error { return nil }

func defaultBackend() *BackendConfig {
	return &BackendConfig{
		Address:         "127.0.0.1:6379",
		PoolSize:        50,
		MinIdleConns:    4,
		MaxRetries:      3,
		ConnMaxIdleTime: 5 * time.Minute,
		DialTimeout:     5 * time.Second,
	}
}

func (b *BackendConfig) addresses() []string {
	var out []string
	for _, a := range strings.Split(b.Address, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// Validate implements config.Section.
func (b *BackendConfig) Validate() error {
	var errs []error
	addrs := b.addresses()
	if len(addrs) == 0 {
		errs = append(errs, errors.New("address: required (or set REDIS_ADDRESS)"))
	}
	for _, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("address: must be host:port, got %q", a))
		}
	}
	if b.Database < 0 || b.Database > 15 {
		errs = append(errs, fmt.Errorf("database: must be between 0 and 15, got %d", b.Database))
	}
	if b.PoolSize < 1 || b.PoolSize > 10000 {
		errs = append(errs, fmt.Errorf("pool_size: must be between 1 and 10000, got %d", b.PoolSize))
	}
	if b.MinIdleConns < 0 || b.MinIdleConns > b.PoolSize {
		errs = append(errs, fmt.Errorf("min_idle_conns: must be between 0 and pool_size (%d), got %d", b.PoolSize, b.MinIdleConns))
	}
	if b.MaxRetries < -1 || b.MaxRetries > 100 {
		errs = append(errs, fmt.Errorf("max_retries: must be between -1 (none) and 100, got %d", b.MaxRetries))
	}
	if b.ConnMaxIdleTime < 0 {
		errs = append(errs, fmt.Errorf("conn_max_idle_time: must not be negative, got %s", b.ConnMaxIdleTime))
	}
	if b.DialTimeout <= 0 {
		errs = append(errs, fmt.Errorf("dial_timeout: must be positive, got %s", b.DialTimeout))
	}
	if b.TLSCAFile != "" && !b.TLSEnabled {
		errs = append(errs, errors.New("tls_ca_file: needs tls_enabled: true"))
	}
	return errors.Join(errs...)
}

// clientOptions turns the backend section into go-redis universal options.
func (b *BackendConfig) clientOptions() (*redis.UniversalOptions, error) {
	opts := &redis.UniversalOptions{
		Addrs:           b.addresses(),
		DB:              b.Database,
		Username:        b.Username,
		Password:        b.Password.Reveal(),
		PoolSize:        b.PoolSize,
		MinIdleConns:    b.MinIdleConns,
		MaxRetries:      b.MaxRetries,
		ConnMaxIdleTime: b.ConnMaxIdleTime,
		DialTimeout:     b.DialTimeout,
	}
	if b.TLSEnabled {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if b.TLSCAFile != "" {
			pem, err := os.ReadFile(b.TLSCAFile)
			if err != nil {
				return nil, fmt.Errorf("backend.tls_ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, errors.New("backend.tls_ca_file: no PEM certificates found")
			}
			tc.RootCAs = pool
		}
		opts.TLSConfig = tc
	}
	return opts, nil
}

// Schema declares this plugin's configuration.
func Schema() config.Schema {
	return config.Schema{
		Plugin:      "redis",
		Port:        9092,
		MetricsPort: 9192,
		NewBackend:  func() config.Section { return defaultBackend() },
		NewLimits:   func() config.Section { return &LimitsConfig{} },
		EnvAliases: map[string]string{
			"REDIS_ADDRESS":  "backend.address",
			"REDIS_USERNAME": "backend.username",
			"REDIS_PASSWORD": "backend.password",
		},
	}
}
