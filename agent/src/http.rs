//! The agent's HTTP surface: the v1 executor API, our master->agent calls,
//! sandbox files and state.
// Handlers' helpers return the ready reply (a `Response`) as their error, as axum does.
#![allow(clippy::result_large_err)]

use crate::agent::Agent;
use crate::executor::ExecutorKind;
use crate::executor_calls::CallRefusal;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use futures::StreamExt;
use mezzo_proto::codec::ContentType;
use mezzo_proto::mesos::v1::executor::{self, call};
use mezzo_proto::mezzo::agent::{master_to_agent, MasterToAgent};
use std::sync::Arc;

type AppState = Arc<Agent>;

/// All routes of the agent.
pub fn router(agent: Arc<Agent>) -> Router {
    crate::metrics::mark_started();
    Router::new()
        .route("/api/v1/executor", any(executor_api))
        .route("/mezzo/v1/master", post(master_api))
        .route(crate::master_link::MASTER_CHANGED_PATH, post(master_changed))
        .route("/files/download", get(crate::files::files_download))
        .route("/files/read", get(crate::files::files_read))
        .route("/files/browse", get(crate::files::files_browse))
        .route("/files/debug", get(crate::files::files_debug))
        .route("/state", get(state_json))
        .route("/slave(1)/state", get(state_json))
        .route("/health", get(|| async { StatusCode::OK }))
        .route("/api/v1", any(crate::operator::operator_api))
        .route("/monitor/statistics", get(crate::operator::monitor_statistics))
        .route("/monitor/statistics.json", get(crate::operator::monitor_statistics))
        .route("/containers", get(crate::operator::containers_json))
        .route("/metrics/snapshot", get(crate::metrics::snapshot_json))
        .route("/metrics", get(crate::metrics::prometheus_text))
        .route("/version", get(|| async { axum::Json(serde_json::json!({"version": "1.11.0", "mezzo_version": env!("CARGO_PKG_VERSION")})) }))
        .layer(axum::middleware::from_fn_with_state(agent.clone(), crate::http_auth::readonly_endpoints))
        .with_state(agent)
}

pub(crate) fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg.into()).into_response()
}

/// Request encoding from Content-Type (400 when missing, 415 when unknown).
pub(crate) fn request_type(headers: &HeaderMap) -> Result<ContentType, Response> {
    let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return Err(error(StatusCode::BAD_REQUEST, "Expecting 'Content-Type' to be present"));
    };
    ContentType::from_header(ct).ok_or_else(|| {
        error(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("Expecting 'Content-Type' of application/json or application/x-protobuf, got '{ct}'"))
    })
}

/// Response encoding from Accept (JSON when absent or `*/*`; 406 when unsupported).
pub(crate) fn response_type(headers: &HeaderMap) -> Result<ContentType, Response> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(ContentType::Json);
    };
    for part in accept.split(',') {
        let mime = part.split(';').next().unwrap_or("").trim();
        match mime {
            "*/*" | "application/*" | "application/json" => return Ok(ContentType::Json),
            "application/x-protobuf" => return Ok(ContentType::Protobuf),
            _ => {}
        }
    }
    Err(error(StatusCode::NOT_ACCEPTABLE, format!("Expecting 'Accept' to allow application/json or application/x-protobuf, got '{accept}'")))
}

fn record(event: &executor::Event, ct: ContentType) -> Bytes {
    Bytes::from(mezzo_proto::recordio::encode(&mezzo_proto::codec::encode(event, ct)))
}

/// `POST /api/v1/executor`: SUBSCRIBE (streaming), UPDATE, MESSAGE,
/// HEARTBEAT, answered with Mesos's status codes. The handler decodes,
/// authenticates and hands the call on; the executor's state belongs to its
/// runner and the agent's core.
async fn executor_api(State(agent): State<AppState>, method: Method, headers: HeaderMap, body: Bytes) -> Response {
    if method != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "Expecting a 'POST' request");
    }
    let ct = match request_type(&headers) {
        Ok(ct) => ct,
        Err(r) => return r,
    };
    let accept = match response_type(&headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let call: executor::Call = match mezzo_proto::codec::decode(&body, ct) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("Failed to parse body into Call: {e}")),
    };
    if call.r#type.is_none() {
        return error(StatusCode::BAD_REQUEST, "Expecting 'type' to be present");
    }
    let kind = call.r#type();
    if let Some(field) = match kind {
        call::Type::Subscribe if call.subscribe.is_none() => Some("subscribe"),
        call::Type::Update if call.update.is_none() => Some("update"),
        call::Type::Message if call.message.is_none() => Some("message"),
        _ => None,
    } {
        return error(StatusCode::BAD_REQUEST, format!("Expecting '{field}' to be present"));
    }
    if let Some(message) = &call.message {
        if message.data.len() > mezzo_proto::MAX_FRAMEWORK_MESSAGE_BYTES {
            return error(
                StatusCode::BAD_REQUEST,
                format!("'message.data' is {} bytes; at most {} are allowed", message.data.len(), mezzo_proto::MAX_FRAMEWORK_MESSAGE_BYTES),
            );
        }
    }
    let key = (call.framework_id.value.clone(), call.executor_id.value.clone());
    // Every call, a HEARTBEAT too, must come from the executor it names.
    if let Err(r) = authenticate_executor(&agent, &headers, &key) {
        return r;
    }
    // Mesos answers a HEARTBEAT before anything else.
    if kind == call::Type::Heartbeat {
        return StatusCode::ACCEPTED.into_response();
    }
    if kind == call::Type::Unknown {
        return error(StatusCode::NOT_IMPLEMENTED, "Received 'UNKNOWN' call");
    }
    if let Err(refusal) = agent.check_executor_call(&key, kind) {
        return refused(refusal);
    }
    match kind {
        call::Type::Subscribe => subscribe(agent, key, call, accept),
        call::Type::Update => match agent.executor_update(&key, call.update.expect("checked").status) {
            Ok(()) => StatusCode::ACCEPTED.into_response(),
            Err(refusal) => refused(refusal),
        },
        call::Type::Message => {
            agent.executor_message(&key, call.message.expect("checked").data);
            StatusCode::ACCEPTED.into_response()
        }
        call::Type::Heartbeat | call::Type::Unknown => unreachable!("answered above"),
    }
}

/// The realm of the executors' `WWW-Authenticate: Bearer` challenge.
pub const EXECUTOR_REALM: &str = "mezzo-executor";

fn executor_unauthorized(error: Option<&str>, message: String) -> Response {
    let challenge = match error {
        Some(e) => format!("Bearer realm=\"{EXECUTOR_REALM}\", error=\"{e}\""),
        None => format!("Bearer realm=\"{EXECUTOR_REALM}\""),
    };
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, challenge), (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_string())],
        message,
    )
        .into_response()
}

/// Checks the executor's token (Mesos's `--authenticate_http_executors`):
/// signed with this agent's key, issued to the call's framework and
/// executor, for that executor's current container. A call without a
/// token passes only when the flag is off.
fn authenticate_executor(agent: &Agent, headers: &HeaderMap, key: &(String, String)) -> Result<(), Response> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        if !agent.executor_auth.required {
            return Ok(());
        }
        tracing::warn!(
            framework = %key.0,
            executor = %key.1,
            "refused an executor call without a token; start the agent with --authenticate_http_executors=false to accept executors that send none"
        );
        return Err(executor_unauthorized(
            None,
            "Executor call without 'Authorization: Bearer <token>' (the token is in MESOS_EXECUTOR_AUTHENTICATION_TOKEN); \
             the agent accepts executors that send no token only with --authenticate_http_executors=false"
                .to_string(),
        ));
    };
    let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
    let Some(token) = token else {
        return Err(executor_unauthorized(Some("invalid_request"), "Expecting 'Authorization: Bearer <token>'".to_string()));
    };
    let claims = match agent.executor_auth.verify(token) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(framework = %key.0, executor = %key.1, error = %e, "refused an executor call with an invalid token");
            return Err(executor_unauthorized(Some("invalid_token"), format!("Invalid executor token: {e}")));
        }
    };
    if claims.fid != key.0 || claims.eid != key.1 {
        tracing::warn!(framework = %key.0, executor = %key.1, token_executor = %claims.eid, token_framework = %claims.fid, "refused an executor call with another executor's token");
        return Err(error(
            StatusCode::FORBIDDEN,
            format!(
                "The token is for executor '{}' of framework '{}'; the call is for executor '{}' of framework '{}'",
                claims.eid, claims.fid, key.1, key.0
            ),
        ));
    }
    let current = agent.state.lock().unwrap().executors.get(key).map(|e| e.container_id.clone());
    if current.as_deref() != Some(claims.cid.as_str()) {
        tracing::warn!(framework = %key.0, executor = %key.1, container = %claims.cid, "refused an executor call with the token of an ended container");
        return Err(executor_unauthorized(
            Some("invalid_token"),
            format!("Expired executor token: container '{}' of executor '{}' has ended", claims.cid, key.1),
        ));
    }
    Ok(())
}

/// SUBSCRIBE: the core takes the subscription; the response streams its events.
fn subscribe(agent: AppState, key: (String, String), call: executor::Call, accept: ContentType) -> Response {
    match agent.subscribe_executor(key, call.subscribe.unwrap_or_default()) {
        Ok(rx) => {
            let stream = tokio_stream_from(rx).map(move |ev| Ok::<_, std::convert::Infallible>(record(&ev, accept)));
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, accept.mime())
                .body(Body::from_stream(stream))
                .unwrap()
        }
        Err(refusal) => refused(refusal),
    }
}

/// The response to a refused executor call.
fn refused(refusal: CallRefusal) -> Response {
    match refusal {
        CallRefusal::BadRequest(m) => error(StatusCode::BAD_REQUEST, m),
        CallRefusal::Forbidden(m) => error(StatusCode::FORBIDDEN, m),
    }
}

fn tokio_stream_from<T: Send + 'static>(mut rx: tokio::sync::mpsc::UnboundedReceiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// `POST /mezzo/v1/master`: RUN_TASK, KILL_TASK, ACKNOWLEDGE, SHUTDOWN_FRAMEWORK.
async fn master_api(State(agent): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    // Only the master of this session may run, kill or shut down anything:
    // every container shares the host's network and reaches this endpoint.
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if !agent.session.is_master(authorization) {
        tracing::warn!(has_authorization = authorization.is_some(), "refused a master call without this session's token");
        let mut resp = error(StatusCode::UNAUTHORIZED, "Expecting 'Authorization: Bearer <token>' with the token this agent gave its master");
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer realm=\"mezzo-agent\""));
        return resp;
    }
    let ct = match request_type(&headers) {
        Ok(ct) => ct,
        Err(r) => return r,
    };
    let msg: MasterToAgent = match mezzo_proto::codec::decode(&body, ct) {
        Ok(m) => m,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("Failed to parse body: {e}")),
    };
    match msg.r#type() {
        master_to_agent::Type::RunTask => {
            let Some(run) = msg.run_task else { return error(StatusCode::BAD_REQUEST, "Expecting 'run_task'") };
            agent.run_task(run.framework_info, run.task);
        }
        master_to_agent::Type::KillTask => {
            let Some(kill) = msg.kill_task else { return error(StatusCode::BAD_REQUEST, "Expecting 'kill_task'") };
            agent.kill_task(&kill.framework_id.value, &kill.task_id.value, kill.kill_policy).await;
        }
        master_to_agent::Type::Acknowledge => {
            let Some(ack) = msg.acknowledge else { return error(StatusCode::BAD_REQUEST, "Expecting 'acknowledge'") };
            if !agent.updates.acknowledge(&ack.framework_id.value, &ack.task_id.value, &ack.uuid) {
                tracing::debug!(task = %ack.task_id.value, "acknowledgement for an update not at the head of its stream");
            }
        }
        master_to_agent::Type::ShutdownFramework => {
            let Some(s) = msg.shutdown_framework else { return error(StatusCode::BAD_REQUEST, "Expecting 'shutdown_framework'") };
            agent.shutdown_framework(&s.framework_id.value);
        }
        master_to_agent::Type::FrameworkMessage => {
            let Some(m) = msg.framework_message else { return error(StatusCode::BAD_REQUEST, "Expecting 'framework_message'") };
            if m.data.len() > mezzo_proto::MAX_FRAMEWORK_MESSAGE_BYTES {
                return error(StatusCode::BAD_REQUEST, format!("'framework_message.data' is {} bytes; at most {} are allowed", m.data.len(), mezzo_proto::MAX_FRAMEWORK_MESSAGE_BYTES));
            }
            agent.framework_message(&m.framework_id.value, &m.executor_id.value, m.data);
        }
        master_to_agent::Type::ShutdownExecutor => {
            let Some(s) = msg.shutdown_executor else { return error(StatusCode::BAD_REQUEST, "Expecting 'shutdown_executor'") };
            agent.shutdown_executor(&s.framework_id.value, &s.executor_id.value);
        }
        master_to_agent::Type::ShutdownAgent => {
            let message = msg.shutdown_agent.and_then(|s| s.message).unwrap_or_default();
            tracing::warn!(%message, "the master asks this agent to shut down");
            agent.shutdown_requested.notify_one();
        }
        master_to_agent::Type::Unknown => return error(StatusCode::BAD_REQUEST, "Expecting 'type' to be present"),
    }
    StatusCode::ACCEPTED.into_response()
}

/// `POST /mezzo/v1/master_changed` -> 202: a master that recovered its
/// registry says it is there; the agent pings its `--master` at once (and
/// re-registers if that master does not know its session). Nothing else is
/// taken from the request, so it needs no credentials: the worst a forged one
/// does is an early ping.
async fn master_changed(State(agent): State<AppState>) -> StatusCode {
    agent.ping_now.notify_one();
    StatusCode::ACCEPTED
}

/// Agent `/state`, in the shape of Mesos's (the parts we keep).
async fn state_json(State(agent): State<AppState>) -> Response {
    let state = agent.state.lock().unwrap();
    let executor_json = |ex: &crate::executor::Executor| {
        // Mesos leaves a command task's executor_id empty.
        let executor_id = if ex.kind == ExecutorKind::Command { "" } else { ex.executor_id.as_str() };
        let task_json = |t: &crate::executor::Task| {
            serde_json::json!({
                "id": t.id(),
                "name": t.info.name,
                "framework_id": ex.framework_id,
                "executor_id": executor_id,
                "state": t.state.as_str_name(),
            })
        };
        let list = |keep: &dyn Fn(&crate::executor::Task) -> bool| -> Vec<serde_json::Value> { ex.tasks.iter().filter(|t| keep(t)).map(task_json).collect() };
        // A command executor's one task is listed under `tasks` whatever its state, as before.
        let (tasks, queued, completed) = match ex.kind {
            ExecutorKind::Command => (list(&|_| true), Vec::new(), Vec::new()),
            ExecutorKind::Custom => (
                list(&|t| t.launched && !t.state.is_terminal()),
                list(&|t| !t.launched && !t.state.is_terminal()),
                list(&|t| t.state.is_terminal()),
            ),
        };
        serde_json::json!({
            "id": ex.executor_id,
            "name": ex.info.name.clone().unwrap_or_default(),
            "framework_id": ex.framework_id,
            "container": ex.container_id,
            "directory": ex.sandbox.display().to_string(),
            "tasks": tasks,
            "queued_tasks": queued,
            "completed_tasks": completed,
        })
    };
    let mut frameworks: Vec<serde_json::Value> = Vec::new();
    for (fid, info) in &state.frameworks {
        let executors: Vec<_> = state.executors.values().filter(|e| &e.framework_id == fid).map(executor_json).collect();
        let completed: Vec<_> = state.completed.iter().filter(|e| &e.framework_id == fid).map(executor_json).collect();
        frameworks.push(serde_json::json!({
            "id": fid,
            "name": info.name,
            "executors": executors,
            "completed_executors": completed,
        }));
    }
    let resources: serde_json::Map<String, serde_json::Value> = agent
        .resources
        .iter()
        .filter_map(|r| r.scalar.as_ref().map(|s| (r.name.clone(), serde_json::json!(s.value))))
        .collect();
    axum::Json(serde_json::json!({
        "id": agent.id(),
        "pid": format!("slave(1)@{}", agent.endpoint()),
        "hostname": agent.hostname,
        "resources": resources,
        "frameworks": frameworks,
        "flags": {"work_dir": agent.work_dir.display().to_string(), "containerizers": agent.flags.containerizers.to_string()},
    }))
    .into_response()
}
