// Package gen holds the Go code generated from the .proto files in proto/, one
// package per API under gen/prism/<api>/v1. Nothing here is edited by hand:
// change the .proto files and run `make generate` (scripts/generate.sh). The
// test in this package fails when the committed code is stale or the .proto
// files do not pass buf lint.
package gen
