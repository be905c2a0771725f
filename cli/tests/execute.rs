//! The real `mezzo` binary against a scripted fake master (full launch
//! path: offers, ACCEPT, updates, acknowledgements, stdout, TEARDOWN) and
//! against the real `mezzo-master` (subscription, `/state`).

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use mezzo_proto::json::{from_json, to_json_bytes, to_json_value};
use mezzo_proto::mesos::v1::scheduler::{call, event, Call, Event};
use mezzo_proto::mesos::v1::{
    task_status, value, Address, AgentId, FrameworkId, Offer, OfferId, Resource, TaskId, TaskState,
    TaskStatus, Url,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

const STREAM_ID: &str = "5c1b1e4e-7d2a-4a55-9f5e-2b1f0c3a9d10";
const FRAMEWORK_ID: &str = "master-uuid-0000";
const AGENT_ID: &str = "master-uuid-S0";
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// How the fake master's task ends.
#[derive(Clone, Copy, PartialEq)]
enum Ending {
    Finished,
    Failed,
    /// Runs until KILL arrives.
    UntilKilled,
}

struct MasterState {
    ending: Ending,
    addr: String,
    stream: Option<mpsc::UnboundedSender<Bytes>>,
    /// Every non-SUBSCRIBE call with its Mesos-Stream-Id header.
    calls: Vec<(Call, Option<String>)>,
    /// `path` query of every files download.
    downloads: Vec<String>,
}

type Shared = Arc<Mutex<MasterState>>;

fn frame(event: &Event) -> Bytes {
    Bytes::from(mezzo_proto::recordio::encode(&to_json_bytes(event)))
}

fn scalar(name: &str, amount: f64) -> Resource {
    Resource {
        name: name.into(),
        r#type: value::Type::Scalar as i32,
        scalar: Some(value::Scalar { value: amount }),
        ..Default::default()
    }
}

fn offer(id: &str, cpus: f64, addr: &str) -> Offer {
    let (ip, port) = addr.split_once(':').unwrap();
    Offer {
        id: OfferId { value: id.into() },
        framework_id: FrameworkId { value: FRAMEWORK_ID.into() },
        agent_id: AgentId { value: AGENT_ID.into() },
        hostname: "localhost".into(),
        url: Some(Url {
            scheme: "http".into(),
            address: Address { hostname: Some("localhost".into()), ip: Some(ip.into()), port: port.parse().unwrap() },
            path: Some("/slave(1)".into()),
            ..Default::default()
        }),
        resources: vec![scalar("cpus", cpus), scalar("mem", 1024.0)],
        ..Default::default()
    }
}

fn update(task_id: &str, state: TaskState, message: Option<&str>) -> Event {
    Event {
        r#type: Some(event::Type::Update as i32),
        update: Some(event::Update {
            status: TaskStatus {
                task_id: TaskId { value: task_id.into() },
                state: state as i32,
                source: Some(task_status::Source::Executor as i32),
                agent_id: Some(AgentId { value: AGENT_ID.into() }),
                uuid: Some(mezzo_proto::new_uuid()),
                message: message.map(str::to_string),
                ..Default::default()
            },
        }),
        ..Default::default()
    }
}

async fn scheduler_api(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let call: Call = match from_json(&body) {
        Ok(call) => call,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let mut master = shared.lock().unwrap();
    if call.r#type() == call::Type::Subscribe {
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(frame(&Event {
            r#type: Some(event::Type::Subscribed as i32),
            subscribed: Some(event::Subscribed {
                framework_id: FrameworkId { value: FRAMEWORK_ID.into() },
                heartbeat_interval_seconds: Some(15.0),
                master_info: None,
            }),
            ..Default::default()
        }))
        .unwrap();
        tx.send(frame(&Event { r#type: Some(event::Type::Heartbeat as i32), ..Default::default() })).unwrap();
        // One offer too small for the task, one that fits.
        let offers = vec![offer("O-small", 0.01, &master.addr), offer("O-big", 4.0, &master.addr)];
        tx.send(frame(&Event {
            r#type: Some(event::Type::Offers as i32),
            offers: Some(event::Offers { offers }),
            ..Default::default()
        }))
        .unwrap();
        master.stream = Some(tx);
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
        });
        return Response::builder()
            .status(StatusCode::OK)
            .header("Content-Type", "application/json")
            .header("Mesos-Stream-Id", STREAM_ID)
            .body(Body::from_stream(stream))
            .unwrap();
    }
    let stream_id = headers.get("Mesos-Stream-Id").and_then(|v| v.to_str().ok()).map(str::to_string);
    master.calls.push((call.clone(), stream_id));
    let stream = master.stream.clone().unwrap();
    match call.r#type() {
        call::Type::Accept => {
            let task = &call.accept.as_ref().unwrap().operations[0].launch.as_ref().unwrap().task_infos[0];
            let id = task.task_id.value.clone();
            stream.send(frame(&update(&id, TaskState::TaskStarting, None))).unwrap();
            stream.send(frame(&update(&id, TaskState::TaskRunning, None))).unwrap();
            match master.ending {
                Ending::Finished => stream
                    .send(frame(&update(&id, TaskState::TaskFinished, Some("Command exited with status 0"))))
                    .unwrap(),
                Ending::Failed => stream
                    .send(frame(&update(&id, TaskState::TaskFailed, Some("Command exited with status 3"))))
                    .unwrap(),
                Ending::UntilKilled => {}
            }
        }
        call::Type::Kill => {
            let id = call.kill.as_ref().unwrap().task_id.value.clone();
            stream.send(frame(&update(&id, TaskState::TaskKilling, None))).unwrap();
            stream
                .send(frame(&update(&id, TaskState::TaskKilled, Some("Command terminated with signal TERM"))))
                .unwrap();
        }
        _ => {}
    }
    StatusCode::ACCEPTED.into_response()
}

async fn files_download(State(shared): State<Shared>, Query(query): Query<HashMap<String, String>>) -> Response {
    shared.lock().unwrap().downloads.push(query.get("path").cloned().unwrap_or_default());
    "hi from the sandbox\n".into_response()
}

async fn start_fake_master(ending: Ending) -> Shared {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let shared = Arc::new(Mutex::new(MasterState {
        ending,
        addr,
        stream: None,
        calls: Vec::new(),
        downloads: Vec::new(),
    }));
    let app = Router::new()
        .route("/api/v1/scheduler", post(scheduler_api))
        .route("/files/download", get(files_download))
        .with_state(shared.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    shared
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn mezzo(args: &[&str]) -> Run {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_mezzo")).args(args).kill_on_drop(true).output();
    let out = tokio::time::timeout(RUN_TIMEOUT, run).await.expect("mezzo finished in time").unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn calls_of(shared: &Shared, kind: call::Type) -> Vec<Call> {
    shared.lock().unwrap().calls.iter().filter(|(c, _)| c.r#type() == kind).map(|(c, _)| c.clone()).collect()
}

#[tokio::test]
async fn execute_accepts_a_fitting_offer_acks_updates_and_prints_stdout() {
    let master = start_fake_master(Ending::Finished).await;
    let addr = master.lock().unwrap().addr.clone();
    let run = mezzo(&["execute", &format!("--master={addr}"), "--name=hi", "--command=echo hi", "--timeout=20"]).await;
    assert_eq!(run.code, 0, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);

    // The fitting offer was accepted with one LAUNCH in Mesos's JSON shape.
    let accepts = calls_of(&master, call::Type::Accept);
    assert_eq!(accepts.len(), 1);
    let accept = to_json_value(&accepts[0]);
    assert_eq!(accept["framework_id"]["value"], FRAMEWORK_ID);
    assert_eq!(accept["accept"]["offer_ids"][0]["value"], "O-big");
    let operation = &accept["accept"]["operations"][0];
    assert_eq!(operation["type"], "LAUNCH");
    let task = &operation["launch"]["task_infos"][0];
    assert_eq!(task["task_id"]["value"], "hi");
    assert_eq!(task["agent_id"]["value"], AGENT_ID);
    assert_eq!(task["command"]["value"], "echo hi");
    assert_eq!(task["command"]["shell"], true);
    assert!(task.get("container").is_none());
    // The other offer was declined.
    let declines = calls_of(&master, call::Type::Decline);
    assert_eq!(declines.len(), 1);
    assert_eq!(declines[0].decline.as_ref().unwrap().offer_ids[0].value, "O-small");
    // Every update was acknowledged, with its uuid and the stream id.
    let acks = calls_of(&master, call::Type::Acknowledge);
    assert_eq!(acks.len(), 3);
    assert!(acks.iter().all(|a| a.acknowledge.as_ref().unwrap().uuid.len() == 16));
    assert!(master.lock().unwrap().calls.iter().all(|(_, id)| id.as_deref() == Some(STREAM_ID)));
    assert_eq!(calls_of(&master, call::Type::Teardown).len(), 1);
    // Output: one line per update, the timing line and the sandbox stdout.
    assert!(run.stdout.contains("Received status update TASK_STARTING for task 'hi' (source: SOURCE_EXECUTOR)"));
    assert!(run.stdout.contains("Received status update TASK_RUNNING for task 'hi' (source: SOURCE_EXECUTOR)"));
    assert!(run.stdout.contains(
        "Received status update TASK_FINISHED for task 'hi' (source: SOURCE_EXECUTOR)\n  message: Command exited with status 0"
    ));
    assert!(run.stdout.lines().any(|l| l.starts_with("ACCEPT to TASK_RUNNING: ") && l.ends_with(" ms")));
    assert!(run.stdout.contains("hi from the sandbox\n"), "{}", run.stdout);
    assert_eq!(
        master.lock().unwrap().downloads,
        vec![format!("/frameworks/{FRAMEWORK_ID}/executors/hi/runs/latest/stdout")]
    );
}

#[tokio::test]
async fn execute_exits_nonzero_for_a_failed_task_and_sends_docker_container() {
    let master = start_fake_master(Ending::Failed).await;
    let addr = master.lock().unwrap().addr.clone();
    let run = mezzo(&[
        "execute",
        &format!("--master={addr}"),
        "--name=bad",
        "--command=exit 3",
        "--containerizer=docker",
        "--timeout=20",
    ])
    .await;
    assert_eq!(run.code, 1, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("TASK_FAILED for task 'bad'"));
    assert!(run.stdout.contains("  message: Command exited with status 3"));
    let accept = to_json_value(&calls_of(&master, call::Type::Accept)[0]);
    let container = &accept["accept"]["operations"][0]["launch"]["task_infos"][0]["container"];
    assert_eq!(container["type"], "DOCKER");
    assert_eq!(container["docker"]["image"], "busybox");
    assert_eq!(container["docker"]["network"], "HOST");
    assert_eq!(calls_of(&master, call::Type::Teardown).len(), 1);
}

#[tokio::test]
async fn kill_after_sends_kill_and_reports_killed() {
    let master = start_fake_master(Ending::UntilKilled).await;
    let addr = master.lock().unwrap().addr.clone();
    let run = mezzo(&[
        "execute",
        &format!("--master={addr}"),
        "--name=sleeper",
        "--command=sleep 1000",
        "--kill_after=0.2",
        "--timeout=20",
    ])
    .await;
    assert_eq!(run.code, 1, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    let kills = calls_of(&master, call::Type::Kill);
    assert_eq!(kills.len(), 1);
    let kill = kills[0].kill.as_ref().unwrap();
    assert_eq!(kill.task_id.value, "sleeper");
    assert_eq!(kill.agent_id.as_ref().map(|a| a.value.as_str()), Some(AGENT_ID));
    assert!(run.stdout.contains("TASK_KILLING for task 'sleeper'"));
    assert!(run.stdout.contains("TASK_KILLED for task 'sleeper'"));
}

#[tokio::test]
async fn real_master_subscription_state_and_bounded_wait_without_agents() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(mezzo_master::serve(mezzo_master::MasterConfig::default(), listener));

    // No agent, no offers: `execute` subscribes, then gives up after --timeout.
    let master_flag = format!("--master={addr}");
    let execute = tokio::spawn({
        let flag = master_flag.clone();
        async move { mezzo(&["execute", &flag, "--name=lonely", "--command=true", "--timeout=3"]).await }
    });
    // While it waits, the master lists the framework.
    let mut listed = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let state = mezzo(&["state", &master_flag]).await;
        assert_eq!(state.code, 0, "{}", state.stderr);
        let json: serde_json::Value = serde_json::from_str(&state.stdout).expect("state is JSON");
        // Pretty-printed, as promised.
        assert!(state.stdout.contains("\n  \"frameworks\""));
        if json["frameworks"].as_array().unwrap().iter().any(|f| f["name"] == "mezzo-execute") {
            listed = true;
            break;
        }
    }
    assert!(listed, "the master never listed the mezzo-execute framework");
    let run = execute.await.unwrap();
    assert_eq!(run.code, 1, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert!(run.stdout.starts_with("Subscribed with ID "), "{}", run.stdout);
    assert!(run.stderr.contains("Timed out after 3s waiting for a fitting offer"), "{}", run.stderr);
}
