#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz corpora (fuzz/corpus/<target>/seed-*).

Run by scripts/fuzz.sh when a corpus directory is missing; the committed
corpora already hold its output (minimized together with what the fuzzers
found). Messages are written in Mesos's JSON and, through `protoc --encode`
(Debian's protobuf-compiler), in protobuf, with the project's own .proto
files, so a seed that no longer matches the schema fails here loudly.
"""
import base64, io, json, os, subprocess, sys, tarfile, gzip, hashlib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO = os.path.join(ROOT, "proto", "proto")
CORPUS = os.path.join(ROOT, "fuzz", "corpus")

ENUM_FIELDS = {"type", "state", "source", "reason", "network"}
BYTES_FIELDS = {"uuid", "data"}


def text_format(msg, indent=""):
    """Mesos JSON (a dict) -> protobuf text format."""
    out = []
    for key, value in msg.items():
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, dict):
                out.append(f"{indent}{key} {{\n{text_format(v, indent + '  ')}{indent}}}\n")
            elif isinstance(v, bool):
                out.append(f"{indent}{key}: {'true' if v else 'false'}\n")
            elif isinstance(v, (int, float)):
                out.append(f"{indent}{key}: {v}\n")
            elif key in ENUM_FIELDS:
                out.append(f"{indent}{key}: {v}\n")
            elif key in BYTES_FIELDS:
                escaped = "".join("\\%03o" % b for b in base64.b64decode(v))
                out.append(f'{indent}{key}: "{escaped}"\n')
            else:
                out.append(f"{indent}{key}: {json.dumps(v)}\n")
    return "".join(out)


def protobuf(message_type, proto_file, msg):
    result = subprocess.run(
        ["protoc", f"-I{PROTO}", f"--encode={message_type}", proto_file],
        input=text_format(msg).encode(), capture_output=True,
    )
    if result.returncode != 0:
        sys.exit(f"protoc --encode={message_type}: {result.stderr.decode()}\n{text_format(msg)}")
    return result.stdout


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def messages(target, message_type, proto_file, items, prefix=b""):
    for name, msg in items.items():
        write(target, name + ".json", prefix + json.dumps(msg).encode())
        write(target, name + ".pb", prefix + protobuf(message_type, proto_file, msg))


UUID = base64.b64encode(bytes(range(16))).decode()
FW = {"value": "4a5b7c3e-0000-4000-8000-000000000001-0000"}
AGENT = {"value": "4a5b7c3e-0000-4000-8000-000000000001-S0"}
CPUS = {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}, "role": "*"}
MEM = {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}}
PORTS = {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 31001}]}}
TASK = {
    "name": "sleep", "task_id": {"value": "sleep-1"}, "agent_id": AGENT,
    "resources": [CPUS, MEM],
    "command": {"value": "sleep 1000", "shell": True,
                "environment": {"variables": [{"name": "A", "value": "b"}]}},
    "container": {"type": "MESOS", "mesos": {"image": {"type": "DOCKER", "docker": {"name": "busybox:latest"}}}},
    "kill_policy": {"grace_period": {"nanoseconds": 3000000000}},
}
DOCKER_TASK = dict(TASK, task_id={"value": "docker-1"},
                   container={"type": "DOCKER", "docker": {"image": "busybox", "network": "HOST"}},
                   command={"shell": False, "value": "/bin/sh", "arguments": ["-c", "true"], "user": "nobody"})
FRAMEWORK = {"user": "root", "name": "fuzz", "hostname": "localhost", "checkpoint": True,
             "failover_timeout": 60, "roles": ["*"], "id": FW, "principal": "p"}
STATUS = {"task_id": {"value": "sleep-1"}, "state": "TASK_RUNNING", "source": "SOURCE_EXECUTOR",
          "agent_id": AGENT, "executor_id": {"value": "sleep-1"}, "timestamp": 1.5e9, "uuid": UUID,
          "message": "ok", "reason": "REASON_COMMAND_EXECUTOR_FAILED"}
AGENT_INFO = {"hostname": "localhost", "port": 5051, "resources": [CPUS, MEM, PORTS], "id": AGENT}


def scheduler():
    f = "mesos/v1/scheduler/scheduler.proto"
    calls = {
        "subscribe": {"type": "SUBSCRIBE", "subscribe": {"framework_info": dict(FRAMEWORK, id=None) | {}}},
        "accept-launch": {"framework_id": FW, "type": "ACCEPT", "accept": {
            "offer_ids": [{"value": "o-1"}], "filters": {"refuse_seconds": 1},
            "operations": [{"type": "LAUNCH", "launch": {"task_infos": [TASK, DOCKER_TASK]}}]}},
        "accept-group": {"framework_id": FW, "type": "ACCEPT", "accept": {
            "offer_ids": [{"value": "o-1"}], "operations": [{"type": "LAUNCH_GROUP", "launch_group": {
                "executor": {"type": "DEFAULT", "executor_id": {"value": "e"}, "resources": [CPUS]},
                "task_group": {"tasks": [TASK]}}}]}},
        "accept-reserve": {"framework_id": FW, "type": "ACCEPT", "accept": {
            "offer_ids": [{"value": "o-1"}], "operations": [{"type": "RESERVE", "reserve": {"resources": [CPUS]}}]}},
        "decline": {"framework_id": FW, "type": "DECLINE", "decline": {"offer_ids": [{"value": "o-1"}],
                                                                       "filters": {"refuse_seconds": 5}}},
        "kill": {"framework_id": FW, "type": "KILL", "kill": {"task_id": {"value": "sleep-1"}, "agent_id": AGENT,
                                                              "kill_policy": {"grace_period": {"nanoseconds": 1}}}},
        "acknowledge": {"framework_id": FW, "type": "ACKNOWLEDGE", "acknowledge": {
            "agent_id": AGENT, "task_id": {"value": "sleep-1"}, "uuid": UUID}},
        "reconcile": {"framework_id": FW, "type": "RECONCILE", "reconcile": {"tasks": [
            {"task_id": {"value": "sleep-1"}, "agent_id": AGENT}]}},
        "teardown": {"framework_id": FW, "type": "TEARDOWN"},
        "revive": {"framework_id": FW, "type": "REVIVE", "revive": {"roles": ["*"]}},
        "suppress": {"framework_id": FW, "type": "SUPPRESS", "suppress": {"roles": ["*"]}},
        "shutdown": {"framework_id": FW, "type": "SHUTDOWN", "shutdown": {"executor_id": {"value": "e"},
                                                                          "agent_id": AGENT}},
        "message": {"framework_id": FW, "type": "MESSAGE", "message": {"agent_id": AGENT,
                                                                        "executor_id": {"value": "e"}, "data": UUID}},
    }
    calls["subscribe"]["subscribe"]["framework_info"].pop("id")
    messages("scheduler_call", "mesos.v1.scheduler.Call", f, calls)


def executor():
    f = "mesos/v1/executor/executor.proto"
    ids = {"framework_id": FW, "executor_id": {"value": "sleep-1"}}
    calls = {
        "subscribe": dict(ids, type="SUBSCRIBE", subscribe={"unacknowledged_tasks": [TASK], "unacknowledged_updates": [
            {"status": STATUS}]}),
        "update": dict(ids, type="UPDATE", update={"status": STATUS}),
        "update-failed": dict(ids, type="UPDATE", update={"status": dict(STATUS, state="TASK_FAILED",
                                                                          message="Command exited with status 1")}),
        "message": dict(ids, type="MESSAGE", message={"data": UUID}),
        "heartbeat": dict(ids, type="HEARTBEAT"),
    }
    messages("executor_call", "mesos.v1.executor.Call", f, calls)
    events = {
        "event-subscribed": {"type": "SUBSCRIBED", "subscribed": {
            "executor_info": {"executor_id": {"value": "sleep-1"}, "framework_id": FW, "command": TASK["command"]},
            "framework_info": FRAMEWORK, "agent_info": AGENT_INFO, "container_id": {"value": "c-1"}}},
        "event-launch": {"type": "LAUNCH", "launch": {"task": TASK}},
        "event-kill": {"type": "KILL", "kill": {"task_id": {"value": "sleep-1"},
                                                "kill_policy": {"grace_period": {"nanoseconds": 5}}}},
        "event-acknowledged": {"type": "ACKNOWLEDGED", "acknowledged": {"task_id": {"value": "sleep-1"},
                                                                        "uuid": UUID}},
        "event-shutdown": {"type": "SHUTDOWN"},
        "event-error": {"type": "ERROR", "error": {"message": "boom"}},
    }
    messages("executor_call", "mesos.v1.executor.Event", f, events)


def operator():
    f = "mesos/v1/agent/agent.proto"
    calls = {t.lower(): {"type": t} for t in
             ["GET_HEALTH", "GET_FLAGS", "GET_VERSION", "GET_STATE", "GET_CONTAINERS", "GET_FRAMEWORKS",
              "GET_EXECUTORS", "GET_TASKS", "GET_AGENT"]}
    calls["get_metrics"] = {"type": "GET_METRICS", "get_metrics": {"timeout": {"nanoseconds": 1000}}}
    calls["get_containers-nested"] = {"type": "GET_CONTAINERS",
                                      "get_containers": {"show_nested": True, "show_standalone": False}}
    messages("operator_call", "mesos.v1.agent.Call", f, calls)


def agent_protocol():
    f = "mezzo/agent.proto"
    per_type = [
        ("mezzo.agent.MasterToAgent", {
            "run-task": {"type": "RUN_TASK", "run_task": {"framework_info": FRAMEWORK, "task": TASK}},
            "kill-task": {"type": "KILL_TASK", "kill_task": {"framework_id": FW, "task_id": {"value": "sleep-1"},
                                                             "kill_policy": {"grace_period": {"nanoseconds": 7}}}},
            "ack": {"type": "ACKNOWLEDGE", "acknowledge": {"framework_id": FW, "task_id": {"value": "sleep-1"},
                                                           "uuid": UUID}},
            "shutdown": {"type": "SHUTDOWN_FRAMEWORK", "shutdown_framework": {"framework_id": FW}},
        }),
        ("mezzo.agent.RegisterAgent", {"register": {"agent_info": AGENT_INFO, "endpoint": "127.0.0.1:5051",
                                                    "total_resources": [CPUS, MEM, PORTS]}}),
        ("mezzo.agent.StatusUpdate", {"status": {"framework_id": FW, "status": STATUS}}),
        ("mezzo.agent.Ping", {"ping": {"agent_id": AGENT}}),
        ("mezzo.agent.AgentRegistered", {"registered": {"agent_id": AGENT, "ping_interval_seconds": 1}}),
        ("mezzo.agent.StatusUpdateRecord", {"record": {"type": "UPDATE", "update": {"framework_id": FW,
                                                                                   "status": STATUS}},
                                            "record-ack": {"type": "ACK", "uuid": UUID}}),
    ]
    # The target's first byte picks the message type, in this order.
    for index, (message_type, items) in enumerate(per_type):
        messages("agent_protocol", message_type, f, items, prefix=bytes([index]))


def recordio():
    for name, records in {
        "events": [b'{"type":"SUBSCRIBED","subscribed":{"framework_id":{"value":"f"}}}', b'{"type":"HEARTBEAT"}'],
        "empty-record": [b"", b"x"],
        "binary": [bytes(range(40))],
    }.items():
        stream = b"".join(str(len(r)).encode() + b"\n" + r for r in records)
        # max record size byte (x8), number of chunk sizes, chunk sizes, stream
        write("recordio", name, bytes([255, 3, 0, 6, 17]) + stream)
    write("recordio", "truncated", bytes([255, 0]) + b"20\nabc")
    write("recordio", "too-large", bytes([1, 0]) + b"100\n" + b"a" * 100)


def image_documents():
    digest = "sha256:" + "ab" * 32
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": 1},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest,
                            "size": 2, "annotations": {"a": "b"}}]}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
             "manifests": [{"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": digest,
                            "size": 3, "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
                           {"digest": digest, "size": 3, "platform": {"architecture": "amd64", "os": "linux"},
                            "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}
    archive = [{"Config": "blobs/sha256/" + "ab" * 32, "RepoTags": ["busybox:latest"],
                "Layers": ["blobs/sha256/" + "cd" * 32]}]
    write("image_manifest", "manifest.json", json.dumps(manifest))
    write("image_manifest", "index.json", json.dumps(index))
    write("image_manifest", "docker-save-manifest.json", json.dumps(archive))
    config = {"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
              "config": {"Env": ["PATH=/bin"], "Entrypoint": ["/bin/sh"], "Cmd": ["-c", "true"],
                         "WorkingDir": "/", "User": "nobody:nogroup"},
              "rootfs": {"type": "layers", "diff_ids": [digest]},
              "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "ADD x", "empty_layer": True,
                           "comment": "c"}]}
    write("image_config", "config.json", json.dumps(config))


def tar_bytes(entries, fmt=tarfile.GNU_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def entry(name, kind=tarfile.REGTYPE, data=b"", link="", mode=0o644, pax=None):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    if pax:
        info.pax_headers = pax
    return info, data if kind == tarfile.REGTYPE else None


def layers():
    out = "/tmp/mezzo-fuzz-layer/outside"
    plain = tar_bytes([entry("bin/", tarfile.DIRTYPE, mode=0o755), entry("bin/sh", data=b"#!x\n", mode=0o755),
                       entry("bin/ls", tarfile.LNKTYPE, link="bin/sh"),
                       entry("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n"),
                       entry("usr/lib", tarfile.SYMTYPE, link="../lib")])
    write("layer_tar", "plain.tar", plain)
    write("layer_tar", "plain.tar.gz", gzip.compress(plain))
    write("layer_tar", "whiteouts.tar", tar_bytes([
        entry("etc/.wh.passwd"), entry("usr/.wh..wh..opq"), entry(".wh..wh.plnk/x"),
        entry("dev/null", tarfile.CHRTYPE, mode=0o666), entry("fifo", tarfile.FIFOTYPE)]))
    write("layer_tar", "pax-xattrs.tar", tar_bytes([
        entry("cap", data=b"x", pax={"SCHILY.xattr.user.a": "b", "SCHILY.xattr.trusted.x": "y"})],
        fmt=tarfile.PAX_FORMAT))
    # What a hostile layer tries: out through '..', absolute names, symlinks
    # (relative and absolute) and hard links through them.
    write("layer_tar", "hostile.tar", tar_bytes([
        entry("../outside/file", data=b"pwned"), entry("/tmp/mezzo-fuzz-layer/outside/abs", data=b"pwned"),
        entry("rel", tarfile.SYMTYPE, link="../outside"), entry("rel/new", data=b"pwned"),
        entry("abs", tarfile.SYMTYPE, link=out), entry("abs/file", data=b"pwned"),
        entry("abs/dir/", tarfile.DIRTYPE), entry("abs/.wh..wh..opq"), entry("abs/.wh.file"),
        entry("hard", tarfile.LNKTYPE, link="abs/file"), entry("hard2", tarfile.LNKTYPE, link="../outside/file"),
        entry("abs", tarfile.DIRTYPE)]))
    write("layer_tar", "symlink-swap.tar", tar_bytes([
        entry("d/", tarfile.DIRTYPE), entry("d/f", data=b"a"), entry("d", tarfile.SYMTYPE, link=out),
        entry("d/f", data=b"pwned"), entry("l", tarfile.SYMTYPE, link=out + "/file"), entry("l", data=b"x"),
        entry("h", tarfile.LNKTYPE, link="l")]))


def docker_config():
    auth = base64.b64encode(b"user:secret").decode()
    write("docker_config", "config.json", json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": auth}, "localhost:5000": {"username": "u", "password": "p"},
        "quay.io": {"identitytoken": "t"}}}))
    write("docker_config", "dockercfg", json.dumps({"https://Index.Docker.io/v1/": {"auth": auth}}))
    write("docker_config", "bearer", 'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                                     'scope="repository:library/busybox:pull,push"')
    write("docker_config", "basic", 'Basic realm="Registry Realm"')
    write("docker_config", "escaped", 'bearer realm="a\\"b", error=invalid_token')


def references():
    for i, r in enumerate(["busybox", "busybox:1.36", "library/busybox:latest", "docker.io/library/busybox",
                           "localhost:5000/ns/app:v1", "[::1]:5000/app@sha256:" + "ab" * 32,
                           "quay.io/a/b/c:tag@sha256:" + "0f" * 32, "registry-1.docker.io/x/y"]):
        write("image_reference", f"{i}", r)


def flags():
    for i, f in enumerate(["5secs", "250ms", "1.5mins", "3", "2hrs", "1weeks", "0.5", "true", "no",
                           "cpus:2;mem:1024;disk:4096;ports:[31000-32000]", "cpus(*):1.5;gpus:0",
                           "ports:[1-2,4-8];names:{a,b}", '[{"name":"cpus","type":"SCALAR","scalar":{"value":3}}]',
                           "--master=m:5050\n--resources=cpus:1\n--strict=false\n--executor_shutdown_grace_period=3secs"]):
        write("flags", f"{i}", f)


def master_resources():
    cpus = {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1.5}}
    more = {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}}
    pts = {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 1, "end": 10}, {"begin": 12, "end": 20}]}}
    pts2 = {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 5, "end": 15}]}}
    st = {"name": "disks", "type": "SET", "set": {"item": ["a", "b"]}}
    # The fuzz target's message: field 1 = list a, field 2 = list b (Resource messages).
    out = b""
    for field, r in [(1, cpus), (1, pts), (1, st), (2, more), (2, pts2), (2, MEM)]:
        body = protobuf("mesos.v1.Resource", "mesos/v1/mesos.proto", r)
        out += bytes([field << 3 | 2, len(body)]) + body
    write("master_resources", "mixed", out)


if __name__ == "__main__":
    for step in (scheduler, executor, operator, agent_protocol, recordio, image_documents, layers,
                 docker_config, references, flags, master_resources):
        step()
    print("seeds written under", CORPUS)
