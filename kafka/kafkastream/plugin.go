package kafkastream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"

	"github.com/prism-gateway/plugins/core"
	"github.com/prism-gateway/plugins/core/apierr"
	"github.com/prism-gateway/plugins/core/config"
	"github.com/prism-gateway/plugins/core/credentials"
	streamv1 "github.com/prism-gateway/plugins/gen/prism/stream/v1"
)

// Plugin serves Stream on Apache Kafka.
type Plugin struct {
	log     *slog.Logger
	backend *BackendConfig
	// settings is what changes live on Reload (the request limits; every backend setting takes a
	// restart); each Reload stores a new snapshot, so every call sees one consistent set.
	settings atomic.Pointer[settings]
	metrics  *metrics
	draining <-chan struct{}
	// creds yields the SASL credentials of every connection (nil in dev mode); it stays until a
	// restart, rotating what it was configured to read.
	creds credentials.Source

	mu       sync.RWMutex
	producer *kgo.Client
	admin    *kadm.Client
	topics   *topics

	// dev is set by EnableDevMode: the plugin then serves from devKafka, an embedded broker
	// keeping its log in devDir, and never touches the configured brokers (dev.go, left out by
	// -tags nodev).
	dev      bool
	devDir   string
	devKafka interface{ Close() }

	// dial, when set, replaces how the producer client connects (tests route it through a
	// fault-injecting proxy, since brokers advertise their own addresses).
	dial func(ctx context.Context, network, host string) (net.Conn, error)

	// brokersDown is the last health check's verdict: true while Ping cannot reach the brokers.
	brokersDown atomic.Bool

	// streamIDs numbers Subscribe streams for metrics labels.
	streamIDs atomic.Uint64
	// streams tracks Subscribe and Tail goroutines so Stop can wait for their clients to close.
	streams sync.WaitGroup
}

// devBackend is what Info, and so GetInfo, reports as the backend in dev mode.
const devBackend = "kfake (dev mode)"

// New returns an unconfigured plugin for core.Run.
func New() *Plugin { return &Plugin{} }

// Info implements core.Plugin.
func (p *Plugin) Info() core.Info {
	backend := "kafka"
	if p.dev {
		backend = devBackend
	}
	return core.Info{
		Name:     "kafka",
		Backend:  backend,
		Services: []string{streamv1.StreamService_ServiceDesc.ServiceName},
	}
}

// ConfigSchema implements core.Plugin.
func (p *Plugin) ConfigSchema() config.Schema { return Schema() }

// Initialize implements core.Plugin.
func (p *Plugin) Initialize(_ context.Context, cfg *config.Config, env core.Env) error {
	backend, ok := cfg.Backend.(*BackendConfig)
	if !ok {
		return fmt.Errorf("backend config has type %T", cfg.Backend)
	}
	limits, ok := cfg.Limits.(*LimitsConfig)
	if !ok {
		return fmt.Errorf("limits config has type %T", cfg.Limits)
	}
	m, err := newMetrics(env.Metrics)
	if err != nil {
		return err
	}
	p.log, p.backend, p.metrics, p.draining = env.Logger, backend, m, env.Draining
	if p.draining == nil {
		p.draining = make(chan struct{})
	}
	if err := p.checkRecordFits(limits); err != nil {
		return err
	}
	if !p.dev {
		src, err := newCredentialsSource(backend, env)
		if err != nil {
			return err
		}
		p.creds, backend.creds = src, src
	}
	p.settings.Store(newSettings(limits))
	return nil
}

// Register implements core.Plugin.
func (p *Plugin) Register(s grpc.ServiceRegistrar) {
	streamv1.RegisterStreamServiceServer(s, &server{plugin: p})
}

// Start implements core.Plugin. It first obtains the backend credentials and fails if it cannot
// (a missing file, Vault unreachable or refusing): the plugin could not authenticate at all.
// franz-go connects lazily, so brokers that are down or refuse the credentials show up in
// Health, not here.
func (p *Plugin) Start(ctx context.Context) error {
	if p.dev && p.devKafka == nil {
		if err := p.startDevKafka(); err != nil {
			return err
		}
	}
	if p.creds != nil {
		if err := p.creds.Start(ctx); err != nil {
			return fmt.Errorf("backend credentials (%s): %w", p.creds.Describe().Kind, err)
		}
	}
	opts, err := p.backend.clientOptions()
	if err != nil {
		return err
	}
	opts = append(opts, p.backend.producerOptions(manualPartitioner{})...)
	if p.dial != nil {
		opts = append(opts, kgo.Dialer(p.dial))
	}
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("create kafka client: %w", err)
	}
	admin := kadm.NewClient(client)
	p.mu.Lock()
	p.producer, p.admin, p.topics = client, admin, newTopics(admin, p.backend)
	p.mu.Unlock()
	return nil
}

// Health implements core.Plugin: usable credentials first (expired ones are NOT_SERVING with the
// reason renewal failed), then a real round trip (authenticated metadata request).
func (p *Plugin) Health(ctx context.Context) error {
	if p.creds != nil {
		if err := credentials.Check(p.creds); err != nil {
			return err
		}
	}
	client := p.currentClient()
	if client == nil {
		return errors.New("kafka client not started")
	}
	if err := client.Ping(ctx); err != nil {
		p.brokersDown.Store(true)
		return apierr.Unavailable("ping kafka", err)
	}
	p.brokersDown.Store(false)
	return nil
}

// Stop implements core.Plugin. Streams have ended by now (core cancels them first); their group
// clients leave the group before Stop returns so partitions move on at once.
func (p *Plugin) Stop(ctx context.Context) error {
	p.streams.Wait()
	p.mu.Lock()
	client := p.producer
	p.producer, p.admin, p.topics = nil, nil, nil
	p.mu.Unlock()
	if client != nil {
		client.Close()
	}
	if p.devKafka != nil {
		p.devKafka.Close()
		p.devKafka = nil
	}
	if p.creds != nil {
		if err := p.creds.Stop(ctx); err != nil {
			return fmt.Errorf("stop backend credentials: %w", err)
		}
	}
	return nil
}

// Reconfigure implements core.Reconfigurer: limits apply live, backend changes need a restart.
// That includes backend.credentials (which source, which file or Vault secret): the running
// source keeps rotating the credentials it was started with, so new passwords need no reload.
func (p *Plugin) Reconfigure(_ context.Context, cfg *config.Config, changed []string) ([]string, error) {
	limits, ok := cfg.Limits.(*LimitsConfig)
	if !ok {
		return nil, fmt.Errorf("limits config has type %T", cfg.Limits)
	}
	var restart []string
	for _, path := range changed {
		if len(path) >= len("backend.") && path[:len("backend.")] == "backend." {
			restart = append(restart, path)
		}
	}
	if err := p.checkRecordFits(limits); err != nil {
		return nil, err
	}
	p.settings.Store(newSettings(limits))
	return restart, nil
}

// checkRecordFits makes limits.max_value_bytes a promise: a record with a value that large and
// no key or headers fits one producer batch, so the advertised limit is reachable.
func (p *Plugin) checkRecordFits(l *LimitsConfig) error {
	if need := l.MaxValueBytes + recordFramingBytes; need > p.backend.BatchMaxBytes {
		return fmt.Errorf("limits.max_value_bytes: a record with a %d-byte value takes %d bytes in a batch, more than backend.batch_max_bytes (%d): lower the limit or raise batch_max_bytes (and the topics' max.message.bytes)", l.MaxValueBytes, need, p.backend.BatchMaxBytes)
	}
	return nil
}

// MinRecvMessageBytes implements core.MessageSizer: a maximal PublishRequest must fit.
func (p *Plugin) MinRecvMessageBytes() int {
	set := p.settings.Load()
	if set == nil {
		return 0
	}
	l := set.limits
	return l.MaxPublishBytes + l.MaxRecordsPerPublish*64 + 64<<10
}

// Capabilities implements core.CapabilityReporter.
func (p *Plugin) Capabilities() map[string]string {
	l := p.settings.Load().limits
	caps := map[string]string{
		"delivery":                "at-least-once",
		"consumer_groups":         "kafka",
		"publish_stream":          "true",
		"tail":                    "true",
		"dead_letter":             strconv.FormatBool(p.backend.MaxDeliveryAttempts > 0),
		"max_value_bytes":         strconv.Itoa(l.MaxValueBytes),
		"max_records_per_publish": strconv.Itoa(l.MaxRecordsPerPublish),
		"max_headers":             strconv.Itoa(l.MaxHeaders),
	}
	if p.devKafka != nil {
		caps["dev_brokers"] = strings.Join(p.backend.Brokers, ",")
	}
	if p.creds != nil {
		maps.Copy(caps, p.creds.Describe().Capabilities())
	}
	return caps
}

func (p *Plugin) currentClient() *kgo.Client {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.producer
}

// clients returns the shared producer, admin client and topic resolver, or UNAVAILABLE before
// Start and after Stop.
func (p *Plugin) clients() (*kgo.Client, *kadm.Client, *topics, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.producer == nil {
		return nil, nil, nil, apierr.New(apierr.ErrUnavailable, "kafka client is not running")
	}
	return p.producer, p.admin, p.topics, nil
}

// manualPartitioner honours an explicit Record.partition (marked by a non-negative
// kgo.Record.Partition) and otherwise partitions like the Java client: murmur2 of the key, or
// sticky uniform spreading for keyless records.
type manualPartitioner struct{}

// ForTopic implements kgo.Partitioner.
func (manualPartitioner) ForTopic(topic string) kgo.TopicPartitioner {
	inner, _ := kgo.UniformBytesPartitioner(64<<10, true, true, nil).ForTopic(topic).(kgo.TopicBackupPartitioner)
	return &manualTopicPartitioner{inner: inner}
}

// manualTopicPartitioner deliberately has no OnNewBatch: franz-go would then serialize producing
// to a topic, and the wrapped uniform-bytes partitioner does not need it.
type manualTopicPartitioner struct {
	inner kgo.TopicBackupPartitioner
}

func (m *manualTopicPartitioner) RequiresConsistency(r *kgo.Record) bool {
	return r.Partition >= 0 || m.inner.RequiresConsistency(r)
}

func (m *manualTopicPartitioner) Partition(r *kgo.Record, n int) int {
	if r.Partition >= 0 {
		return int(r.Partition)
	}
	return m.inner.Partition(r, n)
}

func (m *manualTopicPartitioner) PartitionByBackup(r *kgo.Record, n int, backup kgo.TopicBackupIter) int {
	if r.Partition >= 0 {
		return int(r.Partition)
	}
	return m.inner.PartitionByBackup(r, n, backup)
}

var (
	_ core.Plugin                = (*Plugin)(nil)
	_ core.Reconfigurer          = (*Plugin)(nil)
	_ core.MessageSizer          = (*Plugin)(nil)
	_ core.CapabilityReporter    = (*Plugin)(nil)
	_ kgo.TopicBackupPartitioner = (*manualTopicPartitioner)(nil)
)
