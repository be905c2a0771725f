//! A group of masters on a private ZooKeeper (Debian's, started by the
//! testkit) and an agent that follows its leader: real processes on loopback.

use anyhow::{bail, Context, Result};
use mezzo_testkit::zookeeper::ZooKeeper;
use std::time::{Duration, Instant};

use crate::{bin_dir, cgroup_dir, free_port, test_images_dir, Proc, Scheduler};
use mezzo_proto::mesos::v1::scheduler::{call, Call};
use mezzo_proto::mesos::v1::{AgentId, Offer, TaskId, TaskStatus};

/// The masters' path in ZooKeeper.
pub const ZK_PATH: &str = "/mezzo";

/// Masters sharing a `--zk`, and optionally one agent with `--master=zk://...`.
pub struct Group {
    pub zk: ZooKeeper,
    /// `zk://127.0.0.1:<port>/mezzo`.
    pub url: String,
    /// Each master's `127.0.0.1:<port>`.
    pub masters: Vec<String>,
    pub work_dir: tempfile::TempDir,
    pub cgroups_root: String,
    procs: Vec<Option<Proc>>,
    master_args: Vec<Vec<String>>,
    agent: Option<Proc>,
    agent_args: Vec<String>,
}

impl Group {
    /// Starts ZooKeeper and `n` masters with `master_flags` (e.g. `--quorum=2`,
    /// `--zk_session_timeout=2secs`); waits until one leads.
    pub async fn start(n: usize, master_flags: &[&str]) -> Result<Group> {
        let zk = ZooKeeper::start().map_err(anyhow::Error::msg)?;
        let url = zk.url(ZK_PATH);
        let work_dir = tempfile::Builder::new().prefix("mezzo-group-").tempdir()?;
        let mut group = Group {
            zk,
            url,
            masters: Vec::new(),
            work_dir,
            cgroups_root: String::new(),
            procs: Vec::new(),
            master_args: Vec::new(),
            agent: None,
            agent_args: Vec::new(),
        };
        for i in 0..n {
            let port = free_port();
            let mut args = vec!["--ip=127.0.0.1".to_string(), format!("--port={port}"), format!("--zk={}", group.url)];
            args.extend(master_flags.iter().map(|f| f.to_string()));
            group.masters.push(format!("127.0.0.1:{port}"));
            group.master_args.push(args);
            group.procs.push(None);
            group.start_master(i)?;
        }
        group.leader(Duration::from_secs(60)).await?;
        Ok(group)
    }

    /// Starts master `i` (again), as a supervisor would after it exited.
    pub fn start_master(&mut self, i: usize) -> Result<()> {
        let log = self.work_dir.path().join(format!("master{i}.log"));
        self.procs[i] = Some(Proc::spawn("mezzo-master", &bin_dir().join("mezzo-master"), &self.master_args[i], &log)?);
        Ok(())
    }

    /// Kills master `i` with SIGKILL.
    pub fn crash_master(&mut self, i: usize) {
        if let Some(mut p) = self.procs[i].take() {
            p.crash();
        }
    }

    /// Master `i`'s exit status once it exited by itself (it lost leadership); `None` while it runs.
    pub fn master_exited(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        let status = self.procs[i].as_mut()?.child.try_wait().ok().flatten();
        if status.is_some() {
            self.procs[i] = None;
        }
        status
    }

    /// Master `i`'s log so far.
    pub fn master_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.work_dir.path().join(format!("master{i}.log"))).unwrap_or_default()
    }

    /// Every master's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for i in 0..self.masters.len() {
            out.push_str(&format!("--- master {i} ({}):\n{}\n", self.masters[i], self.master_log(i)));
        }
        out.push_str(&format!("--- agent:\n{}\n", self.agent_log()));
        out
    }

    /// `/state` of master `i`.
    pub async fn state(&self, i: usize) -> Result<serde_json::Value> {
        let resp = reqwest::Client::new().get(format!("http://{}/state", self.masters[i])).timeout(Duration::from_secs(5)).send().await?;
        Ok(serde_json::from_slice(&resp.bytes().await?)?)
    }

    /// Waits until a running master leads and serves as the leader (its
    /// `/state` names itself leader and has an `elected_time`); its index.
    pub async fn leader(&self, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            for i in 0..self.masters.len() {
                if self.procs[i].is_none() {
                    continue;
                }
                if let Ok(state) = self.state(i).await {
                    if state.get("elected_time").is_some() && state["leader"] == state["pid"] && state["pid"].is_string() {
                        return Ok(i);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("no master led within {timeout:?}; logs:\n{}", self.logs())
    }

    /// Starts an agent (`--containerizers=<containerizers>`) following the group's leader.
    pub async fn start_agent(&mut self, containerizers: &str, extra: &[&str]) -> Result<()> {
        let port = free_port();
        self.cgroups_root = format!("mezzo-group-{}-{port}", std::process::id());
        let mut args = vec![
            format!("--master={}", self.url),
            "--ip=127.0.0.1".into(),
            format!("--port={port}"),
            format!("--work_dir={}", self.work_dir.path().join("agent").display()),
            format!("--containerizers={containerizers}"),
            format!("--docker_registry={}", test_images_dir().display()),
            format!("--cgroups_root={}", self.cgroups_root),
            "--resources=cpus:2;mem:2048;disk:4096;ports:[31000-32000]".into(),
            "--executor_shutdown_grace_period=2secs".into(),
            "--docker_remove_delay=0secs".into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let log = self.work_dir.path().join("agent.log");
        self.agent = Some(Proc::spawn("mezzo-agent", &bin_dir().join("mezzo-agent"), &args, &log)?);
        self.agent_args = args;
        let leader = self.leader(Duration::from_secs(30)).await?;
        self.wait_for_agent_on(leader, Duration::from_secs(30)).await
    }

    /// Waits until master `i` lists the agent as active.
    pub async fn wait_for_agent_on(&self, i: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(state) = self.state(i).await {
                if state["slaves"].as_array().is_some_and(|a| a.iter().any(|s| s["active"] == true)) {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the agent is not active on master {i} within {timeout:?}; logs:\n{}", self.logs())
    }

    /// The agent's log so far.
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.work_dir.path().join("agent.log")).unwrap_or_default()
    }

    /// Stops the agent (SIGUSR1: it destroys its containers) and the masters.
    pub fn stop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            if a.signal_and_wait(nix::sys::signal::Signal::SIGUSR1, Duration::from_secs(30)).is_none() {
                a.crash();
            }
        }
        for p in self.procs.iter_mut() {
            if let Some(mut p) = p.take() {
                p.stop(Duration::from_secs(10));
            }
        }
        if !self.cgroups_root.is_empty() {
            for controller in ["cpu", "cpuacct", "memory", "pids", "blkio", "devices", "freezer", "cpuset", "systemd", "unified"] {
                let _ = std::fs::remove_dir(cgroup_dir(controller, &self.cgroups_root));
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a pymesos-style detector reads: the smallest child of the group's
/// path in string order, skipping `log_replicas`, parsed as JSON.
pub async fn pymesos_leader(group: &Group) -> Result<serde_json::Value> {
    let url = mezzo_zk::ZkUrl::parse("zk", &group.url)?;
    let client = mezzo_zk::connect(&url, Duration::from_secs(5)).await?;
    let mut children = client.list_children(&url.path).await.context("list the group's children")?;
    children.retain(|c| c != mezzo_zk::LOG_REPLICAS);
    children.sort();
    let first = children.first().context("the group's path has no children")?;
    let (data, _) = client.get_data(&url.child(first)).await.with_context(|| format!("read {first}"))?;
    serde_json::from_slice(&data).with_context(|| format!("{first} is not JSON: {}", String::from_utf8_lossy(&data)))
}

/// Sends an explicit RECONCILE of `task` until the master answers it; the
/// answer, and the offers that came meanwhile.
pub async fn reconcile(sched: &mut Scheduler, task: &str, agent: &AgentId) -> Result<(TaskStatus, Vec<Offer>)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut offers = Vec::new();
    while Instant::now() < deadline {
        let code = sched
            .call(Call {
                r#type: Some(call::Type::Reconcile as i32),
                reconcile: Some(call::Reconcile { tasks: vec![call::reconcile::Task { task_id: TaskId { value: task.into() }, agent_id: Some(agent.clone()) }] }),
                ..Default::default()
            })
            .await?;
        if code != 202 {
            bail!("RECONCILE answered {code}");
        }
        // The agent may not have re-registered yet: Mesos answers nothing for its tasks then.
        let wait = Instant::now() + Duration::from_millis(500);
        while let Ok(ev) = sched.next_event(wait.saturating_duration_since(Instant::now())).await {
            if let Some(o) = ev.offers {
                offers.extend(o.offers);
            }
            if let Some(update) = ev.update {
                sched.acknowledge(&update.status).await?;
                if update.status.task_id.value == task {
                    return Ok((update.status, offers));
                }
            }
        }
    }
    bail!("no answer to RECONCILE of {task}")
}
