//! The master operator API (`POST /api/v1`, Mesos's `mesos.v1.master`) on an
//! in-process master with a fake agent and a real scheduler stream: every
//! call in JSON and in protobuf with the content of its answer, SUBSCRIBE's
//! events in order, TEARDOWN and MARK_AGENT_GONE, refusals (400, 405, 406,
//! 415, 501), authentication, and the metrics endpoints (`/metrics/snapshot`
//! with Mesos's names, `/metrics` in Prometheus's text format, parsed line
//! by line), `/state-summary` and `/master/redirect`.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use mezzo_master::credentials::{Credential, Credentials};
use mezzo_master::MasterConfig;
use mezzo_proto::codec::{self, ContentType};
use mezzo_proto::mesos::v1::framework_info::{capability, Capability};
use mezzo_proto::mesos::v1::master::{call, event, response, Call, Event, Response};
use mezzo_proto::mesos::v1::{
    task_status, AgentId, CommandInfo, ExecutorId, ExecutorInfo, FrameworkId, TaskId, TaskInfo, TaskState, TaskStatus,
};
use mezzo_proto::mezzo::agent::master_to_agent;
use mezzo_proto::recordio;

const BOTH: [ContentType; 2] = [ContentType::Json, ContentType::Protobuf];

fn simple(kind: call::Type) -> Call {
    Call { r#type: Some(kind as i32), ..Default::default() }
}

/// Posts `body` to `/api/v1` with `content_type` and `accept`; the status, content type and body.
async fn post_raw(
    client: &reqwest::Client,
    master: &TestMaster,
    content_type: &str,
    accept: Option<&str>,
    body: Vec<u8>,
) -> (u16, String, Vec<u8>) {
    let mut req = client.post(master.url("/api/v1")).header("Content-Type", content_type).body(body);
    if let Some(accept) = accept {
        req = req.header("Accept", accept);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (status, ct, resp.bytes().await.unwrap().to_vec())
}

/// Sends `call` encoded as `ct`, asking for `ct` back; the status and body.
async fn call_as(client: &reqwest::Client, master: &TestMaster, call: &Call, ct: ContentType) -> (u16, Vec<u8>) {
    let (status, content_type, body) = post_raw(client, master, ct.mime(), Some(ct.mime()), codec::encode(call, ct)).await;
    if status == 200 && !body.is_empty() {
        assert_eq!(content_type, ct.mime());
    }
    (status, body)
}

/// Sends a call that answers a `Response`, checks 200 and the response type.
async fn get(master: &TestMaster, kind: call::Type, ct: ContentType, expected: response::Type) -> Response {
    let (status, body) = call_as(&reqwest::Client::new(), master, &simple(kind), ct).await;
    assert_eq!(status, 200, "{kind:?} in {ct:?}: {}", String::from_utf8_lossy(&body));
    let reply: Response = codec::decode(&body, ct).unwrap();
    if ct == ContentType::Json {
        // Mesos's JSON: proto field names and enum names.
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["type"], expected.as_str_name(), "{json}");
    }
    assert_eq!(reply.r#type(), expected);
    reply
}

fn running(task_id: &str, agent_id: &str, state: TaskState) -> TaskStatus {
    TaskStatus {
        task_id: TaskId { value: task_id.into() },
        state: state as i32,
        agent_id: Some(AgentId { value: agent_id.into() }),
        source: Some(task_status::Source::Executor as i32),
        uuid: Some(mezzo_proto::new_uuid()),
        timestamp: Some(1.0),
        ..Default::default()
    }
}

fn partition_aware(name: &str) -> mezzo_proto::mesos::v1::FrameworkInfo {
    let mut info = framework_info(name);
    info.capabilities = vec![Capability { r#type: Some(capability::Type::PartitionAware as i32) }];
    info
}

/// A master with an agent and a framework running task `t1` (1 cpu, 128 MB).
struct Cluster {
    master: TestMaster,
    agent: FakeAgent,
    scheduler: Scheduler,
}

async fn cluster_with(config: MasterConfig, info: mezzo_proto::mesos::v1::FrameworkInfo) -> Cluster {
    let master = TestMaster::start_with(config).await;
    let mut agent = FakeAgent::start(&master).await;
    let mut scheduler = Scheduler::subscribe(&master, info, ContentType::Json).await;
    let offers = scheduler.next_offers().await;
    let task = task("t1", &agent.agent_id, vec![scalar("cpus", 1.0), scalar("mem", 128.0)]);
    assert_eq!(scheduler.call(accept_call(&[&offers[0].id], vec![task])).await, 202);
    let run = agent.next_message().await;
    assert_eq!(run.r#type(), master_to_agent::Type::RunTask);
    assert_eq!(agent.send_status(&scheduler.framework_id, running("t1", &agent.agent_id, TaskState::TaskRunning)).await, 202);
    let (update, _) = scheduler.next_update().await;
    assert_eq!(update.state(), TaskState::TaskRunning);
    Cluster { master, agent, scheduler }
}

async fn cluster() -> Cluster {
    cluster_with(MasterConfig::default(), partition_aware("ops-test")).await
}

#[tokio::test]
async fn get_health() {
    let c = cluster().await;
    for ct in BOTH {
        let reply = get(&c.master, call::Type::GetHealth, ct, response::Type::GetHealth).await;
        assert!(reply.get_health.unwrap().healthy);
    }
}

#[tokio::test]
async fn get_flags() {
    let master = TestMaster::start_with(MasterConfig { heartbeat_interval: Duration::from_secs(7), ..MasterConfig::default() }).await;
    for ct in BOTH {
        let reply = get(&master, call::Type::GetFlags, ct, response::Type::GetFlags).await;
        let flags: BTreeMap<String, String> =
            reply.get_flags.unwrap().flags.into_iter().map(|f| (f.name, f.value.unwrap_or_default())).collect();
        assert_eq!(flags["heartbeat_interval"], "7secs");
        assert_eq!(flags["authenticate_http_readonly"], "false");
        assert_eq!(flags["port"], master.addr.port().to_string());
    }
}

#[tokio::test]
async fn get_version() {
    let master = TestMaster::start().await;
    for ct in BOTH {
        let info = get(&master, call::Type::GetVersion, ct, response::Type::GetVersion).await.get_version.unwrap().version_info;
        assert_eq!(info.version, mezzo_master::MESOS_VERSION);
        assert!(info.git_tag.unwrap().starts_with("mezzo-"));
        assert!(info.build_time.unwrap() > 0.0);
    }
}

/// GET_METRICS as a map.
async fn metrics(master: &TestMaster) -> BTreeMap<String, f64> {
    let mut call = simple(call::Type::GetMetrics);
    call.get_metrics = Some(call::GetMetrics { timeout: None });
    let (status, body) = call_as(&reqwest::Client::new(), master, &call, ContentType::Json).await;
    assert_eq!(status, 200);
    let reply: Response = codec::decode(&body, ContentType::Json).unwrap();
    reply.get_metrics.unwrap().metrics.into_iter().map(|m| (m.name, m.value.unwrap())).collect()
}

#[tokio::test]
async fn get_metrics() {
    let c = cluster().await;
    for ct in BOTH {
        let mut call = simple(call::Type::GetMetrics);
        call.get_metrics = Some(call::GetMetrics { timeout: None });
        let (status, body) = call_as(&reqwest::Client::new(), &c.master, &call, ct).await;
        assert_eq!(status, 200);
        let reply: Response = codec::decode(&body, ct).unwrap();
        assert_eq!(reply.r#type(), response::Type::GetMetrics);
        let metrics: BTreeMap<String, f64> =
            reply.get_metrics.unwrap().metrics.into_iter().map(|m| (m.name, m.value.unwrap())).collect();
        assert_eq!(metrics["master/slaves_active"], 1.0);
        assert_eq!(metrics["master/tasks_running"], 1.0);
        assert_eq!(metrics["master/frameworks_connected"], 1.0);
        assert_eq!(metrics["master/cpus_total"], 2.0);
        assert_eq!(metrics["master/cpus_used"], 1.0);
        assert_eq!(metrics["master/cpus_percent"], 0.5);
        assert_eq!(metrics["master/elected"], 1.0);
    }
}

#[tokio::test]
async fn get_logging_level() {
    let master = TestMaster::start().await;
    for ct in BOTH {
        let reply = get(&master, call::Type::GetLoggingLevel, ct, response::Type::GetLoggingLevel).await;
        // No subscriber logs in this test process: glog's verbosity 0.
        assert_eq!(reply.get_logging_level.unwrap().level, 0);
    }
}

#[tokio::test]
async fn get_master() {
    let master = TestMaster::start().await;
    for ct in BOTH {
        let reply = get(&master, call::Type::GetMaster, ct, response::Type::GetMaster).await.get_master.unwrap();
        let info = reply.master_info.unwrap();
        assert_eq!(info.port, u32::from(master.addr.port()));
        assert_eq!(info.address.unwrap().ip.unwrap(), "127.0.0.1");
        assert!(reply.start_time.unwrap() > 0.0 && reply.elected_time.unwrap() >= reply.start_time.unwrap());
    }
}

#[tokio::test]
async fn get_agents() {
    let c = cluster().await;
    for ct in BOTH {
        let agents = get(&c.master, call::Type::GetAgents, ct, response::Type::GetAgents).await.get_agents.unwrap().agents;
        assert_eq!(agents.len(), 1);
        let a = &agents[0];
        assert_eq!(a.agent_info.id.as_ref().unwrap().value, c.agent.agent_id);
        assert_eq!(a.agent_info.hostname, "localhost");
        assert!(a.active);
        assert_eq!(a.version, mezzo_master::MESOS_VERSION);
        assert_eq!(a.pid.as_deref(), Some(format!("slave(1)@{}", c.agent.endpoint).as_str()));
        assert_eq!(scalar_of(&a.total_resources, "cpus"), 2.0);
        assert_eq!(scalar_of(&a.allocated_resources, "cpus"), 1.0);
        assert_eq!(scalar_of(&a.allocated_resources, "mem"), 128.0);
        assert!(a.registered_time.unwrap().nanoseconds > 0);
    }
}

#[tokio::test]
async fn get_frameworks() {
    let c = cluster().await;
    for ct in BOTH {
        let fws = get(&c.master, call::Type::GetFrameworks, ct, response::Type::GetFrameworks).await.get_frameworks.unwrap();
        assert_eq!(fws.frameworks.len(), 1);
        let f = &fws.frameworks[0];
        assert_eq!(f.framework_info.id.as_ref().unwrap().value, c.scheduler.framework_id);
        assert_eq!(f.framework_info.name, "ops-test");
        assert!(f.connected && f.active && !f.recovered);
        assert_eq!(scalar_of(&f.allocated_resources, "cpus"), 1.0);
        assert!(fws.completed_frameworks.is_empty());
    }
}

#[tokio::test]
async fn get_executors() {
    let master = TestMaster::start().await;
    let mut agent = FakeAgent::start(&master).await;
    let mut scheduler = Scheduler::subscribe(&master, framework_info("custom"), ContentType::Protobuf).await;
    let offers = scheduler.next_offers().await;
    let executor = ExecutorInfo {
        executor_id: ExecutorId { value: "ex1".into() },
        command: Some(CommandInfo { value: Some("./executor".into()), ..Default::default() }),
        resources: vec![scalar("cpus", 0.5), scalar("mem", 64.0)],
        ..Default::default()
    };
    let task = TaskInfo {
        name: "with executor".into(),
        task_id: TaskId { value: "e1".into() },
        agent_id: AgentId { value: agent.agent_id.clone() },
        resources: vec![scalar("cpus", 0.25), scalar("mem", 32.0)],
        executor: Some(executor),
        ..Default::default()
    };
    assert_eq!(scheduler.call(accept_call(&[&offers[0].id], vec![task])).await, 202);
    agent.next_message().await;
    for ct in BOTH {
        let executors = get(&master, call::Type::GetExecutors, ct, response::Type::GetExecutors).await.get_executors.unwrap().executors;
        assert_eq!(executors.len(), 1);
        assert_eq!(executors[0].executor_info.executor_id.value, "ex1");
        assert_eq!(executors[0].executor_info.framework_id.as_ref().unwrap().value, scheduler.framework_id);
        assert_eq!(executors[0].agent_id.value, agent.agent_id);
        let tasks = get(&master, call::Type::GetTasks, ct, response::Type::GetTasks).await.get_tasks.unwrap().tasks;
        assert_eq!(tasks[0].executor_id.as_ref().unwrap().value, "ex1");
    }
}

#[tokio::test]
async fn get_tasks() {
    let mut c = cluster().await;
    for ct in BOTH {
        let tasks = get(&c.master, call::Type::GetTasks, ct, response::Type::GetTasks).await.get_tasks.unwrap();
        assert_eq!(tasks.tasks.len(), 1);
        let t = &tasks.tasks[0];
        assert_eq!((t.task_id.value.as_str(), t.name.as_str()), ("t1", "task t1"));
        assert_eq!(t.state(), TaskState::TaskRunning);
        assert_eq!(t.framework_id.value, c.scheduler.framework_id);
        assert_eq!(t.agent_id.value, c.agent.agent_id);
        assert_eq!(t.statuses.len(), 1);
        assert_eq!(t.status_update_state, Some(TaskState::TaskRunning as i32));
        assert_eq!(scalar_of(&t.resources, "cpus"), 1.0);
        assert!(tasks.completed_tasks.is_empty() && tasks.unreachable_tasks.is_empty());
    }
    // Finished and acknowledged: completed.
    let finished = running("t1", &c.agent.agent_id, TaskState::TaskFinished);
    let uuid = finished.uuid.clone().unwrap();
    assert_eq!(c.agent.send_status(&c.scheduler.framework_id, finished).await, 202);
    c.scheduler.next_update().await;
    let ack = mezzo_proto::mesos::v1::scheduler::Call {
        r#type: Some(mezzo_proto::mesos::v1::scheduler::call::Type::Acknowledge as i32),
        acknowledge: Some(mezzo_proto::mesos::v1::scheduler::call::Acknowledge {
            agent_id: AgentId { value: c.agent.agent_id.clone() },
            task_id: TaskId { value: "t1".into() },
            uuid,
        }),
        ..Default::default()
    };
    assert_eq!(c.scheduler.call(ack).await, 202);
    for ct in BOTH {
        let tasks = get(&c.master, call::Type::GetTasks, ct, response::Type::GetTasks).await.get_tasks.unwrap();
        assert!(tasks.tasks.is_empty());
        assert_eq!(tasks.completed_tasks.len(), 1);
        assert_eq!(tasks.completed_tasks[0].state(), TaskState::TaskFinished);
        assert_eq!(tasks.completed_tasks[0].statuses.len(), 2);
    }
}

#[tokio::test]
async fn get_roles() {
    let c = cluster().await;
    for ct in BOTH {
        let roles = get(&c.master, call::Type::GetRoles, ct, response::Type::GetRoles).await.get_roles.unwrap().roles;
        assert_eq!(roles.len(), 1);
        assert_eq!(roles[0].name, "*");
        assert_eq!(roles[0].weight, 1.0);
        assert_eq!(roles[0].frameworks, vec![FrameworkId { value: c.scheduler.framework_id.clone() }]);
        assert!(scalar_of(&roles[0].resources, "cpus") >= 1.0);
    }
}

#[tokio::test]
async fn get_operations() {
    let c = cluster().await;
    for ct in BOTH {
        let ops = get(&c.master, call::Type::GetOperations, ct, response::Type::GetOperations).await;
        assert!(ops.get_operations.unwrap().operations.is_empty());
    }
}

#[tokio::test]
async fn get_state() {
    let c = cluster().await;
    for ct in BOTH {
        let state = get(&c.master, call::Type::GetState, ct, response::Type::GetState).await.get_state.unwrap();
        assert_eq!(state.get_agents.unwrap().agents[0].agent_info.id.as_ref().unwrap().value, c.agent.agent_id);
        assert_eq!(state.get_frameworks.unwrap().frameworks[0].framework_info.name, "ops-test");
        assert_eq!(state.get_tasks.unwrap().tasks[0].state(), TaskState::TaskRunning);
        assert!(state.get_executors.unwrap().executors.is_empty());
    }
}

#[tokio::test]
async fn teardown_removes_the_framework_and_kills_its_tasks() {
    for ct in BOTH {
        let mut c = cluster().await;
        // An unknown framework: 400 with Mesos's message.
        let mut call = simple(call::Type::Teardown);
        call.teardown = Some(call::Teardown { framework_id: FrameworkId { value: "nope".into() } });
        let (status, body) = call_as(&reqwest::Client::new(), &c.master, &call, ct).await;
        assert_eq!((status, String::from_utf8_lossy(&body).as_ref()), (400, "No framework found with specified ID"));

        call.teardown = Some(call::Teardown { framework_id: FrameworkId { value: c.scheduler.framework_id.clone() } });
        let (status, _) = call_as(&reqwest::Client::new(), &c.master, &call, ct).await;
        assert_eq!(status, 200);
        let shutdown = c.agent.next_message().await;
        assert_eq!(shutdown.r#type(), master_to_agent::Type::ShutdownFramework);
        assert_eq!(shutdown.shutdown_framework.unwrap().framework_id.value, c.scheduler.framework_id);
        // The scheduler's stream ends.
        assert!(c.scheduler.next_non_heartbeat().await.is_none());
        let fws = get(&c.master, call::Type::GetFrameworks, ct, response::Type::GetFrameworks).await.get_frameworks.unwrap();
        assert!(fws.frameworks.is_empty());
        assert_eq!(fws.completed_frameworks[0].framework_info.id.as_ref().unwrap().value, c.scheduler.framework_id);
        let tasks = get(&c.master, call::Type::GetTasks, ct, response::Type::GetTasks).await.get_tasks.unwrap();
        assert!(tasks.tasks.is_empty());
        assert_eq!(tasks.completed_tasks[0].state(), TaskState::TaskKilled);
        let agents = get(&c.master, call::Type::GetAgents, ct, response::Type::GetAgents).await.get_agents.unwrap().agents;
        assert_eq!(scalar_of(&agents[0].allocated_resources, "cpus"), 0.0);
    }
}

#[tokio::test]
async fn mark_agent_gone_ends_its_tasks_and_keeps_it_out() {
    for (ct, aware) in [(ContentType::Json, true), (ContentType::Protobuf, false)] {
        let info = if aware { partition_aware("gone") } else { framework_info("gone") };
        let mut c = cluster_with(MasterConfig::default(), info).await;
        let client = reqwest::Client::new();
        let mut call = simple(call::Type::MarkAgentGone);
        call.mark_agent_gone = Some(call::MarkAgentGone { agent_id: AgentId { value: "unknown-S9".into() } });
        let (status, body) = call_as(&client, &c.master, &call, ct).await;
        assert_eq!((status, String::from_utf8_lossy(&body).as_ref()), (404, "Agent 'unknown-S9' not found"));

        call.mark_agent_gone = Some(call::MarkAgentGone { agent_id: AgentId { value: c.agent.agent_id.clone() } });
        assert_eq!(call_as(&client, &c.master, &call, ct).await.0, 200);
        let (update, _) = c.scheduler.next_update().await;
        let (state, reason) = if aware {
            (TaskState::TaskGoneByOperator, task_status::Reason::AgentRemovedByOperator)
        } else {
            (TaskState::TaskLost, task_status::Reason::AgentRemoved)
        };
        assert_eq!((update.state(), update.reason()), (state, reason));
        assert_eq!(update.source(), task_status::Source::Master);
        // Every framework hears the agent is lost.
        let failure = c.scheduler.expect(mezzo_proto::mesos::v1::scheduler::event::Type::Failure).await;
        assert_eq!(failure.event.failure.unwrap().agent_id.unwrap().value, c.agent.agent_id);
        // The agent is told to shut down (Mesos's ShutdownMessage).
        let shutdown = c.agent.next_message().await;
        assert_eq!(shutdown.r#type(), master_to_agent::Type::ShutdownAgent);
        let state_now = get(&c.master, call::Type::GetState, ct, response::Type::GetState).await.get_state.unwrap();
        assert!(state_now.get_agents.unwrap().agents.is_empty());
        let tasks = state_now.get_tasks.unwrap();
        assert!(tasks.tasks.is_empty());
        assert_eq!(tasks.completed_tasks[0].state(), state);
        // Gone for good: it may not register again under its id (410: the
        // agent shuts down); marking it again is fine.
        let (status, _) = c.agent.try_register(c.agent.request(Some(&c.agent.agent_id), agent_resources())).await;
        assert_eq!(status, 410);
        assert_eq!(call_as(&client, &c.master, &call, ct).await.0, 200);
    }
}

#[tokio::test]
async fn refusals_name_the_problem() {
    let master = TestMaster::start().await;
    let client = reqwest::Client::new();
    for ct in BOTH {
        let (status, body) = call_as(&client, &master, &Call::default(), ct).await;
        assert_eq!(status, 400);
        assert!(String::from_utf8_lossy(&body).contains("Expecting 'type' to be present"));
        let (status, body) = call_as(&client, &master, &simple(call::Type::Unknown), ct).await;
        assert_eq!(status, 501, "{}", String::from_utf8_lossy(&body));
        let (status, body) = call_as(&client, &master, &simple(call::Type::ReserveResources), ct).await;
        assert_eq!((status, String::from_utf8_lossy(&body).as_ref()), (501, "Call type RESERVE_RESOURCES is not supported by this master"));
        let (status, body) = call_as(&client, &master, &simple(call::Type::GetMetrics), ct).await;
        assert_eq!(status, 400);
        assert!(String::from_utf8_lossy(&body).contains("Expecting 'get_metrics' to be present"));
        let (status, body) = call_as(&client, &master, &simple(call::Type::Teardown), ct).await;
        assert_eq!(status, 400);
        assert!(String::from_utf8_lossy(&body).contains("'teardown'"));
    }
    // A type number no Mesos version has (protobuf) and an unknown name (JSON).
    let (status, _, body) = post_raw(&client, &master, "application/x-protobuf", None, vec![0x08, 0xe7, 0x07]).await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("999"));
    let (status, _, _) = post_raw(&client, &master, "application/json", None, br#"{"type":"GET_NOTHING"}"#.to_vec()).await;
    assert_eq!(status, 400);
    let (status, _, body) = post_raw(&client, &master, "application/json", None, b"{not json".to_vec()).await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("Failed to parse body into Call"));
    let health = codec::encode(&simple(call::Type::GetHealth), ContentType::Json);
    assert_eq!(post_raw(&client, &master, "text/plain", None, health.clone()).await.0, 415);
    assert_eq!(post_raw(&client, &master, "application/json", Some("text/html"), health.clone()).await.0, 406);
    // No Accept: JSON, as Mesos.
    let (status, ct, _) = post_raw(&client, &master, "application/json", None, health).await;
    assert_eq!((status, ct.as_str()), (200, "application/json"));
    let resp = client.get(master.url("/api/v1")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
}

fn credentials() -> Arc<Credentials> {
    Arc::new(Credentials::from_list(vec![Credential { principal: "ops".into(), secret: "ops-secret".into() }]))
}

fn client_as(principal: &str, secret: &str) -> reqwest::Client {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{principal}:{secret}"));
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Basic {token}").parse().unwrap());
    reqwest::Client::builder().default_headers(headers).build().unwrap()
}

#[tokio::test]
async fn authentication_follows_the_call_kind() {
    let anonymous = reqwest::Client::new();
    let ops = client_as("ops", "ops-secret");
    let wrong = client_as("ops", "nope");
    let mut teardown = simple(call::Type::Teardown);
    teardown.teardown = Some(call::Teardown { framework_id: FrameworkId { value: "none".into() } });

    // --authenticate_http_readonly: reads need credentials, writes do not.
    let master = TestMaster::start_with(MasterConfig {
        credentials: Some(credentials()),
        authenticate_http_readonly: true,
        ..MasterConfig::default()
    })
    .await;
    for ct in BOTH {
        for kind in [call::Type::GetState, call::Type::GetHealth, call::Type::Subscribe] {
            assert_eq!(call_as(&anonymous, &master, &simple(kind), ct).await.0, 401, "{kind:?}");
            assert_eq!(call_as(&wrong, &master, &simple(kind), ct).await.0, 401, "{kind:?}");
        }
        assert_eq!(call_as(&ops, &master, &simple(call::Type::GetState), ct).await.0, 200);
        // Anonymous, so it gets as far as the unknown framework.
        assert_eq!(call_as(&anonymous, &master, &teardown, ct).await.0, 400);
    }
    let resp = anonymous.post(master.url("/api/v1")).header("Content-Type", "application/json").body("{}").send().await.unwrap();
    assert_eq!(resp.status(), 400, "an undecidable call is judged before authentication of reads");

    // --authenticate_http_readwrite: every call (Mesos's realm of /api/v1), before anything is read.
    let master = TestMaster::start_with(MasterConfig {
        credentials: Some(credentials()),
        authenticate_http_readwrite: true,
        ..MasterConfig::default()
    })
    .await;
    for ct in BOTH {
        assert_eq!(call_as(&anonymous, &master, &teardown, ct).await.0, 401);
        assert_eq!(call_as(&anonymous, &master, &simple(call::Type::GetHealth), ct).await.0, 401);
        assert_eq!(call_as(&ops, &master, &teardown, ct).await.0, 400);
        assert_eq!(call_as(&ops, &master, &simple(call::Type::GetHealth), ct).await.0, 200);
    }
    let resp = anonymous.post(master.url("/api/v1")).body("garbage").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Basic realm=\"mezzo\"");
}

/// The operator event stream of a SUBSCRIBE.
struct Subscriber {
    resp: reqwest::Response,
    decoder: recordio::Decoder,
    ct: ContentType,
}

impl Subscriber {
    async fn subscribe(master: &TestMaster, ct: ContentType) -> Self {
        let resp = reqwest::Client::new()
            .post(master.url("/api/v1"))
            .header("Content-Type", ct.mime())
            .header("Accept", ct.mime())
            .body(codec::encode(&simple(call::Type::Subscribe), ct))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], ct.mime());
        Self { resp, decoder: recordio::Decoder::new(1 << 24), ct }
    }

    async fn next(&mut self) -> Event {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(record) = self.decoder.next_record().unwrap() {
                    return codec::decode::<Event>(&record, self.ct).unwrap();
                }
                let chunk = self.resp.chunk().await.unwrap().expect("operator stream ended");
                self.decoder.feed(&chunk);
            }
        })
        .await
        .expect("timed out waiting for an operator event")
    }

    /// The next event that is not a HEARTBEAT.
    async fn next_event(&mut self) -> Event {
        loop {
            let e = self.next().await;
            if e.r#type() != event::Type::Heartbeat {
                return e;
            }
        }
    }
}

#[tokio::test]
async fn subscribe_streams_the_state_then_every_change_in_order() {
    for ct in BOTH {
        let master = TestMaster::start_with(MasterConfig { heartbeat_interval: Duration::from_millis(300), ..MasterConfig::default() }).await;
        let mut ops = Subscriber::subscribe(&master, ct).await;
        let first = ops.next().await;
        assert_eq!(first.r#type(), event::Type::Subscribed);
        let subscribed = first.subscribed.unwrap();
        assert_eq!(subscribed.heartbeat_interval_seconds, Some(0.3));
        let state = subscribed.get_state.unwrap();
        assert!(state.get_agents.unwrap().agents.is_empty() && state.get_frameworks.unwrap().frameworks.is_empty());
        // The first HEARTBEAT one interval after SUBSCRIBED.
        assert_eq!(ops.next().await.r#type(), event::Type::Heartbeat);
        assert_eq!(metrics(&master).await["master/operator_event_stream_subscribers"], 1.0);

        let mut agent = FakeAgent::start(&master).await;
        let e = ops.next_event().await;
        assert_eq!(e.r#type(), event::Type::AgentAdded);
        let added = e.agent_added.unwrap().agent;
        assert_eq!(added.agent_info.id.unwrap().value, agent.agent_id);
        assert_eq!(scalar_of(&added.total_resources, "cpus"), 2.0);

        let mut scheduler = Scheduler::subscribe(&master, partition_aware("watched"), ContentType::Json).await;
        let e = ops.next_event().await;
        assert_eq!(e.r#type(), event::Type::FrameworkAdded);
        let fw = e.framework_added.unwrap().framework;
        assert_eq!(fw.framework_info.id.unwrap().value, scheduler.framework_id);
        assert!(fw.connected);

        let offers = scheduler.next_offers().await;
        let t = task("w1", &agent.agent_id, vec![scalar("cpus", 0.5), scalar("mem", 64.0)]);
        assert_eq!(scheduler.call(accept_call(&[&offers[0].id], vec![t])).await, 202);
        let e = ops.next_event().await;
        assert_eq!(e.r#type(), event::Type::TaskAdded);
        let task = e.task_added.unwrap().task;
        assert_eq!((task.task_id.value.as_str(), task.state()), ("w1", TaskState::TaskStaging));
        assert_eq!(task.framework_id.value, scheduler.framework_id);

        agent.next_message().await;
        for state in [TaskState::TaskRunning, TaskState::TaskRunning, TaskState::TaskFinished] {
            assert_eq!(agent.send_status(&scheduler.framework_id, running("w1", &agent.agent_id, state)).await, 202);
            scheduler.next_update().await;
        }
        // A repeated state is no new TASK_UPDATED, as Mesos.
        for state in [TaskState::TaskRunning, TaskState::TaskFinished] {
            let e = ops.next_event().await;
            assert_eq!(e.r#type(), event::Type::TaskUpdated, "{e:?}");
            let updated = e.task_updated.unwrap();
            assert_eq!((updated.state(), updated.status.state()), (state, state));
            assert_eq!(updated.framework_id.value, scheduler.framework_id);
            assert_eq!(updated.status.task_id.value, "w1");
        }

        // A second subscriber starts from the state as it is now.
        let mut late = Subscriber::subscribe(&master, ct).await;
        let state = late.next().await.subscribed.unwrap().get_state.unwrap();
        assert_eq!(state.get_tasks.unwrap().tasks[0].state(), TaskState::TaskFinished);
        assert_eq!(state.get_frameworks.unwrap().frameworks.len(), 1);

        // Re-subscription (failover) is FRAMEWORK_UPDATED.
        let mut again = partition_aware("watched");
        again.id = Some(FrameworkId { value: scheduler.framework_id.clone() });
        let scheduler2 = Scheduler::subscribe(&master, again, ContentType::Protobuf).await;
        for subscriber in [&mut ops, &mut late] {
            let e = subscriber.next_event().await;
            assert_eq!(e.r#type(), event::Type::FrameworkUpdated);
            assert_eq!(e.framework_updated.unwrap().framework.framework_info.id.unwrap().value, scheduler2.framework_id);
        }

        let mut teardown = simple(call::Type::Teardown);
        teardown.teardown = Some(call::Teardown { framework_id: FrameworkId { value: scheduler2.framework_id.clone() } });
        assert_eq!(call_as(&reqwest::Client::new(), &master, &teardown, ct).await.0, 200);
        let e = ops.next_event().await;
        assert_eq!(e.r#type(), event::Type::FrameworkRemoved);
        assert_eq!(e.framework_removed.unwrap().framework_info.id.unwrap().value, scheduler2.framework_id);

        let mut gone = simple(call::Type::MarkAgentGone);
        gone.mark_agent_gone = Some(call::MarkAgentGone { agent_id: AgentId { value: agent.agent_id.clone() } });
        assert_eq!(call_as(&reqwest::Client::new(), &master, &gone, ct).await.0, 200);
        let e = ops.next_event().await;
        assert_eq!(e.r#type(), event::Type::AgentRemoved);
        assert_eq!(e.agent_removed.unwrap().agent_id.value, agent.agent_id);

        // Subscribers count in the metrics; a closed stream no longer does
        // (the master notices at its next write, a HEARTBEAT at the latest).
        assert_eq!(metrics(&master).await["master/operator_event_stream_subscribers"], 2.0);
        drop(late);
        let deadline = tokio::time::Instant::now() + WAIT;
        while metrics(&master).await["master/operator_event_stream_subscribers"] != 1.0 {
            assert!(tokio::time::Instant::now() < deadline, "the closed stream still counts");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Every metric name Mesos's master defines that mezzo reports (`docs/monitoring.md`).
const MESOS_MASTER_METRICS: &[&str] = &[
    "master/uptime_secs", "master/elected", "master/slaves_active", "master/slaves_inactive", "master/slaves_connected",
    "master/slaves_disconnected", "master/slaves_unreachable", "master/slave_registrations", "master/slave_reregistrations",
    "master/slave_removals", "master/frameworks_active", "master/frameworks_inactive", "master/frameworks_connected",
    "master/frameworks_disconnected", "master/outstanding_offers", "master/operator_event_stream_subscribers",
    "master/messages_status_update", "master/valid_status_updates", "master/invalid_status_updates",
    "master/messages_framework_to_executor", "master/valid_framework_to_executor_messages",
    "master/invalid_framework_to_executor_messages", "master/messages_executor_to_framework",
    "master/valid_executor_to_framework_messages", "master/invalid_executor_to_framework_messages",
    "master/messages_exited_executor", "master/tasks_staging", "master/tasks_starting", "master/tasks_running",
    "master/tasks_killing", "master/tasks_finished", "master/tasks_failed", "master/tasks_killed", "master/tasks_error",
    "master/tasks_lost", "master/tasks_dropped", "master/tasks_unreachable", "master/tasks_gone",
    "master/tasks_gone_by_operator", "master/cpus_total", "master/cpus_used", "master/cpus_percent", "master/mem_total",
    "master/mem_used", "master/mem_percent", "master/disk_total", "master/disk_used", "master/disk_percent",
    "master/gpus_total", "master/gpus_used", "master/gpus_percent",
];

async fn snapshot(master: &TestMaster) -> serde_json::Map<String, serde_json::Value> {
    let resp = reqwest::get(master.url("/metrics/snapshot")).await.unwrap();
    assert_eq!(resp.status(), 200);
    match serde_json::from_str::<serde_json::Value>(&resp.text().await.unwrap()).unwrap() {
        serde_json::Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

#[tokio::test]
async fn metrics_snapshot_uses_mesos_names() {
    let c = cluster().await;
    let m = snapshot(&c.master).await;
    for key in MESOS_MASTER_METRICS {
        assert!(m.contains_key(*key), "missing {key}");
    }
    // Only Mesos's names under master/; mezzo's own counts live under mezzo/.
    for key in m.keys() {
        let mesos = MESOS_MASTER_METRICS.contains(&key.as_str()) || key.starts_with("allocator/mesos/allocation_run");
        assert!(mesos || key.starts_with("mezzo/master/"), "{key}");
    }
    assert_eq!(m["master/tasks_running"], 1.0);
    assert_eq!(m["master/slaves_active"], 1.0);
    assert_eq!(m["master/frameworks_active"], 1.0);
    assert_eq!(m["master/mem_used"], 128.0);
    assert_eq!(m["master/slave_registrations"], 1.0);
    assert_eq!(m["master/valid_status_updates"], 1.0);
    assert_eq!(m["mezzo/master/tasks_launched"], 1.0);
    assert!(m["allocator/mesos/allocation_runs"].as_f64().unwrap() >= 1.0, "an offer was made");
    assert!(m["master/uptime_secs"].as_f64().unwrap() >= 0.0);
    // Mesos's aliases of the path.
    assert_eq!(reqwest::get(c.master.url("/master/metrics/snapshot")).await.unwrap().status(), 200);
}

/// One parsed sample line of the text exposition format.
fn parse_prometheus(text: &str) -> BTreeMap<String, (String, f64)> {
    let name_ok = |n: &str| {
        let mut chars = n.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut samples = BTreeMap::new();
    let (mut help, mut kind): (Option<String>, Option<(String, String)>) = (None, None);
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, doc) = rest.split_once(' ').expect("HELP has a name and a text");
            assert!(name_ok(name) && !doc.is_empty(), "{line}");
            help = Some(name.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, t) = rest.split_once(' ').expect("TYPE has a name and a type");
            assert!(["counter", "gauge"].contains(&t), "{line}");
            assert_eq!(help.as_deref(), Some(name), "TYPE after the HELP of the same metric: {line}");
            kind = Some((name.to_string(), t.to_string()));
        } else {
            assert!(!line.starts_with('#') && !line.is_empty(), "unexpected line {line:?}");
            let (name, value) = line.split_once(' ').expect("a sample is a name and a value");
            assert!(name_ok(name), "{line}");
            let (typed, t) = kind.take().expect("every sample follows its TYPE line");
            assert_eq!(typed, name, "{line}");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
            assert!(samples.insert(name.to_string(), (t, value)).is_none(), "duplicate {name}");
        }
    }
    assert!(text.ends_with('\n'));
    samples
}

#[tokio::test]
async fn metrics_in_prometheus_text_format() {
    let c = cluster().await;
    let resp = reqwest::get(c.master.url("/metrics")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    let samples = parse_prometheus(&resp.text().await.unwrap());
    let m = snapshot(&c.master).await;
    assert_eq!(samples.len(), m.len());
    for (key, value) in &m {
        let name = format!("mesos_{}", key.replace('/', "_"));
        let (_, got) = samples.get(&name).unwrap_or_else(|| panic!("{name} missing"));
        // The clock and the allocator's timer move between the two requests.
        if key != "master/uptime_secs" && !key.starts_with("allocator/") && !key.starts_with("mezzo/master/allocation_") {
            assert_eq!(*got, value.as_f64().unwrap(), "{name}");
        }
    }
    assert_eq!(samples["mesos_master_tasks_running"], ("gauge".to_string(), 1.0));
    assert_eq!(samples["mesos_master_slave_registrations"], ("counter".to_string(), 1.0));
    assert_eq!(samples["mesos_master_cpus_used"].1, 1.0);
}

#[tokio::test]
async fn state_summary_counts_tasks_per_agent_and_framework() {
    let c = cluster().await;
    let v: serde_json::Value = serde_json::from_str(&reqwest::get(c.master.url("/state-summary")).await.unwrap().text().await.unwrap()).unwrap();
    assert_eq!(v["hostname"], "127.0.0.1");
    let agent = &v["slaves"][0];
    assert_eq!(agent["id"], c.agent.agent_id.as_str());
    assert_eq!(agent["TASK_RUNNING"], 1);
    assert_eq!(agent["TASK_FINISHED"], 0);
    assert_eq!(agent["framework_ids"], serde_json::json!([c.scheduler.framework_id]));
    assert_eq!(agent["used_resources"]["cpus"], 1.0);
    let fw = &v["frameworks"][0];
    assert_eq!(fw["id"], c.scheduler.framework_id.as_str());
    assert_eq!(fw["name"], "ops-test");
    assert_eq!(fw["TASK_RUNNING"], 1);
    assert_eq!(fw["slave_ids"], serde_json::json!([c.agent.agent_id]));
    assert_eq!(fw["connected"], true);
    assert!(fw.get("tasks").is_none(), "a summary has no task lists");
    assert_eq!(reqwest::get(c.master.url("/master/state-summary")).await.unwrap().status(), 200);
}

#[tokio::test]
async fn redirect_points_at_this_master() {
    let master = TestMaster::start().await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for path in ["/master/redirect", "/redirect"] {
        let resp = client.get(master.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 307, "{path}");
        assert_eq!(resp.headers()["location"], format!("//127.0.0.1:{}", master.addr.port()));
    }
}

#[tokio::test]
async fn metrics_endpoints_are_read_only_ones() {
    let master = TestMaster::start_with(MasterConfig {
        credentials: Some(credentials()),
        authenticate_http_readonly: true,
        ..MasterConfig::default()
    })
    .await;
    for path in ["/metrics", "/metrics/snapshot", "/state-summary"] {
        assert_eq!(reqwest::get(master.url(path)).await.unwrap().status(), 401, "{path}");
        assert_eq!(client_as("ops", "ops-secret").get(master.url(path)).send().await.unwrap().status(), 200, "{path}");
    }
}

#[tokio::test]
async fn a_silent_agent_is_removed_after_its_tasks_are_updated() {
    let config = MasterConfig { agent_ping_timeout: Duration::from_millis(1500), ..MasterConfig::default() };
    let c = cluster_with(config, partition_aware("silent")).await;
    assert_eq!(c.agent.ping().await, 200, "the agent is still registered");
    let mut ops = Subscriber::subscribe(&c.master, ContentType::Protobuf).await;
    assert_eq!(ops.next().await.r#type(), event::Type::Subscribed);
    // The fake agent pings no more: it falls silent.
    let e = ops.next_event().await;
    assert_eq!(e.r#type(), event::Type::TaskUpdated, "{e:?}");
    let updated = e.task_updated.unwrap();
    assert_eq!((updated.status.task_id.value.as_str(), updated.state()), ("t1", TaskState::TaskUnreachable));
    let e = ops.next_event().await;
    assert_eq!(e.r#type(), event::Type::AgentRemoved, "{e:?}");
    assert_eq!(e.agent_removed.unwrap().agent_id.value, c.agent.agent_id);
}
