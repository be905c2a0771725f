//! The fetcher end to end, for each containerizer: tasks whose
//! `CommandInfo.uris` come from a loopback HTTP server the test runs and
//! from `file://` paths, used by their commands; the cache downloading once
//! for two tasks; a 404 and a hostile archive failing the launch (TASK_FAILED,
//! REASON_CONTAINER_LAUNCH_FAILED, never TASK_RUNNING) with the fetcher's
//! lines in the sandbox's stderr and nothing written outside the sandbox.

use anyhow::{Context, Result};
use axum::{body::Body, extract::Path as UrlPath, routing::get, Router};
use mezzo_proto::mesos::v1::command_info::Uri;
use mezzo_proto::mesos::v1::task_status::Reason;
use mezzo_proto::mesos::v1::{Offer, TaskInfo, TaskStatus};
use mezzo_tests::{assert_clean, command_task, containerizer_of as containerizers, runnable, states, Cluster, Kind, Scheduler};
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(90);

/// A loopback HTTP server serving `files` at `/<name>` (404 otherwise) and
/// counting requests per name; stopped when dropped.
struct Server {
    base: String,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start(files: HashMap<String, Vec<u8>>) -> Result<Server> {
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let (h, files) = (hits.clone(), Arc::new(files));
        let stalls = hits.clone();
        let router = Router::new()
            .route(
                "/stall/forever",
                get(move || async move {
                    *stalls.lock().unwrap().entry("forever".to_string()).or_default() += 1;
                    let head = futures::stream::once(async { Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"abc")) });
                    Body::from_stream(futures::StreamExt::chain(head, futures::stream::pending()))
                }),
            )
            .route(
            "/{name}",
            get(move |UrlPath(name): UrlPath<String>| {
                let (h, files) = (h.clone(), files.clone());
                async move {
                    *h.lock().unwrap().entry(name.clone()).or_default() += 1;
                    match files.get(&name) {
                        Some(b) => (axum::http::StatusCode::OK, Body::from(b.clone())),
                        None => (axum::http::StatusCode::NOT_FOUND, Body::from("not found")),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Server { base, hits, task })
    }

    fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    fn hits(&self, name: &str) -> usize {
        self.hits.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

/// A gzipped tar of regular files.
fn tar_gz(members: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for (name, body, mode) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(*mode);
        b.append_data(&mut h, name, *body).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// A tar whose one member is named `name` as is (`../`, which tar's builder refuses).
fn hostile_tar(name: &str) -> Vec<u8> {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_size(4);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(b"evil");
    out.resize(1024 + 1024, 0);
    out
}

fn uri(value: &str) -> Uri {
    Uri { value: value.into(), ..Default::default() }
}

fn task_with_uris(offer: &Offer, id: &str, command: &str, kind: Kind, uris: Vec<Uri>) -> TaskInfo {
    let mut task = command_task(offer, id, command, kind, "busybox", 64.0);
    task.command.as_mut().expect("a command task").uris = uris;
    task
}

/// Reads a sandbox file through the agent's `/files/download`.
async fn sandbox_file(cluster: &Cluster, sched: &Scheduler, task: &str, file: &str) -> Result<String> {
    mezzo_tests::sandbox_file(cluster, &sched.framework_id.value, task, file).await
}

/// Runs one task to its end; offers that come while it runs are kept for
/// the next task (the harness's `next_update` would drop them).
async fn run_task(
    cluster: &Cluster,
    sched: &mut Scheduler,
    offers: &mut Vec<Offer>,
    kind: Kind,
    id: &str,
    command: &str,
    uris: Vec<Uri>,
) -> Result<Vec<TaskStatus>> {
    let offer = match offers.pop() {
        Some(o) => o,
        None => sched.next_offer(TIMEOUT).await?,
    };
    sched.launch(&offer, task_with_uris(&offer, id, command, kind, uris)).await?;
    let deadline = Instant::now() + TIMEOUT;
    let mut out = Vec::new();
    loop {
        let ev = sched
            .next_event(deadline.saturating_duration_since(Instant::now()))
            .await
            .with_context(|| format!("updates of {id} so far: {:?}; agent log:\n{}", states(&out), cluster.agent_log()))?;
        if let Some(o) = ev.offers {
            offers.extend(o.offers);
        }
        if let Some(update) = ev.update {
            sched.acknowledge(&update.status).await?;
            if update.status.task_id.value == id {
                let terminal = update.status.state().is_terminal();
                out.push(update.status);
                if terminal {
                    return Ok(out);
                }
            }
        }
    }
}

/// A job whose script (http, executable), tarball (http, extracted), renamed
/// file (http, output_file) and helper (file://) are all used by its
/// command; a second task with the same cached URI is served from the cache.
async fn fetched_artifacts_are_used_by_the_command(kind: Kind) -> Result<()> {
    if !runnable(kind) {
        return Ok(());
    }
    let job = b"#!/bin/sh\nset -e\necho \"script ran\"\ncat data/payload.txt\ncat renamed.txt\n./helper.sh\n".to_vec();
    let bundle = tar_gz(&[("data/payload.txt", b"payload from the tarball\n", 0o644)]);
    let srv = Server::start(HashMap::from([
        ("job.sh".to_string(), job),
        ("bundle.tar.gz".to_string(), bundle),
        ("original-name.txt".to_string(), b"renamed file\n".to_vec()),
    ]))
    .await?;
    let local = tempfile::tempdir()?;
    let helper = local.path().join("helper.sh");
    std::fs::File::create(&helper)?.write_all(b"#!/bin/sh\necho \"helper from file://\"\n")?;

    let mut cluster = Cluster::start(containerizers(kind)).await?;
    let mut sched = Scheduler::subscribe(&cluster.master, "fetcher").await?;
    let mut offers = Vec::new();
    let uris = |cache: bool| {
        vec![
            Uri { executable: Some(true), ..uri(&srv.url("job.sh")) },
            Uri { cache: Some(cache), ..uri(&srv.url("bundle.tar.gz")) },
            Uri { output_file: Some("renamed.txt".into()), ..uri(&srv.url("original-name.txt")) },
            Uri { executable: Some(true), ..uri(&format!("file://{}", helper.display())) },
        ]
    };
    let command = "cd \"$MESOS_SANDBOX\" && ./job.sh";
    let first = run_task(&cluster, &mut sched, &mut offers, kind, "fetch-job", command, uris(true)).await;
    let second = match &first {
        Ok(_) => Some(run_task(&cluster, &mut sched, &mut offers, kind, "fetch-job-2", command, uris(true)).await),
        Err(_) => None,
    };
    let stdout = sandbox_file(&cluster, &sched, "fetch-job", "stdout").await;
    let stderr = sandbox_file(&cluster, &sched, "fetch-job", "stderr").await;
    sched.teardown().await.ok();
    cluster.stop();
    assert_clean(&cluster);

    let updates = first?;
    let (stdout, stderr) = (stdout?, stderr?);
    assert_eq!(states(&updates), ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"], "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stdout, "script ran\npayload from the tarball\nrenamed file\nhelper from file://\n");
    assert!(stderr.contains(&format!("Fetching URI '{}'", srv.url("job.sh"))), "stderr: {stderr}");
    assert!(stderr.contains("Successfully fetched all URIs"), "stderr: {stderr}");
    let second = second.expect("ran")?;
    assert_eq!(states(&second).last(), Some(&"TASK_FINISHED"));
    assert_eq!(srv.hits("bundle.tar.gz"), 1, "the cached tarball is downloaded once for two tasks");
    assert_eq!(srv.hits("job.sh"), 2, "uncached URIs are downloaded for each task");
    Ok(())
}

/// A 404 and a hostile archive each fail the launch: TASK_FAILED with
/// REASON_CONTAINER_LAUNCH_FAILED and no TASK_RUNNING, a message naming the
/// URI and the cause, the fetcher's lines in the sandbox's stderr, and
/// nothing written outside the sandbox.
async fn failed_fetches_fail_the_launch(kind: Kind) -> Result<()> {
    if !runnable(kind) {
        return Ok(());
    }
    let srv = Server::start(HashMap::from([
        ("evil.tar".to_string(), hostile_tar("../../../../../../../../escaped-by-fetch")),
        ("big.bin".to_string(), vec![0u8; 3 << 20]),
    ]))
    .await?;
    let mut cluster = Cluster::start(containerizers(kind)).await?;
    let mut sched = Scheduler::subscribe(&cluster.master, "fetcher").await?;
    let mut offers = Vec::new();
    let missing = srv.url("missing.sh");
    let not_found = run_task(&cluster, &mut sched, &mut offers, kind, "fetch-404", "./missing.sh", vec![uri(&missing)]).await;
    let stderr = sandbox_file(&cluster, &sched, "fetch-404", "stderr").await;
    let evil = srv.url("evil.tar");
    let hostile = run_task(&cluster, &mut sched, &mut offers, kind, "fetch-evil", "true", vec![uri(&evil)]).await;
    // A task with 2 MB of disk cannot fetch 3 MB.
    let big = srv.url("big.bin");
    let too_big = async {
        let offer = match offers.pop() {
            Some(o) => o,
            None => sched.next_offer(TIMEOUT).await?,
        };
        let mut task = task_with_uris(&offer, "fetch-big", "true", kind, vec![uri(&big)]);
        task.resources.push(mezzo_tests::scalar("disk", 2.0));
        sched.launch(&offer, task).await?;
        sched.updates_until_terminal("fetch-big", TIMEOUT).await
    }
    .await;
    // Eight levels up from the sandbox is the agent's work dir.
    let escaped = cluster.agent_work_dir().join("escaped-by-fetch").exists();
    sched.teardown().await.ok();
    cluster.stop();
    assert_clean(&cluster);

    for (updates, uri, cause) in [(not_found?, &missing, "404"), (hostile?, &evil, "escapes the sandbox"), (too_big?, &big, "the task's disk limit of 2MB")] {
        assert_eq!(states(&updates), ["TASK_FAILED"], "{uri}: only TASK_FAILED, never TASK_RUNNING");
        let last = updates.last().unwrap();
        assert_eq!(last.reason(), Reason::ContainerLaunchFailed);
        let msg = last.message.clone().unwrap_or_default();
        assert!(msg.contains(uri.as_str()) && msg.contains(cause), "message: {msg}");
    }
    let stderr = stderr?;
    assert!(stderr.contains(&format!("Fetching URI '{missing}'")), "stderr: {stderr}");
    assert!(stderr.contains(&format!("Failed to fetch '{missing}'")) && stderr.contains("404"), "stderr: {stderr}");
    assert!(!escaped, "the hostile archive wrote outside the sandbox");
    Ok(())
}

/// A task killed while its URI is still downloading ends TASK_KILLED
/// (REASON_TASK_KILLED_DURING_LAUNCH) at once, never having run.
async fn a_kill_while_fetching_ends_the_launch(kind: Kind) -> Result<()> {
    if !runnable(kind) {
        return Ok(());
    }
    let srv = Server::start(HashMap::new()).await?;
    let mut cluster = Cluster::start(containerizers(kind)).await?;
    let mut sched = Scheduler::subscribe(&cluster.master, "fetcher").await?;
    let result = async {
        let offer = sched.next_offer(TIMEOUT).await?;
        sched.launch(&offer, task_with_uris(&offer, "fetch-kill", "true", kind, vec![uri(&format!("{}/stall/forever", srv.base))])).await?;
        // The download has started (and stalls: the stall timeout is a minute).
        mezzo_tests::wait_until("the download started", TIMEOUT, || srv.hits("forever") > 0).await?;
        let asked = Instant::now();
        sched.kill("fetch-kill", Some(offer.agent_id.clone())).await?;
        let updates = sched.updates_until_terminal("fetch-kill", TIMEOUT).await?;
        Ok::<_, anyhow::Error>((updates, asked.elapsed()))
    }
    .await;
    sched.teardown().await.ok();
    cluster.stop();
    assert_clean(&cluster);
    let (updates, took) = result?;
    assert_eq!(states(&updates), ["TASK_KILLED"]);
    assert_eq!(updates[0].reason(), Reason::TaskKilledDuringLaunch);
    assert!(took < Duration::from_secs(10), "the kill took {took:?}");
    Ok(())
}

/// With `CommandInfo.user` (busybox's `nobody`) the sandbox and what is
/// fetched into it (downloaded and extracted) belong to that user, who can
/// write them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetched_files_belong_to_the_task_user() -> Result<()> {
    if !runnable(Kind::Mesos) {
        return Ok(());
    }
    let bundle = tar_gz(&[("data/payload.txt", b"payload\n", 0o644)]);
    let srv = Server::start(HashMap::from([("bundle.tar.gz".to_string(), bundle), ("conf.txt".to_string(), b"conf\n".to_vec())])).await?;
    let mut cluster = Cluster::start("rust").await?;
    let mut sched = Scheduler::subscribe(&cluster.master, "fetcher").await?;
    let command = "cd \"$MESOS_SANDBOX\" && for f in conf.txt bundle.tar.gz data data/payload.txt; do \
                   [ \"$(stat -c %u $f)\" = \"$(id -u)\" ] || { echo \"$f is not mine\"; exit 3; }; done && \
                   echo more >> data/payload.txt && id -un";
    let result = async {
        let offer = sched.next_offer(TIMEOUT).await?;
        let mut task = task_with_uris(&offer, "fetch-user", command, Kind::Mesos, vec![uri(&srv.url("conf.txt")), uri(&srv.url("bundle.tar.gz"))]);
        task.command.as_mut().expect("command").user = Some("nobody".into());
        sched.launch(&offer, task).await?;
        sched.updates_until_terminal("fetch-user", TIMEOUT).await
    }
    .await;
    let stdout = sandbox_file(&cluster, &sched, "fetch-user", "stdout").await;
    sched.teardown().await.ok();
    cluster.stop();
    assert_clean(&cluster);
    let updates = result?;
    let stdout = stdout?;
    assert_eq!(states(&updates).last(), Some(&"TASK_FINISHED"), "stdout: {stdout}; {updates:?}");
    assert_eq!(stdout, "nobody\n");
    Ok(())
}

/// A custom executor's own URIs are fetched into its sandbox before it
/// starts; one that cannot be fetched fails its task's launch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_executor_uris_are_fetched_before_it_starts() -> Result<()> {
    if !runnable(Kind::MesosNoImage) {
        return Ok(());
    }
    use mezzo_tests::{executor_task, test_executor_info, ExecutorContainer};
    let srv = Server::start(HashMap::from([("executor-conf.txt".to_string(), b"executor configuration".to_vec())])).await?;
    let mut cluster = Cluster::start("rust").await?;
    let mut sched = Scheduler::subscribe(&cluster.master, "fetcher").await?;
    let result = async {
        let mut good = test_executor_info("fetching-executor", ExecutorContainer::Host, 32.0, &[]);
        good.command.as_mut().expect("command").uris = vec![uri(&srv.url("executor-conf.txt"))];
        let offer = sched.next_offer(TIMEOUT).await?;
        sched.launch(&offer, executor_task(&offer, "exec-task", &good, "run 0", 32.0)).await?;
        let ok = sched.updates_until_terminal("exec-task", TIMEOUT).await?;
        let url = format!(
            "http://{}/files/download?path=/frameworks/{}/executors/fetching-executor/runs/latest/executor-conf.txt",
            cluster.agent, sched.framework_id.value
        );
        let fetched = reqwest::get(url).await?.text().await?;
        let mut bad = test_executor_info("broken-executor", ExecutorContainer::Host, 32.0, &[]);
        bad.command.as_mut().expect("command").uris = vec![uri(&srv.url("no-such-executor-file"))];
        let offer = sched.next_offer(TIMEOUT).await?;
        sched.launch(&offer, executor_task(&offer, "broken-task", &bad, "run 0", 32.0)).await?;
        let failed = sched.updates_until_terminal("broken-task", TIMEOUT).await?;
        Ok::<_, anyhow::Error>((ok, fetched, failed))
    }
    .await;
    let log = cluster.agent_log();
    sched.teardown().await.ok();
    cluster.stop();
    assert_clean(&cluster);
    let (ok, fetched, failed) = result.with_context(|| format!("agent log:\n{log}"))?;
    assert_eq!(states(&ok).last(), Some(&"TASK_FINISHED"), "{ok:?}");
    assert_eq!(fetched, "executor configuration");
    assert_eq!(states(&failed), ["TASK_FAILED"]);
    assert_eq!(failed[0].reason(), Reason::ContainerLaunchFailed);
    assert!(failed[0].message().contains("no-such-executor-file") && failed[0].message().contains("404"), "{:?}", failed[0].message);
    Ok(())
}

mezzo_tests::per_containerizer!(fetched_artifacts_are_used_by_the_command, failed_fetches_fail_the_launch, a_kill_while_fetching_ends_the_launch);
