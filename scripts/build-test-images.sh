#!/usr/bin/env bash
# Builds mezzo's busybox test image from Debian's busybox-static, with no registry and
# no network: a rootfs of /bin/busybox plus a symlink per applet, packed by
# mezzo-build-image into
#   <out>/busybox.tar    docker-archive (RepoTags busybox:latest), for `docker load`
#   <out>/oci/busybox    OCI image layout, tag latest
# Usage: scripts/build-test-images.sh [out-dir]   (default: target/test-images)
# Idempotent; does nothing when the outputs are newer than busybox, the builder and this script.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/target/test-images}
busybox=${BUSYBOX:-/bin/busybox}

if [ ! -x "$busybox" ] || ! "$busybox" --list 2>/dev/null | grep -qx sh; then
  echo "build-test-images: $busybox is not a usable busybox; run: apt-get install -y busybox-static" >&2
  exit 1
fi

if [ -n "${MEZZO_BUILD_IMAGE:-}" ]; then
  builder=$MEZZO_BUILD_IMAGE
else
  (cd "$here" && cargo build -q -p mezzo-images --bin mezzo-build-image)
  builder=${CARGO_TARGET_DIR:-$here/target}/debug/mezzo-build-image
fi

mkdir -p "$out"
out=$(cd "$out" && pwd)
archive=$out/busybox.tar
layout=$out/oci/busybox

up_to_date() {
  local f dep
  for f in "$archive" "$layout/index.json"; do
    [ -f "$f" ] || return 1
    for dep in "$busybox" "$builder" "$0"; do
      [ "$f" -nt "$dep" ] || return 1
    done
  done
}
if up_to_date; then
  echo "build-test-images: $archive and $layout are up to date"
  exit 0
fi

rootfs=$(mktemp -d "${TMPDIR:-/tmp}/mezzo-busybox-rootfs.XXXXXX")
trap 'rm -rf "$rootfs"' EXIT
chmod 755 "$rootfs"
mkdir -p "$rootfs"/{bin,etc,proc,sys,dev,mnt,root,home,var,tmp}
chmod 1777 "$rootfs/tmp"
chmod 700 "$rootfs/root"
install -m 755 "$busybox" "$rootfs/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
done
cat >"$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat >"$rootfs/etc/group" <<'GROUP'
root:x:0:
nobody:x:65534:
GROUP
chmod 644 "$rootfs/etc/passwd" "$rootfs/etc/group"
# Files of the image belong to root, whoever runs this script.
if [ "$(id -u)" != 0 ]; then
  echo "build-test-images: warning: not root, image files will be owned by uid $(id -u)" >&2
fi

rm -rf "$layout"
mkdir -p "$(dirname "$layout")"
"$builder" --rootfs "$rootfs" --name busybox:latest --oci-out "$layout" --docker-archive-out "$archive"
