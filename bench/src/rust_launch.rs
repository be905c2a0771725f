//! `rust_launch_true` against `crun run` and `runc run`, and `rust_launch_1000`:
//! busybox `true` through the rust containerizer's own API (prepare from a
//! warm image cache, launcher start, wait, destroy).

use crate::report::{Entry, Samples};
use crate::util::{create_sandbox, have, remove_cgroup_tree, timed_run, true_config};
use anyhow::{bail, Context, Result};
use mezzo_containerizer::rust::{RustBackend, RustBackendConfig};
use mezzo_containerizer::{ContainerConfig, ContainerType, Containerizer, SANDBOX_MOUNT_POINT};
use mezzo_images::ImageStore;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bound on any one step of a launch.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on one `crun run` / `runc run`.
const PEER_TIMEOUT: Duration = Duration::from_secs(30);
/// The image every launch runs.
const IMAGE: &str = "busybox";

/// Where one launch spent its time.
#[derive(Debug, Clone, Copy)]
pub struct Phases {
    pub prepare: Duration,
    pub start: Duration,
    pub wait: Duration,
    pub destroy: Duration,
}

impl Phases {
    fn total(&self) -> Duration {
        self.prepare + self.start + self.wait + self.destroy
    }
}

/// A rust containerizer over a warm image store, in a scratch directory.
pub struct RustRig {
    cz: Containerizer,
    store: ImageStore,
    launcher_dir: PathBuf,
    sandboxes: PathBuf,
    cgroups_root: String,
    seq: AtomicUsize,
}

impl RustRig {
    /// Sets up the containerizer under `work` with images from `test_images`
    /// and warms the image store.
    pub async fn new(work: &Path, test_images: &Path, launcher_dir: &Path) -> Result<Self> {
        let runtime_root = work.join("runtime");
        std::fs::create_dir_all(&runtime_root)?;
        let store = ImageStore::open(work.join("store"), Some(test_images.to_path_buf()))
            .context("open the image store")?;
        // Cold import once: every timed launch provisions from the warm cache.
        store.get(IMAGE).await.with_context(|| format!("import {IMAGE} from {}", test_images.display()))?;
        let cgroups_root = format!("mezzo-bench-{}", std::process::id());
        let backend = RustBackend::new(RustBackendConfig {
            runtime_root: runtime_root.clone(),
            provisioner: Some(Arc::new(store.clone())),
            cgroups_root: cgroups_root.clone(),
            launcher_dir: launcher_dir.to_path_buf(),
            // The agent's defaults (Mesos's default isolation).
            ..Default::default()
        })
        .context("set up the rust backend")?;
        Ok(RustRig {
            cz: Containerizer::new(vec![Arc::new(backend)], runtime_root),
            store,
            launcher_dir: launcher_dir.to_path_buf(),
            sandboxes: work.join("sandboxes"),
            cgroups_root,
            seq: AtomicUsize::new(0),
        })
    }

    fn config(&self, id: &str) -> ContainerConfig {
        true_config(id, ContainerType::Mesos, IMAGE, &self.sandboxes)
    }

    fn next_id(&self) -> String {
        format!("bench-{}", self.seq.fetch_add(1, Ordering::Relaxed))
    }

    /// One busybox `true`: prepare, start, wait, destroy; destroyed also on failure.
    pub async fn launch_once(&self) -> Result<Phases> {
        let id = self.next_id();
        let config = self.config(&id);
        create_sandbox(&config.sandbox)?;
        let result = self.launch_steps(&config).await;
        if result.is_err() {
            if let Err(e) = bounded(self.cz.destroy(&id)).await {
                tracing::warn!(container = %id, error = %e, "destroy after failed launch");
            }
        }
        let _ = std::fs::remove_dir_all(&config.sandbox);
        result
    }

    async fn launch_steps(&self, config: &ContainerConfig) -> Result<Phases> {
        let id = &config.container_id;
        let t0 = Instant::now();
        let dir = bounded(self.cz.prepare(config)).await.context("prepare")?;
        let t1 = Instant::now();
        let mut launcher = mezzo_containerizer::launcher(&dir, &self.launcher_dir).context("launcher")?;
        bounded(launcher.start()).await.context("start")?;
        let t2 = Instant::now();
        let status = bounded(launcher.wait()).await.context("wait")?;
        let t3 = Instant::now();
        drop(launcher);
        bounded(self.cz.destroy(id)).await.context("destroy")?;
        let t4 = Instant::now();
        if !status.success() {
            bail!("container {id} {status}");
        }
        Ok(Phases { prepare: t1 - t0, start: t2 - t1, wait: t3 - t2, destroy: t4 - t3 })
    }

    /// The OCI config our backend renders for a launch, for the peers' bundles.
    async fn rendered_config(&self) -> Result<serde_json::Value> {
        let id = self.next_id();
        let config = self.config(&id);
        create_sandbox(&config.sandbox)?;
        let rendered = async {
            let dir = bounded(self.cz.prepare(&config)).await?;
            // As libcontainer would run it without our cgroup placement:
            // the peers create, configure and join the cgroups themselves
            // (work our isolators and supervisor do in the timed launch).
            let spec = dir.read_spec()?;
            let oci = mezzo_containerizer::rust::render(&spec, &dir, None)?;
            Ok::<_, anyhow::Error>(serde_json::to_value(&oci)?)
        }
        .await;
        bounded(self.cz.destroy(&id)).await?;
        let _ = std::fs::remove_dir_all(&config.sandbox);
        rendered
    }
}

impl Drop for RustRig {
    fn drop(&mut self) {
        remove_cgroup_tree(&self.cgroups_root);
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

/// An OCI runtime CLI (`crun`, `runc`) running a bundle like ours.
struct Peer {
    name: &'static str,
    root: PathBuf,
    bundle: PathBuf,
    cgroup_parent: String,
    seq: usize,
}

impl Peer {
    /// Writes `config` (ours, re-pointed at the peer's rootfs, sandbox and
    /// cgroup) as the peer's bundle.
    fn new(name: &'static str, work: &Path, rootfs: &Path, sandbox: &Path, ours: &serde_json::Value) -> Result<Self> {
        let dir = work.join(name);
        let (root, bundle) = (dir.join("state"), dir.join("bundle"));
        std::fs::create_dir_all(&root)?;
        std::fs::create_dir_all(&bundle)?;
        let cgroup_parent = format!("mezzo-bench-{}-{name}", std::process::id());
        let mut config = ours.clone();
        config["root"] = serde_json::json!({ "path": rootfs, "readonly": false });
        config["linux"]["cgroupsPath"] = serde_json::json!(format!("/{cgroup_parent}/c"));
        let mounts = config["mounts"].as_array_mut().context("rendered config has no mounts")?;
        let mut found = false;
        for m in mounts.iter_mut() {
            if m["destination"] == SANDBOX_MOUNT_POINT {
                m["source"] = serde_json::json!(sandbox);
                found = true;
            }
        }
        if !found {
            bail!("rendered config has no sandbox mount");
        }
        std::fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
        Ok(Peer { name, root, bundle, cgroup_parent, seq: 0 })
    }

    /// `<runtime> --root R run -b B <id>`: create, start, wait and delete.
    async fn run_once(&mut self) -> Result<Duration> {
        self.seq += 1;
        let id = format!("bench-{}-{}", self.name, self.seq);
        let (root, bundle) = (self.root.display().to_string(), self.bundle.display().to_string());
        let result = timed_run(&[self.name, "--root", &root, "run", "-b", &bundle, &id], PEER_TIMEOUT).await;
        if result.is_err() {
            let _ = timed_run(&[self.name, "--root", &root, "delete", "-f", &id], PEER_TIMEOUT).await;
        }
        result
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        remove_cgroup_tree(&self.cgroup_parent);
    }
}

/// Medians of each phase of our launches, in ms.
fn phase_medians(phases: &[Phases]) -> [(&'static str, f64); 4] {
    let median = |f: fn(&Phases) -> Duration| {
        let mut s = Samples::default();
        phases.iter().for_each(|p| s.push(f(p)));
        s.median_ms()
    };
    [
        ("prepare", median(|p| p.prepare)),
        ("start", median(|p| p.start)),
        ("wait", median(|p| p.wait)),
        ("destroy", median(|p| p.destroy)),
    ]
}

/// `rust_launch_true` (peer crun) and `rust_launch_true_vs_runc`, side by
/// side: each round runs ours, crun and runc once, in turn.
pub async fn launch_true(rig: &RustRig, work: &Path, runs: usize, warmup: usize) -> Result<Vec<Entry>> {
    let image = rig.store.get(IMAGE).await?;
    let rootfs = work.join("peer-rootfs");
    let sandbox = work.join("peer-sandbox");
    create_sandbox(&sandbox)?;
    // The peers run the very layers we mount, copied once into a plain directory.
    let _ = std::fs::remove_dir_all(&rootfs);
    std::fs::create_dir_all(&rootfs)?;
    for layer in &image.layers {
        let src = format!("{}/.", layer.display());
        timed_run(&["cp", "-a", &src, &rootfs.display().to_string()], Duration::from_secs(60)).await?;
    }
    let ours_config = rig.rendered_config().await.context("render a config for the peers")?;
    let mut peers = Vec::new();
    for name in ["crun", "runc"] {
        if have(name) {
            peers.push(Peer::new(name, work, &rootfs, &sandbox, &ours_config)?);
        } else {
            eprintln!("  {name} not installed (scripts/setup-host.sh installs it); skipped");
        }
    }

    for _ in 0..warmup {
        rig.launch_once().await?;
        for p in peers.iter_mut() {
            p.run_once().await.with_context(|| format!("{} warm-up", p.name))?;
        }
    }
    let mut ours = Samples::default();
    let mut phases = Vec::new();
    let mut theirs: Vec<Samples> = vec![Samples::default(); peers.len()];
    for round in 0..runs {
        // Rotate who goes first, so none always runs right after another.
        let n = peers.len() + 1;
        for k in 0..n {
            let who = (round + k) % n;
            if who == 0 {
                let p = rig.launch_once().await?;
                ours.push(p.total());
                phases.push(p);
            } else {
                let peer = &mut peers[who - 1];
                let took = peer.run_once().await.with_context(|| format!("{} run", peer.name))?;
                theirs[who - 1].push(took);
            }
        }
    }
    let medians = phase_medians(&phases);
    eprintln!(
        "  rust launch phases (median ms): {}",
        medians.iter().map(|(k, v)| format!("{k} {v:.2}")).collect::<Vec<_>>().join(", ")
    );
    let mut entries = Vec::new();
    for (peer, samples) in peers.iter().zip(&theirs) {
        let (name, target) = match peer.name {
            "crun" => ("rust_launch_true", "ratio <= 1.5"),
            _ => ("rust_launch_true_vs_runc", "informational"),
        };
        let mut e = Entry::versus(name, &ours, peer.name, samples).target(target);
        for (k, v) in medians {
            e = e.with(&format!("phase_{k}"), v);
        }
        entries.push(e.note("prepare (warm image cache) + start + wait + destroy vs `<peer> run` of the same rootfs with our rendered config.json; private mount namespace without cgroup2"));
    }
    if peers.is_empty() {
        let mut e = Entry::new("rust_launch_true", ours.median_ms(), "ms").note("no peer installed");
        e.runs = Some(ours.len());
        entries.push(e);
    }
    Ok(entries)
}

/// `rust_launch_1000`: `total` launches, `parallel` at a time, in seconds.
pub async fn launch_many(rig: Arc<RustRig>, total: usize, parallel: usize) -> Result<Entry> {
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(std::sync::Mutex::new(Vec::with_capacity(total)));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..parallel {
        let (rig, next, done) = (rig.clone(), next.clone(), done.clone());
        workers.spawn(async move {
            let (mut ok, mut failed, mut first_error) = (0usize, 0usize, None::<String>);
            while next.fetch_add(1, Ordering::Relaxed) < total {
                match rig.launch_once().await {
                    Ok(_) => {
                        ok += 1;
                        done.lock().unwrap_or_else(|e| e.into_inner()).push(start.elapsed());
                    }
                    Err(e) => {
                        failed += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (ok, failed, first_error)
        });
    }
    let (mut ok, mut failed, mut first_error) = (0, 0, None);
    while let Some(r) = workers.join_next().await {
        let (o, f, e) = r.context("launch worker panicked")?;
        ok += o;
        failed += f;
        if first_error.is_none() {
            first_error = e;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    // Does the rate hold up? Time taken by the first and the last tenth.
    let mut done = done.lock().unwrap_or_else(|e| e.into_inner()).clone();
    done.sort();
    let tenth = done.len() / 10;
    let (first, last) = if tenth > 0 {
        let t = |i: usize| done[i].as_secs_f64();
        (t(tenth - 1), t(done.len() - 1) - t(done.len() - 1 - tenth))
    } else {
        (f64::NAN, f64::NAN)
    };
    let name = if total == 1000 { "rust_launch_1000".to_string() } else { format!("rust_launch_{total}") };
    let mut e = Entry::new(&name, secs, "s")
        .target("value <= 10 s (for 1000)")
        .with("parallel", parallel as f64)
        .with("succeeded", ok as f64)
        .with("failed", failed as f64)
        .with("per_container_ms", secs * 1e3 / total.max(1) as f64)
        .with("first_tenth_s", first)
        .with("last_tenth_s", last);
    eprintln!("  first tenth {first:.2} s, last tenth {last:.2} s");
    e.runs = Some(1);
    if let Some(err) = first_error {
        // A time for launches that did not happen is no measurement.
        anyhow::bail!("{failed} of {total} launches failed; first: {err}");
    }
    Ok(e)
}
