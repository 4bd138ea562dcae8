#!/usr/bin/env bash
# Regenerates the Go code in gen/ from the .proto files in proto/. This is the
# one generation entry point; `make generate` calls it.
#
#   bash scripts/generate.sh        replace gen/prism/ with fresh output and rewrite
#                                   gen/inputs.sha256 (what gen/gen_test.go checks)
#   bash scripts/generate.sh --manifest   only rewrite gen/inputs.sha256
#   bash scripts/generate.sh DIR    write to DIR/gen/ instead, leaving gen/ alone
#                                   (gen/regen_test.go uses this to find stale code)
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
if [[ $# -eq 1 && $1 != --manifest ]]; then
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

# write_manifest: gen/inputs.sha256 lists the hash of every generator input (the .proto and buf
# files, this script, the protoc plugins' module files), the buf version, and the hash of every
# generated file. gen/gen_test.go recomputes it in milliseconds; the full regeneration check
# runs in make lint (go test -tags regen ./gen).
write_manifest() {
  {
    echo "# Inputs and outputs of make generate (scripts/generate.sh writes this; gen/gen_test.go checks it)."
    {
      find proto -type f \( -name '*.proto' -o -name '*.yaml' \)
      find gen/prism -type f
      printf '%s\n' scripts/generate.sh tools/protogen/go.mod tools/protogen/go.sum
    } | LC_ALL=C sort | while read -r f; do sha256sum "$f"; done
    printf 'version  %s\n' "$(grep -oE 'github.com/bufbuild/buf v[^[:space:]]+' tools/go.mod | head -n1)"
  } >gen/inputs.sha256
}

if [[ ${1:-} == --manifest ]]; then
  write_manifest
  exit 0
fi

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
write_manifest
