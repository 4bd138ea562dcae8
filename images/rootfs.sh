#!/usr/bin/env bash
# Assemble the file trees of the offline base images (IMAGE_SOURCE=offline) from this machine's
# files, with exactly the layout of distroless static-debian12 nonroot:
#   rootfs.tar   /etc/passwd and /etc/group (root 0, nobody 65534, nonroot 65532),
#                /etc/nsswitch.conf, /etc/ssl/certs/ca-certificates.crt (Debian's
#                ca-certificates), /tmp (1777), /root (700), /home/nonroot (700, owned by 65532)
#   busybox.tar  /busybox/busybox (Debian's busybox-static) and a /busybox/<applet> link per
#                applet (/busybox/sh, ls, cat, ...), for the debug images
# No tzdata: the plugins load no time zones. Entries are root-owned (but /home/nonroot) and
# dated 1970-01-01, so the same inputs give the same layers.
#
#   bash images/rootfs.sh OUT_DIR
# Environment: CA_BUNDLE (default /etc/ssl/certs/ca-certificates.crt), BUSYBOX (default /bin/busybox).
set -euo pipefail

out=${1:?usage: images/rootfs.sh OUT_DIR}
ca_bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
busybox=${BUSYBOX:-/bin/busybox}

die() {
  printf 'rootfs: %s\n' "$*" >&2
  exit 1
}

[[ -s $ca_bundle ]] || die "no CA bundle at $ca_bundle (apt-get install ca-certificates, or set CA_BUNDLE)"
[[ -x $busybox ]] || die "no busybox at $busybox (bash scripts/podman.sh installs busybox-static, or set BUSYBOX)"
if ldd "$busybox" >/dev/null 2>&1; then
  die "$busybox is dynamically linked; the debug image needs a static one (Debian's busybox-static)"
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$out" "$stage/base/etc/ssl/certs" "$stage/base/tmp" "$stage/base/root" \
  "$stage/base/home/nonroot" "$stage/debug/busybox"

cat >"$stage/base/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
PASSWD
cat >"$stage/base/etc/group" <<'GROUP'
root:x:0:
tty:x:5:
staff:x:50:
nobody:x:65534:
nonroot:x:65532:
GROUP
printf 'hosts: files dns\n' >"$stage/base/etc/nsswitch.conf"
cp "$ca_bundle" "$stage/base/etc/ssl/certs/ca-certificates.crt"
chmod 644 "$stage/base/etc/passwd" "$stage/base/etc/group" "$stage/base/etc/nsswitch.conf" \
  "$stage/base/etc/ssl/certs/ca-certificates.crt"
chmod 755 "$stage/base" "$stage/base/etc" "$stage/base/etc/ssl" "$stage/base/etc/ssl/certs" "$stage/base/home"
chmod 1777 "$stage/base/tmp"
chmod 700 "$stage/base/root" "$stage/base/home/nonroot"

install -m 755 "$busybox" "$stage/debug/busybox/busybox"
chmod 755 "$stage/debug" "$stage/debug/busybox"
for applet in $("$busybox" --list); do
  [[ $applet == busybox ]] || ln -s busybox "$stage/debug/busybox/$applet"
done

tar_opts=(--numeric-owner --sort=name --mtime=@0 --format=gnu)
tar "${tar_opts[@]}" --owner=0 --group=0 --exclude=./home/nonroot -cf "$out/rootfs.tar.tmp" -C "$stage/base" .
tar "${tar_opts[@]}" --owner=65532 --group=65532 --no-recursion -rf "$out/rootfs.tar.tmp" -C "$stage/base" ./home/nonroot
tar "${tar_opts[@]}" --owner=0 --group=0 -cf "$out/busybox.tar.tmp" -C "$stage/debug" .
# Replace only on change, so the base image layers stay cached.
for f in rootfs busybox; do
  if cmp -s "$out/$f.tar.tmp" "$out/$f.tar"; then rm "$out/$f.tar.tmp"; else mv "$out/$f.tar.tmp" "$out/$f.tar"; fi
done
