package rediscache

import (
	cachev1 "github.com/prism-gateway/plugins/gen/prism/cache/v1"
)

// server adapts Plugin to prism.cache.v1.CacheService. Until the Cache operations land, every
// method answers UNIMPLEMENTED.
type server struct {
	cachev1.UnimplementedCacheServiceServer
	plugin *Plugin
}
