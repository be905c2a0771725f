//! `--container_logger=logrotate` end to end, for each containerizer (rust on the host filesystem, rust with an
//! image, docker): a task writing numbered lines past `--logrotate_max_stdout_size` leaves the newest lines in
//! `stdout` and the earlier ones in `stdout.1`, `stdout.2`..., keeps `rotate N` rotated files, loses and
//! duplicates no line within what is kept, and never cuts a line; rotation goes on across an agent restart.

use anyhow::{ensure, Context, Result};
use mezzo_proto::mesos::v1::{TaskState, TaskStatus};
use mezzo_tests::{assert_clean, command_task, container_id_of, containerizer_of as containerizers, runnable, wait_recovered, wait_until, Cluster, Kind, Scheduler};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(90);

/// A shell loop printing `line <i>` for i in [from, to) on stdout, and `err <i>` on stderr every 100 lines.
fn numbered(from: usize, to: usize) -> String {
    format!("i={from}; while [ $i -lt {to} ]; do echo \"line $i\"; [ $((i % 100)) -eq 0 ] && echo \"err $i\" >&2; i=$((i+1)); done")
}

fn sandbox(cluster: &Cluster, sched: &Scheduler, status: &TaskStatus) -> PathBuf {
    cluster
        .agent_work_dir()
        .join("slaves")
        .join(&status.agent_id.as_ref().unwrap().value)
        .join("frameworks")
        .join(&sched.framework_id.value)
        .join("executors")
        .join(&status.task_id.value)
        .join("runs")
        .join(container_id_of(status).expect("the update names its container"))
}

/// The numbers of `<prefix> <n>` lines in `name`, `name.1`..., oldest first; checks every file holds whole
/// lines of that form only, and no more than `max` bytes plus a quarter.
fn kept_numbers(sandbox: &Path, name: &str, prefix: &str, max: u64) -> Result<(Vec<usize>, usize)> {
    let mut rotated = 0;
    while sandbox.join(format!("{name}.{}", rotated + 1)).exists() {
        rotated += 1;
    }
    let mut numbers = Vec::new();
    let files = (1..=rotated).rev().map(|n| format!("{name}.{n}")).chain([name.to_string()]);
    for file in files {
        let text = std::fs::read_to_string(sandbox.join(&file)).with_context(|| file.clone())?;
        ensure!(text.len() as u64 <= max + max / 4, "{file} holds {} bytes", text.len());
        ensure!(text.is_empty() || text.ends_with('\n'), "{file} ends with a whole line");
        for line in text.lines() {
            let n = line.strip_prefix(prefix).and_then(|n| n.strip_prefix(' ')).and_then(|n| n.parse().ok());
            numbers.push(n.with_context(|| format!("{file}: unexpected line {line:?}"))?);
        }
    }
    Ok((numbers, rotated))
}

/// Asserts `numbers` are consecutive and end at `last`.
fn assert_consecutive(numbers: &[usize], last: usize, step: usize) {
    assert!(!numbers.is_empty());
    for w in numbers.windows(2) {
        assert_eq!(w[1], w[0] + step, "lines lost or duplicated around {}", w[0]);
    }
    assert_eq!(*numbers.last().unwrap(), last, "the newest line is the last one written");
}

async fn wait_state(sched: &mut Scheduler, id: &str, want: TaskState) -> Result<TaskStatus> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let st = sched.next_update(deadline.saturating_duration_since(Instant::now())).await?;
        sched.acknowledge(&st).await?;
        if st.task_id.value == id && st.state() == want {
            return Ok(st);
        }
        ensure!(st.task_id.value != id || !st.state().is_terminal(), "task {id} ended {:?}: {:?}", st.state(), st.message);
    }
}

async fn rotation_keeps_the_newest_lines(kind: Kind) -> Result<()> {
    if !runnable(kind) {
        return Ok(());
    }
    let mut cluster = Cluster::start_with(
        containerizers(kind),
        &["--container_logger=logrotate", "--logrotate_max_stdout_size=4KB", "--logrotate_stdout_options=rotate 3", "--logrotate_max_stderr_size=1KB"],
    )
    .await?;
    let mut sched = Scheduler::subscribe(&cluster.master, "logrotate").await?;
    let offer = sched.next_offer(TIMEOUT).await?;
    sched.launch(&offer, command_task(&offer, "numbered", &numbered(0, 3000), kind, "busybox", 64.0)).await?;
    let done = wait_state(&mut sched, "numbered", TaskState::TaskFinished).await.with_context(|| cluster.agent_log())?;
    let dir = sandbox(&cluster, &sched, &done);
    let (lines, rotated) = kept_numbers(&dir, "stdout", "line", 4096)?;
    assert_eq!(rotated, 3, "rotate 3 keeps stdout.1 to stdout.3");
    assert!(!dir.join("stdout.4").exists());
    assert_consecutive(&lines, 2999, 1);
    assert!(lines[0] > 0, "the oldest lines were dropped");
    assert!(lines.len() > 3 * 380, "three full rotated files and stdout: {} lines", lines.len());
    // stderr: its own size and (default) count.
    let (errs, err_rotated) = kept_numbers(&dir, "stderr", "err", 1024)?;
    assert_eq!(err_rotated, 0, "30 short lines fit in 1KB");
    assert_consecutive(&errs, 2900, 100);
    assert_eq!(errs[0], 0);
    sched.teardown().await.ok();
    cluster.stop();
    assert_clean(&cluster);
    Ok(())
}

/// The agent restarts while the task writes: the supervisor (rust) or the executor's log follower (docker)
/// never stopped, so rotation goes on and no line is lost or written twice.
async fn rotation_goes_on_across_an_agent_restart(kind: Kind) -> Result<()> {
    if !runnable(kind) {
        return Ok(());
    }
    let mut cluster = Cluster::start_with(
        containerizers(kind),
        &["--container_logger=logrotate", "--logrotate_max_stdout_size=4KB", "--executor_reregistration_timeout=15secs"],
    )
    .await?;
    let mut sched = Scheduler::subscribe_checkpointing(&cluster.master, "logrotate-restart").await?;
    let offer = sched.next_offer(TIMEOUT).await?;
    let command = format!(
        "{} && touch \"$MESOS_SANDBOX/half\" && while [ ! -e \"$MESOS_SANDBOX/go\" ]; do sleep 0.1; done && {}",
        numbered(0, 1500),
        numbered(1500, 3000)
    );
    let running = sched.launch_and_wait_running(&offer, command_task(&offer, "restart", &command, kind, "busybox", 64.0), TIMEOUT).await?;
    let dir = sandbox(&cluster, &sched, &running);
    // The first half is written, and copied (docker's log follower may lag behind the task).
    let copied = || kept_numbers(&dir, "stdout", "line", 4096).is_ok_and(|(lines, _)| lines.last() == Some(&1499));
    wait_until("the first half is written and copied", TIMEOUT, || dir.join("half").exists() && copied()).await?;
    let (_, before) = kept_numbers(&dir, "stdout", "line", 4096)?;
    assert!(before >= 2, "rotated before the restart: {before}");
    cluster.restart_agent().await?;
    wait_recovered(&cluster, &container_id_of(&running).unwrap()).await?;
    std::fs::write(dir.join("go"), "")?;
    wait_state(&mut sched, "restart", TaskState::TaskFinished).await.with_context(|| cluster.agent_log())?;
    let (lines, after) = kept_numbers(&dir, "stdout", "line", 4096)?;
    assert!(after > before && after <= 9, "rotation went on after the restart: {before} then {after} rotated files");
    assert_eq!(lines.len(), 3000, "every line is kept (rotate 9 holds them all), once");
    assert_consecutive(&lines, 2999, 1);
    sched.teardown().await.ok();
    cluster.stop();
    assert_clean(&cluster);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_host_rotation_keeps_the_newest_lines() -> Result<()> {
    rotation_keeps_the_newest_lines(Kind::MesosNoImage).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_image_rotation_keeps_the_newest_lines() -> Result<()> {
    rotation_keeps_the_newest_lines(Kind::Mesos).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_rotation_keeps_the_newest_lines() -> Result<()> {
    rotation_keeps_the_newest_lines(Kind::Docker).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_host_rotation_goes_on_across_an_agent_restart() -> Result<()> {
    rotation_goes_on_across_an_agent_restart(Kind::MesosNoImage).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_image_rotation_goes_on_across_an_agent_restart() -> Result<()> {
    rotation_goes_on_across_an_agent_restart(Kind::Mesos).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_rotation_goes_on_across_an_agent_restart() -> Result<()> {
    rotation_goes_on_across_an_agent_restart(Kind::Docker).await
}

/// A task that leaves a writer behind: the copy stops soon after the task's end (the writer goes with the
/// container), and the task's own output is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_left_behind_does_not_hold_the_task_end() -> Result<()> {
    if !runnable(Kind::MesosNoImage) {
        return Ok(());
    }
    let mut cluster = Cluster::start_with("rust", &["--container_logger=logrotate", "--logrotate_max_stdout_size=4KB"]).await?;
    let mut sched = Scheduler::subscribe(&cluster.master, "logrotate-bg").await?;
    let offer = sched.next_offer(TIMEOUT).await?;
    let command = "(while true; do echo bg; sleep 0.01; done) & sleep 0.3; echo fg";
    sched.launch(&offer, command_task(&offer, "bg", command, Kind::MesosNoImage, "busybox", 64.0)).await?;
    let started = Instant::now();
    let done = wait_state(&mut sched, "bg", TaskState::TaskFinished).await.with_context(|| cluster.agent_log())?;
    assert!(started.elapsed() < Duration::from_secs(30), "ended in {:?}", started.elapsed());
    let stdout = std::fs::read_to_string(sandbox(&cluster, &sched, &done).join("stdout"))?;
    assert!(stdout.lines().any(|l| l == "fg") && stdout.lines().all(|l| l == "fg" || l == "bg"), "{stdout}");
    sched.teardown().await.ok();
    cluster.stop();
    assert_clean(&cluster);
    Ok(())
}
