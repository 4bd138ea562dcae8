package rediscache

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/prism-gateway/plugins/core/apierr"
	cachev1 "github.com/prism-gateway/plugins/gen/prism/cache/v1"
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

// The largest requests and responses the limits allow, built as real messages, fit the gRPC
// message size the plugin sets from them, so a request within the limits is never refused by
// gRPC before the plugin's own checks.
func TestDefaultLimitsFitOneGRPCMessage(t *testing.T) {
	l := defaultLimits()
	namespace := "n" + strings.Repeat("x", 63)
	keys := l.MaxKeysPerCall
	keyBytes := l.MaxKeyBytes
	valueBytes := (l.MaxBatchBytes - keys*keyBytes) / keys
	mset := &cachev1.MSetRequest{Namespace: namespace}
	mget := &cachev1.MGetResponse{}
	for i := range keys {
		key := fmt.Sprintf("%0*d", keyBytes, i)
		mset.Entries = append(mset.Entries, &cachev1.MSetEntry{Key: key, Value: make([]byte, valueBytes),
			Ttl: durationpb.New(apierr.MaxTTL)})
		mget.Entries = append(mget.Entries, &cachev1.Entry{Key: key, Found: true, Value: make([]byte, valueBytes)})
	}
	set := &cachev1.SetRequest{Namespace: namespace, Key: strings.Repeat("k", keyBytes),
		Value: make([]byte, l.MaxValueBytes), Ttl: durationpb.New(apierr.MaxTTL)}
	for name, m := range map[string]proto.Message{"MSet request": mset, "MGet response": mget, "Set request": set} {
		assert.LessOrEqual(t, proto.Size(m), l.messageBytes(), "the largest %s within the limits", name)
	}
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
