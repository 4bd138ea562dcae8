package kafkastream_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"

	"github.com/prism-gateway/plugins/conformance/securitytest"
	"github.com/prism-gateway/plugins/conformance/streamtest"
	"github.com/prism-gateway/plugins/core/coretest"
	streamv1 "github.com/prism-gateway/plugins/gen/prism/stream/v1"
	"github.com/prism-gateway/plugins/internal/testsvc"
	"github.com/prism-gateway/plugins/kafka/kafkastream"
)

func TestSecurity(t *testing.T) {
	adm, _ := admin(t)
	brokers := testsvc.KafkaBrokers(t)
	securitytest.Run(t, securitytest.Backend{
		Start: func(tb testing.TB, yaml string) *coretest.Running {
			tb.Helper()
			base := "backend:\n  brokers: [" + strings.Join(brokers, ", ") + "]\n" + groupTimings
			return coretest.Start(tb, kafkastream.New(), coretest.Options{YAML: base + yaml})
		},
		NewNamespace: func(tb testing.TB, prefix string) string {
			tb.Helper()
			name := uniqueName(prefix)
			createTopic(tb, adm, name, 1)
			return name
		},
		Write: func(ctx context.Context, conn grpc.ClientConnInterface, topic, key, value string) error {
			_, err := streamv1.NewStreamServiceClient(conn).Publish(ctx, &streamv1.PublishRequest{
				Topic: topic, Records: []*streamv1.Record{{Key: []byte(key), Value: []byte(value)}},
			})
			return err
		},
		Read: func(ctx context.Context, conn grpc.ClientConnInterface, topic, _ string, opts ...grpc.CallOption) error {
			stream, err := streamv1.NewStreamServiceClient(conn).Tail(ctx, &streamv1.TailRequest{
				Topic: topic, Start: &streamv1.TailRequest_Position{Position: streamv1.StartPosition_START_POSITION_EARLIEST},
			}, opts...)
			if err != nil {
				return err
			}
			for {
				if _, err := stream.Recv(); err != nil {
					if errors.Is(err, io.EOF) {
						return nil
					}
					return err
				}
			}
		},
		Stored: func(tb testing.TB, topic, key string) bool {
			tb.Helper()
			return topicHasKey(tb, brokers, topic, key)
		},
		Exists: func(tb testing.TB, topic string) bool {
			tb.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			topics, err := adm.ListTopics(ctx, topic)
			require.NoError(tb, err)
			return topics.Has(topic)
		},
		Subscribe: func(ctx context.Context, conn grpc.ClientConnInterface, topics []string) error {
			stream, err := streamv1.NewStreamServiceClient(conn).Subscribe(ctx)
			if err != nil {
				return err
			}
			if err := stream.Send(&streamv1.SubscribeRequest{Subscription: &streamv1.Subscription{Topics: topics, Group: uniqueName("sec-group-")}}); err != nil {
				return err
			}
			_, err = stream.Recv()
			return err
		},
		Conformance: func(t *testing.T, conn grpc.ClientConnInterface) {
			t.Helper()
			streamtest.Run(t, conn, streamtest.Options{NewTopic: func(tb testing.TB, partitions int) string {
				tb.Helper()
				return newTopic(tb, adm, partitions)
			}})
		},
	})
}

// topicHasKey reads the topic on the broker, without the plugin, and reports whether a record
// with key is there.
func topicHasKey(tb testing.TB, brokers []string, topic, key string) bool {
	tb.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(tb, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		fetches := cl.PollFetches(ctx)
		found := false
		fetches.EachRecord(func(r *kgo.Record) {
			if string(r.Key) == key {
				found = true
			}
		})
		if found {
			return true
		}
	}
	return false
}
