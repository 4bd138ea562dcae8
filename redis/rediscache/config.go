package rediscache

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/prism-gateway/plugins/core"
	"github.com/prism-gateway/plugins/core/apierr"
	"github.com/prism-gateway/plugins/core/config"
	"github.com/prism-gateway/plugins/core/credentials"
)

// Modes of BackendConfig.Mode.
const (
	ModeAuto    = "auto"
	ModeSingle  = "single"
	ModeCluster = "cluster"
)

// BackendConfig is the plugin's `backend` section.
type BackendConfig struct {
	// Address is host:port; several comma-separated addresses name Redis Cluster seed nodes.
	Address string `yaml:"address"`
	// Mode is auto (cluster when Address lists several nodes), single or cluster (needed when
	// one seed address names a cluster node).
	Mode     string        `yaml:"mode"`
	Database int           `yaml:"database"`
	Username string        `yaml:"username"`
	Password config.Secret `yaml:"password"`
	// KeyPrefix starts every stored key: <key_prefix><namespace>:<key>. Redis ACL key patterns
	// (~prism:*) are written against it.
	KeyPrefix string `yaml:"key_prefix"`
	// DefaultTTL is the expiry of a Set or MSet entry that names none; 0 keeps such keys forever.
	DefaultTTL time.Duration `yaml:"default_ttl"`
	// TTLJitter spreads expiries: every expiry the plugin writes is moved by a uniformly random
	// amount of up to ±TTLJitter percent, so keys written together do not expire together.
	TTLJitter int `yaml:"ttl_jitter"`
	// PoolSize is the maximum number of connections per node.
	PoolSize        int           `yaml:"pool_size"`
	MinIdleConns    int           `yaml:"min_idle_conns"`
	MaxRetries      int           `yaml:"max_retries"`
	ConnMaxIdleTime time.Duration `yaml:"conn_max_idle_time"`
	DialTimeout     time.Duration `yaml:"dial_timeout"`
	// AutoPipeline sends the single-key commands of concurrent calls to Redis together, in shared
	// pipelined writes (pipeline.go), which saves system calls under load; each call still ends
	// at its own deadline. Off by default while it is new; a lone caller neither gains nor loses.
	AutoPipeline bool `yaml:"auto_pipeline"`
	// TLSEnabled turns on TLS to Redis; TLSCAFile adds a private CA.
	TLSEnabled bool   `yaml:"tls_enabled"`
	TLSCAFile  string `yaml:"tls_ca_file"`
	// Credentials selects where the ACL user and password come from: static (Username and
	// Password above, the default), a watched file, or Vault (KV v2 or the database engine's
	// redis-database-plugin). Addresses, mode and TLS always come from the keys above.
	Credentials credentials.Config `yaml:"credentials"`
}

// staticCredentials are the user and password of the backend section: the static source's
// values, and the username a file or KV secret that holds only a password falls back to.
func (b *BackendConfig) staticCredentials() credentials.Credentials {
	return credentials.Credentials{Username: b.Username, Password: b.Password}
}

// LimitsConfig is the plugin's `limits` section: bounds every request is checked against before
// Redis is touched. All of them can change with a reload.
type LimitsConfig struct {
	// MaxKeyBytes bounds one key (the part after the namespace).
	MaxKeyBytes int `yaml:"max_key_bytes"`
	// MaxValueBytes bounds one value.
	MaxValueBytes int `yaml:"max_value_bytes"`
	// MaxKeysPerCall bounds the keys of one Delete or MGet and the entries of one MSet.
	MaxKeysPerCall int `yaml:"max_keys_per_call"`
	// MaxBatchBytes bounds the keys and values of one MSet and the values one MGet returns.
	MaxBatchBytes int `yaml:"max_batch_bytes"`
	// MaxTTL bounds any requested time to live; 0 means the plugin's maximum, apierr.MaxTTL
	// (100 years), which also caps any configured value so an expiry is never lost.
	MaxTTL time.Duration `yaml:"max_ttl"`
}

func defaultLimits() *LimitsConfig {
	return &LimitsConfig{
		MaxKeyBytes:    1024,
		MaxValueBytes:  1 << 20,
		MaxKeysPerCall: 1000,
		MaxBatchBytes:  16 << 20,
	}
}

// Validate implements config.Section.
func (l *LimitsConfig) Validate() error {
	var errs []error
	errs = append(errs,
		config.Between("max_key_bytes", l.MaxKeyBytes, 1, 64<<10),
		config.Between("max_value_bytes", l.MaxValueBytes, 1, 128<<20),
		config.Between("max_keys_per_call", l.MaxKeysPerCall, 1, 100000),
	)
	if l.MaxBatchBytes < l.MaxValueBytes || l.MaxBatchBytes > 200<<20 {
		errs = append(errs, fmt.Errorf("max_batch_bytes: must be between max_value_bytes (%d) and %d, got %d", l.MaxValueBytes, 200<<20, l.MaxBatchBytes))
	}
	if l.MaxTTL < 0 || l.MaxTTL > apierr.MaxTTL {
		errs = append(errs, fmt.Errorf("max_ttl: must be between 0 (the maximum, %s) and %s, got %s", apierr.MaxTTL, apierr.MaxTTL, l.MaxTTL))
	}
	return errors.Join(errs...)
}

// messageBytes is the largest gRPC message these limits let through: the biggest of one Set and
// one full MSet or MGet, plus protobuf framing for every entry.
func (l *LimitsConfig) messageBytes() int {
	single := l.MaxKeyBytes + l.MaxValueBytes
	return max(single, l.MaxBatchBytes) + l.MaxKeysPerCall*32 + 64<<10
}

func defaultBackend() *BackendConfig {
	return &BackendConfig{
		Address:         "127.0.0.1:6379",
		Mode:            ModeAuto,
		KeyPrefix:       "prism:",
		PoolSize:        50,
		MinIdleConns:    4,
		MaxRetries:      3,
		ConnMaxIdleTime: 5 * time.Minute,
		DialTimeout:     5 * time.Second,
		Credentials:     credentials.DefaultConfig(),
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
	switch b.Mode {
	case ModeAuto, ModeSingle:
	case ModeCluster:
		if b.Database != 0 {
			errs = append(errs, fmt.Errorf("database: must be 0 in cluster mode, got %d", b.Database))
		}
	default:
		errs = append(errs, fmt.Errorf("mode: must be auto, single or cluster, got %q", b.Mode))
	}
	if b.Mode == ModeSingle && len(addrs) > 1 {
		errs = append(errs, fmt.Errorf("address: single mode takes one address, got %d", len(addrs)))
	}
	if b.Mode == ModeAuto && len(addrs) > 1 && b.Database != 0 {
		errs = append(errs, fmt.Errorf("database: must be 0 with several addresses (Redis Cluster), got %d", b.Database))
	}
	if len(b.KeyPrefix) > 256 {
		errs = append(errs, fmt.Errorf("key_prefix: must be at most 256 bytes, got %d", len(b.KeyPrefix)))
	}
	if b.DefaultTTL < 0 {
		errs = append(errs, fmt.Errorf("default_ttl: must not be negative (0 means no expiry), got %s", b.DefaultTTL))
	}
	if b.TTLJitter < 0 || b.TTLJitter > 50 {
		errs = append(errs, fmt.Errorf("ttl_jitter: must be a percentage between 0 and 50, got %d", b.TTLJitter))
	}
	errs = append(errs,
		config.Between("database", b.Database, 0, 15),
		config.Between("pool_size", b.PoolSize, 1, 10000),
	)
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
	if err := b.Credentials.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// cluster reports whether the backend is a Redis Cluster.
func (b *BackendConfig) cluster() bool {
	return b.Mode == ModeCluster || (b.Mode == ModeAuto && len(b.addresses()) > 1)
}

// clientOptions turns the backend section into go-redis universal options. With a credentials
// source, every new connection authenticates with its current user and password.
func (b *BackendConfig) clientOptions(src credentials.Source) (*redis.UniversalOptions, error) {
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
		// The caller's gRPC deadline bounds the Redis call too, instead of go-redis's own
		// read/write timeouts alone.
		ContextTimeoutEnabled: true,
	}
	if src != nil {
		opts.Username, opts.Password = "", ""
		opts.CredentialsProviderContext = credentialsProvider(src)
	}
	if b.TLSEnabled {
		tc, err := core.BackendTLSConfig(b.TLSCAFile)
		if err != nil {
			return nil, err
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
		NewLimits:   func() config.Section { return defaultLimits() },
		EnvAliases: map[string]string{
			"REDIS_ADDRESS":  "backend.address",
			"REDIS_USERNAME": "backend.username",
			"REDIS_PASSWORD": "backend.password",
		},
	}
}
