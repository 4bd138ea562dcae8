package kafkastream

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDefaultsAreValid(t *testing.T) {
	require.NoError(t, defaultBackend().Validate())
	require.NoError(t, defaultLimits().Validate())
}

func TestBackendValidation(t *testing.T) {
	tests := []struct {
		name   string
		change func(*BackendConfig)
		want   string
	}{
		{"unknown compression", func(b *BackendConfig) { b.Compression = "brotli" }, "compression: must be none, gzip, snappy, lz4 or zstd"},
		{"acks other than all", func(b *BackendConfig) { b.Acks = "1" }, `acks: only "all" is supported`},
		{"negative linger", func(b *BackendConfig) { b.Linger = -time.Millisecond }, "linger:"},
		{"tiny batches", func(b *BackendConfig) { b.BatchMaxBytes = 10 }, "batch_max_bytes:"},
		{"a broken glob", func(b *BackendConfig) { b.Topics = []string{"ok-*", "[bad"} }, "topics.1: not a valid glob"},
		{"zero partitions", func(b *BackendConfig) { b.TopicPartitions = 0 }, "topic_partitions:"},
		{"an unknown offset reset", func(b *BackendConfig) { b.AutoOffsetReset = "middle" }, "auto_offset_reset: must be earliest or latest"},
		{"heartbeat not below the session", func(b *BackendConfig) { b.HeartbeatInterval = b.SessionTimeout }, "heartbeat_interval:"},
		{"negative delivery attempts", func(b *BackendConfig) { b.MaxDeliveryAttempts = -1 }, "max_delivery_attempts:"},
		{"a dead-letter topic that is no topic name", func(b *BackendConfig) { b.MaxDeliveryAttempts = 3; b.DeadLetterTopic = "dead letters" }, "dead_letter_topic:"},
		{"an invalid default topic", func(b *BackendConfig) { b.Topic = "a/b" }, "topic: may only contain"},
		{"an unknown sasl mechanism", func(b *BackendConfig) { b.SASLMechanism = "GSSAPI" }, "sasl_mechanism:"},
		{"scram without a password", func(b *BackendConfig) { b.SASLUsername = "u" }, "sasl_password: required"},
		{"a credentials file without a path", func(b *BackendConfig) { b.Credentials.Source = "file" }, "credentials.file.path: required"},
		{"vault credentials with no sasl mechanism", func(b *BackendConfig) {
			b.Credentials.Source, b.Credentials.Vault.Secret.Path, b.SASLMechanism = "vault", "prism/kafka", MechanismNone
		}, "sasl_mechanism: none sends no credentials, but credentials.source is vault"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := defaultBackend()
			tc.change(b)
			err := b.Validate()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestCredentialsFromAFileOrVaultNeedNoStaticPassword(t *testing.T) {
	b := defaultBackend()
	b.Credentials.Source, b.Credentials.File.Path = "file", "/etc/prism/kafka/password"
	require.NoError(t, b.Validate())
	assert.Equal(t, MechanismScramSHA512, b.mechanism(), "SCRAM-SHA-512 is the default with a file or vault source")
}

func TestLimitsValidation(t *testing.T) {
	l := defaultLimits()
	l.MaxRecordsPerPublish = 0
	l.MaxPublishBytes = l.MaxValueBytes - 1
	l.DefaultOutstandingMessages = l.MaxOutstandingMessages + 1
	err := l.Validate()
	require.Error(t, err)
	for _, want := range []string{"max_records_per_publish:", "max_publish_bytes: must be at least max_value_bytes", "default_outstanding_messages:"} {
		assert.Contains(t, err.Error(), want)
	}
}

func TestTopicNames(t *testing.T) {
	for _, ok := range []string{"a", "orders.v1", "A_b-c.9", strings.Repeat("x", 249)} {
		require.NoError(t, validTopicName(ok), ok)
	}
	for _, bad := range []string{"", ".", "..", "a b", "a/b", "é", strings.Repeat("x", 250)} {
		assert.Error(t, validTopicName(bad), bad)
	}
}

func TestAckIDs(t *testing.T) {
	id := ackID{topic: 3, partition: 17, epoch: 1<<32 - 1, offset: 1 << 40, attempt: 5}
	got, ok := parseAckID(id.String())
	require.True(t, ok)
	assert.Equal(t, id, got)
	for _, bad := range []string{"", "x", "1.2.3.4", "1.2.3.4.5.6", "1.2.3.-4.5", "1.2.3.4.zzzzzzzzzzzzzzzzzz", "1..3.4.5"} {
		_, ok := parseAckID(bad)
		assert.False(t, ok, bad)
	}
}

func TestCommitMetadata(t *testing.T) {
	st := &partState{
		commitNext: 10, deliveredEnd: 15,
		prior:    map[int64]int32{9: 4, 12: 3},
		inflight: map[int64]*delivery{10: {attempt: 2}, 11: {attempt: 1}, 13: {attempt: 5, acked: true}},
	}
	enc := st.encodeMeta()
	assert.Equal(t, "prism1;15;10:2,12:3", enc)
	meta, ok := parseCommitMeta(enc)
	require.True(t, ok)
	assert.Equal(t, commitMeta{deliveredEnd: 15, attempts: map[int64]int32{10: 2, 12: 3}}, meta)
	next := &partState{deliveredEnd: meta.deliveredEnd, prior: meta.attempts}
	assert.Equal(t, int32(2), next.priorAttempts(10))
	assert.Equal(t, int32(1), next.priorAttempts(14))
	assert.Equal(t, int32(0), next.priorAttempts(15))
	for _, bad := range []string{"", "other", "prism1;", "prism1;x;", "prism1;5;1", "prism1;5;1:0"} {
		_, ok := parseCommitMeta(bad)
		assert.False(t, ok, bad)
	}
}
