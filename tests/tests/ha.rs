//! Masters as a high-availability group on a real ZooKeeper: the leader's
//! loss, clients' detectors, redirects of non-leaders, no writes without quorum.

use anyhow::Result;
use mezzo_proto::mesos::v1::scheduler::{call, Call};
use mezzo_proto::mesos::v1::task_status::Reason;
use mezzo_proto::mesos::v1::{FrameworkInfo, TaskState};
use mezzo_tests::group::{pymesos_leader, reconcile, Group};
use mezzo_tests::{command_task, states, Kind, Scheduler};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(60);
/// Short sessions: a killed leader's candidacy goes 2 s after its death.
const MASTER_FLAGS: [&str; 3] = ["--quorum=2", "--zk_session_timeout=2secs", "--agent_reregister_timeout=60secs"];

fn framework(name: &str) -> FrameworkInfo {
    FrameworkInfo {
        user: "root".into(),
        name: name.into(),
        hostname: Some(String::new()),
        checkpoint: Some(true),
        failover_timeout: Some(300.0),
        ..Default::default()
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// POSTs a JSON SUBSCRIBE of a new framework to `master` (no redirects followed); the status and the body.
async fn raw_subscribe(master: &str) -> Result<(u16, String)> {
    let call = Call {
        r#type: Some(call::Type::Subscribe as i32),
        subscribe: Some(call::Subscribe { framework_info: framework("raw"), ..Default::default() }),
        ..Default::default()
    };
    let resp = no_redirects()
        .post(format!("http://{master}/api/v1/scheduler"))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .timeout(Duration::from_secs(10))
        .body(mezzo_proto::json::to_json(&call))
        .send()
        .await?;
    let code = resp.status().as_u16();
    // A 200 is a stream: only its head is wanted.
    let body = if code == 200 { String::new() } else { resp.text().await.unwrap_or_default() };
    Ok((code, body))
}

/// What non-leading master `i` answers: 307 to the leader `leader` on the
/// scheduler and operator APIs and `/master/redirect`, and `/state` naming it.
async fn check_standby(group: &Group, i: usize, leader: usize) -> Result<()> {
    let standby = &group.masters[i];
    let leader_addr = &group.masters[leader];
    let http = no_redirects();
    for (method, path, location) in [
        ("POST", "/api/v1/scheduler", format!("//{leader_addr}/api/v1/scheduler")),
        ("POST", "/api/v1", format!("//{leader_addr}/api/v1")),
        ("GET", "/master/redirect", format!("//{leader_addr}")),
        ("GET", "/redirect", format!("//{leader_addr}")),
    ] {
        let req = if method == "POST" { http.post(format!("http://{standby}{path}")).body("{}") } else { http.get(format!("http://{standby}{path}")) };
        let resp = req.send().await?;
        assert_eq!(resp.status().as_u16(), 307, "{method} {path} on a non-leader");
        assert_eq!(resp.headers().get("Location").and_then(|v| v.to_str().ok()), Some(location.as_str()), "{method} {path} on a non-leader");
    }
    let state = group.state(i).await?;
    let leading = group.state(leader).await?;
    assert_eq!(state["leader"], leading["pid"], "/state of a non-leader names the leader");
    assert_eq!(state["leader_info"]["id"], leading["id"]);
    assert_ne!(state["id"], leading["id"]);
    assert!(state.get("elected_time").is_none());
    Ok(())
}

#[tokio::test]
async fn the_leaders_loss_elects_another_that_the_agent_and_the_framework_follow() {
    mezzo_testkit::require_root!();
    mezzo_testkit::require_zookeeper!();
    let mut group = Group::start(3, &MASTER_FLAGS).await.unwrap();
    group.start_agent("rust", &[]).await.unwrap();
    let leader = group.leader(TIMEOUT).await.unwrap();
    let leader_state = group.state(leader).await.unwrap();

    // What a pymesos-style detector reads is the leader's MasterInfo.
    let info = pymesos_leader(&group).await.unwrap();
    assert_eq!(info["id"], leader_state["id"]);
    assert_eq!(info["pid"], leader_state["pid"]);
    assert_eq!(format!("{}:{}", info["address"]["ip"].as_str().unwrap(), info["address"]["port"]), group.masters[leader]);
    for i in (0..3).filter(|i| *i != leader) {
        check_standby(&group, i, leader).await.unwrap();
    }

    // A framework runs a task.
    let fw = framework("ha");
    let mut sched = Scheduler::subscribe_with(&group.masters[leader], fw.clone()).await.unwrap();
    let offer = sched.next_offer(TIMEOUT).await.unwrap();
    let task = command_task(&offer, "ha-1", "sleep 1000", Kind::MesosNoImage, "busybox", 32.0);
    let running = sched.launch_and_wait_running(&offer, task, TIMEOUT).await.map_err(|e| e.context(group.logs())).unwrap();
    let agent_id = running.agent_id.clone().unwrap();

    // kill -9 the leader: another is elected, the agent re-registers with it.
    group.crash_master(leader);
    let killed = Instant::now();
    let new = group.leader(TIMEOUT).await.unwrap();
    assert_ne!(new, leader);
    let elected = killed.elapsed();
    assert!(elected < Duration::from_secs(15), "a new leader after {elected:?}");
    group.wait_for_agent_on(new, TIMEOUT).await.unwrap();

    // Nothing terminal reached the framework on the old stream.
    let mut seen = Vec::new();
    while let Ok(ev) = sched.events.try_recv() {
        if let Some(update) = ev.update {
            seen.push(update.status);
        }
    }
    assert!(seen.iter().all(|s| !s.state().is_terminal()), "updates on the old stream: {:?}", states(&seen));

    // The framework follows: it re-subscribes to the new leader as itself and reconciles.
    let framework_id = sched.framework_id.clone();
    let mut again = fw.clone();
    again.id = Some(framework_id.clone());
    let mut sched = Scheduler::subscribe_with(&group.masters[new], again).await.map_err(|e| e.context(group.logs())).unwrap();
    assert_eq!(sched.framework_id, framework_id);
    let (status, mut offers) = reconcile(&mut sched, "ha-1", &agent_id).await.map_err(|e| e.context(group.logs())).unwrap();
    assert_eq!(status.state(), TaskState::TaskRunning, "{status:?}");
    assert_eq!(status.reason(), Reason::Reconciliation);
    let failover = killed.elapsed();
    eprintln!("new leader after {elected:?}; reconcile answered by it after {failover:?}");

    // The new leader knows the task (from the agent) and offers only what is free.
    let state = group.state(new).await.unwrap();
    let tasks: Vec<_> = state["frameworks"].as_array().unwrap().iter().flat_map(|f| f["tasks"].as_array().cloned().unwrap_or_default()).collect();
    assert!(tasks.iter().any(|t| t["id"] == "ha-1" && t["state"] == "TASK_RUNNING"), "tasks on the new leader: {tasks:?}");
    let offer = match offers.pop() {
        Some(offer) => offer,
        None => sched.next_offer(TIMEOUT).await.unwrap(),
    };
    let cpus: f64 = offer.resources.iter().filter(|r| r.name == "cpus").filter_map(|r| r.scalar.as_ref().map(|s| s.value)).sum();
    assert!(cpus <= 1.9 + 1e-9, "the offer includes the running task's cpus: {cpus}");

    // A new launch works on the new leader.
    let task = command_task(&offer, "ha-2", "sleep 1000", Kind::MesosNoImage, "busybox", 32.0);
    sched.launch_and_wait_running(&offer, task, TIMEOUT).await.map_err(|e| e.context(group.logs())).unwrap();

    // The killed master comes back as a standby of the new leader.
    group.start_master(leader).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while group.state(leader).await.map(|s| s["leader"] != group_state_pid(&group, new)).unwrap_or(true) {
        assert!(Instant::now() < deadline, "the restarted master does not name the leader; logs:\n{}", group.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check_standby(&group, leader, new).await.unwrap();

    // Both tasks are killable; the first's first terminal state is TASK_KILLED.
    for id in ["ha-1", "ha-2"] {
        sched.kill(id, Some(agent_id.clone())).await.unwrap();
        let updates = sched.updates_until_terminal(id, TIMEOUT).await.unwrap();
        assert_eq!(updates.last().unwrap().state(), TaskState::TaskKilled, "{id}: {:?}", states(&updates));
    }
    sched.teardown().await.unwrap();
    group.stop();
}

fn group_state_pid(group: &Group, i: usize) -> serde_json::Value {
    serde_json::Value::String(format!("master@{}", group.masters[i]))
}

#[tokio::test]
async fn mezzo_execute_follows_a_new_leader_to_its_task_s_end() {
    mezzo_testkit::require_root!();
    mezzo_testkit::require_zookeeper!();
    use tokio::io::AsyncBufReadExt;
    let mut group = Group::start(3, &MASTER_FLAGS).await.unwrap();
    group.start_agent("rust", &[]).await.unwrap();
    let leader = group.leader(TIMEOUT).await.unwrap();
    let mut execute = tokio::process::Command::new(mezzo_tests::bin_dir().join("mezzo"))
        .args(["execute", &format!("--master={}", group.url), "--name=cli-ha", "--command=sleep 6", "--timeout=90"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(execute.stdout.take().unwrap()).lines();
    let mut out = Vec::new();
    let running = tokio::time::timeout(TIMEOUT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            out.push(line.clone());
            if line.contains("status update TASK_RUNNING") {
                return true;
            }
        }
        false
    })
    .await;
    assert!(matches!(running, Ok(true)), "no TASK_RUNNING: {out:?}\n{}", group.logs());
    group.crash_master(leader);
    let finished = tokio::time::timeout(TIMEOUT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            out.push(line);
        }
        execute.wait().await.unwrap()
    })
    .await
    .expect("mezzo execute ended");
    let mut err = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut execute.stderr.take().unwrap(), &mut err).await.unwrap();
    assert!(finished.success(), "mezzo execute: {finished}\nstdout: {out:#?}\nstderr: {err}\n{}", group.logs());
    assert!(err.contains("Following the leading master"), "{err}");
    let updates: Vec<_> = out.iter().filter(|l| l.contains("status update")).collect();
    assert!(updates.last().is_some_and(|l| l.contains("TASK_FINISHED")), "{updates:?}");
    assert_eq!(updates.iter().filter(|l| !l.contains("TASK_RUNNING") && !l.contains("TASK_STARTING")).count(), 1, "one terminal update: {updates:?}");
}

#[tokio::test]
async fn the_cli_finds_the_leader_through_zookeeper() {
    mezzo_testkit::require_zookeeper!();
    let group = Group::start(2, &["--quorum=1", "--zk_session_timeout=2secs"]).await.unwrap();
    let leader = group.state(group.leader(TIMEOUT).await.unwrap()).await.unwrap();
    // The URL itself, and a file:// path holding it, as Mesos's --master takes.
    let file = group.work_dir.path().join("master");
    std::fs::write(&file, format!("{}\n", group.url)).unwrap();
    for master in [group.url.clone(), format!("file://{}", file.display())] {
        let out = std::process::Command::new(mezzo_tests::bin_dir().join("mezzo"))
            .args(["state", &format!("--master={master}"), "--timeout=30"])
            .output()
            .unwrap();
        assert!(out.status.success(), "mezzo state --master={master}: {}", String::from_utf8_lossy(&out.stderr));
        let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(state["id"], leader["id"], "mezzo state --master={master}");
    }
}

#[tokio::test]
async fn a_lone_master_without_a_quorum_of_masters_refuses_writes() {
    mezzo_testkit::require_zookeeper!();
    // Elected, but alone where two masters must be in the group.
    let group = Group::start(1, &["--quorum=2", "--zk_session_timeout=2secs"]).await.unwrap();
    let (code, body) = raw_subscribe(&group.masters[0]).await.unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("--quorum=2"), "{body}");
}

#[tokio::test]
async fn a_leader_whose_zookeeper_is_gone_refuses_writes_then_exits() {
    mezzo_testkit::require_zookeeper!();
    let mut group = Group::start(1, &["--quorum=1", "--zk_session_timeout=2secs"]).await.unwrap();
    let (code, body) = raw_subscribe(&group.masters[0]).await.unwrap();
    assert_eq!(code, 200, "{body}");
    group.zk.kill();
    let gone = Instant::now();
    let refused = loop {
        let (code, body) = raw_subscribe(&group.masters[0]).await.unwrap();
        if code == 503 {
            break body;
        }
        assert_eq!(code, 200, "{body}");
        assert!(gone.elapsed() < Duration::from_secs(10), "writes still accepted {:?} after ZooKeeper went", gone.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(refused.contains("ZooKeeper") || refused.contains("registry"), "{refused}");
    // Its session expires: it loses leadership and exits, for a supervisor to restart it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = group.master_exited(0) {
            break status;
        }
        assert!(Instant::now() < deadline, "the master still runs without ZooKeeper; log:\n{}", group.master_log(0));
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success(), "{status}");
    let log = group.master_log(0);
    assert!(log.contains("lost leadership"), "{log}");
}
