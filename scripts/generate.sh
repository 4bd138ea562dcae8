#!/usr/bin/env bash
# Regenerates the Go code in gen/ from the .proto files in proto/. This is the
# one generation entry point; `make generate` calls it.
#
#   bash scripts/generate.sh        replace gen/prism/ with fresh output
#   bash scripts/generate.sh DIR    write to DIR/gen/ instead, leaving gen/ alone
#                                   (gen/gen_test.go uses this to find stale code)
#
# buf comes from tools/go.mod and the protoc plugins from tools/protogen/go.mod,
# run with `go tool`, so only the go command is needed. The first run compiles
# buf (a minute or two); later runs reuse Go's build cache.
set -euo pipefail

if [[ $# -gt 1 ]]; then
  echo "usage: $0 [OUTPUT_DIR]" >&2
  exit 2
fi
out=""
if [[ $# -eq 1 ]]; then
  mkdir -p "$1"
  out="$(cd "$1" && pwd)"
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# A go.work file must not change which tool versions run.
export GOWORK=off

generate() {
  go tool -modfile="$root/tools/go.mod" buf generate proto \
    --template proto/buf.gen.yaml --output "$1"
}

if [[ -n $out ]]; then
  generate "$out"
  exit 0
fi

# Generate beside gen/ first, so a failed run leaves gen/ untouched and files of
# deleted .proto sources do not linger.
mkdir -p .cache
tmp="$(mktemp -d "$root/.cache/generate.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
generate "$tmp"
mkdir -p gen
rm -rf gen/prism
mv "$tmp/gen/prism" gen/prism
