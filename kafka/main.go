// Command kafka-plugin serves prism.stream.v1.StreamService on Apache Kafka.
package main

import (
	"os"

	"github.com/prism-gateway/plugins/core"
	"github.com/prism-gateway/plugins/kafka/kafkastream"
)

func main() {
	os.Exit(core.Run(os.Args[1:], kafkastream.New()))
}
