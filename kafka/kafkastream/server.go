package kafkastream

import (
	"context"
	"errors"
	"io"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/prism-gateway/plugins/core/apierr"
	streamv1 "github.com/prism-gateway/plugins/gen/prism/stream/v1"
)

// server adapts Plugin to prism.stream.v1.StreamService: it checks each request against the
// limits in force (limits.go), which maps it to the plugin's own types (messages.go), calls the
// plugin, and maps the results back to protobuf. Errors are mapped to gRPC codes by core's edge
// interceptor.
type server struct {
	streamv1.UnimplementedStreamServiceServer
	plugin *Plugin
}

// Publish implements streamv1.StreamServiceServer.
func (s *server) Publish(ctx context.Context, req *streamv1.PublishRequest) (*streamv1.PublishResponse, error) {
	r, err := s.plugin.publishRequestOf(req)
	if err != nil {
		return nil, err
	}
	acks, err := s.plugin.publish(ctx, r)
	if err != nil {
		return nil, err
	}
	return toPublishResponse(publishResult{sequence: r.sequence, acks: acks}), nil
}

// PublishStream implements streamv1.StreamServiceServer.
func (s *server) PublishStream(stream streamv1.StreamService_PublishStreamServer) error {
	recv := func() (publishRequest, error) {
		req, err := stream.Recv()
		if err != nil {
			return publishRequest{}, err
		}
		return s.plugin.publishRequestOf(req)
	}
	send := func(r publishResult) error { return stream.Send(toPublishResponse(r)) }
	return s.plugin.publishStream(stream.Context(), recv, send)
}

// Subscribe implements streamv1.StreamServiceServer.
func (s *server) Subscribe(stream streamv1.StreamService_SubscribeServer) error {
	first, err := stream.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return apierr.Invalid("subscription", "the stream ended before the first request")
		}
		return err
	}
	sub, err := s.plugin.subscriptionOf(first)
	if err != nil {
		return err
	}
	recv := func() (settleRequest, error) {
		req, err := stream.Recv()
		if err != nil {
			return settleRequest{}, err
		}
		return validateSettle(s.plugin.settings.Load().limits, req)
	}
	send := func(r subscribeResponse) error {
		return stream.Send(&streamv1.SubscribeResponse{Messages: toMessages(r.messages), IgnoredAckIds: r.ignored})
	}
	return s.plugin.subscribe(stream.Context(), sub, recv, send)
}

// Tail implements streamv1.StreamServiceServer.
func (s *server) Tail(req *streamv1.TailRequest, stream streamv1.StreamService_TailServer) error {
	r, err := validateTail(s.plugin.settings.Load().limits, req)
	if err != nil {
		return err
	}
	started := func() error { return stream.SendHeader(metadata.MD{}) }
	send := func(msgs []message) error { return stream.Send(&streamv1.TailResponse{Messages: toMessages(msgs)}) }
	return s.plugin.tail(stream.Context(), r, started, send)
}

// toPublishResponse builds the response's acks from one array.
func toPublishResponse(r publishResult) *streamv1.PublishResponse {
	resp := &streamv1.PublishResponse{Sequence: r.sequence, Acks: make([]*streamv1.RecordAck, len(r.acks))}
	backing := make([]streamv1.RecordAck, len(r.acks))
	for i, a := range r.acks {
		backing[i].Partition, backing[i].Offset = a.partition, a.offset
		resp.Acks[i] = &backing[i]
	}
	return resp
}

// toMessages converts one response's messages, allocating them together.
func toMessages(msgs []message) []*streamv1.Message {
	if len(msgs) == 0 {
		return nil
	}
	out := make([]*streamv1.Message, len(msgs))
	var slab messageSlab
	for i, m := range msgs {
		pm := slab.message(m.rec, len(msgs)-i)
		pm.AckId, pm.DeliveryAttempt = m.ackID, m.attempt
		out[i] = pm
	}
	return out
}

// messageSlab allocates the protobuf messages of one response together, which keeps the
// allocator out of the per-message cost of Subscribe and Tail.
type messageSlab struct {
	msgs []streamv1.Message
	ts   []timestamppb.Timestamp
}

// message converts r (ack_id and delivery_attempt are Subscribe's to set); want is how many more
// messages the caller expects to need.
func (a *messageSlab) message(r *kgo.Record, want int) *streamv1.Message {
	if len(a.msgs) == 0 {
		n := min(max(want, 1), 1024)
		a.msgs = make([]streamv1.Message, n)
		a.ts = make([]timestamppb.Timestamp, n)
	}
	m, ts := &a.msgs[0], &a.ts[0]
	a.msgs, a.ts = a.msgs[1:], a.ts[1:]
	ts.Seconds, ts.Nanos = r.Timestamp.Unix(), int32(r.Timestamp.Nanosecond())
	m.Topic, m.Partition, m.Offset, m.Key, m.Value, m.Timestamp = r.Topic, r.Partition, r.Offset, r.Key, r.Value, ts
	m.Tombstone = r.Value == nil
	if len(r.Headers) > 0 {
		m.Headers = make([]*streamv1.Header, len(r.Headers))
		hs := make([]streamv1.Header, len(r.Headers))
		for i, h := range r.Headers {
			hs[i].Key, hs[i].Value = h.Key, h.Value
			m.Headers[i] = &hs[i]
		}
	}
	return m
}

var _ streamv1.StreamServiceServer = (*server)(nil)
