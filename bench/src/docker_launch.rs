//! `docker_launch_true`: busybox `true` through the docker containerizer
//! (prepare, launcher start, wait, destroy) against `docker run --rm` of the
//! same image with the same limits, network and sandbox mount.

use crate::report::{Entry, Samples};
use crate::util::{create_sandbox, timed_run, true_config};
use anyhow::{bail, Context, Result};
use mezzo_containerizer::docker::{DockerBackend, DockerBackendConfig};
use mezzo_containerizer::{ContainerConfig, ContainerType, Containerizer, DockerOptions, SANDBOX_MOUNT_POINT};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bound on one step of a launch and on one `docker run`.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);
/// The image both sides run (loaded from the test images when missing).
const IMAGE: &str = "busybox:latest";

struct DockerRig {
    cz: Containerizer,
    launcher_dir: PathBuf,
    sandboxes: PathBuf,
    seq: usize,
}

impl DockerRig {
    fn config(&self, id: &str) -> ContainerConfig {
        ContainerConfig {
            docker: Some(DockerOptions::default()),
            ..true_config(id, ContainerType::Docker, IMAGE, &self.sandboxes)
        }
    }

    /// One launch; the container is destroyed also when a step fails.
    async fn launch_once(&mut self) -> Result<Duration> {
        self.seq += 1;
        let id = format!("bench-docker-{}-{}", std::process::id(), self.seq);
        let config = self.config(&id);
        create_sandbox(&config.sandbox)?;
        let result = async {
            let t0 = Instant::now();
            let dir = bounded(self.cz.prepare(&config)).await.context("prepare")?;
            let mut launcher = mezzo_containerizer::launcher(&dir, &self.launcher_dir)?;
            bounded(launcher.start()).await.context("start")?;
            let status = bounded(launcher.wait()).await.context("wait")?;
            drop(launcher);
            bounded(self.cz.destroy(&id)).await.context("destroy")?;
            let took = t0.elapsed();
            if !status.success() {
                bail!("container {id} {status}");
            }
            Ok(took)
        }
        .await;
        if result.is_err() {
            let _ = bounded(self.cz.destroy(&id)).await;
        }
        let _ = std::fs::remove_dir_all(&config.sandbox);
        result
    }

    /// `docker run` flags giving the peer what our backend asked the engine
    /// for: the same limits, network and sandbox mount.
    async fn peer_flags(&mut self, sandbox: &Path) -> Result<Vec<String>> {
        self.seq += 1;
        let id = format!("bench-docker-{}-{}", std::process::id(), self.seq);
        let config = self.config(&id);
        create_sandbox(&config.sandbox)?;
        let spec = async {
            let dir = bounded(self.cz.prepare(&config)).await?;
            Ok::<_, anyhow::Error>(dir.read_spec()?)
        }
        .await;
        bounded(self.cz.destroy(&id)).await?;
        let _ = std::fs::remove_dir_all(&config.sandbox);
        let spec = spec?;
        let mut flags = vec!["--network".to_string(), "host".to_string()];
        let l = &spec.limits;
        if let Some(s) = l.cpu_shares {
            flags.push(format!("--cpu-shares={s}"));
        }
        if let Some(m) = l.memory_limit_bytes {
            flags.push(format!("--memory={m}"));
        }
        if let Some(m) = l.memory_reservation_bytes {
            flags.push(format!("--memory-reservation={m}"));
        }
        flags.push("--mount".into());
        flags.push(format!("type=bind,source={},target={SANDBOX_MOUNT_POINT}", sandbox.display()));
        Ok(flags)
    }
}

async fn bounded<T, E>(f: impl std::future::Future<Output = Result<T, E>>) -> Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(STEP_TIMEOUT, f).await {
        Ok(r) => Ok(r?),
        Err(_) => bail!("no result within {}s", STEP_TIMEOUT.as_secs()),
    }
}

/// `docker_launch_true` against `docker run --rm`, alternating, same run.
pub async fn launch_true(work: &Path, test_images: &Path, launcher_dir: &Path, runs: usize, warmup: usize) -> Result<Entry> {
    let backend = DockerBackend::new(DockerBackendConfig {
        image_archive_dir: Some(test_images.to_path_buf()),
        // Remove at destroy, as `docker run --rm` does (Mesos's default
        // keeps stopped containers for 6 hours).
        remove_delay: Duration::ZERO,
        ..Default::default()
    })
    .await
    .context("connect the docker backend")?;
    let runtime_root = work.join("docker-runtime");
    std::fs::create_dir_all(&runtime_root)?;
    let _leftovers = Leftovers(format!("mesos-bench-docker-{}-", std::process::id()));
    let mut rig = DockerRig {
        cz: Containerizer::new(vec![Arc::new(backend)], runtime_root),
        launcher_dir: launcher_dir.to_path_buf(),
        sandboxes: work.join("docker-sandboxes"),
        seq: 0,
    };
    let sandbox = work.join("docker-peer-sandbox");
    create_sandbox(&sandbox)?;
    // Also makes sure the engine has the image before anything is timed.
    let flags = rig.peer_flags(&sandbox).await.context("render the peer's flags")?;
    let mut argv: Vec<String> = vec!["docker".into(), "run".into(), "--rm".into()];
    argv.extend(flags);
    argv.push(IMAGE.into());
    argv.push("/bin/true".into());
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let peer_name = "docker run";

    for _ in 0..warmup {
        rig.launch_once().await?;
        timed_run(&argv, STEP_TIMEOUT).await?;
    }
    let (mut ours, mut theirs) = (Samples::default(), Samples::default());
    for round in 0..runs {
        if round % 2 == 0 {
            ours.push(rig.launch_once().await?);
            theirs.push(timed_run(&argv, STEP_TIMEOUT).await?);
        } else {
            theirs.push(timed_run(&argv, STEP_TIMEOUT).await?);
            ours.push(rig.launch_once().await?);
        }
    }
    Ok(Entry::versus("docker_launch_true", &ours, peer_name, &theirs)
        .target("ratio <= 1.15")
        .note(format!("prepare + start + wait + destroy vs `{}`", argv.join(" "))))
}

/// Safety net, also on failure: no container named after this run may stay
/// in the engine once the benchmark is over.
struct Leftovers(String);

impl Drop for Leftovers {
    fn drop(&mut self) {
        let Ok(out) = std::process::Command::new("docker").args(["ps", "-a", "--format", "{{.Names}}"]).output() else {
            return;
        };
        for name in String::from_utf8_lossy(&out.stdout).lines().filter(|n| n.starts_with(&self.0)) {
            tracing::warn!(container = name, "left over after destroy; removing");
            let _ = std::process::Command::new("docker").args(["rm", "-f", name]).output();
        }
    }
}
