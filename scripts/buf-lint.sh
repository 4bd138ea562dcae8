#!/usr/bin/env bash
# Checks the .proto files in proto/: buf lint with the rules in proto/buf.yaml,
# and buf format (prints the diff; fix with `buf format -w proto`). Exits
# non-zero on any finding.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export GOWORK=off

buf() { go tool -modfile="$root/tools/go.mod" buf "$@"; }

status=0
buf lint proto || status=1
buf format --diff --exit-code proto || status=1
exit "$status"
