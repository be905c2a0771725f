//! The agent protocol as an attacker on the host sees it: forged status
//! updates, a hijacked agent id, agents without credentials; and as a
//! scheduler sees it when a launch cannot reach its agent or an agent
//! re-registers with a report of its tasks.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use mezzo_master::credentials::{Credential, Credentials};
use mezzo_master::MasterConfig;
use mezzo_proto::codec::ContentType;
use mezzo_proto::mesos::v1::framework_info::{capability, Capability};
use mezzo_proto::mesos::v1::scheduler::event;
use mezzo_proto::mesos::v1::{task_status, AgentId, FrameworkId, TaskId, TaskState, TaskStatus};
use mezzo_proto::mezzo::agent::{master_to_agent, ReportedTask};

fn status(task_id: &str, state: TaskState) -> TaskStatus {
    TaskStatus {
        task_id: TaskId { value: task_id.into() },
        state: state as i32,
        source: Some(task_status::Source::Executor as i32),
        uuid: Some(mezzo_proto::new_uuid()),
        ..Default::default()
    }
}

fn task_json<'a>(state: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    state["frameworks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["tasks"].as_array().unwrap().iter().chain(f["completed_tasks"].as_array().into_iter().flatten()))
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("task {id} in /state: {state}"))
}

/// Launches `id` (0.5 cpus) on `agent` and has the agent report it RUNNING.
async fn running_task(s: &mut Scheduler, agent: &mut FakeAgent, id: &str) {
    let offers = s.next_offers().await;
    let t = task(id, &agent.agent_id, vec![scalar("cpus", 0.5), scalar("mem", 128.0)]);
    assert_eq!(s.call(accept_call(&[&offers[0].id], vec![t])).await, 202);
    assert_eq!(agent.next_message().await.r#type(), master_to_agent::Type::RunTask);
    assert_eq!(agent.send_status(&s.framework_id, status(id, TaskState::TaskRunning)).await, 202);
    let (got, _) = s.next_update().await;
    assert_eq!(got.state(), TaskState::TaskRunning);
}

#[tokio::test]
async fn forged_status_updates_are_refused_and_the_task_keeps_its_state_and_resources() {
    let master = TestMaster::start().await;
    let mut s = Scheduler::subscribe(&master, framework_info("victim"), ContentType::Json).await;
    let mut agent = FakeAgent::start(&master).await;
    running_task(&mut s, &mut agent, "t1").await;

    // Anyone on the host: no token, a made-up token.
    let finished = || status("t1", TaskState::TaskFinished);
    assert_eq!(agent.send_status_with(&s.framework_id, finished(), None).await, 401);
    assert_eq!(agent.send_status_with(&s.framework_id, finished(), Some("0123456789abcdef")).await, 401);
    // Another registered agent may not update a task that runs elsewhere.
    let other = FakeAgent::start(&master).await;
    assert_eq!(other.send_status(&s.framework_id, finished()).await, 403);

    let state = master.state().await;
    assert_eq!(task_json(&state, "t1")["state"], "TASK_RUNNING");
    let slave = state["slaves"].as_array().unwrap().iter().find(|a| a["id"] == agent.agent_id.as_str()).unwrap();
    assert_eq!(slave["used_resources"]["cpus"], 0.5, "the task keeps its resources: {slave}");
    let quiet = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            let e = s.next_non_heartbeat().await.unwrap();
            if e.kind() == event::Type::Update {
                return e;
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "the scheduler heard of no forged update");
}

#[tokio::test]
async fn a_hijack_of_an_agent_id_is_refused_and_the_real_agent_keeps_its_tasks() {
    let master = TestMaster::start().await;
    let mut s = Scheduler::subscribe(&master, framework_info("hijack"), ContentType::Protobuf).await;
    let mut agent = FakeAgent::start(&master).await;
    let mut attacker = FakeAgent::serve(&master).await;
    // The attacker knows the id (it is in /state) but not the agent's secret.
    let (code, _) = attacker.try_register(attacker.request(Some(&agent.agent_id), agent_resources())).await;
    assert_eq!(code, 403);
    // Nor can it register without any secret.
    let mut bare = attacker.request(Some(&agent.agent_id), agent_resources());
    bare.agent_secret = None;
    assert_eq!(attacker.try_register(bare).await.0, 401);

    let state = master.state().await;
    assert_eq!(state["slaves"][0]["pid"], format!("slave(1)@{}", agent.endpoint));
    // The next launch goes to the real agent, not to the attacker.
    let offers = s.next_offers().await;
    let t = task("after", &agent.agent_id, vec![scalar("cpus", 0.5)]);
    assert_eq!(s.call(accept_call(&[&offers[0].id], vec![t])).await, 202);
    let msg = agent.next_message().await;
    assert_eq!(msg.run_task.unwrap().task.task_id.value, "after");
    assert!(attacker.silent_for(Duration::from_millis(300)).await);
    // The real agent, with its secret, re-registers from anywhere.
    let reg = agent.register(Some(&agent.agent_id.clone()), agent_resources()).await;
    assert_eq!(reg.agent_id.value, agent.agent_id);
}

fn secured_master_config() -> MasterConfig {
    MasterConfig {
        credentials: Some(Arc::new(Credentials::from_list(vec![Credential {
            principal: "agent-principal".into(),
            secret: "agent-secret".into(),
        }]))),
        authenticate_agents: true,
        ..MasterConfig::default()
    }
}

#[tokio::test]
async fn with_authenticate_agents_only_agents_with_a_credential_register() {
    let master = TestMaster::start_with(secured_master_config()).await;
    let agent = FakeAgent::serve(&master).await;
    let (code, _) = agent.try_register(agent.request(None, agent_resources())).await;
    assert_eq!(code, 401, "no credential");
    let mut wrong = agent.request(None, agent_resources());
    wrong.principal = Some("agent-principal".into());
    wrong.secret = Some("guess".into());
    assert_eq!(agent.try_register(wrong).await.0, 403, "wrong secret");
    let mut unknown = agent.request(None, agent_resources());
    unknown.principal = Some("nobody".into());
    unknown.secret = Some("agent-secret".into());
    assert_eq!(agent.try_register(unknown).await.0, 403, "unknown principal");
    assert_eq!(master.state().await["slaves"].as_array().unwrap().len(), 0);
    let mut right = agent.request(None, agent_resources());
    right.principal = Some("agent-principal".into());
    right.secret = Some("agent-secret".into());
    let (code, reg) = agent.try_register(right).await;
    assert_eq!(code, 200);
    assert!(!reg.unwrap().agent_id.value.is_empty());
    assert_eq!(master.state().await["slaves"].as_array().unwrap().len(), 1);
}

/// A launch the agent never receives ends TASK_LOST (TASK_DROPPED for a
/// partition-aware framework) with REASON_AGENT_DISCONNECTED, and the
/// task's resources are offered again.
async fn undeliverable_launch(partition_aware: bool, expected: TaskState) {
    let master = TestMaster::start_with(MasterConfig {
        agent_request_timeout: Duration::from_millis(500),
        agent_send_attempts: 2,
        ..MasterConfig::default()
    })
    .await;
    let mut info = framework_info("unreachable");
    if partition_aware {
        info.capabilities.push(Capability { r#type: Some(capability::Type::PartitionAware as i32) });
    }
    let mut s = Scheduler::subscribe(&master, info, ContentType::Json).await;
    let agent = FakeAgent::start(&master).await;
    let offers = s.next_offers().await;
    // The agent goes away, still registered (its pings have not timed out).
    agent.stop_serving();
    let t = task("doomed", &agent.agent_id, vec![scalar("cpus", 2.0), scalar("mem", 1024.0)]);
    assert_eq!(s.call(accept_call(&[&offers[0].id], vec![t])).await, 202);
    let (update, _) = s.next_update().await;
    assert_eq!(update.task_id.value, "doomed");
    assert_eq!(update.state(), expected);
    assert_eq!(update.reason(), task_status::Reason::AgentDisconnected);
    assert_eq!(update.message(), "Agent disconnected");
    assert_eq!(update.source(), task_status::Source::Master);
    let state = master.state().await;
    assert_eq!(task_json(&state, "doomed")["state"], format!("{expected:?}").replace("Task", "TASK_").to_uppercase());
    // The resources come back in the next offer.
    let offers = s.next_offers().await;
    assert_eq!(scalar_of(&offers[0].resources, "cpus"), 2.0);
}

#[tokio::test]
async fn an_undeliverable_launch_ends_task_lost_and_its_resources_come_back() {
    undeliverable_launch(false, TaskState::TaskLost).await;
}

#[tokio::test]
async fn an_undeliverable_launch_ends_task_dropped_for_partition_aware_frameworks() {
    undeliverable_launch(true, TaskState::TaskDropped).await;
}

fn reported(fid: &str, t: mezzo_proto::mesos::v1::TaskInfo, state: TaskState) -> ReportedTask {
    ReportedTask { framework_id: FrameworkId { value: fid.into() }, task: t, state: Some(state as i32), ..Default::default() }
}

#[tokio::test]
async fn a_reregistering_agent_reports_its_tasks_and_the_master_reconciles() {
    let master = TestMaster::start().await;
    let mut s = Scheduler::subscribe(&master, framework_info("reconcile"), ContentType::Json).await;
    let mut agent = FakeAgent::start(&master).await;
    let offers = s.next_offers().await;
    let t1 = task("kept", &agent.agent_id, vec![scalar("cpus", 0.5)]);
    let t2 = task("vanished", &agent.agent_id, vec![scalar("cpus", 0.5)]);
    assert_eq!(s.call(accept_call(&[&offers[0].id], vec![t1.clone(), t2])).await, 202);
    for _ in 0..2 {
        assert_eq!(agent.next_message().await.r#type(), master_to_agent::Type::RunTask);
    }
    // Let the master record both deliveries.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The agent re-registers running "kept", a task the master never heard
    // of, and a task of a framework the master does not know.
    let stray = task("stray", &agent.agent_id, vec![scalar("cpus", 0.25)]);
    let foreign = task("foreign", &agent.agent_id, vec![scalar("cpus", 0.25)]);
    let mut req = agent.request(Some(&agent.agent_id), agent_resources());
    req.tasks = vec![
        reported(&s.framework_id, t1, TaskState::TaskRunning),
        reported(&s.framework_id, stray, TaskState::TaskRunning),
        reported("other-framework", foreign, TaskState::TaskRunning),
    ];
    let mut other = framework_info("other");
    other.id = Some(FrameworkId { value: "other-framework".into() });
    req.frameworks = vec![other];
    assert_eq!(agent.try_register(req).await.0, 200);

    let (update, _) = s.next_update().await;
    assert_eq!(update.task_id.value, "vanished");
    assert_eq!(update.state(), TaskState::TaskLost);
    assert_eq!(update.reason(), task_status::Reason::Reconciliation);
    assert_eq!(update.message(), "Reconciliation: task unknown to the agent");

    let state = master.state().await;
    assert_eq!(task_json(&state, "kept")["state"], "TASK_RUNNING");
    assert_eq!(task_json(&state, "stray")["state"], "TASK_RUNNING");
    assert_eq!(task_json(&state, "foreign")["state"], "TASK_RUNNING");
    assert_eq!(task_json(&state, "vanished")["state"], "TASK_LOST");
    assert_eq!(state["slaves"][0]["used_resources"]["cpus"], 1.0, "kept + stray + foreign: {}", state["slaves"][0]);

    // A restarted master (which forgot everything) takes the agent back
    // under its id, with its tasks.
    drop(master);
    let master = TestMaster::start().await;
    let mut moved = FakeAgent::serve(&master).await;
    moved.secret = agent.secret.clone();
    let mut req = moved.request(Some(&agent.agent_id), agent_resources());
    req.tasks = vec![reported("other-framework", task("foreign", &agent.agent_id, vec![scalar("cpus", 0.25)]), TaskState::TaskRunning)];
    let (code, reg) = moved.try_register(req).await;
    assert_eq!(code, 200);
    assert_eq!(reg.unwrap().agent_id, AgentId { value: agent.agent_id.clone() });
    let state = master.state().await;
    assert_eq!(task_json(&state, "foreign")["state"], "TASK_RUNNING");
}

#[tokio::test]
async fn updates_of_an_unknown_framework_are_answered_gone() {
    let master = TestMaster::start().await;
    let agent = FakeAgent::start(&master).await;
    assert_eq!(agent.send_status("never-registered", status("x", TaskState::TaskRunning)).await, 410);
    // A framework that was torn down is gone too.
    let s = Scheduler::subscribe(&master, framework_info("short-lived"), ContentType::Json).await;
    let teardown = mezzo_proto::mesos::v1::scheduler::Call {
        r#type: Some(mezzo_proto::mesos::v1::scheduler::call::Type::Teardown as i32),
        ..Default::default()
    };
    assert!(s.call(teardown).await.is_success());
    assert_eq!(agent.send_status(&s.framework_id, status("y", TaskState::TaskFinished)).await, 410);
    let metrics: serde_json::Value =
        serde_json::from_str(&reqwest::get(master.url("/metrics/snapshot")).await.unwrap().text().await.unwrap()).unwrap();
    assert_eq!(metrics["master/invalid_status_updates"], 2.0);
}
