package postgreskv

import (
	keyvaluev1 "github.com/prism-gateway/plugins/gen/prism/keyvalue/v1"
)

// server adapts Plugin to prism.keyvalue.v1.KeyValueService. Until the KeyValue operations land,
// every method answers UNIMPLEMENTED.
type server struct {
	keyvaluev1.UnimplementedKeyValueServiceServer
	plugin *Plugin
}
