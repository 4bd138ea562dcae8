package kafkastream

import (
	streamv1 "github.com/prism-gateway/plugins/gen/prism/stream/v1"
)

// server adapts Plugin to prism.stream.v1.StreamService. Until the Stream operations land, every
// method answers UNIMPLEMENTED.
type server struct {
	streamv1.UnimplementedStreamServiceServer
	plugin *Plugin
}
