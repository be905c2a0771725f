//! Protobuf wire compatibility: field numbers checked against hand-computed
//! bytes, round trips, and required-field checks.

use mezzo_proto::mesos::v1::{
    self as v1, scheduler, task_status, value, AgentId, CommandInfo, ContainerId, FrameworkId,
    TaskId, TaskInfo, TaskState, TaskStatus,
};
use mezzo_proto::mezzo::agent::{master_to_agent, KillTask, MasterToAgent};
use mezzo_proto::{codec, from_protobuf, mesos::v1::executor, ContentType, ProtoError};
use prost::Message;

fn task_id(v: &str) -> TaskId {
    TaskId { value: v.into() }
}
fn agent_id(v: &str) -> AgentId {
    AgentId { value: v.into() }
}
fn framework_id(v: &str) -> FrameworkId {
    FrameworkId { value: v.into() }
}

const UUID: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

pub fn sample_task_info() -> TaskInfo {
    let mut task = TaskInfo {
        name: "sleep".into(),
        task_id: task_id("t1"),
        agent_id: agent_id("a1"),
        resources: vec![v1::Resource {
            name: "cpus".into(),
            r#type: value::Type::Scalar as i32,
            scalar: Some(value::Scalar { value: 0.5 }),
            ..Default::default()
        }],
        command: Some(CommandInfo {
            value: Some("sleep 1".into()),
            shell: Some(true),
            ..Default::default()
        }),
        kill_policy: Some(v1::KillPolicy {
            grace_period: Some(v1::DurationInfo {
                nanoseconds: 3_000_000_000,
            }),
        }),
        container: Some(v1::ContainerInfo {
            r#type: v1::container_info::Type::Mesos as i32,
            mesos: Some(v1::container_info::MesosInfo {
                image: Some(v1::Image {
                    r#type: v1::image::Type::Docker as i32,
                    docker: Some(v1::image::Docker {
                        name: "busybox:latest".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    task.limits
        .insert("mem".into(), value::Scalar { value: 256.0 });
    task
}

pub fn sample_status() -> TaskStatus {
    TaskStatus {
        task_id: task_id("t1"),
        state: TaskState::TaskRunning as i32,
        message: Some("running".into()),
        source: Some(task_status::Source::Executor as i32),
        reason: Some(task_status::Reason::ContainerLimitationMemory as i32),
        agent_id: Some(agent_id("a1")),
        timestamp: Some(1_700_000_000.25),
        uuid: Some(UUID.to_vec()),
        container_status: Some(v1::ContainerStatus {
            container_id: Some(ContainerId {
                value: "child".into(),
                parent: Some(Box::new(ContainerId {
                    value: "parent".into(),
                    parent: None,
                })),
            }),
            executor_pid: Some(4242),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn task_info_round_trips_through_bytes() {
    let task = sample_task_info();
    let decoded: TaskInfo = from_protobuf(&task.encode_to_vec()).unwrap();
    assert_eq!(decoded, task);
}

#[test]
fn task_status_round_trips_through_bytes() {
    let status = sample_status();
    let decoded: TaskStatus = from_protobuf(&status.encode_to_vec()).unwrap();
    assert_eq!(decoded, status);
    assert_eq!(
        decoded.reason(),
        task_status::Reason::ContainerLimitationMemory
    );
}

#[test]
fn default_valued_required_fields_are_still_encoded() {
    // TASK_STARTING is 0 and hostname may be empty: both are required, so
    // they must be on the wire or a Mesos peer rejects the message.
    let status = TaskStatus {
        task_id: task_id(""),
        state: TaskState::TaskStarting as i32,
        ..Default::default()
    };
    assert_eq!(status.encode_to_vec(), [0x0a, 0x02, 0x0a, 0x00, 0x10, 0x00]);
    let decoded: TaskStatus = from_protobuf(&status.encode_to_vec()).unwrap();
    assert_eq!(decoded.state(), TaskState::TaskStarting);
}

#[test]
fn golden_scheduler_kill_call() {
    let call = scheduler::Call {
        framework_id: Some(framework_id("fw")),
        r#type: Some(scheduler::call::Type::Kill as i32),
        kill: Some(scheduler::call::Kill {
            task_id: task_id("t"),
            agent_id: Some(agent_id("a")),
            kill_policy: None,
        }),
        ..Default::default()
    };
    let expected: &[u8] = &[
        0x0a, 0x04, 0x0a, 0x02, b'f', b'w', // framework_id = 1
        0x10, 0x06, // type = 2, KILL = 6
        0x32, 0x0a, // kill = 6
        0x0a, 0x03, 0x0a, 0x01, b't', // task_id = 1
        0x12, 0x03, 0x0a, 0x01, b'a', // agent_id = 2
    ];
    assert_eq!(call.encode_to_vec(), expected);
}

#[test]
fn golden_scheduler_revive_and_suppress_numbers() {
    let call = scheduler::Call {
        r#type: Some(scheduler::call::Type::Suppress as i32),
        suppress: Some(scheduler::call::Suppress {
            roles: vec!["r".into()],
        }),
        ..Default::default()
    };
    // type = 2 with SUPPRESS = 12; suppress = 16 -> key (16 << 3 | 2) = 0x82 0x01.
    assert_eq!(
        call.encode_to_vec(),
        [0x10, 0x0c, 0x82, 0x01, 0x03, 0x0a, 0x01, b'r']
    );
    let call = scheduler::Call {
        r#type: Some(scheduler::call::Type::Revive as i32),
        revive: Some(scheduler::call::Revive {
            roles: vec!["r".into()],
        }),
        ..Default::default()
    };
    // REVIVE = 5; revive = 15 -> key 0x7a.
    assert_eq!(
        call.encode_to_vec(),
        [0x10, 0x05, 0x7a, 0x03, 0x0a, 0x01, b'r']
    );
}

#[test]
fn golden_task_info_with_limits_map() {
    let mut task = TaskInfo {
        name: "n".into(),
        task_id: task_id("t"),
        agent_id: agent_id("a"),
        ..Default::default()
    };
    task.limits
        .insert("cpus".into(), value::Scalar { value: 2.0 });
    let mut expected = vec![
        0x0a, 0x01, b'n', // name = 1
        0x12, 0x03, 0x0a, 0x01, b't', // task_id = 2
        0x1a, 0x03, 0x0a, 0x01, b'a', // agent_id = 3
        0x7a, 0x11, // limits = 15, one map entry of 17 bytes
        0x0a, 0x04, b'c', b'p', b'u', b's', // key = 1
        0x12, 0x09, 0x09, // value = 2: Scalar { value (double) = 1 }
    ];
    expected.extend_from_slice(&2.0f64.to_le_bytes());
    assert_eq!(task.encode_to_vec(), expected);
}

#[test]
fn golden_task_status_decodes_protoc_ordered_bytes() {
    // Bytes in field-number order, as protoc-generated Mesos code writes them.
    let mut bytes = vec![
        0x0a, 0x03, 0x0a, 0x01, b't', // task_id = 1
        0x10, 0x03, // state = 2: TASK_FAILED = 3
        0x1a, 0x01, 0xff, // data = 3
        0x22, 0x02, b'h', b'i', // message = 4
        0x2a, 0x03, 0x0a, 0x01, b'a', // agent_id = 5
        0x31, // timestamp = 6 (double)
    ];
    bytes.extend_from_slice(&1.5f64.to_le_bytes());
    bytes.extend_from_slice(&[
        0x3a, 0x03, 0x0a, 0x01, b'e', // executor_id = 7
        0x40, 0x01, // healthy = 8
        0x48, 0x01, // source = 9: SOURCE_AGENT
        0x50, 0x13, // reason = 10: REASON_CONTAINER_LIMITATION = 19
        0x5a, 0x10, // uuid = 11
    ]);
    bytes.extend_from_slice(&UUID);
    let status: TaskStatus = from_protobuf(&bytes).unwrap();
    assert_eq!(status.task_id.value, "t");
    assert_eq!(status.state(), TaskState::TaskFailed);
    assert_eq!(status.data.as_deref(), Some(&[0xff][..]));
    assert_eq!(status.message(), "hi");
    assert_eq!(status.agent_id.as_ref().unwrap().value, "a");
    assert_eq!(status.timestamp, Some(1.5));
    assert_eq!(status.executor_id.as_ref().unwrap().value, "e");
    assert_eq!(status.healthy, Some(true));
    assert_eq!(status.source(), task_status::Source::Agent);
    assert_eq!(status.reason(), task_status::Reason::ContainerLimitation);
    assert_eq!(status.uuid.as_deref(), Some(&UUID[..]));
}

#[test]
fn golden_executor_heartbeat_call() {
    let call = executor::Call {
        executor_id: v1::ExecutorId { value: "e".into() },
        framework_id: framework_id("f"),
        r#type: Some(executor::call::Type::Heartbeat as i32),
        ..Default::default()
    };
    let expected: &[u8] = &[
        0x0a, 0x03, 0x0a, 0x01, b'e', 0x12, 0x03, 0x0a, 0x01, b'f', 0x18, 0x04,
    ];
    assert_eq!(call.encode_to_vec(), expected);
}

#[test]
fn golden_agent_protocol_kill_task() {
    let message = MasterToAgent {
        r#type: Some(master_to_agent::Type::KillTask as i32),
        kill_task: Some(KillTask {
            framework_id: framework_id("f"),
            task_id: task_id("t"),
            kill_policy: None,
        }),
        ..Default::default()
    };
    let expected: &[u8] = &[
        0x08, 0x02, // type = 1: KILL_TASK
        0x1a, 0x0a, // kill_task = 3
        0x0a, 0x03, 0x0a, 0x01, b'f', 0x12, 0x03, 0x0a, 0x01, b't',
    ];
    assert_eq!(message.encode_to_vec(), expected);
}

#[test]
fn enum_numbers_match_mesos() {
    assert_eq!(TaskState::TaskStaging as i32, 6);
    assert_eq!(TaskState::TaskStarting as i32, 0);
    assert_eq!(TaskState::TaskKilling as i32, 8);
    assert_eq!(TaskState::TaskUnknown as i32, 13);
    assert_eq!(task_status::Reason::AgentDraining as i32, 34);
    assert_eq!(task_status::Reason::TaskKilledDuringLaunch as i32, 30);
    assert_eq!(task_status::Reason::ExecutorTerminated as i32, 1);
    assert_eq!(scheduler::call::Type::UpdateFramework as i32, 17);
    assert_eq!(scheduler::event::Type::Heartbeat as i32, 8);
    assert_eq!(executor::event::Type::Heartbeat as i32, 9);
    assert_eq!(executor::event::Type::LaunchGroup as i32, 8);
    assert_eq!(v1::capability_info::Capability::SysAdmin as i32, 1021);
    assert_eq!(v1::r_limit_info::r_limit::Type::RlmtNofile as i32, 10);
}

#[test]
fn missing_required_field_in_protobuf_is_an_error() {
    // An executor Call with executor_id but without framework_id.
    let bytes = [0x0a, 0x03, 0x0a, 0x01, b'e', 0x18, 0x04];
    let err = from_protobuf::<executor::Call>(&bytes).unwrap_err();
    match err {
        ProtoError::MissingRequired { field, .. } => assert_eq!(field, "framework_id"),
        other => panic!("unexpected error: {other}"),
    }
    // A nested one: scheduler KILL whose kill body lacks task_id.
    let bytes = [0x10, 0x06, 0x32, 0x00];
    let err = from_protobuf::<scheduler::Call>(&bytes).unwrap_err();
    assert_eq!(
        err.to_string(),
        "missing required field 'kill.task_id' in mesos.v1.scheduler.Call.Kill"
    );
}

#[test]
fn garbage_protobuf_is_an_error() {
    let err = from_protobuf::<TaskStatus>(&[0x0a, 0x7f, 0x01]).unwrap_err();
    assert!(matches!(err, ProtoError::Protobuf { .. }), "{err}");
}

#[test]
fn scheduler_event_and_call_round_trip_through_bytes() {
    let event = scheduler::Event {
        r#type: Some(scheduler::event::Type::Update as i32),
        update: Some(scheduler::event::Update {
            status: sample_status(),
        }),
        ..Default::default()
    };
    assert_eq!(
        from_protobuf::<scheduler::Event>(&event.encode_to_vec()).unwrap(),
        event
    );

    let call = scheduler::Call {
        framework_id: Some(framework_id("fw")),
        r#type: Some(scheduler::call::Type::Accept as i32),
        accept: Some(scheduler::call::Accept {
            offer_ids: vec![v1::OfferId { value: "o1".into() }],
            operations: vec![v1::offer::Operation {
                r#type: Some(v1::offer::operation::Type::Launch as i32),
                launch: Some(v1::offer::operation::Launch {
                    task_infos: vec![sample_task_info()],
                }),
                ..Default::default()
            }],
            filters: Some(v1::Filters {
                refuse_seconds: Some(1.0),
            }),
        }),
        ..Default::default()
    };
    for content_type in [ContentType::Protobuf, ContentType::Json] {
        let bytes = codec::encode(&call, content_type);
        assert_eq!(
            codec::decode::<scheduler::Call>(&bytes, content_type).unwrap(),
            call
        );
    }
}

#[test]
fn executor_event_and_call_round_trip_through_bytes() {
    let event = executor::Event {
        r#type: Some(executor::event::Type::Kill as i32),
        kill: Some(executor::event::Kill {
            task_id: task_id("t1"),
            kill_policy: Some(v1::KillPolicy {
                grace_period: Some(v1::DurationInfo { nanoseconds: 5 }),
            }),
        }),
        ..Default::default()
    };
    assert_eq!(
        from_protobuf::<executor::Event>(&event.encode_to_vec()).unwrap(),
        event
    );

    let call = executor::Call {
        executor_id: v1::ExecutorId { value: "e".into() },
        framework_id: framework_id("f"),
        r#type: Some(executor::call::Type::Subscribe as i32),
        subscribe: Some(executor::call::Subscribe {
            unacknowledged_tasks: vec![sample_task_info()],
            unacknowledged_updates: vec![executor::call::Update {
                status: sample_status(),
            }],
        }),
        ..Default::default()
    };
    assert_eq!(
        from_protobuf::<executor::Call>(&call.encode_to_vec()).unwrap(),
        call
    );
}

#[test]
fn content_type_from_header() {
    assert_eq!(
        ContentType::from_header("application/json"),
        Some(ContentType::Json)
    );
    assert_eq!(
        ContentType::from_header("application/json; charset=utf-8"),
        Some(ContentType::Json)
    );
    assert_eq!(
        ContentType::from_header(" Application/X-Protobuf "),
        Some(ContentType::Protobuf)
    );
    assert_eq!(ContentType::from_header("text/plain"), None);
    assert_eq!(ContentType::from_header(""), None);
    assert_eq!(ContentType::Protobuf.mime(), "application/x-protobuf");
    assert_eq!(ContentType::Json.mime(), "application/json");
}

#[test]
fn new_uuid_is_random_v4() {
    let a = mezzo_proto::new_uuid();
    let b = mezzo_proto::new_uuid();
    assert_eq!(a.len(), 16);
    assert_ne!(a, b);
    assert_eq!(a[6] >> 4, 4, "version nibble");
    assert_eq!(a[8] >> 6, 0b10, "variant bits");
}

#[test]
fn golden_agent_files_calls_and_responses_have_mesos_numbers() {
    use mezzo_proto::mesos::v1::agent::{call, response, Call, Response};
    let read = Call {
        r#type: Some(call::Type::ReadFile as i32),
        read_file: Some(call::ReadFile { path: "p".into(), offset: 5, length: Some(3) }),
        ..Default::default()
    };
    let expected: &[u8] = &[
        0x08, 0x08, // type = 1, READ_FILE = 8
        0x2a, 0x07, // read_file = 5
        0x0a, 0x01, b'p', // path = 1
        0x10, 0x05, // offset = 2
        0x18, 0x03, // length = 3
    ];
    assert_eq!(read.encode_to_vec(), expected);
    let list = Call { r#type: Some(call::Type::ListFiles as i32), list_files: Some(call::ListFiles { path: "p".into() }), ..Default::default() };
    assert_eq!(list.encode_to_vec(), [0x08, 0x07, 0x22, 0x03, 0x0a, 0x01, b'p']); // LIST_FILES = 7, list_files = 4
    let listed = Response {
        r#type: Some(response::Type::ListFiles as i32),
        list_files: Some(response::ListFiles {
            file_infos: vec![v1::FileInfo {
                path: "a".into(),
                nlink: Some(2),
                size: Some(3),
                mtime: Some(v1::TimeInfo { nanoseconds: 4 }),
                mode: Some(5),
                uid: Some("u".into()),
                gid: Some("g".into()),
            }],
        }),
        ..Default::default()
    };
    let expected: &[u8] = &[
        0x08, 0x06, // type = 1, LIST_FILES = 6
        0x3a, 0x15, // list_files = 7
        0x0a, 0x13, // file_infos = 1
        0x0a, 0x01, b'a', // path = 1
        0x10, 0x02, // nlink = 2
        0x18, 0x03, // size = 3
        0x22, 0x02, 0x08, 0x04, // mtime = 4 (nanoseconds = 1)
        0x28, 0x05, // mode = 5
        0x32, 0x01, b'u', // uid = 6
        0x3a, 0x01, b'g', // gid = 7
    ];
    assert_eq!(listed.encode_to_vec(), expected);
    let data = Response {
        r#type: Some(response::Type::ReadFile as i32),
        read_file: Some(response::ReadFile { size: 10, data: b"hi".to_vec() }),
        ..Default::default()
    };
    // READ_FILE = 7, read_file = 8 (size = 1, data = 2).
    assert_eq!(data.encode_to_vec(), [0x08, 0x07, 0x42, 0x06, 0x08, 0x0a, 0x12, 0x02, b'h', b'i']);
    // JSON: Mesos's names, bytes as base64, int64 as a number.
    assert_eq!(
        mezzo_proto::to_json_value(&data),
        serde_json::json!({"type": "READ_FILE", "read_file": {"size": 10, "data": "aGk="}})
    );
}
