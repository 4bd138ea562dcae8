#!/usr/bin/env bash
# Install (from Debian packages) what the offline container images need: Podman to build and
# run them, runc as its runtime (crun fails on this kind of machine: setrlimit and hybrid
# cgroups), and busybox-static for the debug images. Nothing is pulled from a registry.
#
#   bash scripts/podman.sh [install]   install what is missing (idempotent), print versions
#   bash scripts/podman.sh status      print what is installed; exit 1 if something is missing
#
# Podman reads scripts/containers.conf when CONTAINERS_CONF points at it (the Makefile and the
# image test do that): runc, cgroupfs, explicit ulimits. See scripts/README.md.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
LOGS=$REPO/.services/logs

export DEBIAN_FRONTEND=noninteractive

log() { printf '[podman] %s\n' "$*"; }
die() {
  printf '[podman] ERROR: %s\n' "$*" >&2
  exit 1
}

# The commands each package provides; a package is installed when its command is missing.
declare -A PROVIDES=([podman]=podman [runc]=runc [busybox-static]=/bin/busybox)

missing_packages() {
  local pkg
  for pkg in podman runc busybox-static; do
    command -v "${PROVIDES[$pkg]}" >/dev/null 2>&1 || printf '%s\n' "$pkg"
  done
}

# apt_install PKG...: apt-get update once, then install; the log goes to .services/logs/apt-podman.log.
apt_install() {
  [[ $(id -u) -eq 0 ]] || die "installing $* needs root (apt-get); install them or run as root"
  command -v apt-get >/dev/null || die "no apt-get: install $* with your package manager"
  install -d -m 755 "$LOGS"
  local logfile=$LOGS/apt-podman.log rc=0
  log "apt-get update"
  # Another apt run (make services, a peer) may hold the lock: wait for it rather than fail.
  apt-get -o DPkg::Lock::Timeout=300 update -qq >"$logfile" 2>&1 || rc=$?
  if ((rc == 0)); then
    log "apt-get install $*"
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "$@" >>"$logfile" 2>&1 || rc=$?
  fi
  if ((rc != 0)); then
    tail -n 40 "$logfile" >&2 || true
    die "apt-get failed for: $* (log: $logfile)"
  fi
}

versions() {
  printf '%-16s %s\n' podman "$(podman --version 2>/dev/null || echo missing)"
  printf '%-16s %s\n' runc "$(runc --version 2>/dev/null | head -n1 || echo missing)"
  printf '%-16s %s\n' busybox-static "$(/bin/busybox 2>/dev/null | head -n1 || echo missing)"
}

install_all() {
  local missing
  mapfile -t missing < <(missing_packages)
  if ((${#missing[@]} > 0)); then
    apt_install "${missing[@]}"
  fi
  versions
}

status() {
  versions
  [[ -z $(missing_packages) ]]
}

case "${1:-install}" in
  install) install_all ;;
  status) status ;;
  -h | --help | help) sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (use install or status)" ;;
esac
