//! The agent's `/files/read`, `/files/download` and `/files/browse` against a hostile sandbox,
//! as a task would make it: device nodes, FIFOs, symlinks out of it, a
//! directory swapped for a symlink while it is read, huge sparse files,
//! overflowing parameters. The sandbox is made by hand under the agent's
//! work dir, where a task's sandbox lives.

use anyhow::Result;
use mezzo_tests::Cluster;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A host file outside every sandbox that no answer may ever contain.
const SECRET: &str = "HOST-SECRET-3f9a1c";

/// A running agent with one hand-made sandbox.
struct World {
    cluster: Cluster,
    sandbox: PathBuf,
    /// `/files` path of the sandbox (through `runs/latest`).
    virt: String,
    /// A directory outside the sandboxes holding the secret file.
    outside: PathBuf,
    client: reqwest::Client,
}

impl World {
    async fn new() -> Result<World> {
        let cluster = Cluster::start("rust").await?;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build()?;
        // The agent learns its id from the master's answer to its registration.
        let deadline = Instant::now() + Duration::from_secs(30);
        let agent_id = loop {
            let state: serde_json::Value =
                serde_json::from_slice(&client.get(format!("http://{}/state", cluster.agent)).send().await?.bytes().await?)?;
            match state["id"].as_str() {
                Some(id) if !id.is_empty() => break id.to_string(),
                _ if Instant::now() > deadline => anyhow::bail!("the agent has no id after 30 s"),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let runs = cluster.agent_work_dir().join("slaves").join(&agent_id).join("frameworks/fw-files/executors/ex/runs");
        let sandbox = runs.join("c1");
        std::fs::create_dir_all(sandbox.join("dir"))?;
        symlink("c1", runs.join("latest"))?;
        std::fs::write(sandbox.join("stdout"), "hello from the task\n")?;
        std::fs::write(sandbox.join("dir/data"), "inside")?;
        let outside = cluster.work_dir.path().join("outside");
        std::fs::create_dir_all(&outside)?;
        std::fs::write(outside.join("data"), SECRET)?;
        Ok(World { cluster, sandbox, virt: "/frameworks/fw-files/executors/ex/runs/latest".into(), outside, client })
    }

    /// GET `/files/<endpoint>` with `query`; status and body.
    async fn get(&self, endpoint: &str, query: &[(&str, &str)]) -> Result<(u16, String)> {
        let resp = self.client.get(format!("http://{}/files/{endpoint}", self.cluster.agent)).query(query).send().await?;
        let code = resp.status().as_u16();
        Ok((code, resp.text().await?))
    }

    async fn read(&self, rel: &str) -> Result<(u16, String)> {
        self.get("read", &[("path", &format!("{}/{rel}", self.virt)), ("offset", "0")]).await
    }

    async fn download(&self, rel: &str) -> Result<(u16, String)> {
        self.get("download", &[("path", &format!("{}/{rel}", self.virt))]).await
    }

    async fn healthy(&self) -> bool {
        let r = self.client.get(format!("http://{}/health", self.cluster.agent)).timeout(Duration::from_secs(5)).send().await;
        matches!(r, Ok(r) if r.status() == 200)
    }

    /// The agent's peak resident memory (VmHWM) in bytes.
    fn agent_peak_rss(&self) -> u64 {
        let pid = self.cluster.agent_pid().expect("agent runs");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status");
        kb * 1024
    }
}

fn mknod(path: &Path, kind: nix::sys::stat::SFlag, major: u64, minor: u64) {
    use nix::sys::stat::{makedev, Mode};
    nix::sys::stat::mknod(path, kind, Mode::from_bits_truncate(0o666), makedev(major, minor)).unwrap();
}

#[tokio::test]
async fn files_serve_a_sandbox_file_with_mesos_offsets_and_lengths() {
    mezzo_testkit::require_root!();
    let w = World::new().await.unwrap();
    let (code, body) = w.read("stdout").await.unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v, serde_json::json!({"data": "hello from the task\n", "offset": 0}));
    let path = format!("{}/stdout", w.virt);
    // No offset (or -1): the size and no data, as Mesos answers.
    let (_, body) = w.get("read", &[("path", &path)]).await.unwrap();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap(), serde_json::json!({"data": "", "offset": 20}));
    let (_, body) = w.get("read", &[("path", &path), ("offset", "6"), ("length", "4")]).await.unwrap();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap(), serde_json::json!({"data": "from", "offset": 6}));
    let (_, body) = w.get("read", &[("path", &path), ("offset", "1000")]).await.unwrap();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap(), serde_json::json!({"data": "", "offset": 20}));
    // The host path of the same file, and a symlink that stays inside.
    let (code, body) = w.get("read", &[("path", &w.sandbox.join("stdout").display().to_string()), ("offset", "0")]).await.unwrap();
    assert_eq!((code, body.contains("hello from the task")), (200, true), "{body}");
    symlink("dir/data", w.sandbox.join("inner-link")).unwrap();
    assert_eq!(w.download("inner-link").await.unwrap(), (200, "inside".to_string()));
    let (code, body) = w.read("dir").await.unwrap();
    assert_eq!(code, 400, "a directory: {body}");
    assert_eq!(w.read("missing").await.unwrap().0, 404);
    assert_eq!(w.get("read", &[("offset", "0")]).await.unwrap().0, 400, "no path");
}

/// Defect 4: a block device node made in the sandbox gave the host's disk.
#[tokio::test]
async fn files_refuse_device_nodes_made_in_a_sandbox() {
    mezzo_testkit::require_root!();
    use nix::sys::stat::SFlag;
    let w = World::new().await.unwrap();
    mknod(&w.sandbox.join("loop0"), SFlag::S_IFBLK, 7, 0);
    mknod(&w.sandbox.join("null"), SFlag::S_IFCHR, 1, 3);
    for (file, kind) in [("loop0", "block device"), ("null", "character device")] {
        for (code, body) in [w.read(file).await.unwrap(), w.download(file).await.unwrap()] {
            assert_eq!(code, 400, "{file}: {body}");
            assert!(body.contains(kind) && body.contains(file), "{file}: {body}");
        }
    }
    assert!(w.healthy().await);
}

/// Defect 4: symlinks out of the sandbox never give host data.
#[tokio::test]
async fn files_never_follow_a_symlink_out_of_the_sandbox() {
    mezzo_testkit::require_root!();
    let w = World::new().await.unwrap();
    symlink(w.outside.join("data"), w.sandbox.join("abs")).unwrap();
    symlink("/etc/shadow", w.sandbox.join("shadow")).unwrap();
    symlink("../../../../../../../../outside/data", w.sandbox.join("rel")).unwrap();
    symlink(&w.outside, w.sandbox.join("dirlink")).unwrap();
    symlink("/proc/1/root/etc/hostname", w.sandbox.join("magic")).unwrap();
    for file in ["abs", "shadow", "rel", "dirlink/data", "magic"] {
        for (code, body) in [w.read(file).await.unwrap(), w.download(file).await.unwrap()] {
            assert!(code == 403 || code == 404, "{file}: {code} {body}");
            assert!(!body.contains(SECRET), "{file}: host data returned: {body}");
        }
    }
    let (code, _) = w.get("read", &[("path", &w.outside.join("data").display().to_string()), ("offset", "0")]).await.unwrap();
    assert_eq!(code, 403, "a host path outside the sandboxes");
}

/// Defect 4: a task swapping a directory for a symlink in a loop while the
/// agent reads got host files (the path was resolved, then opened again).
#[tokio::test]
async fn files_never_return_host_data_while_a_directory_is_swapped_for_a_symlink() {
    mezzo_testkit::require_root!();
    let w = World::new().await.unwrap();
    // `dir` and `swap` trade places atomically, over and over: `dir` is
    // always either the real directory or a symlink to the host's.
    symlink(&w.outside, w.sandbox.join("swap")).unwrap();
    let (stop, racer) = swap_until_stopped(&w.sandbox);
    let deadline = Instant::now() + Duration::from_secs(4);
    let (mut inside, mut refused, mut leaked) = (0, 0, Vec::new());
    while Instant::now() < deadline {
        let w = &w;
        let reads = futures::future::join_all((0..8).map(|i| async move {
            if i % 2 == 0 {
                w.read("dir/data").await
            } else {
                w.download("dir/data").await
            }
        }))
        .await;
        for r in reads {
            let (code, body) = r.unwrap();
            if body.contains(SECRET) {
                leaked.push(code);
            } else if code == 200 {
                inside += 1;
            } else {
                refused += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = racer.join().unwrap();
    assert!(leaked.is_empty(), "host data returned {} times (statuses {leaked:?})", leaked.len());
    assert!(swaps > 1000 && inside > 0 && refused > 0, "the race ran: {swaps} swaps, {inside} reads inside, {refused} refused");
}

/// Defect 5: a FIFO hung the request for ever, and 600 of them starved the agent.
#[tokio::test]
async fn files_refuse_a_fifo_at_once_and_many_do_not_starve_the_agent() {
    mezzo_testkit::require_root!();
    let w = World::new().await.unwrap();
    nix::unistd::mkfifo(&w.sandbox.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
    let t = Instant::now();
    let (code, body) = tokio::time::timeout(Duration::from_secs(5), w.read("fifo")).await.expect("a FIFO read answers at once").unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("FIFO") && body.contains("fifo"), "{body}");
    assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
    let t = Instant::now();
    let all = futures::future::join_all((0..600).map(|i| {
        let w = &w;
        async move {
            let r = if i % 2 == 0 { w.read("fifo").await } else { w.download("fifo").await };
            r.map(|(code, _)| code).unwrap_or(0)
        }
    }));
    let codes = tokio::time::timeout(Duration::from_secs(30), all).await.expect("600 FIFO requests all answered");
    assert!(codes.iter().all(|c| *c == 400), "statuses: {:?}", codes.iter().filter(|c| **c != 400).collect::<Vec<_>>());
    let t_normal = Instant::now();
    assert_eq!(w.read("stdout").await.unwrap().0, 200);
    assert!(t_normal.elapsed() < Duration::from_secs(2), "a normal read after them took {:?}", t_normal.elapsed());
    assert!(w.healthy().await);
    eprintln!("600 FIFO requests answered in {:?}", t.elapsed());
}

/// Defect 5: 10 bytes of a 4 GB sparse file took 18 s and 4 GB of agent memory.
#[tokio::test]
async fn files_read_only_the_range_of_a_huge_sparse_file() {
    mezzo_testkit::require_root!();
    let w = World::new().await.unwrap();
    let f = std::fs::File::create(w.sandbox.join("sparse")).unwrap();
    f.set_len(4 << 30).unwrap();
    std::fs::File::create(w.sandbox.join("sparse-256m")).unwrap().set_len(256 << 20).unwrap();
    let path = format!("{}/sparse", w.virt);
    let t = Instant::now();
    let (code, body) = w.get("read", &[("path", &path), ("offset", "0"), ("length", "10")]).await.unwrap();
    let took = t.elapsed();
    assert_eq!(code, 200, "{body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap(), serde_json::json!({"data": "\0".repeat(10), "offset": 0}));
    assert!(took < Duration::from_secs(2), "10 bytes took {took:?}");
    let (_, body) = w.get("read", &[("path", &path)]).await.unwrap();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["offset"], 4u64 << 30);
    // No length: at most Mesos's 16 pages.
    let (_, body) = w.get("read", &[("path", &path), ("offset", "4096")]).await.unwrap();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["data"].as_str().unwrap().len(), 16 * 4096);
    // A download streams: every byte arrives, and memory stays small.
    let resp = w.client.get(format!("http://{}/files/download", w.cluster.agent)).query(&[("path", format!("{}/sparse-256m", w.virt))]).timeout(Duration::from_secs(120)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut total = 0u64;
    let mut stream = resp.bytes_stream();
    use futures::StreamExt;
    while let Some(chunk) = stream.next().await {
        total += chunk.unwrap().len() as u64;
    }
    assert_eq!(total, 256 << 20);
    let peak = w.agent_peak_rss();
    assert!(peak < 200 << 20, "agent peak RSS {} MiB", peak >> 20);
    eprintln!("10 bytes of 4 GiB in {took:?}; agent peak RSS {} MiB", peak >> 20);
}

/// Defect 5: `offset=1&length=18446744073709551615` panicked the handler.
#[tokio::test]
async fn files_read_refuses_bad_numbers_naming_them_and_the_agent_lives() {
    mezzo_testkit::require_root!();
    let w = World::new().await.unwrap();
    let path = format!("{}/stdout", w.virt);
    for (offset, length, name) in [
        ("1", "18446744073709551615", "length"),
        ("18446744073709551615", "1", "offset"),
        ("-2", "1", "offset"),
        ("0", "-7", "length"),
        ("0", "ten", "length"),
    ] {
        let (code, body) = w.get("read", &[("path", &path), ("offset", offset), ("length", length)]).await.unwrap();
        assert_eq!(code, 400, "offset={offset} length={length}: {body}");
        assert!(body.contains(name), "offset={offset} length={length}: {body}");
    }
    // The largest offset and length that parse are just past the end.
    let max = i64::MAX.to_string();
    let (code, body) = w.get("read", &[("path", &path), ("offset", &max), ("length", &max)]).await.unwrap();
    assert_eq!((code, serde_json::from_str::<serde_json::Value>(&body).unwrap()), (200, serde_json::json!({"data": "", "offset": 20})));
    let (code, body) = w.get("read", &[("path", &path), ("offset", "1"), ("length", &max)]).await.unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, body) = w.get("read", &[("path", &format!("{path}\0/x")), ("offset", "0")]).await.unwrap();
    assert!(code == 400 && body.contains("path"), "{code} {body}");
    let (code, body) = w.get("read", &[("path", &format!("{}/../../../../../../../etc/passwd", w.virt))]).await.unwrap();
    assert!(code == 400 && body.contains("path"), "{code} {body}");
    assert!(w.healthy().await, "agent still answers");
}


/// `/files/browse` on the same hostile sandbox: a directory swapped for a
/// symlink to a host directory while it is listed never lists the host's
/// (the host's `data` holds the secret, 18 bytes; the sandbox's 6), and a
/// FIFO, a device node or a symlink out is answered at once, never opened.
#[tokio::test]
async fn files_browse_never_lists_a_host_directory_while_a_directory_is_swapped_for_a_symlink() {
    mezzo_testkit::require_root!();
    let w = World::new().await.unwrap();
    symlink(&w.outside, w.sandbox.join("swap")).unwrap();
    nix::unistd::mkfifo(&w.sandbox.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
    mknod(&w.sandbox.join("loop0"), nix::sys::stat::SFlag::S_IFBLK, 7, 0);
    let browse = |rel: &str| {
        let w = &w;
        let path = format!("{}/{rel}", w.virt);
        async move { w.get("browse", &[("path", &path)]).await }
    };
    for (rel, code, body) in [("fifo", 200, "[]"), ("loop0", 200, "[]"), ("swap", 403, "")] {
        let (c, b) = tokio::time::timeout(Duration::from_secs(5), browse(rel)).await.expect("answered at once").unwrap();
        assert_eq!(c, code, "{rel}: {b}");
        if code == 200 {
            assert_eq!(b, body, "{rel}");
        }
    }
    let (stop, racer) = swap_until_stopped(&w.sandbox);
    let deadline = Instant::now() + Duration::from_secs(3);
    let (mut inside, mut refused, mut leaked) = (0, 0, Vec::new());
    while Instant::now() < deadline {
        for r in futures::future::join_all((0..8).map(|_| browse("dir"))).await {
            let (code, body) = r.unwrap();
            if code != 200 {
                refused += 1;
                continue;
            }
            let listing: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
            if listing.iter().any(|e| e["size"] == SECRET.len()) {
                leaked.push(body);
            } else {
                assert_eq!(listing.len(), 1, "{body}");
                assert_eq!(listing[0]["size"], 6, "{body}");
                inside += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = racer.join().unwrap();
    assert!(leaked.is_empty(), "a host directory was listed {} times: {:?}", leaked.len(), leaked.first());
    assert!(swaps > 1000 && inside > 0 && refused > 0, "the race ran: {swaps} swaps, {inside} listings inside, {refused} refused");
}

/// Exchanges `dir` and `swap` in `sandbox` atomically, over and over, on a
/// thread, until the returned flag is set; the thread returns the number of swaps.
fn swap_until_stopped(sandbox: &std::path::Path) -> (Arc<AtomicBool>, std::thread::JoinHandle<u64>) {
    use nix::fcntl::{renameat2, RenameFlags};
    let stop = Arc::new(AtomicBool::new(false));
    let (flag, sandbox) = (stop.clone(), sandbox.to_path_buf());
    let racer = std::thread::spawn(move || {
        let mut swaps = 0u64;
        while !flag.load(Ordering::Relaxed) {
            renameat2(None, &sandbox.join("dir"), None, &sandbox.join("swap"), RenameFlags::RENAME_EXCHANGE).unwrap();
            swaps += 1;
        }
        swaps
    });
    (stop, racer)
}
