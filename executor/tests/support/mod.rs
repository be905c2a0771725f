//! Test harness: a fake agent serving the executor API, real containers
//! prepared by the rust backend, and the real `mezzo-executor` binary.

#![allow(dead_code)]

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use mezzo_containerizer::rust::{RustBackend, RustBackendConfig};
use mezzo_containerizer::{Command, ContainerConfig, ContainerType, Containerizer};
use mezzo_proto::codec::ContentType;
use mezzo_proto::mesos::v1::executor::{call, event, Call, Event};
use mezzo_proto::mesos::v1::{
    framework_info, AgentId, AgentInfo, CommandInfo, ContainerId, ExecutorId, ExecutorInfo,
    FrameworkId, FrameworkInfo, TaskId, TaskInfo, TaskState, TaskStatus,
};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub const FRAMEWORK_ID: &str = "fw-test-0000";
pub const AGENT_ID: &str = "agent-test-S0";

/// What the fake agent saw and how it behaves.
#[derive(Default)]
pub struct AgentState {
    /// Sender side of the current subscription stream.
    stream: Option<mpsc::UnboundedSender<Bytes>>,
    /// The encoding of the current stream's events (its SUBSCRIBE's `Accept`).
    stream_type: Option<ContentType>,
    /// Every call's `Content-Type`, in order.
    pub content_types: Vec<ContentType>,
    /// Every SUBSCRIBE call, in order.
    pub subscribes: Vec<Call>,
    /// Every status received in an UPDATE call, duplicates included.
    pub updates: Vec<TaskStatus>,
    /// The first UPDATE in each of these states gets no ACKNOWLEDGED.
    pub withhold_ack_for: Vec<TaskState>,
    /// Whether to drop the subscription stream right after the next update
    /// in this state (to test re-subscription).
    pub disconnect_after: Option<TaskState>,
    /// When set, a call without `Authorization: Bearer <this>` gets 401, as
    /// the agent answers with `--authenticate_http_executors`.
    pub required_token: Option<String>,
    /// Every call's type and `Authorization` header, in order (refused ones included).
    pub authorizations: Vec<(call::Type, Option<String>)>,
    /// Task sent as LAUNCH after the first SUBSCRIBED.
    launch: Option<TaskInfo>,
    framework_capabilities: Vec<framework_info::capability::Type>,
}

/// A fake agent on 127.0.0.1 serving `POST /api/v1/executor`.
#[derive(Clone)]
pub struct FakeAgent {
    pub state: Arc<Mutex<AgentState>>,
    pub endpoint: String,
}

impl FakeAgent {
    /// Starts the fake agent; it will launch `task` after the first SUBSCRIBED.
    pub async fn start(task: TaskInfo) -> FakeAgent {
        let state = Arc::new(Mutex::new(AgentState { launch: Some(task), ..Default::default() }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = listener.local_addr().unwrap().to_string();
        let app = Router::new().route("/api/v1/executor", post(executor_api)).with_state(state.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeAgent { state, endpoint }
    }

    /// Makes the fake agent refuse calls that do not carry `token`.
    pub fn require_token(&self, token: &str) {
        self.state.lock().unwrap().required_token = Some(token.to_string());
    }

    /// Makes the framework declare a capability in SUBSCRIBED.
    pub fn with_capability(&self, capability: framework_info::capability::Type) {
        self.state.lock().unwrap().framework_capabilities.push(capability);
    }

    /// Sends an event on the current subscription stream.
    pub fn send(&self, event: Event) {
        let state = self.state.lock().unwrap();
        let stream = state.stream.as_ref().expect("executor is subscribed");
        stream.send(frame(&event, state.stream_type.unwrap_or(ContentType::Json))).expect("stream is open");
    }

    /// States of all received updates, in order (duplicates included).
    pub fn states(&self) -> Vec<TaskState> {
        self.state.lock().unwrap().updates.iter().map(|s| s.state()).collect()
    }

    /// States of the distinct updates (by uuid), in order of first arrival.
    pub fn distinct_states(&self) -> Vec<TaskState> {
        let state = self.state.lock().unwrap();
        let mut seen = Vec::new();
        let mut states = Vec::new();
        for status in &state.updates {
            if !seen.contains(&status.uuid) {
                seen.push(status.uuid.clone());
                states.push(status.state());
            }
        }
        states
    }

    /// The last update received.
    pub fn last_update(&self) -> TaskStatus {
        self.state.lock().unwrap().updates.last().cloned().expect("an update arrived")
    }

    /// Waits (bounded) until `cond` holds for the agent's state.
    pub async fn wait_for(&self, what: &str, timeout: Duration, cond: impl Fn(&AgentState) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if cond(&self.state.lock().unwrap()) {
                return;
            }
            if Instant::now() > deadline {
                panic!("timed out after {timeout:?} waiting for {what}; updates: {:?}", self.states());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn frame(event: &Event, content_type: ContentType) -> Bytes {
    Bytes::from(mezzo_proto::recordio::encode(&mezzo_proto::codec::encode(event, content_type)))
}

/// The content type a header names; JSON when absent, as the agent reads `Accept`.
fn header_type(headers: &axum::http::HeaderMap, name: &str) -> Option<ContentType> {
    match headers.get(name).and_then(|v| v.to_str().ok()) {
        Some(value) => ContentType::from_header(value),
        None => Some(ContentType::Json),
    }
}

/// Decodes and encodes by `Content-Type` and `Accept`, as the agent does.
async fn executor_api(State(state): State<Arc<Mutex<AgentState>>>, headers: axum::http::HeaderMap, body: Bytes) -> Response {
    let Some(content_type) = header_type(&headers, "content-type") else {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported Content-Type").into_response();
    };
    let call: Call = match mezzo_proto::codec::decode(&body, content_type) {
        Ok(call) => call,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let mut agent = state.lock().unwrap();
    agent.content_types.push(content_type);
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
    agent.authorizations.push((call.r#type(), authorization.clone()));
    if let Some(token) = &agent.required_token {
        if authorization.as_deref() != Some(format!("Bearer {token}").as_str()) {
            return (StatusCode::UNAUTHORIZED, [("WWW-Authenticate", "Bearer realm=\"mezzo-executor\"")], "token required").into_response();
        }
    }
    match call.r#type() {
        call::Type::Subscribe => {
            let Some(accept) = header_type(&headers, "accept") else {
                return (StatusCode::NOT_ACCEPTABLE, "unsupported Accept").into_response();
            };
            let frame = |event: &Event| frame(event, accept);
            let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
            let subscribed = Event {
                r#type: Some(event::Type::Subscribed as i32),
                subscribed: Some(event::Subscribed {
                    executor_info: ExecutorInfo {
                        executor_id: call.executor_id.clone(),
                        framework_id: Some(call.framework_id.clone()),
                        ..Default::default()
                    },
                    framework_info: FrameworkInfo {
                        user: "root".into(),
                        name: "test".into(),
                        id: Some(FrameworkId { value: FRAMEWORK_ID.into() }),
                        capabilities: agent
                            .framework_capabilities
                            .iter()
                            .map(|c| framework_info::Capability { r#type: Some(*c as i32) })
                            .collect(),
                        ..Default::default()
                    },
                    agent_info: AgentInfo {
                        hostname: "localhost".into(),
                        id: Some(AgentId { value: AGENT_ID.into() }),
                        ..Default::default()
                    },
                    container_id: Some(ContainerId { value: "c".into(), parent: None }),
                }),
                ..Default::default()
            };
            tx.send(frame(&subscribed)).unwrap();
            // Like the agent, take the replayed updates and acknowledge them.
            for update in call.subscribe.iter().flat_map(|s| s.unacknowledged_updates.iter()) {
                agent.updates.push(update.status.clone());
                tx.send(frame(&ack_event(&update.status))).unwrap();
            }
            if let Some(task) = agent.launch.take() {
                tx.send(frame(&launch_event(task))).unwrap();
            }
            agent.subscribes.push(call);
            // Replacing the sender ends the previous stream, as the agent does.
            agent.stream = Some(tx);
            agent.stream_type = Some(accept);
            let stream = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|bytes| (Ok::<_, std::convert::Infallible>(bytes), rx))
            });
            Response::builder()
                .status(StatusCode::OK)
                .header("Content-Type", accept.mime())
                .body(Body::from_stream(stream))
                .unwrap()
        }
        call::Type::Update => {
            let Some(update) = call.update else {
                return (StatusCode::BAD_REQUEST, "UPDATE without update").into_response();
            };
            let status = update.status;
            agent.updates.push(status.clone());
            if let Some(i) = agent.withhold_ack_for.iter().position(|s| *s == status.state()) {
                agent.withhold_ack_for.remove(i);
            } else if let Some(stream) = &agent.stream {
                let _ = stream.send(frame(&ack_event(&status), agent.stream_type.unwrap_or(ContentType::Json)));
            }
            if agent.disconnect_after == Some(status.state()) {
                agent.disconnect_after = None;
                agent.stream = None;
            }
            StatusCode::ACCEPTED.into_response()
        }
        _ => StatusCode::ACCEPTED.into_response(),
    }
}

fn ack_event(status: &TaskStatus) -> Event {
    Event {
        r#type: Some(event::Type::Acknowledged as i32),
        acknowledged: Some(event::Acknowledged {
            task_id: status.task_id.clone(),
            uuid: status.uuid.clone().unwrap_or_default(),
        }),
        ..Default::default()
    }
}

/// A LAUNCH event for `task`.
pub fn launch_event(task: TaskInfo) -> Event {
    Event {
        r#type: Some(event::Type::Launch as i32),
        launch: Some(event::Launch { task }),
        ..Default::default()
    }
}

/// A KILL event for `task_id`, optionally with a grace period.
pub fn kill_event(task_id: &str, grace: Option<Duration>) -> Event {
    use mezzo_proto::mesos::v1::{DurationInfo, KillPolicy};
    Event {
        r#type: Some(event::Type::Kill as i32),
        kill: Some(event::Kill {
            task_id: TaskId { value: task_id.into() },
            kill_policy: grace.map(|g| KillPolicy {
                grace_period: Some(DurationInfo { nanoseconds: g.as_nanos() as i64 }),
            }),
        }),
        ..Default::default()
    }
}

/// A command task as the agent would hand it over.
pub fn task(id: &str, command: &str) -> TaskInfo {
    TaskInfo {
        name: id.into(),
        task_id: TaskId { value: id.into() },
        agent_id: AgentId { value: AGENT_ID.into() },
        command: Some(CommandInfo { value: Some(command.into()), shell: Some(true), ..Default::default() }),
        ..Default::default()
    }
}

/// One prepared rust-backend container (no image) and its directories.
pub struct TestContainer {
    pub containerizer: Containerizer,
    pub id: String,
    pub runtime_dir: PathBuf,
    pub sandbox: PathBuf,
    pub launcher_dir: PathBuf,
    cgroups_root: String,
    _root: tempfile::TempDir,
}

impl TestContainer {
    /// Prepares a container that runs `command` under `/bin/sh -c`.
    pub async fn prepare(command: &str) -> TestContainer {
        let root = tempfile::tempdir().unwrap();
        let runtime_root = root.path().join("runtime");
        let sandbox = root.path().join("sandbox");
        std::fs::create_dir_all(&runtime_root).unwrap();
        std::fs::create_dir_all(&sandbox).unwrap();
        let launcher_dir = launcher_dir();
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let cgroups_root = format!("mezzo-executor-test-{}", &suffix[..8]);
        let backend = RustBackend::new(RustBackendConfig {
            runtime_root: runtime_root.clone(),
            provisioner: None,
            cgroups_root: cgroups_root.clone(),
            launcher_dir: launcher_dir.clone(),
            ..Default::default()
        })
        .expect("backend");
        let containerizer = Containerizer::new(vec![Arc::new(backend)], runtime_root);
        let id = format!("exec-test-{suffix}");
        let config = ContainerConfig {
            container_id: id.clone(),
            container_type: ContainerType::Mesos,
            image: None,
            command: Command { shell: true, value: Some(command.into()), ..Default::default() },
            resources: Default::default(),
            sandbox: sandbox.clone(),
            hostname: None,
            labels: Default::default(),
            ..Default::default()
        };
        let runtime_dir = containerizer.prepare(&config).await.expect("container prepares").into_path();
        TestContainer { containerizer, id, runtime_dir, sandbox, launcher_dir, cgroups_root, _root: root }
    }

    /// Destroys the container (kills what is left, removes cgroups and mounts).
    pub async fn destroy(self) {
        self.containerizer.destroy(&self.id).await.expect("container destroys");
        // The per-test cgroups root is empty now; leave no trace in any hierarchy.
        let mut parents = vec![Path::new("/sys/fs/cgroup").join(&self.cgroups_root)];
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            parents.push(hierarchy.path().join(&self.cgroups_root));
        }
        for parent in parents {
            if parent.is_dir() {
                std::fs::remove_dir(&parent).unwrap_or_else(|e| panic!("rmdir {}: {e}", parent.display()));
            }
        }
    }
}

/// Where `mezzo-launcher` is: next to our own binary in the target dir.
/// Cargo only builds a dependency's binaries on request, so build it when
/// it is missing.
pub fn launcher_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_mezzo-executor")).parent().unwrap().to_path_buf();
    if !dir.join("mezzo-launcher").is_file() {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "-p", "mezzo-containerizer", "--bin", "mezzo-launcher"])
            .status()
            .expect("run cargo build for mezzo-launcher");
        assert!(status.success(), "building mezzo-launcher failed");
    }
    dir
}

/// The running `mezzo-executor` binary.
pub struct ExecutorProcess {
    child: tokio::process::Child,
    pub log: PathBuf,
}

impl ExecutorProcess {
    /// Starts `mezzo-executor` for the container with the agent's environment.
    pub fn start(agent: &FakeAgent, container: &TestContainer, executor_id: &str, extra: &[(&str, &str)]) -> Self {
        Self::start_for(agent, &container.runtime_dir, &container.sandbox, &container.launcher_dir, executor_id, extra)
    }

    /// Starts `mezzo-executor` for the container prepared in `runtime_dir`.
    pub fn start_for(
        agent: &FakeAgent,
        runtime_dir: &Path,
        sandbox: &Path,
        launcher_dir: &Path,
        executor_id: &str,
        extra: &[(&str, &str)],
    ) -> Self {
        let log = sandbox.join("executor.log");
        let stderr = std::fs::File::create(&log).unwrap();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mezzo-executor"));
        command
            .current_dir(sandbox)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("MESOS_AGENT_ENDPOINT", &agent.endpoint)
            .env("MESOS_FRAMEWORK_ID", FRAMEWORK_ID)
            .env("MESOS_EXECUTOR_ID", executor_id)
            .env("MESOS_SLAVE_ID", AGENT_ID)
            .env("MESOS_DIRECTORY", sandbox)
            .env("MESOS_SANDBOX", sandbox)
            .env("MESOS_CHECKPOINT", "0")
            .env("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", "5secs")
            .env("MESOS_HTTP_COMMAND_EXECUTOR", "1")
            .env("MEZZO_RUNTIME_DIR", runtime_dir)
            .env("MEZZO_LAUNCHER_DIR", launcher_dir)
            .env("MEZZO_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true);
        for (key, value) in extra {
            command.env(key, value);
        }
        ExecutorProcess { child: command.spawn().expect("spawn mezzo-executor"), log }
    }

    /// Waits (bounded) for the executor to exit; returns its exit code.
    pub async fn wait(&mut self, timeout: Duration) -> i32 {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.unwrap().code().unwrap_or(-1),
            Err(_) => {
                let _ = self.child.kill().await;
                panic!("executor did not exit within {timeout:?}; log:\n{}", self.log_text());
            }
        }
    }

    /// The executor's own log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The identifiers the executor must put into its updates.
pub fn executor_id_of(status: &TaskStatus) -> Option<&ExecutorId> {
    status.executor_id.as_ref()
}
