package kafkastream

import (
	"context"
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Dead-letter headers added to a record moved to the dead-letter topic.
const (
	HeaderDLQTopic     = "prism-dlq-original-topic"
	HeaderDLQPartition = "prism-dlq-original-partition"
	HeaderDLQOffset    = "prism-dlq-original-offset"
	HeaderDLQGroup     = "prism-dlq-group"
	HeaderDLQAttempts  = "prism-dlq-delivery-attempts"
)

// deadLetter writes a message that used up its attempts to the dead-letter topic and then treats
// it as acked; if that fails it is delivered again. The write outlives the stream: it is settled
// in the group only if the partition is still owned when it completes.
func (s *subscription) deadLetter(ctx context.Context, d *delivery) {
	ctx = context.WithoutCancel(ctx)
	producer, _, topics, err := s.p.clients()
	r := d.rec
	dlq := deadLetterTopic(s.p.backend.DeadLetterTopic, r.Topic)
	if err == nil {
		ctx, cancel := context.WithTimeout(ctx, finalCommitTimeout)
		_, err = topics.partitions(ctx, "dead_letter_topic", dlq)
		cancel()
	}
	if err != nil {
		s.deadLetterDone(d, err)
		return
	}
	out := &kgo.Record{
		Topic:     dlq,
		Partition: -1,
		Key:       r.Key,
		Value:     r.Value,
		Timestamp: r.Timestamp,
		Headers: append(append(make([]kgo.RecordHeader, 0, len(r.Headers)+5), r.Headers...),
			kgo.RecordHeader{Key: HeaderDLQTopic, Value: []byte(r.Topic)},
			kgo.RecordHeader{Key: HeaderDLQPartition, Value: []byte(strconv.Itoa(int(r.Partition)))},
			kgo.RecordHeader{Key: HeaderDLQOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))},
			kgo.RecordHeader{Key: HeaderDLQGroup, Value: []byte(s.group)},
			kgo.RecordHeader{Key: HeaderDLQAttempts, Value: []byte(strconv.Itoa(int(d.attempt)))},
		),
	}
	produceCtx, cancel := context.WithTimeout(ctx, finalCommitTimeout)
	producer.Produce(produceCtx, out, func(_ *kgo.Record, err error) {
		cancel()
		s.deadLetterDone(d, err)
	})
}

func (s *subscription) deadLetterDone(d *delivery, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ledger.deadLettered(d, err == nil) {
		return // revoked meanwhile: the next owner delivers it again
	}
	if err != nil {
		s.log.Warn("dead-lettering failed; delivering the message again", "topic", d.rec.Topic, "partition", d.rec.Partition, "offset", d.rec.Offset, "error", err)
		s.wakeLocked()
		return
	}
	s.p.metrics.deadLettered.WithLabelValues(s.group).Inc()
}

// deadLetterAll dead-letters deliveries that used up their attempts, outside the stream's lock.
func (s *subscription) deadLetterAll(ctx context.Context, ds []*delivery) {
	for _, d := range ds {
		s.deadLetter(ctx, d)
	}
}
