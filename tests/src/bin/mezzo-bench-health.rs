//! `mezzo-bench-health [--checks=N] [--interval=SECONDS]`: the
//! `health_check_overhead` figure of `make bench` (group `health`). It starts
//! its own master and agent (rust containerizer, the binaries next to this
//! one), launches one task serving HTTP on loopback (`busybox httpd -v`, no
//! image) with an HTTP health check every `--interval` (0.01 s), waits for
//! it to turn healthy, and then measures the CPU time (utime + stime from
//! `/proc/<pid>/stat`) the agent and the task's mezzo-executor use while the
//! executor makes at least N (2,000) checks, counted from the server's log
//! lines. Prints one JSON entry on stdout: milliseconds of CPU per 1,000
//! checks (agent + executor; each in the detail).

use anyhow::{bail, Context, Result};
use mezzo_proto::mesos::v1::health_check::HttpCheckInfo;
use mezzo_proto::mesos::v1::{health_check, HealthCheck, TaskState};
use mezzo_tests::{command_task, free_port, Cluster, Kind, Scheduler};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(60);

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("read /proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat.rsplit_once(')').context("stat has no ')'")?.1.split_whitespace().collect();
    // After the command name: state is field 3, utime 14 and stime 15.
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100).max(1) as f64;
    Ok(ticks as f64 / hz)
}

/// The agent's child running mezzo-executor.
fn executor_pid(agent: u32) -> Result<u32> {
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some((head, rest)) = stat.rsplit_once(')') else { continue };
        let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(agent) && head.ends_with("(mezzo-executor") {
            return Ok(pid);
        }
    }
    bail!("no mezzo-executor child of the agent {agent}")
}

/// The task's sandbox `stderr` (where `httpd -v` logs one line per request).
fn sandbox_stderr(work: &Path, task: &str) -> Result<PathBuf> {
    for agent in std::fs::read_dir(work.join("slaves"))?.flatten() {
        for fw in std::fs::read_dir(agent.path().join("frameworks")).into_iter().flatten().flatten() {
            let path = fw.path().join("executors").join(task).join("runs").join("latest").join("stderr");
            if path.exists() {
                return Ok(path);
            }
        }
    }
    bail!("no sandbox for {task} under {}", work.display())
}

fn requests(stderr: &Path) -> Result<u64> {
    Ok(std::fs::read_to_string(stderr)?.lines().filter(|l| l.contains("response:")).count() as u64)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let (mut checks, mut interval) = (2000u64, 0.01f64);
    for arg in std::env::args().skip(1) {
        if let Some(v) = arg.strip_prefix("--checks=") {
            checks = v.parse().context("--checks")?;
        } else if let Some(v) = arg.strip_prefix("--interval=") {
            interval = v.parse().context("--interval")?;
        } else {
            bail!("unknown argument {arg} ([--checks=N] [--interval=SECONDS])");
        }
    }
    if std::env::var_os("MEZZO_BIN_DIR").is_none() {
        let dir = std::env::current_exe()?.parent().context("the binary's directory")?.to_path_buf();
        std::env::set_var("MEZZO_BIN_DIR", dir);
    }
    let mut cluster = Cluster::start("rust").await?;
    let result = measure(&cluster, checks, interval).await;
    let log = cluster.agent_log();
    cluster.stop();
    let entry = result.map_err(|e| e.context(format!("agent log:\n{log}")))?;
    println!("{entry}");
    Ok(())
}

async fn measure(cluster: &Cluster, checks: u64, interval: f64) -> Result<serde_json::Value> {
    let mut sched = Scheduler::subscribe(&cluster.master, "bench-health").await?;
    let result = async {
        let offer = sched.next_offer(TIMEOUT).await?;
        let port = free_port();
        let command = format!("mkdir -p www && echo ok > www/index.html && exec busybox httpd -f -v -p 127.0.0.1:{port} -h \"$PWD/www\"");
        let mut task = command_task(&offer, "web", &command, Kind::MesosNoImage, "", 32.0);
        task.health_check = Some(HealthCheck {
            r#type: Some(health_check::Type::Http as i32),
            http: Some(HttpCheckInfo { port: port.into(), path: Some("/index.html".into()), ..Default::default() }),
            delay_seconds: Some(0.0),
            interval_seconds: Some(interval),
            timeout_seconds: Some(5.0),
            grace_period_seconds: Some(60.0),
            ..Default::default()
        });
        sched.launch(&offer, task).await?;
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let st = sched.next_update(deadline.saturating_duration_since(Instant::now())).await?;
            if st.state().is_terminal() {
                bail!("the task ended: {st:?}");
            }
            if st.state() == TaskState::TaskRunning && st.healthy == Some(true) {
                break;
            }
        }
        let agent = cluster.agent_pid().context("no agent")?;
        let executor = executor_pid(agent)?;
        let stderr = sandbox_stderr(&cluster.agent_work_dir(), "web")?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (agent0, executor0, count0, t0) = (cpu_seconds(agent)?, cpu_seconds(executor)?, requests(&stderr)?, Instant::now());
        let limit = Duration::from_secs_f64((checks as f64 * interval * 20.0).max(60.0));
        let count1 = loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let n = requests(&stderr)?;
            if n >= count0 + checks {
                break n;
            }
            if t0.elapsed() > limit {
                bail!("only {} checks in {:?}", n - count0, t0.elapsed());
            }
        };
        let (agent1, executor1, elapsed) = (cpu_seconds(agent)?, cpu_seconds(executor)?, t0.elapsed());
        let done = (count1 - count0) as f64;
        let per_1000 = |cpu: f64| (cpu * 1000.0 / done * 1000.0 * 100.0).round() / 100.0;
        let (agent_ms, executor_ms) = (per_1000(agent1 - agent0), per_1000(executor1 - executor0));
        let value = ((agent_ms + executor_ms) * 100.0).round() / 100.0;
        eprintln!("health_check_overhead: {value} ms CPU per 1,000 checks (agent {agent_ms}, executor {executor_ms}; {done} checks in {elapsed:.2?})");
        Ok(serde_json::json!({
            "name": "health_check_overhead",
            "value": value,
            "unit": "ms CPU / 1000 checks",
            "runs": done as u64,
            "detail": {
                "agent_ms_per_1000": agent_ms,
                "executor_ms_per_1000": executor_ms,
                "checks_per_s": (done / elapsed.as_secs_f64() * 10.0).round() / 10.0,
                "interval_s": interval,
            },
            "note": "utime+stime of mezzo-agent and the task's mezzo-executor while the executor makes HTTP health checks of a loopback busybox httpd (rust containerizer, no image)",
        }))
    }
    .await;
    sched.teardown().await.ok();
    result
}
