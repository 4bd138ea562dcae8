# shellcheck shell=bash
# Shared settings and helpers of scripts/services.sh (sourced by it before the service
# files scripts/services/{postgres,redis,kafka,openbao}.sh; not run on its own).
#
# Host changes — anything outside the checkout: apt installs, parent directory modes,
# Debian's packaged services, download caches — go through host_change, so each is one
# "HOST CHANGE:" line on stderr.

# This directory holds the service files and their assets (ACL file, pom, log4j2 config, policy).
ASSETS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$ASSETS/../.." && pwd)
STATE=$REPO/.services
LOGS=$STATE/logs

HOST=127.0.0.1

export DEBIAN_FRONTEND=noninteractive
export PGCONNECT_TIMEOUT=3

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

# host_change TEXT: say loudly (one line, on stderr) that the script changes the machine
# outside the checkout.
host_change() { printf '[services] HOST CHANGE: %s\n' "$*" >&2; }

POLICY_RC_D=/usr/sbin/policy-rc.d
POLICY_RC_D_OURS=0

# remove_policy_rc_d: delete the policy-rc.d apt_install wrote (never one that was there before).
remove_policy_rc_d() {
  if ((POLICY_RC_D_OURS)); then
    rm -f "$POLICY_RC_D"
    POLICY_RC_D_OURS=0
  fi
}

APT_UPDATED=0
# apt_install PKG...: install Debian packages without letting their daemons auto-start.
apt_install() {
  [[ $(id -u) -eq 0 ]] || die "installing $* needs root (apt-get); install it or run as root"
  if [[ ! -e $POLICY_RC_D ]]; then
    # Keep packaged daemons (postgresql@15-main, redis-server) from starting on install. The
    # traps take the file away again when apt is interrupted (Ctrl-C, kill) or the script dies;
    # a signal ends the script once the running apt-get has returned.
    trap remove_policy_rc_d EXIT
    trap 'exit 129' HUP
    trap 'exit 130' INT
    trap 'exit 143' TERM
    POLICY_RC_D_OURS=1
    host_change "writing $POLICY_RC_D (exit 101) so that apt starts no packaged daemon; removed when apt is done"
    printf '#!/bin/sh\nexit 101\n' >"$POLICY_RC_D"
    chmod 755 "$POLICY_RC_D"
  fi
  local rc=0
  if ((APT_UPDATED == 0)); then
    log "apt-get update"
    apt-get update -qq >"$LOGS/apt.log" 2>&1 || rc=$?
    APT_UPDATED=1
  fi
  if ((rc == 0)); then
    host_change "apt-get install $* (log $LOGS/apt.log)"
    apt-get install -y -qq --no-install-recommends "$@" >>"$LOGS/apt.log" 2>&1 || rc=$?
  fi
  if ((POLICY_RC_D_OURS)); then
    remove_policy_rc_d
    trap - EXIT HUP INT TERM
  fi
  if ((rc != 0)); then
    show_log "$LOGS/apt.log"
    die "apt-get failed for: $*"
  fi
}

have_systemd() { [[ -d /run/systemd/system ]]; }

# disable_packaged_service NAME WHY: stop a Debian-packaged daemon that is in our way and keep
# it from starting at boot (where it would take the port again).
disable_packaged_service() {
  local svc=$1 why=$2
  host_change "stopping Debian's packaged $svc service and disabling it at boot ($why)"
  if have_systemd; then
    systemctl disable --now "$svc" >/dev/null 2>&1 || true
  elif [[ -x /etc/init.d/$svc ]]; then
    /etc/init.d/"$svc" stop >/dev/null 2>&1 || true
  fi
  if command -v update-rc.d >/dev/null 2>&1 && [[ -e /etc/init.d/$svc ]]; then
    update-rc.d "$svc" disable >/dev/null 2>&1 || true
  fi
}
