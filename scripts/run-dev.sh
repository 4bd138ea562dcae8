#!/usr/bin/env bash
# `make run`: all three plugins in dev mode (embedded backends, nothing else needed) on their
# usual ports, in the foreground. Ctrl-C (or SIGTERM) drains and stops all of them; if one exits
# on its own, the others are stopped too.
#
# Environment: BIN_DIR (default bin), PRISM_DEV_DIR (default .prism-dev; each plugin keeps its
# data in $PRISM_DEV_DIR/<plugin>), and any PRISM_* config variable.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin_dir="${BIN_DIR:-$root/bin}"
dev_dir="${PRISM_DEV_DIR:-$root/.prism-dev}"
plugins=(postgres kafka redis)

for p in "${plugins[@]}"; do
  if [[ ! -x "$bin_dir/$p-plugin" ]]; then
    echo "run-dev: $bin_dir/$p-plugin is missing; run make binaries" >&2
    exit 1
  fi
done

pids=()
stop_all() {
  trap - INT TERM
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  local status=0
  for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
  return "$status"
}
trap 'stop_all; exit $?' INT TERM

for p in "${plugins[@]}"; do
  mkdir -p "$dev_dir/$p"
  PRISM_DEV_DATA_DIR="$dev_dir/$p" "$bin_dir/$p-plugin" --dev &
  pids+=($!)
done
echo "run-dev: postgres (KeyValue) on :9090, kafka (Stream) on :9091, redis (Cache) on :9092; metrics on :9190-9192; data in $dev_dir; Ctrl-C stops" >&2

# Any plugin exiting (e.g. a port already in use) takes the others down with it.
wait -n
first=$?
stop_all
exit "$first"
