#![allow(deprecated)] // Resource.role: "*" is still what the default role looks like
//! End-to-end harness: starts a real `mezzo-master` and `mezzo-agent` on
//! loopback, and a small scheduler that speaks the v1 scheduler API in JSON
//! as framework clients do.

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use mezzo_proto::mesos::v1::scheduler::{call, event, Call, Event};
use mezzo_proto::mesos::v1::{
    AgentId, CommandInfo, FrameworkId, FrameworkInfo, Offer, OfferId, Resource, TaskId, TaskInfo,
    TaskStatus,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub mod group;

/// Directory holding the workspace's built binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("MEZZO_BIN_DIR") {
        return PathBuf::from(d);
    }
    // tests/ -> workspace root -> target/debug
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target"));
    target.join("debug")
}

/// Directory of the project's own test images (`scripts/build-test-images.sh`).
pub fn test_images_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("target").join("test-images")
}

/// Whether the kernel's cgroups are the unified (v2) hierarchy, as in
/// scripts/v2-guest.sh's guest.
pub fn cgroup_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// Directory of cgroup `path` (relative to the root) in v1 hierarchy
/// `controller`, or in the unified hierarchy on v2.
pub fn cgroup_dir(controller: &str, path: &str) -> PathBuf {
    let root = Path::new("/sys/fs/cgroup");
    if cgroup_v2() {
        root.join(path)
    } else {
        root.join(controller).join(path)
    }
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running process that is killed (and reaped) when dropped.
pub struct Proc {
    child: Child,
    name: &'static str,
}

impl Proc {
    /// Starts `program` with `args`, its output appended to `log`.
    pub fn spawn(name: &'static str, program: &Path, args: &[String], log: &Path) -> Result<Proc> {
        // Appended to: an agent started again after a crash logs after the first.
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let child = std::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .spawn()
            .with_context(|| format!("spawn {} (run `cargo build --workspace --bins` first)", program.display()))?;
        Ok(Proc { child, name })
    }

    /// Kills the process with SIGKILL (a crash) and reaps it.
    pub fn crash(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` and waits up to `within` for the process to exit;
    /// its exit status, or `None` while it still runs.
    pub fn signal_and_wait(&mut self, signal: nix::sys::signal::Signal, within: Duration) -> Option<std::process::ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, signal);
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the process with SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        self.stop_with(nix::sys::signal::Signal::SIGTERM, grace)
    }

    /// Stops the process with `signal`, then SIGKILL after `grace`.
    pub fn stop_with(&mut self, signal: nix::sys::signal::Signal, grace: Duration) {
        if self.signal_and_wait(signal, grace).is_some() {
            return;
        }
        eprintln!("{} did not stop in {:?}; killing it", self.name, grace);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop(Duration::from_secs(20));
        }
    }
}

/// A master and one agent on loopback, with their own work directory.
pub struct Cluster {
    pub master: String,
    pub agent: String,
    pub work_dir: tempfile::TempDir,
    pub cgroups_root: String,
    agent_args: Vec<String>,
    master_args: Vec<String>,
    /// The agent was crashed and not started again: its executors still run.
    agent_crashed: bool,
    agent_proc: Option<Proc>,
    master_proc: Option<Proc>,
}

impl Cluster {
    /// Starts a master and an agent with `--containerizers=<containerizers>` and
    /// waits until the agent has registered.
    pub async fn start(containerizers: &str) -> Result<Cluster> {
        Cluster::start_with(containerizers, &[]).await
    }

    /// Like `start`, with more agent flags (`--name=value`; later flags win).
    pub async fn start_with(containerizers: &str, extra_agent_args: &[&str]) -> Result<Cluster> {
        Cluster::start_full(containerizers, &[], extra_agent_args).await
    }

    /// Like `start_with`, with more master flags too.
    pub async fn start_full(containerizers: &str, extra_master_args: &[&str], extra_agent_args: &[&str]) -> Result<Cluster> {
        let bins = bin_dir();
        let work_dir = tempfile::Builder::new().prefix("mezzo-e2e-").tempdir()?;
        let master_port = free_port();
        let agent_port = free_port();
        let master = format!("127.0.0.1:{master_port}");
        let agent = format!("127.0.0.1:{agent_port}");
        let mut master_args = vec!["--ip=127.0.0.1".to_string(), format!("--port={master_port}")];
        master_args.extend(extra_master_args.iter().map(|a| a.to_string()));
        let master_proc = Proc::spawn("mezzo-master", &bins.join("mezzo-master"), &master_args, &work_dir.path().join("master.log"))?;
        let cgroups_root = format!("mezzo-e2e-{}-{agent_port}", std::process::id());
        let mut agent_args = vec![
            format!("--master={master}"),
            "--ip=127.0.0.1".into(),
            format!("--port={agent_port}"),
            format!("--work_dir={}", work_dir.path().join("agent").display()),
            format!("--containerizers={containerizers}"),
            format!("--docker_registry={}", test_images_dir().display()),
            format!("--cgroups_root={cgroups_root}"),
            "--resources=cpus:2;mem:2048;disk:4096;ports:[31000-32000]".into(),
            "--executor_shutdown_grace_period=2secs".into(),
            // Ended docker containers are removed at once, not after Mesos's 6 hours.
            "--docker_remove_delay=0secs".into(),
        ];
        agent_args.extend(extra_agent_args.iter().map(|a| a.to_string()));
        let agent_proc = Proc::spawn("mezzo-agent", &bins.join("mezzo-agent"), &agent_args, &work_dir.path().join("agent.log"))?;
        let cluster = Cluster {
            master,
            agent,
            work_dir,
            cgroups_root,
            agent_args,
            master_args,
            agent_crashed: false,
            agent_proc: Some(agent_proc),
            master_proc: Some(master_proc),
        };
        cluster.wait_for_agent(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    async fn wait_for_agent(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let client = reqwest::Client::new();
        while Instant::now() < deadline {
            if let Ok(resp) = client.get(format!("http://{}/state", self.master)).send().await {
                if let Ok(v) = resp.bytes().await.map(|b| serde_json::from_slice::<serde_json::Value>(&b)) {
                    let Ok(v) = v else { continue };
                    if v["slaves"].as_array().map(|a| !a.is_empty()).unwrap_or(false) {
                        return Ok(());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("agent did not register within {timeout:?}; agent log:\n{}", self.agent_log())
    }

    /// Kills the agent with SIGKILL, as a crash would: its executors and
    /// containers keep running.
    pub fn crash_agent(&mut self) {
        if let Some(mut a) = self.agent_proc.take() {
            a.crash();
            self.agent_crashed = true;
        }
    }

    /// Starts the agent again with the same flags and work dir, and waits
    /// until it answers on its port.
    pub async fn restart_agent(&mut self) -> Result<()> {
        self.crash_agent();
        let proc = Proc::spawn("mezzo-agent", &bin_dir().join("mezzo-agent"), &self.agent_args, &self.work_dir.path().join("agent.log"))?;
        self.agent_proc = Some(proc);
        self.agent_crashed = false;
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::Client::new();
        while Instant::now() < deadline {
            if let Ok(resp) = client.get(format!("http://{}/health", self.agent)).send().await {
                if resp.status() == 200 {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("agent did not come back within 30 s; agent log:\n{}", self.agent_log())
    }

    /// Stops the master and starts a new one (which remembers nothing) on
    /// the same port; waits until the agent has registered with it again.
    pub async fn restart_master(&mut self) -> Result<()> {
        if let Some(mut m) = self.master_proc.take() {
            m.stop(Duration::from_secs(10));
        }
        let log = self.work_dir.path().join("master.log");
        self.master_proc = Some(Proc::spawn("mezzo-master", &bin_dir().join("mezzo-master"), &self.master_args, &log)?);
        self.wait_for_agent(Duration::from_secs(30)).await
    }

    /// Kills the master with SIGKILL (a crash) and starts it again with the
    /// same flags on the same port; waits until the agent has registered
    /// with it again when `wait_for_agent`.
    pub async fn crash_and_restart_master(&mut self, wait_for_agent: bool) -> Result<()> {
        if let Some(mut m) = self.master_proc.take() {
            m.crash();
        }
        let log = self.work_dir.path().join("master.log");
        self.master_proc = Some(Proc::spawn("mezzo-master", &bin_dir().join("mezzo-master"), &self.master_args, &log)?);
        if wait_for_agent {
            return self.wait_for_agent(Duration::from_secs(30)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if reqwest::get(format!("http://{}/health", self.master)).await.is_ok_and(|r| r.status() == 200) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the master did not come back within 30 s; log:\n{}", self.master_log())
    }

    /// Freezes (SIGSTOP) or resumes (SIGCONT) the agent process, as a host
    /// that stops answering and comes back.
    pub fn signal_agent(&self, signal: nix::sys::signal::Signal) -> Result<()> {
        let pid = self.agent_pid().context("the agent is not running")?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)?;
        Ok(())
    }

    /// The master's log so far.
    pub fn master_log(&self) -> String {
        std::fs::read_to_string(self.work_dir.path().join("master.log")).unwrap_or_default()
    }

    /// Stops the agent with `signal` and waits up to `within` for it to
    /// exit: its exit status and how long it took. What it leaves running
    /// is for a restarted agent to recover (or for `stop` to clean up).
    pub fn stop_agent_with(&mut self, signal: nix::sys::signal::Signal, within: Duration) -> Result<(std::process::ExitStatus, Duration)> {
        let mut agent = self.agent_proc.take().context("the agent is not running")?;
        self.agent_crashed = true;
        let started = Instant::now();
        match agent.signal_and_wait(signal, within) {
            Some(status) => Ok((status, started.elapsed())),
            None => {
                agent.crash();
                bail!("the agent was still running {within:?} after {signal}; log:\n{}", self.agent_log())
            }
        }
    }

    /// The flags the agent runs with.
    pub fn agent_args(&self) -> &[String] {
        &self.agent_args
    }

    /// The agent's pid, while it runs.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent_proc.as_ref().map(Proc::pid)
    }

    /// Sends an operator API call (`POST /api/v1`) to the agent as JSON;
    /// returns the status code and the body.
    pub async fn agent_call_json(&self, call: &serde_json::Value) -> Result<(u16, String)> {
        let resp = reqwest::Client::new()
            .post(format!("http://{}/api/v1", self.agent))
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .body(call.to_string())
            .send()
            .await?;
        let code = resp.status().as_u16();
        Ok((code, resp.text().await?))
    }

    /// The agent's log so far.
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.work_dir.path().join("agent.log")).unwrap_or_default()
    }

    /// The agent's work directory.
    pub fn agent_work_dir(&self) -> PathBuf {
        self.work_dir.path().join("agent")
    }

    /// Stops the agent and the master (SIGUSR1: the agent destroys its
    /// containers; SIGTERM would leave those of checkpointing frameworks).
    pub fn stop(&mut self) {
        if let Some(mut a) = self.agent_proc.take() {
            // A frozen agent (SIGSTOP) must run to stop.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(a.pid() as i32), nix::sys::signal::Signal::SIGCONT);
            match a.signal_and_wait(nix::sys::signal::Signal::SIGUSR1, Duration::from_secs(30)) {
                Some(status) if status.success() => {}
                // Killed, failed or hung: what it left is cleaned up below.
                _ => {
                    a.crash();
                    self.agent_crashed = true;
                }
            }
        }
        if std::mem::take(&mut self.agent_crashed) {
            // What the crashed agent left running is removed by an agent
            // that recovers it and cleans up (`--recover=cleanup`).
            let mut args = self.agent_args.clone();
            args.push("--recover=cleanup".into());
            let log = self.work_dir.path().join("agent.log");
            match Proc::spawn("mezzo-agent --recover=cleanup", &bin_dir().join("mezzo-agent"), &args, &log) {
                Ok(mut p) => {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while Instant::now() < deadline && matches!(p.child.try_wait(), Ok(None)) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    p.stop(Duration::from_secs(5));
                }
                Err(e) => eprintln!("cannot clean up after a crashed agent: {e}"),
            }
        }
        if let Some(mut m) = self.master_proc.take() {
            m.stop(Duration::from_secs(10));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        // The agent removes its containers' cgroups; the per-run root is ours to remove.
        for controller in ["cpu", "cpuacct", "memory", "pids", "blkio", "devices", "freezer", "cpuset", "systemd", "unified"] {
            let _ = std::fs::remove_dir(cgroup_dir(controller, &self.cgroups_root));
        }
    }
}

/// A v1 scheduler over HTTP/JSON, as a framework client drives it.
pub struct Scheduler {
    pub master: String,
    pub framework_id: FrameworkId,
    pub stream_id: String,
    pub events: mpsc::UnboundedReceiver<Event>,
    http: reqwest::Client,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Scheduler {
    /// SUBSCRIBEs a framework named `name` and waits for SUBSCRIBED.
    pub async fn subscribe(master: &str, name: &str) -> Result<Scheduler> {
        Scheduler::subscribe_with(
            master,
            FrameworkInfo { user: "root".into(), name: name.into(), hostname: Some(String::new()), ..Default::default() },
        )
        .await
    }

    /// SUBSCRIBEs a framework that checkpoints (its tasks survive an agent restart).
    pub async fn subscribe_checkpointing(master: &str, name: &str) -> Result<Scheduler> {
        Scheduler::subscribe_with(
            master,
            FrameworkInfo {
                user: "root".into(),
                name: name.into(),
                hostname: Some(String::new()),
                checkpoint: Some(true),
                ..Default::default()
            },
        )
        .await
    }

    /// SUBSCRIBEs with `framework_info` and waits for SUBSCRIBED.
    pub async fn subscribe_with(master: &str, framework_info: FrameworkInfo) -> Result<Scheduler> {
        let http = reqwest::Client::new();
        let call = Call {
            r#type: Some(call::Type::Subscribe as i32),
            subscribe: Some(call::Subscribe { framework_info, ..Default::default() }),
            ..Default::default()
        };
        let resp = http
            .post(format!("http://{master}/api/v1/scheduler"))
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .body(mezzo_proto::json::to_json(&call))
            .send()
            .await?;
        if resp.status() != 200 {
            bail!("SUBSCRIBE: {} {}", resp.status(), resp.text().await.unwrap_or_default());
        }
        let stream_id = resp
            .headers()
            .get("Mesos-Stream-Id")
            .context("no Mesos-Stream-Id header")?
            .to_str()?
            .to_string();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            let mut body = resp.bytes_stream();
            let mut decoder = mezzo_proto::recordio::Decoder::new(64 << 20);
            while let Some(Ok(chunk)) = body.next().await {
                decoder.feed(&chunk);
                while let Ok(Some(record)) = decoder.next_record() {
                    match mezzo_proto::json::from_json::<Event>(&record) {
                        Ok(ev) => {
                            if tx.send(ev).is_err() {
                                return;
                            }
                        }
                        Err(e) => eprintln!("scheduler: undecodable event: {e}"),
                    }
                }
            }
        });
        let first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .context("no SUBSCRIBED within 10 s")?
            .context("stream closed before SUBSCRIBED")?;
        let framework_id = first.subscribed.context("first event is not SUBSCRIBED")?.framework_id;
        Ok(Scheduler { master: master.to_string(), framework_id, stream_id, events: rx, http, reader })
    }

    /// Sends a call with the stream id; returns the HTTP status.
    pub async fn call(&self, mut call: Call) -> Result<u16> {
        call.framework_id = Some(self.framework_id.clone());
        let resp = self
            .http
            .post(format!("http://{}/api/v1/scheduler", self.master))
            .header("Content-Type", "application/json")
            .header("Mesos-Stream-Id", &self.stream_id)
            .body(mezzo_proto::json::to_json(&call))
            .send()
            .await?;
        Ok(resp.status().as_u16())
    }

    /// Next event other than HEARTBEAT, within `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Result<Event> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .context("timed out waiting for an event")?
                .context("event stream closed")?;
            if ev.r#type() != event::Type::Heartbeat {
                return Ok(ev);
            }
        }
    }

    /// Waits for an offer.
    pub async fn next_offer(&mut self, timeout: Duration) -> Result<Offer> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ev = self.next_event(left).await?;
            if let Some(offers) = ev.offers {
                if let Some(o) = offers.offers.into_iter().next() {
                    return Ok(o);
                }
            }
        }
    }

    /// Launches `task` on `offer` (ACCEPT with one LAUNCH); returns the accept time.
    pub async fn launch(&self, offer: &Offer, task: TaskInfo) -> Result<Instant> {
        let t = Instant::now();
        let code = self
            .call(Call {
                r#type: Some(call::Type::Accept as i32),
                accept: Some(call::Accept {
                    offer_ids: vec![offer.id.clone()],
                    operations: vec![mezzo_proto::mesos::v1::offer::Operation {
                        r#type: Some(mezzo_proto::mesos::v1::offer::operation::Type::Launch as i32),
                        launch: Some(mezzo_proto::mesos::v1::offer::operation::Launch { task_infos: vec![task] }),
                        ..Default::default()
                    }],
                    filters: None,
                }),
                ..Default::default()
            })
            .await?;
        if code != 202 {
            bail!("ACCEPT answered {code}");
        }
        Ok(t)
    }

    /// Acknowledges an update that carries a uuid.
    pub async fn acknowledge(&self, status: &TaskStatus) -> Result<()> {
        let (Some(uuid), Some(agent_id)) = (&status.uuid, &status.agent_id) else { return Ok(()) };
        let code = self
            .call(Call {
                r#type: Some(call::Type::Acknowledge as i32),
                acknowledge: Some(call::Acknowledge {
                    agent_id: agent_id.clone(),
                    task_id: status.task_id.clone(),
                    uuid: uuid.clone(),
                }),
                ..Default::default()
            })
            .await?;
        if code != 202 {
            bail!("ACKNOWLEDGE answered {code}");
        }
        Ok(())
    }

    /// KILLs a task.
    pub async fn kill(&self, task_id: &str, agent_id: Option<AgentId>) -> Result<()> {
        let code = self
            .call(Call {
                r#type: Some(call::Type::Kill as i32),
                kill: Some(call::Kill { task_id: TaskId { value: task_id.into() }, agent_id, kill_policy: None }),
                ..Default::default()
            })
            .await?;
        if code != 202 {
            bail!("KILL answered {code}");
        }
        Ok(())
    }

    /// Next UPDATE (acknowledged on receipt), within `timeout`.
    pub async fn next_update(&mut self, timeout: Duration) -> Result<TaskStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ev = self.next_event(left).await?;
            if let Some(update) = ev.update {
                self.acknowledge(&update.status).await?;
                return Ok(update.status);
            }
        }
    }

    /// Collects updates for `task_id` until a terminal one.
    pub async fn updates_until_terminal(&mut self, task_id: &str, timeout: Duration) -> Result<Vec<TaskStatus>> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let st = self.next_update(left).await.with_context(|| format!("updates so far: {:?}", states(&out)))?;
            if st.task_id.value != task_id {
                continue;
            }
            let terminal = st.state().is_terminal();
            out.push(st);
            if terminal {
                return Ok(out);
            }
        }
    }

    /// TEARDOWN of the framework.
    pub async fn teardown(&self) -> Result<()> {
        self.call(Call { r#type: Some(call::Type::Teardown as i32), ..Default::default() }).await?;
        Ok(())
    }

    /// Declines an offer.
    pub async fn decline(&self, offer_id: OfferId) -> Result<()> {
        self.call(Call {
            r#type: Some(call::Type::Decline as i32),
            decline: Some(call::Decline { offer_ids: vec![offer_id], filters: None }),
            ..Default::default()
        })
        .await?;
        Ok(())
    }
}

/// Whether a test running tasks of `kind` can run here: root, and for
/// docker a running engine. Records the skip when it cannot.
pub fn runnable(kind: Kind) -> bool {
    if !mezzo_testkit::is_root() {
        mezzo_testkit::skip("needs root");
        return false;
    }
    if kind == Kind::Docker && !mezzo_testkit::docker_available() {
        mezzo_testkit::skip("needs a running Docker engine");
        return false;
    }
    true
}

/// The containerizer that runs tasks of `kind`.
pub fn containerizer_of(kind: Kind) -> &'static str {
    match kind {
        Kind::Docker => "docker",
        _ => "rust",
    }
}

/// The file `file` of executor `executor_id`'s latest sandbox, through the
/// agent's `/files/download`.
pub async fn sandbox_file(cluster: &Cluster, framework_id: &str, executor_id: &str, file: &str) -> Result<String> {
    let url = format!("http://{}/files/download?path=/frameworks/{framework_id}/executors/{executor_id}/runs/latest/{file}", cluster.agent);
    let resp = reqwest::get(url).await?;
    anyhow::ensure!(resp.status() == 200, "files/download of {executor_id}/{file}: {}", resp.status());
    Ok(resp.text().await?)
}

/// `mod $module { #[tokio::test] async fn $name() { super::$name($kind) } ... }`:
/// one test per scenario function for the containerizer kind `$kind`.
#[macro_export]
macro_rules! tests_for_kind {
    ($module:ident, $kind:expr, $($name:ident),* $(,)?) => {
        mod $module {
            use super::*;
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() -> anyhow::Result<()> { super::$name($kind).await } )*
        }
    };
}

/// Each scenario `async fn name(kind: Kind) -> Result<()>` as a test for
/// the rust containerizer with an image (`rust_with_image::name`), without
/// one (`rust_without_image::name`) and docker (`docker::name`).
#[macro_export]
macro_rules! per_containerizer {
    ($($name:ident),* $(,)?) => {
        $crate::tests_for_kind!(rust_with_image, $crate::Kind::Mesos, $($name),*);
        $crate::tests_for_kind!(rust_without_image, $crate::Kind::MesosNoImage, $($name),*);
        $crate::tests_for_kind!(docker, $crate::Kind::Docker, $($name),*);
    };
}

/// As [`per_containerizer!`], for the rust containerizer with an image and docker only.
#[macro_export]
macro_rules! per_image_containerizer {
    ($($name:ident),* $(,)?) => {
        $crate::tests_for_kind!(rust_with_image, $crate::Kind::Mesos, $($name),*);
        $crate::tests_for_kind!(docker, $crate::Kind::Docker, $($name),*);
    };
}

/// Names of the states in `updates`.
pub fn states(updates: &[TaskStatus]) -> Vec<&'static str> {
    updates.iter().map(|s| s.state().as_str_name()).collect()
}

/// A scalar resource.
pub fn scalar(name: &str, value: f64) -> Resource {
    Resource {
        name: name.into(),
        r#type: mezzo_proto::mesos::v1::value::Type::Scalar as i32,
        scalar: Some(mezzo_proto::mesos::v1::value::Scalar { value }),
        role: Some("*".into()),
        ..Default::default()
    }
}

/// Which containerizer a test task asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// ContainerInfo type MESOS (the rust containerizer), with an image.
    Mesos,
    /// No ContainerInfo at all: rust containerizer on the host filesystem.
    MesosNoImage,
    /// ContainerInfo type DOCKER.
    Docker,
}

/// A DOCKER `ContainerInfo` for `image` on the host's network.
pub fn docker_host_container(image: &str) -> mezzo_proto::mesos::v1::ContainerInfo {
    use mezzo_proto::mesos::v1::{container_info, ContainerInfo};
    ContainerInfo {
        r#type: container_info::Type::Docker as i32,
        docker: Some(container_info::DockerInfo {
            image: image.into(),
            network: Some(container_info::docker_info::Network::Host as i32),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A command task for `offer`'s agent.
pub fn command_task(offer: &Offer, id: &str, command: &str, kind: Kind, image: &str, mem: f64) -> TaskInfo {
    use mezzo_proto::mesos::v1::{container_info, image, ContainerInfo, Image};
    let container = match kind {
        Kind::MesosNoImage => None,
        Kind::Mesos => Some(ContainerInfo {
            r#type: container_info::Type::Mesos as i32,
            mesos: Some(container_info::MesosInfo {
                image: Some(Image {
                    r#type: image::Type::Docker as i32,
                    docker: Some(image::Docker { name: image.into(), ..Default::default() }),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
        Kind::Docker => Some(docker_host_container(image)),
    };
    TaskInfo {
        name: id.into(),
        task_id: TaskId { value: id.into() },
        agent_id: offer.agent_id.clone(),
        resources: vec![scalar("cpus", 0.1), scalar("mem", mem)],
        command: Some(CommandInfo { value: Some(command.into()), shell: Some(true), ..Default::default() }),
        container,
        ..Default::default()
    }
}

impl Scheduler {
    /// Launches `task` on `offer` and waits for TASK_RUNNING; a terminal
    /// update first is an error. Returns the RUNNING update.
    pub async fn launch_and_wait_running(&mut self, offer: &Offer, task: TaskInfo, timeout: Duration) -> Result<TaskStatus> {
        let id = task.task_id.value.clone();
        self.launch(offer, task).await?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let st = self.next_update(left).await?;
            if st.task_id.value != id {
                continue;
            }
            if st.state().is_terminal() {
                bail!("task {id} ended before it ran: {st:?}");
            }
            if st.state() == mezzo_proto::mesos::v1::TaskState::TaskRunning {
                return Ok(st);
            }
        }
    }
}

/// The container id an update carries.
pub fn container_id_of(status: &TaskStatus) -> Option<String> {
    status.container_status.as_ref().and_then(|c| c.container_id.as_ref()).map(|c| c.value.clone())
}

/// Asserts that nothing of the cluster's is left: cgroups, mounts, docker
/// containers, processes running in its work dir.
pub fn assert_clean(cluster: &Cluster) {
    for controller in ["memory", "cpu", "pids", "freezer"] {
        let root = cgroup_dir(controller, &cluster.cgroups_root);
        if let Ok(entries) = std::fs::read_dir(&root) {
            let left: Vec<_> = entries.flatten().filter(|e| e.path().is_dir()).map(|e| e.file_name()).collect();
            assert!(left.is_empty(), "cgroups left under {}: {left:?}", root.display());
        }
    }
    let work = cluster.work_dir.path().display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let leaked: Vec<_> = mounts.lines().filter(|l| l.contains(&work)).collect();
    assert!(leaked.is_empty(), "mounts left: {leaked:?}");
    let out = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", "label=mezzo.agent_id", "--filter", "name=mesos-"])
        .output();
    if let Ok(out) = out {
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let inspect = std::process::Command::new("docker").args(["inspect", id]).output().unwrap();
            assert!(!String::from_utf8_lossy(&inspect.stdout).contains(&work), "docker container {id} of this test left behind");
        }
    }
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) {
            assert!(
                !cwd.display().to_string().starts_with(&work),
                "process {} left running in {}",
                entry.file_name().to_string_lossy(),
                cwd.display()
            );
        }
    }
}

/// The token the agent gave the executor of container `cid`
/// (`MESOS_EXECUTOR_AUTHENTICATION_TOKEN` in its environment), read from
/// /proc as a local root process could: what a stolen token looks like.
pub fn executor_token(cid: &str) -> Result<String> {
    let wanted = format!("MEZZO_CONTAINER_ID={cid}");
    for entry in std::fs::read_dir("/proc")?.flatten() {
        if !entry.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        let vars: Vec<String> = environ.split(|b| *b == 0).map(|v| String::from_utf8_lossy(v).into_owned()).collect();
        if !vars.iter().any(|v| *v == wanted) {
            continue;
        }
        if let Some(token) = vars.iter().find_map(|v| v.strip_prefix("MESOS_EXECUTOR_AUTHENTICATION_TOKEN=")) {
            return Ok(token.to_string());
        }
    }
    bail!("no executor of container {cid} with a token in its environment")
}

/// Whether a process with this pid exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// Polls `f` every 50 ms until it holds; an error naming `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("timed out waiting until {what}")
}

/// Waits until the (restarted) agent lists container `cid` again: it recovered it.
pub async fn wait_recovered(cluster: &Cluster, cid: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let (code, body) = cluster.agent_call_json(&serde_json::json!({"type": "GET_CONTAINERS"})).await?;
        if code == 200 && body.contains(cid) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the restarted agent does not list container {cid}; log:\n{}", cluster.agent_log())
}

/// The project's own custom executor for the tests (`src/bin/mezzo-test-executor.rs`).
pub fn test_executor_path() -> PathBuf {
    bin_dir().join("mezzo-test-executor")
}

/// Where a custom executor runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorContainer<'a> {
    /// No ContainerInfo: the rust containerizer, on the host filesystem and network.
    Host,
    /// ContainerInfo DOCKER with `image` and the host network; the executor is `path` in the image.
    Docker { image: &'a str, path: &'a str },
}

/// ExecutorInfo of `mezzo-test-executor` (cpus 0.1, `mem`) as executor
/// `executor_id`, started with `args` (`--content-type=protobuf`, `--no-subscribe`).
pub fn test_executor_info(executor_id: &str, container: ExecutorContainer, mem: f64, args: &[&str]) -> mezzo_proto::mesos::v1::ExecutorInfo {
    use mezzo_proto::mesos::v1::{executor_info, ExecutorId, ExecutorInfo};
    // As Mesos runs `shell: false`: the mesos containerizer execs `value` with
    // `arguments` as the whole argv (argv[0] first); the docker one runs
    // `value` followed by `arguments` as the container's command.
    let args = args.iter().map(|a| a.to_string());
    let (path, arguments, container) = match container {
        ExecutorContainer::Host => (test_executor_path().display().to_string(), std::iter::once("mezzo-test-executor".to_string()).chain(args).collect(), None),
        ExecutorContainer::Docker { image, path } => (
            path.to_string(),
            args.collect(),
            Some(docker_host_container(image)),
        ),
    };
    ExecutorInfo {
        r#type: Some(executor_info::Type::Custom as i32),
        executor_id: ExecutorId { value: executor_id.into() },
        name: Some(format!("mezzo-test-executor {executor_id}")),
        command: Some(CommandInfo { value: Some(path), shell: Some(false), arguments, ..Default::default() }),
        resources: vec![scalar("cpus", 0.1), scalar("mem", mem)],
        container,
        ..Default::default()
    }
}

/// A task of `offer` for custom executor `executor`, doing `data`
/// (`run <secs>`, `fail <code>`, `forever`: see mezzo-test-executor).
pub fn executor_task(offer: &Offer, id: &str, executor: &mezzo_proto::mesos::v1::ExecutorInfo, data: &str, mem: f64) -> TaskInfo {
    TaskInfo {
        name: id.into(),
        task_id: TaskId { value: id.into() },
        agent_id: offer.agent_id.clone(),
        resources: vec![scalar("cpus", 0.1), scalar("mem", mem)],
        executor: Some(executor.clone()),
        data: Some(data.as_bytes().to_vec()),
        ..Default::default()
    }
}

impl Scheduler {
    /// Launches `tasks` on `offer` in one ACCEPT with one LAUNCH; returns the accept time.
    pub async fn launch_tasks(&self, offer: &Offer, tasks: Vec<TaskInfo>) -> Result<Instant> {
        use mezzo_proto::mesos::v1::offer::{operation, Operation};
        let t = Instant::now();
        let code = self
            .call(Call {
                r#type: Some(call::Type::Accept as i32),
                accept: Some(call::Accept {
                    offer_ids: vec![offer.id.clone()],
                    operations: vec![Operation {
                        r#type: Some(operation::Type::Launch as i32),
                        launch: Some(operation::Launch { task_infos: tasks }),
                        ..Default::default()
                    }],
                    filters: None,
                }),
                ..Default::default()
            })
            .await?;
        if code != 202 {
            bail!("ACCEPT answered {code}");
        }
        Ok(t)
    }

    /// Sends a framework message to executor `executor_id` on `agent_id`.
    pub async fn message(&self, agent_id: &AgentId, executor_id: &str, data: &[u8]) -> Result<()> {
        let code = self
            .call(Call {
                r#type: Some(call::Type::Message as i32),
                message: Some(call::Message {
                    agent_id: agent_id.clone(),
                    executor_id: mezzo_proto::mesos::v1::ExecutorId { value: executor_id.into() },
                    data: data.to_vec(),
                }),
                ..Default::default()
            })
            .await?;
        if code != 202 {
            bail!("MESSAGE answered {code}");
        }
        Ok(())
    }

    /// SHUTDOWN of executor `executor_id` on `agent_id`.
    pub async fn shutdown_executor(&self, agent_id: &AgentId, executor_id: &str) -> Result<()> {
        let code = self
            .call(Call {
                r#type: Some(call::Type::Shutdown as i32),
                shutdown: Some(call::Shutdown {
                    executor_id: mezzo_proto::mesos::v1::ExecutorId { value: executor_id.into() },
                    agent_id: agent_id.clone(),
                }),
                ..Default::default()
            })
            .await?;
        if code != 202 {
            bail!("SHUTDOWN answered {code}");
        }
        Ok(())
    }
}

/// The container the agent runs executor `executor_id` of `framework_id`
/// in, from its operator API (GET_CONTAINERS); `None` when it lists none.
pub async fn executor_container(cluster: &Cluster, framework_id: &FrameworkId, executor_id: &str) -> Result<Option<String>> {
    let (code, body) = cluster.agent_call_json(&serde_json::json!({"type": "GET_CONTAINERS"})).await?;
    if code != 200 {
        bail!("GET_CONTAINERS answered {code}: {body}");
    }
    let v: serde_json::Value = serde_json::from_str(&body)?;
    let containers = v["get_containers"]["containers"].as_array().cloned().unwrap_or_default();
    Ok(containers
        .iter()
        .find(|c| c["executor_id"]["value"] == executor_id && c["framework_id"]["value"] == framework_id.value.as_str())
        .and_then(|c| c["container_id"]["value"].as_str().map(str::to_string)))
}
