// Package postgreskv implements the KeyValue abstraction (prism.keyvalue.v1.KeyValueService) on
// PostgreSQL through pgx's native connection pool.
package postgreskv
