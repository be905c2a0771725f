//! Executor authentication (`--authenticate_http_executors`, on by default)
//! and basic authentication of the agent's operator endpoints, as an
//! attacker on the host or inside a task sees them: every executor call
//! needs the token the agent gave that executor, for its own container,
//! and a forged update never reaches the scheduler.

use anyhow::{bail, Context, Result};
use base64::Engine;
use mezzo_proto::mesos::v1::executor;
use mezzo_proto::mesos::v1::{task_status, ExecutorId, FrameworkId, TaskId, TaskState, TaskStatus};
use mezzo_tests::{assert_clean, command_task, container_id_of, executor_token, states, Cluster, Kind, Scheduler};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(90);
const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

macro_rules! require_root {
    () => {
        if !mezzo_testkit::is_root() {
            mezzo_testkit::skip("needs root (real agent, containers and cgroups)");
            return Ok(());
        }
    };
}

/// An executor call as JSON: UPDATE to `state` of `task` (SOURCE_EXECUTOR,
/// a fresh uuid) or, with `state` None, a HEARTBEAT.
fn call_json(fid: &FrameworkId, eid: &str, task: &str, state: Option<TaskState>) -> String {
    let mut call = executor::Call {
        framework_id: fid.clone(),
        executor_id: ExecutorId { value: eid.into() },
        r#type: Some(executor::call::Type::Heartbeat as i32),
        ..Default::default()
    };
    if let Some(state) = state {
        let mut status = TaskStatus {
            task_id: TaskId { value: task.into() },
            uuid: Some(mezzo_proto::new_uuid()),
            message: Some("forged".into()),
            ..Default::default()
        };
        status.set_state(state);
        status.set_source(task_status::Source::Executor);
        call.r#type = Some(executor::call::Type::Update as i32);
        call.update = Some(executor::call::Update { status });
    }
    mezzo_proto::json::to_json(&call)
}

struct Reply {
    code: u16,
    challenge: Option<String>,
    body: String,
}

async fn post_executor(cluster: &Cluster, body: String, authorization: Option<String>) -> Result<Reply> {
    let mut req = reqwest::Client::new()
        .post(format!("http://{}/api/v1/executor", cluster.agent))
        .header("Content-Type", "application/json")
        .body(body);
    if let Some(a) = authorization {
        req = req.header("Authorization", a);
    }
    let resp = req.send().await?;
    let code = resp.status().as_u16();
    let challenge = resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).map(str::to_string);
    Ok(Reply { code, challenge, body: resp.text().await? })
}

/// Launches a `sleep 1000` command task and waits until it runs; returns its container id.
async fn launch_sleeper(sched: &mut Scheduler, cluster: &Cluster, id: &str) -> Result<String> {
    let offer = sched.next_offer(TIMEOUT).await?;
    let task = command_task(&offer, id, "sleep 1000", Kind::MesosNoImage, "", 32.0);
    let running = sched.launch_and_wait_running(&offer, task, TIMEOUT).await.map_err(|e| e.context(cluster.agent_log()))?;
    container_id_of(&running).context("TASK_RUNNING carries the container id")
}

/// No update reaches the scheduler within `quiet`.
async fn assert_no_update(sched: &mut Scheduler, cluster: &Cluster, quiet: Duration) -> Result<()> {
    if let Ok(st) = sched.next_update(quiet).await {
        bail!("the scheduler got an update it should not have: {st:?}\n{}", cluster.agent_log());
    }
    Ok(())
}

/// The state the agent's `/state` gives `task`.
async fn agent_task_state(cluster: &Cluster, task: &str) -> Result<String> {
    let v: serde_json::Value = serde_json::from_slice(&reqwest::get(format!("http://{}/state", cluster.agent)).await?.bytes().await?)?;
    for fw in v["frameworks"].as_array().into_iter().flatten() {
        for ex in fw["executors"].as_array().into_iter().flatten() {
            for t in ex["tasks"].as_array().into_iter().flatten() {
                if t["id"] == task {
                    return Ok(t["state"].as_str().unwrap_or_default().to_string());
                }
            }
        }
    }
    bail!("the agent does not list task {task}: {v}")
}

async fn kill_and_finish(mut cluster: Cluster, mut sched: Scheduler, tasks: &[&str]) -> Result<()> {
    for id in tasks {
        sched.kill(id, None).await?;
        let updates = sched.updates_until_terminal(id, TIMEOUT).await?;
        let last = updates.last().unwrap();
        assert_eq!(last.state(), TaskState::TaskKilled, "{id}: {:?}\n{}", states(&updates), cluster.agent_log());
        assert_eq!(last.source(), task_status::Source::Executor, "{id} was killed by its own executor");
    }
    sched.teardown().await.ok();
    cluster.stop();
    assert_clean(&cluster);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_update_without_a_token_is_refused_and_the_task_keeps_running() -> Result<()> {
    require_root!();
    let cluster = Cluster::start("rust").await?;
    let mut sched = Scheduler::subscribe(&cluster.master, "forged-update").await?;
    launch_sleeper(&mut sched, &cluster, "victim").await?;

    // Any local process: TASK_FINISHED for the victim, as its executor would send it.
    let forged = call_json(&sched.framework_id, "victim", "victim", Some(TaskState::TaskFinished));
    let reply = post_executor(&cluster, forged, None).await?;
    assert_eq!(reply.code, 401, "forged token-less update: {}", reply.body);
    assert_eq!(reply.challenge.as_deref(), Some("Bearer realm=\"mezzo-executor\""));
    assert!(reply.body.contains("--authenticate_http_executors=false"), "the refusal names the flag: {}", reply.body);
    assert!(
        cluster.agent_log().contains("--authenticate_http_executors=false"),
        "the agent's log names the flag too:\n{}",
        cluster.agent_log()
    );
    let reply = post_executor(&cluster, call_json(&sched.framework_id, "victim", "", None), None).await?;
    assert_eq!(reply.code, 401, "token-less HEARTBEAT: {}", reply.body);
    let reply = post_executor(&cluster, call_json(&sched.framework_id, "victim", "victim", Some(TaskState::TaskFinished)), Some("Bearer not-a-token".into())).await?;
    assert_eq!(reply.code, 401, "garbage token: {}", reply.body);

    assert_no_update(&mut sched, &cluster, Duration::from_secs(2)).await?;
    assert_eq!(agent_task_state(&cluster, "victim").await?, "TASK_RUNNING");
    kill_and_finish(cluster, sched, &["victim"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_signature_other_executors_token_and_other_executors_task_are_refused() -> Result<()> {
    require_root!();
    let cluster = Cluster::start("rust").await?;
    let mut sched = Scheduler::subscribe(&cluster.master, "stolen-token").await?;
    let cid_a = launch_sleeper(&mut sched, &cluster, "task-a").await?;
    launch_sleeper(&mut sched, &cluster, "task-b").await?;
    let fid = sched.framework_id.clone();
    let token_a = executor_token(&cid_a)?;

    // A's own token works for A (the control).
    let reply = post_executor(&cluster, call_json(&fid, "task-a", "", None), Some(format!("Bearer {token_a}"))).await?;
    assert_eq!(reply.code, 202, "A's HEARTBEAT with A's token: {}", reply.body);

    // Another executor's token: A's token on a call for B.
    let reply = post_executor(&cluster, call_json(&fid, "task-b", "task-b", Some(TaskState::TaskFinished)), Some(format!("Bearer {token_a}"))).await?;
    assert_eq!(reply.code, 403, "B's update with A's token: {}", reply.body);
    assert!(reply.body.contains("task-a") && reply.body.contains("task-b"), "{}", reply.body);

    // UPDATE of another executor's task: A's call, B's task.
    let reply = post_executor(&cluster, call_json(&fid, "task-a", "task-b", Some(TaskState::TaskFinished)), Some(format!("Bearer {token_a}"))).await?;
    assert_eq!(reply.code, 403, "A updating B's task: {}", reply.body);

    // Wrong signature: A's token with its claims rewritten to name B.
    let parts: Vec<&str> = token_a.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT: {token_a}");
    let mut claims: serde_json::Value = serde_json::from_slice(&B64URL.decode(parts[1])?)?;
    assert_eq!(claims["eid"], "task-a", "the claims name the executor: {claims}");
    assert_eq!(claims["fid"], fid.value.as_str());
    assert_eq!(claims["cid"], cid_a.as_str());
    claims["eid"] = "task-b".into();
    let forged = format!("{}.{}.{}", parts[0], B64URL.encode(claims.to_string()), parts[2]);
    let reply = post_executor(&cluster, call_json(&fid, "task-b", "task-b", Some(TaskState::TaskFinished)), Some(format!("Bearer {forged}"))).await?;
    assert_eq!(reply.code, 401, "re-signed claims: {}", reply.body);
    assert!(reply.body.contains("signature"), "{}", reply.body);
    assert_eq!(reply.challenge.as_deref(), Some("Bearer realm=\"mezzo-executor\", error=\"invalid_token\""));

    assert_no_update(&mut sched, &cluster, Duration::from_secs(2)).await?;
    assert_eq!(agent_task_state(&cluster, "task-a").await?, "TASK_RUNNING");
    assert_eq!(agent_task_state(&cluster, "task-b").await?, "TASK_RUNNING");
    kill_and_finish(cluster, sched, &["task-a", "task-b"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_of_an_ended_container_is_expired() -> Result<()> {
    require_root!();
    let cluster = Cluster::start("rust").await?;
    let mut sched = Scheduler::subscribe(&cluster.master, "expired-token").await?;
    let old_cid = launch_sleeper(&mut sched, &cluster, "again").await?;
    let old_token = executor_token(&old_cid)?;
    sched.kill("again", None).await?;
    let updates = sched.updates_until_terminal("again", TIMEOUT).await?;
    assert_eq!(updates.last().unwrap().state(), TaskState::TaskKilled);
    // Once its executor is gone, the same task id runs again, in a new container.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while agent_task_state(&cluster, "again").await.is_ok() {
        if std::time::Instant::now() > deadline {
            bail!("the killed task's executor did not end; log:\n{}", cluster.agent_log());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let new_cid = launch_sleeper(&mut sched, &cluster, "again").await?;
    assert_ne!(old_cid, new_cid);
    let fid = sched.framework_id.clone();
    let reply = post_executor(&cluster, call_json(&fid, "again", "again", Some(TaskState::TaskFinished)), Some(format!("Bearer {old_token}"))).await?;
    assert_eq!(reply.code, 401, "the previous run's token: {}", reply.body);
    assert!(reply.body.contains("Expired") && reply.body.contains(&old_cid), "{}", reply.body);
    let new_token = executor_token(&new_cid)?;
    let reply = post_executor(&cluster, call_json(&fid, "again", "", None), Some(format!("Bearer {new_token}"))).await?;
    assert_eq!(reply.code, 202, "the current run's token: {}", reply.body);
    assert_no_update(&mut sched, &cluster, Duration::from_secs(2)).await?;
    kill_and_finish(cluster, sched, &["again"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_update_from_inside_a_container_is_refused() -> Result<()> {
    require_root!();
    let cluster = Cluster::start("rust").await?;
    let mut sched = Scheduler::subscribe(&cluster.master, "attacker").await?;
    launch_sleeper(&mut sched, &cluster, "victim").await?;
    // A task in the busybox image posts the forged update over loopback
    // (containers share the host's network) and reports what it got.
    let forged = call_json(&sched.framework_id, "victim", "victim", Some(TaskState::TaskFinished));
    let url = format!("http://{}/api/v1/executor", cluster.agent);
    let script = format!(
        "wget -q -O - --header 'Content-Type: application/json' --post-data '{forged}' {url}; echo \"wget exit $?\""
    );
    let offer = sched.next_offer(TIMEOUT).await?;
    sched.launch(&offer, command_task(&offer, "attacker", &script, Kind::Mesos, "busybox", 32.0)).await?;
    let mut victim_updates = Vec::new();
    loop {
        let st = sched.next_update(TIMEOUT).await.map_err(|e| e.context(cluster.agent_log()))?;
        if st.task_id.value == "victim" {
            victim_updates.push(st);
        } else if st.state().is_terminal() {
            break;
        }
    }
    assert_no_update(&mut sched, &cluster, Duration::from_secs(1)).await?;
    assert!(victim_updates.is_empty(), "the scheduler saw forged updates of the victim: {victim_updates:?}");
    assert_eq!(agent_task_state(&cluster, "victim").await?, "TASK_RUNNING");
    let sandbox = cluster
        .agent_work_dir()
        .join("slaves")
        .join(offer.agent_id.value.as_str())
        .join("frameworks")
        .join(sched.framework_id.value.as_str())
        .join("executors/attacker/runs/latest");
    let stdout = std::fs::read_to_string(sandbox.join("stdout")).unwrap_or_default();
    let stderr = std::fs::read_to_string(sandbox.join("stderr")).unwrap_or_default();
    assert!(stdout.contains("wget exit 1"), "the attacker's request failed; stdout: {stdout} stderr: {stderr}");
    assert!(stderr.contains("401"), "the agent answered 401; stderr: {stderr}");
    kill_and_finish(cluster, sched, &["victim"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticate_http_executors_false_accepts_token_less_executors_but_checks_tokens() -> Result<()> {
    require_root!();
    let cluster = Cluster::start_with("rust", &["--authenticate_http_executors=false"]).await?;
    let mut sched = Scheduler::subscribe(&cluster.master, "no-executor-auth").await?;
    let cid = launch_sleeper(&mut sched, &cluster, "plain").await?;
    let fid = sched.framework_id.clone();
    // A third-party executor library that sends no token (pymesos's) is accepted.
    let reply = post_executor(&cluster, call_json(&fid, "plain", "", None), None).await?;
    assert_eq!(reply.code, 202, "token-less HEARTBEAT: {}", reply.body);
    // mezzo's own executor still got and sends a token, and tokens that are sent are checked.
    let token = executor_token(&cid)?;
    let reply = post_executor(&cluster, call_json(&fid, "plain", "", None), Some(format!("Bearer {token}"))).await?;
    assert_eq!(reply.code, 202, "{}", reply.body);
    let reply = post_executor(&cluster, call_json(&fid, "plain", "", None), Some(format!("Bearer {token}x"))).await?;
    assert_eq!(reply.code, 401, "a bad token with the flag off: {}", reply.body);
    let reply = post_executor(&cluster, call_json(&fid, "other", "", None), Some(format!("Bearer {token}"))).await?;
    assert_eq!(reply.code, 403, "another executor's token with the flag off: {}", reply.body);
    kill_and_finish(cluster, sched, &["plain"]).await
}

fn credentials_file(dir: &std::path::Path) -> Result<String> {
    let path = dir.join("http_credentials.json");
    std::fs::write(&path, r#"{"credentials": [{"principal": "ops", "secret": "s3cret"}, {"principal": "viewer", "secret": "look"}]}"#)?;
    Ok(format!("--http_credentials=file://{}", path.display()))
}

async fn get(url: &str, basic: Option<(&str, &str)>) -> Result<(u16, Option<String>)> {
    let mut req = reqwest::Client::new().get(url);
    if let Some((user, pass)) = basic {
        req = req.basic_auth(user, Some(pass));
    }
    let resp = req.send().await?;
    Ok((resp.status().as_u16(), resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).map(str::to_string)))
}

async fn operator_call(cluster: &Cluster, kind: &str, basic: Option<(&str, &str)>) -> Result<u16> {
    let mut req = reqwest::Client::new()
        .post(format!("http://{}/api/v1", cluster.agent))
        .header("Content-Type", "application/json")
        .body(serde_json::json!({ "type": kind }).to_string());
    if let Some((user, pass)) = basic {
        req = req.basic_auth(user, Some(pass));
    }
    Ok(req.send().await?.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_endpoints_need_basic_credentials_when_enabled() -> Result<()> {
    require_root!();
    let dir = tempfile::tempdir()?;
    let creds = credentials_file(dir.path())?;
    let mut cluster = Cluster::start_with("rust", &["--authenticate_http_readonly", "--authenticate_http_readwrite", &creds]).await?;
    let base = format!("http://{}", cluster.agent);
    for path in ["/state", "/slave(1)/state", "/containers", "/monitor/statistics", "/monitor/statistics.json", "/files/read?path=/&offset=0"] {
        let (code, challenge) = get(&format!("{base}{path}"), None).await?;
        assert_eq!(code, 401, "{path} without credentials");
        assert_eq!(challenge.as_deref(), Some("Basic realm=\"mezzo\""), "{path}");
        let (code, _) = get(&format!("{base}{path}"), Some(("ops", "wrong"))).await?;
        assert_eq!(code, 401, "{path} with a wrong secret");
        let (code, _) = get(&format!("{base}{path}"), Some(("viewer", "look"))).await?;
        assert_ne!(code, 401, "{path} with credentials");
    }
    for path in ["/state", "/containers", "/monitor/statistics"] {
        assert_eq!(get(&format!("{base}{path}"), Some(("ops", "s3cret"))).await?.0, 200, "{path}");
    }
    // /health and /version stay open.
    assert_eq!(get(&format!("{base}/health"), None).await?.0, 200);
    assert_eq!(get(&format!("{base}/version"), None).await?.0, 200);
    // The operator API: GET_* calls read, other calls write.
    assert_eq!(operator_call(&cluster, "GET_STATE", None).await?, 401);
    assert_eq!(operator_call(&cluster, "GET_STATE", Some(("ops", "s3cret"))).await?, 200);
    assert_eq!(operator_call(&cluster, "KILL_NESTED_CONTAINER", None).await?, 401);
    assert_ne!(operator_call(&cluster, "KILL_NESTED_CONTAINER", Some(("ops", "s3cret"))).await?, 401);
    cluster.stop();
    assert_clean(&cluster);

    // Read-write only: reading stays open, changing needs credentials.
    let mut cluster = Cluster::start_with("rust", &["--authenticate_http_readwrite", &creds]).await?;
    assert_eq!(get(&format!("http://{}/state", cluster.agent), None).await?.0, 200);
    assert_eq!(operator_call(&cluster, "GET_STATE", None).await?, 200);
    assert_eq!(operator_call(&cluster, "KILL_NESTED_CONTAINER", None).await?, 401);
    cluster.stop();
    assert_clean(&cluster);
    Ok(())
}
