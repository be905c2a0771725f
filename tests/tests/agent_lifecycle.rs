//! The agent's life as an operator sees it: SIGTERM and SIGINT stop it at
//! once and leave the tasks of checkpointing frameworks running for the next
//! agent; one agent per `--cgroups_root` and per `--work_dir`.

use anyhow::{bail, Context, Result};
use mezzo_proto::mesos::v1::task_status::{Reason, Source};
use mezzo_proto::mesos::v1::{TaskState, TaskStatus};
use mezzo_tests::{alive, assert_clean, bin_dir, command_task, container_id_of, free_port, states, wait_recovered, wait_until, Cluster, Kind, Scheduler};
use nix::sys::signal::Signal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(90);
/// Generous for a loaded CI machine; Mesos's default is 2 s.
const REREGISTRATION: &str = "--executor_reregistration_timeout=15secs";
/// "Exits at once": a couple of seconds on a loaded machine.
const EXIT_WITHIN: Duration = Duration::from_secs(3);

fn root_or_skip() -> bool {
    if !mezzo_testkit::is_root() {
        mezzo_testkit::skip("needs root (containers and cgroups)");
        return false;
    }
    true
}

struct Running {
    cluster: Cluster,
    sched: Scheduler,
    status: TaskStatus,
    cid: String,
}

async fn start_task(id: &str, command: &str, checkpoint: bool) -> Result<Running> {
    let cluster = Cluster::start_with("rust", &[REREGISTRATION]).await?;
    let mut sched = if checkpoint {
        Scheduler::subscribe_checkpointing(&cluster.master, "lifecycle").await?
    } else {
        Scheduler::subscribe(&cluster.master, "lifecycle").await?
    };
    let offer = sched.next_offer(TIMEOUT).await?;
    let task = command_task(&offer, id, command, Kind::MesosNoImage, "busybox", 32.0);
    let status = sched.launch_and_wait_running(&offer, task, TIMEOUT).await.map_err(|e| e.context(cluster.agent_log()))?;
    let cid = container_id_of(&status).context("TASK_RUNNING carries the container id")?;
    Ok(Running { cluster, sched, status, cid })
}

impl Running {
    fn runtime_dir(&self) -> PathBuf {
        self.cluster.agent_work_dir().join("run").join("containers").join(&self.cid)
    }

    fn sandbox(&self) -> PathBuf {
        let aid = &self.status.agent_id.as_ref().unwrap().value;
        let tid = &self.status.task_id.value;
        let fid = &self.sched.framework_id.value;
        self.cluster.agent_work_dir().join(format!("slaves/{aid}/frameworks/{fid}/executors/{tid}/runs/{}", self.cid))
    }

    /// Host pid of the task's container init, as its supervisor recorded it.
    fn task_pid(&self) -> Result<i32> {
        let path = self.runtime_dir().join("pid");
        Ok(std::fs::read_to_string(&path).with_context(|| path.display().to_string())?.trim().parse()?)
    }

    /// No update for the task within `quiet`.
    async fn assert_no_update(&mut self, quiet: Duration) -> Result<()> {
        while let Ok(st) = self.sched.next_update(quiet).await {
            if st.uuid != self.status.uuid {
                bail!("unexpected update: {st:?}\n{}", self.cluster.agent_log());
            }
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<()> {
        self.sched.teardown().await.ok();
        self.cluster.stop();
        assert_clean(&self.cluster);
        Ok(())
    }
}




/// Stops the agent with `signal`; it must exit successfully within `EXIT_WITHIN`.
fn stop_agent_quickly(cluster: &mut Cluster, signal: Signal) -> Result<()> {
    let (status, took) = cluster.stop_agent_with(signal, Duration::from_secs(20))?;
    assert!(took <= EXIT_WITHIN, "the agent took {took:?} to exit on {signal}\n{}", cluster.agent_log());
    assert!(status.success(), "the agent exited with {status} on {signal}\n{}", cluster.agent_log());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_at_once_and_the_next_agent_takes_the_running_task_back() -> Result<()> {
    if !root_or_skip() {
        return Ok(());
    }
    let mut r = start_task("term-survivor", "sleep 1000", true).await?;
    let pid = r.task_pid()?;
    stop_agent_quickly(&mut r.cluster, Signal::SIGTERM)?;
    assert!(alive(pid), "the task of a checkpointing framework keeps running after SIGTERM");
    r.assert_no_update(Duration::from_secs(1)).await?;
    assert!(alive(pid));
    r.cluster.restart_agent().await?;
    wait_recovered(&r.cluster, &r.cid).await?;
    assert!(alive(pid), "the task's process survived the restart");
    r.sched.kill("term-survivor", None).await?;
    let updates = r.sched.updates_until_terminal("term-survivor", TIMEOUT).await.map_err(|e| e.context(r.cluster.agent_log()))?;
    let last = updates.last().unwrap();
    assert_eq!(last.state(), TaskState::TaskKilled, "updates: {:?}\n{}", states(&updates), r.cluster.agent_log());
    assert_eq!(last.source(), Source::Executor, "the re-subscribed executor killed it");
    wait_until("the task's process is gone", Duration::from_secs(10), || !alive(pid)).await?;
    r.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_exits_at_once_and_the_task_finishes_under_the_next_agent() -> Result<()> {
    if !root_or_skip() {
        return Ok(());
    }
    // Runs until the test lets it finish.
    let mut r = start_task("int-survivor", r#"while [ ! -e "$MESOS_SANDBOX/go" ]; do sleep 0.1; done"#, true).await?;
    let pid = r.task_pid()?;
    stop_agent_quickly(&mut r.cluster, Signal::SIGINT)?;
    assert!(alive(pid), "the task of a checkpointing framework keeps running after SIGINT");
    r.cluster.restart_agent().await?;
    wait_recovered(&r.cluster, &r.cid).await?;
    std::fs::write(r.sandbox().join("go"), b"")?;
    let updates = r.sched.updates_until_terminal("int-survivor", TIMEOUT).await.map_err(|e| e.context(r.cluster.agent_log()))?;
    let last = updates.last().unwrap();
    assert_eq!(last.state(), TaskState::TaskFinished, "updates: {:?}\n{}", states(&updates), r.cluster.agent_log());
    assert_eq!(last.source(), Source::Executor);
    r.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_tasks_of_a_framework_that_does_not_checkpoint() -> Result<()> {
    if !root_or_skip() {
        return Ok(());
    }
    let mut r = start_task("not-recoverable", "sleep 1000", false).await?;
    let pid = r.task_pid()?;
    stop_agent_quickly(&mut r.cluster, Signal::SIGTERM)?;
    // Its executor could not reconnect to another agent: nothing of it outlives the agent.
    assert!(!alive(pid), "the task of a non-checkpointing framework is killed");
    assert!(!r.runtime_dir().exists(), "its container is destroyed");
    let updates = r.sched.updates_until_terminal("not-recoverable", Duration::from_secs(10)).await?;
    let last = updates.last().unwrap();
    assert_eq!(last.state(), TaskState::TaskLost, "updates: {:?}", states(&updates));
    assert_eq!(last.reason(), Reason::AgentDisconnected);
    assert_eq!(last.source(), Source::Agent);
    assert!(last.message().contains("SIGTERM") && last.message().contains("does not checkpoint"), "{:?}", last.message);
    r.cluster.restart_agent().await?;
    r.finish().await
}

/// Starts a second agent with the first one's flags plus `overrides` (later
/// flags win) and waits for it to exit: its status and its output.
async fn second_agent(cluster: &Cluster, overrides: &[String]) -> Result<(std::process::ExitStatus, String)> {
    let out = tempfile::NamedTempFile::new()?;
    let mut child = std::process::Command::new(bin_dir().join("mezzo-agent"))
        .args(cluster.agent_args())
        .args(overrides)
        .stdin(std::process::Stdio::null())
        .stdout(out.reopen()?)
        .stderr(out.reopen()?)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            // SIGUSR1: it kills whatever it took over before it goes.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), Signal::SIGUSR1);
            std::thread::sleep(Duration::from_secs(3));
            let _ = child.kill();
            let _ = child.wait();
            bail!("the second agent is still running after 20 s; its output:\n{}", std::fs::read_to_string(out.path())?);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    Ok((status, std::fs::read_to_string(out.path())?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_on_the_same_cgroups_root_refuses_to_start() -> Result<()> {
    if !root_or_skip() {
        return Ok(());
    }
    let mut r = start_task("cgroup-owner", "sleep 1000", true).await?;
    let pid = r.task_pid()?;
    let other = r.cluster.work_dir.path().join("other-agent");
    let (status, output) = second_agent(&r.cluster, &[format!("--work_dir={}", other.display()), format!("--port={}", free_port())]).await?;
    assert!(!status.success(), "{status}: {output}");
    let owner = format!("pid {}", r.cluster.agent_pid().unwrap());
    assert!(
        output.contains(&format!("--cgroups_root={} is in use by mezzo-agent {owner}", r.cluster.cgroups_root)),
        "the refusal names the flag and the owner: {output}"
    );
    assert!(alive(pid), "the first agent's task keeps running");
    r.assert_no_update(Duration::from_secs(1)).await?;
    r.sched.kill("cgroup-owner", None).await?;
    let updates = r.sched.updates_until_terminal("cgroup-owner", TIMEOUT).await?;
    assert_eq!(updates.last().unwrap().state(), TaskState::TaskKilled, "updates: {:?}", states(&updates));
    r.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_on_the_same_work_dir_refuses_to_start() -> Result<()> {
    if !root_or_skip() {
        return Ok(());
    }
    let mut r = start_task("work-dir-owner", "sleep 1000", true).await?;
    let pid = r.task_pid()?;
    let root = format!("{}-other", r.cluster.cgroups_root);
    let (status, output) = second_agent(&r.cluster, &[format!("--cgroups_root={root}"), format!("--port={}", free_port())]).await?;
    for controller in ["cpu", "cpuacct", "memory", "pids", "blkio", "devices", "freezer", "cpuset", "systemd", "unified"] {
        let _ = std::fs::remove_dir(std::path::Path::new("/sys/fs/cgroup").join(controller).join(&root));
    }
    assert!(!status.success(), "{status}: {output}");
    let work_dir = r.cluster.agent_work_dir().canonicalize()?;
    let owner = format!("pid {}", r.cluster.agent_pid().unwrap());
    assert!(
        output.contains(&format!("--work_dir={} is in use by mezzo-agent {owner}", work_dir.display())),
        "the refusal names the flag and the owner: {output}"
    );
    assert!(alive(pid), "the first agent's task keeps running");
    r.assert_no_update(Duration::from_secs(1)).await?;
    r.sched.kill("work-dir-owner", None).await?;
    let updates = r.sched.updates_until_terminal("work-dir-owner", TIMEOUT).await?;
    assert_eq!(updates.last().unwrap().state(), TaskState::TaskKilled, "updates: {:?}", states(&updates));
    r.finish().await
}

/// Runs `binary` with `args` and returns its exit status and its output, or fails if it is still running
/// after `within` (then it is killed).
fn run_bounded(binary: &str, args: &[String], within: Duration) -> Result<(std::process::ExitStatus, String)> {
    let out = tempfile::NamedTempFile::new()?;
    let mut child = std::process::Command::new(bin_dir().join(binary))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(out.reopen()?)
        .stderr(out.reopen()?)
        .spawn()?;
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{binary} {args:?} is still running after {within:?}; its output:\n{}", std::fs::read_to_string(out.path())?);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok((status, std::fs::read_to_string(out.path())?))
}

/// Flags are typed: a bad duration stops the agent (and the master) at start with clap's message naming the
/// flag, before the agent touches its work dir; good durations in Mesos's forms do not.
#[test]
fn a_bad_duration_flag_fails_at_start_naming_the_flag() -> Result<()> {
    let tmp = tempfile::Builder::new().prefix("mezzo-flags-").tempdir()?;
    let work_dir = tmp.path().join("agent");
    let agent = |extra: &str| {
        vec![
            "--master=127.0.0.1:1".to_string(),
            "--ip=127.0.0.1".into(),
            format!("--port={}", free_port()),
            format!("--work_dir={}", work_dir.display()),
            "--containerizers=rust".into(),
            format!("--cgroups_root=mezzo-flags-{}", std::process::id()),
            "--executor_registration_timeout=10mins".into(),
            "--docker_remove_delay=3days".into(),
            "--recovery_timeout=1weeks".into(),
            extra.to_string(),
        ]
    };
    for (flag, bad) in [("docker_stop_timeout", "abc"), ("executor_shutdown_grace_period", "5parsecs"), ("executor_reregistration_timeout", "2 secs")] {
        let t = Instant::now();
        let (status, output) = run_bounded("mezzo-agent", &agent(&format!("--{flag}={bad}")), Duration::from_secs(10))?;
        assert_eq!(status.code(), Some(2), "clap's usage error: {status}: {output}");
        assert!(t.elapsed() < EXIT_WITHIN, "took {:?}", t.elapsed());
        assert!(output.contains(&format!("invalid value '{bad}' for '--{flag} <DURATION>'")), "{output}");
        assert!(!work_dir.exists(), "the agent stopped before it made its work dir");
    }
    let (status, output) = run_bounded("mezzo-agent", &agent("--recover=maybe"), Duration::from_secs(10))?;
    assert!(status.code() == Some(2) && output.contains("invalid value 'maybe' for '--recover <RECOVER>'"), "{status}: {output}");

    let master = |extra: &str| vec!["--ip=127.0.0.1".to_string(), format!("--port={}", free_port()), "--allocation_interval=500ms".into(), extra.to_string()];
    let (status, output) = run_bounded("mezzo-master", &master("--agent_ping_timeout=soon"), Duration::from_secs(10))?;
    assert!(status.code() == Some(2) && output.contains("invalid value 'soon' for '--agent_ping_timeout <DURATION>'"), "{status}: {output}");
    let (status, output) = run_bounded("mezzo-master", &master("--heartbeat_interval=0secs"), Duration::from_secs(10))?;
    assert!(status.code() == Some(2) && output.contains("invalid value '0secs' for '--heartbeat_interval <DURATION>'"), "{status}: {output}");
    Ok(())
}
