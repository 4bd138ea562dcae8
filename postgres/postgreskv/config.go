package postgreskv

import (
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/prism-gateway/plugins/core/config"
)

// BackendConfig is the plugin's `backend` section.
type BackendConfig struct {
	// DatabaseURL is a libpq-style URL or key=value DSN; TLS options (sslmode, sslrootcert,
	// sslcert, sslkey) go in it too.
	DatabaseURL config.SecretURL `yaml:"database_url"`
	// Password, when set, replaces the password in DatabaseURL (e.g. from a secret store).
	Password config.Secret `yaml:"password"`
	// PoolSize is the pool's maximum number of connections.
	PoolSize int `yaml:"pool_size"`
	// ConnectTimeout bounds dialling and authenticating one connection.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
}

// LimitsConfig is the plugin's `limits` section.
type LimitsConfig struct{}

// Validate implements config.Section.
func (*LimitsConfig) Validate() error { return nil }

func defaultBackend() *BackendConfig {
	return &BackendConfig{
		DatabaseURL:    "postgres://prism@127.0.0.1:5432/prism",
		PoolSize:       10,
		ConnectTimeout: 5 * time.Second,
	}
}

// Validate implements config.Section.
func (b *BackendConfig) Validate() error {
	var errs []error
	if !b.DatabaseURL.IsSet() {
		errs = append(errs, errors.New("database_url: required (or set DATABASE_URL)"))
	} else if _, err := pgxpool.ParseConfig(b.DatabaseURL.Reveal()); err != nil {
		// pgx's message can quote the URL, so only the fact is reported.
		errs = append(errs, errors.New("database_url: not a valid PostgreSQL URL or DSN"))
	}
	if b.PoolSize < 1 || b.PoolSize > 1000 {
		errs = append(errs, fmt.Errorf("pool_size: must be between 1 and 1000, got %d", b.PoolSize))
	}
	if b.ConnectTimeout <= 0 {
		errs = append(errs, fmt.Errorf("connect_timeout: must be positive, got %s", b.ConnectTimeout))
	}
	return errors.Join(errs...)
}

// poolConfig turns the backend section into a pgx pool configuration.
func (b *BackendConfig) poolConfig() (*pgxpool.Config, error) {
	pc, err := pgxpool.ParseConfig(b.DatabaseURL.Reveal())
	if err != nil {
		return nil, errors.New("backend.database_url: not a valid PostgreSQL URL or DSN")
	}
	if b.Password.IsSet() {
		pc.ConnConfig.Password = b.Password.Reveal()
	}
	pc.MaxConns = int32(b.PoolSize)
	pc.ConnConfig.ConnectTimeout = b.ConnectTimeout
	return pc, nil
}

// Schema declares this plugin's configuration.
func Schema() config.Schema {
	return config.Schema{
		Plugin:      "postgres",
		Port:        9090,
		MetricsPort: 9190,
		NewBackend:  func() config.Section { return defaultBackend() },
		NewLimits:   func() config.Section { return &LimitsConfig{} },
		EnvAliases: map[string]string{
			"DATABASE_URL":       "backend.database_url",
			"POSTGRES_POOL_SIZE": "backend.pool_size",
		},
	}
}
