package kafkastream

import (
	"errors"
	"fmt"
	"net"
	"path"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/prism-gateway/plugins/core"
	"github.com/prism-gateway/plugins/core/config"
	"github.com/prism-gateway/plugins/core/credentials"
)

// SASL mechanisms the plugin speaks.
const (
	MechanismNone        = "none"
	MechanismPlain       = "PLAIN"
	MechanismScramSHA256 = "SCRAM-SHA-256"
	MechanismScramSHA512 = "SCRAM-SHA-512"
)

// Producer compression codecs (backend.compression).
const (
	CompressionNone   = "none"
	CompressionGzip   = "gzip"
	CompressionSnappy = "snappy"
	CompressionLZ4    = "lz4"
	CompressionZstd   = "zstd"
)

// Offset reset policies (backend.auto_offset_reset).
const (
	OffsetResetEarliest = "earliest"
	OffsetResetLatest   = "latest"
)

// BackendConfig is the plugin's `backend` section.
type BackendConfig struct {
	// Brokers are the bootstrap brokers, host:port.
	Brokers []string `yaml:"brokers"`
	// Topic is used when a request leaves its topic empty.
	Topic string `yaml:"topic"`
	// ConsumerGroup is used when a subscription leaves its group empty.
	ConsumerGroup string `yaml:"consumer_group"`
	// SASLMechanism is none, PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty means SCRAM-SHA-512
	// when a username is set or the credentials come from a file or Vault, else none.
	SASLMechanism string `yaml:"sasl_mechanism"`
	// SASLUsername and SASLPassword are the static credentials (KAFKA_SASL_USERNAME,
	// KAFKA_SASL_PASSWORD); SASLUsername is also the user of a file or KV secret that holds
	// only a password.
	SASLUsername string        `yaml:"sasl_username"`
	SASLPassword config.Secret `yaml:"sasl_password"`
	// Credentials selects where the SASL user and password come from: static (the two keys
	// above, the default), a watched file, or Vault. They are read for every connection and
	// every re-authentication, so rotated credentials need no restart.
	Credentials credentials.Config `yaml:"credentials"`
	// TLSEnabled turns on TLS to the brokers; TLSCAFile adds a private CA.
	TLSEnabled bool   `yaml:"tls_enabled"`
	TLSCAFile  string `yaml:"tls_ca_file"`
	// DialTimeout bounds connecting to one broker.
	DialTimeout time.Duration `yaml:"dial_timeout"`

	// Compression is the producer's batch codec: none, gzip, snappy, lz4 or zstd.
	Compression string `yaml:"compression"`
	// Acks is the producer's acknowledgement level. Only "all" is accepted: the idempotent
	// producer that keeps per-partition order across retries requires it.
	Acks string `yaml:"acks"`
	// Linger is how long the producer waits for more records before sending a batch.
	Linger time.Duration `yaml:"linger"`
	// BatchMaxBytes caps one record batch; it must hold the largest allowed record.
	BatchMaxBytes int `yaml:"batch_max_bytes"`
	// ProduceTimeout bounds one produce request to the brokers.
	ProduceTimeout time.Duration `yaml:"produce_timeout"`
	// MaxBufferedBytes bounds the record bytes the shared producer holds before the brokers
	// acknowledged them; publishers wait (and PublishStream stops reading) while it is full.
	MaxBufferedBytes int `yaml:"max_buffered_bytes"`
	// DeliveryTimeout bounds how long a request's records may wait for the brokers (e.g. while
	// they are unreachable) before the call fails with UNAVAILABLE; records already sent are
	// awaited, so the idempotent producer never writes a failed record twice. (franz-go's own
	// record timeout is not used: it counts from the record's timestamp, which callers may set
	// in the past.)
	DeliveryTimeout time.Duration `yaml:"delivery_timeout"`
	// UnavailablePublishWait bounds a publish's wait for acknowledgements while the health check
	// cannot reach the brokers (the plugin reports NOT_SERVING); 0 refuses such a publish with
	// UNAVAILABLE before any record is handed to the producer, so it can never be written later.
	UnavailablePublishWait time.Duration `yaml:"unavailable_publish_wait"`

	// Topics is an allow-list of topic globs (path.Match syntax); empty allows every topic.
	Topics []string `yaml:"topics"`
	// AutoCreateTopics creates unknown topics on first use instead of answering NOT_FOUND.
	AutoCreateTopics bool `yaml:"auto_create_topics"`
	// TopicPartitions and TopicReplicationFactor shape auto-created topics; -1 means the
	// broker's default.
	TopicPartitions        int `yaml:"topic_partitions"`
	TopicReplicationFactor int `yaml:"topic_replication_factor"`
	// TopicCacheTTL is how long topic metadata (existence, partition count) is cached.
	TopicCacheTTL time.Duration `yaml:"topic_cache_ttl"`

	// AutoOffsetReset is where a subscription starts in a partition the group has not committed,
	// when the subscription's start is unspecified: earliest or latest.
	AutoOffsetReset string `yaml:"auto_offset_reset"`
	// SessionTimeout, RebalanceTimeout and HeartbeatInterval are the consumer group timings.
	SessionTimeout    time.Duration `yaml:"session_timeout"`
	RebalanceTimeout  time.Duration `yaml:"rebalance_timeout"`
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// CommitInterval is how often acked offsets are committed while a stream runs; they are
	// also committed when partitions are revoked and when the stream ends.
	CommitInterval time.Duration `yaml:"commit_interval"`
	// FetchMaxWait is how long the brokers hold a fetch open waiting for new records.
	FetchMaxWait time.Duration `yaml:"fetch_max_wait"`
	// AckDeadline redelivers a message that stays unacked this long on its stream, as if it had
	// been nacked; 0 turns it off (messages then stay outstanding until the stream ends).
	AckDeadline time.Duration `yaml:"ack_deadline"`
	// MaxDeliveryAttempts moves a message to the dead-letter topic when it is nacked on this
	// attempt; 0 turns dead-lettering off.
	MaxDeliveryAttempts int `yaml:"max_delivery_attempts"`
	// DeadLetterTopic names the dead-letter topic; "{topic}" is replaced by the source topic.
	DeadLetterTopic string `yaml:"dead_letter_topic"`

	// creds is not configuration: Initialize sets it to the source Credentials selects, and
	// every client clientOptions builds authenticates from it.
	creds credentials.Source
}

// LimitsConfig is the plugin's `limits` section.
type LimitsConfig struct {
	// MaxRecordsPerPublish bounds PublishRequest.records.
	MaxRecordsPerPublish int `yaml:"max_records_per_publish"`
	// MaxKeyBytes and MaxValueBytes bound one record's key and value.
	MaxKeyBytes   int `yaml:"max_key_bytes"`
	MaxValueBytes int `yaml:"max_value_bytes"`
	// MaxHeaders bounds the headers of one record; MaxHeaderBytes one header's key plus value.
	MaxHeaders     int `yaml:"max_headers"`
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// MaxPublishBytes bounds the key, value and header bytes of one PublishRequest.
	MaxPublishBytes int `yaml:"max_publish_bytes"`
	// DefaultOutstandingMessages and DefaultOutstandingBytes apply when a subscription leaves
	// its limits at zero; MaxOutstandingMessages and MaxOutstandingBytes cap what it may ask.
	DefaultOutstandingMessages int   `yaml:"default_outstanding_messages"`
	DefaultOutstandingBytes    int64 `yaml:"default_outstanding_bytes"`
	MaxOutstandingMessages     int   `yaml:"max_outstanding_messages"`
	MaxOutstandingBytes        int64 `yaml:"max_outstanding_bytes"`
	// MaxSubscriptionTopics bounds Subscription.topics; MaxTailLastN bounds TailRequest.last_n.
	MaxSubscriptionTopics int   `yaml:"max_subscription_topics"`
	MaxTailLastN          int64 `yaml:"max_tail_last_n"`
	// MaxAckIDs bounds the ack ids in one ack or nack.
	MaxAckIDs int `yaml:"max_ack_ids"`
	// MaxResponseBytes is the payload size at which a Subscribe or Tail response is cut.
	MaxResponseBytes int `yaml:"max_response_bytes"`
}

func defaultLimits() *LimitsConfig {
	return &LimitsConfig{
		MaxRecordsPerPublish: 1000,
		MaxKeyBytes:          64 << 10,
		// Decimal 1 MB leaves room for a key, headers and framing under Kafka's default
		// message.max.bytes (1048588) and batch_max_bytes (1 MiB).
		MaxValueBytes:              1_000_000,
		MaxHeaders:                 64,
		MaxHeaderBytes:             16 << 10,
		MaxPublishBytes:            16 << 20,
		DefaultOutstandingMessages: 1000,
		DefaultOutstandingBytes:    64 << 20,
		MaxOutstandingMessages:     100_000,
		MaxOutstandingBytes:        1 << 30,
		MaxSubscriptionTopics:      100,
		MaxTailLastN:               100_000,
		MaxAckIDs:                  10_000,
		MaxResponseBytes:           1 << 20,
	}
}

// Validate implements config.Section.
func (l *LimitsConfig) Validate() error {
	var errs []error
	positive := func(name string, v int64, upTo int64) {
		errs = append(errs, config.Between(name, v, 1, upTo))
	}
	positive("max_records_per_publish", int64(l.MaxRecordsPerPublish), 100_000)
	positive("max_key_bytes", int64(l.MaxKeyBytes), 64<<20)
	positive("max_value_bytes", int64(l.MaxValueBytes), 64<<20)
	positive("max_headers", int64(l.MaxHeaders), 10_000)
	positive("max_header_bytes", int64(l.MaxHeaderBytes), 64<<20)
	positive("max_publish_bytes", int64(l.MaxPublishBytes), 200<<20)
	positive("max_outstanding_messages", int64(l.MaxOutstandingMessages), 10_000_000)
	positive("max_outstanding_bytes", l.MaxOutstandingBytes, 64<<30)
	positive("default_outstanding_messages", int64(l.DefaultOutstandingMessages), int64(max(l.MaxOutstandingMessages, 1)))
	positive("default_outstanding_bytes", l.DefaultOutstandingBytes, max(l.MaxOutstandingBytes, 1))
	positive("max_subscription_topics", int64(l.MaxSubscriptionTopics), 10_000)
	positive("max_tail_last_n", l.MaxTailLastN, 100_000_000)
	positive("max_ack_ids", int64(l.MaxAckIDs), 1_000_000)
	positive("max_response_bytes", int64(l.MaxResponseBytes), 64<<20)
	if l.MaxPublishBytes < l.MaxValueBytes {
		errs = append(errs, fmt.Errorf("max_publish_bytes: must be at least max_value_bytes (%d), got %d", l.MaxValueBytes, l.MaxPublishBytes))
	}
	return errors.Join(errs...)
}

func defaultBackend() *BackendConfig {
	return &BackendConfig{
		Brokers:                []string{"127.0.0.1:9092"},
		DialTimeout:            5 * time.Second,
		Compression:            CompressionSnappy,
		Acks:                   "all",
		Linger:                 0,
		BatchMaxBytes:          1 << 20,
		ProduceTimeout:         10 * time.Second,
		DeliveryTimeout:        30 * time.Second,
		MaxBufferedBytes:       256 << 20,
		TopicPartitions:        -1,
		TopicReplicationFactor: -1,
		TopicCacheTTL:          30 * time.Second,
		AutoOffsetReset:        OffsetResetLatest,
		SessionTimeout:         45 * time.Second,
		RebalanceTimeout:       30 * time.Second,
		HeartbeatInterval:      3 * time.Second,
		CommitInterval:         time.Second,
		FetchMaxWait:           500 * time.Millisecond,
		DeadLetterTopic:        "{topic}.dlq",
		Credentials:            credentials.DefaultConfig(),
	}
}

// mechanism resolves the empty default.
func (b *BackendConfig) mechanism() string {
	if b.SASLMechanism != "" {
		return b.SASLMechanism
	}
	if b.SASLUsername != "" || b.Credentials.Source != credentials.KindStatic {
		return MechanismScramSHA512
	}
	return MechanismNone
}

// Validate implements config.Section.
func (b *BackendConfig) Validate() error {
	var errs []error
	if len(b.Brokers) == 0 {
		errs = append(errs, errors.New("brokers: at least one broker is required (or set KAFKA_BROKERS)"))
	}
	for i, broker := range b.Brokers {
		if _, _, err := net.SplitHostPort(broker); err != nil {
			errs = append(errs, fmt.Errorf("brokers.%d: must be host:port, got %q", i, broker))
		}
	}
	switch m := b.mechanism(); {
	case m == MechanismNone && b.Credentials.Source != credentials.KindStatic:
		errs = append(errs, fmt.Errorf("sasl_mechanism: none sends no credentials, but credentials.source is %s", b.Credentials.Source))
	case m == MechanismNone:
	case m != MechanismPlain && m != MechanismScramSHA256 && m != MechanismScramSHA512:
		errs = append(errs, fmt.Errorf("sasl_mechanism: must be none, PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, got %q", m))
	case b.Credentials.Source != credentials.KindStatic:
		// The file or Vault secret supplies them.
	default:
		if b.SASLUsername == "" {
			errs = append(errs, fmt.Errorf("sasl_username: required with sasl_mechanism %s", m))
		}
		if !b.SASLPassword.IsSet() {
			errs = append(errs, fmt.Errorf("sasl_password: required with sasl_mechanism %s", m))
		}
	}
	if err := b.Credentials.Validate(); err != nil {
		errs = append(errs, err)
	}
	if b.TLSCAFile != "" && !b.TLSEnabled {
		errs = append(errs, errors.New("tls_ca_file: needs tls_enabled: true"))
	}
	if b.DialTimeout <= 0 {
		errs = append(errs, fmt.Errorf("dial_timeout: must be positive, got %s", b.DialTimeout))
	}
	if b.Topic != "" {
		if err := validTopicName(b.Topic); err != nil {
			errs = append(errs, fmt.Errorf("topic: %w", err))
		}
	}
	if _, err := compressionCodec(b.Compression); err != nil {
		errs = append(errs, fmt.Errorf("compression: %w", err))
	}
	if b.Acks != "all" {
		errs = append(errs, fmt.Errorf("acks: only \"all\" is supported (the idempotent producer requires it), got %q", b.Acks))
	}
	if b.Linger < 0 || b.Linger > time.Minute {
		errs = append(errs, fmt.Errorf("linger: must be between 0s and 1m, got %s", b.Linger))
	}
	if b.BatchMaxBytes < 1024 || b.BatchMaxBytes > 256<<20 {
		errs = append(errs, fmt.Errorf("batch_max_bytes: must be between 1024 and %d, got %d", 256<<20, b.BatchMaxBytes))
	}
	if b.ProduceTimeout < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("produce_timeout: must be at least 100ms, got %s", b.ProduceTimeout))
	}
	if b.MaxBufferedBytes < 1<<20 || b.MaxBufferedBytes > 64<<30 {
		errs = append(errs, fmt.Errorf("max_buffered_bytes: must be between %d and %d, got %d", 1<<20, int64(64<<30), b.MaxBufferedBytes))
	}
	if b.UnavailablePublishWait < 0 || b.UnavailablePublishWait > b.DeliveryTimeout {
		errs = append(errs, fmt.Errorf("unavailable_publish_wait: must be between 0 and delivery_timeout (%s), got %s", b.DeliveryTimeout, b.UnavailablePublishWait))
	}
	if b.DeliveryTimeout < time.Second {
		errs = append(errs, fmt.Errorf("delivery_timeout: must be at least 1s, got %s", b.DeliveryTimeout))
	}
	for i, pattern := range b.Topics {
		if _, err := path.Match(pattern, ""); err != nil || pattern == "" {
			errs = append(errs, fmt.Errorf("topics.%d: not a valid glob: %q", i, pattern))
		}
	}
	if b.TopicPartitions == 0 || b.TopicPartitions < -1 || b.TopicPartitions > 10_000 {
		errs = append(errs, fmt.Errorf("topic_partitions: must be -1 (broker default) or between 1 and 10000, got %d", b.TopicPartitions))
	}
	if b.TopicReplicationFactor == 0 || b.TopicReplicationFactor < -1 || b.TopicReplicationFactor > 32 {
		errs = append(errs, fmt.Errorf("topic_replication_factor: must be -1 (broker default) or between 1 and 32, got %d", b.TopicReplicationFactor))
	}
	if b.TopicCacheTTL < 0 {
		errs = append(errs, fmt.Errorf("topic_cache_ttl: must not be negative, got %s", b.TopicCacheTTL))
	}
	if b.AutoOffsetReset != OffsetResetEarliest && b.AutoOffsetReset != OffsetResetLatest {
		errs = append(errs, fmt.Errorf("auto_offset_reset: must be earliest or latest, got %q", b.AutoOffsetReset))
	}
	if b.SessionTimeout < time.Second {
		errs = append(errs, fmt.Errorf("session_timeout: must be at least 1s, got %s", b.SessionTimeout))
	}
	if b.RebalanceTimeout < time.Second {
		errs = append(errs, fmt.Errorf("rebalance_timeout: must be at least 1s, got %s", b.RebalanceTimeout))
	}
	if b.HeartbeatInterval <= 0 || b.HeartbeatInterval >= b.SessionTimeout {
		errs = append(errs, fmt.Errorf("heartbeat_interval: must be positive and below session_timeout (%s), got %s", b.SessionTimeout, b.HeartbeatInterval))
	}
	if b.CommitInterval < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("commit_interval: must be at least 10ms, got %s", b.CommitInterval))
	}
	if b.FetchMaxWait < 10*time.Millisecond || b.FetchMaxWait > 30*time.Second {
		errs = append(errs, fmt.Errorf("fetch_max_wait: must be between 10ms and 30s, got %s", b.FetchMaxWait))
	}
	if b.AckDeadline != 0 && (b.AckDeadline < 100*time.Millisecond || b.AckDeadline > 24*time.Hour) {
		errs = append(errs, fmt.Errorf("ack_deadline: must be 0 (off) or between 100ms and 24h, got %s", b.AckDeadline))
	}
	if b.MaxDeliveryAttempts < 0 || b.MaxDeliveryAttempts > 1000 {
		errs = append(errs, fmt.Errorf("max_delivery_attempts: must be between 0 (off) and 1000, got %d", b.MaxDeliveryAttempts))
	}
	if b.MaxDeliveryAttempts > 0 {
		if err := validTopicName(deadLetterTopic(b.DeadLetterTopic, "t")); b.DeadLetterTopic == "" || err != nil {
			errs = append(errs, fmt.Errorf("dead_letter_topic: must be a topic name, optionally with {topic}, got %q", b.DeadLetterTopic))
		}
	}
	return errors.Join(errs...)
}

// deadLetterTopic expands the dead_letter_topic template for a source topic.
func deadLetterTopic(template, topic string) string {
	return strings.ReplaceAll(template, "{topic}", topic)
}

// compressionCodec maps backend.compression to franz-go's codec.
func compressionCodec(name string) (kgo.CompressionCodec, error) {
	switch name {
	case CompressionNone:
		return kgo.NoCompression(), nil
	case CompressionGzip:
		return kgo.GzipCompression(), nil
	case CompressionSnappy:
		return kgo.SnappyCompression(), nil
	case CompressionLZ4:
		return kgo.Lz4Compression(), nil
	case CompressionZstd:
		return kgo.ZstdCompression(), nil
	}
	return kgo.CompressionCodec{}, fmt.Errorf("must be none, gzip, snappy, lz4 or zstd, got %q", name)
}

// producerOptions are the options of the one shared producing client.
func (b *BackendConfig) producerOptions(partitioner kgo.Partitioner) []kgo.Opt {
	codec, _ := compressionCodec(b.Compression) // validated
	return []kgo.Opt{
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchCompression(codec),
		kgo.ProducerLinger(b.Linger),
		kgo.ProducerBatchMaxBytes(int32(b.BatchMaxBytes)),
		kgo.ProduceRequestTimeout(b.ProduceTimeout),
		kgo.MaxBufferedBytes(b.MaxBufferedBytes),
		kgo.RecordPartitioner(partitioner),
		// Unknown topics are answered NOT_FOUND before producing; a topic deleted meanwhile
		// should fail fast rather than be retried for long.
		kgo.UnknownTopicRetries(2),
	}
}

// clientOptions turns the backend section into franz-go options shared by every client.
func (b *BackendConfig) clientOptions() ([]kgo.Opt, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(b.Brokers...),
		kgo.DialTimeout(b.DialTimeout),
		// A topic created a moment ago (auto_create_topics) must be usable at once; franz-go
		// otherwise waits up to 5s between metadata refreshes.
		kgo.MetadataMinAge(250 * time.Millisecond),
	}
	if mech := saslMechanism(b.mechanism(), b.credentialsSource()); mech != nil {
		opts = append(opts, kgo.SASL(mech))
	}
	if b.TLSEnabled {
		tc, err := core.BackendTLSConfig(b.TLSCAFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	return opts, nil
}

// Schema declares this plugin's configuration.
func Schema() config.Schema {
	return config.Schema{
		Plugin:      "kafka",
		Port:        9091,
		MetricsPort: 9191,
		NewBackend:  func() config.Section { return defaultBackend() },
		NewLimits:   func() config.Section { return defaultLimits() },
		// Names of variables, not credentials.
		EnvAliases: map[string]string{ //nolint:gosec // G101 sees "PASSWORD" in a variable name
			"KAFKA_BROKERS":       "backend.brokers",
			"KAFKA_TOPIC":         "backend.topic",
			"KAFKA_SASL_USERNAME": "backend.sasl_username",
			"KAFKA_SASL_PASSWORD": "backend.sasl_password",
		},
	}
}
