//! Frameworks' own executors end to end, for each containerizer: a real
//! master and agent run `mezzo-test-executor` (tests/src/bin) as a custom
//! executor (ExecutorInfo without a ContainerInfo in the rust containerizer,
//! with a DOCKER one in the docker containerizer) and the scheduler sees
//! what a Mesos framework would: several tasks on one executor, framework
//! messages both ways, KILL, SHUTDOWN, the executor's exit (FAILURE with its
//! wait status), a registration timeout, an agent restart the executor
//! survives, and the container's memory following its tasks.

use anyhow::{bail, ensure, Context, Result};
use mezzo_proto::mesos::v1::scheduler::event;
use mezzo_proto::mesos::v1::task_status::{Reason, Source};
use mezzo_proto::mesos::v1::{ExecutorInfo, Offer, TaskState, TaskStatus};
use mezzo_tests::{
    assert_clean, cgroup_dir, cgroup_v2, container_id_of, executor_container, executor_task, states, test_executor_info,
    test_executor_path, Cluster, ExecutorContainer, Scheduler,
};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(90);
/// The executor's own memory (MB); its tasks' is added to the container's limit.
const EXECUTOR_MEM: f64 = 32.0;
/// Generous for a loaded machine; Mesos's default is 2 s.
const REREGISTRATION: &str = "--executor_reregistration_timeout=15secs";
/// Where the executor sits in the docker image the tests build.
const IMAGE_EXECUTOR_PATH: &str = "/mezzo-test-executor";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rust,
    Docker,
}

/// Whether a test of `kind` can run here; records the skip when not.
fn can_run(kind: Kind) -> bool {
    if !mezzo_testkit::is_root() {
        mezzo_testkit::skip("needs root (real agent, containers and cgroups)");
        return false;
    }
    if kind == Kind::Docker && !mezzo_testkit::docker_available() {
        mezzo_testkit::skip("needs a running Docker engine");
        return false;
    }
    true
}

/// `docker <args>`: its stdout, trimmed; an error with its stderr when it fails.
fn docker(args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("docker").args(args).output().context("run the docker CLI")?;
    if !out.status.success() {
        bail!("docker {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A docker image holding only `mezzo-test-executor` and the shared
/// libraries `ldd` lists for it (the busybox test image has no libc), under
/// a tag of its own that is removed when the test ends.
struct ExecutorImage {
    tag: String,
}

impl ExecutorImage {
    fn build() -> Result<ExecutorImage> {
        let binary = test_executor_path();
        ensure!(binary.is_file(), "{} is missing (cargo build -p mezzo-tests --bins)", binary.display());
        let root = tempfile::Builder::new().prefix("mezzo-test-executor-image-").tempdir()?;
        let rootfs = root.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("tmp"))?;
        let target = rootfs.join(IMAGE_EXECUTOR_PATH.trim_start_matches('/'));
        // Without its debug info the image is a tenth of the size.
        let stripped = std::process::Command::new("strip").arg("--strip-debug").arg("-o").arg(&target).arg(&binary).status();
        if !stripped.is_ok_and(|s| s.success()) {
            std::fs::copy(&binary, &target)?;
        }
        let ldd = std::process::Command::new("ldd").arg(&binary).output().context("run ldd")?;
        ensure!(ldd.status.success(), "ldd {}: {}", binary.display(), String::from_utf8_lossy(&ldd.stderr));
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or `/lib64/ld-linux-x86-64.so.2 (0x...)`.
            let path = line.split("=>").last().unwrap_or_default().split_whitespace().next().unwrap_or_default();
            if !path.starts_with('/') {
                continue; // linux-vdso.so.1: the kernel's
            }
            let dest = rootfs.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().expect("a library path has a parent"))?;
            // Follows the symlink: the image holds the library itself under the name the loader asks for.
            std::fs::copy(path, &dest).with_context(|| format!("copy {path}"))?;
        }
        let tarball = root.path().join("rootfs.tar");
        let tar = std::process::Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tarball).arg(".").status()?;
        ensure!(tar.success(), "tar of the executor image failed");
        let tag = format!("mezzo-test-executor:{}", uuid::Uuid::new_v4().simple());
        docker(&["import", &tarball.display().to_string(), &tag])?;
        Ok(ExecutorImage { tag })
    }
}

impl Drop for ExecutorImage {
    fn drop(&mut self) {
        // After a failed test a container of the image may be left (assert_clean
        // reported it when it could): it goes first, or the image would stay dangling.
        let left = docker(&["ps", "-aq", "--filter", &format!("ancestor={}", self.tag)]).unwrap_or_default();
        for id in left.split_whitespace() {
            let _ = docker(&["rm", "-f", "-v", id]);
        }
        if let Err(e) = docker(&["rmi", "-f", &self.tag]) {
            eprintln!("could not remove image {}: {e}", self.tag);
        }
    }
}

/// One test's cluster, scheduler and executor image; offers, updates,
/// framework messages and FAILURE events are kept apart so that waiting
/// for one never drops another. Fields drop in order: the cluster (and its
/// containers) goes before the image.
struct Test {
    kind: Kind,
    sched: Scheduler,
    cluster: Cluster,
    image: Option<ExecutorImage>,
    offers: VecDeque<Offer>,
    updates: VecDeque<TaskStatus>,
    messages: VecDeque<event::Message>,
    failures: VecDeque<event::Failure>,
}

impl Test {
    async fn start(kind: Kind, name: &str, agent_args: &[&str], checkpoint: bool) -> Result<Test> {
        let image = match kind {
            Kind::Docker => Some(ExecutorImage::build()?),
            Kind::Rust => None,
        };
        let containerizers = match kind {
            Kind::Docker => "docker",
            Kind::Rust => "rust",
        };
        let cluster = Cluster::start_with(containerizers, agent_args).await?;
        let sched = match checkpoint {
            true => Scheduler::subscribe_checkpointing(&cluster.master, name).await?,
            false => Scheduler::subscribe(&cluster.master, name).await?,
        };
        Ok(Test {
            kind,
            sched,
            cluster,
            image,
            offers: VecDeque::new(),
            updates: VecDeque::new(),
            messages: VecDeque::new(),
            failures: VecDeque::new(),
        })
    }

    /// The test executor as executor `id` of this test's kind.
    fn executor(&self, id: &str, args: &[&str]) -> ExecutorInfo {
        let container = match &self.image {
            Some(image) => ExecutorContainer::Docker { image: &image.tag, path: IMAGE_EXECUTOR_PATH },
            None => ExecutorContainer::Host,
        };
        test_executor_info(id, container, EXECUTOR_MEM, args)
    }

    /// Takes one event (within `deadline`) into the queues; updates are acknowledged.
    async fn pump(&mut self, deadline: Instant) -> Result<()> {
        let ev = self.sched.next_event(deadline.saturating_duration_since(Instant::now())).await?;
        if let Some(offers) = ev.offers {
            self.offers.extend(offers.offers);
        }
        if let Some(update) = ev.update {
            self.sched.acknowledge(&update.status).await?;
            self.updates.push_back(update.status);
        }
        if let Some(message) = ev.message {
            self.messages.push_back(message);
        }
        if let Some(failure) = ev.failure {
            self.failures.push_back(failure);
        }
        Ok(())
    }

    async fn offer(&mut self) -> Result<Offer> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(o) = self.offers.pop_front() {
                return Ok(o);
            }
            self.pump(deadline).await.context("waiting for an offer")?;
        }
    }

    /// The next update of `task`, within `timeout`.
    async fn update(&mut self, task: &str, timeout: Duration) -> Result<TaskStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.updates.iter().position(|u| u.task_id.value == task) {
                return Ok(self.updates.remove(i).expect("found above"));
            }
            self.pump(deadline).await.with_context(|| format!("waiting for an update of {task}"))?;
        }
    }

    /// Updates of `task` up to the first in `state` or a terminal one.
    async fn until(&mut self, task: &str, state: TaskState) -> Result<Vec<TaskStatus>> {
        let deadline = Instant::now() + TIMEOUT;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let st = self.update(task, left).await.with_context(|| format!("updates of {task} so far: {:?}", states(&out)))?;
            let done = st.state() == state || st.state().is_terminal();
            out.push(st);
            if done {
                return Ok(out);
            }
        }
    }

    /// The updates of `task` up to its terminal one, which must be in `state`.
    async fn ends(&mut self, task: &str, state: TaskState) -> Result<Vec<TaskStatus>> {
        let updates = self.until(task, state).await?;
        let last = updates.last().expect("until returns at least one update");
        ensure!(last.state() == state, "task {task} ended {:?}, not {state:?}: {last:?}", states(&updates));
        ensure!(state.is_terminal(), "{state:?} is not terminal");
        Ok(updates)
    }

    /// Waits for TASK_RUNNING of each of `tasks` (anything terminal first is an error).
    async fn running(&mut self, tasks: &[&str]) -> Result<Vec<TaskStatus>> {
        let mut out = Vec::new();
        for task in tasks {
            let updates = self.until(task, TaskState::TaskRunning).await?;
            let last = updates.last().expect("until returns at least one update").clone();
            ensure!(last.state() == TaskState::TaskRunning, "task {task} ended before it ran: {:?} {last:?}", states(&updates));
            out.push(last);
        }
        Ok(out)
    }

    /// Launches `tasks` (id, data) on `exec` one at a time, the first on
    /// `offer` and each other on the next offer once the one before runs:
    /// all but the first reach an executor that is already running. Their
    /// TASK_RUNNING updates.
    async fn launch_in_turn(&mut self, offer: &Offer, exec: &ExecutorInfo, tasks: &[(&str, &str)]) -> Result<Vec<TaskStatus>> {
        let mut running = Vec::new();
        for (i, (id, data)) in tasks.iter().enumerate() {
            let offer = if i == 0 { offer.clone() } else { self.offer().await? };
            self.sched.launch_tasks(&offer, vec![executor_task(&offer, id, exec, data, 64.0)]).await?;
            running.extend(self.running(&[id]).await?);
        }
        Ok(running)
    }

    /// The next framework message, within `timeout`.
    async fn message(&mut self, timeout: Duration) -> Result<event::Message> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self.messages.pop_front() {
                return Ok(m);
            }
            self.pump(deadline).await.context("waiting for a framework message")?;
        }
    }

    /// The next FAILURE event, within `timeout`.
    async fn failure(&mut self, timeout: Duration) -> Result<event::Failure> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(f) = self.failures.pop_front() {
                return Ok(f);
            }
            self.pump(deadline).await.context("waiting for a FAILURE event")?;
        }
    }

    /// The container of executor `executor_id`: from TASK_RUNNING when the
    /// agent put it there, else from the agent's GET_CONTAINERS.
    async fn container_of(&self, executor_id: &str, running: &TaskStatus) -> Result<String> {
        if let Some(cid) = container_id_of(running) {
            return Ok(cid);
        }
        executor_container(&self.cluster, &self.sched.framework_id, executor_id)
            .await?
            .with_context(|| format!("the agent lists no container for executor {executor_id}"))
    }

    /// Whether the agent still lists a container for `executor_id`.
    async fn has_container(&self, executor_id: &str) -> Result<bool> {
        Ok(executor_container(&self.cluster, &self.sched.framework_id, executor_id).await?.is_some())
    }

    /// Waits until the agent lists no container for `executor_id` and no
    /// process of that executor is left.
    async fn executor_gone(&self, executor_id: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let pids = executor_pids(&self.sched.framework_id.value, executor_id);
            if pids.is_empty() && !self.has_container(executor_id).await? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("executor {executor_id} still there after {timeout:?}: pids {pids:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The memory limits of container `cid` in bytes, (hard, soft): its
    /// memory cgroup's limit and soft limit (`memory.low` on v2) in the rust
    /// containerizer, the engine's HostConfig.Memory and MemoryReservation
    /// in the docker one.
    fn memory_limits(&self, cid: &str) -> Result<(u64, u64)> {
        let (hard, soft) = match self.kind {
            Kind::Docker => {
                let both = docker(&["inspect", "-f", "{{.HostConfig.Memory}} {{.HostConfig.MemoryReservation}}", &format!("mesos-{cid}")])?;
                let (hard, soft) = both.split_once(' ').with_context(|| format!("docker inspect: '{both}'"))?;
                (hard.to_string(), soft.to_string())
            }
            Kind::Rust => {
                let (hard, soft) = if cgroup_v2() { ("memory.max", "memory.low") } else { ("memory.limit_in_bytes", "memory.soft_limit_in_bytes") };
                let dir = cgroup_dir("memory", &format!("{}/{cid}", self.cluster.cgroups_root));
                let read = |file: &str| std::fs::read_to_string(dir.join(file)).with_context(|| format!("read {}", dir.join(file).display()));
                (read(hard)?, read(soft)?)
            }
        };
        let parse = |text: &str| text.trim().parse::<u64>().with_context(|| format!("memory limit '{}'", text.trim()));
        Ok((parse(&hard)?, parse(&soft)?))
    }

    /// Tears the framework down, stops the cluster, checks that nothing is
    /// left, and adds the agent's and the executors' logs to a failure.
    async fn finish(mut self, result: Result<()>) -> Result<()> {
        self.sched.teardown().await.ok();
        let result = result.map_err(|e| anyhow::anyhow!("{e:#}\n\n{}", self.logs()));
        if let Err(e) = &result {
            // Shown even when the clean-up check below panics.
            eprintln!("Error: {e}");
        }
        self.cluster.stop();
        assert_clean(&self.cluster);
        result
    }

    /// The agent's log and every executor's stderr (their tails).
    fn logs(&self) -> String {
        let tail = |text: &str, lines: usize| {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        };
        let mut out = format!("agent log (tail):\n{}\n", tail(&self.cluster.agent_log(), 150));
        let found = std::process::Command::new("find")
            .arg(self.cluster.agent_work_dir())
            .args(["-path", "*/executors/*/runs/*/stderr", "-not", "-path", "*/latest/*"])
            .output();
        for file in found.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default().lines() {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            out.push_str(&format!("{file}:\n{}\n", tail(&text, 60)));
        }
        out
    }
}

/// Pids of the live `mezzo-test-executor` processes of executor
/// `executor_id` of framework `framework_id`, found by their environment.
fn executor_pids(framework_id: &str, executor_id: &str) -> Vec<i32> {
    let want = [format!("MESOS_FRAMEWORK_ID={framework_id}"), format!("MESOS_EXECUTOR_ID={executor_id}")];
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        // comm is cut to 15 characters.
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if !"mezzo-test-executor".starts_with(comm.trim()) || comm.trim().is_empty() {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        if want.iter().all(|w| vars.contains(&w.as_bytes())) && mezzo_tests::alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

/// The single live process of executor `executor_id`.
fn executor_pid(t: &Test, executor_id: &str) -> Result<i32> {
    let pids = executor_pids(&t.sched.framework_id.value, executor_id);
    match pids[..] {
        [pid] => Ok(pid),
        _ => bail!("expected one process of executor {executor_id}, found {pids:?}"),
    }
}

/// The environment process `pid` started with.
fn environment(pid: i32) -> Result<std::collections::HashMap<String, String>> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).with_context(|| format!("environment of {pid}"))?;
    Ok(environ
        .split(|b| *b == 0)
        .filter_map(|v| String::from_utf8_lossy(v).split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect())
}

/// The executor `pid` of `t` got Mesos's environment (slave.cpp's
/// `executorEnvironment`), with `MESOS_CHECKPOINT` = `checkpoint`.
fn has_mesos_environment(t: &Test, pid: i32, executor_id: &str, checkpoint: &str) -> Result<std::collections::HashMap<String, String>> {
    let env = environment(pid)?;
    let want = [
        ("MESOS_FRAMEWORK_ID", Some(t.sched.framework_id.value.as_str())),
        ("MESOS_EXECUTOR_ID", Some(executor_id)),
        ("MESOS_AGENT_ENDPOINT", Some(t.cluster.agent.as_str())),
        ("MESOS_CHECKPOINT", Some(checkpoint)),
        ("MESOS_DIRECTORY", None),
        ("MESOS_SANDBOX", None),
        ("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", None),
        ("MESOS_EXECUTOR_AUTHENTICATION_TOKEN", None),
    ];
    for (name, value) in want {
        let got = env.get(name).with_context(|| format!("the executor's environment has no {name}"))?;
        if let Some(value) = value {
            ensure!(got == value, "{name}={got}, expected {value}");
        }
    }
    Ok(env)
}

/// The stderr (its log) of executor `executor_id`, from its sandbox.
fn executor_stderr(t: &Test, executor_id: &str) -> Result<String> {
    let out = std::process::Command::new("find")
        .arg(t.cluster.agent_work_dir())
        .args(["-path", &format!("*/executors/{executor_id}/runs/*/stderr"), "-not", "-path", "*/latest/*"])
        .output()?;
    let files = String::from_utf8_lossy(&out.stdout).into_owned();
    let file = files.lines().next().with_context(|| format!("no stderr in the sandbox of executor {executor_id}"))?;
    Ok(std::fs::read_to_string(file)?)
}

/// Every update is the executor's own, for `executor_id`, with a 16-byte uuid.
fn from_executor(updates: &[TaskStatus], executor_id: &str) -> Result<()> {
    for u in updates {
        ensure!(u.source() == Source::Executor, "update not from the executor: {u:?}");
        ensure!(u.executor_id.as_ref().map(|e| e.value.as_str()) == Some(executor_id), "update of another executor: {u:?}");
        ensure!(u.uuid.as_ref().map(Vec::len) == Some(16), "update without a 16-byte uuid: {u:?}");
        ensure!(u.agent_id.is_some(), "update without agent_id: {u:?}");
    }
    Ok(())
}

/// Two tasks on one executor (one ACCEPT; the second arrives while the
/// executor registers) both run and finish, on one container; protobuf on
/// the executor's side.
async fn two_tasks_on_one_executor_both_finish(kind: Kind) -> Result<()> {
    let mut t = Test::start(kind, "custom-two", &[], false).await?;
    let result = async {
        let offer = t.offer().await?;
        let exec = t.executor("exec-two", &["--content-type=protobuf"]);
        t.sched.launch_tasks(&offer, vec![executor_task(&offer, "t1", &exec, "run 3", 64.0), executor_task(&offer, "t2", &exec, "run 4", 64.0)]).await?;
        let running = t.running(&["t1", "t2"]).await?;
        let (code, body) = t.cluster.agent_call_json(&serde_json::json!({"type": "GET_CONTAINERS"})).await?;
        ensure!(code == 200, "GET_CONTAINERS: {code} {body}");
        let containers: serde_json::Value = serde_json::from_str(&body)?;
        let count = containers["get_containers"]["containers"].as_array().map(Vec::len).unwrap_or(0);
        ensure!(count == 1, "one container for the executor and its two tasks, the agent lists {count}: {body}");
        let pid = executor_pid(&t, "exec-two")?;
        has_mesos_environment(&t, pid, "exec-two", "0")?;
        for task in ["t1", "t2"] {
            let mut updates = vec![running[if task == "t1" { 0 } else { 1 }].clone()];
            updates.extend(t.ends(task, TaskState::TaskFinished).await?);
            ensure!(states(&updates) == ["TASK_RUNNING", "TASK_FINISHED"], "{task}: {:?}", states(&updates));
            from_executor(&updates, "exec-two")?;
        }
        // A custom executor outlives its tasks, as in Mesos: the framework ends it.
        ensure!(mezzo_tests::alive(pid), "the executor exited when its tasks finished");
        Ok(())
    }
    .await;
    t.finish(result).await
}

/// A scheduler MESSAGE reaches the executor, which echoes it back as a
/// scheduler MESSAGE event naming the agent and the executor; an oversized
/// one is refused.
async fn framework_message_there_and_back(kind: Kind) -> Result<()> {
    let mut t = Test::start(kind, "custom-message", &[], false).await?;
    let result = async {
        let offer = t.offer().await?;
        let exec = t.executor("exec-msg", &[]);
        t.sched.launch_tasks(&offer, vec![executor_task(&offer, "t1", &exec, "forever", 64.0)]).await?;
        t.running(&["t1"]).await?;
        for n in 0..2 {
            let text = format!("hello {n} {}", uuid::Uuid::new_v4());
            t.sched.message(&offer.agent_id, "exec-msg", format!("echo {text}").as_bytes()).await?;
            let m = t.message(Duration::from_secs(20)).await?;
            ensure!(m.data == text.as_bytes(), "echoed {:?}, sent {text:?}", String::from_utf8_lossy(&m.data));
            ensure!(m.agent_id == offer.agent_id, "MESSAGE names agent {:?}", m.agent_id);
            ensure!(m.executor_id.value == "exec-msg", "MESSAGE names executor {:?}", m.executor_id);
        }
        // Over the bound: refused with 400 by the master, never forwarded.
        let big = vec![b'x'; mezzo_proto::MAX_FRAMEWORK_MESSAGE_BYTES + 1];
        let refused = t.sched.message(&offer.agent_id, "exec-msg", &big).await;
        ensure!(refused.as_ref().is_err_and(|e| e.to_string().contains("400")), "oversized MESSAGE: {refused:?}");
        t.sched.kill("t1", Some(offer.agent_id.clone())).await?;
        t.ends("t1", TaskState::TaskKilled).await?;
        Ok(())
    }
    .await;
    t.finish(result).await
}

/// KILL of one of two tasks: TASK_KILLED from the executor, the other finishes.
async fn kill_one_of_two_tasks(kind: Kind) -> Result<()> {
    let mut t = Test::start(kind, "custom-kill", &[], false).await?;
    let result = async {
        let offer = t.offer().await?;
        let exec = t.executor("exec-kill", &[]);
        t.launch_in_turn(&offer, &exec, &[("t1", "forever"), ("t2", "run 5")]).await?;
        let started = Instant::now();
        t.sched.kill("t1", Some(offer.agent_id.clone())).await?;
        let killed = t.ends("t1", TaskState::TaskKilled).await?;
        from_executor(&killed, "exec-kill")?;
        ensure!(started.elapsed() < Duration::from_secs(5), "KILL took {:?}", started.elapsed());
        let finished = t.ends("t2", TaskState::TaskFinished).await?;
        from_executor(&finished, "exec-kill")?;
        Ok(())
    }
    .await;
    t.finish(result).await
}

/// SHUTDOWN of the executor: it kills its tasks (TASK_KILLED) and exits;
/// its container goes, and the scheduler hears that the executor exited 0.
async fn shutdown_ends_the_executor_and_its_tasks(kind: Kind) -> Result<()> {
    let mut t = Test::start(kind, "custom-shutdown", &[], false).await?;
    let result = async {
        let offer = t.offer().await?;
        let exec = t.executor("exec-shut", &[]);
        t.launch_in_turn(&offer, &exec, &[("t1", "forever"), ("t2", "forever")]).await?;
        executor_pid(&t, "exec-shut")?;
        t.sched.shutdown_executor(&offer.agent_id, "exec-shut").await?;
        for task in ["t1", "t2"] {
            t.ends(task, TaskState::TaskKilled).await?;
        }
        // The cluster's --executor_shutdown_grace_period is 2 s.
        t.executor_gone("exec-shut", Duration::from_secs(15)).await?;
        let failure = t.failure(Duration::from_secs(20)).await?;
        ensure!(failure.executor_id.as_ref().map(|e| e.value.as_str()) == Some("exec-shut"), "{failure:?}");
        ensure!(failure.agent_id.as_ref() == Some(&offer.agent_id), "{failure:?}");
        ensure!(failure.status == Some(0), "the executor exited 0 after SHUTDOWN: {failure:?}");
        Ok(())
    }
    .await;
    t.finish(result).await
}

/// The executor exits 7 with two tasks running: the scheduler gets FAILURE
/// with agent_id, executor_id and the wait status (7 << 8, as Mesos passes
/// the executor's `waitpid` status on), and TASK_FAILED from the agent with
/// REASON_EXECUTOR_TERMINATED for both tasks.
async fn executor_exit_fails_its_tasks_and_tells_the_scheduler(kind: Kind) -> Result<()> {
    let mut t = Test::start(kind, "custom-exit", &[], false).await?;
    let result = async {
        let offer = t.offer().await?;
        let exec = t.executor("exec-exit", &[]);
        t.launch_in_turn(&offer, &exec, &[("t1", "forever"), ("t2", "forever")]).await?;
        t.sched.message(&offer.agent_id, "exec-exit", b"exit 7").await?;
        for task in ["t1", "t2"] {
            let updates = t.ends(task, TaskState::TaskFailed).await?;
            let last = updates.last().expect("ends returns the terminal update");
            ensure!(last.reason() == Reason::ExecutorTerminated, "{task}: {last:?}");
            ensure!(last.source() == Source::Agent, "{task}: the agent reports the executor's loss: {last:?}");
        }
        let failure = t.failure(Duration::from_secs(30)).await?;
        ensure!(failure.agent_id.as_ref() == Some(&offer.agent_id), "{failure:?}");
        ensure!(failure.executor_id.as_ref().map(|e| e.value.as_str()) == Some("exec-exit"), "{failure:?}");
        ensure!(failure.status == Some(7 << 8), "FAILURE.status is the wait status of exit 7 (1792): {failure:?}");
        t.executor_gone("exec-exit", Duration::from_secs(15)).await?;
        Ok(())
    }
    .await;
    t.finish(result).await
}

/// An executor that never subscribes is destroyed after
/// `--executor_registration_timeout`; its task fails with
/// REASON_EXECUTOR_REGISTRATION_TIMEOUT.
async fn executor_that_never_subscribes_times_out(kind: Kind) -> Result<()> {
    let mut t = Test::start(kind, "custom-regtimeout", &["--executor_registration_timeout=2secs"], false).await?;
    let result = async {
        let offer = t.offer().await?;
        let exec = t.executor("exec-silent", &["--no-subscribe"]);
        let accepted = t.sched.launch_tasks(&offer, vec![executor_task(&offer, "t1", &exec, "forever", 64.0)]).await?;
        let updates = t.ends("t1", TaskState::TaskFailed).await?;
        let last = updates.last().expect("ends returns the terminal update");
        ensure!(last.reason() == Reason::ExecutorRegistrationTimeout, "{last:?}");
        ensure!(last.source() == Source::Agent, "{last:?}");
        let took = accepted.elapsed();
        ensure!(took >= Duration::from_secs(2), "failed after {took:?}, before the registration timeout");
        ensure!(took < Duration::from_secs(60), "failed only after {took:?}");
        t.executor_gone("exec-silent", Duration::from_secs(15)).await?;
        Ok(())
    }
    .await;
    t.finish(result).await
}

/// A checkpointing framework's executor survives an agent restart: a task
/// that finishes while the agent is down has its TASK_FINISHED delivered
/// after the executor re-subscribes with it unacknowledged; messages and
/// KILL reach the same executor process afterwards.
async fn executor_reconnects_after_an_agent_restart(kind: Kind) -> Result<()> {
    let mut t = Test::start(kind, "custom-restart", &[REREGISTRATION], true).await?;
    let result = async {
        let offer = t.offer().await?;
        let exec = t.executor("exec-restart", &[]);
        let running = t.launch_in_turn(&offer, &exec, &[("t1", "forever"), ("t2", "run 4")]).await?;
        let pid = executor_pid(&t, "exec-restart")?;
        let env = has_mesos_environment(&t, pid, "exec-restart", "1")?;
        // Only for checkpointing frameworks: how long and how often to try to re-subscribe.
        // The executor must be able to try again within the agent's re-registration window.
        let backoff_max = env.get("MESOS_SUBSCRIPTION_BACKOFF_MAX").context("no MESOS_SUBSCRIPTION_BACKOFF_MAX")?;
        let parsed = mezzo_proto::duration::parse(backoff_max).map_err(|e| anyhow::anyhow!("MESOS_SUBSCRIPTION_BACKOFF_MAX={backoff_max}: {e}"))?;
        ensure!(parsed <= Duration::from_secs(15), "MESOS_SUBSCRIPTION_BACKOFF_MAX={backoff_max} is over the agent's 15secs");
        let recovery = env.get("MESOS_RECOVERY_TIMEOUT").context("no MESOS_RECOVERY_TIMEOUT")?;
        mezzo_proto::duration::parse(recovery).map_err(|e| anyhow::anyhow!("MESOS_RECOVERY_TIMEOUT={recovery}: {e}"))?;
        let cid = t.container_of("exec-restart", &running[0]).await?;
        t.cluster.crash_agent();
        // t2 ends while the agent is down: its TASK_FINISHED waits in the executor.
        tokio::time::sleep(Duration::from_secs(5)).await;
        ensure!(mezzo_tests::alive(pid), "the executor died with the agent");
        t.cluster.restart_agent().await?;
        mezzo_tests::wait_recovered(&t.cluster, &cid).await?;
        let finished = t.ends("t2", TaskState::TaskFinished).await?;
        from_executor(&finished, "exec-restart")?;
        // It came through the re-subscription: the SUBSCRIBE carried it unacknowledged.
        let log = executor_stderr(&t, "exec-restart")?;
        let resent = log.lines().filter_map(|l| l.split("task(s), ").nth(1)?.split(' ').next()?.parse::<u32>().ok()).max();
        ensure!(resent.is_some_and(|n| n >= 1), "no SUBSCRIBE with unacknowledged updates in the executor's log:\n{log}");
        let text = format!("after restart {}", uuid::Uuid::new_v4());
        t.sched.message(&offer.agent_id, "exec-restart", format!("echo {text}").as_bytes()).await?;
        let m = t.message(Duration::from_secs(30)).await?;
        ensure!(m.data == text.as_bytes(), "echoed {:?}", String::from_utf8_lossy(&m.data));
        t.sched.kill("t1", Some(offer.agent_id.clone())).await?;
        let killed = t.ends("t1", TaskState::TaskKilled).await?;
        from_executor(&killed, "exec-restart")?;
        ensure!(executor_pid(&t, "exec-restart")? == pid, "the executor was replaced");
        Ok(())
    }
    .await;
    t.finish(result).await
}

/// The container's memory limit is the executor's plus its tasks'; when a
/// task ends its soft limit (the reservation) shrinks to what is left. As in
/// Mesos (both containerizers' `update`: "only update if new limit is
/// higher"), the hard limit is not required to come down, as lowering it
/// could OOM-kill the executor; it never drops below what is left either.
async fn memory_limit_follows_the_tasks(kind: Kind) -> Result<()> {
    let mut t = Test::start(kind, "custom-memory", &[], false).await?;
    let result = async {
        let offer = t.offer().await?;
        let exec = t.executor("exec-mem", &[]);
        t.sched.launch_tasks(&offer, vec![executor_task(&offer, "t1", &exec, "forever", 64.0), executor_task(&offer, "t2", &exec, "forever", 96.0)]).await?;
        let running = t.running(&["t1", "t2"]).await?;
        let cid = t.container_of("exec-mem", &running[0]).await?;
        let mib = |mb: f64| (mb as u64) << 20;
        let both = mib(EXECUTOR_MEM + 64.0 + 96.0);
        wait_for_limits(&t, &cid, "both tasks run", |hard, soft| hard == both && soft == both).await?;
        t.sched.kill("t2", Some(offer.agent_id.clone())).await?;
        t.ends("t2", TaskState::TaskKilled).await?;
        let left = mib(EXECUTOR_MEM + 64.0);
        wait_for_limits(&t, &cid, "t2 ended", |hard, soft| soft == left && (left..=both).contains(&hard)).await?;
        // The executor stays, with its own memory and t1's.
        ensure!(t.has_container("exec-mem").await?, "the executor's container went with t2");
        Ok(())
    }
    .await;
    t.finish(result).await
}

/// Waits (10 s at most) until container `cid`'s memory limits (hard, soft) satisfy `ok`.
async fn wait_for_limits(t: &Test, cid: &str, when: &str, ok: impl Fn(u64, u64) -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (hard, soft) = t.memory_limits(cid)?;
        if ok(hard, soft) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("memory limits of container {cid} when {when}: hard {} MB, soft {} MB", hard >> 20, soft >> 20);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

macro_rules! per_containerizer {
    ($($name:ident),* $(,)?) => {
        mod rust {
            use super::*;
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() -> Result<()> {
                if !can_run(Kind::Rust) { return Ok(()); }
                super::$name(Kind::Rust).await
            } )*
        }
        mod docker {
            use super::*;
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() -> Result<()> {
                if !can_run(Kind::Docker) { return Ok(()); }
                super::$name(Kind::Docker).await
            } )*
        }
    };
}

per_containerizer!(
    two_tasks_on_one_executor_both_finish,
    framework_message_there_and_back,
    kill_one_of_two_tasks,
    shutdown_ends_the_executor_and_its_tasks,
    executor_exit_fails_its_tasks_and_tells_the_scheduler,
    executor_that_never_subscribes_times_out,
    executor_reconnects_after_an_agent_restart,
    memory_limit_follows_the_tasks,
);

/// An executor that aborts (SIGABRT) is reported with the signal in its
/// wait status (rust containerizer: the executor is the container's
/// process on the host's kernel, nothing in between rewrites the status).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_executor_abort_is_reported_with_its_signal() -> Result<()> {
    if !can_run(Kind::Rust) {
        return Ok(());
    }
    let mut t = Test::start(Kind::Rust, "custom-abort", &[], false).await?;
    let result = async {
        let offer = t.offer().await?;
        let exec = t.executor("exec-abort", &[]);
        t.sched.launch_tasks(&offer, vec![executor_task(&offer, "t1", &exec, "forever", 64.0)]).await?;
        t.running(&["t1"]).await?;
        t.sched.message(&offer.agent_id, "exec-abort", b"crash").await?;
        let updates = t.ends("t1", TaskState::TaskFailed).await?;
        ensure!(updates.last().is_some_and(|u| u.reason() == Reason::ExecutorTerminated), "{updates:?}");
        let failure = t.failure(Duration::from_secs(30)).await?;
        let status = failure.status.context("FAILURE without a status")?;
        // WTERMSIG: the low 7 bits (0x80 is the core-dump flag).
        ensure!(status & 0x7f == nix::sys::signal::Signal::SIGABRT as i32, "FAILURE.status {status:#x} is not SIGABRT's");
        t.executor_gone("exec-abort", Duration::from_secs(15)).await?;
        Ok(())
    }
    .await;
    t.finish(result).await
}

/// A task whose data the executor does not understand fails, from the
/// executor, without harming the executor's other task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_executor_fails_a_task_it_cannot_run_and_keeps_the_others() -> Result<()> {
    if !can_run(Kind::Rust) {
        return Ok(());
    }
    let mut t = Test::start(Kind::Rust, "custom-fail", &[], false).await?;
    let result = async {
        let offer = t.offer().await?;
        let exec = t.executor("exec-fail", &[]);
        let tasks = vec![executor_task(&offer, "t1", &exec, "fail 3", 64.0), executor_task(&offer, "t2", &exec, "run 2", 64.0)];
        t.sched.launch_tasks(&offer, tasks).await?;
        let failed = t.ends("t1", TaskState::TaskFailed).await?;
        from_executor(&failed, "exec-fail")?;
        let message = failed.last().and_then(|u| u.message.clone()).unwrap_or_default();
        ensure!(message.contains("status 3"), "message: {message}");
        t.ends("t2", TaskState::TaskFinished).await?;
        Ok(())
    }
    .await;
    t.finish(result).await
}

/// A third-party executor that sends no token works when the agent runs
/// with `--authenticate_http_executors=false`, as on Mesos.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_executor_without_a_token_works_when_executors_are_not_authenticated() -> Result<()> {
    if !can_run(Kind::Rust) {
        return Ok(());
    }
    let mut t = Test::start(Kind::Rust, "custom-noauth", &["--authenticate_http_executors=false"], false).await?;
    let result = async {
        let offer = t.offer().await?;
        let exec = t.executor("exec-noauth", &["--no-authentication"]);
        t.sched.launch_tasks(&offer, vec![executor_task(&offer, "t1", &exec, "run 1", 64.0)]).await?;
        let updates = t.ends("t1", TaskState::TaskFinished).await?;
        from_executor(&updates, "exec-noauth")?;
        ensure!(states(&updates) == ["TASK_RUNNING", "TASK_FINISHED"], "{:?}", states(&updates));
        Ok(())
    }
    .await;
    t.finish(result).await
}
