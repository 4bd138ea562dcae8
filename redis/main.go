// Command redis-plugin serves prism.cache.v1.CacheService on Redis.
package main

import (
	"os"

	"github.com/prism-gateway/plugins/core"
	"github.com/prism-gateway/plugins/redis/rediscache"
)

func main() {
	os.Exit(core.Run(os.Args[1:], rediscache.New()))
}
