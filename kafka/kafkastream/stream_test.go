package kafkastream_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/prism-gateway/plugins/conformance/streamtest"
	"github.com/prism-gateway/plugins/core/coretest"
	streamv1 "github.com/prism-gateway/plugins/gen/prism/stream/v1"
	"github.com/prism-gateway/plugins/internal/testsvc"
	"github.com/prism-gateway/plugins/kafka/kafkastream"
)

// groupTimings keep rebalances quick so the package finishes in minutes.
const groupTimings = `
  session_timeout: 6s
  heartbeat_interval: 500ms
  rebalance_timeout: 8s
  commit_interval: 200ms
  fetch_max_wait: 200ms
`

// startPlugin runs the kafka plugin on the PLAINTEXT test broker with extra backend YAML lines.
func startPlugin(t *testing.T, backendExtra string) *coretest.Running {
	t.Helper()
	brokers := testsvc.KafkaBrokers(t)
	yaml := "backend:\n  brokers: [" + strings.Join(brokers, ", ") + "]\n" + groupTimings + backendExtra
	r := coretest.Start(t, kafkastream.New(), coretest.Options{YAML: yaml})
	return r
}

// admin is a franz-go admin client on the PLAINTEXT test broker.
func admin(t *testing.T) (*kadm.Client, *kgo.Client) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(testsvc.KafkaBrokers(t)...))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl), cl
}

// uniqueName returns prefix plus random hex.
func uniqueName(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// newTopic creates a fresh topic that is deleted when the test ends.
func newTopic(tb testing.TB, adm *kadm.Client, partitions int) string {
	tb.Helper()
	name := uniqueName("prism-test-")
	createTopic(tb, adm, name, partitions)
	return name
}

// createTopic creates a topic, waits until every partition has a leader, and deletes it at the end.
func createTopic(tb testing.TB, adm *kadm.Client, name string, partitions int) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := adm.CreateTopic(ctx, int32(partitions), 1, nil, name)
	require.NoError(tb, err)
	require.NoError(tb, resp.Err)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = adm.DeleteTopics(ctx, name)
	})
	waitTopic(tb, adm, name, partitions)
}

// waitTopic waits until the topic has the given partitions, each with a leader: the broker answers
// CreateTopics before that.
func waitTopic(tb testing.TB, adm *kadm.Client, name string, partitions int) {
	tb.Helper()
	require.Eventually(tb, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		details, err := adm.ListTopics(ctx, name)
		if err != nil || details[name].Err != nil || len(details[name].Partitions) != partitions {
			return false
		}
		for _, p := range details[name].Partitions {
			if p.Err != nil || p.Leader < 0 {
				return false
			}
		}
		return true
	}, 20*time.Second, 20*time.Millisecond, "topic %s did not become ready", name)
}

func TestConformance(t *testing.T) {
	r := startPlugin(t, "")
	adm, _ := admin(t)
	streamtest.Run(t, r.Conn, streamtest.Options{
		NewTopic: func(tb testing.TB, partitions int) string {
			tb.Helper()
			return newTopic(tb, adm, partitions)
		},
	})
}

func client(r *coretest.Running) streamv1.StreamServiceClient {
	return streamv1.NewStreamServiceClient(r.Conn)
}
