// Command bench measures the kafka plugin against franz-go used directly and against the floor,
// on the same broker with the same producer settings on every side (acks=all, idempotent, the
// same linger and compression):
//
//   - unary Publish of one 1 KiB record against ProduceSync of one record, at concurrency 1 and
//     32, then at fixed arrival rates (open loop, 50 % and 80 % of the slowest side's maximum at
//     concurrency 32);
//   - PublishStream of 100-record requests against asynchronous Produce, with the same number of
//     records in flight on every side (throughput);
//   - Subscribe acking every message against a plain franz-go group consumer, each reading the
//     same pre-filled topic from the start in a fresh group (throughput);
//   - Tail from the start of the same topic against a plain franz-go consumer without a group
//     (throughput);
//   - the security case (benchkit.RunSecurity): unary Publish of one record at concurrency 1
//     against plaintext, mTLS, and mTLS + one policy + audit to a file (-security: only this).
//
// The floor is a bare grpc-go server (no interceptors) serving the same Stream messages, whose
// handlers make the direct side's franz-go calls (ProduceSync, Produce, a group consumer marking
// acked offsets, a groupless consumer). The plugin and the floor run in processes of their own (this binary run
// again), so the CPU time per record of each is read from /proc/<pid>/stat; the benchmark's own
// from getrusage. Each case is repeated (-repeat) and printed as median ± half the range, with
// plugin ÷ direct and plugin ÷ floor for throughput, p50, p99 and CPU/op. It never fails on the
// numbers (it exits non-zero only if it cannot run).
//
// Scaling sweeps are opt-in (-sweep conc,size or all): Publish throughput at concurrency 1, 4,
// 16, 64 and 256; Publish p50 for 1 KiB, 64 KiB and 1,000,000-byte records (the largest the
// default limits take). -markdown prints every table as Markdown for the README.
//
//	go run ./kafka/bench [-duration 1s] [-repeat 3] [-linger 0s] [-compression snappy] [-records 100000] [-sweep all]
//
// Kafka comes from PRISM_TEST_KAFKA_BROKERS (default 127.0.0.1:29092).
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"

	"github.com/prism-gateway/plugins/core"
	streamv1 "github.com/prism-gateway/plugins/gen/prism/stream/v1"
	"github.com/prism-gateway/plugins/internal/benchkit"
	"github.com/prism-gateway/plugins/kafka/kafkastream"
)

const (
	valueBytes  = 1024
	partitions  = 6
	batchSize   = 100 // records per PublishStream request
	window      = 64  // requests (of batchSize records) in flight on every side
	outstanding = 10_000
)

// The sweeps -sweep accepts.
var sweepNames = []string{"conc", "size"}

type settings struct {
	*benchkit.Flags
	linger      time.Duration
	compression string
	records     int
	only        string
	conc        int
	brokers     []string
	// securityOnly runs only the security case; securityDuration is its time per mode (0: skip).
	securityOnly     bool
	securityDuration time.Duration
}

func main() {
	if code, ok := benchkit.Child(func() core.Plugin { return kafkastream.New() }, registerFloor); ok {
		os.Exit(code)
	}
	s := settings{Flags: benchkit.Register(flag.CommandLine, benchkit.Config{Duration: time.Second, Warmup: 300 * time.Millisecond, Repeats: 3}, sweepNames)}
	flag.DurationVar(&s.linger, "linger", 0, "producer linger on every side")
	flag.StringVar(&s.compression, "compression", kafkastream.CompressionSnappy, "producer compression on every side")
	flag.IntVar(&s.records, "records", 100_000, "records each consumer reads in the Subscribe case")
	flag.StringVar(&s.only, "only", "", "run only the cases whose name starts with this (Publish, PublishStream, Subscribe, Tail)")
	flag.IntVar(&s.conc, "conc", 0, "run unary Publish at only this concurrency (default: 1 and 32)")
	flag.BoolVar(&s.securityOnly, "security", false, "run only the security case (plaintext vs mTLS vs mTLS+policy+audit)")
	flag.DurationVar(&s.securityDuration, "security-duration", 5*time.Second, "measured time per mode in the security case (0: skip it)")
	flag.Parse()
	err := s.Validate()
	stopProfile := func() {}
	if err == nil {
		stopProfile, err = benchkit.StartCPUProfile(s.CPUProfile)
	}
	s.brokers = []string{"127.0.0.1:29092"}
	if v := os.Getenv("PRISM_TEST_KAFKA_BROKERS"); v != "" {
		s.brokers = strings.Split(v, ",")
	}
	if err == nil {
		err = run(s)
	}
	stopProfile()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// newProducer is the franz-go client of the direct side and of the floor.
func newProducer(brokers []string, linger time.Duration, compression string) (*kgo.Client, error) {
	codec, err := codecOf(compression)
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(linger),
		kgo.ProducerBatchCompression(codec),
		kgo.ProducerBatchMaxBytes(1<<20),
	)
	if err != nil {
		return nil, fmt.Errorf("create kafka client: %w", err)
	}
	return cl, nil
}

// bench holds the sides' clients.
type bench struct {
	s             settings
	direct        *kgo.Client
	adm           *kadm.Client
	plugin, floor *benchkit.Server
	topic         string
	value         []byte
}

func run(s settings) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	direct, err := newProducer(s.brokers, s.linger, s.compression)
	if err != nil {
		return err
	}
	defer direct.Close()
	b := &bench{s: s, direct: direct, adm: kadm.NewClient(direct), topic: "prism-bench-" + randomHex()}
	if err := createTopic(ctx, b.adm, b.topic); err != nil {
		return err
	}
	defer func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer dcancel()
		_, _ = b.adm.DeleteTopics(dctx, b.topic)
	}()

	b.value = make([]byte, valueBytes)
	_, _ = rand.Read(b.value) // incompressible, so compression settings cannot flatter any side
	if s.securityOnly {
		return runSecurity(ctx, s, b.topic, b.value)
	}

	spec := pluginSpec(s)
	spec.CPUProfile = s.PluginCPUProfile
	if b.plugin, err = benchkit.StartPluginServer(ctx, spec); err != nil {
		return err
	}
	defer b.plugin.Close()
	b.floor, err = benchkit.StartFloor(ctx, s.FloorSpec(benchkit.FloorSpec{
		Env: map[string]string{
			floorBrokersEnv:     strings.Join(s.brokers, ","),
			floorLingerEnv:      s.linger.String(),
			floorCompressionEnv: s.compression,
		},
		Service: streamv1.StreamService_ServiceDesc.ServiceName,
		Timeout: 20 * time.Second,
		Backend: "Kafka at " + strings.Join(s.brokers, ","),
	}))
	if err != nil {
		return err
	}
	defer b.floor.Close()

	where := "its own process"
	if s.InProcess {
		where = "this process"
	}
	fmt.Printf("kafka plugin vs direct franz-go vs floor (bare grpc-go + the same franz-go calls): brokers %s, %d CPUs,\n"+
		"load average %s, plugin in %s, floor in its own process, 1 KiB records, acks=all, idempotent, linger %s,\n"+
		"compression %s;\n%s\n",
		strings.Join(s.brokers, ","), runtime.NumCPU(), benchkit.LoadAverage(), where, s.linger, s.compression, s.Describe())

	want := func(name string) bool { return strings.HasPrefix(name, s.only) }
	concs := []int{1, 32}
	if s.conc != 0 {
		concs = []int{s.conc}
	}
	var results []benchkit.CaseResult
	measure := func(c benchkit.Case) (benchkit.CaseResult, error) {
		r, err := benchkit.Run(ctx, s.Config, c)
		if err != nil {
			return r, fmt.Errorf("%s at %d: %w", c.Name, c.Conc, err)
		}
		results = append(results, r)
		return r, nil
	}
	var openBasis *benchkit.CaseResult
	if want("Publish 1x") {
		for _, conc := range concs {
			r, err := measure(b.publishCase("Publish 1x1KiB", conc, 0, b.value))
			if err != nil {
				return err
			}
			if openBasis == nil || conc > openBasis.Conc {
				openBasis = &r
			}
		}
	}
	if want("PublishStream") {
		if _, err := measure(b.publishStreamCase()); err != nil {
			return err
		}
	}
	if want("Subscribe") || want("Tail") {
		cases, cleanup, err := b.consumeCases(ctx)
		if err != nil {
			return err
		}
		for _, c := range cases {
			if !want(c.Name) {
				continue
			}
			if _, err = measure(c); err != nil {
				break
			}
		}
		cleanup()
		if err != nil {
			return err
		}
	}
	if openBasis != nil {
		for _, c := range s.OpenCases(*openBasis, func(rate float64, label string) benchkit.Case {
			return b.publishCase("Publish 1x1KiB open "+label, openBasis.Conc, rate, b.value)
		}) {
			if _, err := measure(c); err != nil {
				return err
			}
		}
	}
	if err := benchkit.CaseTable("", results).Write(os.Stdout, s.Markdown); err != nil {
		return err
	}
	fmt.Printf("\nPublishStream: %d requests of %d records in flight on every side; p50/p99 per request. Subscribe: records\n"+
		"read (and acked, through plugin and floor) from a %d-record topic from its start, group join included;\n"+
		"Tail: the same topic read from its start without a group.\n",
		window, batchSize, s.records)
	if openBasis != nil && len(s.OpenRates) > 0 {
		fmt.Printf("Open-loop rows: calls arrive at the rate shown (%v of the slowest side's maximum at concurrency %d), up to %d\n"+
			"in flight; latency counts from each call's scheduled time, so queueing shows (client CPU includes the harness's scheduling).\n", s.OpenRates, openBasis.Conc, benchkit.OpenWorkers)
	}
	fmt.Println("targets: PublishStream >= 0.8x direct; Subscribe >= 0.8x direct; Tail >= 0.9x direct; unary plugin CPU/op <= 1.2x floor, p50 at conc 1 <= 1.2x floor")
	if err := b.sweeps(ctx); err != nil {
		return err
	}
	if s.securityDuration <= 0 {
		return nil
	}
	return runSecurity(ctx, s, b.topic, b.value)
}

// pluginSpec is how every case starts the plugin.
func pluginSpec(s settings) benchkit.PluginSpec {
	return benchkit.PluginSpec{
		New: func() core.Plugin { return kafkastream.New() },
		Env: map[string]string{
			"KAFKA_BROKERS":                             strings.Join(s.brokers, ","),
			"PRISM_BACKEND_LINGER":                      s.linger.String(),
			"PRISM_BACKEND_COMPRESSION":                 s.compression,
			"PRISM_METRICS_ENABLED":                     "false",
			"PRISM_LOG_LEVEL":                           "warn",
			"PRISM_LIMITS_DEFAULT_OUTSTANDING_MESSAGES": "1000",
		},
		Service:   streamv1.StreamService_ServiceDesc.ServiceName,
		InProcess: s.InProcess,
		Timeout:   20 * time.Second,
		Backend:   "Kafka at " + strings.Join(s.brokers, ","),
	}
}

// grpcSides are the floor and the plugin with a Stream client on each.
func (b *bench) grpcSides() []struct {
	name   string
	server *benchkit.Server
	client streamv1.StreamServiceClient
} {
	return []struct {
		name   string
		server *benchkit.Server
		client streamv1.StreamServiceClient
	}{
		{benchkit.Floor, b.floor, streamv1.NewStreamServiceClient(b.floor.Conn)},
		{benchkit.Plugin, b.plugin, streamv1.NewStreamServiceClient(b.plugin.Conn)},
	}
}

// publishCase is unary Publish of one record of value at conc (or at rate calls per second,
// open loop).
func (b *bench) publishCase(name string, conc int, rate float64, value []byte) benchkit.Case {
	c := benchkit.Case{Name: name, Conc: conc, Rate: rate, Sides: []benchkit.Side{{
		Name: benchkit.Direct,
		Op: func(ctx context.Context, _ int) error {
			return b.direct.ProduceSync(ctx, &kgo.Record{Topic: b.topic, Value: value}).FirstErr()
		},
	}}}
	for _, g := range b.grpcSides() {
		c.Sides = append(c.Sides, benchkit.Side{Name: g.name, Server: g.server, Op: func(ctx context.Context, _ int) error {
			_, err := g.client.Publish(ctx, &streamv1.PublishRequest{Topic: b.topic, Records: []*streamv1.Record{{Value: value}}})
			return err
		}})
	}
	return c
}

// publishStreamCase is pipelined publishing with the same records in flight on every side.
func (b *bench) publishStreamCase() benchkit.Case {
	c := benchkit.Case{Name: fmt.Sprintf("PublishStream %dx1KiB", batchSize), Conc: window, PerOp: batchSize, Unit: "records",
		Sides: []benchkit.Side{{
			Name: benchkit.Direct,
			Run: func(ctx context.Context, d time.Duration) (benchkit.Sample, error) {
				return produceAsync(ctx, b.direct, b.topic, b.value, d)
			},
		}}}
	for _, g := range b.grpcSides() {
		c.Sides = append(c.Sides, benchkit.Side{Name: g.name, Server: g.server, Run: func(ctx context.Context, d time.Duration) (benchkit.Sample, error) {
			return publishStream(ctx, g.client, b.topic, b.value, d)
		}})
	}
	return c
}

// consumeCases fill a topic of their own; Subscribe reads all of it once per side per repeat,
// each time in a fresh group, and so does Tail, without a group. cleanup deletes the topic.
func (b *bench) consumeCases(ctx context.Context) ([]benchkit.Case, func(), error) {
	topic := "prism-bench-sub-" + randomHex()
	if err := createTopic(ctx, b.adm, topic); err != nil {
		return nil, nil, err
	}
	cleanup := func() {
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer dcancel()
		_, _ = b.adm.DeleteTopics(dctx, topic)
	}
	if err := fill(ctx, b.direct, topic, b.value, b.s.records); err != nil {
		cleanup()
		return nil, nil, err
	}
	n := b.s.records
	// readCase reads the topic once per side: direct with a franz-go consumer (in a group or
	// not), floor and plugin through viaGRPC.
	readCase := func(name string, inGroup bool, viaGRPC func(context.Context, streamv1.StreamServiceClient, string, int) (benchkit.Sample, error)) benchkit.Case {
		c := benchkit.Case{Name: name, Conc: 1, Unit: "records", Slices: 1, NoWarmup: true,
			Sides: []benchkit.Side{{
				Name: benchkit.Direct,
				Run: func(ctx context.Context, _ time.Duration) (benchkit.Sample, error) {
					return consumeDirect(ctx, b.s.brokers, topic, n, inGroup)
				},
			}}}
		for _, g := range b.grpcSides() {
			c.Sides = append(c.Sides, benchkit.Side{Name: g.name, Server: g.server, Run: func(ctx context.Context, _ time.Duration) (benchkit.Sample, error) {
				return viaGRPC(ctx, g.client, topic, n)
			}})
		}
		return c
	}
	return []benchkit.Case{
		readCase("Subscribe+ack 1KiB", true, consumeStream),
		readCase("Tail 1KiB", false, tailStream),
	}, cleanup, nil
}

// sweeps runs the scaling sweeps asked for and prints a table for each.
func (b *bench) sweeps(ctx context.Context) error {
	sweep := func(title, param string, points []benchkit.SweepPoint, metrics ...benchkit.Metric) error {
		return benchkit.RunSweep(ctx, b.s.Config, os.Stdout, b.s.Markdown, title, param, points, metrics...)
	}
	if b.s.Sweep("conc") {
		var points []benchkit.SweepPoint
		for _, conc := range []int{1, 4, 16, 64, 256} {
			points = append(points, benchkit.SweepPoint{Label: strconv.Itoa(conc), Case: b.publishCase("Publish 1x1KiB", conc, 0, b.value)})
		}
		if err := sweep("Publish of one 1 KiB record: throughput vs concurrency", "concurrency", points, benchkit.Throughput, benchkit.P50); err != nil {
			return err
		}
	}
	if b.s.Sweep("size") {
		var points []benchkit.SweepPoint
		for _, size := range []struct {
			label string
			n     int
		}{{"1 KiB", 1 << 10}, {"64 KiB", 64 << 10}, {"1,000,000 B", 1_000_000}} {
			v := make([]byte, size.n)
			_, _ = rand.Read(v)
			points = append(points, benchkit.SweepPoint{Label: size.label, Case: b.publishCase("Publish "+size.label, 1, 0, v)})
		}
		if err := sweep("Publish of one record at concurrency 1: p50 vs value size", "value", points, benchkit.P50, benchkit.Throughput); err != nil {
			return err
		}
	}
	return nil
}

// runSecurity measures the Publish of one 1 KiB record in the three security modes.
func runSecurity(ctx context.Context, s settings, topic string, value []byte) error {
	if s.securityDuration <= 0 {
		return errors.New("-security-duration: must be positive with -security")
	}
	return benchkit.RunSecurity(ctx, os.Stdout, benchkit.SecuritySpec{
		Plugin:    pluginSpec(s),
		Name:      "Stream Publish 1x1KiB",
		Namespace: topic,
		Op: func(conn grpc.ClientConnInterface) benchkit.Op {
			plugin := streamv1.NewStreamServiceClient(conn)
			return func(ctx context.Context, _ int) error {
				_, err := plugin.Publish(ctx, &streamv1.PublishRequest{Topic: topic, Records: []*streamv1.Record{{Value: value}}})
				return err
			}
		},
		Duration: s.securityDuration,
		Warmup:   s.Warmup,
	})
}

func codecOf(name string) (kgo.CompressionCodec, error) {
	switch name {
	case kafkastream.CompressionNone:
		return kgo.NoCompression(), nil
	case kafkastream.CompressionGzip:
		return kgo.GzipCompression(), nil
	case kafkastream.CompressionSnappy:
		return kgo.SnappyCompression(), nil
	case kafkastream.CompressionLZ4:
		return kgo.Lz4Compression(), nil
	case kafkastream.CompressionZstd:
		return kgo.ZstdCompression(), nil
	}
	return kgo.CompressionCodec{}, fmt.Errorf("unknown compression %q", name)
}

func createTopic(ctx context.Context, adm *kadm.Client, topic string) error {
	resp, err := adm.CreateTopic(ctx, partitions, 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return fmt.Errorf("create topic %s (is Kafka up? run make services): %w", topic, err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		details, err := adm.ListTopics(ctx, topic)
		if err == nil && details[topic].Err == nil && len(details[topic].Partitions) == partitions {
			ready := true
			for _, p := range details[topic].Partitions {
				ready = ready && p.Err == nil && p.Leader >= 0
			}
			if ready {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("topic %s did not become ready", topic)
}

// produceAsync produces batchSize-record groups with at most window groups in flight and records
// each group's latency.
func produceAsync(ctx context.Context, cl *kgo.Client, topic string, value []byte, d time.Duration) (benchkit.Sample, error) {
	var s benchkit.Sample
	sem := make(chan struct{}, window)
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for time.Now().Before(end) {
		sem <- struct{}{}
		wg.Add(1)
		t0 := time.Now()
		var left atomic.Int32
		left.Store(batchSize)
		for range batchSize {
			cl.Produce(ctx, &kgo.Record{Topic: topic, Value: value}, func(_ *kgo.Record, err error) {
				if err != nil {
					mu.Lock()
					firstErr = cmpOr(firstErr, err)
					mu.Unlock()
				}
				if left.Add(-1) == 0 {
					mu.Lock()
					s.Lat = append(s.Lat, time.Since(t0))
					mu.Unlock()
					<-sem
					wg.Done()
				}
			})
		}
	}
	wg.Wait()
	s.Elapsed = time.Since(start)
	return s, firstErr
}

// publishStream sends batchSize-record requests on one PublishStream with at most window
// requests in flight and records each request's latency.
func publishStream(ctx context.Context, client streamv1.StreamServiceClient, topic string, value []byte, d time.Duration) (benchkit.Sample, error) {
	var s benchkit.Sample
	stream, err := client.PublishStream(ctx)
	if err != nil {
		return s, err
	}
	recs := make([]*streamv1.Record, batchSize)
	for i := range recs {
		recs[i] = &streamv1.Record{Value: value}
	}
	sem := make(chan struct{}, window)
	sent := make(chan time.Time, window)
	recvErr := make(chan error, 1)
	go func() {
		for t0 := range sent {
			resp, err := stream.Recv()
			if err == nil && len(resp.GetAcks()) != batchSize {
				err = fmt.Errorf("got %d acks for %d records", len(resp.GetAcks()), batchSize)
			}
			if err != nil {
				recvErr <- err
				for range sent {
					<-sem
				}
				return
			}
			s.Lat = append(s.Lat, time.Since(t0))
			<-sem
		}
		recvErr <- nil
	}()
	start := time.Now()
	end := start.Add(d)
	var seq int64
	for time.Now().Before(end) {
		sem <- struct{}{}
		seq++
		t0 := time.Now()
		if err := stream.Send(&streamv1.PublishRequest{Topic: topic, Records: recs, Sequence: seq}); err != nil {
			<-sem
			break
		}
		sent <- t0
	}
	close(sent)
	err = <-recvErr
	s.Elapsed = time.Since(start)
	_ = stream.CloseSend()
	if err == nil {
		if _, rerr := stream.Recv(); rerr != nil && !errors.Is(rerr, io.EOF) {
			err = rerr
		}
	}
	return s, err
}

func fill(ctx context.Context, cl *kgo.Client, topic string, value []byte, n int) error {
	var failed atomic.Pointer[error]
	for range n {
		cl.Produce(ctx, &kgo.Record{Topic: topic, Value: value}, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.CompareAndSwap(nil, &err)
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		return fmt.Errorf("fill topic: %w", err)
	}
	if e := failed.Load(); e != nil {
		return fmt.Errorf("fill topic: %w", *e)
	}
	return nil
}

// consumeDirect reads n records from the topic's start with a plain franz-go consumer, timed
// from creating it: in a fresh group with autocommit (Subscribe's direct side), or without a
// group (Tail's).
func consumeDirect(ctx context.Context, brokers []string, topic string, n int, inGroup bool) (benchkit.Sample, error) {
	start := time.Now()
	opts := []kgo.Opt{kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}
	if inGroup {
		opts = append(opts, kgo.ConsumerGroup("prism-bench-direct-"+randomHex()))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return benchkit.Sample{}, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	got := 0
	for got < n {
		f := cl.PollFetches(ctx)
		if err := f.Err0(); err != nil {
			return benchkit.Sample{}, err
		}
		got += f.NumRecords()
	}
	elapsed := time.Since(start)
	if inGroup {
		if err := cl.CommitUncommittedOffsets(ctx); err != nil {
			return benchkit.Sample{}, err
		}
	}
	return benchkit.Sample{Ops: n, Elapsed: elapsed}, nil
}

// tailStream reads n records through Tail from the topic's start, timed from opening the stream.
func tailStream(ctx context.Context, client streamv1.StreamServiceClient, topic string, n int) (benchkit.Sample, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	start := time.Now()
	stream, err := client.Tail(ctx, &streamv1.TailRequest{Topic: topic,
		Start: &streamv1.TailRequest_Position{Position: streamv1.StartPosition_START_POSITION_EARLIEST}})
	if err != nil {
		return benchkit.Sample{}, err
	}
	got := 0
	for got < n {
		resp, err := stream.Recv()
		if err != nil {
			return benchkit.Sample{}, err
		}
		got += len(resp.GetMessages())
	}
	return benchkit.Sample{Ops: n, Elapsed: time.Since(start)}, nil
}

// consumeStream reads n records through Subscribe in a fresh group, acking every response,
// timed from opening the stream.
func consumeStream(ctx context.Context, client streamv1.StreamServiceClient, topic string, n int) (benchkit.Sample, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	start := time.Now()
	stream, err := client.Subscribe(ctx)
	if err != nil {
		return benchkit.Sample{}, err
	}
	err = stream.Send(&streamv1.SubscribeRequest{Subscription: &streamv1.Subscription{
		Topics: []string{topic}, Group: "prism-bench-stream-" + randomHex(),
		Start: streamv1.StartPosition_START_POSITION_EARLIEST, MaxOutstandingMessages: outstanding,
	}})
	if err != nil {
		return benchkit.Sample{}, err
	}
	got := 0
	for got < n {
		resp, err := stream.Recv()
		if err != nil {
			return benchkit.Sample{}, err
		}
		msgs := resp.GetMessages()
		if len(msgs) == 0 {
			continue
		}
		got += len(msgs)
		ids := make([]string, len(msgs))
		for i, m := range msgs {
			ids[i] = m.GetAckId()
		}
		if err := stream.Send(&streamv1.SubscribeRequest{Ack: &streamv1.AckIds{AckIds: ids}}); err != nil {
			return benchkit.Sample{}, err
		}
	}
	elapsed := time.Since(start)
	_ = stream.CloseSend()
	for {
		if _, err := stream.Recv(); err != nil {
			break
		}
	}
	return benchkit.Sample{Ops: n, Elapsed: elapsed}, nil
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func randomHex() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
