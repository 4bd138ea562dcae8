package rediscache

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBackendValidation(t *testing.T) {
	cases := []struct {
		name   string
		change func(b *BackendConfig)
		want   string
	}{
		{"defaults are valid", func(*BackendConfig) {}, ""},
		{"several addresses are a cluster", func(b *BackendConfig) { b.Address = "a:1, b:2" }, ""},
		{"unknown mode", func(b *BackendConfig) { b.Mode = "sentinel" }, "mode: must be auto, single or cluster"},
		{"single mode with several addresses", func(b *BackendConfig) { b.Mode, b.Address = ModeSingle, "a:1,b:2" }, "address: single mode takes one address"},
		{"a database in cluster mode", func(b *BackendConfig) { b.Mode, b.Database = ModeCluster, 2 }, "database: must be 0 in cluster mode"},
		{"negative default ttl", func(b *BackendConfig) { b.DefaultTTL = -time.Second }, "default_ttl: must not be negative"},
		{"jitter over 50 percent", func(b *BackendConfig) { b.TTLJitter = 60 }, "ttl_jitter: must be a percentage between 0 and 50"},
		{"address without port", func(b *BackendConfig) { b.Address = "localhost" }, "address: must be host:port"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := defaultBackend()
			tc.change(b)
			err := b.Validate()
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestLimitsValidation(t *testing.T) {
	cases := []struct {
		name   string
		change func(l *LimitsConfig)
		want   string
	}{
		{"defaults are valid", func(*LimitsConfig) {}, ""},
		{"zero key bytes", func(l *LimitsConfig) { l.MaxKeyBytes = 0 }, "max_key_bytes: must be between 1"},
		{"batch smaller than one value", func(l *LimitsConfig) { l.MaxBatchBytes = 1000 }, "max_batch_bytes: must be between max_value_bytes"},
		{"no keys per call", func(l *LimitsConfig) { l.MaxKeysPerCall = 0 }, "max_keys_per_call: must be between 1"},
		{"negative max ttl", func(l *LimitsConfig) { l.MaxTTL = -1 }, "max_ttl: must be between 0"},
		{"max ttl beyond what expiries can hold", func(l *LimitsConfig) { l.MaxTTL = 200 * 365 * 24 * time.Hour }, "max_ttl: must be between 0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := defaultLimits()
			tc.change(l)
			err := l.Validate()
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestDefaultLimitsFitOneGRPCMessage(t *testing.T) {
	l := defaultLimits()
	assert.GreaterOrEqual(t, l.messageBytes(), l.MaxBatchBytes+l.MaxKeysPerCall*16)
}

func TestExpiry(t *testing.T) {
	assert.Zero(t, expiry(0, 10), "no ttl stays no ttl")
	assert.Equal(t, time.Millisecond, expiry(time.Microsecond, 0), "a tiny ttl rounds up, never to no expiry")
	assert.Equal(t, 1500*time.Millisecond, expiry(1500*time.Millisecond, 0))
	for range 1000 {
		got := expiry(10*time.Second, 10)
		assert.GreaterOrEqual(t, got, 9*time.Second)
		assert.LessOrEqual(t, got, 11*time.Second)
	}
}
