//! Custom executors through the master, with a fake agent: framework
//! messages both ways, SHUTDOWN, executor exits (FAILURE), and the
//! executor's own resources, counted once per executor for as long as it
//! lives.

mod common;

use std::time::Duration;

use common::*;
use mezzo_master::MasterConfig;
use mezzo_proto::codec::ContentType;
use mezzo_proto::mesos::v1::scheduler::{call, event, Call};
use mezzo_proto::mesos::v1::{
    task_status, AgentId, CommandInfo, ExecutorId, ExecutorInfo, Filters, FrameworkId, OfferId, TaskId, TaskInfo,
    TaskState, TaskStatus,
};
use mezzo_proto::mezzo::agent::{master_to_agent, FrameworkMessage, ReportedTask};
use mezzo_proto::MAX_FRAMEWORK_MESSAGE_BYTES;
use prost::Message;

/// Offers come back at once after a DECLINE or an ACCEPT.
fn eager() -> MasterConfig {
    MasterConfig {
        default_refuse_seconds: 0.0,
        ..MasterConfig::default()
    }
}

fn executor_info(id: &str, command: &str) -> ExecutorInfo {
    ExecutorInfo {
        executor_id: ExecutorId { value: id.into() },
        name: Some(format!("executor {id}")),
        command: Some(CommandInfo {
            value: Some(command.into()),
            ..Default::default()
        }),
        resources: vec![scalar("cpus", 0.5), scalar("mem", 256.0)],
        ..Default::default()
    }
}

/// A task of 0.25 cpus and 64 MB run by `executor`.
fn executor_task(id: &str, agent_id: &str, executor: &ExecutorInfo) -> TaskInfo {
    TaskInfo {
        name: format!("task {id}"),
        task_id: TaskId { value: id.into() },
        agent_id: AgentId { value: agent_id.into() },
        resources: vec![scalar("cpus", 0.25), scalar("mem", 64.0)],
        executor: Some(executor.clone()),
        ..Default::default()
    }
}

fn simple(kind: call::Type) -> Call {
    Call {
        r#type: Some(kind as i32),
        ..Default::default()
    }
}

fn message_call(agent_id: &str, executor_id: &str, data: Vec<u8>) -> Call {
    Call {
        r#type: Some(call::Type::Message as i32),
        message: Some(call::Message {
            agent_id: AgentId { value: agent_id.into() },
            executor_id: ExecutorId { value: executor_id.into() },
            data,
        }),
        ..Default::default()
    }
}

fn shutdown_call(agent_id: &str, executor_id: &str) -> Call {
    Call {
        r#type: Some(call::Type::Shutdown as i32),
        shutdown: Some(call::Shutdown {
            executor_id: ExecutorId { value: executor_id.into() },
            agent_id: AgentId { value: agent_id.into() },
        }),
        ..Default::default()
    }
}

fn decline_call(offer_id: &OfferId) -> Call {
    Call {
        r#type: Some(call::Type::Decline as i32),
        decline: Some(call::Decline {
            offer_ids: vec![offer_id.clone()],
            filters: Some(Filters { refuse_seconds: Some(0.0) }),
        }),
        ..Default::default()
    }
}

fn status(task_id: &str, state: TaskState) -> TaskStatus {
    TaskStatus {
        task_id: TaskId { value: task_id.into() },
        state: state as i32,
        source: Some(task_status::Source::Executor as i32),
        uuid: Some(mezzo_proto::new_uuid()),
        ..Default::default()
    }
}

/// The next event of `kind`, past heartbeats and offers (the allocator
/// offers the agent whenever it likes).
async fn next_event(s: &mut Scheduler, kind: event::Type) -> Received {
    loop {
        let e = s.next_non_heartbeat().await.expect("stream ended");
        if e.kind() == kind {
            return e;
        }
        assert_eq!(e.kind(), event::Type::Offers, "unexpected event {:?}", e.event);
    }
}

/// The next offers, past heartbeats, updates and rescissions.
async fn next_offers_past_updates(s: &mut Scheduler) -> Vec<mezzo_proto::mesos::v1::Offer> {
    loop {
        let e = s.next_non_heartbeat().await.expect("stream ended");
        match e.kind() {
            event::Type::Offers => return e.event.offers.unwrap().offers,
            event::Type::Update | event::Type::Rescind => {}
            other => panic!("unexpected event {other:?}: {:?}", e.event),
        }
    }
}

fn framework_json<'a>(state: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    state["frameworks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
        .unwrap_or_else(|| panic!("framework {id} in /state: {state}"))
}

#[tokio::test]
async fn a_scheduler_message_reaches_the_agent_and_an_oversized_one_is_refused() {
    let master = TestMaster::start().await;
    let s = Scheduler::subscribe(&master, framework_info("talker"), ContentType::Protobuf).await;
    let mut agent = FakeAgent::start(&master).await;

    let data = b"hello\0executor".to_vec();
    assert_eq!(s.call_text(message_call(&agent.agent_id, "exec-1", data.clone())).await.0, 202);
    let msg = agent.next_message().await;
    assert_eq!(msg.r#type(), master_to_agent::Type::FrameworkMessage);
    let got = msg.framework_message.unwrap();
    assert_eq!(got.framework_id.value, s.framework_id);
    assert_eq!(got.executor_id.value, "exec-1");
    assert_eq!(got.data, data);

    // The bound itself is allowed.
    let (code, text) = s.call_text(message_call(&agent.agent_id, "exec-1", vec![7; MAX_FRAMEWORK_MESSAGE_BYTES])).await;
    assert_eq!(code, 202, "{text}");
    let got = agent.next_message().await.framework_message.unwrap();
    assert_eq!(got.data.len(), MAX_FRAMEWORK_MESSAGE_BYTES);

    // One byte more is refused, naming the field and both sizes; nothing reaches the agent.
    let too_big = MAX_FRAMEWORK_MESSAGE_BYTES + 1;
    let (code, text) = s.call_text(message_call(&agent.agent_id, "exec-1", vec![7; too_big])).await;
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("'message.data'"), "{text}");
    assert!(text.contains(&too_big.to_string()) && text.contains(&MAX_FRAMEWORK_MESSAGE_BYTES.to_string()), "{text}");
    let (code, text) = s.call_text(message_call(&agent.agent_id, "../x", b"x".to_vec())).await;
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("'message.executor_id'"), "{text}");

    // An unknown agent: accepted and dropped, best effort as in Mesos.
    assert_eq!(s.call_text(message_call("no-such-agent", "exec-1", b"lost".to_vec())).await.0, 202);
    assert!(agent.silent_for(Duration::from_millis(300)).await);
    let metrics: serde_json::Value =
        serde_json::from_str(&reqwest::get(master.url("/metrics/snapshot")).await.unwrap().text().await.unwrap()).unwrap();
    assert_eq!(metrics["master/valid_framework_to_executor_messages"], 2.0);
    assert_eq!(metrics["master/invalid_framework_to_executor_messages"], 1.0);
}

#[tokio::test]
async fn shutdown_reaches_the_agent_as_shutdown_executor() {
    let master = TestMaster::start().await;
    let s = Scheduler::subscribe(&master, framework_info("stopper"), ContentType::Json).await;
    let mut agent = FakeAgent::start(&master).await;
    assert_eq!(s.call(shutdown_call(&agent.agent_id, "exec-1")).await, 202);
    let msg = agent.next_message().await;
    assert_eq!(msg.r#type(), master_to_agent::Type::ShutdownExecutor);
    let got = msg.shutdown_executor.unwrap();
    assert_eq!(got.framework_id.value, s.framework_id);
    assert_eq!(got.executor_id.value, "exec-1");
    // An unknown agent: accepted, nothing sent.
    assert_eq!(s.call(shutdown_call("no-such-agent", "exec-1")).await, 202);
    assert!(agent.silent_for(Duration::from_millis(300)).await);
}

#[tokio::test]
async fn an_executor_message_reaches_its_scheduler_from_the_authenticated_agent() {
    let master = TestMaster::start().await;
    let mut s = Scheduler::subscribe(&master, framework_info("listener"), ContentType::Json).await;
    let agent = FakeAgent::start(&master).await;

    let data = vec![0u8, 1, 2, 255, b'\n'];
    let (code, text) = agent.send_framework_message(&s.framework_id, "exec-1", data.clone()).await;
    assert_eq!(code, 202, "{text}");
    let e = next_event(&mut s, event::Type::Message).await;
    let got = e.event.message.unwrap();
    assert_eq!(got.agent_id.value, agent.agent_id);
    assert_eq!(got.executor_id.value, "exec-1");
    assert_eq!(got.data, data);
    let json = e.json.unwrap();
    assert_eq!(json["type"], "MESSAGE");
    assert_eq!(json["message"]["agent_id"]["value"], agent.agent_id.as_str());
    assert_eq!(json["message"]["data"], "AAEC/wo=", "bytes are base64 in JSON");

    // The agent is the session's, whatever the body claims.
    let forged = FrameworkMessage {
        framework_id: FrameworkId { value: s.framework_id.clone() },
        executor_id: ExecutorId { value: "exec-2".into() },
        data: b"from me".to_vec(),
        agent_id: Some(AgentId { value: "another-agent".into() }),
    };
    assert_eq!(agent.post("/mezzo/v1/agent/message", forged.encode_to_vec(), None).await.0, 202);
    let got = next_event(&mut s, event::Type::Message).await.event.message.unwrap();
    assert_eq!((got.agent_id.value.as_str(), got.executor_id.value.as_str()), (agent.agent_id.as_str(), "exec-2"));

    // No session token, or a wrong one: 401.
    let body = forged.encode_to_vec();
    assert_eq!(agent.post("/mezzo/v1/agent/message", body.clone(), Some(None)).await.0, 401);
    assert_eq!(agent.post("/mezzo/v1/agent/message", body, Some(Some("guess"))).await.0, 401);
    // Over the bound: 400 naming the field and the sizes.
    let too_big = MAX_FRAMEWORK_MESSAGE_BYTES + 1;
    let (code, text) = agent.send_framework_message(&s.framework_id, "exec-1", vec![0; too_big]).await;
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("'data'") && text.contains(&too_big.to_string()), "{text}");
    // A framework the master does not know: accepted and dropped.
    assert_eq!(agent.send_framework_message("unknown-framework", "exec-1", b"x".to_vec()).await.0, 202);

    // Only the two accepted messages reached the scheduler.
    let metrics: serde_json::Value =
        serde_json::from_str(&reqwest::get(master.url("/metrics/snapshot")).await.unwrap().text().await.unwrap()).unwrap();
    assert_eq!(metrics["master/valid_executor_to_framework_messages"], 2.0);
    assert_eq!(metrics["master/invalid_executor_to_framework_messages"], 1.0);
}

#[tokio::test]
async fn an_executor_holds_its_resources_until_it_exits_and_its_scheduler_hears_of_the_exit() {
    let master = TestMaster::start_with(eager()).await;
    let mut s = Scheduler::subscribe(&master, framework_info("exec-life"), ContentType::Json).await;
    let mut agent = FakeAgent::start(&master).await;
    let offers = s.next_offers().await;
    // No offers while the test looks at the bookkeeping.
    assert_eq!(s.call(simple(call::Type::Suppress)).await, 202);
    let executor = executor_info("exec-1", "./my-executor");
    let t1 = executor_task("t1", &agent.agent_id, &executor);
    assert_eq!(s.call(accept_call(&[&offers[0].id], vec![t1])).await, 202);
    let run = agent.next_message().await.run_task.unwrap();
    let sent = run.task.executor.unwrap();
    assert_eq!(sent.framework_id, Some(FrameworkId { value: s.framework_id.clone() }), "the master fills in the framework id");

    let state = master.state().await;
    let fw = framework_json(&state, &s.framework_id);
    assert_eq!(fw["executors"].as_array().unwrap().len(), 1, "{fw}");
    let ex = &fw["executors"][0];
    assert_eq!(ex["executor_id"], "exec-1");
    assert_eq!(ex["framework_id"], s.framework_id.as_str());
    assert_eq!(ex["slave_id"], agent.agent_id.as_str());
    assert_eq!(ex["name"], "executor exec-1");
    assert_eq!(ex["command"]["value"], "./my-executor");
    assert_eq!((ex["resources"]["cpus"].as_f64(), ex["resources"]["mem"].as_f64()), (Some(0.5), Some(256.0)));
    assert_eq!(fw["used_resources"]["cpus"], 0.75);
    assert_eq!(state["slaves"][0]["used_resources"]["cpus"], 0.75);

    // The task ends; the executor lives on and keeps its own resources.
    assert_eq!(agent.send_status(&s.framework_id, status("t1", TaskState::TaskRunning)).await, 202);
    assert_eq!(agent.send_status(&s.framework_id, status("t1", TaskState::TaskFinished)).await, 202);
    assert_eq!(s.next_update().await.0.state(), TaskState::TaskRunning);
    assert_eq!(s.next_update().await.0.state(), TaskState::TaskFinished);
    assert_eq!(s.call(simple(call::Type::Revive)).await, 202);
    let offers = s.next_offers().await;
    assert_eq!(scalar_of(&offers[0].resources, "cpus"), 1.5);
    assert_eq!(scalar_of(&offers[0].resources, "mem"), 768.0);
    assert_eq!(offers[0].executor_ids, vec![ExecutorId { value: "exec-1".into() }]);
    assert_eq!(s.call(simple(call::Type::Suppress)).await, 202);
    assert_eq!(s.call(decline_call(&offers[0].id)).await, 202);

    // The exit of an executor the master does not count is ignored.
    assert_eq!(agent.executor_exited(&s.framework_id, "exec-unknown", Some(0)).await.0, 202);
    // Without the session's token: 401, and nothing changes.
    let exited = mezzo_proto::mezzo::agent::ExecutorExited {
        framework_id: FrameworkId { value: s.framework_id.clone() },
        executor_id: ExecutorId { value: "exec-1".into() },
        status: Some(9),
    };
    assert_eq!(agent.post("/mezzo/v1/agent/executor_exited", exited.encode_to_vec(), Some(None)).await.0, 401);
    assert_eq!(framework_json(&master.state().await, &s.framework_id)["executors"].as_array().unwrap().len(), 1);

    // The executor is killed by signal 9: FAILURE with agent, executor and status.
    assert_eq!(agent.executor_exited(&s.framework_id, "exec-1", Some(9)).await.0, 202);
    let e = next_event(&mut s, event::Type::Failure).await;
    let failure = e.event.failure.unwrap();
    assert_eq!(failure.agent_id, Some(AgentId { value: agent.agent_id.clone() }));
    assert_eq!(failure.executor_id, Some(ExecutorId { value: "exec-1".into() }));
    assert_eq!(failure.status, Some(9));
    assert_eq!(e.json.unwrap()["failure"]["status"], 9);

    // Its resources are back.
    assert_eq!(s.call(simple(call::Type::Revive)).await, 202);
    let offers = s.next_offers().await;
    assert_eq!(scalar_of(&offers[0].resources, "cpus"), 2.0);
    assert_eq!(scalar_of(&offers[0].resources, "mem"), 1024.0);
    assert!(offers[0].executor_ids.is_empty());
    let state = master.state().await;
    assert!(framework_json(&state, &s.framework_id)["executors"].as_array().unwrap().is_empty());
    assert_eq!(state["slaves"][0]["used_resources"]["cpus"], 0.0);
}

#[tokio::test]
async fn two_tasks_on_one_executor_count_its_resources_once() {
    let master = TestMaster::start_with(eager()).await;
    let mut s = Scheduler::subscribe(&master, framework_info("shared-executor"), ContentType::Json).await;
    let mut agent = FakeAgent::start(&master).await;
    let offers = s.next_offers().await;
    assert_eq!(s.call(simple(call::Type::Suppress)).await, 202);
    let executor = executor_info("exec-1", "./my-executor");
    let tasks = vec![executor_task("t1", &agent.agent_id, &executor), executor_task("t2", &agent.agent_id, &executor)];
    assert_eq!(s.call(accept_call(&[&offers[0].id], tasks)).await, 202);
    for id in ["t1", "t2"] {
        assert_eq!(agent.next_message().await.run_task.unwrap().task.task_id.value, id);
    }
    assert_eq!(s.call(simple(call::Type::Revive)).await, 202);
    let offers = s.next_offers().await;
    // 2 - 0.5 (executor, once) - 2 * 0.25; 1024 - 256 - 2 * 64.
    assert_eq!(scalar_of(&offers[0].resources, "cpus"), 1.0);
    assert_eq!(scalar_of(&offers[0].resources, "mem"), 640.0);
    let state = master.state().await;
    assert_eq!(framework_json(&state, &s.framework_id)["executors"].as_array().unwrap().len(), 1);
    assert_eq!(state["slaves"][0]["used_resources"]["cpus"], 1.0);

    // A later task on the running executor needs only its own resources:
    // 0.75 cpus fit in the offer's 1.0, executor and task (1.25) would not.
    let mut t3 = executor_task("t3", &agent.agent_id, &executor);
    t3.resources = vec![scalar("cpus", 0.75), scalar("mem", 64.0)];
    assert_eq!(s.call(accept_call(&[&offers[0].id], vec![t3])).await, 202);
    assert_eq!(agent.next_message().await.run_task.unwrap().task.task_id.value, "t3");
    let state = master.state().await;
    assert_eq!(state["slaves"][0]["used_resources"]["cpus"], 1.75);
    assert_eq!(state["slaves"][0]["used_resources"]["mem"], 448.0);
}

#[tokio::test]
async fn a_task_with_another_executor_info_under_a_running_executor_id_is_invalid() {
    let master = TestMaster::start_with(eager()).await;
    let mut s = Scheduler::subscribe(&master, framework_info("mismatch"), ContentType::Json).await;
    let mut agent = FakeAgent::start(&master).await;
    let offers = s.next_offers().await;
    let executor = executor_info("exec-1", "./my-executor");
    let t1 = executor_task("t1", &agent.agent_id, &executor);
    assert_eq!(s.call(accept_call(&[&offers[0].id], vec![t1])).await, 202);
    agent.next_message().await;

    let offers = s.next_offers().await;
    let other = executor_info("exec-1", "./another-executor");
    let t2 = executor_task("t2", &agent.agent_id, &other);
    // The same executor described with its resources in another order and
    // its framework id spelled out is the same executor.
    let mut same = executor.clone();
    same.resources.reverse();
    same.framework_id = Some(FrameworkId { value: s.framework_id.clone() });
    let t3 = executor_task("t3", &agent.agent_id, &same);
    let mut foreign = executor_info("exec-2", "./my-executor");
    foreign.framework_id = Some(FrameworkId { value: "someone-else".into() });
    let t4 = executor_task("t4", &agent.agent_id, &foreign);
    assert_eq!(s.call(accept_call(&[&offers[0].id], vec![t2, t3, t4])).await, 202);

    let (update, _) = s.next_update().await;
    assert_eq!(update.task_id.value, "t2");
    assert_eq!(update.state(), TaskState::TaskError);
    assert_eq!(update.reason(), task_status::Reason::TaskInvalid);
    assert_eq!(update.source(), task_status::Source::Master);
    assert!(
        update.message().starts_with("ExecutorInfo is not compatible with existing ExecutorInfo with same ExecutorID"),
        "{}",
        update.message()
    );
    assert!(update.message().contains("./another-executor"), "{}", update.message());
    let (update, _) = s.next_update().await;
    assert_eq!(update.task_id.value, "t4");
    assert_eq!(update.reason(), task_status::Reason::TaskInvalid);
    assert!(update.message().starts_with("ExecutorInfo has an invalid FrameworkID"), "{}", update.message());
    // Only t3 reached the agent.
    assert_eq!(agent.next_message().await.run_task.unwrap().task.task_id.value, "t3");
    assert!(agent.silent_for(Duration::from_millis(300)).await);
}

fn reported(fid: &str, t: TaskInfo, state: TaskState) -> ReportedTask {
    ReportedTask { framework_id: FrameworkId { value: fid.into() }, task: t, state: Some(state as i32), ..Default::default() }
}

#[tokio::test]
async fn a_registering_agent_s_executors_are_counted_once_and_dropped_when_it_no_longer_runs_them() {
    let master = TestMaster::start_with(eager()).await;
    let mut agent = FakeAgent::serve(&master).await;
    let fid = "framework-of-a-past-master";
    let mut executor = executor_info("exec-1", "./my-executor");
    executor.framework_id = Some(FrameworkId { value: fid.into() });
    let mut req = agent.request(None, agent_resources());
    req.executors = vec![executor.clone()];
    req.tasks = vec![
        reported(fid, executor_task("t1", "", &executor), TaskState::TaskRunning),
        reported(fid, executor_task("t2", "", &executor), TaskState::TaskRunning),
    ];
    let mut info = framework_info("adopted");
    info.id = Some(FrameworkId { value: fid.into() });
    req.frameworks = vec![info.clone()];
    agent.register_with(req).await;

    // The scheduler comes back and is offered what neither the executor
    // (once) nor its two tasks hold.
    let mut s = Scheduler::subscribe(&master, info, ContentType::Json).await;
    assert_eq!(s.framework_id, fid);
    let offers = s.next_offers().await;
    assert_eq!(scalar_of(&offers[0].resources, "cpus"), 1.0);
    assert_eq!(scalar_of(&offers[0].resources, "mem"), 640.0);
    assert_eq!(framework_json(&master.state().await, fid)["executors"][0]["executor_id"], "exec-1");

    // It re-registers: the tasks are gone, the executor still runs.
    let mut req = agent.request(Some(&agent.agent_id.clone()), agent_resources());
    req.executors = vec![executor.clone()];
    agent.register_with(req).await;
    let offers = next_offers_past_updates(&mut s).await;
    assert_eq!(scalar_of(&offers[0].resources, "cpus"), 1.5);
    assert_eq!(scalar_of(&offers[0].resources, "mem"), 768.0);

    // Again, without the executor: its resources are freed.
    let req = agent.request(Some(&agent.agent_id.clone()), agent_resources());
    agent.register_with(req).await;
    let offers = next_offers_past_updates(&mut s).await;
    assert_eq!(scalar_of(&offers[0].resources, "cpus"), 2.0);
    assert!(framework_json(&master.state().await, fid)["executors"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn teardown_shuts_down_an_agent_running_only_an_executor_and_frees_it() {
    let master = TestMaster::start().await;
    let mut s = Scheduler::subscribe(&master, framework_info("short-lived"), ContentType::Json).await;
    let mut agent = FakeAgent::start(&master).await;
    let offers = s.next_offers().await;
    let executor = executor_info("exec-1", "./my-executor");
    let t1 = executor_task("t1", &agent.agent_id, &executor);
    assert_eq!(s.call(accept_call(&[&offers[0].id], vec![t1])).await, 202);
    assert_eq!(agent.next_message().await.r#type(), master_to_agent::Type::RunTask);
    let finished = status("t1", TaskState::TaskFinished);
    let uuid = finished.uuid.clone().unwrap();
    assert_eq!(agent.send_status(&s.framework_id, finished).await, 202);
    assert_eq!(next_event(&mut s, event::Type::Update).await.event.update.unwrap().status.state(), TaskState::TaskFinished);
    let ack = Call {
        r#type: Some(call::Type::Acknowledge as i32),
        acknowledge: Some(call::Acknowledge {
            agent_id: AgentId { value: agent.agent_id.clone() },
            task_id: TaskId { value: "t1".into() },
            uuid,
        }),
        ..Default::default()
    };
    assert_eq!(s.call(ack).await, 202);
    assert_eq!(agent.next_message().await.r#type(), master_to_agent::Type::Acknowledge);
    let state = master.state().await;
    assert!(framework_json(&state, &s.framework_id)["tasks"].as_array().unwrap().is_empty());
    assert_eq!(state["slaves"][0]["used_resources"]["cpus"], 0.5, "the executor alone");

    assert_eq!(s.call(simple(call::Type::Teardown)).await, 202);
    let msg = agent.next_message().await;
    assert_eq!(msg.r#type(), master_to_agent::Type::ShutdownFramework);
    assert_eq!(msg.shutdown_framework.unwrap().framework_id.value, s.framework_id);
    assert_eq!(master.state().await["slaves"][0]["used_resources"]["cpus"], 0.0);
}

#[tokio::test]
async fn an_executor_whose_launch_never_reached_the_agent_holds_nothing() {
    let master = TestMaster::start_with(MasterConfig {
        agent_request_timeout: Duration::from_millis(500),
        agent_send_attempts: 2,
        ..MasterConfig::default()
    })
    .await;
    let mut s = Scheduler::subscribe(&master, framework_info("unreachable"), ContentType::Json).await;
    let agent = FakeAgent::start(&master).await;
    let offers = s.next_offers().await;
    agent.stop_serving();
    let executor = executor_info("exec-1", "./my-executor");
    let t1 = executor_task("t1", &agent.agent_id, &executor);
    assert_eq!(s.call(accept_call(&[&offers[0].id], vec![t1])).await, 202);
    let update = next_event(&mut s, event::Type::Update).await.event.update.unwrap().status;
    assert_eq!((update.task_id.value.as_str(), update.state()), ("t1", TaskState::TaskLost));
    let offers = s.next_offers().await;
    assert_eq!(scalar_of(&offers[0].resources, "cpus"), 2.0);
    assert!(framework_json(&master.state().await, &s.framework_id)["executors"].as_array().unwrap().is_empty());
}
