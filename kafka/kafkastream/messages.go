package kafkastream

import (
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// The plugin's own request and result types. server.go maps prism.stream.v1's protobuf messages
// to them (through the checks in limits.go) and back; the rest of the package works on these only.
// Byte slices alias the request's buffers: nothing is copied on the way to the producer.

// publishRequest is a checked PublishRequest. Its records carry no topic yet (prepare resolves
// it); Partition is -1 unless the caller chose one; Value is nil only for a tombstone; header
// values are never nil (Kafka tells null from empty, protobuf does not).
type publishRequest struct {
	topic    string // as requested: "" is the configured default topic
	sequence int64
	records  []kgo.Record
	bytes    int // keys, values and headers, for the metrics
	// negative is the first record that asked for a negative partition (-1: none); prepare
	// reports it with the topic's partition count, in record order with the others.
	negative          int
	negativePartition int32
}

// recordAck is where the brokers stored one published record.
type recordAck struct {
	partition int32
	offset    int64
}

// publishResult answers one publishRequest: an ack per record, in request order.
type publishResult struct {
	sequence int64
	acks     []recordAck
}

// subscriptionRequest is a Subscribe stream's first request, checked and with defaults applied.
type subscriptionRequest struct {
	topics   []string // resolved and deduplicated, in request order
	fields   []string // the request field each topic came from, for errors
	group    string
	maxMsgs  int
	maxBytes int64
	earliest bool // a partition with no committed offset starts at its first record, else at its end
}

// settleRequest is a Subscribe request after the first: ack ids to ack and to nack.
type settleRequest struct {
	acks, nacks []string
}

// message is one record sent on a Subscribe or Tail stream; ackID and attempt are Subscribe's.
type message struct {
	rec     *kgo.Record
	ackID   string
	attempt int32
}

// subscribeResponse is one Subscribe response: deliveries, or the ack ids that matched nothing.
type subscribeResponse struct {
	messages []message
	ignored  []string
}

// tailRequest is a checked TailRequest.
type tailRequest struct {
	topic      string  // as requested: "" is the configured default topic
	partitions []int32 // as requested: none means all
	// Where each partition starts: at startTime when set, else lastN records before the end when
	// positive, else at the end when latest, else at the first record.
	startTime time.Time
	lastN     int64
	latest    bool
	endTime   time.Time // zero: no end time
	follow    bool
}
