//! Validation at the edge: what a careless or hostile scheduler sends is
//! refused with an error naming the field, the master stays up, and the
//! offer's resources come back.

mod common;

use std::time::Duration;

use common::*;
use mezzo_master::STREAM_ID_HEADER;
use mezzo_proto::codec::{self, ContentType};
use mezzo_proto::mesos::v1::scheduler::{call, Call};
use mezzo_proto::mesos::v1::{
    environment, offer, task_status, Environment, Filters, FrameworkId, TaskState,
};

/// Sends `c` as `s` and returns the status and body.
async fn call_text(s: &Scheduler, mut c: Call) -> (u16, String) {
    if c.framework_id.is_none() {
        c.framework_id = Some(FrameworkId { value: s.framework_id.clone() });
    }
    let resp = s
        .client
        .post(format!("http://{}/api/v1/scheduler", s.master))
        .header("Content-Type", s.content_type.mime())
        .header(STREAM_ID_HEADER, &s.stream_id)
        .body(codec::encode(&c, s.content_type))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// An ACCEPT whose leftovers are not filtered, so they are offered again at once.
fn accept_unfiltered(offer: &mezzo_proto::mesos::v1::OfferId, tasks: Vec<mezzo_proto::mesos::v1::TaskInfo>) -> Call {
    let mut c = accept_call(&[offer], tasks);
    c.accept.as_mut().unwrap().filters = Some(Filters { refuse_seconds: Some(0.0) });
    c
}

/// The next offer holds the agent's whole resources again; returns its id.
async fn offer_is_whole(s: &mut Scheduler) -> mezzo_proto::mesos::v1::OfferId {
    let offers = s.next_offers().await;
    assert_eq!(scalar_of(&offers[0].resources, "cpus"), 2.0, "{:?}", offers[0].resources);
    assert_eq!(scalar_of(&offers[0].resources, "mem"), 1024.0);
    offers[0].id.clone()
}

#[tokio::test]
async fn huge_cpus_twice_get_task_error_and_the_master_lives_and_resources_return() {
    let master = TestMaster::start().await;
    let mut s = Scheduler::subscribe(&master, framework_info("huge"), ContentType::Json).await;
    let mut agent = FakeAgent::start(&master).await;
    let offers = s.next_offers().await;
    let t = task("huge", &agent.agent_id, vec![scalar("cpus", 1e300), scalar("cpus", 1e300)]);
    assert_eq!(s.call(accept_unfiltered(&offers[0].id, vec![t])).await, 202);
    let (status, _) = s.next_update().await;
    assert_eq!(status.task_id.value, "huge");
    assert_eq!(status.state(), TaskState::TaskError);
    assert_eq!(status.reason(), task_status::Reason::TaskInvalid);
    let message = status.message.unwrap();
    assert!(message.contains("resources") && message.contains("'cpus'"), "{message}");
    assert!(agent.silent_for(Duration::from_millis(200)).await, "nothing is sent to the agent");
    // The master is alive and the offer's resources come back.
    let health = reqwest::get(master.url("/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    let mut offer_id = offer_is_whole(&mut s).await;
    assert_eq!(master.state().await["slaves"][0]["used_resources"]["cpus"], 0.0);

    // Infinite and negative amounts are refused the same way.
    for (id, bad) in [("inf", f64::INFINITY), ("neg", -1.0), ("nan", f64::NAN)] {
        let t = task(id, &agent.agent_id, vec![scalar("mem", bad)]);
        let mut c = accept_unfiltered(&offer_id, vec![t]);
        // JSON has no NaN or infinity: send these as protobuf.
        c.framework_id = Some(FrameworkId { value: s.framework_id.clone() });
        let resp = s
            .client
            .post(format!("http://{}/api/v1/scheduler", s.master))
            .header("Content-Type", ContentType::Protobuf.mime())
            .header(STREAM_ID_HEADER, &s.stream_id)
            .body(codec::encode(&c, ContentType::Protobuf))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        let (status, _) = s.next_update().await;
        assert_eq!((status.task_id.value.as_str(), status.state()), (id, TaskState::TaskError));
        assert!(status.message.unwrap().contains("'mem'"));
        offer_id = offer_is_whole(&mut s).await;
    }
}

#[tokio::test]
async fn bad_framework_ids_are_refused_with_400_naming_framework_id() {
    let master = TestMaster::start().await;
    let long = "x".repeat(10_000);
    let too_long = "y".repeat(256);
    for id in ["a/b", "a\0b", "../..", "..", ".", "a b", long.as_str(), too_long.as_str()] {
        for ct in [ContentType::Json, ContentType::Protobuf] {
            let mut info = framework_info("bad-id");
            info.id = Some(FrameworkId { value: id.to_string() });
            let resp = reqwest::Client::new()
                .post(master.url("/api/v1/scheduler"))
                .header("Content-Type", ct.mime())
                .body(codec::encode(&subscribe_call(info), ct))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 400, "framework id {:?}", &id[..id.len().min(20)]);
            let text = resp.text().await.unwrap();
            assert!(text.contains("'framework_id'"), "{text}");
            assert!(text.len() < 400, "the message does not echo the whole id");
        }
    }
    // None of these made a framework; a valid id of 255 bytes is fine.
    assert_eq!(master.state().await["frameworks"].as_array().unwrap().len(), 0);
    let mut info = framework_info("ok-id");
    info.id = Some(FrameworkId { value: "z".repeat(255) });
    let s = Scheduler::subscribe(&master, info, ContentType::Json).await;
    assert_eq!(s.framework_id, "z".repeat(255));

    // The other calls check their framework id the same way.
    let c = Call {
        framework_id: Some(FrameworkId { value: "../..".into() }),
        r#type: Some(call::Type::Revive as i32),
        ..Default::default()
    };
    let (code, text) = call_text(&s, c).await;
    assert_eq!(code, 400);
    assert!(text.contains("'framework_id'"), "{text}");
}

#[tokio::test]
async fn task_id_of_256_bytes_gets_task_error() {
    let master = TestMaster::start().await;
    let mut s = Scheduler::subscribe(&master, framework_info("long"), ContentType::Json).await;
    let mut agent = FakeAgent::start(&master).await;
    let offers = s.next_offers().await;
    let long = "t".repeat(256);
    let t = task(&long, &agent.agent_id, vec![scalar("cpus", 0.5)]);
    assert_eq!(s.call(accept_unfiltered(&offers[0].id, vec![t])).await, 202);
    let (status, _) = s.next_update().await;
    assert_eq!(status.task_id.value, long);
    assert_eq!(status.state(), TaskState::TaskError);
    assert_eq!(status.reason(), task_status::Reason::TaskInvalid);
    let message = status.message.unwrap();
    assert!(message.contains("'task_id'") && message.contains("255"), "{message}");
    assert!(agent.silent_for(Duration::from_millis(200)).await);
    // 255 bytes is the limit and launches.
    let offers = s.next_offers().await;
    let ok = "t".repeat(255);
    let t = task(&ok, &agent.agent_id, vec![scalar("cpus", 0.5)]);
    assert_eq!(s.call(accept_unfiltered(&offers[0].id, vec![t])).await, 202);
    let msg = agent.next_message().await;
    assert_eq!(msg.run_task.unwrap().task.task_id.value, ok);
}

#[tokio::test]
async fn nul_in_env_gets_task_error_and_nothing_runs() {
    let master = TestMaster::start().await;
    let mut s = Scheduler::subscribe(&master, framework_info("nul"), ContentType::Json).await;
    let mut agent = FakeAgent::start(&master).await;
    let cases: Vec<(&str, &str, Box<dyn Fn(&mut mezzo_proto::mesos::v1::CommandInfo)>)> = vec![
        ("env-value", "command.environment.variables[0].value", Box::new(|c| {
            c.environment = Some(Environment {
                variables: vec![environment::Variable {
                    name: "EVIL".into(),
                    value: Some("a\0b".into()),
                    ..Default::default()
                }],
            })
        })),
        ("env-name", "command.environment.variables[0].name", Box::new(|c| {
            c.environment = Some(Environment {
                variables: vec![environment::Variable {
                    name: "E\0VIL".into(),
                    value: Some("x".into()),
                    ..Default::default()
                }],
            })
        })),
        ("value", "command.value", Box::new(|c| c.value = Some("echo a\0b".into()))),
        ("argument", "command.arguments[1]", Box::new(|c| c.arguments = vec!["sh".into(), "-c\0".into()])),
        ("user", "command.user", Box::new(|c| c.user = Some("no\0body".into()))),
    ];
    for (id, field, edit) in cases {
        let offers = s.next_offers().await;
        let mut t = task(id, &agent.agent_id, vec![scalar("cpus", 0.5)]);
        edit(t.command.as_mut().unwrap());
        assert_eq!(s.call(accept_unfiltered(&offers[0].id, vec![t])).await, 202);
        let (status, _) = s.next_update().await;
        assert_eq!(status.task_id.value, id);
        assert_eq!(status.state(), TaskState::TaskError);
        assert_eq!(status.reason(), task_status::Reason::TaskInvalid);
        let message = status.message.unwrap();
        assert!(message.contains(&format!("'{field}'")), "{id}: {message}");
        assert!(agent.silent_for(Duration::from_millis(100)).await, "{id}: nothing reaches the agent");
    }
    let state = master.state().await;
    assert_eq!(state["frameworks"][0]["tasks"].as_array().unwrap().len(), 0);
    assert_eq!(state["slaves"][0]["used_resources"]["cpus"], 0.0);
}

#[tokio::test]
async fn reserve_and_other_operations_get_400_and_the_offer_stays_usable() {
    let master = TestMaster::start().await;
    let mut s = Scheduler::subscribe(&master, framework_info("reserve"), ContentType::Json).await;
    let mut agent = FakeAgent::start(&master).await;
    let offers = s.next_offers().await;
    let offer_id = offers[0].id.clone();
    for (op, name) in [
        (offer::operation::Type::Reserve, "RESERVE"),
        (offer::operation::Type::Unreserve, "UNRESERVE"),
        (offer::operation::Type::Create, "CREATE"),
        (offer::operation::Type::Destroy, "DESTROY"),
        (offer::operation::Type::GrowVolume, "GROW_VOLUME"),
        (offer::operation::Type::ShrinkVolume, "SHRINK_VOLUME"),
        (offer::operation::Type::CreateDisk, "CREATE_DISK"),
        (offer::operation::Type::DestroyDisk, "DESTROY_DISK"),
    ] {
        // The unsupported operation comes with a launch: neither happens.
        let mut c = accept_unfiltered(&offer_id, vec![task("t", &agent.agent_id, vec![scalar("cpus", 1.0)])]);
        c.accept.as_mut().unwrap().operations.insert(
            0,
            offer::Operation {
                r#type: Some(op as i32),
                ..Default::default()
            },
        );
        let (code, text) = call_text(&s, c).await;
        assert_eq!(code, 400, "{name}: {text}");
        assert!(text.contains(name) && text.contains("accept.operations[0]"), "{text}");
    }
    assert!(agent.silent_for(Duration::from_millis(200)).await, "no task was launched");
    let state = master.state().await;
    assert_eq!(state["frameworks"][0]["offers"].as_array().unwrap().len(), 1, "the offer is still outstanding");
    // The same offer still holds all its resources: a task taking all of them launches.
    let all = task("all", &agent.agent_id, vec![scalar("cpus", 2.0), scalar("mem", 1024.0)]);
    assert_eq!(s.call(accept_unfiltered(&offer_id, vec![all])).await, 202);
    let msg = agent.next_message().await;
    assert_eq!(msg.run_task.unwrap().task.task_id.value, "all");
}
