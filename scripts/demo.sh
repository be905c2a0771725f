#!/usr/bin/env bash
# The demo: a master and an agent (--containerizers=rust,docker) on loopback,
# `echo hello` once in each containerizer, every status update and the task's
# stdout printed, everything stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins
bash scripts/build-test-images.sh
bin="$PWD/target/debug"
source scripts/cluster.sh
start_cluster "$bin" "${MEZZO_DEMO_MASTER_PORT:-5050}" "${MEZZO_DEMO_AGENT_PORT:-5051}"
status=0
echo "== rust containerizer (busybox image) =="
"$bin/mezzo" execute --master="$master" --name=hello-rust --command='echo hello' \
  --image=busybox --containerizer=mesos --cpus=0.1 --mem=32 || status=1
echo
echo "== docker containerizer (busybox image) =="
"$bin/mezzo" execute --master="$master" --name=hello-docker --command='echo hello' \
  --image=busybox --containerizer=docker --cpus=0.1 --mem=32 || status=1
if [ $status -ne 0 ]; then
  echo "--- agent log ---"; tail -50 "$work/agent.log"
fi
exit $status
