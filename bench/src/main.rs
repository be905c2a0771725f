//! mezzo-bench: the side-by-side benchmarks of `make bench` that need no
//! cluster. Each measures mezzo's own API and a peer tool in the same run,
//! alternating, and writes the medians as JSON entries
//! `{name, value, unit[, peer, peer_value, ratio]}`:
//!
//! * `rust_launch_true` (peer crun), `rust_launch_true_vs_runc`, `rust_launch_1000`
//! * `docker_launch_true` (peer `docker run`)
//! * `image_warm_provision_{1,5,20}`
//! * `image_cold_pull` (peer skopeo), `image_cold_pull_vs_docker`
//! * `fetch_cold` (peer `curl -o`), `fetch_cached`
//!
//! Runs as root. The whole process lives in a private mount namespace with
//! the cgroup2 mount removed (crun refuses hybrid hosts otherwise), so every
//! mount it makes vanishes with it; cgroups, containers and the registry it
//! starts are removed by guards.

mod docker_launch;
mod fetch;
mod provision;
mod pull;
mod report;
mod rust_launch;
mod util;

use anyhow::{bail, Context, Result};
use clap::Parser;
use report::Entry;
use std::path::PathBuf;
use std::sync::Arc;

/// Groups of benchmarks, for `--only`.
const GROUPS: [&str; 6] = ["provision", "rust", "many", "docker", "pull", "fetch"];

/// Launch, provisioning and pull latency of mezzo against crun, runc, docker and skopeo.
#[derive(Parser, Debug)]
#[command(name = "mezzo-bench")]
struct Args {
    /// Timed runs per side for the latency benchmarks (median reported).
    #[arg(long, default_value_t = 30)]
    runs: usize,
    /// Untimed runs per side first.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Timed runs per puller for the cold pull (100 MB each).
    #[arg(long, default_value_t = 5)]
    pull_runs: usize,
    /// Containers for `rust_launch_1000`.
    #[arg(long, default_value_t = 1000)]
    many: usize,
    /// Concurrent launches for `rust_launch_1000`.
    #[arg(long, default_value_t = 8)]
    parallel: usize,
    /// Where build-test-images.sh put the test images.
    #[arg(long, default_value = "target/test-images")]
    test_images: PathBuf,
    /// Directory of `mezzo-launcher` (default: this binary's directory).
    #[arg(long)]
    launcher_dir: Option<PathBuf>,
    /// Where to write the JSON list of entries.
    #[arg(long, default_value = "target/bench/mezzo-bench.json")]
    out: PathBuf,
    /// Parent of the scratch directory.
    #[arg(long, default_value = "/tmp")]
    scratch: PathBuf,
    /// Run only these groups (provision, rust, many, docker, pull, fetch), comma separated.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Also print a table of the entries on stdout.
    #[arg(long)]
    table: bool,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MEZZO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    for g in &args.only {
        if !GROUPS.contains(&g.as_str()) {
            bail!("unknown group '{g}' in --only (known: {})", GROUPS.join(", "));
        }
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("mezzo-bench must run as root (containers, cgroups, mounts)");
    }
    // Before any thread exists: unshare(CLONE_NEWNS) affects only the caller.
    let had_unified = util::enter_private_mount_namespace()?;
    tracing::debug!(had_unified, "private mount namespace");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (entries, failures) = runtime.block_on(run_all(&args))?;
    runtime.shutdown_timeout(std::time::Duration::from_secs(10));

    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_vec_pretty(&entries)?)
        .with_context(|| format!("write {}", args.out.display()))?;
    if args.table {
        print_table(&entries);
    }
    if !failures.is_empty() {
        bail!("{} benchmark group(s) failed: {}", failures.len(), failures.join("; "));
    }
    Ok(())
}

async fn run_all(args: &Args) -> Result<(Vec<Entry>, Vec<String>)> {
    let want = |g: &str| args.only.is_empty() || args.only.iter().any(|o| o == g);
    let launcher_dir = match &args.launcher_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?.parent().context("binary has no directory")?.to_path_buf(),
    };
    let test_images = std::fs::canonicalize(&args.test_images)
        .with_context(|| format!("{} (run scripts/build-test-images.sh)", args.test_images.display()))?;
    let scratch = tempfile::Builder::new().prefix("mezzo-bench.").tempdir_in(&args.scratch)?;
    let work = scratch.path().to_path_buf();
    // The runtime state of rust containers (overlay upper/work dirs, OCI
    // bundles, supervisor files) lives on a tmpfs, as Mesos keeps its
    // runtime directory in /var/run/mesos; the peers' bundles and state go
    // there too, so both sides pay the same filesystem. The mount exists only
    // in this process's private mount namespace.
    let fast = work.join("tmpfs");
    std::fs::create_dir_all(&fast)?;
    nix::mount::mount(Some("tmpfs"), &fast, Some("tmpfs"), nix::mount::MsFlags::empty(), Some("mode=0755"))
        .with_context(|| format!("mount a tmpfs at {}", fast.display()))?;
    let mut entries: Vec<Entry> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut record = |group: &str, r: Result<Vec<Entry>>| match r {
        Ok(es) => {
            for e in &es {
                eprintln!("  -> {}", summary(e));
            }
            entries.extend(es);
        }
        Err(e) => {
            eprintln!("  !! {group} failed: {e:#}");
            failures.push(format!("{group}: {e:#}"));
        }
    };

    if want("provision") {
        eprintln!("== image_warm_provision ({} runs)", args.runs);
        record("provision", provision::warm_provision(&fast, args.runs, args.warmup).await);
    }
    if want("rust") || want("many") {
        match rust_launch::RustRig::new(&fast, &test_images, &launcher_dir).await {
            Ok(rig) => {
                let rig = Arc::new(rig);
                if want("rust") {
                    eprintln!("== rust_launch_true vs crun, runc ({} runs)", args.runs);
                    record("rust", rust_launch::launch_true(&rig, &fast, args.runs, args.warmup).await);
                }
                if want("many") {
                    eprintln!("== rust_launch_{} ({} at a time)", args.many, args.parallel);
                    let r = rust_launch::launch_many(rig.clone(), args.many, args.parallel).await;
                    record("many", r.map(|e| vec![e]));
                }
            }
            Err(e) => record("rust", Err(e.context("set up the rust containerizer"))),
        }
    }
    if want("docker") {
        eprintln!("== docker_launch_true vs docker run ({} runs)", args.runs);
        let r = docker_launch::launch_true(&work, &test_images, &launcher_dir, args.runs, args.warmup).await;
        record("docker", r.map(|e| vec![e]));
    }
    if want("pull") {
        eprintln!("== image_cold_pull vs skopeo, docker pull ({} runs)", args.pull_runs);
        record("pull", pull::cold_pull(&work, args.pull_runs, 1.min(args.warmup)).await);
    }
    if want("fetch") {
        eprintln!("== fetch_cold vs curl -o, fetch_cached ({} runs)", args.runs);
        record("fetch", fetch::fetch(&work, args.runs, args.warmup).await);
    }
    if let Err(e) = nix::mount::umount2(&fast, nix::mount::MntFlags::MNT_DETACH) {
        tracing::warn!(error = %e, "unmount the bench tmpfs");
    }
    drop(scratch);
    Ok((entries, failures))
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v}")).unwrap_or_else(|| "-".into())
}

fn summary(e: &Entry) -> String {
    match &e.peer {
        Some(p) => format!(
            "{} = {} {} ({} {} {}, ratio {})",
            e.name,
            fmt_opt(e.value),
            e.unit,
            p,
            fmt_opt(e.peer_value),
            e.unit,
            fmt_opt(e.ratio)
        ),
        None => format!("{} = {} {}", e.name, fmt_opt(e.value), e.unit),
    }
}

fn print_table(entries: &[Entry]) {
    println!("{:32} {:>10} {:>5} {:>12} {:>10} {:>7}", "name", "value", "unit", "peer", "peer_value", "ratio");
    for e in entries {
        println!(
            "{:32} {:>10} {:>5} {:>12} {:>10} {:>7}",
            e.name,
            fmt_opt(e.value),
            e.unit,
            e.peer.as_deref().unwrap_or("-"),
            fmt_opt(e.peer_value),
            fmt_opt(e.ratio)
        );
    }
}
