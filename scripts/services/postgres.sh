# shellcheck shell=bash
# PostgreSQL for scripts/services.sh (sourced after lib.sh): a private cluster in
# .services/postgres run with Debian's binaries as the postgres OS user, role and database prism.

PG_PORT=5432
PG_URL="postgres://prism:prism@$HOST:$PG_PORT/prism"
PG_DIR=$STATE/postgres
PG_DATA=$PG_DIR/data

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
      host_change "postgres: chmod o+x $i (so the postgres user can reach its data dir)"
      chmod o+x "$i"
    fi
  done
}

# Stop a Debian cluster that runs on our port, and keep it from taking the port again at boot.
# A Debian cluster that is down is left alone.
pg_stop_debian_clusters() {
  command -v pg_lsclusters >/dev/null 2>&1 || return 0
  local ver name port status conf
  while read -r ver name port status _; do
    [[ $port == "$PG_PORT" && $status == online* ]] || continue
    host_change "postgres: stopping Debian's packaged cluster $ver/$name (it holds port $PG_PORT)"
    pg_ctlcluster "$ver" "$name" stop -m fast >/dev/null 2>&1 || pg_ctlcluster "$ver" "$name" stop -m immediate >/dev/null 2>&1 || true
    conf=/etc/postgresql/$ver/$name/start.conf
    if [[ -f $conf ]] && ! grep -qx manual "$conf"; then
      host_change "postgres: writing 'manual' to $conf (cluster $ver/$name no longer starts at boot)"
      echo manual >"$conf"
    fi
    if have_systemd && systemctl is-enabled --quiet "postgresql@$ver-$name" 2>/dev/null; then
      host_change "postgres: systemctl disable postgresql@$ver-$name"
      systemctl disable --now "postgresql@$ver-$name" >/dev/null 2>&1 || true
    fi
  done < <(pg_lsclusters -h 2>/dev/null || true)
}

pg_init() {
  local bin=$1 sockdir
  sockdir=$(pg_sockdir)
  log "postgres: initdb $PG_DATA"
  if [[ $sockdir == /tmp ]]; then
    host_change "postgres: the socket goes to /tmp (the checkout path is too long for a unix socket path)"
  fi
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

# pg_status: one status line; fails when PostgreSQL is down.
pg_status() {
  if skipped postgres; then
    printf '%-14s skipped\n' postgres
  elif pg_ok; then
    printf '%-14s up    %s\n' postgres "$PG_URL"
  else
    printf '%-14s DOWN  (%s)\n' postgres "$LOGS/postgres.log"
    return 1
  fi
}

pg_endpoints() {
  skipped postgres || printf '  PostgreSQL  %s  (role prism: CREATEDB; superuser: runuser -u postgres -- psql -h %s)\n' "$PG_URL" "$(pg_sockdir)"
}
