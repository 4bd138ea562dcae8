// Package kafkastream implements the Stream abstraction (prism.stream.v1.StreamService) on Apache
// Kafka with franz-go.
package kafkastream
