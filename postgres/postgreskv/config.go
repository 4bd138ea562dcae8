package postgreskv

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/prism-gateway/plugins/core/apierr"
	"github.com/prism-gateway/plugins/core/config"
	"github.com/prism-gateway/plugins/core/credentials"
)

// BackendConfig is the plugin's `backend` section.
type BackendConfig struct {
	// DatabaseURL is a libpq-style URL or key=value DSN; TLS options (sslmode, sslrootcert,
	// sslcert, sslkey) may go in it too, or in the ssl_mode and tls_* keys below.
	DatabaseURL config.SecretURL `yaml:"database_url"`
	// Password, when set, replaces the password in DatabaseURL (e.g. from a secret store).
	Password config.Secret `yaml:"password"`
	// PoolSize is the pool's maximum number of connections.
	PoolSize int `yaml:"pool_size"`
	// ConnectTimeout bounds dialling and authenticating one connection.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// MigrationTimeout bounds one attempt at migrating the schema at start, including the wait
	// for another replica that holds the migration lock.
	MigrationTimeout time.Duration `yaml:"migration_timeout"`
	// SSLMode, when set, overrides the URL's sslmode: disable, require, verify-ca or verify-full.
	SSLMode string `yaml:"ssl_mode"`
	// TLSCAFile is the PEM root CA that signs the server's certificate (verify-ca, verify-full).
	TLSCAFile string `yaml:"tls_ca_file"`
	// TLSCertFile and TLSKeyFile are the PEM client certificate and key for certificate auth.
	// They are re-read for every new connection, so rotated files take effect without a restart.
	TLSCertFile string `yaml:"tls_cert_file"`
	TLSKeyFile  string `yaml:"tls_key_file"`
	// IdempotencyRetention is how long idempotency tokens and their results are remembered.
	IdempotencyRetention time.Duration `yaml:"idempotency_retention"`
	// PurgeInterval is how often expired items and idempotency tokens are deleted.
	PurgeInterval time.Duration `yaml:"purge_interval"`
	// PurgeBatchSize bounds the rows one purge statement deletes, keeping its locks short.
	PurgeBatchSize int `yaml:"purge_batch_size"`
	// PageTokenKey signs page tokens. When empty, a random key is generated once and stored in
	// the database, so every replica on the same database shares it.
	PageTokenKey config.Secret `yaml:"page_token_key"`
	// Credentials selects where the user, password (and optionally client certificate and key)
	// come from: static (DatabaseURL and Password, the default), a watched file, or Vault.
	// Host, port, database and TLS settings always come from the keys above.
	Credentials credentials.Config `yaml:"credentials"`
}

func defaultBackend() *BackendConfig {
	return &BackendConfig{
		DatabaseURL:          "postgres://prism@127.0.0.1:5432/prism",
		PoolSize:             10,
		ConnectTimeout:       5 * time.Second,
		MigrationTimeout:     time.Minute,
		IdempotencyRetention: 24 * time.Hour,
		PurgeInterval:        time.Minute,
		PurgeBatchSize:       1000,
		Credentials:          credentials.DefaultConfig(),
	}
}

var sslModes = map[string]bool{"": true, "disable": true, "require": true, "verify-ca": true, "verify-full": true}

// Validate implements config.Section.
func (b *BackendConfig) Validate() error {
	var errs []error
	if !b.DatabaseURL.IsSet() {
		errs = append(errs, errors.New("database_url: required (or set DATABASE_URL)"))
	} else if _, err := pgxpool.ParseConfig(b.DatabaseURL.Reveal()); err != nil {
		// pgx's message can quote the URL, so only the fact is reported.
		errs = append(errs, errors.New("database_url: not a valid PostgreSQL URL or DSN"))
	}
	errs = append(errs, config.Between("pool_size", b.PoolSize, 1, 1000))
	if b.ConnectTimeout <= 0 {
		errs = append(errs, fmt.Errorf("connect_timeout: must be positive, got %s", b.ConnectTimeout))
	}
	if b.MigrationTimeout <= 0 {
		errs = append(errs, fmt.Errorf("migration_timeout: must be positive, got %s", b.MigrationTimeout))
	}
	if !sslModes[b.SSLMode] {
		errs = append(errs, fmt.Errorf("ssl_mode: must be disable, require, verify-ca or verify-full, got %q", b.SSLMode))
	}
	if (b.SSLMode == "verify-ca" || b.SSLMode == "verify-full") && b.TLSCAFile == "" {
		errs = append(errs, fmt.Errorf("tls_ca_file: required when ssl_mode is %s", b.SSLMode))
	}
	if (b.TLSCertFile == "") != (b.TLSKeyFile == "") {
		errs = append(errs, errors.New("tls_cert_file, tls_key_file: set both or neither"))
	}
	if b.SSLMode == "disable" && (b.TLSCAFile != "" || b.TLSCertFile != "") {
		errs = append(errs, errors.New("ssl_mode: disable contradicts tls_ca_file/tls_cert_file"))
	}
	if b.SSLMode == "" && (b.TLSCAFile != "" || b.TLSCertFile != "") {
		errs = append(errs, errors.New("ssl_mode: required when tls_ca_file or tls_cert_file is set"))
	}
	if b.IdempotencyRetention < time.Second {
		errs = append(errs, fmt.Errorf("idempotency_retention: must be at least 1s, got %s", b.IdempotencyRetention))
	}
	if b.PurgeInterval < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("purge_interval: must be at least 100ms, got %s", b.PurgeInterval))
	}
	errs = append(errs, config.Between("purge_batch_size", b.PurgeBatchSize, 1, 100000))
	if b.PageTokenKey.IsSet() && len(b.PageTokenKey.Reveal()) < 16 {
		errs = append(errs, errors.New("page_token_key: must be at least 16 characters"))
	}
	if err := b.Credentials.Validate(); err != nil {
		errs = append(errs, err)
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
	if b.SSLMode != "" {
		tc, err := b.tlsConfig(pc.ConnConfig.Host)
		if err != nil {
			return nil, err
		}
		pc.ConnConfig.TLSConfig = tc
		// The explicit mode replaces the URL's, including libpq's "prefer" fallbacks.
		pc.ConnConfig.Fallbacks = nil
	}
	return pc, nil
}

// staticCredentials are the user and password the URL and backend.password give: the static
// source's values, and the username a file or KV secret that holds only a password falls back to.
func (b *BackendConfig) staticCredentials() (credentials.Credentials, error) {
	pc, err := pgxpool.ParseConfig(b.DatabaseURL.Reveal())
	if err != nil {
		return credentials.Credentials{}, errors.New("backend.database_url: not a valid PostgreSQL URL or DSN")
	}
	creds := credentials.Credentials{Username: pc.ConnConfig.User, Password: config.Secret(pc.ConnConfig.Password)}
	if b.Password.IsSet() {
		creds.Password = b.Password
	}
	return creds, nil
}

// tlsConfig builds the client TLS configuration for ssl_mode and the tls_* files.
func (b *BackendConfig) tlsConfig(host string) (*tls.Config, error) {
	if b.SSLMode == "disable" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	switch b.SSLMode {
	case "require":
		// libpq semantics: encrypt, but do not check who answers.
		tc.InsecureSkipVerify = true
	case "verify-ca", "verify-full":
		roots, err := loadCertPool(b.TLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("backend.tls_ca_file: %w", err)
		}
		if b.SSLMode == "verify-full" {
			tc.RootCAs = roots
			tc.ServerName = host
			if ip := net.ParseIP(host); ip != nil {
				tc.ServerName = ip.String()
			}
		} else {
			// Checked on every handshake, resumed ones included.
			tc.InsecureSkipVerify = true
			tc.VerifyConnection = verifyChainOnly(roots)
		}
	}
	if b.TLSCertFile != "" {
		// Fail at start on a bad pair, then re-read per connection so rotation needs no restart.
		if _, err := tls.LoadX509KeyPair(b.TLSCertFile, b.TLSKeyFile); err != nil {
			return nil, fmt.Errorf("backend.tls_cert_file: %w", err)
		}
		certFile, keyFile := b.TLSCertFile, b.TLSKeyFile
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				return nil, fmt.Errorf("load client certificate: %w", err)
			}
			return &c, nil
		}
	}
	return tc, nil
}

// LimitsConfig is the plugin's `limits` section: every request is checked against it before the
// database is touched.
type LimitsConfig struct {
	// NamespacePattern is the regular expression every namespace must match.
	NamespacePattern string `yaml:"namespace_pattern"`
	// MaxIDBytes bounds a record id (UTF-8 bytes).
	MaxIDBytes int `yaml:"max_id_bytes"`
	// MaxKeyBytes bounds an item key.
	MaxKeyBytes int `yaml:"max_key_bytes"`
	// MaxValueBytes bounds an item value.
	MaxValueBytes int `yaml:"max_value_bytes"`
	// MaxItemsPerRequest bounds the items of a Put and the keys of a Get or Delete.
	MaxItemsPerRequest int `yaml:"max_items_per_request"`
	// MaxPreconditions bounds the preconditions of one Put or Delete.
	MaxPreconditions int `yaml:"max_preconditions"`
	// MaxRequestBytes bounds the key and value bytes of one Put.
	MaxRequestBytes int `yaml:"max_request_bytes"`
	// MaxIdempotencyTokenBytes bounds an idempotency token.
	MaxIdempotencyTokenBytes int `yaml:"max_idempotency_token_bytes"`
	// DefaultPageSize and MaxPageSize bound the items of one Get or Scan page.
	DefaultPageSize int `yaml:"default_page_size"`
	MaxPageSize     int `yaml:"max_page_size"`
	// DefaultPageBytes and MaxPageBytes bound the key and value bytes of one page (soft: a
	// page always holds at least one item). Get pages use DefaultPageBytes.
	DefaultPageBytes int `yaml:"default_page_bytes"`
	MaxPageBytes     int `yaml:"max_page_bytes"`
	// MaxTTL bounds an item's time to live; 0 means the plugin's maximum, apierr.MaxTTL
	// (100 years), which also caps any configured value so an expiry is never lost.
	MaxTTL time.Duration `yaml:"max_ttl"`
}

// DefaultLimits returns the limits a plugin runs with when none are configured.
func DefaultLimits() *LimitsConfig {
	return &LimitsConfig{
		NamespacePattern:         `^[a-z][a-z0-9_.-]{0,63}$`,
		MaxIDBytes:               512,
		MaxKeyBytes:              1024,
		MaxValueBytes:            1 << 20,
		MaxItemsPerRequest:       1000,
		MaxPreconditions:         1000,
		MaxRequestBytes:          8 << 20,
		MaxIdempotencyTokenBytes: 128,
		DefaultPageSize:          100,
		MaxPageSize:              1000,
		DefaultPageBytes:         2 << 20,
		MaxPageBytes:             8 << 20,
	}
}

// Validate implements config.Section.
func (l *LimitsConfig) Validate() error {
	var errs []error
	if _, err := regexp.Compile(l.NamespacePattern); err != nil {
		errs = append(errs, fmt.Errorf("namespace_pattern: %w", err))
	}
	errs = append(errs,
		config.Between("max_id_bytes", l.MaxIDBytes, 1, 64<<10),
		config.Between("max_key_bytes", l.MaxKeyBytes, 1, 64<<10),
		config.Between("max_value_bytes", l.MaxValueBytes, 1, 64<<20),
		config.Between("max_items_per_request", l.MaxItemsPerRequest, 1, 100000),
		config.Between("max_preconditions", l.MaxPreconditions, 0, 100000),
		config.Between("max_request_bytes", l.MaxRequestBytes, 1, 200<<20),
		config.Between("max_idempotency_token_bytes", l.MaxIdempotencyTokenBytes, 1, 4096),
		config.Between("max_page_size", l.MaxPageSize, 1, 100000),
		config.Between("default_page_size", l.DefaultPageSize, 1, max(l.MaxPageSize, 1)),
		config.Between("max_page_bytes", l.MaxPageBytes, 1, 200<<20),
		config.Between("default_page_bytes", l.DefaultPageBytes, 1, max(l.MaxPageBytes, 1)),
	)
	if l.MaxRequestBytes < l.MaxValueBytes {
		errs = append(errs, fmt.Errorf("max_request_bytes: must be at least max_value_bytes (%d), got %d", l.MaxValueBytes, l.MaxRequestBytes))
	}
	if l.MaxTTL < 0 || l.MaxTTL > apierr.MaxTTL {
		errs = append(errs, fmt.Errorf("max_ttl: must be between 0 (the maximum, %s) and %s, got %s", apierr.MaxTTL, apierr.MaxTTL, l.MaxTTL))
	}
	return errors.Join(errs...)
}

// messageBytes is the gRPC message size the limits need: the largest Put, or the largest page
// (the soft byte cap plus one crossing item), with room for framing.
func (l *LimitsConfig) messageBytes() int {
	const perItem = 64 // tags, lengths, version, timestamps
	put := l.MaxRequestBytes + l.MaxItemsPerRequest*(perItem+l.MaxKeyBytes) + l.MaxIDBytes + 64<<10
	page := l.MaxPageBytes + l.MaxValueBytes + l.MaxKeyBytes + l.MaxPageSize*(perItem+l.MaxIDBytes) + 64<<10
	return max(put, page)
}

// Schema declares this plugin's configuration.
func Schema() config.Schema {
	return config.Schema{
		Plugin:      "postgres",
		Port:        9090,
		MetricsPort: 9190,
		NewBackend:  func() config.Section { return defaultBackend() },
		NewLimits:   func() config.Section { return DefaultLimits() },
		EnvAliases: map[string]string{
			"DATABASE_URL":       "backend.database_url",
			"POSTGRES_POOL_SIZE": "backend.pool_size",
		},
	}
}
