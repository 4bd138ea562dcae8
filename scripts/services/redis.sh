# shellcheck shell=bash
# Redis for scripts/services.sh (sourced after lib.sh): a standalone server on 6379 and a
# 3-master Redis Cluster on 7001-7003, private redis-server processes with our ACL users.

REDIS_PORT=6379
REDIS_CLUSTER_PORTS=(7001 7002 7003)
REDIS_DIR=$STATE/redis

redis_cli() { redis-cli --no-auth-warning -h "$HOST" "$@"; }
redis_admin() {
  local port=$1
  shift
  redis_cli -p "$port" --user prism-admin --pass prism-admin "$@"
}

# redis_ok PORT: the prism ACL user can log in. (redis-cli goes on as the default user when
# AUTH fails, so PING alone would also pass on a server without our users: ask ACL WHOAMI.)
redis_ok() {
  [[ $(timeout 3 redis-cli --no-auth-warning -h "$HOST" -p "$1" --user prism --pass prism acl whoami 2>/dev/null) == prism ]]
}

redis_pidfile() { printf '%s\n' "$REDIS_DIR/$1/redis.pid"; }

# redis_write_conf PORT CLUSTER(0|1)
redis_write_conf() {
  local port=$1 cluster=$2 dir=$REDIS_DIR/$1
  install -d -m 755 "$dir"
  cp "$ASSETS/redis-users.acl" "$dir/users.acl"
  cat >"$dir/redis.conf" <<EOF
# Written by scripts/services.sh (regenerated on every start).
bind $HOST
port $port
protected-mode yes
daemonize yes
pidfile $dir/redis.pid
logfile $LOGS/redis-$port.log
dir $dir
aclfile $dir/users.acl
save ""
appendonly no
databases 16
EOF
  if ((cluster)); then
    cat >>"$dir/redis.conf" <<EOF
cluster-enabled yes
cluster-config-file nodes.conf
cluster-node-timeout 5000
EOF
  fi
}

# redis_start_instance PORT CLUSTER(0|1)
redis_start_instance() {
  local port=$1 cluster=$2 pidfile logf=$LOGS/redis-$1.log
  pidfile=$(redis_pidfile "$port")
  if pid_matches "$pidfile" redis-server; then
    # Ours but not answering with the expected ACL: restart it.
    kill_pidfile "$pidfile" redis-server "redis :$port" 10
  fi
  if port_open "$port" && [[ $port == "$REDIS_PORT" ]]; then
    disable_packaged_service redis-server "port $port is taken, by it presumably"
    wait_until 10 port_closed "$port" || true
  fi
  if port_open "$port"; then
    die "redis: port $port is in use by a process that does not accept user prism/prism; stop it (ss -ltnp 'sport = :$port') or set PRISM_SERVICES_SKIP=redis"
  fi
  redis_write_conf "$port" "$cluster"
  log "redis: starting :$port (log $logf)"
  if ! redis-server "$REDIS_DIR/$port/redis.conf" >>"$logf" 2>&1; then
    show_log "$logf"
    die "redis: redis-server :$port failed to start"
  fi
  if ! wait_until 15 redis_ok "$port"; then
    show_log "$logf"
    die "redis: :$port did not answer PING as user prism"
  fi
}

# redis_cluster_field PORT FIELD: a value from CLUSTER INFO.
redis_cluster_field() {
  redis_admin "$1" cluster info 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"
}

redis_cluster_ok() {
  local p
  for p in "${REDIS_CLUSTER_PORTS[@]}"; do
    [[ $(redis_cluster_field "$p" cluster_state) == ok ]] || return 1
    [[ $(redis_cluster_field "$p" cluster_known_nodes) == "${#REDIS_CLUSTER_PORTS[@]}" ]] || return 1
    [[ $(redis_cluster_field "$p" cluster_slots_assigned) == 16384 ]] || return 1
  done
}

# All nodes remember the full cluster (from nodes.conf): after a restart it heals by itself.
redis_cluster_was_made() {
  local p
  for p in "${REDIS_CLUSTER_PORTS[@]}"; do
    [[ $(redis_cluster_field "$p" cluster_known_nodes) == "${#REDIS_CLUSTER_PORTS[@]}" ]] || return 1
    [[ $(redis_cluster_field "$p" cluster_slots_assigned) == 16384 ]] || return 1
  done
}

redis_cluster_create() {
  local p addrs=() logf=$LOGS/redis-cluster-create.log
  for p in "${REDIS_CLUSTER_PORTS[@]}"; do addrs+=("$HOST:$p"); done
  log "redis: creating cluster ${addrs[*]}"
  if ! redis-cli --no-auth-warning --user prism-admin --pass prism-admin \
    --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >"$logf" 2>&1; then
    show_log "$logf"
    die "redis: redis-cli --cluster create failed"
  fi
  if ! wait_until 30 redis_cluster_ok; then
    show_log "$logf"
    redis_admin "${REDIS_CLUSTER_PORTS[0]}" cluster info >&2 || true
    die "redis: cluster did not reach cluster_state:ok"
  fi
}

redis_start() {
  if skipped redis; then
    log "redis: skipped (PRISM_SERVICES_SKIP)"
    return 0
  fi
  local p all_up=1
  if command -v redis-cli >/dev/null 2>&1; then
    for p in "$REDIS_PORT" "${REDIS_CLUSTER_PORTS[@]}"; do redis_ok "$p" || all_up=0; done
    if ((all_up)) && redis_cluster_ok; then
      log "redis: up on $HOST:$REDIS_PORT, cluster up on ports ${REDIS_CLUSTER_PORTS[*]}"
      return 0
    fi
  fi
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    # The packaged service (kept from starting by apt_install) is only stopped and disabled
    # when it holds our port (redis_start_instance).
    apt_install redis-server redis-tools
  fi
  install -d -m 755 "$REDIS_DIR"

  redis_ok "$REDIS_PORT" || redis_start_instance "$REDIS_PORT" 0

  # Cluster nodes: (re)start what is down, then create the cluster unless it is healthy.
  local started=0
  for p in "${REDIS_CLUSTER_PORTS[@]}"; do
    if ! redis_ok "$p"; then
      redis_start_instance "$p" 1
      started=1
    fi
  done
  if ! redis_cluster_ok && ((started)) && redis_cluster_was_made; then
    log "redis: waiting for the restarted cluster nodes to rejoin"
    wait_until 20 redis_cluster_ok || true
  fi
  if ! redis_cluster_ok; then
    local fresh=1
    for p in "${REDIS_CLUSTER_PORTS[@]}"; do
      [[ $(redis_cluster_field "$p" cluster_slots_assigned) == 0 &&
        $(redis_cluster_field "$p" cluster_known_nodes) == 1 ]] || fresh=0
    done
    if ((fresh == 0)); then
      log "redis: cluster is broken or half-made, recreating it from scratch"
      for p in "${REDIS_CLUSTER_PORTS[@]}"; do
        kill_pidfile "$(redis_pidfile "$p")" redis-server "redis :$p" 10
        rm -rf "${REDIS_DIR:?}/$p"
      done
      for p in "${REDIS_CLUSTER_PORTS[@]}"; do redis_start_instance "$p" 1; done
    fi
    redis_cluster_create
  fi
  log "redis: up on $HOST:$REDIS_PORT, cluster up on ports ${REDIS_CLUSTER_PORTS[*]}"
}

redis_stop() {
  local p
  for p in "$REDIS_PORT" "${REDIS_CLUSTER_PORTS[@]}"; do
    kill_pidfile "$(redis_pidfile "$p")" redis-server "redis :$p" 15
  done
}

# redis_status: one status line per server and one for the cluster; fails when any is down.
redis_status() {
  local rc=0 p
  if skipped redis; then
    printf '%-14s skipped\n' redis
    return 0
  fi
  for p in "$REDIS_PORT" "${REDIS_CLUSTER_PORTS[@]}"; do
    if command -v redis-cli >/dev/null 2>&1 && redis_ok "$p"; then
      printf '%-14s up    %s:%s\n' "redis:$p" "$HOST" "$p"
    else
      printf '%-14s DOWN  (%s)\n' "redis:$p" "$LOGS/redis-$p.log"
      rc=1
    fi
  done
  if command -v redis-cli >/dev/null 2>&1 && redis_cluster_ok; then
    printf '%-14s ok    cluster_state:ok, %s masters\n' redis-cluster "${#REDIS_CLUSTER_PORTS[@]}"
  else
    printf '%-14s DOWN  (cluster_state not ok)\n' redis-cluster
    rc=1
  fi
  return $rc
}

redis_endpoints() {
  skipped redis || printf '  Redis       %s:%s  user prism/prism (keys prism:*), admin prism-admin/prism-admin; default user off\n' "$HOST" "$REDIS_PORT"
  skipped redis || printf '  Redis Cluster  %s  (same users)\n' "$(printf "$HOST:%s " "${REDIS_CLUSTER_PORTS[@]}")"
}
