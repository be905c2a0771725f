//! The scheduler API end to end over loopback HTTP, with a fake agent.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mezzo_master::MasterConfig;
use mezzo_proto::codec::ContentType;
use mezzo_proto::mesos::v1::scheduler::{call, event, Call};
use mezzo_proto::mesos::v1::{
    framework_info, task_status, AgentId, Filters, FrameworkId, TaskId, TaskState, TaskStatus,
};
use mezzo_proto::mezzo::agent::master_to_agent;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn running_status(task_id: &str, agent_id: &str, uuid: Vec<u8>, state: TaskState) -> TaskStatus {
    TaskStatus {
        task_id: TaskId { value: task_id.into() },
        state: state as i32,
        source: Some(task_status::Source::Executor as i32),
        agent_id: Some(AgentId { value: agent_id.into() }),
        uuid: Some(uuid),
        timestamp: Some(1.0),
        ..Default::default()
    }
}

/// Reads from a raw socket until `needle` has been seen or the wait ends.
async fn read_until(sock: &mut tokio::net::TcpStream, buf: &mut Vec<u8>, pred: impl Fn(&[u8]) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !pred(buf) {
        let mut tmp = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, sock.read(&mut tmp))
            .await
            .expect("timed out reading the raw stream")
            .unwrap();
        assert!(n > 0, "connection closed early: {}", String::from_utf8_lossy(buf));
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// Splits a chunked body into its chunks (only the complete ones).
fn chunks(body: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let Some(pos) = rest.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..pos]).unwrap().trim(), 16).unwrap();
        let start = pos + 2;
        if rest.len() < start + size + 2 {
            return out;
        }
        out.push(rest[start..start + size].to_vec());
        rest = &rest[start + size + 2..];
    }
}

#[tokio::test]
async fn subscribe_is_chunked_recordio_with_one_record_per_chunk() {
    let master = TestMaster::start().await;
    let body = br#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"root","name":"raw","hostname":"","unknown_field":1}}}"#;
    let mut sock = tokio::net::TcpStream::connect(master.addr).await.unwrap();
    let req = format!(
        "POST /api/v1/scheduler HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        master.addr,
        body.len()
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    sock.write_all(body).await.unwrap();
    let mut buf = Vec::new();
    read_until(&mut sock, &mut buf, |b| {
        b.windows(4)
            .position(|w| w == b"\r\n\r\n")
            .is_some_and(|p| chunks(&b[p + 4..]).len() >= 2)
    })
    .await;
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    let stream_id = head
        .lines()
        .find_map(|l| l.strip_prefix("mesos-stream-id: "))
        .expect("Mesos-Stream-Id header");
    assert!(uuid::Uuid::parse_str(stream_id.trim()).is_ok());

    let records = chunks(&buf[split + 4..]);
    let mut kinds = Vec::new();
    for chunk in &records[..2] {
        // Every chunk is exactly one whole record: "<len>\n<json>".
        let nl = chunk.iter().position(|&b| b == b'\n').unwrap();
        let len: usize = std::str::from_utf8(&chunk[..nl]).unwrap().parse().unwrap();
        let record = &chunk[nl + 1..];
        assert_eq!(record.len(), len);
        assert!(record.is_ascii() && !record.contains(&b'\n'));
        let json: serde_json::Value = serde_json::from_slice(record).unwrap();
        kinds.push(json["type"].as_str().unwrap().to_string());
        if json["type"] == "SUBSCRIBED" {
            let fid = json["subscribed"]["framework_id"]["value"].as_str().unwrap();
            let (prefix, seq) = fid.rsplit_once('-').unwrap();
            assert_eq!(seq, "0000");
            assert!(uuid::Uuid::parse_str(prefix).is_ok());
            assert_eq!(json["subscribed"]["heartbeat_interval_seconds"], 15.0);
            assert_eq!(json["subscribed"]["master_info"]["port"], master.addr.port());
            assert_eq!(json["subscribed"]["master_info"]["version"], "1.11.0");
        }
    }
    assert_eq!(kinds, ["SUBSCRIBED", "HEARTBEAT"]);
}

#[tokio::test]
async fn heartbeats_repeat_at_the_interval() {
    let master = TestMaster::start_with(MasterConfig {
        heartbeat_interval: Duration::from_millis(300),
        ..MasterConfig::default()
    })
    .await;
    let mut s = Scheduler::subscribe(&master, framework_info("hb"), ContentType::Json).await;
    for _ in 0..3 {
        let e = s.next().await.unwrap();
        assert_eq!(e.kind(), event::Type::Heartbeat);
        assert_eq!(e.json.unwrap(), serde_json::json!({"type": "HEARTBEAT"}));
    }
}

#[tokio::test]
async fn agent_resources_are_offered() {
    let master = TestMaster::start().await;
    let mut s = Scheduler::subscribe(&master, framework_info("offers"), ContentType::Json).await;
    let agent = FakeAgent::start(&master).await;
    let e = s.expect(event::Type::Offers).await;
    let json = e.json.unwrap();
    assert!(json["offers"]["offers"].is_array(), "payload under 'offers': {json}");
    let offers = e.event.offers.unwrap().offers;
    assert_eq!(offers.len(), 1);
    let offer = &offers[0];
    assert_eq!(offer.agent_id.value, agent.agent_id);
    assert_eq!(offer.framework_id.value, s.framework_id);
    assert_eq!(offer.hostname, "localhost");
    assert_eq!(scalar_of(&offer.resources, "cpus"), 2.0);
    assert_eq!(scalar_of(&offer.resources, "mem"), 1024.0);
    assert_eq!(scalar_of(&offer.resources, "disk"), 4096.0);
    let ports = offer.resources.iter().find(|r| r.name == "ports").unwrap();
    let range = &ports.ranges.as_ref().unwrap().range[0];
    assert_eq!((range.begin, range.end), (31000, 32000));
    let url = offer.url.as_ref().unwrap();
    assert_eq!(url.scheme, "http");
    assert_eq!(url.path.as_deref(), Some("/slave(1)"));
    assert_eq!(
        format!("{}:{}", url.address.ip.as_deref().unwrap(), url.address.port),
        agent.endpoint
    );
    // The offered resources are held: /state shows them offered.
    let state = master.state().await;
    assert_eq!(state["slaves"][0]["offered_resources"]["cpus"], 2.0);
    assert_eq!(state["slaves"][0]["pid"], format!("slave(1)@{}", agent.endpoint));
}

/// The full life of a task: launch, update, acknowledge, kill, over `ct`.
async fn task_lifecycle(ct: ContentType) {
    let master = TestMaster::start().await;
    let mut s = Scheduler::subscribe(&master, framework_info("life"), ct).await;
    let mut agent = FakeAgent::start(&master).await;
    let offers = s.next_offers().await;
    let t = task("t1", &agent.agent_id, vec![scalar("cpus", 0.5), scalar("mem", 128.0)]);
    assert_eq!(s.call(accept_call(&[&offers[0].id], vec![t])).await, 202);

    let msg = agent.next_message().await;
    assert_eq!(msg.r#type(), master_to_agent::Type::RunTask);
    let run = msg.run_task.unwrap();
    assert_eq!(run.task.task_id.value, "t1");
    assert_eq!(run.framework_info.id.unwrap().value, s.framework_id);
    assert_eq!(run.framework_info.name, "life");

    let state = master.state().await;
    let task_json = &state["frameworks"][0]["tasks"][0];
    assert_eq!(task_json["id"], "t1");
    assert_eq!(task_json["state"], "TASK_STAGING");
    assert_eq!(task_json["slave_id"], agent.agent_id);
    assert_eq!(task_json["resources"]["cpus"], 0.5);

    let uuid = mezzo_proto::new_uuid();
    let status = running_status("t1", &agent.agent_id, uuid.clone(), TaskState::TaskRunning);
    assert_eq!(agent.send_status(&s.framework_id, status.clone()).await, 202);
    let (got, json) = s.next_update().await;
    assert_eq!(got, status, "the status is forwarded exactly as received");
    if let Some(json) = json {
        assert_eq!(json["update"]["status"]["agent_id"]["value"], agent.agent_id.as_str());
        assert!(json["update"]["status"]["uuid"].is_string());
    }
    // A retried delivery is forwarded again.
    assert_eq!(agent.send_status(&s.framework_id, status.clone()).await, 202);
    let (again, _) = s.next_update().await;
    assert_eq!(again.uuid, status.uuid);

    let ack = Call {
        r#type: Some(call::Type::Acknowledge as i32),
        acknowledge: Some(call::Acknowledge {
            agent_id: AgentId { value: agent.agent_id.clone() },
            task_id: TaskId { value: "t1".into() },
            uuid: uuid.clone(),
        }),
        ..Default::default()
    };
    assert_eq!(s.call(ack).await, 202);
    let msg = agent.next_message().await;
    assert_eq!(msg.r#type(), master_to_agent::Type::Acknowledge);
    let ack = msg.acknowledge.unwrap();
    assert_eq!(ack.uuid, uuid);
    assert_eq!(ack.task_id.value, "t1");
    assert_eq!(ack.framework_id.value, s.framework_id);

    let state = master.state().await;
    assert_eq!(state["frameworks"][0]["tasks"][0]["state"], "TASK_RUNNING");

    // KILL with task_id only, as pymesos sends it.
    let kill = Call {
        r#type: Some(call::Type::Kill as i32),
        kill: Some(call::Kill {
            task_id: TaskId { value: "t1".into() },
            agent_id: None,
            kill_policy: None,
        }),
        ..Default::default()
    };
    assert_eq!(s.call(kill).await, 202);
    let msg = agent.next_message().await;
    assert_eq!(msg.r#type(), master_to_agent::Type::KillTask);
    assert_eq!(msg.kill_task.unwrap().task_id.value, "t1");

    // TASK_KILLED frees the resources and, once acknowledged, retires the task.
    let killed_uuid = mezzo_proto::new_uuid();
    let killed = running_status("t1", &agent.agent_id, killed_uuid.clone(), TaskState::TaskKilled);
    assert_eq!(agent.send_status(&s.framework_id, killed).await, 202);
    let (got, _) = s.next_update().await;
    assert_eq!(got.state(), TaskState::TaskKilled);
    let ack = Call {
        r#type: Some(call::Type::Acknowledge as i32),
        acknowledge: Some(call::Acknowledge {
            agent_id: AgentId { value: agent.agent_id.clone() },
            task_id: TaskId { value: "t1".into() },
            uuid: killed_uuid,
        }),
        ..Default::default()
    };
    assert_eq!(s.call(ack).await, 202);
    let state = master.state().await;
    assert_eq!(state["frameworks"][0]["tasks"].as_array().unwrap().len(), 0);
    assert_eq!(state["frameworks"][0]["completed_tasks"][0]["state"], "TASK_KILLED");
    assert_eq!(state["slaves"][0]["used_resources"]["cpus"], 0.0);
    let tasks: serde_json::Value =
        serde_json::from_str(&reqwest::get(master.url("/master/tasks/")).await.unwrap().text().await.unwrap()).unwrap();
    assert_eq!(tasks["tasks"][0]["id"], "t1");
    assert_eq!(tasks["tasks"][0]["executor_id"], "");
}

#[tokio::test]
async fn task_lifecycle_json() {
    task_lifecycle(ContentType::Json).await;
}

#[tokio::test]
async fn task_lifecycle_protobuf() {
    task_lifecycle(ContentType::Protobuf).await;
}

#[tokio::test]
async fn task_over_the_offer_gets_task_error() {
    let master = TestMaster::start().await;
    let mut s = Scheduler::subscribe(&master, framework_info("big"), ContentType::Json).await;
    let mut agent = FakeAgent::start(&master).await;
    let offers = s.next_offers().await;
    let fits = task("small", &agent.agent_id, vec![scalar("cpus", 1.5)]);
    // Together the two tasks ask for more than the offer holds.
    let too_big = task("big", &agent.agent_id, vec![scalar("cpus", 1.0)]);
    assert_eq!(s.call(accept_call(&[&offers[0].id], vec![fits, too_big])).await, 202);
    let (status, json) = s.next_update().await;
    assert_eq!(status.task_id.value, "big");
    assert_eq!(status.state(), TaskState::TaskError);
    assert_eq!(status.reason(), task_status::Reason::TaskInvalid);
    assert_eq!(status.source(), task_status::Source::Master);
    assert!(status.message.unwrap().contains("more resources"));
    assert!(status.uuid.is_none());
    assert!(json.unwrap()["update"]["status"].get("uuid").is_none());
    let msg = agent.next_message().await;
    assert_eq!(msg.run_task.unwrap().task.task_id.value, "small");
    assert!(agent.silent_for(Duration::from_millis(300)).await, "the invalid task never reaches the agent");

    // A duplicate task id is invalid too.
    let offers = s.next_offers().await;
    assert_eq!(scalar_of(&offers[0].resources, "cpus"), 0.5);
    let dup = task("small", &agent.agent_id, vec![scalar("cpus", 0.1)]);
    assert_eq!(s.call(accept_call(&[&offers[0].id], vec![dup])).await, 202);
    let (status, _) = s.next_update().await;
    assert_eq!(status.state(), TaskState::TaskError);
    assert!(status.message.unwrap().contains("duplicate"));
}

#[tokio::test]
async fn launch_with_unknown_offer_is_dropped() {
    let master = TestMaster::start().await;
    let mut info = framework_info("aware");
    info.capabilities.push(framework_info::Capability {
        r#type: Some(framework_info::capability::Type::PartitionAware as i32),
    });
    let mut aware = Scheduler::subscribe(&master, info, ContentType::Json).await;
    let mut plain = Scheduler::subscribe(&master, framework_info("plain"), ContentType::Json).await;
    let bogus = mezzo_proto::mesos::v1::OfferId { value: "no-such-offer".into() };
    let t = task("t", "some-agent", vec![scalar("cpus", 0.1)]);
    assert_eq!(aware.call(accept_call(&[&bogus], vec![t.clone()])).await, 202);
    let (status, _) = aware.next_update().await;
    assert_eq!(status.state(), TaskState::TaskDropped);
    assert_eq!(status.reason(), task_status::Reason::InvalidOffers);
    assert_eq!(plain.call(accept_call(&[&bogus], vec![t])).await, 202);
    let (status, _) = plain.next_update().await;
    assert_eq!(status.state(), TaskState::TaskLost);
    assert_eq!(status.reason(), task_status::Reason::InvalidOffers);
}

#[tokio::test]
async fn decline_refuses_the_agent_for_refuse_seconds() {
    let master = TestMaster::start().await;
    let mut s = Scheduler::subscribe(&master, framework_info("decline"), ContentType::Json).await;
    let _agent = FakeAgent::start(&master).await;
    let offers = s.next_offers().await;
    let decline = Call {
        r#type: Some(call::Type::Decline as i32),
        decline: Some(call::Decline {
            offer_ids: vec![offers[0].id.clone()],
            filters: Some(Filters { refuse_seconds: Some(2.0) }),
        }),
        ..Default::default()
    };
    let declined_at = Instant::now();
    assert_eq!(s.call(decline).await, 202);
    let again = s.next_offers().await;
    let waited = declined_at.elapsed();
    assert!(waited >= Duration::from_millis(1900), "re-offered after {waited:?}");
    assert!(waited < Duration::from_secs(5), "re-offered only after {waited:?}");
    assert_ne!(again[0].id, offers[0].id);

    // REVIVE clears the filter: a decline for an hour, then revive, re-offers at once.
    let decline = Call {
        r#type: Some(call::Type::Decline as i32),
        decline: Some(call::Decline {
            offer_ids: vec![again[0].id.clone()],
            filters: Some(Filters { refuse_seconds: Some(3600.0) }),
        }),
        ..Default::default()
    };
    assert_eq!(s.call(decline).await, 202);
    let revive = Call {
        r#type: Some(call::Type::Revive as i32),
        revive: Some(call::Revive { roles: vec![] }),
        ..Default::default()
    };
    let revived_at = Instant::now();
    assert_eq!(s.call(revive).await, 202);
    s.next_offers().await;
    assert!(revived_at.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn reconcile_answers_from_the_master_without_uuid() {
    let master = TestMaster::start().await;
    let mut s = Scheduler::subscribe(&master, framework_info("rec"), ContentType::Json).await;
    let mut agent = FakeAgent::start(&master).await;
    let offers = s.next_offers().await;
    let t = task("r1", &agent.agent_id, vec![scalar("cpus", 0.1)]);
    assert_eq!(s.call(accept_call(&[&offers[0].id], vec![t])).await, 202);
    agent.next_message().await;
    let status = running_status("r1", &agent.agent_id, mezzo_proto::new_uuid(), TaskState::TaskRunning);
    agent.send_status(&s.framework_id, status).await;
    s.next_update().await;

    // Implicit: every known task, latest state.
    let implicit = Call {
        r#type: Some(call::Type::Reconcile as i32),
        reconcile: Some(call::Reconcile { tasks: vec![] }),
        ..Default::default()
    };
    assert_eq!(s.call(implicit).await, 202);
    let (status, json) = s.next_update().await;
    assert_eq!(status.task_id.value, "r1");
    assert_eq!(status.state(), TaskState::TaskRunning);
    assert_eq!(status.source(), task_status::Source::Master);
    assert_eq!(status.reason(), task_status::Reason::Reconciliation);
    assert_eq!(status.agent_id.unwrap().value, agent.agent_id);
    assert!(status.uuid.is_none());
    let json = json.unwrap();
    assert!(json["update"]["status"].get("uuid").is_none(), "{json}");
    assert_eq!(json["update"]["status"]["reason"], "REASON_RECONCILIATION");
    assert_eq!(json["update"]["status"]["source"], "SOURCE_MASTER");
    assert_eq!(json["update"]["status"]["state"], "TASK_RUNNING");

    // Explicit, with an unknown task and no agent id: TASK_LOST (not partition aware).
    let explicit = Call {
        r#type: Some(call::Type::Reconcile as i32),
        reconcile: Some(call::Reconcile {
            tasks: vec![
                call::reconcile::Task { task_id: TaskId { value: "r1".into() }, agent_id: None },
                call::reconcile::Task { task_id: TaskId { value: "ghost".into() }, agent_id: None },
            ],
        }),
        ..Default::default()
    };
    assert_eq!(s.call(explicit).await, 202);
    let (first, _) = s.next_update().await;
    assert_eq!((first.task_id.value.as_str(), first.state()), ("r1", TaskState::TaskRunning));
    let (second, _) = s.next_update().await;
    assert_eq!((second.task_id.value.as_str(), second.state()), ("ghost", TaskState::TaskLost));
    assert_eq!(second.reason(), task_status::Reason::Reconciliation);
    assert!(second.uuid.is_none());

    // KILL of an unknown task is answered by reconciliation.
    let kill = Call {
        r#type: Some(call::Type::Kill as i32),
        kill: Some(call::Kill { task_id: TaskId { value: "ghost".into() }, agent_id: None, kill_policy: None }),
        ..Default::default()
    };
    assert_eq!(s.call(kill).await, 202);
    let (status, _) = s.next_update().await;
    assert_eq!(status.state(), TaskState::TaskLost);
    assert!(agent.silent_for(Duration::from_millis(200)).await);
}

#[tokio::test]
async fn teardown_shuts_the_framework_down() {
    let master = TestMaster::start().await;
    let mut s = Scheduler::subscribe(&master, framework_info("bye"), ContentType::Json).await;
    let mut agent = FakeAgent::start(&master).await;
    let offers = s.next_offers().await;
    let t = task("t", &agent.agent_id, vec![scalar("cpus", 1.0)]);
    assert_eq!(s.call(accept_call(&[&offers[0].id], vec![t])).await, 202);
    agent.next_message().await;
    let teardown = Call { r#type: Some(call::Type::Teardown as i32), ..Default::default() };
    assert_eq!(s.call(teardown.clone()).await, 202);
    let msg = agent.next_message().await;
    assert_eq!(msg.r#type(), master_to_agent::Type::ShutdownFramework);
    assert_eq!(msg.shutdown_framework.unwrap().framework_id.value, s.framework_id);
    // The stream ends.
    assert!(s.next_non_heartbeat().await.is_none());
    // The framework is gone: calls are rejected, state lists it as completed.
    assert_eq!(s.call(teardown).await, 400);
    let state = master.state().await;
    assert_eq!(state["frameworks"].as_array().unwrap().len(), 0);
    assert_eq!(state["completed_frameworks"][0]["id"], s.framework_id);
    assert_eq!(state["slaves"][0]["used_resources"]["cpus"], 0.0);
}

#[tokio::test]
async fn resubscribe_fails_over_and_keeps_tasks() {
    let master = TestMaster::start().await;
    let mut old = Scheduler::subscribe(&master, framework_info("fo"), ContentType::Json).await;
    let mut agent = FakeAgent::start(&master).await;
    let offers = old.next_offers().await;
    let t = task("kept", &agent.agent_id, vec![scalar("cpus", 0.1)]);
    assert_eq!(old.call(accept_call(&[&offers[0].id], vec![t])).await, 202);
    agent.next_message().await;

    let mut info = framework_info("fo");
    info.id = Some(FrameworkId { value: old.framework_id.clone() });
    info.failover_timeout = Some(100.0);
    let new = Scheduler::subscribe(&master, info, ContentType::Json).await;
    assert_eq!(new.framework_id, old.framework_id);
    assert_ne!(new.stream_id, old.stream_id);
    let e = old.expect(event::Type::Error).await;
    assert_eq!(e.event.error.unwrap().message, "Framework failed over");
    assert!(old.next().await.is_none(), "the old stream is closed");
    // The old stream id no longer works; the new one does.
    let revive = Call { r#type: Some(call::Type::Revive as i32), ..Default::default() };
    assert_eq!(old.call(revive.clone()).await, 400);
    assert_eq!(new.call(revive).await, 202);
    let state = master.state().await;
    assert_eq!(state["frameworks"][0]["tasks"][0]["id"], "kept");
}

#[tokio::test]
async fn silent_agent_is_removed_and_its_tasks_lost() {
    let master = TestMaster::start_with(MasterConfig {
        agent_ping_timeout: Duration::from_millis(1500),
        ..MasterConfig::default()
    })
    .await;
    let mut s = Scheduler::subscribe(&master, framework_info("lost"), ContentType::Json).await;
    let mut agent = FakeAgent::start(&master).await;
    let offers = s.next_offers().await;
    let t = task("t", &agent.agent_id, vec![scalar("cpus", 0.5)]);
    assert_eq!(s.call(accept_call(&[&offers[0].id], vec![t])).await, 202);
    agent.next_message().await;
    // The rest of the agent is offered again (after the accept's 5 s filter
    // it would be; here the agent goes silent first). No pings follow.
    let mut lost = None;
    let mut failure = false;
    while lost.is_none() || !failure {
        let e = s.next_non_heartbeat().await.expect("stream ended");
        match e.kind() {
            event::Type::Update => lost = Some(e.event.update.unwrap().status),
            event::Type::Failure => failure = true,
            event::Type::Offers | event::Type::Rescind => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let lost = lost.unwrap();
    assert_eq!(lost.state(), TaskState::TaskLost);
    assert_eq!(lost.reason(), task_status::Reason::AgentRemoved);
    assert!(lost.uuid.is_none());
    // The removed agent's session is over: its pings are refused.
    assert_eq!(agent.ping().await, 401);
    // Re-registering with the old id (and its secret) keeps it.
    let reg = agent.register(Some(&agent.agent_id), agent_resources()).await;
    assert_eq!(reg.agent_id.value, agent.agent_id);
    assert!(reg.ping_interval_seconds.unwrap() > 0.0);
}

#[tokio::test]
async fn suppress_stops_offers() {
    let master = TestMaster::start().await;
    let mut s = Scheduler::subscribe(&master, framework_info("quiet"), ContentType::Json).await;
    let suppress = Call { r#type: Some(call::Type::Suppress as i32), ..Default::default() };
    assert_eq!(s.call(suppress).await, 202);
    let _agent = FakeAgent::start(&master).await;
    let quiet = tokio::time::timeout(Duration::from_millis(1500), s.next_non_heartbeat()).await;
    assert!(quiet.is_err(), "no offers while suppressed");
    let revive = Call { r#type: Some(call::Type::Revive as i32), ..Default::default() };
    assert_eq!(s.call(revive).await, 202);
    s.next_offers().await;
}

#[tokio::test]
async fn disconnected_framework_is_removed_after_failover_timeout() {
    let master = TestMaster::start().await;
    let mut info = framework_info("gone");
    info.failover_timeout = Some(0.5);
    let mut s = Scheduler::subscribe(&master, info, ContentType::Json).await;
    let mut agent = FakeAgent::start(&master).await;
    let offers = s.next_offers().await;
    let t = task("t", &agent.agent_id, vec![scalar("cpus", 0.1)]);
    assert_eq!(s.call(accept_call(&[&offers[0].id], vec![t])).await, 202);
    agent.next_message().await;
    let framework_id = s.framework_id.clone();
    let disconnected_at = Instant::now();
    drop(s);
    let msg = agent.next_message().await;
    assert_eq!(msg.r#type(), master_to_agent::Type::ShutdownFramework);
    assert_eq!(msg.shutdown_framework.unwrap().framework_id.value, framework_id);
    assert!(disconnected_at.elapsed() >= Duration::from_millis(450));
    let state = master.state().await;
    assert_eq!(state["completed_frameworks"][0]["id"], framework_id);
}

#[tokio::test]
async fn disconnected_framework_is_forbidden_until_it_resubscribes() {
    let master = TestMaster::start().await;
    let mut info = framework_info("back");
    info.failover_timeout = Some(100.0);
    let s = Scheduler::subscribe(&master, info.clone(), ContentType::Json).await;
    let (framework_id, stream_id, client) = (s.framework_id.clone(), s.stream_id.clone(), s.client.clone());
    drop(s);
    let revive = Call {
        framework_id: Some(FrameworkId { value: framework_id.clone() }),
        r#type: Some(call::Type::Revive as i32),
        ..Default::default()
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let resp = client
            .post(master.url("/api/v1/scheduler"))
            .header("Content-Type", "application/json")
            .header("Mesos-Stream-Id", &stream_id)
            .body(mezzo_proto::codec::encode(&revive, ContentType::Json))
            .send()
            .await
            .unwrap();
        if resp.status() == 403 {
            break;
        }
        assert_eq!(resp.status(), 202);
        assert!(Instant::now() < deadline, "disconnection never noticed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    info.id = Some(FrameworkId { value: framework_id.clone() });
    let again = Scheduler::subscribe(&master, info, ContentType::Json).await;
    assert_eq!(again.framework_id, framework_id);
}
