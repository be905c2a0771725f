//! The agent side of mezzo's own master protocol (`agent.proto`):
//! `POST /mezzo/v1/agent/{register,ping,status}`.
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
use mezzo_proto::mezzo::agent::{Ping, RegisterAgent, StatusUpdate};

use crate::error::CallError;
use crate::master::Shared;

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
    let result = decode::<RegisterAgent>(&headers, &body).and_then(|(req, ct)| {
        let reply = shared.lock().register_agent(req)?;
        Ok((ct, reply))
    });
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
