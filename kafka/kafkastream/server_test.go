package kafkastream

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/timestamppb"

	streamv1 "github.com/prism-gateway/plugins/gen/prism/stream/v1"
)

// These tests pin the mapping between prism.stream.v1 and the plugin's own types, where Kafka's
// null-versus-empty distinctions meet protobuf's lack of them; no brokers.

func TestPublishRequestsMapToProducerRecords(t *testing.T) {
	p3, pNeg := int32(3), int32(-2)
	at := time.Date(2026, 12, 2, 10, 0, 0, 5000, time.UTC)
	req := &streamv1.PublishRequest{Topic: "orders", Sequence: 7, Records: []*streamv1.Record{
		{Key: []byte("k"), Value: []byte("v"), Partition: &p3, Timestamp: timestamppb.New(at)},
		{Value: nil},
		{Tombstone: true, Key: []byte("gone")},
		{Value: []byte{}, Headers: []*streamv1.Header{{Key: "a", Value: nil}, {Key: "b", Value: []byte("x")}}},
		{Value: []byte("y"), Partition: &pNeg},
	}}
	r, err := validatePublish(defaultLimits(), 1<<20, req)
	require.NoError(t, err)
	assert.Equal(t, "orders", r.topic)
	assert.Equal(t, int64(7), r.sequence)
	assert.Equal(t, len("k")+len("v")+len("gone")+len("a")+len("b")+len("x")+len("y"), r.bytes)
	require.Len(t, r.records, 5)

	assert.Equal(t, int32(3), r.records[0].Partition, "a chosen partition is kept")
	assert.Equal(t, []byte("k"), r.records[0].Key)
	assert.True(t, at.Equal(r.records[0].Timestamp))
	assert.Same(t, &req.Records[0].Value[0], &r.records[0].Value[0], "values alias the request, not copied")

	assert.Equal(t, int32(-1), r.records[1].Partition, "no partition: the partitioner chooses")
	assert.NotNil(t, r.records[1].Value, "an unset value is an empty value, not a tombstone")
	assert.Empty(t, r.records[1].Value)
	assert.Nil(t, r.records[1].Key, "an empty key is a null key")
	assert.True(t, r.records[1].Timestamp.IsZero(), "no timestamp: the producer stamps it")

	assert.Nil(t, r.records[2].Value, "a tombstone is a null value")

	require.Len(t, r.records[3].Headers, 2)
	assert.NotNil(t, r.records[3].Headers[0].Value, "a header value is never null")
	assert.Equal(t, []byte("x"), r.records[3].Headers[1].Value)

	assert.Equal(t, int32(-1), r.records[4].Partition)
	assert.Equal(t, 4, r.negative, "a negative partition is kept for prepare to report with the topic's count")
	assert.Equal(t, int32(-2), r.negativePartition)
}

func TestResultsMapToProtobuf(t *testing.T) {
	t.Run("publish acks keep request order", func(t *testing.T) {
		resp := toPublishResponse(publishResult{sequence: 9, acks: []recordAck{{partition: 1, offset: 10}, {partition: 0, offset: 3}}})
		assert.Equal(t, int64(9), resp.GetSequence())
		require.Len(t, resp.GetAcks(), 2)
		assert.Equal(t, int32(1), resp.GetAcks()[0].GetPartition())
		assert.Equal(t, int64(10), resp.GetAcks()[0].GetOffset())
		assert.Equal(t, int64(3), resp.GetAcks()[1].GetOffset())
	})

	t.Run("messages carry the record, its ack id and attempt", func(t *testing.T) {
		at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
		recs := []*kgo.Record{
			{Topic: "t", Partition: 2, Offset: 5, Key: []byte("k"), Value: []byte("v"), Timestamp: at,
				Headers: []kgo.RecordHeader{{Key: "h", Value: []byte("1")}}},
			{Topic: "t", Partition: 2, Offset: 6, Value: nil, Timestamp: at},
			{Topic: "t", Partition: 2, Offset: 7, Value: []byte{}, Timestamp: at},
		}
		msgs := toMessages([]message{{rec: recs[0], ackID: "a", attempt: 2}, {rec: recs[1]}, {rec: recs[2]}})
		require.Len(t, msgs, 3)
		m := msgs[0]
		assert.Equal(t, "t", m.GetTopic())
		assert.Equal(t, int32(2), m.GetPartition())
		assert.Equal(t, int64(5), m.GetOffset())
		assert.Equal(t, []byte("k"), m.GetKey())
		assert.Equal(t, []byte("v"), m.GetValue())
		assert.True(t, at.Equal(m.GetTimestamp().AsTime()))
		assert.Equal(t, "a", m.GetAckId())
		assert.Equal(t, int32(2), m.GetDeliveryAttempt())
		require.Len(t, m.GetHeaders(), 1)
		assert.Equal(t, "h", m.GetHeaders()[0].GetKey())
		assert.False(t, m.GetTombstone())
		assert.True(t, msgs[1].GetTombstone(), "a null value is a tombstone")
		assert.False(t, msgs[2].GetTombstone(), "an empty value is not")
		assert.Empty(t, msgs[1].GetAckId(), "tail messages have no ack id")
		assert.Nil(t, toMessages(nil))
	})
}

func TestTailAndSettleRequestsMap(t *testing.T) {
	start := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	end := start.Add(time.Hour)
	tests := []struct {
		name string
		req  *streamv1.TailRequest
		want tailRequest
	}{
		{"earliest", &streamv1.TailRequest{Topic: "t", Start: &streamv1.TailRequest_Position{Position: streamv1.StartPosition_START_POSITION_EARLIEST}},
			tailRequest{topic: "t"}},
		{"latest and follow", &streamv1.TailRequest{Start: &streamv1.TailRequest_Position{Position: streamv1.StartPosition_START_POSITION_LATEST}, Follow: true},
			tailRequest{latest: true, follow: true}},
		{"a time range on two partitions", &streamv1.TailRequest{Partitions: []int32{1, 0}, Start: &streamv1.TailRequest_StartTime{StartTime: timestamppb.New(start)}, EndTime: timestamppb.New(end)},
			tailRequest{partitions: []int32{1, 0}, startTime: start, endTime: end}},
		{"last n", &streamv1.TailRequest{Start: &streamv1.TailRequest_LastN{LastN: 5}},
			tailRequest{lastN: 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := validateTail(defaultLimits(), tt.req)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}

	t.Run("settle takes ack and nack ids", func(t *testing.T) {
		got, err := validateSettle(defaultLimits(), &streamv1.SubscribeRequest{
			Ack: &streamv1.AckIds{AckIds: []string{"a", "b"}}, Nack: &streamv1.AckIds{AckIds: []string{"c"}}})
		require.NoError(t, err)
		assert.Equal(t, settleRequest{acks: []string{"a", "b"}, nacks: []string{"c"}}, got)
	})
}
