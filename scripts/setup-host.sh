#!/usr/bin/env bash
# Installs and starts what mezzo's demo, tests and benchmarks need on a fresh
# Debian machine: docker.io (and a running dockerd), busybox-static,
# libseccomp-dev, pkg-config. Idempotent; prints what it started into
# target/ci-started so that scripts/teardown-host.sh can stop only that.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$here/target"
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -q '^sh$' && file -L /bin/busybox 2>/dev/null | grep -q static || need+=(busybox-static)
dpkg -s libseccomp-dev >/dev/null 2>&1 || need+=(libseccomp-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v file >/dev/null 2>&1 || need+=(file)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! docker version >/dev/null 2>&1; then
  echo "setup: starting dockerd"
  mkdir -p /var/log
  nohup dockerd --host=unix:///var/run/docker.sock >/var/log/mezzo-dockerd.log 2>&1 &
  echo $! > "$here/target/dockerd.pid"
  for _ in $(seq 1 60); do docker version >/dev/null 2>&1 && break; sleep 0.5; done
  docker version >/dev/null 2>&1 || { echo "setup: dockerd did not start"; tail -20 /var/log/mezzo-dockerd.log; exit 1; }
fi
echo "setup: ok"
