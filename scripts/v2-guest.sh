#!/usr/bin/env bash
# Runs a command as root inside a throw-away QEMU guest whose only cgroup
# hierarchy is v2 (a Debian kernel booted with cgroup_no_v1=all), for the
# tests that must see a real unified hierarchy on a host that has v1.
#
#   scripts/v2-guest.sh [--env VAR=VALUE]... [--] COMMAND [ARG]...
#
# The guest's / is the host's / (read-only, over 9p) under a tmpfs overlay,
# so the host's binaries and libraries run unchanged and every write stays
# in the guest; the workspace (this checkout) is shared read-write at the
# same path and is the working directory. cgroup2 is mounted on
# /sys/fs/cgroup with every controller enabled for children of the root.
# COMMAND's output is streamed; the script exits with its status, or with
# 125 when the guest could not run it (the reason on stderr).
#
# The kernel (the package linux-image-amd64 points at) and a busybox
# initramfs are made once into $MEZZO_V2_GUEST_CACHE (target/v2-guest).
# Tunables: MEZZO_V2_GUEST_MEM (MiB, 2048), _CPUS (2), _TIMEOUT (s, 900).
# Needs root, qemu-system-x86 and busybox-static (scripts/setup-host.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${MEZZO_V2_GUEST_CACHE:-$here/target/v2-guest}
say() { echo "v2-guest: $*" >&2; }
give_up() { say "$*"; exit 125; }

# Kernel modules the guest loads from its initramfs (with what they need).
wanted_modules="virtio_pci 9pnet_virtio 9p overlay"

# Kernel, modules and initramfs, made once per cache directory.
prepare() {
  local work pkg kver tree
  work=$(mktemp -d "$cache/prepare.XXXXXX")
  pkg=${MEZZO_V2_GUEST_KERNEL:-$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -n1)}
  [ -n "$pkg" ] || give_up "no Debian kernel package known (apt-get update, or set MEZZO_V2_GUEST_KERNEL)"
  say "preparing $pkg (once)"
  (cd "$work" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" >&2) || give_up "cannot download $pkg"
  dpkg-deb -x "$work"/linux-image-*.deb "$work/pkg"
  kver=$(ls "$work/pkg/lib/modules")
  tree="$work/pkg/lib/modules/$kver"
  # PVH boot of the uncompressed kernel skips a slow decompression under TCG.
  python3 - "$work/pkg/boot/vmlinuz-$kver" "$work/vmlinux" <<'PY' || cp "$work/pkg/boot/vmlinuz-$kver" "$work/vmlinux"
import lzma, sys
data = open(sys.argv[1], "rb").read()
start = data.find(b"\xfd7zXZ\x00")
if start < 0:
    sys.exit(1)
open(sys.argv[2], "wb").write(lzma.LZMADecompressor().decompress(data[start:]))
PY
  local root="$work/initramfs"
  mkdir -p "$root"/{bin,dev,proc,sys,host,upper,newroot,modules}
  cp /bin/busybox "$root/bin/busybox"
  ldd "$root/bin/busybox" >/dev/null 2>&1 && give_up "/bin/busybox is not static (install busybox-static)"
  # Modules in load order, dependencies first, read from each module's
  # own "depends=" field (the package ships no modules.dep).
  python3 - "$tree" "$root/modules" $wanted_modules <<'PY' || give_up "kernel modules missing in $pkg"
import lzma, os, re, sys
tree, out, wanted = sys.argv[1], sys.argv[2], sys.argv[3:]
files = {}
for d, _, names in os.walk(tree):
    for n in names:
        m = re.fullmatch(r"(.+)\.ko(\.xz)?", n)
        if m:
            files[m.group(1).replace("-", "_")] = os.path.join(d, n)
order = []
def load(name):
    name = name.replace("-", "_")
    if name in order:
        return
    if name not in files:
        sys.exit(f"module {name} not found")
    data = open(files[name], "rb").read()
    if files[name].endswith(".xz"):
        data = lzma.decompress(data)
    dep = re.search(rb"depends=([^\0]*)\0", data)
    for d in filter(None, (dep.group(1).decode().split(",") if dep else [])):
        load(d)
    open(os.path.join(out, name + ".ko"), "wb").write(data)
    order.append(name)
for w in wanted:
    load(w)
open(os.path.join(out, "order"), "w").write("\n".join(order) + "\n")
PY
  # Stage 1 (initramfs): the host's / read-only under a tmpfs overlay.
  cat > "$root/init" <<'EOF'
#!/bin/busybox sh
export PATH=/bin
busybox mount -t proc proc /proc
busybox mount -t sysfs sysfs /sys
busybox mount -t devtmpfs devtmpfs /dev
halt() { echo "@@v2-guest-error $*"; echo o > /proc/sysrq-trigger; busybox sleep 10; }
for m in $(busybox cat /modules/order); do busybox insmod "/modules/$m.ko" || halt "insmod $m"; done
opts=trans=virtio,version=9p2000.L,msize=512000
busybox mount -t 9p -o "$opts,ro,cache=loose" host /host || halt "mount host root"
busybox mount -t tmpfs -o mode=0755 upper /upper
busybox mkdir -p /upper/data /upper/work
busybox mount -t overlay -o lowerdir=/host,upperdir=/upper/data,workdir=/upper/work root /newroot || halt "overlay root"
busybox mkdir -p /newroot/run/v2-guest
busybox cp /bin/busybox /stage2 /newroot/run/v2-guest/
for d in dev proc sys; do busybox mount --move "/$d" "/newroot/$d"; done
exec busybox switch_root /newroot /run/v2-guest/stage2
EOF
  # Stage 2 (on the overlay): cgroup2, the shared workspace, the command.
  cat > "$root/stage2" <<'EOF'
#!/run/v2-guest/busybox sh
bb=/run/v2-guest/busybox
opts=trans=virtio,version=9p2000.L,msize=512000
$bb mount -t tmpfs -o mode=1777 tmpfs /tmp
$bb mkdir -p /dev/pts /dev/shm /run/v2-guest/job
$bb mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
$bb mount -t tmpfs -o mode=1777 shm /dev/shm
$bb ln -sf /proc/self/fd /dev/fd
$bb mount -t 9p -o "$opts,cache=none" job /run/v2-guest/job
$bb mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
echo "+$($bb sed 's/ / +/g' /sys/fs/cgroup/cgroup.controllers)" > /sys/fs/cgroup/cgroup.subtree_control
ws=$($bb cat /run/v2-guest/job/workspace)
# A workspace under /tmp is hidden by the guest's own /tmp: make its mount point.
$bb mkdir -p "$ws"
$bb mount -t 9p -o "$opts,cache=none" workspace "$ws"
$bb hostname v2-guest
$bb ip link set lo up
echo "@@v2-guest-start"
cd "$ws" && $bb env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
  /bin/bash /run/v2-guest/job/command </dev/null 2>&1
echo $? > /run/v2-guest/job/status
echo "@@v2-guest-done"
$bb sync
$bb umount /run/v2-guest/job
echo o > /proc/sysrq-trigger
$bb sleep 10
EOF
  chmod 755 "$root/init" "$root/stage2"
  (cd "$root" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 > "$work/initramfs.gz")
  mv "$work/vmlinux" "$cache/kernel"
  mv "$work/initramfs.gz" "$cache/initramfs.gz"
  echo "$stamp" > "$cache/ready"
  rm -rf "$work"
}

envs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --env) envs+=("$2"); shift 2 ;;
    --) shift; break ;;
    -*) say "unknown option $1"; exit 2 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ "$(id -u)" = 0 ] || give_up "needs root (9p passthrough of the host's /)"
command -v qemu-system-x86_64 >/dev/null || give_up "qemu-system-x86_64 is not installed (scripts/setup-host.sh)"
mkdir -p "$cache"
exec 8>"$cache/lock"
flock 8
# The cache is made again when this script (its init scripts) changes.
stamp=$(sha256sum "$0" | cut -d' ' -f1)
[ "$(cat "$cache/ready" 2>/dev/null)" = "$stamp" ] || prepare
flock -u 8

job=$(mktemp -d "$cache/job.XXXXXX")
trap 'rm -rf "$job"' EXIT
echo "$here" > "$job/workspace"
{
  echo 'set -e'
  for e in "${envs[@]}"; do printf 'export %q\n' "$e"; done
  printf 'exec'; printf ' %q' "$@"; echo
} > "$job/command"

bios=()
[ -f /usr/share/qemu/qboot.rom ] && bios=(-bios /usr/share/qemu/qboot.rom)
set +e
timeout -k 10 "${MEZZO_V2_GUEST_TIMEOUT:-900}" qemu-system-x86_64 \
  -accel tcg,thread=multi -cpu max -machine pc "${bios[@]}" \
  -m "${MEZZO_V2_GUEST_MEM:-2048}" -smp "${MEZZO_V2_GUEST_CPUS:-2}" \
  -nodefaults -no-user-config -no-reboot -display none -monitor none -serial stdio \
  -kernel "$cache/kernel" -initrd "$cache/initramfs.gz" \
  -append "console=ttyS0 quiet loglevel=1 panic=-1 cgroup_no_v1=all" \
  -virtfs "local,path=/,mount_tag=host,security_model=passthrough,readonly=on,multidevs=remap" \
  -virtfs "local,path=${here//,/,,},mount_tag=workspace,security_model=passthrough,multidevs=remap" \
  -virtfs "local,path=${job//,/,,},mount_tag=job,security_model=passthrough" \
  </dev/null 2>"$job/qemu.log" | tr -d '\r' | tee "$job/console" | awk '
    /^@@v2-guest-start/ { on = 1; next }
    /@@v2-guest-done/ { sub(/@@v2-guest-done.*/, ""); if ($0 != "") print; on = 0; next }
    /^@@v2-guest-error/ { print > "/dev/stderr" }
    on { print; fflush() }'
qemu=${PIPESTATUS[0]}
set -e
[ -f "$job/status" ] && exit "$(cat "$job/status")"
say "the guest ended without the command's status (qemu exit $qemu); last console lines:"
tail -n 20 "$job/console" >&2
cat "$job/qemu.log" >&2
exit 125
