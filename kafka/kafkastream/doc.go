// Package kafkastream implements the Stream abstraction (prism.stream.v1.StreamService) on Apache
// Kafka with franz-go.
//
// One shared idempotent producer (acks=all) serves Publish and PublishStream. Each Subscribe
// stream is its own consumer-group member (a franz-go client with auto-commit off), so the plugin
// keeps no state between streams: delivery state lives in the stream, committed offsets and
// delivery counts live in Kafka (offset-commit metadata). Each Tail is a groupless client that
// starts at offsets resolved with ListOffsets and never commits.
//
// Files: config.go (backend and limits sections), plugin.go (lifecycle, partitioner),
// server.go (the gRPC adapter: protobuf in and out), limits.go (request validation, mapping
// requests to the plugin's own types in messages.go), topics.go (default topic,
// allow-list, metadata cache, auto-creation), publish.go, tail.go, metrics.go. Subscribe is
// subscription.go (the stream's goroutines), ledger.go (delivery state and the at-least-once
// rule, with no Kafka client in it), group.go (rebalances, commits, fetched offsets),
// deadletter.go, commits.go (commit points and their metadata) and ackid.go.
package kafkastream
