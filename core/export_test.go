package core

import "google.golang.org/grpc/encoding"

// NewServerCodec is the codec New gives the gRPC server, for benchmarks in core_test.
func NewServerCodec() encoding.CodecV2 { return newRequestCodec() }
