package kafkastream

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/prism-gateway/plugins/core/apierr"
	streamv1 "github.com/prism-gateway/plugins/gen/prism/stream/v1"
)

// This file holds the checks requests pass before the brokers are touched; each error names the
// request field and the limit it broke, in apierr's wording.

// settings is the snapshot of what a Reload changes live: the request limits. Every backend
// setting takes a restart, so the plugin reads those from its backend section.
type settings struct {
	limits *LimitsConfig
}

func newSettings(l *LimitsConfig) *settings { return &settings{limits: l} }

// Kafka's own limits on topic and consumer group names.
const (
	maxTopicNameLen = 249
	maxGroupLen     = 255
)

// validTopicName applies Kafka's rules: 1-249 characters of [a-zA-Z0-9._-], not "." or "..".
func validTopicName(name string) error {
	switch {
	case name == "":
		return errors.New("must not be empty")
	case len(name) > maxTopicNameLen:
		return fmt.Errorf("must be at most %d characters, got %d", maxTopicNameLen, len(name))
	case name == "." || name == "..":
		return fmt.Errorf("must not be %q", name)
	}
	for _, c := range name {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			return fmt.Errorf("may only contain letters, digits, '.', '_' and '-', got %q", name)
		}
	}
	return nil
}

// publishRequestOf checks a PublishRequest against the limits in force and maps it to the
// plugin's own publishRequest.
func (p *Plugin) publishRequestOf(req *streamv1.PublishRequest) (publishRequest, error) {
	return validatePublish(p.settings.Load().limits, p.backend.BatchMaxBytes, req)
}

// validatePublish checks a PublishRequest's records against the limits and maps them to producer
// records (aliasing the request's bytes); batchMaxBytes is backend.batch_max_bytes.
func validatePublish(limits *LimitsConfig, batchMaxBytes int, req *streamv1.PublishRequest) (publishRequest, error) {
	out := publishRequest{topic: req.GetTopic(), sequence: req.GetSequence(), negative: -1}
	n := len(req.GetRecords())
	if n == 0 {
		return out, apierr.Invalid("records", "at least one record is required")
	}
	if n > limits.MaxRecordsPerPublish {
		return out, apierr.TooLarge("records", n, limits.MaxRecordsPerPublish, "limits.max_records_per_publish", "records")
	}
	// One backing array for all records keeps allocation per request, not per record.
	out.records = make([]kgo.Record, n)
	for i, rec := range req.GetRecords() {
		size, err := validateRecord(limits, i, rec)
		if err != nil {
			return out, err
		}
		if wire := recordBatchBytes(rec); wire > batchMaxBytes {
			return out, apierr.TooLarge("records["+strconv.Itoa(i)+"]", wire, batchMaxBytes, "backend.batch_max_bytes", "bytes as a Kafka record batch of its own")
		}
		out.bytes += size
		toProducerRecord(&out.records[i], rec)
		if rec.Partition != nil && rec.GetPartition() < 0 && out.negative < 0 {
			out.negative, out.negativePartition = i, rec.GetPartition()
		}
	}
	if out.bytes > limits.MaxPublishBytes {
		return out, apierr.TooLarge("records", out.bytes, limits.MaxPublishBytes, "limits.max_publish_bytes", "bytes of keys, values and headers")
	}
	return out, nil
}

// toProducerRecord fills r from a checked record. Kafka tells a null value (a tombstone) and a
// null header value from empty ones; protobuf does not, so an empty value is written as empty
// unless it is a tombstone, and a header value is never null.
func toProducerRecord(r *kgo.Record, rec *streamv1.Record) {
	r.Partition = -1 // the producer's partitioner chooses
	if rec.Partition != nil && rec.GetPartition() >= 0 {
		r.Partition = rec.GetPartition() // checked against the topic in prepare
	}
	if len(rec.GetKey()) > 0 {
		r.Key = rec.GetKey()
	}
	switch {
	case rec.GetTombstone():
		r.Value = nil
	case rec.GetValue() == nil:
		r.Value = []byte{}
	default:
		r.Value = rec.GetValue()
	}
	if hs := rec.GetHeaders(); len(hs) > 0 {
		r.Headers = make([]kgo.RecordHeader, len(hs))
		for j, h := range hs {
			v := h.GetValue()
			if v == nil {
				v = []byte{}
			}
			r.Headers[j] = kgo.RecordHeader{Key: h.GetKey(), Value: v}
		}
	}
	if rec.GetTimestamp() != nil {
		r.Timestamp = rec.GetTimestamp().AsTime()
	}
}

// Framing a record adds in a Kafka record batch of its own, as upper bounds: the v2 batch header
// (61 bytes) plus the record's length, attributes, timestamp and offset deltas, key and value
// lengths and header count (at most 36 bytes of varints), and two length varints per header.
const (
	recordFramingBytes = 61 + 36
	headerFramingBytes = 10
)

// recordBatchBytes bounds the bytes rec takes when the producer sends it alone in a batch, which
// is what backend.batch_max_bytes and the brokers' message.max.bytes limit.
func recordBatchBytes(rec *streamv1.Record) int {
	n := recordFramingBytes + len(rec.GetKey()) + len(rec.GetValue())
	for _, h := range rec.GetHeaders() {
		n += headerFramingBytes + len(h.GetKey()) + len(h.GetValue())
	}
	return n
}

// validateRecord checks one record and returns its key, value and header bytes.
func validateRecord(limits *LimitsConfig, i int, rec *streamv1.Record) (int, error) {
	field := func(name string) string { return "records[" + strconv.Itoa(i) + "]." + name }
	if rec == nil {
		return 0, apierr.Invalid("records["+strconv.Itoa(i)+"]", "must not be null")
	}
	if n := len(rec.GetKey()); n > limits.MaxKeyBytes {
		return 0, apierr.TooLarge(field("key"), n, limits.MaxKeyBytes, "limits.max_key_bytes", "bytes")
	}
	if n := len(rec.GetValue()); n > limits.MaxValueBytes {
		return 0, apierr.TooLarge(field("value"), n, limits.MaxValueBytes, "limits.max_value_bytes", "bytes")
	}
	if rec.GetTombstone() && len(rec.GetValue()) > 0 {
		return 0, apierr.Invalid(field("value"), "must be empty for a tombstone (tombstone is true), got %d bytes", len(rec.GetValue()))
	}
	if n := len(rec.GetHeaders()); n > limits.MaxHeaders {
		return 0, apierr.TooLarge(field("headers"), n, limits.MaxHeaders, "limits.max_headers", "headers")
	}
	size := len(rec.GetKey()) + len(rec.GetValue())
	for j, h := range rec.GetHeaders() {
		if h.GetKey() == "" {
			return 0, apierr.Invalid(fmt.Sprintf("records[%d].headers[%d].key", i, j), "must not be empty")
		}
		if n := len(h.GetKey()) + len(h.GetValue()); n > limits.MaxHeaderBytes {
			return 0, apierr.TooLarge(fmt.Sprintf("records[%d].headers[%d]", i, j), n, limits.MaxHeaderBytes, "limits.max_header_bytes", "bytes of key and value")
		}
		size += len(h.GetKey()) + len(h.GetValue())
	}
	if ts := rec.GetTimestamp(); ts != nil {
		if err := ts.CheckValid(); err != nil || ts.AsTime().Before(time.Unix(0, 0)) {
			return 0, apierr.Invalid(field("timestamp"), "must be a valid time at or after 1970-01-01")
		}
	}
	return size, nil
}

// checkRecordPartition checks records[i].partition against the topic's partition count, known
// only once the topic is looked up.
func checkRecordPartition(i int, part, partitions int32, topic string) error {
	if part < 0 || part >= partitions {
		return apierr.Invalid(fmt.Sprintf("records[%d].partition", i), "must be between 0 and %d (topic %q has %d partitions), got %d", partitions-1, topic, partitions, part)
	}
	return nil
}

// validateTail checks a TailRequest's start and end positions and maps it to a tailRequest.
func validateTail(limits *LimitsConfig, req *streamv1.TailRequest) (tailRequest, error) {
	out := tailRequest{topic: req.GetTopic(), partitions: req.GetPartitions(), follow: req.GetFollow()}
	switch start := req.GetStart().(type) {
	case nil:
		return out, apierr.Invalid("start", "one of position, start_time or last_n is required")
	case *streamv1.TailRequest_Position:
		if p := start.Position; p != streamv1.StartPosition_START_POSITION_EARLIEST && p != streamv1.StartPosition_START_POSITION_LATEST {
			return out, apierr.Invalid("position", "must be START_POSITION_EARLIEST or START_POSITION_LATEST, got %s", p)
		}
		out.latest = start.Position == streamv1.StartPosition_START_POSITION_LATEST
	case *streamv1.TailRequest_StartTime:
		t, err := apierr.Time("start_time", start.StartTime)
		if err != nil {
			return out, err
		}
		out.startTime = t
	case *streamv1.TailRequest_LastN:
		if start.LastN < 1 || start.LastN > limits.MaxTailLastN {
			return out, apierr.OutOfRange("last_n", start.LastN, 1, limits.MaxTailLastN, "limits.max_tail_last_n", "records")
		}
		out.lastN = start.LastN
	}
	if et := req.GetEndTime(); et != nil {
		t, err := apierr.Time("end_time", et)
		if err != nil {
			return out, err
		}
		if !out.startTime.IsZero() && t.Before(out.startTime) {
			return out, apierr.Invalid("end_time", "must not be before start_time")
		}
		out.endTime = t
	}
	return out, nil
}

// tailPartitions checks the requested partitions; none means all of them.
func tailPartitions(requested []int32, count int32) ([]int32, error) {
	if len(requested) == 0 {
		out := make([]int32, count)
		for i := range out {
			out[i] = int32(i)
		}
		return out, nil
	}
	out := make([]int32, 0, len(requested))
	for i, part := range requested {
		if part < 0 || part >= count {
			return nil, apierr.Invalid(fmt.Sprintf("partitions[%d]", i), "must be between 0 and %d (the topic has %d partitions), got %d", count-1, count, part)
		}
		if !slices.Contains(out, part) {
			out = append(out, part)
		}
	}
	return out, nil
}

// subscriptionOf checks a Subscribe stream's first request against the limits in force, or
// answers UNAVAILABLE before Start and after Stop.
func (p *Plugin) subscriptionOf(first *streamv1.SubscribeRequest) (subscriptionRequest, error) {
	_, _, topics, err := p.clients()
	if err != nil {
		return subscriptionRequest{}, err
	}
	return validateSubscription(p.settings.Load().limits, p.backend, topics, first)
}

// validateSubscription checks a Subscribe stream's first request; topics resolves names (default
// topic, name rules, allow-list) without asking the brokers.
func validateSubscription(limits *LimitsConfig, backend *BackendConfig, topics *topics, first *streamv1.SubscribeRequest) (subscriptionRequest, error) {
	var out subscriptionRequest
	sub := first.GetSubscription()
	if sub == nil {
		return out, apierr.Invalid("subscription", "the first request must carry subscription")
	}
	if first.GetAck() != nil || first.GetNack() != nil {
		return out, apierr.Invalid("ack", "the first request must carry only subscription")
	}
	names := sub.GetTopics()
	if len(names) == 0 {
		names = []string{""} // the configured default topic, if any
	}
	if len(names) > limits.MaxSubscriptionTopics {
		return out, apierr.TooLarge("subscription.topics", len(names), limits.MaxSubscriptionTopics, "limits.max_subscription_topics", "topics")
	}
	seen := make(map[string]bool, len(names))
	for i, name := range names {
		field := fmt.Sprintf("subscription.topics[%d]", i)
		topic, err := topics.name(field, name)
		if err != nil {
			return out, err
		}
		if !seen[topic] {
			seen[topic] = true
			out.topics = append(out.topics, topic)
			out.fields = append(out.fields, field)
		}
	}
	out.group = sub.GetGroup()
	if out.group == "" {
		out.group = backend.ConsumerGroup
	}
	if out.group == "" {
		return out, apierr.Invalid("subscription.group", "required (no backend.consumer_group is configured)")
	}
	if len(out.group) > maxGroupLen {
		return out, apierr.TooLarge("subscription.group", len(out.group), maxGroupLen, "", "characters")
	}
	switch n := sub.GetMaxOutstandingMessages(); {
	case n == 0:
		out.maxMsgs = limits.DefaultOutstandingMessages
	case n < 0:
		return out, apierr.Invalid("subscription.max_outstanding_messages", "must not be negative (0 is the default), got %d", n)
	case int(n) > limits.MaxOutstandingMessages:
		return out, apierr.TooLarge("subscription.max_outstanding_messages", int(n), limits.MaxOutstandingMessages, "limits.max_outstanding_messages", "messages")
	default:
		out.maxMsgs = int(n)
	}
	switch n := sub.GetMaxOutstandingBytes(); {
	case n == 0:
		out.maxBytes = limits.DefaultOutstandingBytes
	case n < 0:
		return out, apierr.Invalid("subscription.max_outstanding_bytes", "must not be negative (0 is the default), got %d", n)
	case n > limits.MaxOutstandingBytes:
		return out, apierr.TooLarge("subscription.max_outstanding_bytes", n, limits.MaxOutstandingBytes, "limits.max_outstanding_bytes", "bytes")
	default:
		out.maxBytes = n
	}
	switch start := sub.GetStart(); start {
	case streamv1.StartPosition_START_POSITION_UNSPECIFIED:
		out.earliest = backend.AutoOffsetReset == OffsetResetEarliest
	case streamv1.StartPosition_START_POSITION_EARLIEST:
		out.earliest = true
	case streamv1.StartPosition_START_POSITION_LATEST:
	default:
		return out, apierr.Invalid("subscription.start", "unknown start position %d", start)
	}
	return out, nil
}

// validateSettle checks a Subscribe request after the first: an ack or a nack (or both), each
// with 1 to limits.max_ack_ids ids.
func validateSettle(limits *LimitsConfig, req *streamv1.SubscribeRequest) (settleRequest, error) {
	if req.GetSubscription() != nil {
		return settleRequest{}, apierr.Invalid("subscription", "only allowed on the first request")
	}
	if req.GetAck() == nil && req.GetNack() == nil {
		return settleRequest{}, apierr.Invalid("ack", "every request after the first must carry ack or nack")
	}
	for _, f := range []struct {
		name string
		ids  *streamv1.AckIds
	}{{"ack.ack_ids", req.GetAck()}, {"nack.ack_ids", req.GetNack()}} {
		if f.ids == nil {
			continue
		}
		if n := len(f.ids.GetAckIds()); n == 0 || n > limits.MaxAckIDs {
			return settleRequest{}, apierr.OutOfRange(f.name, n, 1, limits.MaxAckIDs, "limits.max_ack_ids", "ids")
		}
	}
	return settleRequest{acks: req.GetAck().GetAckIds(), nacks: req.GetNack().GetAckIds()}, nil
}
