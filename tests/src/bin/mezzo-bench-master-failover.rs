//! `master_failover` of `make bench`: three masters on a private ZooKeeper
//! (Debian's), one agent and one framework with a running task. Each run
//! kills the leading master with SIGKILL and times, as the framework lives
//! it, the kill to the answer of the new leader to its RECONCILE: the
//! framework learns the new leader from ZooKeeper (as a client's detector
//! does), re-subscribes to it as itself and reconciles its task until the
//! new leader answers TASK_RUNNING (the agent re-registered with it). The
//! killed master is then started again as a contender, so every run starts
//! with three masters. Prints one JSON object (median seconds) on a line of
//! stdout, as `make bench` collects them; progress goes to stderr.

use anyhow::{bail, Context, Result};
use mezzo_proto::mesos::v1::{FrameworkInfo, TaskState};
use mezzo_tests::group::{reconcile, Group};
use mezzo_tests::{command_task, Kind, Scheduler};
use std::time::{Duration, Instant};

/// `--runs=N` timed failovers (5; the median is reported) and the masters'
/// `--zk_session_timeout=D` (2secs: a dead leader's candidacy lasts this long).
#[derive(Debug)]
struct Args {
    runs: usize,
    zk_session_timeout: String,
}

impl Args {
    fn parse() -> Result<Args> {
        let mut args = Args { runs: 5, zk_session_timeout: "2secs".into() };
        for arg in std::env::args().skip(1) {
            match arg.split_once('=') {
                Some(("--runs", n)) => args.runs = n.parse().context("--runs")?,
                Some(("--zk_session_timeout", d)) => args.zk_session_timeout = d.to_string(),
                _ => bail!("unknown argument '{arg}' (--runs=N, --zk_session_timeout=D)"),
            }
        }
        if args.runs == 0 {
            bail!("--runs must be at least 1");
        }
        Ok(args)
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse()?;
    mezzo_testkit::zookeeper::available().map_err(anyhow::Error::msg)?;
    let timeout_flag = format!("--zk_session_timeout={}", args.zk_session_timeout);
    let session_timeout = mezzo_proto::duration::parse_flag(&args.zk_session_timeout).map_err(anyhow::Error::msg)?;
    let mut group = Group::start(3, &["--quorum=2", &timeout_flag, "--agent_reregister_timeout=60secs"]).await?;
    group.start_agent("rust", &[]).await?;
    let samples = run(&mut group, &args, session_timeout).await.map_err(|e| e.context(group.logs()));
    group.stop();
    let mut samples = samples?;
    samples.sort_by(f64::total_cmp);
    let median = samples[samples.len() / 2];
    let entry = serde_json::json!({
        "name": "master_failover",
        "value": (median * 100.0).round() / 100.0,
        "unit": "s",
        "runs": samples.len(),
        "target": "<= 5 s",
        "detail": format!(
            "kill -9 of the leader to the new leader's answer to the framework's RECONCILE; 3 masters, --zk_session_timeout={}; samples {:?}",
            args.zk_session_timeout,
            samples.iter().map(|s| (s * 100.0).round() / 100.0).collect::<Vec<_>>()
        ),
    });
    eprintln!("master_failover {median:.2} s (median of {}; samples {samples:?})", samples.len());
    println!("{entry}");
    Ok(())
}

async fn run(group: &mut Group, args: &Args, session_timeout: Duration) -> Result<Vec<f64>> {
    let detector = mezzo_zk::Detector::start(mezzo_zk::ZkUrl::parse("zk", &group.url)?, session_timeout);
    let framework = FrameworkInfo {
        user: "root".into(),
        name: "bench-master-failover".into(),
        hostname: Some(String::new()),
        checkpoint: Some(true),
        failover_timeout: Some(300.0),
        ..Default::default()
    };
    let leader = group.leader(Duration::from_secs(60)).await?;
    let mut sched = Scheduler::subscribe_with(&group.masters[leader], framework.clone()).await?;
    let offer = sched.next_offer(Duration::from_secs(60)).await?;
    let task = command_task(&offer, "failover-1", "sleep 1000", Kind::MesosNoImage, "busybox", 32.0);
    let running = sched.launch_and_wait_running(&offer, task, Duration::from_secs(60)).await?;
    let agent_id = running.agent_id.context("TASK_RUNNING names the agent")?;
    let mut framework = framework;
    framework.id = Some(sched.framework_id.clone());
    let mut samples = Vec::new();
    for run in 0..args.runs {
        let leader = group.leader(Duration::from_secs(60)).await?;
        let old = group.masters[leader].clone();
        group.crash_master(leader);
        let killed = Instant::now();
        // The framework's detector names the next leader.
        let mut changes = detector.watch();
        let next = tokio::time::timeout(
            Duration::from_secs(60),
            changes.wait_for(|l| l.as_ref().is_some_and(|i| mezzo_zk::master_endpoint(i) != old)),
        )
        .await
        .context("no new leader within 60 s")??
        .as_ref()
        .map(mezzo_zk::master_endpoint)
        .context("a leader")?;
        sched = resubscribe(&next, &framework).await?;
        let (status, _) = reconcile(&mut sched, "failover-1", &agent_id).await?;
        let took = killed.elapsed().as_secs_f64();
        if status.state() != TaskState::TaskRunning {
            bail!("run {run}: the new leader reconciled the task as {:?}", status.state());
        }
        eprintln!("run {run}: {took:.2} s (leader {old} -> {next})");
        samples.push(took);
        // Three masters again before the next run.
        group.start_master(leader)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while group.state(leader).await.map(|s| s["leader"].as_str() != Some(&format!("master@{next}"))).unwrap_or(true) {
            if Instant::now() > deadline {
                bail!("the restarted master {old} did not join the group");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    sched.teardown().await?;
    Ok(samples)
}

/// SUBSCRIBE as the same framework to `master`, retried while it is still taking over (503).
async fn resubscribe(master: &str, framework: &FrameworkInfo) -> Result<Scheduler> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match Scheduler::subscribe_with(master, framework.clone()).await {
            Ok(sched) => return Ok(sched),
            Err(e) if Instant::now() < deadline => {
                eprintln!("re-subscribing to {master}: {e:#}; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
}
