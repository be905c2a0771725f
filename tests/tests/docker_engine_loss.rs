//! The Docker engine dies under a running docker task. Each test runs its
//! own dockerd (own data root, exec root, pid file and socket, own network
//! namespace, no bridge, no iptables), never the shared engine, kills it
//! with SIGKILL and starts it again; the agent reaches it through
//! `--docker_socket`.

use anyhow::{bail, Context, Result};
use mezzo_proto::mesos::v1::task_status::{Reason, Source};
use mezzo_proto::mesos::v1::{TaskState, TaskStatus};
use mezzo_tests::{assert_clean, command_task, container_id_of, states, test_images_dir, Cluster, Kind, Scheduler};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(90);

/// A dockerd of the test's own, with `--live-restore` so that its
/// containers outlive it as they would on a production host so configured.
struct PrivateEngine {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Whether the host had the shared engine's `docker0` bridge at the start.
    had_docker0: bool,
}

impl PrivateEngine {
    fn start() -> Result<PrivateEngine> {
        // Short: the sockets under it must fit in sun_path.
        let dir = tempfile::Builder::new().prefix("mzd-").tempdir_in("/tmp")?;
        let had_docker0 = std::path::Path::new("/sys/class/net/docker0").exists();
        let mut engine = PrivateEngine { dir, child: None, had_docker0 };
        engine.spawn()?;
        let archive = test_images_dir().join("busybox.tar");
        let out = engine.docker(&["load", "-i", &archive.display().to_string()])?;
        if !out.status.success() {
            bail!("docker load {}: {}", archive.display(), String::from_utf8_lossy(&out.stderr));
        }
        Ok(engine)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `unix://<socket>`.
    fn host(&self) -> String {
        format!("unix://{}", self.path("docker.sock").display())
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.path("dockerd.log"))?;
        // In a network namespace of its own: a dockerd started with
        // `--bridge=none` deletes the host's `docker0` (the shared engine's
        // bridge) otherwise. Its socket is a file, reachable from here.
        let child = Command::new("unshare")
            .args(["--net", "dockerd"])
            .arg(format!("--data-root={}", self.path("data").display()))
            .arg(format!("--exec-root={}", self.path("exec").display()))
            .arg(format!("--pidfile={}", self.path("dockerd.pid").display()))
            .arg(format!("--host={}", self.host()))
            .args(["--bridge=none", "--iptables=false", "--ip-masq=false", "--ip-forward=false", "--live-restore"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn dockerd")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.docker(&["version"]).is_ok_and(|o| o.status.success()) {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait()? {
                bail!("the private dockerd exited ({status}); its log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("the private dockerd did not answer within 60 s; its log:\n{}", self.log())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("dockerd.log")).unwrap_or_default()
    }

    /// The docker CLI against this engine.
    fn docker(&self, args: &[&str]) -> Result<std::process::Output> {
        let mut child = Command::new("docker")
            .arg(format!("--host={}", self.host()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("docker {args:?} did not finish within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(child.wait_with_output()?)
    }

    /// SIGKILL to dockerd (its containerd goes with it; live-restore keeps
    /// the containers running under their shims).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the engine has the container `name` (in any state), and whether it runs.
    fn container(&self, name: &str) -> Result<Option<bool>> {
        let out = self.docker(&["ps", "-a", "--filter", &format!("name=^/{name}$"), "--format", "{{.State}}"])?;
        if !out.status.success() {
            bail!("docker ps: {}", String::from_utf8_lossy(&out.stderr));
        }
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Ok((!state.is_empty()).then(|| state == "running"))
    }

    fn containers(&self) -> Vec<String> {
        self.docker(&["ps", "-aq"])
            .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    }
}

impl Drop for PrivateEngine {
    /// Leaves nothing: the engine's containers, dockerd, its containerd and
    /// shims, and the mounts under its data root.
    fn drop(&mut self) {
        if self.child.is_none() {
            if let Err(e) = self.spawn() {
                eprintln!("cannot start the private dockerd again to clean up: {e}");
            }
        }
        let left = self.containers();
        if !left.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(left.iter().map(String::as_str));
            let _ = self.docker(&args);
        }
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let dir = self.dir.path().display().to_string();
        // containerd and shims of this engine name its exec root.
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&dir) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = mounts.lines().filter_map(|l| l.split(' ').nth(4)).filter(|p| p.starts_with(&dir)).collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn can_run() -> bool {
    if !mezzo_testkit::is_root() {
        mezzo_testkit::skip("needs root (a private dockerd)");
        return false;
    }
    for tool in ["dockerd", "docker"] {
        if Command::new(tool).arg("--version").output().map(|o| !o.status.success()).unwrap_or(true) {
            mezzo_testkit::skip(&format!("needs {tool} (scripts/setup-host.sh installs it)"));
            return false;
        }
    }
    true
}

struct Running {
    cluster: Cluster,
    sched: Scheduler,
    cid: String,
    sandbox: PathBuf,
}

async fn start_task(engine: &PrivateEngine, flags: &[&str], id: &str, command: &str) -> Result<Running> {
    let socket = format!("--docker_socket={}", engine.host());
    let mut all = vec![socket.as_str()];
    all.extend_from_slice(flags);
    let cluster = Cluster::start_with("docker", &all).await?;
    let mut sched = Scheduler::subscribe(&cluster.master, "engine-loss").await?;
    let offer = sched.next_offer(TIMEOUT).await?;
    let task = command_task(&offer, id, command, Kind::Docker, "busybox", 32.0);
    let status = sched.launch_and_wait_running(&offer, task, TIMEOUT).await.map_err(|e| e.context(cluster.agent_log()))?;
    let cid = container_id_of(&status).context("TASK_RUNNING carries the container id")?;
    let aid = &status.agent_id.as_ref().unwrap().value;
    let fid = &sched.framework_id.value;
    let sandbox = cluster.agent_work_dir().join(format!("slaves/{aid}/frameworks/{fid}/executors/{id}/runs/{cid}"));
    Ok(Running { cluster, sched, cid, sandbox })
}

/// Updates of `task` that arrive within `quiet` (none is terminal is what the caller checks).
async fn updates_within(sched: &mut Scheduler, quiet: Duration) -> Vec<TaskStatus> {
    let mut out = Vec::new();
    while let Ok(st) = sched.next_update(quiet).await {
        out.push(st);
    }
    out
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f()? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("timed out waiting until {what}")
}

fn finish(engine: &PrivateEngine, mut r: Running) -> Result<()> {
    r.cluster.stop();
    assert_clean(&r.cluster);
    let left = engine.containers();
    assert!(left.is_empty(), "containers left in the private engine: {left:?}");
    assert!(
        !engine.had_docker0 || std::path::Path::new("/sys/class/net/docker0").exists(),
        "the private engine removed the host's docker0 bridge"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_task_outlives_an_engine_restart_and_reports_its_real_exit() -> Result<()> {
    if !can_run() {
        return Ok(());
    }
    let mut engine = PrivateEngine::start()?;
    let command = r#"while [ ! -e "$MESOS_SANDBOX/go" ]; do sleep 0.1; done; exit 3"#;
    let mut r = start_task(&engine, &["--docker_engine_timeout=30secs"], "engine-restart", command).await?;
    let name = format!("mesos-{}", r.cid);
    engine.kill();
    // The wait that failed with the engine is not the task's end.
    let meanwhile = updates_within(&mut r.sched, Duration::from_secs(3)).await;
    assert!(meanwhile.iter().all(|s| !s.state().is_terminal()), "updates while the engine was down: {:?}\n{}", states(&meanwhile), r.cluster.agent_log());
    engine.spawn()?;
    assert_eq!(engine.container(&name)?, Some(true), "the container runs on under the restarted engine");
    std::fs::write(r.sandbox.join("go"), b"")?;
    let updates = r.sched.updates_until_terminal("engine-restart", TIMEOUT).await.map_err(|e| e.context(r.cluster.agent_log()))?;
    let last = updates.last().unwrap();
    assert_eq!(last.state(), TaskState::TaskFailed, "updates: {:?}", states(&updates));
    assert_eq!(last.source(), Source::Executor);
    assert!(last.message().contains("exited with status 3"), "the real exit: {:?}", last.message);
    // Removed (`--docker_remove_delay=0secs`).
    wait_until("the container is removed", Duration::from_secs(30), || Ok(engine.container(&name)?.is_none())).await?;
    finish(&engine, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_task_whose_engine_stays_away_fails_with_a_reason_and_is_removed_once_it_is_back() -> Result<()> {
    if !can_run() {
        return Ok(());
    }
    let mut engine = PrivateEngine::start()?;
    let flags = ["--docker_engine_timeout=3secs", "--docker_remove_delay=1secs"];
    let mut r = start_task(&engine, &flags, "engine-gone", "sleep 1000").await?;
    let name = format!("mesos-{}", r.cid);
    // From just before the kill: the executor can see the engine go as soon
    // as the kill lands, before `kill()` has reaped it.
    let lost_at = Instant::now();
    engine.kill();
    let updates = r.sched.updates_until_terminal("engine-gone", TIMEOUT).await.map_err(|e| e.context(r.cluster.agent_log()))?;
    let took = lost_at.elapsed();
    let last = updates.last().unwrap();
    assert_eq!(last.state(), TaskState::TaskFailed, "updates: {:?}", states(&updates));
    assert_eq!(last.reason(), Reason::ExecutorTerminated, "{last:?}");
    let message = last.message();
    assert!(
        message.contains(&engine.host()) && message.contains("unreachable for more than 3s") && message.contains("removed once the engine is back"),
        "{message}"
    );
    assert!(took >= Duration::from_secs(3), "reported after {took:?}, before the bound");
    // The agent tried to stop the container while the engine was down.
    let agent_log = r.cluster.work_dir.path().join("agent.log");
    wait_until("the agent destroyed the executor's container", Duration::from_secs(30), || {
        Ok(std::fs::read_to_string(&agent_log)?.contains("cannot stop the docker container now"))
    })
    .await?;
    engine.spawn()?;
    // Stopped once the engine is back, then removed after the remove delay.
    wait_until("the container is stopped and removed", Duration::from_secs(60), || Ok(engine.container(&name)?.is_none()))
        .await
        .map_err(|e| e.context(r.cluster.agent_log()))?;
    finish(&engine, r)
}
