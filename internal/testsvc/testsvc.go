// Package testsvc finds the real backend services that tests run against (started by
// `make services`, or elsewhere when PRISM_TEST_* variables point there) and injects network
// faults between a plugin and its backend. A missing service fails the test: nothing skips.
package testsvc

import (
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// Defaults match scripts/services.sh.
const (
	DefaultPostgresURL       = "postgres://prism:prism@127.0.0.1:5432/prism" //nolint:gosec // the local test service's documented credentials
	DefaultRedisAddr         = "127.0.0.1:6379"
	DefaultRedisClusterAddrs = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"
	DefaultKafkaBrokers      = "127.0.0.1:29092"
	DefaultKafkaSASLBrokers  = "127.0.0.1:29093"
	DefaultVaultAddr         = "http://127.0.0.1:8200"
	// DefaultVaultToken is the OpenBao dev server's fixed root token (scripts/services.sh).
	DefaultVaultToken = "prism-root-token" //nolint:gosec // the local test service's documented token
	// Credentials of the test services' application user.
	User     = "prism"
	Password = "prism"
	// RedisAdminUser may run any command, for test setup and inspection.
	RedisAdminUser     = "prism-admin"
	RedisAdminPassword = "prism-admin"
)

// PostgresURL is the PostgreSQL URL for tests (PRISM_TEST_POSTGRES_URL).
func PostgresURL(tb testing.TB) string {
	tb.Helper()
	u := envOr("PRISM_TEST_POSTGRES_URL", DefaultPostgresURL)
	requireReachable(tb, "PostgreSQL", "PRISM_TEST_POSTGRES_URL", hostPortOfURL(u))
	return u
}

// VaultAddr is the OpenBao (or Vault) server for tests (PRISM_TEST_VAULT_ADDR).
func VaultAddr(tb testing.TB) string {
	tb.Helper()
	a := envOr("PRISM_TEST_VAULT_ADDR", DefaultVaultAddr)
	requireReachable(tb, "OpenBao", "PRISM_TEST_VAULT_ADDR", hostPortOfURL(a))
	return a
}

// VaultToken is a token for test setup with rights to configure engines and roles
// (PRISM_TEST_VAULT_TOKEN).
func VaultToken() string { return envOr("PRISM_TEST_VAULT_TOKEN", DefaultVaultToken) }

// RedisAddr is the single Redis for tests (PRISM_TEST_REDIS_ADDR).
func RedisAddr(tb testing.TB) string {
	tb.Helper()
	a := envOr("PRISM_TEST_REDIS_ADDR", DefaultRedisAddr)
	requireReachable(tb, "Redis", "PRISM_TEST_REDIS_ADDR", a)
	return a
}

// RedisClusterAddrs are the Redis Cluster seed nodes for tests (PRISM_TEST_REDIS_CLUSTER_ADDRS).
func RedisClusterAddrs(tb testing.TB) []string {
	tb.Helper()
	addrs := splitList(envOr("PRISM_TEST_REDIS_CLUSTER_ADDRS", DefaultRedisClusterAddrs))
	for _, a := range addrs {
		requireReachable(tb, "Redis Cluster", "PRISM_TEST_REDIS_CLUSTER_ADDRS", a)
	}
	return addrs
}

// KafkaBrokers are the PLAINTEXT Kafka brokers for tests (PRISM_TEST_KAFKA_BROKERS).
func KafkaBrokers(tb testing.TB) []string {
	tb.Helper()
	brokers := splitList(envOr("PRISM_TEST_KAFKA_BROKERS", DefaultKafkaBrokers))
	requireReachable(tb, "Kafka", "PRISM_TEST_KAFKA_BROKERS", brokers[0])
	return brokers
}

// KafkaSASLBrokers are the SASL_PLAINTEXT (SCRAM-SHA-512) brokers for tests
// (PRISM_TEST_KAFKA_SASL_BROKERS).
func KafkaSASLBrokers(tb testing.TB) []string {
	tb.Helper()
	brokers := splitList(envOr("PRISM_TEST_KAFKA_SASL_BROKERS", DefaultKafkaSASLBrokers))
	requireReachable(tb, "Kafka (SASL)", "PRISM_TEST_KAFKA_SASL_BROKERS", brokers[0])
	return brokers
}

func requireReachable(tb testing.TB, what, env, addr string) {
	tb.Helper()
	conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		tb.Fatalf("%s is not reachable at %s (%v): run `make services`, or point %s at a running one", what, addr, err, env)
	}
	_ = conn.Close()
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// hostPortOfURL extracts host:port from a postgres:// URL.
func hostPortOfURL(u string) string {
	rest := u
	if _, after, ok := strings.Cut(rest, "://"); ok {
		rest = after
	}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		rest = rest[at+1:]
	}
	if slash := strings.IndexAny(rest, "/?"); slash >= 0 {
		rest = rest[:slash]
	}
	if _, _, err := net.SplitHostPort(rest); err != nil {
		rest = net.JoinHostPort(rest, "5432")
	}
	return rest
}
