package rediscache

import (
	"strconv"
	"time"
	"unsafe"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/prism-gateway/plugins/core/apierr"
)

// This file holds the checks requests pass before Redis is touched; each error names the request
// field and the limit it broke, in apierr's wording.

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

// checkNamespace enforces apierr.NamespacePattern, the rule the KeyValue plugin uses too; it is
// fixed here because namespaces are part of the stored key names.
func checkNamespace(ns string) error {
	return apierr.Namespace(ns, nil, "")
}

func (s *settings) checkKey(field, key string) error {
	if len(key) == 0 || len(key) > s.limits.MaxKeyBytes {
		return apierr.OutOfRange(field, len(key), 1, s.limits.MaxKeyBytes, "limits.max_key_bytes", "bytes")
	}
	return nil
}

func (s *settings) checkValue(field string, value []byte) error {
	if len(value) > s.limits.MaxValueBytes {
		return apierr.TooLarge(field, len(value), s.limits.MaxValueBytes, "limits.max_value_bytes", "bytes")
	}
	return nil
}

// checkCount bounds the keys or entries of a multi-key call.
func (s *settings) checkCount(field string, n int) error {
	if n == 0 {
		return apierr.Invalid(field, "at least one is required")
	}
	if n > s.limits.MaxKeysPerCall {
		return apierr.TooLarge(field, n, s.limits.MaxKeysPerCall, "limits.max_keys_per_call", field)
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
	for i, k := range keys {
		if len(k) == 0 || len(k) > s.limits.MaxKeyBytes {
			// The field name is built only for the error: a 100-key call would otherwise pay
			// 100 string allocations for it.
			return nil, s.checkKey(indexed("keys", i), k)
		}
	}
	return s.redisKeys(namespace, keys), nil
}

// redisKeys is redisKey for every key, each a view into one buffer: one allocation per call
// instead of one per key. The buffer never grows (its size is exact) and nothing writes a byte
// twice, so the views stay valid and immutable.
func (s *settings) redisKeys(namespace string, keys []string) []string {
	size := 0
	for _, k := range keys {
		size += len(s.keyPrefix) + len(namespace) + 1 + len(k)
	}
	buf := make([]byte, 0, size)
	out := make([]string, len(keys))
	for i, k := range keys {
		start := len(buf)
		buf = append(buf, s.keyPrefix...)
		buf = append(buf, namespace...)
		buf = append(buf, ':')
		buf = append(buf, k...)
		out[i] = unsafe.String(&buf[start], len(buf)-start) //nolint:gosec // immutable view, see above
	}
	return out
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
