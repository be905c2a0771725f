//! Docker tasks end to end, through a real master, agent, executor and
//! Docker Engine: what a framework sees (states, reasons, the container's
//! IP, sandbox files) and what an operator sees (`docker inspect`, the
//! host port answering, containers adopted or removed across restarts).

use anyhow::{bail, Context, Result};
use mezzo_proto::mesos::v1::container_info::docker_info::{Network, PortMapping};
use mezzo_proto::mesos::v1::container_info::DockerInfo;
use mezzo_proto::mesos::v1::task_status::Reason;
use mezzo_proto::mesos::v1::{
    value, DurationInfo, KillPolicy, Offer, Parameter, Resource, TaskInfo, TaskState, TaskStatus,
};
use mezzo_tests::{assert_clean, command_task, container_id_of, states, wait_until, Cluster, Kind, Scheduler};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(90);
/// Generous for a loaded CI machine; Mesos's default is 2 s.
const REREGISTRATION: &str = "--executor_reregistration_timeout=15secs";

/// A scheduler that keeps offers and updates apart, so that waiting for one
/// never drops the other (several tasks run at once in some tests).
struct Driver {
    sched: Scheduler,
    offers: VecDeque<Offer>,
    updates: VecDeque<TaskStatus>,
}

impl Driver {
    async fn subscribe(cluster: &Cluster, name: &str, checkpoint: bool) -> Result<Driver> {
        let sched = if checkpoint {
            Scheduler::subscribe_checkpointing(&cluster.master, name).await?
        } else {
            Scheduler::subscribe(&cluster.master, name).await?
        };
        Ok(Driver { sched, offers: VecDeque::new(), updates: VecDeque::new() })
    }

    /// Takes one event (within `deadline`) into the queues; updates are acknowledged.
    async fn pump(&mut self, deadline: Instant) -> Result<()> {
        let ev = self.sched.next_event(deadline.saturating_duration_since(Instant::now())).await?;
        if let Some(offers) = ev.offers {
            self.offers.extend(offers.offers);
        }
        if let Some(update) = ev.update {
            self.sched.acknowledge(&update.status).await?;
            self.updates.push_back(update.status);
        }
        Ok(())
    }

    async fn offer(&mut self) -> Result<Offer> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(o) = self.offers.pop_front() {
                return Ok(o);
            }
            self.pump(deadline).await.context("waiting for an offer")?;
        }
    }

    /// The next update of `task`, within `timeout`.
    async fn update(&mut self, task: &str, timeout: Duration) -> Result<TaskStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.updates.iter().position(|u| u.task_id.value == task) {
                return Ok(self.updates.remove(i).expect("found above"));
            }
            self.pump(deadline).await.with_context(|| format!("waiting for an update of {task}"))?;
        }
    }

    /// Updates of `task` up to the first in `state` (or a terminal one).
    async fn until(&mut self, task: &str, state: TaskState, timeout: Duration) -> Result<Vec<TaskStatus>> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let st = self.update(task, left).await.with_context(|| format!("updates so far: {:?}", states(&out)))?;
            let done = st.state() == state || st.state().is_terminal();
            out.push(st);
            if done {
                return Ok(out);
            }
        }
    }

    /// Launches `task` and waits for TASK_RUNNING; anything terminal first is an error.
    async fn run(&mut self, offer: &Offer, task: TaskInfo, cluster: &Cluster) -> Result<TaskStatus> {
        let id = task.task_id.value.clone();
        self.sched.launch(offer, task).await?;
        let updates = self.until(&id, TaskState::TaskRunning, TIMEOUT).await.map_err(|e| e.context(cluster.agent_log()))?;
        let last = updates.last().expect("until returns at least one");
        if last.state() != TaskState::TaskRunning {
            bail!("task {id} ended before it ran: {last:?}\n{}", cluster.agent_log());
        }
        Ok(last.clone())
    }

    /// Whether an update of `task` is waiting, after taking what arrived within `within`.
    async fn has_update(&mut self, task: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.pump(deadline).await.is_err() {
                break;
            }
        }
        self.updates.iter().any(|u| u.task_id.value == task)
    }

    async fn finish(self, mut cluster: Cluster) -> Result<()> {
        self.sched.teardown().await.ok();
        cluster.stop();
        assert_clean(&cluster);
        Ok(())
    }
}

/// A docker task of `offer` running `command` under `/bin/sh -c`; `edit`
/// adjusts its DockerInfo and the task.
fn docker_task(offer: &Offer, id: &str, command: &str, mem: f64, edit: impl FnOnce(&mut DockerInfo, &mut TaskInfo)) -> TaskInfo {
    let mut task = command_task(offer, id, command, Kind::Docker, "busybox", mem);
    let mut container = task.container.take().expect("a docker task has a ContainerInfo");
    let docker = container.docker.as_mut().expect("a docker task has a DockerInfo");
    edit(docker, &mut task);
    task.container = Some(container);
    task
}

fn parameter(key: &str, value: &str) -> Parameter {
    Parameter { key: key.into(), value: value.into() }
}

/// A `ports` resource holding just `port`.
#[allow(deprecated)] // Resource.role: "*" is what the default role looks like
fn port_resource(port: u16) -> Resource {
    Resource {
        name: "ports".into(),
        r#type: value::Type::Ranges as i32,
        ranges: Some(value::Ranges { range: vec![value::Range { begin: port as u64, end: port as u64 }] }),
        role: Some("*".into()),
        ..Default::default()
    }
}

/// A port of the offer's `ports` that nothing on the host listens on now;
/// the start is random so that tests running at once pick different ones.
fn offered_free_port(offer: &Offer) -> Result<u16> {
    let ranges: Vec<(u64, u64)> = offer
        .resources
        .iter()
        .filter(|r| r.name == "ports")
        .flat_map(|r| r.ranges.iter().flat_map(|rs| rs.range.iter().map(|r| (r.begin, r.end))))
        .collect();
    let all: Vec<u16> = ranges.iter().flat_map(|&(b, e)| (b..=e).map(|p| p as u16)).collect();
    anyhow::ensure!(!all.is_empty(), "the offer has no ports: {offer:?}");
    let start = uuid::Uuid::new_v4().as_u128() as usize % all.len();
    for i in 0..all.len() {
        let port = all[(start + i) % all.len()];
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port of {ranges:?} is free on the host")
}

/// `docker <args>`: its stdout, trimmed; an error with its stderr when it fails.
fn docker(args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("docker").args(args).output().context("run the docker CLI")?;
    if !out.status.success() {
        bail!("docker {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Whether the engine knows a container named `name`.
fn container_exists(name: &str) -> bool {
    docker(&["inspect", "-f", "{{.Id}}", name]).is_ok()
}


/// A sandbox file of `task` through the agent's `/files/read`.
async fn read_sandbox(cluster: &Cluster, driver: &Driver, task: &str, file: &str) -> Result<String> {
    let path = format!("/frameworks/{}/executors/{task}/runs/latest/{file}", driver.sched.framework_id.value);
    let resp = reqwest::Client::new()
        .get(format!("http://{}/files/read", cluster.agent))
        .query(&[("path", path.as_str()), ("offset", "0")])
        .send()
        .await?;
    let code = resp.status();
    let body = resp.text().await?;
    anyhow::ensure!(code == 200, "files/read {path}: {code} {body}");
    let v: serde_json::Value = serde_json::from_str(&body)?;
    Ok(v["data"].as_str().context("files/read answer without data")?.to_string())
}

/// Kills `task` and returns its updates up to the terminal one and how long that took.
async fn kill(driver: &mut Driver, cluster: &Cluster, task: &str) -> Result<(Vec<TaskStatus>, Duration)> {
    let t = Instant::now();
    driver.sched.kill(task, None).await?;
    let updates = driver.until(task, TaskState::TaskKilled, TIMEOUT).await.map_err(|e| e.context(cluster.agent_log()))?;
    Ok((updates, t.elapsed()))
}

/// Containers this test made itself, removed when it ends however it ends.
struct ContainerGuard(Vec<String>);

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = docker(&["rm", "-f", "-v", name]);
        }
    }
}

/// busybox in the engine for containers the test runs itself (the agent
/// loads it from the test images as needed; the test cannot count on that).
fn ensure_busybox_in_engine() -> Result<()> {
    if docker(&["image", "inspect", "-f", "{{.Id}}", "busybox:latest"]).is_ok() {
        return Ok(());
    }
    let tar = mezzo_tests::test_images_dir().join("busybox.tar");
    docker(&["load", "-i", &tar.display().to_string()]).map(|_| ())
}

// 1. BRIDGE network with a port mapping.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_task_reports_its_ip_and_the_mapped_host_port_answers() -> Result<()> {
    let cluster = Cluster::start("docker").await?;
    let mut d = Driver::subscribe(&cluster, "docker-bridge", false).await?;
    let offer = d.offer().await?;
    let port = offered_free_port(&offer)?;
    let page = format!("hello from {port}");
    let command = format!("mkdir -p /www && echo '{page}' > /www/index.html && exec httpd -f -p 80 -h /www");
    let task = docker_task(&offer, "web", &command, 64.0, |info, task| {
        info.network = Some(Network::Bridge as i32);
        info.port_mappings = vec![PortMapping { host_port: port as u32, container_port: 80, protocol: Some("tcp".into()) }];
        task.resources.push(port_resource(port));
    });
    let running = d.run(&offer, task, &cluster).await?;
    let cid = container_id_of(&running).context("TASK_RUNNING carries the container id")?;

    // The IP in the status is the one the engine gave the container on the bridge.
    let reported: Vec<String> = running
        .container_status
        .iter()
        .flat_map(|c| c.network_infos.iter())
        .flat_map(|n| n.ip_addresses.iter().filter_map(|a| a.ip_address.clone()))
        .collect();
    let engine_ip = docker(&["inspect", "-f", "{{.NetworkSettings.Networks.bridge.IPAddress}}", &format!("mesos-{cid}")])?;
    assert!(!engine_ip.is_empty(), "the container has no bridge address");
    assert_eq!(reported, std::slice::from_ref(&engine_ip), "network_infos of TASK_RUNNING: {running:?}");

    // The host port answers with the container's page, and so does the container's own address.
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut answered = false;
    while Instant::now() < deadline {
        match client.get(format!("http://127.0.0.1:{port}/")).send().await {
            Ok(resp) => {
                last = resp.text().await.unwrap_or_default();
                if last.contains(&page) {
                    answered = true;
                    break;
                }
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(answered, "host port {port} did not serve the page; last answer: {last}");
    let direct = client.get(format!("http://{engine_ip}:80/")).send().await?.text().await?;
    assert!(direct.contains(&page), "the container's IP serves the page: {direct}");

    let (updates, _) = kill(&mut d, &cluster, "web").await?;
    assert_eq!(updates.last().unwrap().state(), TaskState::TaskKilled, "{:?}", states(&updates));
    d.finish(cluster).await?;
    // The mapping went with the container.
    assert!(std::net::TcpListener::bind(("0.0.0.0", port)).is_ok(), "host port {port} is still taken");
    Ok(())
}

// 2. OOM.

/// The shell holds 100 MiB in a variable; the task has 16 MB (the engine's
/// limit is raised to Mesos's 32 MB minimum).
const ALLOCATE_100_MIB: &str = "x=$(head -c 104857600 /dev/zero | tr '\\0' a); echo survived ${#x}; sleep 30";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_task_over_its_memory_fails_with_the_memory_limitation() -> Result<()> {
    let cluster = Cluster::start("docker").await?;
    let mut d = Driver::subscribe(&cluster, "docker-oom", false).await?;
    let offer = d.offer().await?;
    d.sched.launch(&offer, docker_task(&offer, "hog", ALLOCATE_100_MIB, 16.0, |_, _| {})).await?;
    let updates = d.until("hog", TaskState::TaskFailed, TIMEOUT).await.map_err(|e| e.context(cluster.agent_log()))?;
    let last = updates.last().unwrap();
    assert_eq!(last.state(), TaskState::TaskFailed, "updates: {:?}\n{}", states(&updates), cluster.agent_log());
    assert_eq!(last.reason(), Reason::ContainerLimitationMemory, "{last:?}");
    let limited: Vec<&str> = last.limitation.iter().flat_map(|l| l.resources.iter().map(|r| r.name.as_str())).collect();
    assert_eq!(limited, ["mem"], "{last:?}");
    let message = last.message.clone().unwrap_or_default().to_lowercase();
    assert!(message.contains("memory"), "the message says what happened: {message}");
    let stdout = read_sandbox(&cluster, &d, "hog", "stdout").await?;
    assert!(!stdout.contains("survived"), "the allocation succeeded: {stdout}");
    // Exactly one terminal update.
    assert!(!d.has_update("hog", Duration::from_secs(2)).await, "another update after the terminal one");
    d.finish(cluster).await
}

// 3. DockerInfo.parameters.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_label_and_env_show_in_docker_inspect_and_the_task() -> Result<()> {
    let cluster = Cluster::start("docker").await?;
    let mut d = Driver::subscribe(&cluster, "docker-params", false).await?;
    let offer = d.offer().await?;
    let mark = uuid::Uuid::new_v4().simple().to_string();
    let task = docker_task(&offer, "params", "echo \"env=$PARAM_ENV\"; sleep 1000", 64.0, |info, _| {
        info.parameters = vec![parameter("label", &format!("mezzo.e2e={mark}")), parameter("env", "PARAM_ENV=from-parameters")];
    });
    let running = d.run(&offer, task, &cluster).await?;
    let name = format!("mesos-{}", container_id_of(&running).context("TASK_RUNNING carries the container id")?);
    assert_eq!(docker(&["inspect", "-f", "{{index .Config.Labels \"mezzo.e2e\"}}", &name])?, mark);
    let env = docker(&["inspect", "-f", "{{json .Config.Env}}", &name])?;
    let env: Vec<String> = serde_json::from_str(&env)?;
    assert!(env.contains(&"PARAM_ENV=from-parameters".to_string()), "Config.Env: {env:?}");
    // The task itself sees the variable.
    let mut stdout = String::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && !stdout.contains("env=from-parameters") {
        stdout = read_sandbox(&cluster, &d, "params", "stdout").await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stdout.contains("env=from-parameters"), "stdout: {stdout:?}");
    let (updates, _) = kill(&mut d, &cluster, "params").await?;
    assert_eq!(updates.last().unwrap().state(), TaskState::TaskKilled);
    d.finish(cluster).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_docker_parameter_fails_the_task_naming_it() -> Result<()> {
    let cluster = Cluster::start("docker").await?;
    let mut d = Driver::subscribe(&cluster, "docker-bad-param", false).await?;
    let offer = d.offer().await?;
    let task = docker_task(&offer, "bad-param", "true", 64.0, |info, _| {
        info.parameters = vec![parameter("label", "ok=1"), parameter("no-such-docker-flag", "x")];
    });
    d.sched.launch(&offer, task).await?;
    let updates = d.until("bad-param", TaskState::TaskFailed, TIMEOUT).await?;
    let last = updates.last().unwrap();
    assert_eq!(last.state(), TaskState::TaskFailed, "updates: {:?}", states(&updates));
    let msg = last.message.clone().unwrap_or_default();
    eprintln!("unknown parameter: {msg}");
    assert!(msg.contains("no-such-docker-flag"), "the message names the parameter: {msg}");
    assert!(!states(&updates).contains(&"TASK_RUNNING"), "{:?}", states(&updates));
    d.finish(cluster).await
}

// 4. Independence from the engine.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_down_fails_docker_tasks_clearly_and_rust_tasks_still_run() -> Result<()> {
    let dir = tempfile::Builder::new().prefix("mezzo-no-engine-").tempdir()?;
    let socket = dir.path().join("docker.sock");
    let flag = format!("--docker_socket={}", socket.display());
    let cluster = Cluster::start_with("rust,docker", &[&flag]).await?;
    let mut d = Driver::subscribe(&cluster, "docker-down", false).await?;

    let offer = d.offer().await?;
    d.sched.launch(&offer, command_task(&offer, "rust-before", "exit 0", Kind::MesosNoImage, "", 32.0)).await?;
    let updates = d.until("rust-before", TaskState::TaskFinished, TIMEOUT).await.map_err(|e| e.context(cluster.agent_log()))?;
    assert_eq!(updates.last().unwrap().state(), TaskState::TaskFinished, "{:?}", states(&updates));

    let offer = d.offer().await?;
    let t = Instant::now();
    d.sched.launch(&offer, docker_task(&offer, "docker-down", "true", 32.0, |_, _| {})).await?;
    let updates = d.until("docker-down", TaskState::TaskFailed, Duration::from_secs(35)).await?;
    let elapsed = t.elapsed();
    let last = updates.last().unwrap();
    assert_eq!(last.state(), TaskState::TaskFailed, "{:?}", states(&updates));
    assert!(elapsed < Duration::from_secs(35), "failing took {elapsed:?}");
    let msg = last.message.clone().unwrap_or_default();
    eprintln!("docker task failed after {elapsed:?}: {msg}");
    assert!(
        msg.contains("docker engine") && msg.contains(&socket.display().to_string()),
        "the message names the engine and where it was looked for: {msg}"
    );

    let offer = d.offer().await?;
    d.sched.launch(&offer, command_task(&offer, "rust-after", "exit 0", Kind::MesosNoImage, "", 32.0)).await?;
    let updates = d.until("rust-after", TaskState::TaskFinished, TIMEOUT).await?;
    assert_eq!(updates.last().unwrap().state(), TaskState::TaskFinished, "{:?}", states(&updates));
    d.finish(cluster).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_engine_does_not_delay_rust_launches() -> Result<()> {
    let dir = tempfile::Builder::new().prefix("mezzo-hung-engine-").tempdir()?;
    let socket = dir.path().join("docker.sock");
    // Connections are queued by the kernel and never answered.
    let _hung = std::os::unix::net::UnixListener::bind(&socket)?;
    let flags = [format!("--docker_socket={}", socket.display()), "--docker_engine_timeout=10secs".to_string()];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let cluster = Cluster::start_with("rust,docker", &flags).await?;
    let mut d = Driver::subscribe(&cluster, "docker-hung", false).await?;

    let offer = d.offer().await?;
    let docker_launched = Instant::now();
    d.sched.launch(&offer, docker_task(&offer, "docker-hung", "true", 32.0, |_, _| {})).await?;
    let offer = d.offer().await?;
    let t = Instant::now();
    d.sched.launch(&offer, command_task(&offer, "rust-beside", "sleep 1000", Kind::MesosNoImage, "", 32.0)).await?;
    let updates = d.until("rust-beside", TaskState::TaskRunning, Duration::from_secs(5)).await.map_err(|e| e.context(cluster.agent_log()))?;
    let elapsed = t.elapsed();
    assert_eq!(updates.last().unwrap().state(), TaskState::TaskRunning, "{:?}", states(&updates));
    eprintln!("rust task running {elapsed:?} after its launch, beside a docker launch on a hung engine");
    assert!(elapsed < Duration::from_secs(5), "the rust task took {elapsed:?} to run");
    // The docker launch was still waiting on the engine meanwhile.
    let docker_updates: Vec<&TaskStatus> = d.updates.iter().filter(|u| u.task_id.value == "docker-hung").collect();
    assert!(
        docker_updates.iter().all(|u| !u.state().is_terminal()),
        "the docker task ended before the rust task ran ({:?} after its launch): {docker_updates:?}",
        docker_launched.elapsed()
    );

    // Then it fails once the engine call times out, saying so.
    let updates = d.until("docker-hung", TaskState::TaskFailed, Duration::from_secs(60)).await?;
    let last = updates.last().unwrap();
    assert_eq!(last.state(), TaskState::TaskFailed, "{:?}", states(&updates));
    let msg = last.message.clone().unwrap_or_default();
    let failed_after = docker_launched.elapsed();
    eprintln!("docker task failed {failed_after:?} after its launch: {msg}");
    // One engine timeout (10 s), not one per engine call of the launch and its cleanup.
    assert!(failed_after < Duration::from_secs(18), "the docker task took {failed_after:?} to fail");
    assert!(msg.contains("docker engine") && msg.contains("did not answer"), "message: {msg}");

    let (updates, _) = kill(&mut d, &cluster, "rust-beside").await?;
    assert_eq!(updates.last().unwrap().state(), TaskState::TaskKilled);
    d.finish(cluster).await
}

// 5. Logs streamed while the task runs; kill within the grace period.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_reaches_the_sandbox_while_running_and_kill_honours_the_grace() -> Result<()> {
    let cluster = Cluster::start("docker").await?;
    let mut d = Driver::subscribe(&cluster, "docker-logs", false).await?;
    let offer = d.offer().await?;
    let grace = Duration::from_secs(2);
    let task = docker_task(&offer, "talker", "echo start; echo to-stderr >&2; sleep 30", 64.0, |_, task| {
        task.kill_policy = Some(KillPolicy { grace_period: Some(DurationInfo { nanoseconds: grace.as_nanos() as i64 }) });
    });
    d.run(&offer, task, &cluster).await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut stdout, mut stderr) = (String::new(), String::new());
    while Instant::now() < deadline && !(stdout.contains("start") && stderr.contains("to-stderr")) {
        stdout = read_sandbox(&cluster, &d, "talker", "stdout").await?;
        stderr = read_sandbox(&cluster, &d, "talker", "stderr").await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stdout, "start\n", "stdout while running");
    assert!(stderr.contains("to-stderr"), "stderr while running: {stderr:?}");
    assert!(!d.has_update("talker", Duration::from_millis(200)).await, "the task is still TASK_RUNNING: {:?}", d.updates);
    // The engine's init forwards SIGTERM to sh: the kill ends within the grace.
    let (updates, elapsed) = kill(&mut d, &cluster, "talker").await?;
    assert_eq!(updates.last().unwrap().state(), TaskState::TaskKilled, "{:?}", states(&updates));
    assert!(elapsed <= grace + Duration::from_secs(3), "kill took {elapsed:?} with a {grace:?} grace");
    d.finish(cluster).await
}

// 6. Agent restarts.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_agent_adopts_a_running_docker_task_that_stays_killable() -> Result<()> {
    let mut cluster = Cluster::start_with("docker", &[REREGISTRATION]).await?;
    let mut d = Driver::subscribe(&cluster, "docker-adopt", true).await?;
    let offer = d.offer().await?;
    let running = d.run(&offer, docker_task(&offer, "adoptee", "sleep 1000", 32.0, |_, _| {}), &cluster).await?;
    let cid = container_id_of(&running).context("TASK_RUNNING carries the container id")?;
    let name = format!("mesos-{cid}");
    let engine_id = docker(&["inspect", "-f", "{{.Id}}", &name])?;

    cluster.crash_agent();
    cluster.restart_agent().await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = cluster.agent_call_json(&serde_json::json!({"type": "GET_CONTAINERS"})).await?;
        if code == 200 && body.contains(&cid) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the restarted agent does not list container {cid}: {body}\n{}", cluster.agent_log());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The same container, still running: adopted, not started again.
    assert_eq!(docker(&["inspect", "-f", "{{.Id}} {{.State.Running}}", &name])?, format!("{engine_id} true"));
    // Nothing new about the task: at most TASK_RUNNING again, where its
    // acknowledgement had not reached the agent before the crash.
    d.has_update("adoptee", Duration::from_secs(1)).await;
    let after: Vec<&str> = d.updates.iter().filter(|u| u.task_id.value == "adoptee").map(|u| u.state().as_str_name()).collect();
    assert!(after.iter().all(|s| *s == "TASK_RUNNING"), "updates after the restart: {after:?}");

    let (updates, _) = kill(&mut d, &cluster, "adoptee").await?;
    assert_eq!(updates.last().unwrap().state(), TaskState::TaskKilled, "{:?}\n{}", states(&updates), cluster.agent_log());
    wait_until("the killed task's container is removed", Duration::from_secs(15), || !container_exists(&name)).await?;
    d.finish(cluster).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_start_removes_its_unclaimed_containers_and_leaves_other_agents_alone() -> Result<()> {
    ensure_busybox_in_engine()?;
    let mut cluster = Cluster::start("docker").await?;
    let owner = std::fs::canonicalize(cluster.agent_work_dir())?.display().to_string();
    let orphan_id = uuid::Uuid::new_v4().to_string();
    let foreign_id = uuid::Uuid::new_v4().to_string();
    let orphan = format!("mesos-{orphan_id}");
    let foreign = format!("mesos-{foreign_id}");
    let _guard = ContainerGuard(vec![orphan.clone(), foreign.clone()]);
    let run = |name: &str, id: &str, owner: &str| {
        docker(&[
            "run", "-d", "--name", name,
            "--label", &format!("mezzo.container_id={id}"),
            "--label", &format!("mezzo.owner={owner}"),
            "busybox:latest", "sleep", "1000",
        ])
    };
    // No checkpoint of this agent names it, but it is labelled as this agent's.
    run(&orphan, &orphan_id, &owner)?;
    // Another agent's container on the same engine.
    run(&foreign, &foreign_id, &format!("{owner}-another-agent"))?;

    cluster.restart_agent().await?;
    // The agent answers only once recovery is done.
    assert!(!container_exists(&orphan), "the orphan is removed at agent start\n{}", cluster.agent_log());
    assert_eq!(docker(&["inspect", "-f", "{{.State.Running}}", &foreign])?, "true", "another agent's container is left alone");
    let mut d = Driver::subscribe(&cluster, "docker-orphans", false).await?;
    // The agent serves docker tasks afterwards.
    let offer = d.offer().await?;
    d.sched.launch(&offer, docker_task(&offer, "after-sweep", "exit 0", 32.0, |_, _| {})).await?;
    let updates = d.until("after-sweep", TaskState::TaskFinished, TIMEOUT).await?;
    assert_eq!(updates.last().unwrap().state(), TaskState::TaskFinished, "{:?}", states(&updates));
    d.finish(cluster).await
}
