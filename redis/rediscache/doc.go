// Package rediscache implements the Cache abstraction (prism.cache.v1.CacheService) on Redis and
// Redis Cluster with go-redis.
//
// Each cache key is the Redis string key <key_prefix><namespace>:<key>, its expiry Redis's own.
// server.go validates requests against the limits (limits.go) and maps them onto keys; store.go
// turns each call into as few atomic Redis commands as possible (one MULTI/EXEC for Get, one SET
// for Set) and, on a cluster, splits multi-key calls by hash slot (slot.go). plugin.go holds the
// lifecycle, live reconfiguration and the embedded --dev backend (dev.go); metrics.go the
// hit/miss, latency and pool metrics.
package rediscache
