//! The agent side of mezzo's own master protocol (`agent.proto`):
//! `POST /mezzo/v1/agent/{register,ping,status,message,executor_exited}`.
//!
//! Bodies are protobuf; JSON is accepted too (by `Content-Type`) because it
//! costs nothing and helps debugging with curl. Replies use the request's
//! encoding.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use mezzo_proto::codec::{self, ContentType};
use mezzo_proto::mezzo::agent::{ExecutorExited, FrameworkMessage, Ping, RegisterAgent, StatusUpdate};

use crate::error::CallError;
use crate::executors::check_message_size;
use crate::master::Shared;
use crate::validation::id_field;

fn content_type(headers: &HeaderMap) -> Result<ContentType, CallError> {
    match headers.get(header::CONTENT_TYPE) {
        // Our agents always send protobuf; the header is a courtesy.
        None => Ok(ContentType::Protobuf),
        Some(v) => {
            let text = v.to_str().unwrap_or("");
            ContentType::from_header(text).ok_or_else(|| {
                CallError::UnsupportedMediaType(format!(
                    "Expecting 'Content-Type' of application/x-protobuf or application/json, received '{text}'"
                ))
            })
        }
    }
}

fn decode<M: prost_reflect::ReflectMessage + Default>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(M, ContentType), CallError> {
    let ct = content_type(headers)?;
    let msg = codec::decode(body, ct).map_err(|e| CallError::BadRequest(format!("failed to parse body: {e}")))?;
    Ok((msg, ct))
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
}

/// `POST /mezzo/v1/agent/register` -> 200 `AgentRegistered`; 401/403 when
/// the agent does not prove who it is.
pub(crate) async fn register(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    // The answer goes out once the registry has the agent (Mesos's
    // admission awaits the registrar).
    let result = match decode::<RegisterAgent>(&headers, &body) {
        Ok((req, ct)) => shared.durably(|master| master.register_agent(req)).await.map(|reply| (ct, reply)),
        Err(e) => Err(e),
    };
    match result {
        Ok((ct, reply)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, ct.mime())],
            codec::encode(&reply, ct),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /mezzo/v1/agent/ping` -> 200; 401 without the token of a live
/// session of that agent (it then registers again).
pub(crate) async fn ping(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let result = decode::<Ping>(&headers, &body).and_then(|(ping, _)| {
        let mut master = shared.lock();
        let id = master.authenticated_agent(authorization(&headers))?;
        if id != ping.agent_id.value || !master.ping(&id) {
            return Err(CallError::Unauthorized(format!("the session is not one of agent '{}'", ping.agent_id.value)));
        }
        Ok(())
    });
    match result {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /mezzo/v1/agent/status` -> 202; 401 without a session token, 403
/// for a task of another agent, 410 for a framework the master does not know.
pub(crate) async fn status(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let result = decode::<StatusUpdate>(&headers, &body).and_then(|(update, _)| {
        let mut master = shared.lock();
        let agent_id = master.authenticated_agent(authorization(&headers))?;
        master.status_update(&agent_id, update)
    });
    match result {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /mezzo/v1/agent/message` -> 202: an executor's message to its
/// scheduler, forwarded as a MESSAGE event when the framework is subscribed
/// and dropped otherwise (best effort, as Mesos). The agent is the one of
/// the session, whatever the body says. 401 without a session token, 400
/// for invalid ids or `data` over the size bound.
pub(crate) async fn message(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let result = decode::<FrameworkMessage>(&headers, &body).and_then(|(msg, _)| {
        let mut master = shared.lock();
        let agent_id = master.authenticated_agent(authorization(&headers))?;
        id_field("framework_id", &msg.framework_id.value).map_err(CallError::BadRequest)?;
        id_field("executor_id", &msg.executor_id.value).map_err(CallError::BadRequest)?;
        check_message_size("data", msg.data.len()).map_err(CallError::BadRequest)?;
        master.executor_message(&agent_id, msg);
        Ok(())
    });
    match result {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /mezzo/v1/agent/executor_exited` -> 202: a custom executor of the
/// session's agent ended; its resources return and its scheduler gets a
/// FAILURE event. 401 without a session token, 400 for invalid ids.
pub(crate) async fn executor_exited(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let result = decode::<ExecutorExited>(&headers, &body).and_then(|(exited, _)| {
        let mut master = shared.lock();
        let agent_id = master.authenticated_agent(authorization(&headers))?;
        id_field("framework_id", &exited.framework_id.value).map_err(CallError::BadRequest)?;
        id_field("executor_id", &exited.executor_id.value).map_err(CallError::BadRequest)?;
        master.executor_exited(&agent_id, exited);
        Ok(())
    });
    match result {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(e) => e.into_response(),
    }
}
