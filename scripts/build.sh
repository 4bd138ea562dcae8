#!/usr/bin/env bash
# Build static plugin binaries with a progress line while Go compiles (make binaries, make run,
# make run-<plugin>, make image-binaries). A first build on a cold cache compiles ~300 packages
# per plugin (SQLite alone is ~5 of the minutes on 2 cores); later builds only relink.
#
#   bash scripts/build.sh OUT_DIR PLUGIN...
# Environment: GO (default go), GO_TAGS (build tags, space or comma separated), LDFLAGS.
set -uo pipefail

out=${1:?usage: scripts/build.sh OUT_DIR PLUGIN...}
shift
go=${GO:-go}
tags=${GO_TAGS:-}
tags=${tags// /,}
mkdir -p "$out"

for p in "$@"; do
  total=$("$go" list -tags "$tags" -deps "./$p" 2>/dev/null | wc -l)
  start=$SECONDS
  printf 'build %s/%s-plugin%s\n' "$out" "$p" "${tags:+ (tags $tags)}" >&2
  # go build -v names each package as it compiles; cached packages are not named.
  CGO_ENABLED=0 "$go" build -v -trimpath -tags "$tags" -ldflags "${LDFLAGS:-}" -o "$out/$p-plugin" "./$p" 2>&1 |
    awk -v total="$total" -v plugin="$p" '
      /^[a-zA-Z0-9._~\/-]+$/ {
        n++
        if (n == 1 || n % 20 == 0) printf "  %s: compiled %d packages (of %d it needs; cached ones are skipped), now %s\n", plugin, n, total, $0 > "/dev/stderr"
        next
      }
      { print > "/dev/stderr" }'
  status=${PIPESTATUS[0]}
  if ((status != 0)); then
    printf 'build %s-plugin failed\n' "$p" >&2
    exit "$status"
  fi
  elapsed=$((SECONDS - start))
  ((elapsed < 5)) || printf '  %s: built in %ds\n' "$p" "$elapsed" >&2
done
