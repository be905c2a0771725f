//! `image_cold_pull`: a 5-layer, ~100 MB image (incompressible data, gzip
//! layers) pulled cold from a loopback `docker-registry`, against
//! `skopeo copy ... oci:` and `docker pull` of the same image in the same run.

use crate::report::{Entry, Samples};
use crate::util::{free_port, have, run_capture, timed_run};
use anyhow::{bail, Context, Result};
use mezzo_images::build::{build_image, layer_tar_from_dir, ImageSpec};
use mezzo_images::{ImageStore, RegistrySource, StoreOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Layers of the pulled image.
const LAYERS: usize = 5;
/// Bytes of random data per layer (5 x 20 MiB = 100 MiB).
const LAYER_BYTES: usize = 20 << 20;
/// Bound on one pull by any client, and on pushing the image.
const PULL_TIMEOUT: Duration = Duration::from_secs(300);
/// Repository and tag in the registry.
const REPO: &str = "mezzo-bench/pull";
const TAG: &str = "latest";

/// A `docker-registry` on 127.0.0.1 with its storage in a scratch
/// directory; killed and reaped on drop.
struct Registry {
    child: Child,
    addr: String,
}

impl Registry {
    /// Starts the registry and waits (bounded) until `/v2/` answers.
    fn start(dir: &Path) -> Result<Self> {
        let mut last = None;
        for _ in 0..3 {
            let port = free_port()?;
            let addr = format!("127.0.0.1:{port}");
            let storage = dir.join("storage");
            std::fs::create_dir_all(&storage)?;
            let config = dir.join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                    storage.display()
                ),
            )?;
            let log = std::fs::File::create(dir.join("registry.log"))?;
            let child = std::process::Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("spawn docker-registry")?;
            let mut reg = Registry { child, addr };
            match reg.wait_ready(Duration::from_secs(20)) {
                Ok(()) => return Ok(reg),
                Err(e) => last = Some(e),
            }
            // Dropping `reg` stops it; try another port.
        }
        let log = std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
        Err(last.unwrap_or_else(|| anyhow::anyhow!("registry did not start")).context(format!("registry log: {}", log.trim())))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait()? {
                bail!("docker-registry exited: {st}");
            }
            if http_status(&self.addr, "/v2/").ok() == Some(200) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("docker-registry on {} did not answer within {}s", self.addr, timeout.as_secs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status code of a plain HTTP/1.0 GET on loopback.
fn http_status(addr: &str, path: &str) -> Result<u16> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head)?;
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no http status")
}

/// Random bytes from the kernel: incompressible, so gzip cannot shrink the pull.
fn random_bytes(n: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

/// Writes the pull image as an OCI layout at `layout`; returns its
/// compressed size in bytes.
fn build_pull_image(work: &Path, layout: &Path) -> Result<u64> {
    let mut tars = Vec::new();
    for k in 1..=LAYERS {
        let dir = work.join(format!("pull-src-{k}"));
        std::fs::create_dir_all(dir.join("data"))?;
        std::fs::write(dir.join(format!("data/blob-{k}")), random_bytes(LAYER_BYTES)?)?;
        tars.push(layer_tar_from_dir(&dir, 0)?);
        std::fs::remove_dir_all(&dir)?;
    }
    let mut spec = ImageSpec::new(&format!("{REPO}:{TAG}"));
    spec.gzip = true;
    let image = build_image(&spec, tars)?;
    image.write_oci_layout(layout)?;
    Ok(image.layers.iter().map(|l| l.data.len() as u64).sum())
}

/// Removes a pulled image from the engine; absent is fine.
async fn docker_rmi(reference: &str) {
    let _ = run_capture(&["docker", "image", "rm", "--force", reference], Duration::from_secs(60)).await;
}

/// Builds and pushes the image, then alternates the pullers `runs` times
/// after `warmup` untimed rounds.
pub async fn cold_pull(work: &Path, runs: usize, warmup: usize) -> Result<Vec<Entry>> {
    for tool in ["docker-registry", "skopeo"] {
        if !have(tool) {
            bail!("{tool} is not installed (scripts/setup-host.sh installs it)");
        }
    }
    let layout = work.join("pull-layout");
    let bytes = {
        let (work, layout) = (work.to_path_buf(), layout.clone());
        tokio::task::spawn_blocking(move || build_pull_image(&work, &layout)).await??
    };
    eprintln!("  built {LAYERS}-layer image, {:.1} MB compressed", bytes as f64 / 1e6);
    let reg_dir = work.join("registry");
    std::fs::create_dir_all(&reg_dir)?;
    let registry = Registry::start(&reg_dir)?;
    let remote = format!("{}/{REPO}:{TAG}", registry.addr);
    timed_run(
        &[
            "skopeo",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            &format!("oci:{}:{TAG}", layout.display()),
            &format!("docker://{remote}"),
        ],
        PULL_TIMEOUT,
    )
    .await
    .context("push the image into the registry")?;

    let docker = have("docker") && run_capture(&["docker", "version"], Duration::from_secs(20)).await.is_ok_and(|r| r.1);
    if docker {
        docker_rmi(&remote).await;
    }
    let out_root = work.join("skopeo-out");
    std::fs::create_dir_all(&out_root)?;
    let mut round = 0usize;
    let mut skopeo_pull = || {
        round += 1;
        let dest: PathBuf = out_root.join(round.to_string());
        let src = format!("docker://{remote}");
        async move {
            let argv = ["skopeo", "copy", "--quiet", "--src-tls-verify=false", &src, &format!("oci:{}:{TAG}", dest.display())];
            let took = timed_run(&argv, PULL_TIMEOUT).await;
            let _ = std::fs::remove_dir_all(&dest);
            took
        }
    };
    let docker_pull = || async {
        let took = timed_run(&["docker", "pull", "--quiet", &remote], PULL_TIMEOUT).await;
        docker_rmi(&remote).await;
        took
    };
    let registry_url = RegistrySource::parse(&format!("http://{}", registry.addr))?;
    let stores = work.join("pull-stores");
    let mut n = 0usize;
    let mut our_pull = || {
        n += 1;
        let dir = stores.join(n.to_string());
        let url = registry_url.clone();
        async move {
            let result = async {
                let t0 = Instant::now();
                // An empty store each time: everything is downloaded and unpacked.
                let store = ImageStore::open_with(dir.clone(), StoreOptions { registry: Some(url), ..Default::default() })?;
                let image = tokio::time::timeout(PULL_TIMEOUT, store.pull(&format!("{REPO}:{TAG}")))
                    .await
                    .map_err(|_| anyhow::anyhow!("pull did not finish within {}s", PULL_TIMEOUT.as_secs()))??;
                let took = t0.elapsed();
                anyhow::ensure!(image.layers.len() == LAYERS, "pulled {} layers, expected {LAYERS}", image.layers.len());
                Ok(took)
            }
            .await;
            let _ = std::fs::remove_dir_all(&dir);
            result
        }
    };
    let (mut ours, mut skopeo, mut dockers) = (Samples::default(), Samples::default(), Samples::default());
    for i in 0..warmup + runs {
        let o = our_pull().await.context("mezzo pull")?;
        let s = skopeo_pull().await.context("skopeo copy")?;
        let d = if docker { Some(docker_pull().await.context("docker pull")?) } else { None };
        if i >= warmup {
            ours.push(o);
            skopeo.push(s);
            if let Some(d) = d {
                dockers.push(d);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&out_root);
    drop(registry);

    let what = "ImageStore::open_with(empty store, StoreOptions { registry: http://127.0.0.1:PORT }) + pull \
                (download, verify, unpack) vs the peer's pull of the same image from the same registry";
    let mut entries = vec![Entry::versus("image_cold_pull", &ours, "skopeo", &skopeo)
        .target("ratio <= 0.667 (1.5x faster than skopeo)")
        .note(what)];
    if docker {
        entries.push(Entry::versus("image_cold_pull_vs_docker", &ours, "docker pull", &dockers).target("ratio < 1").note(what));
    }
    for e in entries.iter_mut() {
        e.detail.insert("image_mb".into(), crate::report::round2(bytes as f64 / 1e6));
    }
    Ok(entries)
}
