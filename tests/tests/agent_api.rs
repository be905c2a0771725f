//! The agent's operator surface as an operator sees it: usage at
//! `/monitor/statistics`, the v1 operator API (`GET_CONTAINERS` in JSON and
//! protobuf, malformed calls), and start-up errors of `--isolation`.

use anyhow::{Context, Result};
use mezzo_proto::codec::ContentType;
use mezzo_proto::mesos::v1::agent::{call, response, Call, Response};
use mezzo_proto::mesos::v1::TaskState;
use mezzo_tests::{assert_clean, bin_dir, command_task, container_id_of, states, Cluster, Kind, Scheduler};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(90);
const MIB: u64 = 1 << 20;

/// A cluster with one `sleep` task running; returns its container id.
async fn with_running_task(id: &str, mem: f64) -> Result<(Cluster, Scheduler, String)> {
    let cluster = Cluster::start("rust").await?;
    let mut sched = Scheduler::subscribe(&cluster.master, "agent-api").await?;
    let offer = sched.next_offer(TIMEOUT).await?;
    let task = command_task(&offer, id, "sleep 1000", Kind::MesosNoImage, "", mem);
    let running = sched.launch_and_wait_running(&offer, task, TIMEOUT).await.map_err(|e| e.context(cluster.agent_log()))?;
    let cid = container_id_of(&running).context("TASK_RUNNING carries the container id")?;
    Ok((cluster, sched, cid))
}

/// Kills the task, tears the framework down and checks nothing is left.
async fn finish(mut cluster: Cluster, mut sched: Scheduler, id: &str) -> Result<()> {
    sched.kill(id, None).await?;
    let updates = sched.updates_until_terminal(id, TIMEOUT).await?;
    assert_eq!(updates.last().unwrap().state(), TaskState::TaskKilled, "updates: {:?}", states(&updates));
    sched.teardown().await.ok();
    cluster.stop();
    assert_clean(&cluster);
    Ok(())
}

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_statistics_lists_a_running_task_with_plausible_numbers() -> Result<()> {
    let (cluster, sched, _cid) = with_running_task("stats-sleeper", 64.0).await?;
    for path in ["/monitor/statistics", "/monitor/statistics.json"] {
        let body: serde_json::Value = serde_json::from_slice(&reqwest::get(format!("http://{}{path}", cluster.agent)).await?.bytes().await?)?;
        let entries = body.as_array().context("statistics is a JSON array")?;
        let entry = entries
            .iter()
            .find(|e| e["executor_id"] == "stats-sleeper")
            .with_context(|| format!("{path} lists the task's executor: {body}"))?;
        assert_eq!(entry["framework_id"], sched.framework_id.value.as_str());
        assert_eq!(entry["source"], "stats-sleeper");
        assert!(entry["executor_name"].as_str().unwrap_or("").contains("stats-sleeper"), "{entry}");
        let s = &entry["statistics"];
        let ts = s["timestamp"].as_f64().context("timestamp")?;
        assert!((now() - ts).abs() < 60.0, "timestamp {ts} is not now");
        assert_eq!(s["mem_limit_bytes"].as_u64(), Some(64 * MIB), "{s}");
        let total = s["mem_total_bytes"].as_u64().context("mem_total_bytes")?;
        assert!(total > 0 && total < 64 * MIB, "a sleeping shell uses some memory, below its limit: {total}");
        let user = s["cpus_user_time_secs"].as_f64().context("cpus_user_time_secs")?;
        let system = s["cpus_system_time_secs"].as_f64().context("cpus_system_time_secs")?;
        assert!((0.0..60.0).contains(&user) && (0.0..60.0).contains(&system), "{s}");
        let procs = s["processes"].as_u64().context("processes")?;
        assert!((1..10).contains(&procs), "processes: {procs}");
    }
    finish(cluster, sched, "stats-sleeper").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_containers_in_json_and_protobuf() -> Result<()> {
    let (cluster, sched, cid) = with_running_task("containers-sleeper", 48.0).await?;

    // JSON, as Mesos's own clients send it.
    let (code, body) = cluster.agent_call_json(&serde_json::json!({"type": "GET_CONTAINERS"})).await?;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(v["type"], "GET_CONTAINERS");
    let containers = v["get_containers"]["containers"].as_array().context("containers")?;
    let c = containers.iter().find(|c| c["container_id"]["value"] == cid.as_str()).with_context(|| format!("{v}"))?;
    assert_eq!(c["executor_id"]["value"], "containers-sleeper");
    assert_eq!(c["framework_id"]["value"], sched.framework_id.value.as_str());
    assert!(c["executor_name"].as_str().unwrap_or("").contains("containers-sleeper"));
    assert_eq!(c["container_status"]["container_id"]["value"], cid.as_str());
    assert!(c["container_status"]["executor_pid"].as_u64().is_some_and(|p| p > 1), "{c}");
    assert_eq!(c["resource_statistics"]["mem_limit_bytes"].as_u64(), Some(48 * MIB), "{c}");

    // Protobuf both ways.
    let call = Call { r#type: Some(call::Type::GetContainers as i32), ..Default::default() };
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1", cluster.agent))
        .header("Content-Type", "application/x-protobuf")
        .header("Accept", "application/x-protobuf")
        .body(mezzo_proto::codec::encode(&call, ContentType::Protobuf))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-protobuf");
    let reply: Response = mezzo_proto::from_protobuf(&resp.bytes().await?)?;
    assert_eq!(reply.r#type(), response::Type::GetContainers);
    let containers = reply.get_containers.context("get_containers")?.containers;
    let c = containers.iter().find(|c| c.container_id.value == cid).context("the task's container")?;
    assert_eq!(c.executor_id.as_ref().map(|e| e.value.as_str()), Some("containers-sleeper"));
    let stats = c.resource_statistics.as_ref().context("resource_statistics")?;
    assert!(stats.mem_total_bytes.unwrap_or(0) > 0, "{stats:?}");
    assert!((now() - stats.timestamp).abs() < 60.0);

    // The other read-only calls answer too.
    for (ty, field) in [("GET_HEALTH", "get_health"), ("GET_VERSION", "get_version"), ("GET_STATE", "get_state"), ("GET_AGENT", "get_agent")] {
        let (code, body) = cluster.agent_call_json(&serde_json::json!({"type": ty})).await?;
        assert_eq!(code, 200, "{ty}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body)?;
        assert!(v.get(field).is_some(), "{ty}: {body}");
    }
    let (_, body) = cluster.agent_call_json(&serde_json::json!({"type": "GET_STATE"})).await?;
    let v: serde_json::Value = serde_json::from_str(&body)?;
    let launched = v["get_state"]["get_tasks"]["launched_tasks"].as_array().context("launched_tasks")?;
    assert!(launched.iter().any(|t| t["task_id"]["value"] == "containers-sleeper" && t["state"] == "TASK_RUNNING"), "{body}");
    finish(cluster, sched, "containers-sleeper").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_operator_calls_get_400() -> Result<()> {
    let mut cluster = Cluster::start("rust").await?;
    let url = format!("http://{}/api/v1", cluster.agent);
    let http = reqwest::Client::new();
    let post = |body: &'static str, ct: &'static str| http.post(&url).header("Content-Type", ct).body(body).send();

    let r = post("{not json", "application/json").await?;
    assert_eq!(r.status(), 400);
    assert!(r.text().await?.contains("Failed to parse"), "the message says why");
    let r = post("{}", "application/json").await?;
    assert_eq!(r.status(), 400);
    assert!(r.text().await?.contains("'type'"));
    let r = post(r#"{"type": "NO_SUCH_CALL"}"#, "application/json").await?;
    assert_eq!(r.status(), 400);
    let r = post("\u{ff}\u{ff}\u{ff}", "application/x-protobuf").await?;
    assert_eq!(r.status(), 400);
    let r = http.post(&url).body(r#"{"type":"GET_HEALTH"}"#).send().await?;
    assert_eq!(r.status(), 400, "no Content-Type");
    let r = post(r#"{"type":"GET_HEALTH"}"#, "text/plain").await?;
    assert_eq!(r.status(), 415);
    let r = http.get(&url).send().await?;
    assert_eq!(r.status(), 405);
    let r = http.post(&url).header("Content-Type", "application/json").header("Accept", "text/html").body(r#"{"type":"GET_HEALTH"}"#).send().await?;
    assert_eq!(r.status(), 406);
    // A well-formed call still works after all that.
    let (code, body) = cluster.agent_call_json(&serde_json::json!({"type": "GET_HEALTH"})).await?;
    assert_eq!(code, 200);
    assert!(body.contains("\"healthy\":true"), "{body}");
    cluster.stop();
    assert_clean(&cluster);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_isolator_is_a_start_up_error_naming_it() -> Result<()> {
    let work = tempfile::Builder::new().prefix("mezzo-isolation-").tempdir()?;
    let out = std::process::Command::new(bin_dir().join("mezzo-agent"))
        .args([
            "--master=127.0.0.1:1".to_string(),
            "--ip=127.0.0.1".into(),
            format!("--port={}", mezzo_tests::free_port()),
            format!("--work_dir={}", work.path().display()),
            "--containerizers=rust".into(),
            format!("--cgroups_root=mezzo-isolation-{}", std::process::id()),
            "--isolation=cgroups/cpu,cgroups/no_such_thing".into(),
        ])
        .stdin(std::process::Stdio::null())
        .output()?;
    assert!(!out.status.success(), "the agent must not start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cgroups/no_such_thing") && stderr.contains("--isolation"), "stderr names the isolator and the flag: {stderr}");
    // A known set starts (and is stopped again at once).
    let t = Instant::now();
    let mut cluster = Cluster::start_with("rust", &["--isolation=cgroups/cpu,cgroups/mem,namespaces/pid"]).await?;
    assert!(t.elapsed() < TIMEOUT);
    cluster.stop();
    assert_clean(&cluster);
    Ok(())
}
