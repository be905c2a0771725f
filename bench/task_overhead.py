#!/usr/bin/env python3
"""task_overhead_{rss,pss}: memory the agent adds per running command task.

Usage: task_overhead.py MASTER AGENT_PID TASKS

Subscribes a framework to the master (v1 scheduler API, JSON), launches TASKS
command tasks `sleep 1000` on the rust containerizer without an image in one
ACCEPT, waits until every one is TASK_RUNNING and has settled, then sums the
memory of the processes the agent started for them: each task's
mezzo-executor and its mezzo-launcher processes (the supervisor, and the
container's init, a fork of it). The tasks' own `sleep` processes are not
counted. RSS counts every resident page of each process; PSS (from
/proc/PID/smaps_rollup) divides each shared page among the processes that map
it, so the binaries' text, mapped by every executor, counts once in all.

Prints one JSON object on stdout: {"rss_mb", "pss_mb", "tasks", "detail"};
the framework is torn down (its tasks killed) before it exits.
"""
import base64
import collections
import http.client
import json
import os
import queue
import sys
import threading
import time

master, agent_pid, tasks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
host, port = master.rsplit(":", 1)
PATH = "/api/v1/scheduler"
# After the last TASK_RUNNING: the executors get their acknowledgements and
# go idle; what they hold then is what a long-running task costs.
SETTLE_SECONDS = 2.0
DEADLINE = time.time() + 120


def fail(message):
    print(json.dumps({"error": message}))
    sys.exit(1)


events = queue.Queue()
stream_id = None


def subscribe():
    global stream_id
    conn = http.client.HTTPConnection(host, int(port), timeout=130)
    body = {"type": "SUBSCRIBE", "subscribe": {"framework_info": {"user": "root", "name": "bench-task-overhead"}}}
    conn.request("POST", PATH, json.dumps(body), {"Content-Type": "application/json", "Accept": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        events.put({"type": "_ERROR", "message": f"SUBSCRIBE answered {response.status}: {response.read()[:200]!r}"})
        return
    stream_id = response.getheader("Mesos-Stream-Id")
    try:
        while True:
            line = response.readline()
            if not line:
                break
            size = int(line.strip())
            events.put(json.loads(response.read(size)))
    except Exception as e:  # the stream ends when the bench exits
        events.put({"type": "_ERROR", "message": f"event stream: {e}"})


def call(body):
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("POST", PATH, json.dumps(body), {"Content-Type": "application/json", "Mesos-Stream-Id": stream_id or ""})
    response = conn.getresponse()
    text = response.read()
    conn.close()
    if response.status != 202:
        raise RuntimeError(f"{body['type']} answered {response.status}: {text[:200]!r}")


def scalar(name, value):
    return {"name": name, "type": "SCALAR", "scalar": {"value": value}}


def processes():
    """pid -> (ppid, exe basename) for every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            exe = os.path.basename(os.readlink(f"/proc/{entry}/exe"))
        except (OSError, ValueError, IndexError):
            continue
        table[int(entry)] = (ppid, exe)
    return table


def overhead_processes():
    """The agent's descendants that are mezzo-executor or mezzo-launcher, by kind."""
    table = processes()
    children = collections.defaultdict(list)
    for pid, (ppid, _) in table.items():
        children[ppid].append(pid)
    found, todo = [], list(children[agent_pid])
    while todo:
        pid = todo.pop()
        todo.extend(children[pid])
        exe = table[pid][1]
        if exe == "mezzo-executor":
            found.append((pid, "executor"))
        elif exe == "mezzo-launcher":
            # The supervisor is the executor's child; the container's init is the supervisor's.
            parent_exe = table.get(table[pid][0], (0, ""))[1]
            found.append((pid, "init" if parent_exe == "mezzo-launcher" else "supervisor"))
    return found


def memory_kb(pid):
    rss = pss = None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss or 0, pss or 0


threading.Thread(target=subscribe, daemon=True).start()
framework_id = None
launched = False
running = set()
while len(running) < tasks:
    try:
        event = events.get(timeout=max(0.1, DEADLINE - time.time()))
    except queue.Empty:
        fail(f"only {len(running)} of {tasks} tasks running after 120 s")
    kind = event.get("type")
    if kind == "_ERROR":
        fail(event["message"])
    elif kind == "SUBSCRIBED":
        framework_id = event["subscribed"]["framework_id"]
    elif kind == "OFFERS":
        for offer in event["offers"].get("offers", []):
            if launched:
                call({"framework_id": framework_id, "type": "DECLINE", "decline": {"offer_ids": [offer["id"]]}})
                continue
            task_infos = [{
                "name": f"overhead-{i}",
                "task_id": {"value": f"overhead-{i}"},
                "agent_id": offer["agent_id"],
                "resources": [scalar("cpus", 0.01), scalar("mem", 16)],
                "command": {"value": "sleep 1000"},
            } for i in range(tasks)]
            call({"framework_id": framework_id, "type": "ACCEPT", "accept": {
                "offer_ids": [offer["id"]],
                "operations": [{"type": "LAUNCH", "launch": {"task_infos": task_infos}}],
                "filters": {"refuse_seconds": 3600}}})
            launched = True
    elif kind == "UPDATE":
        status = event["update"]["status"]
        if "uuid" in status:
            call({"framework_id": framework_id, "type": "ACKNOWLEDGE", "acknowledge": {
                "agent_id": status["agent_id"], "task_id": status["task_id"], "uuid": status["uuid"]}})
        state = status["state"]
        if state == "TASK_RUNNING":
            running.add(status["task_id"]["value"])
        elif state not in ("TASK_STARTING", "TASK_STAGING"):
            fail(f"task {status['task_id']['value']}: {state}: {status.get('message', '')}")

time.sleep(SETTLE_SECONDS)
found = overhead_processes()
totals = collections.defaultdict(lambda: [0, 0, 0])  # kind -> [count, rss kB, pss kB]
for pid, kind in found:
    try:
        rss, pss = memory_kb(pid)
    except OSError:
        continue
    totals[kind][0] += 1
    totals[kind][1] += rss
    totals[kind][2] += pss
call({"framework_id": framework_id, "type": "TEARDOWN"})
executors = totals["executor"][0]
if executors != tasks:
    fail(f"found {executors} mezzo-executor processes for {tasks} running tasks")
rss_kb = sum(t[1] for t in totals.values())
pss_kb = sum(t[2] for t in totals.values())
detail = ", ".join(f"{kind} rss {t[1] / tasks / 1024:.2f} pss {t[2] / tasks / 1024:.2f} MB ({t[0]} procs)"
                   for kind, t in sorted(totals.items()))
# The framework's executors are shut down; wait (bounded) until they are gone.
while time.time() < DEADLINE + 60 and any(kind == "executor" for _, kind in overhead_processes()):
    time.sleep(0.1)
print(json.dumps({"rss_mb": round(rss_kb / tasks / 1024, 2), "pss_mb": round(pss_kb / tasks / 1024, 2),
                  "tasks": tasks, "detail": f"per task: {detail}"}))
