// Package rediscache implements the Cache abstraction (prism.cache.v1.CacheService) on Redis and
// Redis Cluster with go-redis.
package rediscache
