//! Kill and exit latency as a framework sees it: a KILL ends a task as soon
//! as the task itself ends (a small init is PID 1 of the container and
//! forwards SIGTERM, so the kernel does not drop it), SIGKILL follows only
//! after the grace period, orphans are reaped, the messages name signals as
//! Mesos does, and a TASK_FAILED is reported as soon as the task exits.

use anyhow::{Context, Result};
use mezzo_proto::mesos::v1::task_status::Reason;
use mezzo_proto::mesos::v1::{CommandInfo, DurationInfo, KillPolicy, TaskInfo, TaskState, TaskStatus};
use mezzo_tests::{assert_clean, command_task, container_id_of, containerizer_of as containerizers, runnable, states, Cluster, Kind, Scheduler};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(90);

fn with_grace(mut task: TaskInfo, grace: Duration) -> TaskInfo {
    task.kill_policy = Some(KillPolicy { grace_period: Some(DurationInfo { nanoseconds: grace.as_nanos() as i64 }) });
    task
}

/// A task running `argv` directly (no shell).
fn argv_task(task: TaskInfo, argv: &[&str]) -> TaskInfo {
    TaskInfo {
        command: Some(CommandInfo {
            value: Some(argv[0].to_string()),
            arguments: argv.iter().map(|a| a.to_string()).collect(),
            shell: Some(false),
            ..Default::default()
        }),
        ..task
    }
}

struct Killed {
    elapsed: Duration,
    last: TaskStatus,
}

/// Launches `task`, waits for TASK_RUNNING (and `settle` more), KILLs it
/// and returns how long the terminal update took and what it said.
async fn launch_and_kill(kind: Kind, make: impl FnOnce(&mezzo_proto::mesos::v1::Offer) -> TaskInfo, settle: Duration) -> Result<Killed> {
    let mut cluster = Cluster::start(containerizers(kind)).await?;
    let mut sched = Scheduler::subscribe(&cluster.master, "kill").await?;
    let offer = sched.next_offer(TIMEOUT).await?;
    let task = make(&offer);
    let id = task.task_id.value.clone();
    let result = async {
        sched.launch_and_wait_running(&offer, task, TIMEOUT).await?;
        tokio::time::sleep(settle).await;
        let t = Instant::now();
        sched.kill(&id, Some(offer.agent_id.clone())).await?;
        let updates = sched.updates_until_terminal(&id, TIMEOUT).await?;
        let elapsed = t.elapsed();
        let last = updates.last().cloned().context("no update")?;
        assert_eq!(last.state(), TaskState::TaskKilled, "updates: {:?} {last:?}", states(&updates));
        Ok::<_, anyhow::Error>(Killed { elapsed, last })
    }
    .await;
    let log = cluster.agent_log();
    sched.teardown().await.ok();
    cluster.stop();
    assert_clean(&cluster);
    result.map_err(|e| e.context(format!("agent log:\n{log}")))
}

fn message(status: &TaskStatus) -> String {
    status.message.clone().unwrap_or_default()
}

async fn kill_of_sleep_ends_well_under_the_grace(kind: Kind) -> Result<()> {
    if !runnable(kind) {
        return Ok(());
    }
    // `sleep` run directly, then under a shell: neither traps SIGTERM.
    let direct = launch_and_kill(
        kind,
        |offer| {
            let task = match kind {
                // The docker containerizer runs a non-shell command as the
                // image's entrypoint's arguments: exec from the shell instead.
                Kind::Docker => command_task(offer, "sleep-direct", "exec sleep 1000", kind, "busybox", 32.0),
                _ => argv_task(command_task(offer, "sleep-direct", "", kind, "busybox", 32.0), &["sleep", "1000"]),
            };
            with_grace(task, Duration::from_secs(10))
        },
        Duration::ZERO,
    )
    .await?;
    let shell = launch_and_kill(
        kind,
        |offer| with_grace(command_task(offer, "sleep-shell", "sleep 1000", kind, "busybox", 32.0), Duration::from_secs(10)),
        Duration::ZERO,
    )
    .await?;
    for (what, killed) in [("sleep 1000", &direct), ("sh -c 'sleep 1000'", &shell)] {
        assert!(killed.elapsed < Duration::from_millis(1500), "KILL of {what} took {:?} (grace 10 s)", killed.elapsed);
        assert_eq!(message(&killed.last), "Command terminated with signal Terminated", "{what}: {:?}", killed.last);
    }
    Ok(())
}

/// The task's TERM handler runs, the task exits 0 a second later, and that
/// exit (not the grace period) ends it as TASK_KILLED.
async fn task_trapping_term_exits_on_its_own_and_is_killed(kind: Kind) -> Result<()> {
    if !runnable(kind) {
        return Ok(());
    }
    let command = "trap 'sleep 1; exit 0' TERM; while true; do sleep 0.1; done";
    let killed = launch_and_kill(
        kind,
        |offer| with_grace(command_task(offer, "trapper", command, kind, "busybox", 32.0), Duration::from_secs(10)),
        Duration::from_millis(300),
    )
    .await?;
    assert!(
        killed.elapsed >= Duration::from_millis(900) && killed.elapsed < Duration::from_secs(5),
        "TASK_KILLED after {:?}, not after the handler's second",
        killed.elapsed
    );
    assert_eq!(message(&killed.last), "Command exited with status 0", "{:?}", killed.last);
    Ok(())
}

/// A task that ignores SIGTERM is SIGKILLed once the grace period is over.
async fn task_ignoring_term_is_killed_after_the_grace(kind: Kind) -> Result<()> {
    if !runnable(kind) {
        return Ok(());
    }
    let killed = launch_and_kill(
        kind,
        |offer| with_grace(command_task(offer, "stubborn", "trap '' TERM; sleep 1000", kind, "busybox", 32.0), Duration::from_secs(2)),
        Duration::from_millis(300),
    )
    .await?;
    assert!(
        killed.elapsed >= Duration::from_millis(1900) && killed.elapsed < Duration::from_secs(8),
        "TASK_KILLED after {:?} with a 2 s grace",
        killed.elapsed
    );
    assert_eq!(message(&killed.last), "Command terminated with signal Killed", "{:?}", killed.last);
    Ok(())
}

/// A shell in `wait` is killed by the SIGTERM: the message says so (it
/// said `Command exited with status 0`).
async fn kill_of_a_task_in_wait_names_the_signal(kind: Kind) -> Result<()> {
    if !runnable(kind) {
        return Ok(());
    }
    let killed = launch_and_kill(
        kind,
        |offer| with_grace(command_task(offer, "waiter", "sleep 1000 & wait", kind, "busybox", 32.0), Duration::from_secs(10)),
        Duration::from_millis(300),
    )
    .await?;
    assert!(killed.elapsed < Duration::from_millis(1500), "KILL took {:?}", killed.elapsed);
    assert_eq!(message(&killed.last), "Command terminated with signal Terminated", "{:?}", killed.last);
    Ok(())
}

/// The parent pid and state of a host process.
fn ppid_and_state(pid: &str) -> Option<(String, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.to_string();
    Some((fields.next()?.to_string(), state))
}

/// Zombie processes whose parent runs in the cgroups of `container_id`.
fn zombies_in(container_id: &str) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Some((ppid, state)) = ppid_and_state(&pid) else { continue };
        if state != "Z" {
            continue;
        }
        let cgroups = std::fs::read_to_string(format!("/proc/{ppid}/cgroup")).unwrap_or_default();
        if cgroups.contains(container_id) {
            out.push(format!("{pid} (parent {ppid})"));
        }
    }
    out
}

/// Orphans of the task are reaped by the container's init: `sleep` as the
/// container's PID 1 never reaped the children it inherited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_of_a_task_are_reaped() -> Result<()> {
    if !runnable(Kind::Mesos) {
        return Ok(());
    }
    let mut cluster = Cluster::start("rust").await?;
    let mut sched = Scheduler::subscribe(&cluster.master, "orphans").await?;
    let offer = sched.next_offer(TIMEOUT).await?;
    let command = "(sleep 0.3 &); (sleep 0.3 &); (sleep 0.3 &); exec sleep 1000";
    let result = async {
        let running = sched
            .launch_and_wait_running(&offer, command_task(&offer, "orphans", command, Kind::Mesos, "busybox", 32.0), TIMEOUT)
            .await?;
        let container_id = container_id_of(&running).context("TASK_RUNNING names the container")?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let zombies = zombies_in(&container_id);
        assert!(zombies.is_empty(), "zombies left in the container: {zombies:?}");
        sched.kill("orphans", Some(offer.agent_id.clone())).await?;
        let updates = sched.updates_until_terminal("orphans", TIMEOUT).await?;
        assert_eq!(updates.last().map(|u| u.state()), Some(TaskState::TaskKilled), "{:?}", states(&updates));
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let log = cluster.agent_log();
    sched.teardown().await.ok();
    cluster.stop();
    assert_clean(&cluster);
    result.map_err(|e| e.context(format!("agent log:\n{log}")))
}

/// Seconds since boot, as /proc/uptime says (the same clock inside a container).
fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// A task's exit reaches the scheduler as TASK_FAILED at once (it waited
/// 500 ms for a limitation that was not coming).
async fn exit_to_failed_is_prompt(kind: Kind) -> Result<()> {
    if !runnable(kind) {
        return Ok(());
    }
    let mut cluster = Cluster::start(containerizers(kind)).await?;
    let mut sched = Scheduler::subscribe(&cluster.master, "exit").await?;
    let offer = sched.next_offer(TIMEOUT).await?;
    // The task writes the time it exits (10 ms resolution) into its stdout.
    let command = "sleep 0.5; cat /proc/uptime; exit 3";
    let result = async {
        sched.launch(&offer, command_task(&offer, "exit3", command, kind, "busybox", 32.0)).await?;
        let updates = sched.updates_until_terminal("exit3", TIMEOUT).await?;
        let received = uptime();
        let last = updates.last().cloned().context("no update")?;
        assert_eq!(last.state(), TaskState::TaskFailed, "{:?}", states(&updates));
        assert_eq!(message(&last), "Command exited with status 3");
        assert!(
            !matches!(last.reason(), Reason::ContainerLimitation | Reason::ContainerLimitationMemory | Reason::ContainerLimitationDisk),
            "{last:?}"
        );
        let stdout = std::fs::read_to_string(sandbox_file(&cluster, "exit3", "stdout")?)?;
        let exited: f64 = stdout.split_whitespace().next().and_then(|v| v.parse().ok()).context(format!("stdout: {stdout:?}"))?;
        let latency = received - exited;
        assert!(latency < 0.3, "TASK_FAILED reached the scheduler {latency:.3} s after the task's exit");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let log = cluster.agent_log();
    sched.teardown().await.ok();
    cluster.stop();
    assert_clean(&cluster);
    result.map_err(|e| e.context(format!("agent log:\n{log}")))
}

/// `TaskInfo.max_completion_time`: a task still running then is killed (its
/// kill policy's grace applies) and ends TASK_FAILED with
/// REASON_MAX_COMPLETION_TIME_REACHED; a task that ends in time is not
/// touched; a negative one is refused by the master.
async fn max_completion_time_fails_a_task_still_running(kind: Kind) -> Result<()> {
    if !runnable(kind) {
        return Ok(());
    }
    let mut cluster = Cluster::start(containerizers(kind)).await?;
    let mut sched = Scheduler::subscribe(&cluster.master, "deadline").await?;
    let result = async {
        let within = |offer: &mezzo_proto::mesos::v1::Offer, id: &str, command: &str, nanos: i64| TaskInfo {
            max_completion_time: Some(DurationInfo { nanoseconds: nanos }),
            ..with_grace(command_task(offer, id, command, kind, "busybox", 32.0), Duration::from_secs(1))
        };
        // Runs past its 1 s: killed.
        let offer = sched.next_offer(TIMEOUT).await?;
        let launched = Instant::now();
        sched.launch(&offer, within(&offer, "late", "sleep 1000", 1_000_000_000)).await?;
        let updates = sched.updates_until_terminal("late", TIMEOUT).await?;
        let elapsed = launched.elapsed();
        let last = updates.last().cloned().context("no update")?;
        assert!(states(&updates).contains(&"TASK_RUNNING"), "{:?}", states(&updates));
        assert_eq!(last.state(), TaskState::TaskFailed, "{:?}", states(&updates));
        assert_eq!(last.reason(), Reason::MaxCompletionTimeReached, "{last:?}");
        assert!(message(&last).starts_with("Task exceeded its max_completion_time of 1secs"), "{}", message(&last));
        assert!(elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(30), "{elapsed:?}");
        // Ends before its 60 s: finishes as usual.
        let offer = sched.next_offer(TIMEOUT).await?;
        sched.launch(&offer, within(&offer, "in-time", "true", 60_000_000_000)).await?;
        let updates = sched.updates_until_terminal("in-time", TIMEOUT).await?;
        assert_eq!(updates.last().map(|u| u.state()), Some(TaskState::TaskFinished), "{:?}", states(&updates));
        // Negative: refused before it runs.
        let offer = sched.next_offer(TIMEOUT).await?;
        sched.launch(&offer, within(&offer, "negative", "true", -1)).await?;
        let updates = sched.updates_until_terminal("negative", TIMEOUT).await?;
        let last = updates.last().cloned().context("no update")?;
        assert_eq!(last.state(), TaskState::TaskError, "{:?}", states(&updates));
        assert!(message(&last).contains("max_completion_time"), "{}", message(&last));
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let log = cluster.agent_log();
    sched.teardown().await.ok();
    cluster.stop();
    assert_clean(&cluster);
    result.map_err(|e| e.context(format!("agent log:\n{log}")))
}

/// The file `name` in the (only) sandbox of executor `task` on the cluster's agent.
fn sandbox_file(cluster: &Cluster, task: &str, name: &str) -> Result<std::path::PathBuf> {
    let slaves = cluster.agent_work_dir().join("slaves");
    for agent in std::fs::read_dir(&slaves)?.flatten() {
        for fw in std::fs::read_dir(agent.path().join("frameworks")).into_iter().flatten().flatten() {
            let runs = fw.path().join("executors").join(task).join("runs");
            for run in std::fs::read_dir(&runs).into_iter().flatten().flatten() {
                let path = run.path().join(name);
                if run.file_name() != "latest" && path.is_file() {
                    return Ok(path);
                }
            }
        }
    }
    anyhow::bail!("no sandbox file {name} for {task} under {}", slaves.display())
}

mezzo_tests::per_image_containerizer!(
    kill_of_sleep_ends_well_under_the_grace,
    task_trapping_term_exits_on_its_own_and_is_killed,
    task_ignoring_term_is_killed_after_the_grace,
    kill_of_a_task_in_wait_names_the_signal,
    max_completion_time_fails_a_task_still_running,
);

/// The rust containerizer's exit to TASK_FAILED (the docker engine's own
/// wait and log flush come on top for docker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_to_failed_is_prompt_rust() -> Result<()> {
    exit_to_failed_is_prompt(Kind::Mesos).await
}
