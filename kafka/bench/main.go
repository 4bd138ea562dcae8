// Command bench compares the kafka plugin with franz-go used directly on the same broker, with the
// same producer settings on both sides (acks=all, idempotent, the same linger and compression):
//
//   - unary Publish of one 1 KiB record against ProduceSync of one record, at concurrency 1
//     (latency: the added p50 is the plugin's cost) and 32;
//   - PublishStream of 100-record requests against asynchronous Produce, with the same number of
//     records in flight on both sides (throughput);
//   - Subscribe acking every message against a plain franz-go group consumer, both reading the
//     same pre-filled topic from the start (throughput);
//   - the security case (benchkit.RunSecurity): unary Publish of one record at concurrency 1
//     against plaintext, mTLS, and mTLS + one policy + audit to a file (-security: only this).
//
// The plugin runs in a process of its own (this binary started again) on a loopback port, as it
// is deployed, or with -inprocess inside this process. It prints ratios and p50/p99 and never
// fails on the numbers (it exits non-zero only if it cannot run).
//
//	go run ./kafka/bench [-duration 3s] [-linger 0s] [-compression snappy] [-records 100000] [-security]
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
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/prism-gateway/plugins/core"
	streamv1 "github.com/prism-gateway/plugins/gen/prism/stream/v1"
	"github.com/prism-gateway/plugins/internal/benchkit"
	"github.com/prism-gateway/plugins/kafka/kafkastream"
)

const (
	valueBytes  = 1024
	partitions  = 6
	batchSize   = 100 // records per PublishStream request
	window      = 64  // requests (of batchSize records) in flight on both sides
	outstanding = 10_000
)

type settings struct {
	duration    time.Duration
	warmup      time.Duration
	linger      time.Duration
	compression string
	records     int
	inProcess   bool
	only        string
	brokers     []string
	// securityOnly runs only the security case; securityDuration is its time per mode.
	securityOnly     bool
	securityDuration time.Duration
}

func main() {
	if os.Getenv(benchkit.PluginProcessEnv) != "" {
		os.Exit(core.Run(nil, kafkastream.New()))
	}
	var s settings
	flag.DurationVar(&s.duration, "duration", 3*time.Second, "measured time per side per case")
	flag.DurationVar(&s.warmup, "warmup", 500*time.Millisecond, "unmeasured time before each case")
	flag.DurationVar(&s.linger, "linger", 0, "producer linger on both sides")
	flag.StringVar(&s.compression, "compression", kafkastream.CompressionSnappy, "producer compression on both sides")
	flag.IntVar(&s.records, "records", 100_000, "records each consumer reads in the Subscribe case")
	flag.BoolVar(&s.inProcess, "inprocess", false, "serve the plugin inside the benchmark's process")
	flag.StringVar(&s.only, "only", "", "run only the cases whose name starts with this (Publish, PublishStream, Subscribe, ref)")
	flag.BoolVar(&s.securityOnly, "security", false, "run only the security case (plaintext vs mTLS vs mTLS+policy+audit)")
	flag.DurationVar(&s.securityDuration, "security-duration", 5*time.Second, "measured time per mode in the security case")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()
	stopProfile, err := benchkit.StartCPUProfile(*cpuProfile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	defer stopProfile()
	s.brokers = []string{"127.0.0.1:29092"}
	if v := os.Getenv("PRISM_TEST_KAFKA_BROKERS"); v != "" {
		s.brokers = strings.Split(v, ",")
	}
	if err := run(s); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		stopProfile()
		os.Exit(1)
	}
}

func run(s settings) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	codec, err := codecOf(s.compression)
	if err != nil {
		return err
	}
	direct, err := kgo.NewClient(
		kgo.SeedBrokers(s.brokers...),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(s.linger),
		kgo.ProducerBatchCompression(codec),
		kgo.ProducerBatchMaxBytes(1<<20),
	)
	if err != nil {
		return fmt.Errorf("create kafka client: %w", err)
	}
	defer direct.Close()
	adm := kadm.NewClient(direct)
	topic := "prism-bench-" + randomHex()
	if err := createTopic(ctx, adm, topic); err != nil {
		return err
	}
	defer func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer dcancel()
		_, _ = adm.DeleteTopics(dctx, topic)
	}()

	value := make([]byte, valueBytes)
	_, _ = rand.Read(value) // incompressible, so compression settings cannot flatter either side
	if s.securityOnly {
		return runSecurity(ctx, s, topic, value)
	}

	conn, stop, err := benchkit.StartPlugin(ctx, pluginSpec(s))
	if err != nil {
		return err
	}
	defer stop()
	plugin := streamv1.NewStreamServiceClient(conn)

	where := "its own process"
	if s.inProcess {
		where = "this process"
	}
	fmt.Printf("kafka plugin vs direct franz-go: brokers %s, %d CPUs, load average %s, %s per side per case,\n"+
		"plugin in %s, gRPC over loopback, 1 KiB records, acks=all, idempotent, linger %s, compression %s\n\n",
		strings.Join(s.brokers, ","), runtime.NumCPU(), benchkit.LoadAverage(), s.duration, where, s.linger, s.compression)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	_, _ = fmt.Fprintln(tw, "case\tconc\tdirect rec/s\tplugin rec/s\tratio\tdirect p50\tplugin p50\tadded p50\tdirect p99\tplugin p99\t")
	row := func(name string, conc int, d, p benchkit.Result) {
		_, _ = fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%.2fx\t%s\t%s\t%s\t%s\t%s\t\n", name, conc, d.Throughput, p.Throughput,
			benchkit.Ratio(p.Throughput, d.Throughput), benchkit.Micros(d.P50), benchkit.Micros(p.P50),
			benchkit.Micros(p.P50-d.P50), benchkit.Micros(d.P99), benchkit.Micros(p.P99))
	}

	// Unary Publish of one record against ProduceSync of one record.
	produceOne := func(ctx context.Context, _ int) error {
		return direct.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: value}).FirstErr()
	}
	publishOne := func(ctx context.Context, _ int) error {
		_, err := plugin.Publish(ctx, &streamv1.PublishRequest{Topic: topic, Records: []*streamv1.Record{{Value: value}}})
		return err
	}
	want := func(name string) bool { return strings.HasPrefix(name, s.only) }
	if want("ref") {
		// Reference: the bare gRPC round trip to the plugin (a health check) against ProduceSync.
		health := healthpb.NewHealthClient(conn)
		hop := func(ctx context.Context, _ int) error {
			_, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
			return err
		}
		for _, conc := range []int{1, 32} {
			d, p, err := benchkit.Compare(ctx, produceOne, hop, conc, s.warmup, s.duration/2)
			if err != nil {
				return fmt.Errorf("ref: %w", err)
			}
			row("ref: gRPC hop only", conc, d, p)
		}
	}
	for _, conc := range []int{1, 32} {
		if !want("Publish 1x") || s.only == "PublishStream" {
			break
		}
		d, p, err := benchkit.Compare(ctx, produceOne, publishOne, conc, s.warmup, s.duration)
		if err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		row("Publish 1x1KiB", conc, d, p)
	}

	if err := publishStreamCase(ctx, s, direct, plugin, topic, value, row, want); err != nil {
		return err
	}
	if want("Subscribe") {
		if err := subscribeCase(ctx, s, adm, direct, plugin, value, tw); err != nil {
			return err
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Println("\nPublishStream rows count records; p50/p99 there are per 100-record request. Subscribe rows count records")
	fmt.Printf("read (and acked, through the plugin) from a %d-record topic, timed from subscribing, group join included.\n", s.records)
	fmt.Println("targets: PublishStream ratio >= 0.90x; Subscribe ratio >= 0.80x; Publish added p50 <= 150us at conc 1 (linger 0)")
	return runSecurity(ctx, s, topic, value)
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
		InProcess: s.inProcess,
		Timeout:   20 * time.Second,
		Backend:   "Kafka at " + strings.Join(s.brokers, ","),
	}
}

// runSecurity measures the Publish of one 1 KiB record in the three security modes.
func runSecurity(ctx context.Context, s settings, topic string, value []byte) error {
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
		Warmup:   s.warmup,
	})
}

// publishStreamCase compares pipelined publishing with the same records in flight on both sides.
func publishStreamCase(ctx context.Context, s settings, direct *kgo.Client, plugin streamv1.StreamServiceClient, topic string, value []byte, row func(string, int, benchkit.Result, benchkit.Result), want func(string) bool) error {
	if !want("PublishStream") {
		return nil
	}
	var d, p benchkit.Sample
	if _, err := produceAsync(ctx, direct, topic, value, s.warmup/2); err != nil {
		return fmt.Errorf("direct produce: %w", err)
	}
	if _, err := publishStream(ctx, plugin, topic, value, s.warmup/2); err != nil {
		return fmt.Errorf("PublishStream: %w", err)
	}
	for range benchkit.Rounds {
		ds, err := produceAsync(ctx, direct, topic, value, s.duration/benchkit.Rounds)
		if err != nil {
			return fmt.Errorf("direct produce: %w", err)
		}
		ps, err := publishStream(ctx, plugin, topic, value, s.duration/benchkit.Rounds)
		if err != nil {
			return fmt.Errorf("PublishStream: %w", err)
		}
		d.Merge(ds)
		p.Merge(ps)
	}
	row(fmt.Sprintf("PublishStream %dx1KiB", batchSize), window, d.Result(batchSize), p.Result(batchSize))
	return nil
}

// subscribeCase compares consuming: both read the same pre-filled topic from its start in fresh
// groups.
func subscribeCase(ctx context.Context, s settings, adm *kadm.Client, direct *kgo.Client, plugin streamv1.StreamServiceClient, value []byte, tw *tabwriter.Writer) error {
	subTopic := "prism-bench-sub-" + randomHex()
	if err := createTopic(ctx, adm, subTopic); err != nil {
		return err
	}
	defer func() {
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer dcancel()
		_, _ = adm.DeleteTopics(dctx, subTopic)
	}()
	if err := fill(ctx, direct, subTopic, value, s.records); err != nil {
		return err
	}
	dc, err := consumeDirect(ctx, s, subTopic, s.records)
	if err != nil {
		return fmt.Errorf("direct consumer: %w", err)
	}
	pc, err := consumePlugin(ctx, plugin, subTopic, s.records)
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	_, _ = fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%.2fx\t\t\t\t\t\t\n", "Subscribe+ack 1KiB", 1, dc, pc, benchkit.Ratio(pc, dc))
	return nil
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

// consumeDirect reads n records with a plain franz-go group consumer (autocommit) and returns
// records per second, timed from creating the consumer.
func consumeDirect(ctx context.Context, s settings, topic string, n int) (float64, error) {
	start := time.Now()
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(s.brokers...),
		kgo.ConsumerGroup("prism-bench-direct-"+randomHex()),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	got := 0
	for got < n {
		f := cl.PollFetches(ctx)
		if err := f.Err0(); err != nil {
			return 0, err
		}
		got += f.NumRecords()
	}
	elapsed := time.Since(start)
	if err := cl.CommitUncommittedOffsets(ctx); err != nil {
		return 0, err
	}
	return float64(n) / elapsed.Seconds(), nil
}

// consumePlugin reads n records through Subscribe, acking every response, and returns records per
// second, timed from opening the stream.
func consumePlugin(ctx context.Context, client streamv1.StreamServiceClient, topic string, n int) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	start := time.Now()
	stream, err := client.Subscribe(ctx)
	if err != nil {
		return 0, err
	}
	err = stream.Send(&streamv1.SubscribeRequest{Subscription: &streamv1.Subscription{
		Topics: []string{topic}, Group: "prism-bench-plugin-" + randomHex(),
		Start: streamv1.StartPosition_START_POSITION_EARLIEST, MaxOutstandingMessages: outstanding,
	}})
	if err != nil {
		return 0, err
	}
	got := 0
	for got < n {
		resp, err := stream.Recv()
		if err != nil {
			return 0, err
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
			return 0, err
		}
	}
	elapsed := time.Since(start)
	_ = stream.CloseSend()
	for {
		if _, err := stream.Recv(); err != nil {
			break
		}
	}
	return float64(n) / elapsed.Seconds(), nil
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
