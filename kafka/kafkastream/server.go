package kafkastream

import (
	"context"

	"google.golang.org/grpc/metadata"

	streamv1 "github.com/prism-gateway/plugins/gen/prism/stream/v1"
)

// server adapts Plugin to prism.stream.v1.StreamService; errors are mapped to gRPC codes by
// core's edge interceptor.
type server struct {
	streamv1.UnimplementedStreamServiceServer
	plugin *Plugin
}

// Publish implements streamv1.StreamServiceServer.
func (s *server) Publish(ctx context.Context, req *streamv1.PublishRequest) (*streamv1.PublishResponse, error) {
	return s.plugin.publish(ctx, req)
}

// PublishStream implements streamv1.StreamServiceServer.
func (s *server) PublishStream(stream streamv1.StreamService_PublishStreamServer) error {
	return s.plugin.publishStream(stream.Context(), stream.Recv, stream.Send)
}

// Subscribe implements streamv1.StreamServiceServer.
func (s *server) Subscribe(stream streamv1.StreamService_SubscribeServer) error {
	return s.plugin.subscribe(stream.Context(), stream.Recv, stream.Send)
}

// Tail implements streamv1.StreamServiceServer.
func (s *server) Tail(req *streamv1.TailRequest, stream streamv1.StreamService_TailServer) error {
	started := func() error { return stream.SendHeader(metadata.MD{}) }
	return s.plugin.tail(stream.Context(), req, started, stream.Send)
}
