//! The master operator API end to end, with a real master and agent: an
//! operator's SUBSCRIBE stream sees a framework come, its task go through
//! every state the scheduler sees, in the same order, and the framework go;
//! MARK_AGENT_GONE ends a running task and its container; the agent's and
//! the master's metrics in Prometheus's text format while a task runs.

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use mezzo_proto::codec::ContentType;
use mezzo_proto::mesos::v1::master::{call, event, response, Call, Event, Response};
use mezzo_proto::mesos::v1::{AgentId, FrameworkInfo, TaskState};
use mezzo_tests::{assert_clean, command_task, states, Cluster, Kind, Scheduler};
use std::time::Duration;
use tokio::sync::mpsc;

const TIMEOUT: Duration = Duration::from_secs(90);

fn root_or_skip() -> bool {
    if !mezzo_testkit::is_root() {
        mezzo_testkit::skip("needs root (containers and cgroups)");
        return false;
    }
    true
}

fn simple(kind: call::Type) -> Call {
    Call { r#type: Some(kind as i32), ..Default::default() }
}

/// An operator's SUBSCRIBE stream, read in the background.
struct Operator {
    events: mpsc::UnboundedReceiver<Event>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Operator {
    async fn subscribe(master: &str, ct: ContentType) -> Result<Operator> {
        let resp = reqwest::Client::new()
            .post(format!("http://{master}/api/v1"))
            .header("Content-Type", ct.mime())
            .header("Accept", ct.mime())
            .body(mezzo_proto::codec::encode(&simple(call::Type::Subscribe), ct))
            .send()
            .await?;
        if resp.status() != 200 {
            bail!("SUBSCRIBE: {} {}", resp.status(), resp.text().await.unwrap_or_default());
        }
        let (tx, events) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            let mut body = resp.bytes_stream();
            let mut decoder = mezzo_proto::recordio::Decoder::new(64 << 20);
            while let Some(Ok(chunk)) = body.next().await {
                decoder.feed(&chunk);
                while let Ok(Some(record)) = decoder.next_record() {
                    match mezzo_proto::codec::decode::<Event>(&record, ct) {
                        Ok(ev) => {
                            if tx.send(ev).is_err() {
                                return;
                            }
                        }
                        Err(e) => eprintln!("operator: undecodable event: {e}"),
                    }
                }
            }
        });
        Ok(Operator { events, reader })
    }

    /// The next event that is not a HEARTBEAT.
    async fn next(&mut self) -> Result<Event> {
        loop {
            let ev = tokio::time::timeout(TIMEOUT, self.events.recv())
                .await
                .context("timed out waiting for an operator event")?
                .context("operator stream closed")?;
            if ev.r#type() != event::Type::Heartbeat {
                return Ok(ev);
            }
        }
    }
}

async fn master_call(master: &str, call: &Call, ct: ContentType) -> Result<(u16, Option<Response>)> {
    let resp = reqwest::Client::new()
        .post(format!("http://{master}/api/v1"))
        .header("Content-Type", ct.mime())
        .header("Accept", ct.mime())
        .body(mezzo_proto::codec::encode(call, ct))
        .send()
        .await?;
    let status = resp.status().as_u16();
    let body = resp.bytes().await?;
    let reply = if status == 200 && !body.is_empty() { Some(mezzo_proto::codec::decode(&body, ct)?) } else { None };
    Ok((status, reply))
}

/// The value of the Prometheus sample `name` in `text`.
fn prometheus_value(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.parse().ok()).flatten()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_sees_a_framework_run_a_task_in_order() -> Result<()> {
    if !root_or_skip() {
        return Ok(());
    }
    let mut cluster = Cluster::start("rust").await?;
    let mut ops = Operator::subscribe(&cluster.master, ContentType::Json).await?;
    let first = ops.next().await?;
    assert_eq!(first.r#type(), event::Type::Subscribed);
    let state = first.subscribed.context("subscribed")?.get_state.context("get_state")?;
    let agents = state.get_agents.context("get_agents")?.agents;
    assert_eq!(agents.len(), 1, "the registered agent is in the state");
    let agent_id = agents[0].agent_info.id.clone().context("agent id")?;

    let mut sched = Scheduler::subscribe(&cluster.master, "watched").await?;
    let e = ops.next().await?;
    assert_eq!(e.r#type(), event::Type::FrameworkAdded);
    assert_eq!(e.framework_added.context("framework_added")?.framework.framework_info.id, Some(sched.framework_id.clone()));

    let offer = sched.next_offer(TIMEOUT).await?;
    let task = command_task(&offer, "watched-task", "sleep 1000", Kind::MesosNoImage, "", 32.0);
    sched.launch(&offer, task).await?;
    // Every update up to RUNNING (STARTING too).
    let mut seen = Vec::new();
    while seen.last().map(|s: &mezzo_proto::mesos::v1::TaskStatus| s.state()) != Some(TaskState::TaskRunning) {
        let update = sched.next_update(TIMEOUT).await.map_err(|e| e.context(cluster.agent_log()))?;
        if update.state().is_terminal() {
            bail!("the task ended before it ran: {update:?}\n{}", cluster.agent_log());
        }
        seen.push(update);
    }

    // While it runs: the master's GET_TASKS (protobuf) and both metrics in Prometheus's format.
    let (code, reply) = master_call(&cluster.master, &simple(call::Type::GetTasks), ContentType::Protobuf).await?;
    assert_eq!(code, 200);
    let reply = reply.context("GET_TASKS answer")?;
    assert_eq!(reply.r#type(), response::Type::GetTasks);
    let tasks = reply.get_tasks.context("get_tasks")?.tasks;
    assert_eq!(tasks.len(), 1);
    assert_eq!((tasks[0].task_id.value.as_str(), tasks[0].state()), ("watched-task", TaskState::TaskRunning));
    let text = reqwest::get(format!("http://{}/metrics", cluster.agent)).await?.text().await?;
    assert_eq!(prometheus_value(&text, "mesos_slave_tasks_running"), Some(1.0), "{text}");
    assert_eq!(prometheus_value(&text, "mesos_slave_registered"), Some(1.0), "{text}");
    assert_eq!(prometheus_value(&text, "mesos_slave_mem_total"), Some(2048.0), "{text}");
    assert!(text.contains("# TYPE mesos_slave_tasks_running gauge\n"), "{text}");
    let snapshot: serde_json::Value = serde_json::from_slice(&reqwest::get(format!("http://{}/metrics/snapshot", cluster.agent)).await?.bytes().await?)?;
    assert_eq!(snapshot["slave/tasks_running"], 1.0, "{snapshot}");
    let (code, body) = cluster.agent_call_json(&serde_json::json!({"type": "GET_METRICS", "get_metrics": {}})).await?;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body)?;
    let metrics = v["get_metrics"]["metrics"].as_array().context("the agent's GET_METRICS")?;
    assert!(metrics.iter().any(|m| m["name"] == "slave/tasks_running" && m["value"] == 1.0), "{body}");
    let text = reqwest::get(format!("http://{}/metrics", cluster.master)).await?.text().await?;
    assert_eq!(prometheus_value(&text, "mesos_master_tasks_running"), Some(1.0), "{text}");
    assert_eq!(prometheus_value(&text, "mesos_master_operator_event_stream_subscribers"), Some(1.0), "{text}");

    sched.kill("watched-task", None).await?;
    seen.extend(sched.updates_until_terminal("watched-task", TIMEOUT).await?);
    assert_eq!(seen.last().map(|s| s.state()), Some(TaskState::TaskKilled), "{:?}", states(&seen));
    sched.teardown().await?;

    // The operator saw the task added, then one TASK_UPDATED per new state,
    // in the order the scheduler saw them, then the framework removed.
    let e = ops.next().await?;
    assert_eq!(e.r#type(), event::Type::TaskAdded);
    let added = e.task_added.context("task_added")?.task;
    assert_eq!((added.task_id.value.as_str(), added.state()), ("watched-task", TaskState::TaskStaging));
    assert_eq!(added.agent_id, agent_id);
    let mut expected: Vec<TaskState> = Vec::new();
    for s in &seen {
        if expected.last() != Some(&s.state()) {
            expected.push(s.state());
        }
    }
    let mut updated = Vec::new();
    while updated.len() < expected.len() {
        let e = ops.next().await?;
        assert_eq!(e.r#type(), event::Type::TaskUpdated, "{e:?}");
        let u = e.task_updated.context("task_updated")?;
        assert_eq!(u.framework_id, sched.framework_id);
        assert_eq!(u.status.task_id.value, "watched-task");
        assert_eq!(u.state(), u.status.state());
        updated.push(u.state());
    }
    assert_eq!(updated, expected, "operator {updated:?} vs scheduler {:?}", states(&seen));
    let e = ops.next().await?;
    assert_eq!(e.r#type(), event::Type::FrameworkRemoved, "{e:?}");
    assert_eq!(e.framework_removed.context("framework_removed")?.framework_info.id, Some(sched.framework_id.clone()));
    cluster.stop();
    assert_clean(&cluster);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mark_agent_gone_ends_a_running_task_and_its_container() -> Result<()> {
    if !root_or_skip() {
        return Ok(());
    }
    let mut cluster = Cluster::start("rust").await?;
    let info = FrameworkInfo {
        user: "root".into(),
        name: "gone".into(),
        capabilities: vec![mezzo_proto::mesos::v1::framework_info::Capability {
            r#type: Some(mezzo_proto::mesos::v1::framework_info::capability::Type::PartitionAware as i32),
        }],
        ..Default::default()
    };
    let mut sched = Scheduler::subscribe_with(&cluster.master, info).await?;
    let offer = sched.next_offer(TIMEOUT).await?;
    let task = command_task(&offer, "doomed", "sleep 1000", Kind::MesosNoImage, "", 32.0);
    sched.launch_and_wait_running(&offer, task, TIMEOUT).await.map_err(|e| e.context(cluster.agent_log()))?;
    let mut ops = Operator::subscribe(&cluster.master, ContentType::Protobuf).await?;
    assert_eq!(ops.next().await?.r#type(), event::Type::Subscribed);

    let mut gone = simple(call::Type::MarkAgentGone);
    gone.mark_agent_gone = Some(call::MarkAgentGone { agent_id: AgentId { value: offer.agent_id.value.clone() } });
    let (code, _) = master_call(&cluster.master, &gone, ContentType::Json).await?;
    assert_eq!(code, 200);
    let update = sched.next_update(TIMEOUT).await?;
    assert_eq!(update.state(), TaskState::TaskGoneByOperator);
    let e = ops.next().await?;
    assert_eq!((e.r#type(), e.task_updated.map(|u| u.state())), (event::Type::TaskUpdated, Some(TaskState::TaskGoneByOperator)));
    let e = ops.next().await?;
    assert_eq!(e.agent_removed.map(|r| r.agent_id), Some(offer.agent_id.clone()));

    // The agent is told to shut down (Mesos's ShutdownMessage): it kills the
    // task, destroys its container and exits.
    let pid = cluster.agent_pid().context("agent pid")? as i32;
    mezzo_tests::wait_until("the gone agent shuts down", TIMEOUT, || !mezzo_tests::alive(pid)).await.with_context(|| cluster.agent_log())?;
    assert!(cluster.agent_log().contains("the master asks this agent to shut down"), "{}", cluster.agent_log());
    // Gone for good: the master no longer lists it.
    let (_, reply) = master_call(&cluster.master, &simple(call::Type::GetAgents), ContentType::Json).await?;
    assert!(reply.context("GET_AGENTS")?.get_agents.context("get_agents")?.agents.is_empty());
    cluster.stop();
    assert_clean(&cluster);
    Ok(())
}
