//! Mesos's JSON mapping: output shape, and input exactly as real clients
//! (pymesos, avmesos/mesoshttp, mentos) send it.

use mezzo_proto::mesos::v1::{
    self as v1, executor, scheduler, task_status, value, AgentId, TaskId, TaskInfo, TaskState,
    TaskStatus,
};
use mezzo_proto::{from_json, json, to_json, to_json_value, ProtoError};

const UUID: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
const UUID_BASE64: &str = "AAECAwQFBgcICQoLDA0ODw==";

fn status() -> TaskStatus {
    TaskStatus {
        task_id: TaskId { value: "t1".into() },
        state: TaskState::TaskFinished as i32,
        source: Some(task_status::Source::Executor as i32),
        reason: Some(task_status::Reason::CommandExecutorFailed as i32),
        agent_id: Some(AgentId { value: "a1".into() }),
        timestamp: Some(1700000000.5),
        uuid: Some(UUID.to_vec()),
        ..Default::default()
    }
}

fn task_info() -> TaskInfo {
    let mut task = TaskInfo {
        name: "web".into(),
        task_id: TaskId { value: "t1".into() },
        agent_id: AgentId { value: "a1".into() },
        command: Some(v1::CommandInfo {
            value: Some("echo hi".into()),
            ..Default::default()
        }),
        kill_policy: Some(v1::KillPolicy {
            grace_period: Some(v1::DurationInfo {
                nanoseconds: 10_000_000_000,
            }),
        }),
        ..Default::default()
    };
    task.limits
        .insert("cpus".into(), value::Scalar { value: 1.5 });
    task
}

#[test]
fn task_status_json_shape() {
    let text = to_json(&status());
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        value,
        serde_json::json!({
            "task_id": {"value": "t1"},
            "state": "TASK_FINISHED",
            "source": "SOURCE_EXECUTOR",
            "reason": "REASON_COMMAND_EXECUTOR_FAILED",
            "agent_id": {"value": "a1"},
            "timestamp": 1700000000.5,
            "uuid": UUID_BASE64,
        })
    );
    assert_eq!(to_json_value(&status()), value);
}

#[test]
fn task_status_round_trips_through_json() {
    let decoded: TaskStatus = from_json(to_json(&status()).as_bytes()).unwrap();
    assert_eq!(decoded, status());
}

#[test]
fn task_info_round_trips_through_json_with_limits_map() {
    let text = to_json(&task_info());
    assert!(
        text.contains(r#""limits":{"cpus":{"value":1.5}}"#),
        "{text}"
    );
    let decoded: TaskInfo = from_json(text.as_bytes()).unwrap();
    assert_eq!(decoded, task_info());
}

#[test]
fn int64_is_a_json_number() {
    let text = to_json(&task_info());
    assert!(
        text.contains(r#""grace_period":{"nanoseconds":10000000000}"#),
        "{text}"
    );
    let stats = v1::ResourceStatistics {
        timestamp: 1.0,
        mem_rss_bytes: Some(u64::MAX),
        net_rx_bytes: Some(7),
        ..Default::default()
    };
    let text = to_json(&stats);
    assert!(
        text.contains(r#""mem_rss_bytes":18446744073709551615"#),
        "{text}"
    );
    assert!(text.contains(r#""net_rx_bytes":7"#), "{text}");
}

#[test]
fn int64_accepted_as_number_or_string() {
    for body in [r#"{"nanoseconds": 42}"#, r#"{"nanoseconds": "42"}"#] {
        let d: v1::DurationInfo = from_json(body.as_bytes()).unwrap();
        assert_eq!(d.nanoseconds, 42);
    }
}

#[test]
fn unset_fields_are_omitted_and_set_defaults_kept() {
    let info = v1::FrameworkInfo {
        user: "".into(),
        name: "fw".into(),
        checkpoint: Some(false),
        ..Default::default()
    };
    let text = to_json(&info);
    assert_eq!(text, r#"{"user":"","name":"fw","checkpoint":false}"#);
}

#[test]
fn output_is_compact_and_ascii_only() {
    let mut s = status();
    s.message = Some("caf\u{e9} \u{1F600} \"q\"\n".into());
    let text = to_json(&s);
    assert!(text.is_ascii(), "{text}");
    assert!(!text.contains('\n'), "{text}");
    assert!(!text.contains(": "), "{text}");
    assert!(
        text.contains(r#""message":"caf\u00e9 \ud83d\ude00 \"q\"\n""#),
        "{text}"
    );
    let decoded: TaskStatus = from_json(text.as_bytes()).unwrap();
    assert_eq!(decoded.message(), "caf\u{e9} \u{1F600} \"q\"\n");
}

#[test]
fn pymesos_subscribe_with_unknown_and_empty_fields() {
    let body = br#"{
        "type": "SUBSCRIBE",
        "subscribe": {
            "framework_info": {
                "user": "root", "name": "pymesos", "hostname": "", "webui_url": "",
                "failover_timeout": 100,
                "capabilities": [{"type": "GPU_RESOURCES"}, {"type": "SOMETHING_NEWER"}],
                "roles": ["*"]
            },
            "credentials": [{"principal": "p", "secret": "s"}]
        },
        "requests": []
    }"#;
    let call: scheduler::Call = from_json(body).unwrap();
    assert_eq!(call.r#type(), scheduler::call::Type::Subscribe);
    let info = call.subscribe.unwrap().framework_info;
    assert_eq!(info.user, "root");
    assert_eq!(info.hostname.as_deref(), Some(""));
    assert_eq!(info.failover_timeout, Some(100.0));
    assert_eq!(
        info.capabilities[0].r#type(),
        v1::framework_info::capability::Type::GpuResources
    );
    assert_eq!(info.roles, vec!["*".to_string()]);
}

#[test]
fn resubscribe_carries_framework_id() {
    let body = br#"{"framework_id":{"value":"fw-1"},"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"u","name":"n","id":{"value":"fw-1"}}}}"#;
    let call: scheduler::Call = from_json(body).unwrap();
    assert_eq!(call.framework_id.unwrap().value, "fw-1");
    assert_eq!(
        call.subscribe.unwrap().framework_info.id.unwrap().value,
        "fw-1"
    );
}

#[test]
fn avmesos_accept_with_slave_id_in_task_info() {
    let body = br#"{"framework_id":{"value":"fw"},"type":"ACCEPT","accept":{
        "offer_ids":[{"value":"o1"}],
        "operations":[{"type":"LAUNCH","launch":{"task_infos":[{
            "name":"t","task_id":{"value":"t1"},
            "agent_id":{"value":"a1"},"slave_id":{"value":"a1"},
            "resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":0.1}},
                         {"name":"ports","type":"RANGES","ranges":{"range":[{"begin":31000,"end":"31001"}]}}],
            "command":{"shell":true,"value":"sleep 5"},
            "container":{"type":"DOCKER","docker":{"image":"busybox","network":"BRIDGE","force_pull_image":false}}
        }]}}],
        "filters":{"refuse_seconds":5.0}}}"#;
    let call: scheduler::Call = from_json(body).unwrap();
    let accept = call.accept.unwrap();
    assert_eq!(accept.offer_ids[0].value, "o1");
    let op = &accept.operations[0];
    assert_eq!(op.r#type(), v1::offer::operation::Type::Launch);
    let task = &op.launch.as_ref().unwrap().task_infos[0];
    assert_eq!(task.agent_id.value, "a1");
    assert_eq!(
        task.resources[1].ranges.as_ref().unwrap().range[0].end,
        31001
    );
    let docker = task.container.as_ref().unwrap().docker.as_ref().unwrap();
    assert_eq!(
        docker.network(),
        v1::container_info::docker_info::Network::Bridge
    );
    // The unknown slave_id is dropped, never echoed back.
    assert!(!to_json(task).contains("slave_id"));
}

#[test]
fn pymesos_kill_without_agent_id() {
    let call: scheduler::Call = from_json(
        br#"{"framework_id":{"value":"fw"},"type":"KILL","kill":{"task_id":{"value":"t1"}}}"#,
    )
    .unwrap();
    let kill = call.kill.unwrap();
    assert_eq!(kill.task_id.value, "t1");
    assert!(kill.agent_id.is_none());
}

#[test]
fn implicit_reconcile_with_empty_task_list() {
    let call: scheduler::Call = from_json(
        br#"{"framework_id":{"value":"fw"},"type":"RECONCILE","reconcile":{"tasks":[]}}"#,
    )
    .unwrap();
    assert_eq!(call.r#type(), scheduler::call::Type::Reconcile);
    assert!(call.reconcile.unwrap().tasks.is_empty());

    let call: scheduler::Call = from_json(
        br#"{"framework_id":{"value":"fw"},"type":"RECONCILE","reconcile":{"tasks":[{"task_id":{"value":"t1"}}]}}"#,
    )
    .unwrap();
    assert_eq!(call.reconcile.unwrap().tasks[0].task_id.value, "t1");
}

#[test]
fn acknowledge_with_base64_uuid() {
    let body = format!(
        r#"{{"framework_id":{{"value":"fw"}},"type":"ACKNOWLEDGE","acknowledge":{{"agent_id":{{"value":"a1"}},"task_id":{{"value":"t1"}},"uuid":"{UUID_BASE64}"}}}}"#
    );
    let call: scheduler::Call = from_json(body.as_bytes()).unwrap();
    assert_eq!(call.acknowledge.unwrap().uuid, UUID.to_vec());
}

#[test]
fn scheduler_events_round_trip_through_json() {
    let subscribed = scheduler::Event {
        r#type: Some(scheduler::event::Type::Subscribed as i32),
        subscribed: Some(scheduler::event::Subscribed {
            framework_id: v1::FrameworkId { value: "fw".into() },
            heartbeat_interval_seconds: Some(15.0),
            master_info: Some(v1::MasterInfo {
                id: "m".into(),
                ip: 16777343,
                port: 5050,
                version: Some("1.11.0".into()),
                ..Default::default()
            }),
        }),
        ..Default::default()
    };
    let text = to_json(&subscribed);
    assert!(text.starts_with(r#"{"type":"SUBSCRIBED","subscribed":{"framework_id":{"value":"fw"},"heartbeat_interval_seconds":15.0"#), "{text}");
    assert_eq!(
        from_json::<scheduler::Event>(text.as_bytes()).unwrap(),
        subscribed
    );

    let update = scheduler::Event {
        r#type: Some(scheduler::event::Type::Update as i32),
        update: Some(scheduler::event::Update { status: status() }),
        ..Default::default()
    };
    let text = to_json(&update);
    assert!(
        text.contains(&format!(r#""uuid":"{UUID_BASE64}""#)),
        "{text}"
    );
    assert_eq!(
        from_json::<scheduler::Event>(text.as_bytes()).unwrap(),
        update
    );

    let heartbeat = scheduler::Event {
        r#type: Some(scheduler::event::Type::Heartbeat as i32),
        ..Default::default()
    };
    assert_eq!(to_json(&heartbeat), r#"{"type":"HEARTBEAT"}"#);
}

#[test]
fn executor_messages_round_trip_through_json() {
    let subscribed = executor::Event {
        r#type: Some(executor::event::Type::Subscribed as i32),
        subscribed: Some(executor::event::Subscribed {
            executor_info: v1::ExecutorInfo {
                executor_id: v1::ExecutorId { value: "e".into() },
                framework_id: Some(v1::FrameworkId { value: "fw".into() }),
                ..Default::default()
            },
            framework_info: v1::FrameworkInfo {
                user: "root".into(),
                name: "fw".into(),
                id: Some(v1::FrameworkId { value: "fw".into() }),
                ..Default::default()
            },
            agent_info: v1::AgentInfo {
                hostname: "h".into(),
                ..Default::default()
            },
            container_id: Some(v1::ContainerId {
                value: "c".into(),
                parent: None,
            }),
        }),
        ..Default::default()
    };
    let text = to_json(&subscribed);
    assert!(
        text.contains(r#""framework_info":{"user":"root","name":"fw","id":{"value":"fw"}}"#),
        "{text}"
    );
    assert_eq!(
        from_json::<executor::Event>(text.as_bytes()).unwrap(),
        subscribed
    );

    let acknowledged = executor::Event {
        r#type: Some(executor::event::Type::Acknowledged as i32),
        acknowledged: Some(executor::event::Acknowledged {
            task_id: TaskId { value: "t1".into() },
            uuid: UUID.to_vec(),
        }),
        ..Default::default()
    };
    let text = to_json(&acknowledged);
    assert_eq!(
        text,
        format!(
            r#"{{"type":"ACKNOWLEDGED","acknowledged":{{"task_id":{{"value":"t1"}},"uuid":"{UUID_BASE64}"}}}}"#
        )
    );

    // pymesos's executor UPDATE, with the timestamp as an integer.
    let body = format!(
        r#"{{"type":"UPDATE","executor_id":{{"value":"e"}},"framework_id":{{"value":"fw"}},"update":{{"status":{{"task_id":{{"value":"t1"}},"state":"TASK_RUNNING","timestamp":1700000000,"uuid":"{UUID_BASE64}","source":"SOURCE_EXECUTOR"}}}}}}"#
    );
    let call: executor::Call = from_json(body.as_bytes()).unwrap();
    let status = call.update.unwrap().status;
    assert_eq!(status.state(), TaskState::TaskRunning);
    assert_eq!(status.uuid.as_deref(), Some(&UUID[..]));
    assert_eq!(status.timestamp, Some(1700000000.0));

    // mentos's executor SUBSCRIBE carries an unknown subscribe.framework_info.
    let body = br#"{"type":"SUBSCRIBE","executor_id":{"value":"e"},"framework_id":{"value":"fw"},"subscribe":{"unacknowledged_tasks":[],"unacknowledged_updates":[],"framework_info":{"user":"x"}}}"#;
    let call: executor::Call = from_json(body).unwrap();
    assert_eq!(call.r#type(), executor::call::Type::Subscribe);
}

#[test]
fn malformed_json_is_an_error() {
    for body in [
        &b"{\"type\":"[..],
        b"not json",
        b"{\"type\":\"KILL\"} trailing",
        b"[]",
        b"{\"type\":5.5}",
    ] {
        let err = from_json::<scheduler::Call>(body).unwrap_err();
        assert!(matches!(err, ProtoError::Json { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("invalid JSON for mesos.v1.scheduler.Call: "),
            "{err}"
        );
    }
    let err = from_json::<scheduler::Call>(
        br#"{"acknowledge":{"agent_id":{"value":"a"},"task_id":{"value":"t"},"uuid":"%%%"}}"#,
    )
    .unwrap_err();
    assert!(matches!(err, ProtoError::Json { .. }), "{err}");
}

#[test]
fn missing_required_fields_are_errors() {
    let err = from_json::<scheduler::Call>(
        br#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"name":"n"}}}"#,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "missing required field 'subscribe.framework_info.user' in mesos.v1.FrameworkInfo"
    );
    let err = from_json::<scheduler::Call>(br#"{"type":"KILL","kill":{}}"#).unwrap_err();
    assert!(
        matches!(&err, ProtoError::MissingRequired { field, .. } if field == "kill.task_id"),
        "{err}"
    );
    let err = from_json::<executor::Call>(br#"{"type":"HEARTBEAT","executor_id":{"value":"e"}}"#)
        .unwrap_err();
    assert!(
        matches!(&err, ProtoError::MissingRequired { field, .. } if field == "framework_id"),
        "{err}"
    );
    // Inside a repeated field, the index is part of the path.
    let err = from_json::<scheduler::Call>(
        br#"{"type":"RECONCILE","reconcile":{"tasks":[{"task_id":{"value":"t"}},{}]}}"#,
    )
    .unwrap_err();
    assert!(
        matches!(&err, ProtoError::MissingRequired { field, .. } if field == "reconcile.tasks.1.task_id"),
        "{err}"
    );
}

#[test]
fn ascii_json_of_plain_values() {
    let text = json::to_ascii_json(&serde_json::json!({"name": "\u{e9}"})).unwrap();
    assert_eq!(text, r#"{"name":"\u00e9"}"#);
}
