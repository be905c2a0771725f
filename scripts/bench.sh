#!/usr/bin/env bash
# Benchmarks (called by `make bench`, as root after scripts/setup-host.sh):
# prints one table and writes target/bench/results.json, a list of
# {name, value, unit[, peer, peer_value, ratio, runs, target, detail, note]}.
#
# accept_to_running_{rust,docker}: median over N runs of the time from the
# scheduler's ACCEPT to its TASK_RUNNING update, as `mezzo execute` sees it,
# through a real master and agent.
# custom_executor_accept_to_running: the same through a framework's own executor
# (mezzo-test-executor, rust containerizer, no image): ACCEPT of one task on a
# new custom executor to its TASK_RUNNING (mezzo-bench-custom-executor).
# kill_to_killed_rust: median time from the scheduler's KILL of `sleep 1000`
# (busybox, rust containerizer, default 3 s grace) to its TASK_KILLED update.
# exit_to_failed_rust: median time from the moment a task is told to exit (it
# blocks reading a FIFO in its sandbox, then does `exit 3`; the bench writes
# the FIFO) to its TASK_FAILED update at the scheduler. Both time the lines of
# `mezzo execute` as they arrive.
# task_overhead_rss / task_overhead_pss: memory per running command task of
# the processes the agent adds for it (mezzo-executor, the mezzo-launcher
# supervisor and the container's init it forks), over MEZZO_BENCH_TASKS (20)
# `sleep` tasks on the rust containerizer without an image, launched by one
# framework (bench/task_overhead.py): RSS sums every process's resident pages,
# PSS counts a page shared by N processes as 1/N (the binaries' text once).
# master_failover (s): three masters on a private ZooKeeper (Debian's), an
# agent and a framework with a running task; the median over
# MEZZO_BENCH_FAILOVER_RUNS (5) of the time from kill -9 of the leading master
# to the framework's RECONCILE answered by the new leader (it learns the
# leader from ZooKeeper, re-subscribes, reconciles); --zk_session_timeout=2secs
# (mezzo-bench-master-failover).
# health_check_overhead (ms CPU / 1000 checks): utime+stime of the agent and
# of the task's mezzo-executor while the executor makes MEZZO_BENCH_HEALTH_CHECKS
# (2,000) HTTP health checks, every 0.01 s, of a loopback busybox httpd task
# (rust containerizer, no image; its own master and agent; mezzo-bench-health).
# Then mezzo-bench (bench/), side by side with its peers in the same run:
# rust_launch_true (crun; runc as rust_launch_true_vs_runc), rust_launch_1000,
# docker_launch_true (docker run), image_warm_provision_{1,5,20},
# image_cold_pull (skopeo; docker pull as image_cold_pull_vs_docker),
# fetch_cold (the agent's fetcher, 50 MB over loopback HTTP; curl -o) and fetch_cached.
#
# master_offer_cycle_10k / master_launch_rate: a master alone with 10,000
# simulated agents registered through the agent protocol by a load generator
# (mezzo-bench-master): a DECLINE of every offer to all agents offered again,
# and tasks per second launched (one ACCEPT per offer) to their TASK_RUNNING.
#
# Knobs: MEZZO_BENCH_RUNS (cluster runs, 20), MEZZO_BENCH_KILL_RUNS (kill and
# exit runs, 10), MEZZO_BENCH_LAUNCH_RUNS (30), MEZZO_BENCH_PULL_RUNS (9),
# MEZZO_BENCH_MANY (1000), MEZZO_BENCH_ONLY (comma separated: cluster =
# accept_to_running_*, kill = kill_to_killed_rust and exit_to_failed_rust,
# overhead = task_overhead_*, master = master_*, failover = master_failover,
# health = health_check_overhead, and the mezzo-bench groups provision,rust,many,docker,pull,fetch; empty = all).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${MEZZO_BENCH_RUNS:-20}
cargo build --release --workspace --bins
bash scripts/build-test-images.sh
bin="$PWD/target/release"
out="$PWD/target/bench"
mkdir -p "$out"
rm -f "$out/cluster-samples.txt" "$out/mezzo-bench.json" "$out/overhead.json" "$out/extra.jsonl"
# MEZZO_BENCH_ONLY: which parts run (empty = all).
wants() { [ -z "${MEZZO_BENCH_ONLY:-}" ] || [[ ",$MEZZO_BENCH_ONLY," == *",$1,"* ]]; }
bench_groups=()
for g in provision rust many docker pull fetch; do wants "$g" && bench_groups+=("$g"); done
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# 1. Through a cluster: ACCEPT to TASK_RUNNING; KILL to TASK_KILLED; exit to TASK_FAILED.
source scripts/cluster.sh
: >"$out/cluster-samples.txt"
if wants cluster || wants kill || wants overhead; then
start_cluster "$bin" "$(free_port)" "$(free_port)"
fi
wants cluster && for kind in mesos docker; do
  for i in $(seq 1 "$runs"); do
    line=$(timeout 120 "$bin/mezzo" execute --master="$master" --name="bench-$kind-$i" --command=true \
      --image=busybox --containerizer="$kind" --cpus=0.1 --mem=32 2>&1 | grep 'ACCEPT to TASK_RUNNING' || true)
    ms=$(echo "$line" | grep -oE '[0-9]+(\.[0-9]+)?' | head -1)
    [ -n "$ms" ] && echo "$kind $ms" >>"$out/cluster-samples.txt"
  done
done
wants cluster && { timeout 900 "$bin/mezzo-bench-custom-executor" --master="$master" --runs="$runs" >>"$out/cluster-samples.txt" || true; }
if wants kill; then
  python3 - "$bin/mezzo" "$master" "${MEZZO_BENCH_KILL_RUNS:-10}" "$work/agent" >>"$out/cluster-samples.txt" <<'PY'
import glob, os, subprocess, sys, threading, time
mezzo, master, runs, agent_work = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

def execute(name, command, extra=()):
    """Runs `mezzo execute`; yields (arrival time, line) as lines arrive."""
    args = [mezzo, "execute", f"--master={master}", f"--name={name}", f"--command={command}",
            "--image=busybox", "--containerizer=mesos", "--cpus=0.1", "--mem=32", "--timeout=120", *extra]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    try:
        for line in p.stdout:
            yield time.time(), line
    finally:
        p.kill()
        p.wait()

for i in range(runs):
    killing = killed = None
    for t, line in execute(f"bench-kill-{i}", "sleep 1000", ["--kill_after=0.2"]):
        if line.startswith("Killing task"):
            killing = t
        elif "status update TASK_KILLED" in line:
            killed = t
    if killing and killed:
        print(f"kill {(killed - killing) * 1000:.2f}")
    # The task makes a FIFO in its sandbox and blocks reading it; once it
    # runs, the bench writes the FIFO (the task's cue to `exit 3`).
    name = f"bench-exit-{i}"
    told = {}

    def tell():
        pattern = f"{agent_work}/slaves/*/frameworks/*/executors/{name}/runs/latest/go"
        deadline = time.time() + 60
        while time.time() < deadline:
            for fifo in glob.glob(pattern):
                fd = os.open(fifo, os.O_WRONLY)
                told["at"] = time.time()
                os.write(fd, b"go\n")
                os.close(fd)
                return
            time.sleep(0.01)

    failed = None
    for t, line in execute(name, 'mkfifo "$MESOS_SANDBOX/go"; read x < "$MESOS_SANDBOX/go"; exit 3'):
        if "status update TASK_RUNNING" in line:
            threading.Thread(target=tell, daemon=True).start()
        elif "status update TASK_FAILED" in line:
            failed = t
    if failed and "at" in told:
        print(f"exit {(failed - told['at']) * 1000:.2f}")
PY
fi
if wants overhead; then
  python3 bench/task_overhead.py "$master" "$agent_pid" "${MEZZO_BENCH_TASKS:-20}" >"$out/overhead.json" ||
    echo "task_overhead failed: $(cat "$out/overhead.json")" >&2
fi
# The side-by-side benchmarks want a quiet machine: no idle agent polling.
stop_cluster
trap - EXIT

# 2. A master alone with many simulated agents (one JSON object per line in extra.jsonl).
if wants master; then
  timeout 900 "$bin/mezzo-bench-master" --agents="${MEZZO_BENCH_AGENTS:-10000}" >>"$out/extra.jsonl" ||
    echo "mezzo-bench-master failed" >&2
fi

# 2b. A master group's failover (its own ZooKeeper, masters and agent; stops them all).
if wants failover; then
  MEZZO_BIN_DIR="$bin" timeout 900 "$bin/mezzo-bench-master-failover" --runs="${MEZZO_BENCH_FAILOVER_RUNS:-5}" \
    >>"$out/extra.jsonl" || echo "mezzo-bench-master-failover failed" >&2
fi

# 2c. What health checks cost (its own master and agent; stops them).
if wants health; then
  MEZZO_BIN_DIR="$bin" timeout 900 "$bin/mezzo-bench-health" --checks="${MEZZO_BENCH_HEALTH_CHECKS:-2000}" \
    >>"$out/extra.jsonl" || echo "mezzo-bench-health failed" >&2
fi

# 3. Side by side with the peers (its own private mount namespace; cleans up after itself).
bench_rc=0
only=()
[ -n "${MEZZO_BENCH_ONLY:-}" ] && only=(--only "$(IFS=,; echo "${bench_groups[*]}")")
if [ "${#bench_groups[@]}" -gt 0 ]; then
timeout 3600 "$bin/mezzo-bench" \
  --runs "${MEZZO_BENCH_LAUNCH_RUNS:-30}" --pull-runs "${MEZZO_BENCH_PULL_RUNS:-9}" \
  --many "${MEZZO_BENCH_MANY:-1000}" --test-images "$PWD/target/test-images" \
  --launcher-dir "$bin" --out "$out/mezzo-bench.json" "${only[@]}" || bench_rc=$?
fi

# 4. One results file, one table.
python3 - "$out/cluster-samples.txt" "$out/mezzo-bench.json" "$out/results.json" "$out/overhead.json" "$out/extra.jsonl" <<'PY'
import json, os, statistics, sys
samples_path, bench_path, out_path, overhead_path, extra_path = sys.argv[1:6]
samples = {}
for line in open(samples_path):
    kind, ms = line.split()
    samples.setdefault(kind, []).append(float(ms))
results = []
names = {"mesos": "accept_to_running_rust", "docker": "accept_to_running_docker",
         "kill": "kill_to_killed_rust", "exit": "exit_to_failed_rust", "custom": "custom_executor_accept_to_running"}
targets = {"mesos": "<= 20 ms", "kill": "<= 100 ms", "exit": "<= 20 ms", "custom": "<= 1.5x accept_to_running_rust"}
for kind, name in names.items():
    vals = samples.get(kind, [])
    if vals:
        entry = {"name": name, "value": round(statistics.median(vals), 2), "unit": "ms", "runs": len(vals)}
        if kind in targets:
            entry["target"] = targets[kind]
        results.append(entry)
by_name = {r["name"]: r for r in results}
custom, rust = by_name.get("custom_executor_accept_to_running"), by_name.get("accept_to_running_rust")
if custom and rust and rust["value"]:
    custom.update(peer=rust["name"], peer_value=rust["value"], ratio=round(custom["value"] / rust["value"], 2))
if os.path.exists(overhead_path) and os.path.getsize(overhead_path):
    overhead = json.load(open(overhead_path))
    for name, key in (("task_overhead_rss", "rss_mb"), ("task_overhead_pss", "pss_mb")):
        entry = {"name": name, "value": overhead.get(key), "unit": "MB", "runs": overhead.get("tasks"), "target": "<= 8 MB"}
        if "detail" in overhead:
            entry["detail"] = overhead["detail"]
        if "error" in overhead:
            entry["note"] = overhead["error"]
        results.append(entry)
if os.path.exists(extra_path):
    results.extend(json.loads(line) for line in open(extra_path) if line.strip())
if os.path.exists(bench_path):
    results.extend(json.load(open(bench_path)))
json.dump(results, open(out_path, "w"), indent=2)

def fmt(v):
    return "-" if v is None else f"{v:g}"
cols = ("name", "value", "unit", "peer", "peer_value", "ratio", "target", "runs")
rows = [[r["name"], fmt(r.get("value")), r["unit"], r.get("peer") or "-", fmt(r.get("peer_value")),
         fmt(r.get("ratio")), r.get("target") or "-", fmt(r.get("runs"))] for r in results]
widths = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c) for i, c in enumerate(cols)]
print("  ".join(c.ljust(w) if i in (0, 2, 3, 6) else c.rjust(w) for i, (c, w) in enumerate(zip(cols, widths))))
for row in rows:
    print("  ".join(v.ljust(w) if i in (0, 2, 3, 6) else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths))))
for r in results:
    if r.get("value") is None and r.get("note"):
        print(f"{r['name']}: {r['note']}")
    elif r["name"] == "task_overhead_rss" and r.get("detail"):
        print(f"task_overhead: {r['detail']}")
    elif (r["name"].startswith("master_") or r["name"] == "health_check_overhead") and r.get("detail"):
        print(f"{r['name']}: {r['detail']}")
print(f"written: {out_path}")
PY
if [ "$bench_rc" != 0 ]; then
  echo "mezzo-bench failed (exit $bench_rc); the table holds what it measured" >&2
fi
exit "$bench_rc"
