package rediscache

import (
	"fmt"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/prism-gateway/plugins/core/apierr"
)

// namespacePattern is the rule checkNamespace enforces, quoted in its errors.
const namespacePattern = `^[a-z][a-z0-9_.-]{0,63}$`

// settings are the parts of the configuration that requests read; a reload swaps them whole.
type settings struct {
	limits     LimitsConfig
	keyPrefix  string
	defaultTTL time.Duration
	jitter     int
	cluster    bool
}

func newSettings(b *BackendConfig, l *LimitsConfig) *settings {
	return &settings{limits: *l, keyPrefix: b.KeyPrefix, defaultTTL: b.DefaultTTL, jitter: b.TTLJitter, cluster: b.cluster()}
}

// redisKey is where a cache key lives in Redis: <key_prefix><namespace>:<key>.
func (s *settings) redisKey(namespace, key string) string {
	return s.keyPrefix + namespace + ":" + key
}

// checkNamespace enforces namespacePattern without a regexp on the hot path.
func checkNamespace(ns string) error {
	ok := len(ns) >= 1 && len(ns) <= 64 && ns[0] >= 'a' && ns[0] <= 'z'
	for i := 1; ok && i < len(ns); i++ {
		c := ns[i]
		ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'
	}
	if !ok {
		return apierr.Invalid("namespace", "must match %s (1 to 64 characters), got %s", namespacePattern, quoted(ns))
	}
	return nil
}

func (s *settings) checkKey(field, key string) error {
	if len(key) == 0 || len(key) > s.limits.MaxKeyBytes {
		return apierr.Invalid(field, "must be 1 to %d bytes (limits.max_key_bytes), got %d", s.limits.MaxKeyBytes, len(key))
	}
	return nil
}

func (s *settings) checkValue(field string, value []byte) error {
	if len(value) > s.limits.MaxValueBytes {
		return apierr.Invalid(field, "must be at most %d bytes (limits.max_value_bytes), got %d", s.limits.MaxValueBytes, len(value))
	}
	return nil
}

// checkCount bounds the keys or entries of a multi-key call.
func (s *settings) checkCount(field string, n int) error {
	if n == 0 {
		return apierr.Invalid(field, "at least one is required")
	}
	if n > s.limits.MaxKeysPerCall {
		return apierr.Invalid(field, "at most %d per call (limits.max_keys_per_call), got %d", s.limits.MaxKeysPerCall, n)
	}
	return nil
}

// checkKeys validates a Delete or MGet key list and returns the Redis keys.
func (s *settings) checkKeys(namespace string, keys []string) ([]string, error) {
	if err := checkNamespace(namespace); err != nil {
		return nil, err
	}
	if err := s.checkCount("keys", len(keys)); err != nil {
		return nil, err
	}
	out := make([]string, len(keys))
	for i, k := range keys {
		if err := s.checkKey(indexed("keys", i), k); err != nil {
			return nil, err
		}
		out[i] = s.redisKey(namespace, k)
	}
	return out, nil
}

// ttl validates a requested time to live; unset or zero is 0.
func (s *settings) ttl(field string, d *durationpb.Duration) (time.Duration, error) {
	return apierr.TTL(field, d, s.limits.MaxTTL, "limits.max_ttl")
}

// writeTTL is the expiry to store for a write that asked for ttl: default_ttl when none was
// given, then rounded to milliseconds and jittered.
func (s *settings) writeTTL(ttl time.Duration) time.Duration {
	if ttl == 0 {
		ttl = s.defaultTTL
	}
	return expiry(ttl, s.jitter)
}

func indexed(field string, i int) string {
	return field + "[" + strconv.Itoa(i) + "]"
}

// quoted shows a rejected client string, shortened so an error never echoes a huge input.
func quoted(s string) string {
	if len(s) > 80 {
		return fmt.Sprintf("%q... (%d bytes)", s[:80], len(s))
	}
	return fmt.Sprintf("%q", s)
}
