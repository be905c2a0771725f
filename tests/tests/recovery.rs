//! Agent restarts as a framework and an operator see them: tasks of a
//! checkpointing framework keep running and stay killable, a task whose
//! executor died while the agent was down gets a terminal status, and a
//! container nothing checkpointed is destroyed when the agent starts.

use anyhow::{bail, Context, Result};
use mezzo_proto::mesos::v1::task_status::{Reason, Source};
use mezzo_proto::mesos::v1::{TaskState, TaskStatus};
use mezzo_tests::{alive, assert_clean, cgroup_dir, command_task, container_id_of, states, wait_recovered, wait_until, Cluster, Kind, Scheduler};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(90);
/// Generous for a loaded CI machine; Mesos's default is 2 s.
const REREGISTRATION: &str = "--executor_reregistration_timeout=15secs";

struct Running {
    cluster: Cluster,
    sched: Scheduler,
    status: TaskStatus,
    cid: String,
}

async fn start_task(id: &str, command: &str) -> Result<Running> {
    start_task_on(Kind::MesosNoImage, id, command).await
}

async fn start_task_on(kind: Kind, id: &str, command: &str) -> Result<Running> {
    let containerizers = if kind == Kind::Docker { "docker" } else { "rust" };
    let cluster = Cluster::start_with(containerizers, &[REREGISTRATION]).await?;
    let mut sched = Scheduler::subscribe_checkpointing(&cluster.master, "recovery").await?;
    let offer = sched.next_offer(TIMEOUT).await?;
    let task = command_task(&offer, id, command, kind, "busybox", 32.0);
    let status = sched.launch_and_wait_running(&offer, task, TIMEOUT).await.map_err(|e| e.context(cluster.agent_log()))?;
    let cid = container_id_of(&status).context("TASK_RUNNING carries the container id")?;
    Ok(Running { cluster, sched, status, cid })
}

impl Running {
    fn runtime_dir(&self) -> PathBuf {
        self.cluster.agent_work_dir().join("run").join("containers").join(&self.cid)
    }

    /// Host pid of the task's container init, as its supervisor recorded it.
    fn task_pid(&self) -> Result<i32> {
        let path = self.runtime_dir().join("pid");
        Ok(std::fs::read_to_string(&path).with_context(|| path.display().to_string())?.trim().parse()?)
    }

    /// The executor's checkpointed run directory.
    fn meta_run_dir(&self) -> PathBuf {
        let aid = &self.status.agent_id.as_ref().unwrap().value;
        self.cluster
            .agent_work_dir()
            .join("meta/slaves")
            .join(aid)
            .join("frameworks")
            .join(&self.sched.framework_id.value)
            .join("executors")
            .join(&self.status.task_id.value)
            .join("runs")
            .join(&self.cid)
    }

    fn executor_pid(&self) -> Result<i32> {
        let path = self.meta_run_dir().join("pids/forked.pid");
        Ok(std::fs::read_to_string(&path).with_context(|| path.display().to_string())?.trim().parse()?)
    }

    async fn finish(mut self) -> Result<()> {
        self.sched.teardown().await.ok();
        self.cluster.stop();
        assert_clean(&self.cluster);
        Ok(())
    }
}




#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_keeps_running_across_an_agent_restart_and_stays_killable() -> Result<()> {
    let mut r = start_task("survivor", "sleep 1000").await?;
    let pid = r.task_pid()?;
    r.cluster.restart_agent().await?;
    wait_recovered(&r.cluster, &r.cid).await?;
    assert!(alive(pid), "the task's process survived the restart");
    // Nothing new about the task; an update the scheduler's acknowledgement
    // of had not reached the agent before it crashed is sent again.
    while let Ok(st) = r.sched.next_update(Duration::from_secs(1)).await {
        if st.uuid != r.status.uuid {
            bail!("unexpected update after the restart: {st:?}");
        }
    }
    r.sched.kill("survivor", None).await?;
    let updates = r.sched.updates_until_terminal("survivor", TIMEOUT).await.map_err(|e| e.context(r.cluster.agent_log()))?;
    let last = updates.last().unwrap();
    assert_eq!(last.state(), TaskState::TaskKilled, "updates: {:?}\n{}", states(&updates), r.cluster.agent_log());
    assert_eq!(last.source(), Source::Executor, "the re-subscribed executor killed it");
    wait_until("the task's process is gone", Duration::from_secs(10), || !alive(pid)).await?;
    r.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_finishes_normally_after_an_agent_restart() -> Result<()> {
    let mut r = start_task("finisher", "sleep 4").await?;
    r.cluster.restart_agent().await?;
    let updates = r.sched.updates_until_terminal("finisher", TIMEOUT).await.map_err(|e| e.context(r.cluster.agent_log()))?;
    let last = updates.last().unwrap();
    assert_eq!(last.state(), TaskState::TaskFinished, "updates: {:?}\n{}", states(&updates), r.cluster.agent_log());
    r.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_task_whose_executor_died_meanwhile_is_lost() -> Result<()> {
    let mut r = start_task("orphaned-task", "sleep 1000").await?;
    let task_pid = r.task_pid()?;
    let executor_pid = r.executor_pid()?;
    r.cluster.crash_agent();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(executor_pid), nix::sys::signal::Signal::SIGKILL)?;
    wait_until("the executor is gone", Duration::from_secs(10), || !alive(executor_pid)).await?;
    assert!(alive(task_pid), "the container outlives its executor");
    r.cluster.restart_agent().await?;
    let updates = r.sched.updates_until_terminal("orphaned-task", TIMEOUT).await.map_err(|e| e.context(r.cluster.agent_log()))?;
    let last = updates.last().unwrap();
    assert_eq!(last.state(), TaskState::TaskLost, "updates: {:?}", states(&updates));
    assert_eq!(last.reason(), Reason::ExecutorTerminated);
    assert_eq!(last.source(), Source::Agent);
    wait_until("the container is destroyed", Duration::from_secs(10), || !alive(task_pid) && !r.runtime_dir().exists()).await?;
    r.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_that_ended_while_agent_and_executor_were_down_reports_its_exit_status() -> Result<()> {
    let mut r = start_task("quitter", "sleep 2; exit 3").await?;
    let executor_pid = r.executor_pid()?;
    r.cluster.crash_agent();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(executor_pid), nix::sys::signal::Signal::SIGKILL)?;
    let exit_file = r.runtime_dir().join("exit_status");
    wait_until("the container's supervisor records the exit", Duration::from_secs(30), || exit_file.exists()).await?;
    r.cluster.restart_agent().await?;
    let updates = r.sched.updates_until_terminal("quitter", TIMEOUT).await.map_err(|e| e.context(r.cluster.agent_log()))?;
    let last = updates.last().unwrap();
    assert_eq!(last.state(), TaskState::TaskFailed, "updates: {:?}", states(&updates));
    let msg = last.message.clone().unwrap_or_default();
    assert!(msg.contains("exited with status 3"), "message: {msg}");
    assert!(!r.runtime_dir().exists(), "the container was reaped");
    r.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_that_no_checkpoint_names_is_destroyed_at_start() -> Result<()> {
    let mut r = start_task("forgotten", "sleep 1000").await?;
    let task_pid = r.task_pid()?;
    let executor_pid = r.executor_pid()?;
    r.cluster.crash_agent();
    // Lose the checkpoint: the container becomes an orphan.
    let fw_meta = r.meta_run_dir().ancestors().nth(4).unwrap().to_path_buf();
    assert!(fw_meta.ends_with(&r.sched.framework_id.value));
    std::fs::remove_dir_all(&fw_meta)?;
    r.cluster.restart_agent().await?;
    // The agent answers only once recovery is done.
    assert!(!r.runtime_dir().exists(), "the orphan's runtime directory is removed");
    wait_until("the orphan's processes are gone", Duration::from_secs(10), || !alive(task_pid) && !alive(executor_pid)).await?;
    let cgroup = cgroup_dir("memory", &format!("{}/{}", r.cluster.cgroups_root, r.cid));
    assert!(!cgroup.exists(), "the orphan's cgroup is removed");
    let (_, body) = r.cluster.agent_call_json(&serde_json::json!({"type": "GET_CONTAINERS"})).await?;
    assert!(!body.contains(&r.cid), "{body}");
    r.finish().await
}

fn docker_running(cid: &str) -> bool {
    std::process::Command::new("docker")
        .args(["inspect", "-f", "{{.State.Running}}", &format!("mesos-{cid}")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "true")
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_task_keeps_running_across_an_agent_restart_and_stays_killable() -> Result<()> {
    let mut r = start_task_on(Kind::Docker, "docker-survivor", "sleep 1000").await?;
    assert!(docker_running(&r.cid));
    r.cluster.restart_agent().await?;
    wait_recovered(&r.cluster, &r.cid).await?;
    assert!(docker_running(&r.cid), "the docker container survived the restart");
    r.sched.kill("docker-survivor", None).await?;
    let updates = r.sched.updates_until_terminal("docker-survivor", TIMEOUT).await.map_err(|e| e.context(r.cluster.agent_log()))?;
    let last = updates.last().unwrap();
    assert_eq!(last.state(), TaskState::TaskKilled, "updates: {:?}\n{}", states(&updates), r.cluster.agent_log());
    assert_eq!(last.source(), Source::Executor, "the re-subscribed executor killed it");
    r.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_cleanup_kills_the_old_executors_and_exits() -> Result<()> {
    let mut r = start_task("cleanup-victim", "sleep 1000").await?;
    let task_pid = r.task_pid()?;
    let executor_pid = r.executor_pid()?;
    r.cluster.crash_agent();
    let log = std::fs::OpenOptions::new().append(true).open(r.cluster.work_dir.path().join("agent.log"))?;
    let mut child = std::process::Command::new(mezzo_tests::bin_dir().join("mezzo-agent"))
        .args(r.cluster.agent_args())
        .arg("--recover=cleanup")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            child.kill()?;
            bail!("--recover=cleanup did not exit; log:\n{}", r.cluster.agent_log());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}\n{}", r.cluster.agent_log());
    wait_until("the old executor and task are gone", Duration::from_secs(10), || !alive(task_pid) && !alive(executor_pid)).await?;
    assert!(!r.runtime_dir().exists());
    // Nothing is left to clean up when the cluster stops.
    r.cluster.restart_agent().await?;
    r.finish().await
}

/// Types of the records in a task's `task.updates` checkpoint (UPDATE, ACK).
fn checkpointed_records(path: &Path) -> Vec<mezzo_proto::mezzo::agent::status_update_record::Type> {
    let data = std::fs::read(path).unwrap_or_default();
    let mut rest = &data[..];
    let mut out = Vec::new();
    while rest.len() >= 4 {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if rest.len() - 4 < len {
            break;
        }
        if let Ok(record) = mezzo_proto::from_protobuf::<mezzo_proto::mezzo::agent::StatusUpdateRecord>(&rest[4..4 + len]) {
            out.push(record.r#type());
        }
        rest = &rest[4 + len..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_updates_are_never_delivered_again_after_an_agent_restart() -> Result<()> {
    use mezzo_proto::mezzo::agent::status_update_record::Type as Record;
    if !mezzo_testkit::is_root() {
        mezzo_testkit::skip("needs root (real agent, containers and cgroups)");
        return Ok(());
    }
    let cluster = Cluster::start_with("rust", &[REREGISTRATION]).await?;
    let mut sched = Scheduler::subscribe_checkpointing(&cluster.master, "recovery").await?;
    let offer = sched.next_offer(TIMEOUT).await?;
    sched.launch(&offer, command_task(&offer, "delivered-once", "sleep 1000", Kind::MesosNoImage, "busybox", 32.0)).await?;
    let mut delivered = Vec::new();
    while delivered.last().map(TaskStatus::state) != Some(TaskState::TaskRunning) {
        delivered.push(sched.next_update(TIMEOUT).await.map_err(|e| e.context(cluster.agent_log()))?);
    }
    assert_eq!(states(&delivered), vec!["TASK_STARTING", "TASK_RUNNING"]);
    let status = delivered[1].clone();
    let cid = container_id_of(&status).context("TASK_RUNNING carries the container id")?;
    let mut r = Running { cluster, sched, status, cid };
    // STARTING and RUNNING were acknowledged by the scheduler, and the agent
    // checkpointed both acknowledgements.
    let updates_file = r.meta_run_dir().join("tasks/delivered-once/task.updates");
    wait_until("both acknowledgements are checkpointed", Duration::from_secs(10), || {
        checkpointed_records(&updates_file).iter().filter(|t| **t == Record::Ack).count() == 2
    })
    .await
    .map_err(|e| e.context(format!("{:?}", checkpointed_records(&updates_file))))?;
    let key_file = r.cluster.agent_work_dir().join("meta/jwt_secret_key");
    let key = std::fs::read(&key_file)?;
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key_file)?.permissions().mode() & 0o777, 0o600, "the executors' key is private");
    }
    r.cluster.restart_agent().await?;
    wait_recovered(&r.cluster, &r.cid).await?;
    // Past the executor's resend interval (5 s) and the agent's first retry (10 s).
    let quiet_until = Instant::now() + Duration::from_secs(12);
    while let Ok(st) = r.sched.next_update(quiet_until.saturating_duration_since(Instant::now())).await {
        bail!("an acknowledged update came again after the restart: {:?} {st:?}\n{}", st.state(), r.cluster.agent_log());
    }
    assert_eq!(std::fs::read(&key_file)?, key, "the key survives the restart");
    // The executor sends its acknowledged updates again, as one that missed
    // the agent's acknowledgements before the restart does: with its token
    // (the same key signs it), and the scheduler does not see them twice.
    let token = mezzo_tests::executor_token(&r.cid)?;
    for st in &delivered {
        let call = mezzo_proto::mesos::v1::executor::Call {
            framework_id: r.sched.framework_id.clone(),
            executor_id: mezzo_proto::mesos::v1::ExecutorId { value: "delivered-once".into() },
            r#type: Some(mezzo_proto::mesos::v1::executor::call::Type::Update as i32),
            update: Some(mezzo_proto::mesos::v1::executor::call::Update { status: st.clone() }),
            ..Default::default()
        };
        let resp = reqwest::Client::new()
            .post(format!("http://{}/api/v1/executor", r.cluster.agent))
            .header("Content-Type", "application/json")
            .header("Authorization", format!("Bearer {token}"))
            .body(mezzo_proto::json::to_json(&call))
            .send()
            .await?;
        assert_eq!(resp.status().as_u16(), 202, "the executor's resend of {:?}", st.state());
    }
    if let Ok(st) = r.sched.next_update(Duration::from_secs(3)).await {
        bail!("an acknowledged update was delivered again: {:?} {st:?}\n{}", st.state(), r.cluster.agent_log());
    }
    // The recovered executor re-subscribed with its token: it kills its task.
    r.sched.kill("delivered-once", None).await?;
    let updates = r.sched.updates_until_terminal("delivered-once", TIMEOUT).await.map_err(|e| e.context(r.cluster.agent_log()))?;
    assert_eq!(states(&updates), vec!["TASK_KILLED"], "{}", r.cluster.agent_log());
    assert_eq!(updates[0].source(), Source::Executor, "the re-subscribed executor killed it");
    r.finish().await
}
