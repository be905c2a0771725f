//! Sandbox garbage collection end to end (Mesos's `--gc_delay`, `--gc_disk_headroom`, `--disk_watch_interval`):
//! an ended task's sandbox and meta directories go after the delay, with its `runs/latest` link and its emptied
//! executor and framework directories, while a running task's stay; what a hostile task left in its sandbox (a
//! symlink out of it) is unlinked, never followed; after an agent restart, runs found on disk are collected from
//! their end; and a filling disk shortens the delay.

use anyhow::{Context, Result};
use mezzo_proto::mesos::v1::{TaskState, TaskStatus};
use mezzo_tests::{assert_clean, command_task, container_id_of, wait_recovered, wait_until, Cluster, Kind, Scheduler};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const TIMEOUT: Duration = Duration::from_secs(90);

/// `<work_dir>[/meta]/slaves/<aid>/frameworks/<fid>`.
fn framework_dir(cluster: &Cluster, meta: bool, status: &TaskStatus, sched: &Scheduler) -> PathBuf {
    let root = if meta { cluster.agent_work_dir().join("meta") } else { cluster.agent_work_dir() };
    root.join("slaves").join(&status.agent_id.as_ref().unwrap().value).join("frameworks").join(&sched.framework_id.value)
}

/// The run directory of the task's (command) executor.
fn run_dir(cluster: &Cluster, meta: bool, status: &TaskStatus, sched: &Scheduler) -> PathBuf {
    framework_dir(cluster, meta, status, sched)
        .join("executors")
        .join(&status.task_id.value)
        .join("runs")
        .join(container_id_of(status).expect("the update names its container"))
}

/// Waits for the updates of `ids` until each has reached `want` (terminal or TASK_RUNNING); acknowledges all.
async fn wait_states(sched: &mut Scheduler, want: &[(&str, TaskState)]) -> Result<Vec<TaskStatus>> {
    let mut got: Vec<Option<TaskStatus>> = vec![None; want.len()];
    let deadline = std::time::Instant::now() + TIMEOUT;
    while got.iter().any(Option::is_none) {
        let st = sched.next_update(deadline.saturating_duration_since(std::time::Instant::now())).await?;
        sched.acknowledge(&st).await?;
        if let Some(i) = want.iter().position(|(id, _)| *id == st.task_id.value) {
            if st.state() == want[i].1 {
                got[i] = Some(st);
            } else {
                anyhow::ensure!(!st.state().is_terminal(), "task {} ended {:?}: {:?}", st.task_id.value, st.state(), st.message);
            }
        }
    }
    Ok(got.into_iter().flatten().collect())
}

/// Whether the test can run here (records the skip when it cannot).
fn runnable() -> bool {
    if !mezzo_testkit::is_root() {
        mezzo_testkit::skip("needs root");
        return false;
    }
    true
}

async fn metric(cluster: &Cluster, name: &str) -> Result<f64> {
    let v: serde_json::Value = serde_json::from_str(&reqwest::get(format!("http://{}/metrics/snapshot", cluster.agent)).await?.text().await?)?;
    v[name].as_f64().with_context(|| format!("no metric {name} in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_sandbox_is_collected_after_gc_delay_and_a_running_one_is_kept() -> Result<()> {
    if !runnable() {
        return Ok(());
    }
    let outside = tempfile::tempdir()?;
    std::fs::write(outside.path().join("precious"), "HOST")?;
    let mut cluster = Cluster::start_with("rust", &["--gc_delay=3secs", "--disk_watch_interval=1secs"]).await?;
    let mut sched = Scheduler::subscribe_checkpointing(&cluster.master, "gc").await?;
    let offer = sched.next_offer(TIMEOUT).await?;
    // A hostile task: a symlink to a host directory, another to /, and a tree, all left in its sandbox.
    let hostile = format!("ln -s {} out && ln -s / root && mkdir -p a/b/c && echo x > a/b/c/f", outside.path().display());
    let ended = command_task(&offer, "ended", &hostile, Kind::MesosNoImage, "busybox", 32.0);
    let running = command_task(&offer, "running", "sleep 1000", Kind::MesosNoImage, "busybox", 32.0);
    sched.launch_tasks(&offer, vec![ended, running]).await?;
    let st = wait_states(&mut sched, &[("ended", TaskState::TaskFinished), ("running", TaskState::TaskRunning)]).await?;
    let (ended, running) = (&st[0], &st[1]);
    let ended_sandbox = run_dir(&cluster, false, ended, &sched);
    let ended_meta = run_dir(&cluster, true, ended, &sched);
    assert!(ended_sandbox.join("a/b/c/f").exists(), "the ended run's sandbox stays until --gc_delay passed");
    wait_until("the ended run's sandbox is collected", Duration::from_secs(30), || !ended_sandbox.exists() && !ended_meta.exists())
        .await
        .with_context(|| cluster.agent_log())?;
    // Its executor directory went with its only run (runs/latest too); nothing outside was followed.
    for meta in [false, true] {
        let executor = framework_dir(&cluster, meta, ended, &sched).join("executors").join("ended");
        assert!(!executor.exists(), "{} is gone", executor.display());
    }
    assert_eq!(std::fs::read_to_string(outside.path().join("precious"))?, "HOST", "a symlink out of the sandbox is never followed");
    assert!(Path::new("/bin/sh").exists());
    // The running task's directories stay, past several disk checks and delays.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let running_sandbox = run_dir(&cluster, false, running, &sched);
    assert!(running_sandbox.join("stdout").exists(), "a running task's sandbox is never collected");
    assert!(run_dir(&cluster, true, running, &sched).join("tasks").exists(), "nor its checkpoints");
    assert!(framework_dir(&cluster, true, running, &sched).join("framework.info").exists(), "its framework's checkpoint stays");
    assert!(running_sandbox.parent().unwrap().join("latest").exists());
    assert!(metric(&cluster, "gc/path_removals_succeeded").await? >= 2.0);
    assert_eq!(metric(&cluster, "gc/path_removals_failed").await?, 0.0);
    // Killed, it goes too: then the framework's directories, empty, go with it.
    sched.kill("running", None).await?;
    wait_states(&mut sched, &[("running", TaskState::TaskKilled)]).await?;
    let fw_dirs = [framework_dir(&cluster, false, running, &sched), framework_dir(&cluster, true, running, &sched)];
    wait_until("the killed task's sandbox and the framework's directories are collected", Duration::from_secs(30), || {
        !running_sandbox.exists() && fw_dirs.iter().all(|d| !d.exists())
    })
    .await
    .with_context(|| cluster.agent_log())?;
    sched.teardown().await.ok();
    cluster.stop();
    assert_clean(&cluster);
    Ok(())
}

/// A mount left in an ended sandbox (as a container that failed to clean up would leave it): the collection
/// neither enters it nor removes what is mounted; it removes the rest and counts a failed removal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mount_left_in_a_sandbox_is_never_entered() -> Result<()> {
    if !runnable() {
        return Ok(());
    }
    let outside = tempfile::tempdir()?;
    std::fs::write(outside.path().join("precious"), "HOST")?;
    let mut cluster = Cluster::start_with("rust", &["--gc_delay=4secs", "--disk_watch_interval=1secs"]).await?;
    let mut sched = Scheduler::subscribe(&cluster.master, "gc-mount").await?;
    let offer = sched.next_offer(TIMEOUT).await?;
    sched.launch_tasks(&offer, vec![command_task(&offer, "ended", "mkdir vol && echo x > file", Kind::MesosNoImage, "busybox", 32.0)]).await?;
    let st = wait_states(&mut sched, &[("ended", TaskState::TaskFinished)]).await?;
    let sandbox = run_dir(&cluster, false, &st[0], &sched);
    let vol = sandbox.join("vol");
    nix::mount::mount(Some(outside.path()), &vol, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>)?;
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let unmount = Unmount(vol.clone());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while metric(&cluster, "gc/path_removals_failed").await? == 0.0 {
        anyhow::ensure!(std::time::Instant::now() < deadline, "no collection ran; log:\n{}", cluster.agent_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!sandbox.join("file").exists(), "the rest of the sandbox went");
    assert_eq!(std::fs::read_to_string(vol.join("precious"))?, "HOST", "the mount is left in place, its content untouched");
    assert_eq!(metric(&cluster, "gc/path_removals_failed").await?, 1.0, "the sandbox's removal failed");
    assert_eq!(metric(&cluster, "gc/path_removals_succeeded").await?, 1.0, "its meta dir's (none: no checkpoint) did not");
    drop(unmount);
    assert_eq!(std::fs::read_to_string(outside.path().join("precious"))?, "HOST");
    sched.teardown().await.ok();
    cluster.stop();
    assert_clean(&cluster);
    Ok(())
}

/// The agent restarts between a run's end and its collection: the restarted agent collects it from its end
/// (its directories' mtime), and keeps the recovered running task's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_found_after_an_agent_restart_are_collected_from_their_end() -> Result<()> {
    if !runnable() {
        return Ok(());
    }
    let mut cluster =
        Cluster::start_with("rust", &["--gc_delay=1mins", "--disk_watch_interval=1secs", "--executor_reregistration_timeout=15secs"]).await?;
    let mut sched = Scheduler::subscribe_checkpointing(&cluster.master, "gc-restart").await?;
    let offer = sched.next_offer(TIMEOUT).await?;
    let ended = command_task(&offer, "ended", "echo done", Kind::MesosNoImage, "busybox", 32.0);
    let running = command_task(&offer, "running", "sleep 1000", Kind::MesosNoImage, "busybox", 32.0);
    sched.launch_tasks(&offer, vec![ended, running]).await?;
    let st = wait_states(&mut sched, &[("ended", TaskState::TaskFinished), ("running", TaskState::TaskRunning)]).await?;
    let (ended, running) = (&st[0], &st[1]);
    let dirs = [run_dir(&cluster, false, ended, &sched), run_dir(&cluster, true, ended, &sched)];
    // The ended run's end is recorded (its directories' mtime) once the agent finished its executor.
    wait_until("the ended run is completed", Duration::from_secs(30), || dirs[1].join("executor.sentinel").exists()).await?;
    cluster.crash_agent();
    // As if it had ended 2 minutes ago: past the 1 minute delay.
    let long_ago = SystemTime::now() - Duration::from_secs(120);
    for d in &dirs {
        std::fs::File::open(d)?.set_modified(long_ago)?;
    }
    cluster.restart_agent().await?;
    wait_recovered(&cluster, &container_id_of(running).unwrap()).await?;
    wait_until("the restarted agent collects the old run", Duration::from_secs(30), || dirs.iter().all(|d| !d.exists()))
        .await
        .with_context(|| cluster.agent_log())?;
    assert!(run_dir(&cluster, false, running, &sched).join("stdout").exists(), "the recovered running task's sandbox stays");
    assert!(run_dir(&cluster, true, running, &sched).exists());
    sched.kill("running", None).await?;
    wait_states(&mut sched, &[("running", TaskState::TaskKilled)]).await?;
    sched.teardown().await.ok();
    cluster.stop();
    assert_clean(&cluster);
    Ok(())
}

/// A small tmpfs as the work dir: once it is more than `1 - gc_disk_headroom` full, an ended run is collected
/// at the next disk check although `--gc_delay` is a week.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filling_disk_collects_ended_runs_before_gc_delay() -> Result<()> {
    if !runnable() {
        return Ok(());
    }
    let disk = tempfile::tempdir()?;
    nix::mount::mount(Some("tmpfs"), disk.path(), Some("tmpfs"), nix::mount::MsFlags::empty(), Some("size=32m"))?;
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _unmount = Unmount(disk.path().to_path_buf());
    let work = format!("--work_dir={}", disk.path().join("agent").display());
    let mut cluster = Cluster::start_with("rust", &[&work, "--gc_delay=1weeks", "--gc_disk_headroom=0.1", "--disk_watch_interval=500ms"]).await?;
    let mut sched = Scheduler::subscribe_checkpointing(&cluster.master, "gc-disk").await?;
    let offer = sched.next_offer(TIMEOUT).await?;
    let ended = command_task(&offer, "ended", "echo done", Kind::MesosNoImage, "busybox", 32.0);
    sched.launch_tasks(&offer, vec![ended]).await?;
    let st = wait_states(&mut sched, &[("ended", TaskState::TaskFinished)]).await?;
    let sandbox = disk.path().join("agent/slaves").join(&st[0].agent_id.as_ref().unwrap().value).join("frameworks")
        .join(&sched.framework_id.value).join("executors/ended/runs").join(container_id_of(&st[0]).unwrap());
    assert!(sandbox.exists());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(sandbox.exists(), "a week's delay with an empty disk keeps it");
    let age = metric(&cluster, "slave/executor_directory_max_allowed_age_secs").await?;
    assert!(age > 0.8 * 7.0 * 86400.0, "nearly 0.9 weeks: {age}");
    // 95% full: the allowed age is 0.
    std::fs::write(disk.path().join("filler"), vec![1u8; 30 << 20])?;
    wait_until("the filling disk collects the ended run", Duration::from_secs(30), || !sandbox.exists())
        .await
        .with_context(|| cluster.agent_log())?;
    assert_eq!(metric(&cluster, "slave/executor_directory_max_allowed_age_secs").await?, 0.0);
    sched.teardown().await.ok();
    cluster.stop();
    assert_clean(&cluster);
    drop(cluster);
    Ok(())
}
