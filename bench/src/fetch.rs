//! `fetch_cold` and `fetch_cached`: the agent's fetcher (mezzo-agent's
//! `Fetcher`, as the launch path calls it) providing a 50 MB artifact to a
//! new sandbox.
//!
//! * `fetch_cold`: from a loopback HTTP server (no cache), side by side with
//!   `curl -o` of the same URL in the same run, alternating.
//! * `fetch_cached`: a `cache: true` URI already in the cache, into a new
//!   sandbox of a task user (a hard link to the read-only entry);
//!   `fetch_cached_root`: the same for root, who gets a copy (reflink where
//!   the filesystem has them, else an in-kernel copy).
//!
//! Sandboxes and the cache are on the scratch directory's filesystem (a real
//! disk, as an agent's work dir), not on a tmpfs.

use crate::report::{Entry, Samples};
use anyhow::{bail, Context, Result};
use mezzo_agent::fetcher::{Fetcher, FetcherOptions};
use mezzo_proto::mesos::v1::command_info::Uri;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SIZE: usize = 50 << 20;

/// Serves `body` to every GET on a loopback port; returns the base URL.
async fn serve(body: Arc<Vec<u8>>) -> Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let header = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n", body.len());
                if conn.write_all(header.as_bytes()).await.is_ok() {
                    let _ = conn.write_all(&body).await;
                }
                let _ = conn.shutdown().await;
            });
        }
    });
    Ok((base, task))
}

fn new_sandbox(root: &Path, n: usize) -> Result<std::path::PathBuf> {
    let dir = root.join(format!("sandbox-{n}"));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("stderr"), b"")?;
    Ok(dir)
}

fn check(path: &Path) -> Result<()> {
    let len = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?.len();
    if len != SIZE as u64 {
        bail!("{} has {len} bytes, not {SIZE}", path.display());
    }
    Ok(())
}

/// Both entries.
pub async fn fetch(work: &Path, runs: usize, warmup: usize) -> Result<Vec<Entry>> {
    if !crate::util::have("curl") {
        bail!("curl is not installed (the peer of fetch_cold)");
    }
    let root = work.join("fetch");
    std::fs::create_dir_all(&root)?;
    // Incompressible-looking contents (no filesystem or transport shortcut).
    let mut body = vec![0u8; SIZE];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for chunk in body.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let (base, server) = serve(Arc::new(body)).await?;
    let url = format!("{base}/artifact.bin");
    let fetcher = Fetcher::new(&FetcherOptions {
        cache_dir: root.join("cache"),
        cache_size: 2 << 30,
        stall_timeout: Duration::from_secs(60),
        ca_file: None,
    })
    .map_err(anyhow::Error::msg)?;
    let result = async {
        let (mut ours, mut curl) = (Samples::default(), Samples::default());
        let mut n = 0;
        for i in 0..warmup + runs {
            n += 1;
            let sandbox = new_sandbox(&root, n)?;
            let started = Instant::now();
            fetcher.fetch(&[Uri { value: url.clone(), ..Default::default() }], &sandbox, None).await?;
            let took = started.elapsed();
            check(&sandbox.join("artifact.bin"))?;
            std::fs::remove_dir_all(&sandbox)?;
            n += 1;
            let sandbox = new_sandbox(&root, n)?;
            let out = sandbox.join("artifact.bin");
            let started = Instant::now();
            let status = tokio::process::Command::new("curl").args(["-s", "-f", "-o"]).arg(&out).arg(&url).status().await?;
            let curl_took = started.elapsed();
            if !status.success() {
                bail!("curl -o {url}: {status}");
            }
            check(&out)?;
            std::fs::remove_dir_all(&sandbox)?;
            if i >= warmup {
                ours.push(took);
                curl.push(curl_took);
            }
        }
        let mut cold = Entry::new("fetch_cold", ours.median_ms(), "ms");
        cold.peer = Some("curl -o".into());
        cold.peer_value = Some(crate::report::round2(curl.median_ms()));
        cold.ratio = Some(crate::report::round2(ours.median_ms() / curl.median_ms()));
        cold.runs = Some(runs);
        cold.target = Some("ratio <= 1.2".into());
        cold.note = Some("50 MB over loopback HTTP into a new sandbox on disk".into());

        // A task user (nobody: a hard link to the read-only entry), then
        // root (its own copy: reflink or in-kernel copy).
        let cached = Uri { value: url.clone(), cache: Some(true), ..Default::default() };
        let mut entries = vec![cold];
        for (name, uid, target, note) in [
            ("fetch_cached", 65534, Some("<= 5 ms"), "a cached 50 MB URI into a new sandbox of a task user: a hard link to the root-owned, read-only cache entry"),
            ("fetch_cached_root", 0, None, "the same for a root task, which gets its own copy (reflink where the filesystem has them, else an in-kernel copy)"),
        ] {
            let mut warm = Samples::default();
            n += 1;
            let prime = new_sandbox(&root, n)?;
            std::os::unix::fs::chown(&prime, Some(uid), Some(uid))?;
            fetcher.fetch(std::slice::from_ref(&cached), &prime, None).await?;
            std::fs::remove_dir_all(&prime)?;
            for i in 0..warmup + runs {
                n += 1;
                let sandbox = new_sandbox(&root, n)?;
                std::os::unix::fs::chown(&sandbox, Some(uid), Some(uid))?;
                let started = Instant::now();
                fetcher.fetch(std::slice::from_ref(&cached), &sandbox, None).await?;
                let took = started.elapsed();
                check(&sandbox.join("artifact.bin"))?;
                std::fs::remove_dir_all(&sandbox)?;
                if i >= warmup {
                    warm.push(took);
                }
            }
            let mut entry = Entry::new(name, warm.median_ms(), "ms");
            entry.runs = Some(runs);
            entry.target = target.map(String::from);
            entry.detail.insert("min_ms".into(), crate::report::round2(warm.min_ms()));
            entry.detail.insert("p95_ms".into(), crate::report::round2(warm.p95_ms()));
            entry.note = Some(note.into());
            entries.push(entry);
        }
        Ok(entries)
    }
    .await;
    server.abort();
    let _ = std::fs::remove_dir_all(&root);
    result
}
