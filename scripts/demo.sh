#!/usr/bin/env bash
# The demo: a master and an agent (--containerizers=rust,docker) on loopback,
# `echo hello` once in each containerizer, every status update and the task's
# stdout printed, everything stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins
bash scripts/build-test-images.sh
bin="$PWD/target/debug"
work=$(mktemp -d /tmp/mezzo-demo.XXXXXX)
master_port=${MEZZO_DEMO_MASTER_PORT:-5050}
agent_port=${MEZZO_DEMO_AGENT_PORT:-5051}
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
"$bin/mezzo-master" --ip=127.0.0.1 --port="$master_port" >"$work/master.log" 2>&1 &
pids+=($!)
"$bin/mezzo-agent" --master="127.0.0.1:$master_port" --ip=127.0.0.1 --port="$agent_port" \
  --work_dir="$work/agent" --containerizers=rust,docker \
  --docker_registry="$PWD/target/test-images" >"$work/agent.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$master_port/state" 2>/dev/null | grep -q '"hostname"' && break
  sleep 0.1
done
status=0
echo "== rust containerizer (busybox image) =="
"$bin/mezzo" execute --master="127.0.0.1:$master_port" --name=hello-rust --command='echo hello' \
  --image=busybox --containerizer=mesos --cpus=0.1 --mem=32 || status=1
echo
echo "== docker containerizer (busybox image) =="
"$bin/mezzo" execute --master="127.0.0.1:$master_port" --name=hello-docker --command='echo hello' \
  --image=busybox --containerizer=docker --cpus=0.1 --mem=32 || status=1
if [ $status -ne 0 ]; then
  echo "--- agent log ---"; tail -50 "$work/agent.log"
fi
exit $status
