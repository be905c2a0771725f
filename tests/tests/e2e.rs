//! One task end to end, for each containerizer: a real master, agent,
//! executor and container; the scheduler sees what a framework would see.

use anyhow::Result;
use mezzo_proto::mesos::v1::TaskState;
use mezzo_tests::{assert_clean, cgroup_dir, cgroup_v2, command_task, states, Cluster, Kind, Scheduler};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(90);

fn containerizers(kind: Kind) -> &'static str {
    match kind {
        Kind::Docker => "docker",
        _ => "rust",
    }
}

async fn start(kind: Kind) -> Result<(Cluster, Scheduler)> {
    let cluster = Cluster::start(containerizers(kind)).await?;
    let scheduler = Scheduler::subscribe(&cluster.master, "e2e").await?;
    Ok((cluster, scheduler))
}

/// Runs `command` to its end and returns the updates and the sandbox's stdout.
async fn run(kind: Kind, id: &str, command: &str, image: &str) -> Result<(Vec<mezzo_proto::mesos::v1::TaskStatus>, String)> {
    let (mut cluster, mut sched) = start(kind).await?;
    let offer = sched.next_offer(TIMEOUT).await?;
    sched.launch(&offer, command_task(&offer, id, command, kind, image, 64.0)).await?;
    let updates = sched.updates_until_terminal(id, TIMEOUT).await;
    let stdout = read_sandbox_file(&cluster, &sched, id, "stdout").await;
    let log = cluster.agent_log();
    sched.teardown().await.ok();
    cluster.stop();
    assert_clean(&cluster);
    let updates = updates.map_err(|e| e.context(format!("agent log:\n{log}")))?;
    Ok((updates, stdout?))
}

/// Reads a sandbox file through the agent's `/files/download`, as `mezzo execute` does.
async fn read_sandbox_file(cluster: &Cluster, sched: &Scheduler, task: &str, file: &str) -> Result<String> {
    let url = format!(
        "http://{}/files/download?path=/frameworks/{}/executors/{}/runs/latest/{}",
        cluster.agent, sched.framework_id.value, task, file
    );
    let resp = reqwest::get(url).await?;
    if resp.status() != 200 {
        let code = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let tree = std::process::Command::new("find").arg(cluster.agent_work_dir().join("slaves")).output()?;
        anyhow::bail!("files/download: {code} {body}\n{}", String::from_utf8_lossy(&tree.stdout));
    }
    Ok(resp.text().await?)
}

async fn exit_zero_gives_starting_running_finished(kind: Kind) -> Result<()> {
    let (updates, _) = run(kind, "exit-zero", "exit 0", "busybox").await?;
    assert_eq!(states(&updates), ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]);
    for u in &updates {
        assert!(u.agent_id.is_some(), "update without agent_id");
        assert_eq!(u.uuid.as_ref().map(|u| u.len()), Some(16), "update without a 16-byte uuid");
    }
    Ok(())
}

async fn exit_three_gives_failed(kind: Kind) -> Result<()> {
    let (updates, _) = run(kind, "exit-three", "exit 3", "busybox").await?;
    let last = updates.last().unwrap();
    assert_eq!(last.state(), TaskState::TaskFailed, "updates: {:?}", states(&updates));
    let msg = last.message.clone().unwrap_or_default();
    assert!(msg.contains("exited with status 3"), "message: {msg}");
    Ok(())
}

async fn echo_hi_lands_in_sandbox_stdout(kind: Kind) -> Result<()> {
    let (updates, stdout) = run(kind, "echo-hi", "echo hi", "busybox").await?;
    assert_eq!(updates.last().unwrap().state(), TaskState::TaskFinished);
    assert_eq!(stdout, "hi\n");
    Ok(())
}

async fn missing_image_fails_naming_it(kind: Kind) -> Result<()> {
    let (updates, _) = run(kind, "no-image", "true", "nosuchimage-mezzo:latest").await?;
    let last = updates.last().unwrap();
    assert_eq!(last.state(), TaskState::TaskFailed, "updates: {:?}", states(&updates));
    let msg = last.message.clone().unwrap_or_default();
    assert!(msg.contains("nosuchimage-mezzo"), "message does not name the image: {msg}");
    Ok(())
}

/// `sleep 1000`: the memory limit is the task's `mem` while it runs, and a
/// KILL ends it with TASK_KILLED within the 3 s grace period plus one second.
async fn kill_and_memory_limit(kind: Kind) -> Result<()> {
    let (mut cluster, mut sched) = start(kind).await?;
    let offer = sched.next_offer(TIMEOUT).await?;
    let mem = 96.0;
    sched.launch(&offer, command_task(&offer, "sleeper", "sleep 1000", kind, "busybox", mem)).await?;
    let mut container_id = None;
    loop {
        let st = sched.next_update(TIMEOUT).await?;
        if let Some(cid) = st.container_status.as_ref().and_then(|c| c.container_id.as_ref()) {
            container_id = Some(cid.value.clone());
        }
        assert!(!st.state().is_terminal(), "task ended early: {st:?}\n{}", cluster.agent_log());
        if st.state() == TaskState::TaskRunning {
            break;
        }
    }
    let cid = container_id.expect("updates carry the container id");
    let limit = match kind {
        Kind::Docker => {
            let out = std::process::Command::new("docker")
                .args(["inspect", "-f", "{{.HostConfig.Memory}}", &format!("mesos-{cid}")])
                .output()?;
            String::from_utf8_lossy(&out.stdout).trim().parse::<u64>()?
        }
        _ => {
            let file = if cgroup_v2() { "memory.max" } else { "memory.limit_in_bytes" };
            let path = cgroup_dir("memory", &format!("{}/{cid}", cluster.cgroups_root)).join(file);
            std::fs::read_to_string(&path)?.trim().parse::<u64>()?
        }
    };
    assert_eq!(limit, (mem as u64) << 20, "memory limit of the container");
    let t = Instant::now();
    sched.kill("sleeper", Some(offer.agent_id.clone())).await?;
    let updates = sched.updates_until_terminal("sleeper", TIMEOUT).await?;
    let elapsed = t.elapsed();
    assert_eq!(updates.last().unwrap().state(), TaskState::TaskKilled, "updates: {:?}", states(&updates));
    assert!(elapsed <= Duration::from_secs(4), "kill took {elapsed:?}");
    sched.teardown().await.ok();
    cluster.stop();
    assert_clean(&cluster);
    Ok(())
}

mezzo_tests::per_image_containerizer!(
    exit_zero_gives_starting_running_finished,
    exit_three_gives_failed,
    echo_hi_lands_in_sandbox_stdout,
    missing_image_fails_naming_it,
    kill_and_memory_limit,
);

mod rust_without_image {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exit_zero_gives_starting_running_finished() -> Result<()> {
        super::exit_zero_gives_starting_running_finished(Kind::MesosNoImage).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn echo_hi_lands_in_sandbox_stdout() -> Result<()> {
        super::echo_hi_lands_in_sandbox_stdout(Kind::MesosNoImage).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kill_and_memory_limit() -> Result<()> {
        super::kill_and_memory_limit(Kind::MesosNoImage).await
    }
}

/// A task that no enabled containerizer accepts fails with a message that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_task_on_rust_only_agent_fails_clearly() -> Result<()> {
    let (mut cluster, mut sched) = start(Kind::Mesos).await?;
    let offer = sched.next_offer(TIMEOUT).await?;
    sched.launch(&offer, command_task(&offer, "wrong-kind", "true", Kind::Docker, "busybox", 64.0)).await?;
    let updates = sched.updates_until_terminal("wrong-kind", TIMEOUT).await?;
    let last = updates.last().unwrap();
    assert_eq!(last.state(), TaskState::TaskFailed);
    let msg = last.message.clone().unwrap_or_default();
    assert!(msg.contains("DOCKER") && msg.contains("rust"), "message: {msg}");
    sched.teardown().await.ok();
    cluster.stop();
    assert_clean(&cluster);
    Ok(())
}
