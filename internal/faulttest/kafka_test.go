package faulttest_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/prism-gateway/plugins/core/coretest"
	streamv1 "github.com/prism-gateway/plugins/gen/prism/stream/v1"
	"github.com/prism-gateway/plugins/internal/faulttest"
	"github.com/prism-gateway/plugins/kafka/kafkastream"
)

// One private broker serves both Kafka scenarios: starting a JVM broker is the slow part.
func TestKafkaBrokerFaults(t *testing.T) {
	broker := faulttest.StartKafka(t)
	r := coretest.Start(t, kafkastream.New(), coretest.Options{
		YAML: controlPlaneYAML + "backend:\n  brokers: [" + broker.Addr + "]\n",
	})
	untilHealth(t, r.Conn, healthpb.HealthCheckResponse_SERVING, 60*time.Second)
	stream := streamv1.NewStreamServiceClient(r.Conn)
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker.Addr))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	adm := kadm.NewClient(cl)
	newTopic := func(t *testing.T, name string, partitions int32) string {
		t.Helper()
		resp, err := adm.CreateTopic(t.Context(), partitions, 1, nil, name)
		require.NoError(t, err)
		require.NoError(t, resp.Err)
		return name
	}

	t.Run("broker frozen by SIGSTOP", func(t *testing.T) {
		topic := newTopic(t, "hang", 1)
		checkHang(t, hangScenario{conn: r.Conn,
			freeze: func() { require.NoError(t, broker.Signal(syscall.SIGSTOP)) },
			thaw:   func() { require.NoError(t, broker.Signal(syscall.SIGCONT)) },
			call: func(ctx context.Context) error {
				_, err := stream.Publish(ctx, &streamv1.PublishRequest{Topic: topic,
					Records: []*streamv1.Record{{Key: []byte("k"), Value: []byte("v")}}})
				return err
			}})
	})

	t.Run("broker killed under publish", func(t *testing.T) {
		topic := newTopic(t, "kill", 3)
		const workers = 4
		acked := make([][]int, workers)
		var failed, ackedAfterRestart atomic.Int64
		var restartedAt, firstAfterRestart atomic.Int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				key := []byte(fmt.Sprintf("key-%d", w))
				for n := 0; ; {
					select {
					case <-stop:
						return
					default:
					}
					ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
					_, err := stream.Publish(ctx, &streamv1.PublishRequest{Topic: topic,
						Records: []*streamv1.Record{{Key: key, Value: []byte(strconv.Itoa(n))}}})
					cancel()
					if err != nil {
						// At least once: the same record again, so a key's records stay in order.
						failed.Add(1)
						time.Sleep(50 * time.Millisecond)
						continue
					}
					acked[w] = append(acked[w], n)
					if restartedAt.Load() != 0 {
						ackedAfterRestart.Add(1)
						firstAfterRestart.CompareAndSwap(0, time.Now().UnixNano())
					}
					n++
				}
			}()
		}
		time.Sleep(2 * time.Second)
		require.NoError(t, broker.Kill())
		killedAt := time.Now()
		time.Sleep(time.Second)
		require.NoError(t, broker.Start())
		restartedAt.Store(time.Now().UnixNano())
		require.Eventually(t, func() bool { return ackedAfterRestart.Load() >= 100 }, 60*time.Second, 50*time.Millisecond,
			"publishes succeed again after the broker restart")
		close(stop)
		wg.Wait()
		outage := time.Unix(0, firstAfterRestart.Load()).Sub(killedAt)
		recovery := time.Duration(firstAfterRestart.Load() - restartedAt.Load())

		consumed := consumeAll(t, broker.Addr, topic)
		var ackedTotal, lost, duplicates, outOfOrder int
		for w := range workers {
			key := fmt.Sprintf("key-%d", w)
			seen := map[int]int{}
			last := -1
			for _, n := range consumed[key] {
				seen[n]++
				if seen[n] == 1 {
					if n < last {
						outOfOrder++
					}
					last = n
				} else {
					duplicates++
				}
			}
			for _, n := range acked[w] {
				ackedTotal++
				if seen[n] == 0 {
					lost++
				}
			}
		}
		faulttest.Report(t, "acked=%d failed_retried=%d lost=%d duplicates=%d out_of_order=%d outage_seen=%.3fs recovery_after_restart=%.3fs",
			ackedTotal, failed.Load(), lost, duplicates, outOfOrder, outage.Seconds(), recovery.Seconds())
		assert.Zero(t, lost, "acknowledged records missing from the topic")
		assert.Zero(t, outOfOrder, "a key's records out of order")
	})
}

// consumeAll reads every record of topic (to its end offsets), grouped by key as decimal values.
func consumeAll(t *testing.T, broker, topic string) map[string][]int {
	t.Helper()
	admCl, err := kgo.NewClient(kgo.SeedBrokers(broker))
	require.NoError(t, err)
	defer admCl.Close()
	ends, err := kadm.NewClient(admCl).ListEndOffsets(t.Context(), topic)
	require.NoError(t, err)
	remaining := 0
	ends.Each(func(o kadm.ListedOffset) { remaining += int(o.Offset) })

	cl, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	require.NoError(t, err)
	defer cl.Close()
	byKey := map[string][]int{}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for remaining > 0 {
		fetches := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "topic not read to its end; %d records left", remaining)
		fetches.EachRecord(func(rec *kgo.Record) {
			n, err := strconv.Atoi(string(rec.Value))
			require.NoError(t, err)
			key := strings.Clone(string(rec.Key))
			byKey[key] = append(byKey[key], n)
			remaining--
		})
	}
	return byKey
}
