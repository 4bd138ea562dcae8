// Package faulttest breaks real backends while the plugins serve calls, and checks what the
// plugins promise under faults: no acknowledged write lost, no compare-and-set applied twice,
// deadlines kept while a backend hangs, health that says so in time, a drain that finishes the
// calls it admitted, and a bounded check rate during a long outage.
//
// It starts private backend instances (a PostgreSQL cluster and a KRaft Kafka broker of its own,
// never the shared ones from `make services`) and kills or restarts them, and it puts the
// project's fault proxy (internal/testsvc) between a plugin and a shared backend to freeze or cut
// the link. Each test reports its figures (calls, lost, duplicates, recovery seconds) with
// t.Logf and into the summary that `make test` prints (PRISM_FAULTTEST_SUMMARY).
package faulttest
