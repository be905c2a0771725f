//! Helpers shared by the benchmarks: bounded child processes, the private
//! mount namespace, cgroup cleanup.

use anyhow::{bail, Context, Result};
use mezzo_containerizer::{Command, ContainerConfig, ContainerType, Resources};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The cgroup2 mount that makes this host "hybrid" for crun.
const UNIFIED: &str = "/sys/fs/cgroup/unified";

/// Moves this (still single-threaded) process into a private mount
/// namespace and unmounts the cgroup2 hierarchy there, so that crun 1.8
/// accepts the host and every runtime (ours, crun, runc) sees the same pure
/// v1 layout. The host's mount table is untouched, and every mount the
/// bench makes disappears with the process.
pub fn enter_private_mount_namespace() -> Result<bool> {
    unshare(CloneFlags::CLONE_NEWNS).context("unshare the mount namespace")?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .context("make / private")?;
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .context("read mountinfo")?
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(UNIFIED));
    if mounted {
        umount2(UNIFIED, MntFlags::MNT_DETACH).with_context(|| format!("unmount {UNIFIED}"))?;
    }
    Ok(mounted)
}

/// Runs `argv` to completion within `timeout` (killed after), output
/// discarded; returns how long it took from spawn to exit. A non-zero exit
/// is an error carrying the stderr tail.
pub async fn timed_run(argv: &[&str], timeout: Duration) -> Result<Duration> {
    let (took, ok, err) = run_capture(argv, timeout).await?;
    if !ok {
        bail!("{} failed: {}", argv.join(" "), err.trim());
    }
    Ok(took)
}

/// Runs `argv` within `timeout`; returns (time taken, success, stderr).
pub async fn run_capture(argv: &[&str], timeout: Duration) -> Result<(Duration, bool, String)> {
    let (prog, args) = argv.split_first().context("empty command")?;
    let start = Instant::now();
    let mut child = tokio::process::Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawn {prog}"))?;
    let stderr = child.stderr.take();
    let read_err = async move {
        let mut buf = String::new();
        if let Some(mut e) = stderr {
            use tokio::io::AsyncReadExt;
            let _ = e.read_to_string(&mut buf).await;
        }
        buf
    };
    let (status, err) = match tokio::time::timeout(timeout, async { tokio::join!(child.wait(), read_err) }).await {
        Ok((status, err)) => (status.with_context(|| format!("wait for {prog}"))?, err),
        Err(_) => {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            bail!("{} did not finish within {}s", argv.join(" "), timeout.as_secs());
        }
    };
    let took = start.elapsed();
    let tail: String = err.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("; ");
    Ok((took, status.success(), tail))
}

/// Removes the cgroup `/<name>` and everything below it in every mounted
/// hierarchy, killing leftover processes first.
pub fn remove_cgroup_tree(name: &str) {
    let path = format!("/{}", name.trim_matches('/'));
    if let Err(e) = mezzo_containerizer::cgroupfs::kill_all(&path, Duration::from_secs(5)) {
        tracing::warn!(cgroup = %path, error = %e, "kill leftovers in bench cgroup");
    }
    if let Err(e) = mezzo_containerizer::cgroupfs::remove_dirs(&path, Duration::from_secs(5)) {
        tracing::warn!(cgroup = %path, error = %e, "remove bench cgroup");
    }
}

/// Creates the sandbox directory of a task as the agent does (with empty
/// `stdout` and `stderr`).
pub fn create_sandbox(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    for f in ["stdout", "stderr"] {
        std::fs::File::create(dir.join(f)).with_context(|| format!("create {}/{f}", dir.display()))?;
    }
    Ok(())
}

/// The launch every latency benchmark times: `image`'s `/bin/true` with
/// 0.1 cpus and 32 MB, its sandbox `sandboxes/<id>`.
pub fn true_config(id: &str, container_type: ContainerType, image: &str, sandboxes: &Path) -> ContainerConfig {
    ContainerConfig {
        container_id: id.to_string(),
        container_type,
        image: Some(image.to_string()),
        command: Command {
            shell: false,
            value: Some("/bin/true".into()),
            arguments: vec!["true".into()],
            ..Default::default()
        },
        resources: Resources { cpus: Some(0.1), mem_mb: Some(32.0), ..Default::default() },
        sandbox: sandboxes.join(id),
        ..Default::default()
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; the caller binds it next).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Whether `prog` can be found on PATH.
pub fn have(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}
