// Package postgreskv implements the KeyValue abstraction (prism.keyvalue.v1.KeyValueService) on
// PostgreSQL through pgx's native connection pool.
//
// Items live in one table keyed by (namespace, id, key); every write is a single pipelined
// batch that PostgreSQL runs as one transaction, serialised per record by a transaction
// advisory lock so preconditions (version, absent) are exact. Versions come from one sequence,
// idempotency tokens and their first results from a second table, and page tokens are
// HMAC-signed keyset positions. The schema is migrated the first time the database answers,
// under an advisory lock, so replicas can start together.
//
// In dev mode (--dev, EnableDevMode) the same adapter, validation, page tokens and purge run on
// an embedded SQLite database (modernc.org/sqlite, pure Go) in one file under the dev data
// directory: both stores (Store, SQLiteStore) implement kvStore and share the engine-neutral
// logic in engine.go. See postgres/README.md.
package postgreskv
