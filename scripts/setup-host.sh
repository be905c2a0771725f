#!/usr/bin/env bash
# Installs and starts what mezzo's demo, tests and benchmarks need on a fresh
# Debian machine: docker.io with a running dockerd, busybox-static,
# libseccomp-dev, liblzma-dev, pkg-config, docker-registry (tests' loopback registry),
# skopeo, crun and runc (benchmark peers), qemu-system-x86 (the cgroups v2
# guest of scripts/v2-guest.sh), zookeeper (the tests' private ZooKeeper for
# master groups: the testkit starts its server, not the package's service).
# Idempotent. A dockerd it starts is recorded in target/host/dockerd.pid so
# that scripts/teardown-host.sh stops only that.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
state="$here/target/host"
mkdir -p "$state"
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
dpkg -s libseccomp-dev >/dev/null 2>&1 || need+=(libseccomp-dev)
# The fetcher's xz support links the system liblzma.
dpkg -s liblzma-dev >/dev/null 2>&1 || need+=(liblzma-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v curl >/dev/null 2>&1 || need+=(curl ca-certificates)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
command -v crun >/dev/null 2>&1 || need+=(crun)
command -v runc >/dev/null 2>&1 || need+=(runc)
# The cgroups v2 guest of scripts/v2-guest.sh (its kernel is fetched there).
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
command -v python3 >/dev/null 2>&1 || need+=(python3)
[ -f /usr/share/java/zookeeper.jar ] && [ -x /usr/bin/java ] || need+=(zookeeper)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! docker version >/dev/null 2>&1; then
  echo "setup: starting dockerd"
  nohup dockerd --host=unix:///var/run/docker.sock >"$state/dockerd.log" 2>&1 &
  echo $! > "$state/dockerd.pid"
  for _ in $(seq 1 120); do docker version >/dev/null 2>&1 && break; sleep 0.5; done
  docker version >/dev/null 2>&1 || { echo "setup: dockerd did not start"; tail -20 "$state/dockerd.log"; exit 1; }
fi
echo "setup: ok (docker $(docker version --format '{{.Server.APIVersion}}'))"
