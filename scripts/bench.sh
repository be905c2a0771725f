#!/usr/bin/env bash
# Benchmarks (called by `make bench`): prints a table and writes
# target/bench/results.json (name, value, unit[, peer, peer_value, ratio]).
#
# accept_to_running_{rust,docker}: median over N runs of the time from the
# scheduler's ACCEPT to its TASK_RUNNING update, as `mezzo execute` sees it.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${MEZZO_BENCH_RUNS:-20}
cargo build --release --workspace --bins
bash scripts/build-test-images.sh
bin="$PWD/target/release"
out="$PWD/target/bench"
mkdir -p "$out"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
source scripts/cluster.sh
start_cluster "$bin" "$(free_port)" "$(free_port)"
: >"$work/samples"
for kind in mesos docker; do
  for i in $(seq 1 "$runs"); do
    line=$("$bin/mezzo" execute --master="$master" --name="bench-$kind-$i" --command=true \
      --image=busybox --containerizer="$kind" --cpus=0.1 --mem=32 2>&1 | grep 'ACCEPT to TASK_RUNNING' || true)
    ms=$(echo "$line" | grep -oE '[0-9]+(\.[0-9]+)?' | head -1)
    [ -n "$ms" ] && echo "$kind $ms" >>"$work/samples"
  done
done
python3 - "$work/samples" "$out/results.json" <<'PY'
import json, statistics, sys
samples = {}
for line in open(sys.argv[1]):
    kind, ms = line.split()
    samples.setdefault(kind, []).append(float(ms))
names = {"mesos": "accept_to_running_rust", "docker": "accept_to_running_docker"}
results = []
for kind, name in names.items():
    vals = samples.get(kind, [])
    if vals:
        results.append({"name": name, "value": round(statistics.median(vals), 2), "unit": "ms", "runs": len(vals)})
json.dump(results, open(sys.argv[2], "w"), indent=2)
print(f"{'name':32} {'value':>10} {'unit':>5} {'runs':>5}")
for r in results:
    print(f"{r['name']:32} {r['value']:>10} {r['unit']:>5} {r['runs']:>5}")
PY
