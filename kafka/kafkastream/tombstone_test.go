package kafkastream_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/prism-gateway/plugins/conformance/streamtest"
	streamv1 "github.com/prism-gateway/plugins/gen/prism/stream/v1"
	"github.com/prism-gateway/plugins/internal/testsvc"
)

// What reaches Kafka keeps null and empty apart, as a Java consumer or kcat sees it: a tombstone
// is a null value, an empty value and an empty header value stay empty; and records written
// directly with a null or empty value are told apart when read through the plugin.
func TestTombstonesAndEmptyValuesReachKafkaAsSuch(t *testing.T) {
	r := startPlugin(t, "")
	adm, direct := admin(t)
	topic := newTopic(t, adm, 1)
	c := client(r)
	_, err := c.Publish(t.Context(), &streamv1.PublishRequest{Topic: topic, Records: []*streamv1.Record{
		{Key: []byte("gone"), Tombstone: true},
		{Key: []byte("empty"), Headers: []*streamv1.Header{{Key: "blank"}}},
	}})
	require.NoError(t, err)
	// Two more written directly: a null value and an empty one.
	res := direct.ProduceSync(t.Context(),
		&kgo.Record{Topic: topic, Key: []byte("direct-null")},
		&kgo.Record{Topic: topic, Key: []byte("direct-empty"), Value: []byte{}})
	require.NoError(t, res.FirstErr())

	consumer, err := kgo.NewClient(kgo.SeedBrokers(testsvc.KafkaBrokers(t)...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	t.Cleanup(consumer.Close)
	var raw []*kgo.Record
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for len(raw) < 4 && ctx.Err() == nil {
		consumer.PollFetches(ctx).EachRecord(func(rec *kgo.Record) { raw = append(raw, rec) })
	}
	require.Len(t, raw, 4)
	assert.Nil(t, raw[0].Value, "a tombstone is a null value in Kafka")
	require.NotNil(t, raw[1].Value, "an empty value is not null in Kafka")
	assert.Empty(t, raw[1].Value)
	require.Len(t, raw[1].Headers, 1)
	assert.NotNil(t, raw[1].Headers[0].Value, "an empty header value is not null in Kafka")

	msgs, err := streamtest.Tail(t, c, &streamv1.TailRequest{Topic: topic, Start: &streamv1.TailRequest_Position{Position: streamv1.StartPosition_START_POSITION_EARLIEST}})
	require.NoError(t, err)
	require.Len(t, msgs, 4)
	var tombstones []bool
	for _, m := range msgs {
		tombstones = append(tombstones, m.GetTombstone())
	}
	assert.Equal(t, []bool{true, false, true, false}, tombstones, "the plugin reports null values as tombstones, empty ones not")
}
