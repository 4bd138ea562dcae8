#!/usr/bin/env bash
# Run shellcheck over every shell script in the repository (make lint calls it): the *.sh
# files git knows (tracked, or new and not ignored) and extension-less ones whose first line
# is a bash/sh shebang (e.g. .ci/run). Sourced files (scripts/services/*.sh) are followed
# from the scripts that source them (-x). Exits non-zero on any finding.
#
# When shellcheck is missing and we are root on Debian, Debian's shellcheck package is
# installed with apt (log .services/logs/apt-shellcheck.log); otherwise it says how to
# install it and fails.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

log() { printf '[shellcheck] %s\n' "$*"; }
die() {
  printf '[shellcheck] ERROR: %s\n' "$*" >&2
  exit 1
}

install_shellcheck() {
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    die "shellcheck is not installed: on Debian/Ubuntu run 'sudo apt-get install shellcheck' (elsewhere see https://github.com/koalaman/shellcheck#installing), then make lint again"
  fi
  local logs=$root/.services/logs
  install -d -m 755 "$logs"
  local logfile=$logs/apt-shellcheck.log rc=0
  log "HOST CHANGE: apt-get install shellcheck (Debian package; log $logfile)"
  # Another apt run (make services, a peer) may hold the lock: wait for it rather than fail.
  # The package lists may be missing or stale on a fresh machine: update once and retry.
  if ! DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
    --no-install-recommends shellcheck >"$logfile" 2>&1; then
    log "apt-get update"
    apt-get -o DPkg::Lock::Timeout=300 update -qq >>"$logfile" 2>&1 || rc=$?
    if ((rc == 0)); then
      DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
        --no-install-recommends shellcheck >>"$logfile" 2>&1 || rc=$?
    fi
  fi
  if ((rc != 0)) || ! command -v shellcheck >/dev/null 2>&1; then
    tail -n 40 "$logfile" >&2 || true
    die "apt-get install shellcheck failed (log: $logfile)"
  fi
}

# scripts: print the repository's shell scripts, one per line.
scripts() {
  local f first
  while IFS= read -r -d '' f; do
    [[ -f $f ]] || continue # listed by git but deleted in the work tree
    if [[ $f == *.sh ]]; then
      printf '%s\n' "$f"
    elif [[ ${f##*/} != *.* ]]; then # no extension: look at the shebang
      first=
      IFS= read -r -n 128 first <"$f" || true
      if [[ $first =~ ^#!(/usr/bin/env[[:space:]]+|/bin/|/usr/bin/)(ba)?sh([[:space:]]|$) ]]; then
        printf '%s\n' "$f"
      fi
    fi
  done < <(git ls-files -z --cached --others --exclude-standard)
}

command -v shellcheck >/dev/null 2>&1 || install_shellcheck

files=()
mapfile -t files < <(scripts | sort -u)
((${#files[@]} > 0)) || die "no shell scripts found (is this a git checkout?)"
log "$(shellcheck --version | sed -n 's/^version: //p'): ${#files[@]} files"
shellcheck -x "${files[@]}"
