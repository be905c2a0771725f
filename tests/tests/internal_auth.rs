//! The agent <-> master protocol as a hostile task sees it: every container
//! shares the host's network, so a task can reach the agent's
//! `/mezzo/v1/master` and the master's `/mezzo/v1/agent/*` on loopback.
//! Without the session's token nothing runs, nothing is killed. Agents with
//! `--credential` register with a master that has `--credentials
//! --authenticate_agents`, others are refused; a restarted master takes the
//! agent back with its tasks.

use anyhow::{bail, Context, Result};
use mezzo_proto::mesos::v1::TaskState;
use mezzo_tests::{assert_clean, bin_dir, command_task, free_port, states, test_images_dir, Cluster, Kind, Proc, Scheduler};
use serde_json::json;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(90);

/// The forged messages: a RUN_TASK that would touch `marker` on the host as
/// root, a KILL_TASK and a SHUTDOWN_FRAMEWORK aimed at `victim_framework`.
fn forged_messages(agent_id: &str, marker: &str, victim_framework: &str, victim_task: &str) -> Vec<serde_json::Value> {
    vec![
        json!({
            "type": "RUN_TASK",
            "run_task": {
                "framework_info": {"user": "root", "name": "evil", "id": {"value": "evil-framework"}},
                "task": {
                    "name": "evil",
                    "task_id": {"value": "evil-task"},
                    "agent_id": {"value": agent_id},
                    "resources": [
                        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                        {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}}
                    ],
                    "command": {"value": format!("touch {marker}"), "shell": true, "user": "root"}
                }
            }
        }),
        json!({
            "type": "KILL_TASK",
            "kill_task": {"framework_id": {"value": victim_framework}, "task_id": {"value": victim_task}}
        }),
        json!({
            "type": "SHUTDOWN_FRAMEWORK",
            "shutdown_framework": {"framework_id": {"value": victim_framework}}
        }),
    ]
}

fn marker_path() -> String {
    format!("/tmp/mezzo-pwned-{}", uuid::Uuid::new_v4().simple())
}

/// A cluster with a victim framework running `sleep 1000`.
async fn with_victim() -> Result<(Cluster, Scheduler, String)> {
    let cluster = Cluster::start("rust").await?;
    let mut victim = Scheduler::subscribe(&cluster.master, "victim").await?;
    let offer = victim.next_offer(TIMEOUT).await?;
    let agent_id = offer.agent_id.value.clone();
    let task = command_task(&offer, "victim", "sleep 1000", Kind::MesosNoImage, "", 32.0);
    victim.launch_and_wait_running(&offer, task, TIMEOUT).await.map_err(|e| e.context(cluster.agent_log()))?;
    Ok((cluster, victim, agent_id))
}

/// Nothing ran and the victim still runs; then everything is cleaned up.
async fn assert_nothing_happened_and_finish(mut cluster: Cluster, mut victim: Scheduler, marker: &str) -> Result<()> {
    // Give a wrongly accepted RUN_TASK time to run.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!std::path::Path::new(marker).exists(), "a forged RUN_TASK ran on the host: {marker} exists");
    let _ = std::fs::remove_file(marker);
    match victim.next_update(Duration::from_secs(1)).await {
        Ok(update) => bail!("the victim heard of a forged call: {update:?}"),
        Err(_) => {}
    }
    let log = cluster.agent_log();
    assert!(!log.contains("evil-task"), "the agent never handles the forged task:\n{log}");
    victim.kill("victim", None).await?;
    let updates = victim.updates_until_terminal("victim", TIMEOUT).await?;
    assert_eq!(updates.last().unwrap().state(), TaskState::TaskKilled, "{:?}", states(&updates));
    victim.teardown().await.ok();
    cluster.stop();
    assert_clean(&cluster);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_master_calls_from_inside_a_container_are_refused() {
    mezzo_testkit::require_root!();
    from_inside_a_container().await.unwrap();
}

async fn from_inside_a_container() -> Result<()> {
    let (cluster, victim, agent_id) = with_victim().await?;
    let marker = marker_path();
    let port = cluster.agent.rsplit(':').next().unwrap().to_string();
    // The attacker: an ordinary framework, its task `nobody` in busybox.
    let mut attacker = Scheduler::subscribe(&cluster.master, "attacker").await?;
    let offer = attacker.next_offer(TIMEOUT).await?;
    let mut script = String::new();
    for body in forged_messages(&agent_id, &marker, &victim.framework_id.value, "victim") {
        script.push_str(&format!(
            "wget -q -O /dev/null --header 'Content-Type: application/json' --post-data '{body}' \
             http://127.0.0.1:{port}/mezzo/v1/master 2>&1; echo \"rc=$?\"\n"
        ));
    }
    let mut task = command_task(&offer, "attacker", &script, Kind::Mesos, "busybox", 32.0);
    task.command.as_mut().unwrap().user = Some("nobody".into());
    attacker.launch(&offer, task).await?;
    let updates = attacker.updates_until_terminal("attacker", TIMEOUT).await?;
    assert_eq!(updates.last().unwrap().state(), TaskState::TaskFinished, "{:?}", states(&updates));
    let url = format!(
        "http://{}/files/download?path=/frameworks/{}/executors/attacker/runs/latest/stdout",
        cluster.agent, attacker.framework_id.value
    );
    let out = reqwest::get(url).await?.text().await?;
    assert_eq!(out.matches("401 Unauthorized").count(), 3, "every forged call is refused with 401:\n{out}");
    assert!(!out.contains("rc=0"), "no forged call succeeded:\n{out}");
    attacker.teardown().await.ok();
    assert_nothing_happened_and_finish(cluster, victim, &marker).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_master_calls_without_the_session_token_are_refused() {
    mezzo_testkit::require_root!();
    direct().await.unwrap();
}

async fn direct() -> Result<()> {
    let (cluster, victim, agent_id) = with_victim().await?;
    let marker = marker_path();
    let client = reqwest::Client::new();
    let url = format!("http://{}/mezzo/v1/master", cluster.agent);
    for body in forged_messages(&agent_id, &marker, &victim.framework_id.value, "victim") {
        for auth in [None, Some("Bearer not-the-token"), Some("Bearer "), Some("Basic cm9vdDpyb290")] {
            let mut req = client.post(&url).header("Content-Type", "application/json");
            if let Some(auth) = auth {
                req = req.header("Authorization", auth);
            }
            let resp = req.body(body.to_string()).send().await?;
            assert_eq!(resp.status(), 401, "{auth:?} {body}");
        }
    }
    assert_nothing_happened_and_finish(cluster, victim, &marker).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_authenticate_with_their_credential_when_the_master_asks() {
    mezzo_testkit::require_root!();
    credentials().await.unwrap();
}

/// An extra agent on its own port, work dir and cgroups root.
struct ExtraAgent {
    proc: Option<Proc>,
    log: std::path::PathBuf,
    cgroups_root: String,
    port: u16,
}

impl ExtraAgent {
    fn start(master: &str, dir: std::path::PathBuf, extra: &[String]) -> Result<ExtraAgent> {
        std::fs::create_dir_all(&dir)?;
        let port = free_port();
        let cgroups_root = format!("mezzo-e2e-{}-{port}", std::process::id());
        let mut args = vec![
            format!("--master={master}"),
            "--ip=127.0.0.1".into(),
            format!("--port={port}"),
            format!("--work_dir={}", dir.join("work").display()),
            "--containerizers=rust".into(),
            format!("--docker_registry={}", test_images_dir().display()),
            format!("--cgroups_root={cgroups_root}"),
            "--resources=cpus:1;mem:512;disk:1024".into(),
        ];
        args.extend(extra.iter().cloned());
        let log = dir.join("agent.log");
        let proc = Proc::spawn("mezzo-agent", &bin_dir().join("mezzo-agent"), &args, &log)?;
        Ok(ExtraAgent { proc: Some(proc), log, cgroups_root, port })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ExtraAgent {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop(Duration::from_secs(20));
        }
        for controller in ["cpu", "cpuacct", "memory", "pids", "blkio", "devices", "freezer", "cpuset", "systemd", "unified"] {
            let _ = std::fs::remove_dir(std::path::Path::new("/sys/fs/cgroup").join(controller).join(&self.cgroups_root));
        }
    }
}

async fn slaves(master: &str) -> Result<Vec<serde_json::Value>> {
    let state: serde_json::Value = serde_json::from_slice(&reqwest::get(format!("http://{master}/state")).await?.bytes().await?)?;
    Ok(state["slaves"].as_array().cloned().unwrap_or_default())
}

async fn credentials() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let creds = dir.path().join("credentials.json");
    std::fs::write(&creds, r#"{"credentials":[{"principal":"agent-one","secret":"s3cret"}]}"#)?;
    let good = dir.path().join("credential.json");
    std::fs::write(&good, r#"{"principal":"agent-one","secret":"s3cret"}"#)?;
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "agent-one guessed\n")?;
    let master_args = [format!("--credentials=file://{}", creds.display()), "--authenticate_agents".to_string()];
    let agent_args = [format!("--credential={}", good.display())];
    let master_args: Vec<&str> = master_args.iter().map(String::as_str).collect();
    let agent_args: Vec<&str> = agent_args.iter().map(String::as_str).collect();
    // The harness waits until the agent with the right credential registered.
    let mut cluster = Cluster::start_full("rust", &master_args, &agent_args).await?;
    let without = ExtraAgent::start(&cluster.master, cluster.work_dir.path().join("without"), &[])?;
    let wrong = ExtraAgent::start(&cluster.master, cluster.work_dir.path().join("wrong"), &[format!("--credential={}", wrong.display())])?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(without.log().contains("refused this agent's registration") && wrong.log().contains("refused this agent's registration")) {
        if Instant::now() > deadline {
            bail!("agents without a good credential were not refused:\n{}\n{}", without.log(), wrong.log());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(without.log().contains("--credential"), "the refusal says what is missing:\n{}", without.log());
    assert!(wrong.log().contains("authentication failed"), "{}", wrong.log());
    assert_eq!(slaves(&cluster.master).await?.len(), 1, "only the agent with the credential registered");
    // And it runs tasks.
    let mut sched = Scheduler::subscribe(&cluster.master, "authenticated").await?;
    let offer = sched.next_offer(TIMEOUT).await?;
    sched.launch(&offer, command_task(&offer, "ok", "true", Kind::MesosNoImage, "", 32.0)).await?;
    let updates = sched.updates_until_terminal("ok", TIMEOUT).await?;
    assert_eq!(updates.last().unwrap().state(), TaskState::TaskFinished, "{:?}", states(&updates));
    drop(without);
    drop(wrong);
    sched.teardown().await.ok();
    cluster.stop();
    assert_clean(&cluster);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_master_takes_the_agent_back_with_its_running_task() {
    mezzo_testkit::require_root!();
    restarted_master().await.unwrap();
}

async fn restarted_master() -> Result<()> {
    let (mut cluster, victim, agent_id) = with_victim().await?;
    let framework = victim.framework_id.clone();
    // The framework's connection stays open until the master is gone: a
    // disconnect the old master saw first would tear the framework down
    // (failover_timeout 0) and kill its task before the restart.
    cluster.restart_master().await?;
    drop(victim);
    let agents = slaves(&cluster.master).await?;
    assert_eq!(agents[0]["id"], agent_id.as_str(), "same agent id after the master restart");
    let state: serde_json::Value = serde_json::from_slice(&reqwest::get(format!("http://{}/state", cluster.master)).await?.bytes().await?)?;
    let task = state["frameworks"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["id"] == framework.value.as_str()))
        .and_then(|f| f["tasks"].as_array()?.iter().find(|t| t["id"] == "victim").cloned())
        .with_context(|| format!("the new master knows the running task: {state}"))?;
    assert_eq!(task["state"], "TASK_RUNNING");
    // The framework comes back and can still kill its task.
    let info = mezzo_proto::mesos::v1::FrameworkInfo {
        user: "root".into(),
        name: "victim".into(),
        id: Some(framework),
        ..Default::default()
    };
    let mut sched = Scheduler::subscribe_with(&cluster.master, info).await?;
    sched.kill("victim", None).await?;
    let updates = sched.updates_until_terminal("victim", TIMEOUT).await.map_err(|e| e.context(cluster.master_log()))?;
    assert_eq!(updates.last().unwrap().state(), TaskState::TaskKilled, "{:?}", states(&updates));
    sched.teardown().await.ok();
    cluster.stop();
    assert_clean(&cluster);
    Ok(())
}

/// What the fake master saw.
#[derive(Default)]
struct Seen {
    agent_token: Option<String>,
    agent_id: Option<String>,
    /// (task id, state, uuid) of every status POST.
    updates: Vec<(String, i32, Vec<u8>)>,
}

type SeenState = std::sync::Arc<std::sync::Mutex<Seen>>;

async fn fake_register(axum::extract::State(seen): axum::extract::State<SeenState>, body: bytes::Bytes) -> axum::response::Response {
    use axum::response::IntoResponse;
    let req: mezzo_proto::mezzo::agent::RegisterAgent = mezzo_proto::from_protobuf(&body).unwrap();
    let id = req.agent_info.id.map(|i| i.value).unwrap_or_else(|| "fake-master-S0".into());
    {
        let mut seen = seen.lock().unwrap();
        seen.agent_token = req.agent_token;
        seen.agent_id = Some(id.clone());
    }
    let reply = mezzo_proto::mezzo::agent::AgentRegistered {
        agent_id: mezzo_proto::mesos::v1::AgentId { value: id },
        ping_interval_seconds: Some(1.0),
        master_token: Some("fake-master-token".into()),
    };
    (axum::http::StatusCode::OK, mezzo_proto::codec::encode(&reply, mezzo_proto::codec::ContentType::Protobuf)).into_response()
}

/// Every update is refused as a Mesos master refuses those of a framework it
/// does not know.
async fn fake_status(axum::extract::State(seen): axum::extract::State<SeenState>, body: bytes::Bytes) -> axum::http::StatusCode {
    let update: mezzo_proto::mezzo::agent::StatusUpdate = mezzo_proto::from_protobuf(&body).unwrap();
    let s = update.status;
    seen.lock().unwrap().updates.push((s.task_id.value.clone(), s.state, s.uuid.clone().unwrap_or_default()));
    axum::http::StatusCode::GONE
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_the_master_answers_gone_are_not_resent() {
    mezzo_testkit::require_root!();
    gone_updates().await.unwrap();
}

async fn gone_updates() -> Result<()> {
    use axum::routing::post;
    let seen: SeenState = Default::default();
    let app = axum::Router::new()
        .route("/mezzo/v1/agent/register", post(fake_register))
        .route("/mezzo/v1/agent/ping", post(|| async { axum::http::StatusCode::OK }))
        .route("/mezzo/v1/agent/status", post(fake_status))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let master = listener.local_addr()?.to_string();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::Builder::new().prefix("mezzo-e2e-").tempdir()?;
    let agent = ExtraAgent::start(&master, dir.path().to_path_buf(), &[])?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let (token, agent_id) = loop {
        if let (Some(t), Some(a)) = { let s = seen.lock().unwrap(); (s.agent_token.clone(), s.agent_id.clone()) } {
            break (t, a);
        }
        if Instant::now() > deadline {
            bail!("the agent did not register with the fake master:\n{}", agent.log());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The master (which has the token) launches a short task of a framework
    // it then no longer knows.
    let run = json!({
        "type": "RUN_TASK",
        "run_task": {
            "framework_info": {"user": "root", "name": "gone", "id": {"value": "gone-framework"}},
            "task": {
                "name": "short",
                "task_id": {"value": "short"},
                "agent_id": {"value": agent_id},
                "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                              {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}}],
                "command": {"value": "true", "shell": true}
            }
        }
    });
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/mezzo/v1/master", agent.port))
        .header("Content-Type", "application/json")
        .header("Authorization", format!("Bearer {token}"))
        .body(run.to_string())
        .send()
        .await?;
    assert_eq!(resp.status(), 202, "the master of the session is obeyed");
    // Past the agent's first resend interval (10 s).
    tokio::time::sleep(Duration::from_secs(14)).await;
    let updates = std::mem::take(&mut seen.lock().unwrap().updates);
    assert!(!updates.is_empty(), "the agent sent the task's updates:\n{}", agent.log());
    let mut uuids: Vec<&Vec<u8>> = updates.iter().map(|u| &u.2).collect();
    uuids.sort();
    uuids.dedup();
    assert_eq!(uuids.len(), updates.len(), "no update answered 410 Gone was sent again: {updates:?}");
    drop(agent);
    server.abort();
    Ok(())
}
