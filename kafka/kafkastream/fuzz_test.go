package kafkastream

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/prism-gateway/plugins/core/apierr"
	streamv1 "github.com/prism-gateway/plugins/gen/prism/stream/v1"
)

// FuzzValidateRequests decodes arbitrary bytes as a Publish or Tail request, as the gRPC layer
// would, and validates it with the default limits: accepted, or INVALID_ARGUMENT, never a panic;
// an accepted record is within every limit, and the batch size estimate bounds its bytes.
func FuzzValidateRequests(f *testing.F) {
	seed := func(kind byte, m proto.Message) {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(kind, b)
	}
	seed(0, &streamv1.PublishRequest{Topic: "orders", Records: []*streamv1.Record{
		{Key: []byte("k"), Value: []byte("v"), Headers: []*streamv1.Header{{Key: "h", Value: []byte("x")}}, Timestamp: timestamppb.Now()},
		{Tombstone: true},
	}})
	seed(0, &streamv1.PublishRequest{Records: []*streamv1.Record{{Value: []byte("x"), Tombstone: true}, {Headers: []*streamv1.Header{{}}}}})
	seed(0, &streamv1.PublishRequest{Records: []*streamv1.Record{{Timestamp: &timestamppb.Timestamp{Seconds: -5}}}})
	seed(1, &streamv1.TailRequest{Topic: "t", Start: &streamv1.TailRequest_LastN{LastN: 10}})
	seed(1, &streamv1.TailRequest{Topic: "t", Start: &streamv1.TailRequest_StartTime{StartTime: timestamppb.Now()}, EndTime: &timestamppb.Timestamp{Seconds: 1}})
	seed(1, &streamv1.TailRequest{Topic: "t", Start: &streamv1.TailRequest_Position{Position: 7}})
	limits := defaultLimits()
	f.Fuzz(func(t *testing.T, kind byte, raw []byte) {
		check := func(err error) {
			t.Helper()
			if err != nil && apierr.Code(err) != codes.InvalidArgument {
				t.Fatalf("rejected with %s, want InvalidArgument: %v", apierr.Code(err), err)
			}
		}
		if kind%2 == 0 {
			var req streamv1.PublishRequest
			if proto.Unmarshal(raw, &req) != nil {
				return
			}
			for i, rec := range req.GetRecords() {
				size, err := validateRecord(limits, i, rec)
				check(err)
				if err != nil {
					continue
				}
				if len(rec.GetValue()) > limits.MaxValueBytes || len(rec.GetKey()) > limits.MaxKeyBytes || size < 0 {
					t.Fatalf("accepted record %d outside the limits", i)
				}
				if rec.GetTombstone() && len(rec.GetValue()) > 0 {
					t.Fatalf("accepted a tombstone with a value")
				}
				if recordBatchBytes(rec) < size {
					t.Fatalf("record %d: the batch estimate %d is below its %d bytes of payload", i, recordBatchBytes(rec), size)
				}
			}
			return
		}
		var req streamv1.TailRequest
		if proto.Unmarshal(raw, &req) != nil {
			return
		}
		_, err := validateTail(limits, &req)
		check(err)
		if err := validTopicName(req.GetTopic()); err == nil && (req.GetTopic() == "" || len(req.GetTopic()) > maxTopicNameLen) {
			t.Fatalf("topic %q accepted", req.GetTopic())
		}
	})
}

// FuzzAckID parses arbitrary ack ids: anything that parses encodes back to the same string, and
// every id the plugin mints parses to itself.
func FuzzAckID(f *testing.F) {
	f.Add("0.1.80iiu2.0.1", 0, int32(1), uint32(0x7fffffff), int64(0), int32(1))
	f.Add("", 3, int32(0), uint32(0), int64(1<<40), int32(9))
	f.Add("1.2.3.4", 1<<20, int32(1<<31-1), uint32(1<<32-1), int64(1<<62), int32(1<<31-1))
	f.Add("-1.0.0.0.0", 0, int32(0), uint32(0), int64(0), int32(0))
	f.Add("zzzzzzzzzzzzz.0.0.0.0", 0, int32(0), uint32(0), int64(0), int32(0))
	f.Fuzz(func(t *testing.T, s string, topic int, partition int32, epoch uint32, offset int64, attempt int32) {
		if id, ok := parseAckID(s); ok {
			if back, ok := parseAckID(id.String()); !ok || back != id {
				t.Fatalf("%q parsed to %+v, which does not round-trip", s, id)
			}
		}
		if topic < 0 || topic > 1<<20 || partition < 0 || offset < 0 || attempt < 0 {
			return
		}
		id := ackID{topic: topic, partition: partition, epoch: epoch, offset: offset, attempt: attempt}
		if back, ok := parseAckID(id.String()); !ok || back != id {
			t.Fatalf("minted %+v as %q, parsed back as %+v, %v", id, id.String(), back, ok)
		}
	})
}
