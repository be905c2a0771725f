//! `POST /api/v1/scheduler`: the Mesos v1 scheduler HTTP API.
//!
//! Request checks follow the order of `Master::Http::scheduler` in
//! `src/master/http.cpp`: method, Content-Type, body, call validation, then
//! for SUBSCRIBE the Accept header and the absence of `Mesos-Stream-Id`, and
//! for the other calls the framework and its stream id.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use mezzo_proto::codec::{self, ContentType};
use mezzo_proto::mesos::v1::offer::operation::Type as OperationType;
use mezzo_proto::mesos::v1::scheduler::{call, call::Type as CallType, Call};

use crate::error::CallError;
use crate::http_auth;
use crate::master::Shared;
use crate::stream;
use crate::validation;

/// Header carrying a subscription's stream id.
pub const STREAM_ID_HEADER: &str = "Mesos-Stream-Id";

/// Picks the response encoding from an `Accept` header: JSON when absent or
/// when JSON is acceptable, else protobuf, else none (406).
pub(crate) fn negotiate(headers: &HeaderMap) -> Option<ContentType> {
    let values: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    if values.is_empty() {
        return Some(ContentType::Json);
    }
    let accepts = |wanted: &str| {
        values.iter().any(|range| {
            let mut parts = range.split(';');
            let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let refused = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            !refused
                && (essence == wanted
                    || essence == "*/*"
                    || essence == "application/*")
        })
    };
    if accepts("application/json") {
        Some(ContentType::Json)
    } else if accepts("application/x-protobuf") {
        Some(ContentType::Protobuf)
    } else {
        None
    }
}

/// Reads the request encoding from `Content-Type` (400 missing, 415 other).
pub(crate) fn request_content_type(headers: &HeaderMap) -> Result<ContentType, CallError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .ok_or_else(|| CallError::BadRequest("Expecting 'Content-Type' to be present".into()))?;
    let text = value.to_str().unwrap_or("");
    ContentType::from_header(text).ok_or_else(|| {
        CallError::UnsupportedMediaType(format!(
            "Expecting 'Content-Type' of application/json or application/x-protobuf, received '{text}'"
        ))
    })
}

/// Validates a call like `validation::scheduler::call::validate`, plus the
/// IDs it carries (Mesos's ID rules) and the offer operations of an ACCEPT:
/// a call that fails is answered 400 before anything is consumed.
fn validate(call: &Call) -> Result<CallType, CallError> {
    let invalid = |m: &str| CallError::BadRequest(format!("Failed to validate scheduler::Call: {m}"));
    let Some(raw) = call.r#type else {
        return Err(invalid("Expecting 'type' to be present"));
    };
    let kind = CallType::try_from(raw).unwrap_or(CallType::Unknown);
    if kind == CallType::Unknown {
        return Err(CallError::NotImplemented(format!("Unsupported call type {raw}")));
    }
    if let Some(id) = &call.framework_id {
        validation::id_field("framework_id", &id.value).map_err(|e| invalid(&e))?;
    }
    if kind == CallType::Subscribe {
        let sub = call
            .subscribe
            .as_ref()
            .ok_or_else(|| invalid("Expecting 'subscribe' to be present"))?;
        validation::framework_info("subscribe.framework_info", &sub.framework_info).map_err(|e| invalid(&e))?;
        let info_id = sub
            .framework_info
            .id
            .as_ref()
            .map(|i| i.value.as_str());
        if let (Some(a), Some(b)) = (call.framework_id.as_ref().map(|f| f.value.as_str()), info_id) {
            if a != b {
                return Err(invalid("'framework_id' differs from 'subscribe.framework_info.id'"));
            }
        }
        return Ok(kind);
    }
    if call.framework_id.is_none() {
        return Err(invalid("Expecting 'framework_id' to be present"));
    }
    let missing = match kind {
        CallType::Accept if call.accept.is_none() => Some("accept"),
        CallType::Decline if call.decline.is_none() => Some("decline"),
        CallType::AcceptInverseOffers if call.accept_inverse_offers.is_none() => Some("accept_inverse_offers"),
        CallType::DeclineInverseOffers if call.decline_inverse_offers.is_none() => Some("decline_inverse_offers"),
        CallType::Kill if call.kill.is_none() => Some("kill"),
        CallType::Shutdown if call.shutdown.is_none() => Some("shutdown"),
        CallType::Acknowledge if call.acknowledge.is_none() => Some("acknowledge"),
        CallType::AcknowledgeOperationStatus if call.acknowledge_operation_status.is_none() => {
            Some("acknowledge_operation_status")
        }
        CallType::Reconcile if call.reconcile.is_none() => Some("reconcile"),
        CallType::ReconcileOperations if call.reconcile_operations.is_none() => Some("reconcile_operations"),
        CallType::Message if call.message.is_none() => Some("message"),
        CallType::Request if call.request.is_none() => Some("request"),
        CallType::UpdateFramework if call.update_framework.is_none() => Some("update_framework"),
        _ => None,
    };
    if let Some(field) = missing {
        return Err(invalid(&format!("Expecting '{field}' to be present")));
    }
    if let Some(ack) = &call.acknowledge {
        if ack.uuid.len() != 16 {
            return Err(invalid("Not a valid UUID"));
        }
    }
    validate_ids(call).map_err(|e| invalid(&e))?;
    if let Some(accept) = &call.accept {
        validate_operations(accept).map_err(|e| invalid(&e))?;
    }
    Ok(kind)
}

/// The IDs a non-SUBSCRIBE call names (tasks, agents, offers, executors),
/// and the size of a MESSAGE's data.
fn validate_ids(call: &Call) -> Result<(), String> {
    use validation::id_field;
    if let Some(accept) = &call.accept {
        for (i, id) in accept.offer_ids.iter().enumerate() {
            id_field(&format!("accept.offer_ids[{i}]"), &id.value)?;
        }
    }
    if let Some(decline) = &call.decline {
        for (i, id) in decline.offer_ids.iter().enumerate() {
            id_field(&format!("decline.offer_ids[{i}]"), &id.value)?;
        }
    }
    if let Some(kill) = &call.kill {
        id_field("kill.task_id", &kill.task_id.value)?;
        if let Some(agent) = &kill.agent_id {
            id_field("kill.agent_id", &agent.value)?;
        }
    }
    if let Some(ack) = &call.acknowledge {
        id_field("acknowledge.task_id", &ack.task_id.value)?;
        id_field("acknowledge.agent_id", &ack.agent_id.value)?;
    }
    if let Some(reconcile) = &call.reconcile {
        for (i, t) in reconcile.tasks.iter().enumerate() {
            id_field(&format!("reconcile.tasks[{i}].task_id"), &t.task_id.value)?;
            if let Some(agent) = &t.agent_id {
                id_field(&format!("reconcile.tasks[{i}].agent_id"), &agent.value)?;
            }
        }
    }
    if let Some(shutdown) = &call.shutdown {
        id_field("shutdown.executor_id", &shutdown.executor_id.value)?;
        id_field("shutdown.agent_id", &shutdown.agent_id.value)?;
    }
    if let Some(message) = &call.message {
        id_field("message.agent_id", &message.agent_id.value)?;
        id_field("message.executor_id", &message.executor_id.value)?;
        crate::executors::check_message_size("message.data", message.data.len())?;
    }
    if let Some(update) = &call.update_framework {
        validation::framework_info("update_framework.framework_info", &update.framework_info)?;
    }
    Ok(())
}

/// Refuses the offer operations this master does not perform (reservations,
/// volumes, disks): the whole ACCEPT is answered 400 naming the operation,
/// before any offer is consumed, so the scheduler sees the refusal at once
/// and its offer stays valid to be used or declined.
fn validate_operations(accept: &call::Accept) -> Result<(), String> {
    for (i, op) in accept.operations.iter().enumerate() {
        let raw = op.r#type.unwrap_or(0);
        match OperationType::try_from(raw) {
            Ok(OperationType::Launch | OperationType::LaunchGroup) => {}
            Ok(other) => {
                return Err(format!(
                    "'accept.operations[{i}]': offer operation {} is not supported by this master (only LAUNCH and LAUNCH_GROUP are)",
                    other.as_str_name()
                ));
            }
            Err(_) => return Err(format!("'accept.operations[{i}]': unknown offer operation type {raw}")),
        }
    }
    Ok(())
}

/// The axum handler of `/api/v1/scheduler`.
pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Authentication comes before everything else, as Mesos's HTTP layer.
    let principal = match http_auth::authenticate(&shared.config, http_auth::Realm::Framework, &headers) {
        Ok(principal) => principal,
        Err(resp) => return resp,
    };
    // A call that changed what the registry keeps (SUBSCRIBE, UPDATE_FRAMEWORK,
    // TEARDOWN) is answered once the registry has it; the SUBSCRIBED event
    // sits in the stream's channel until then.
    let result = match process(&shared, principal.as_deref(), &method, &headers, &body) {
        Ok((resp, Some(durable))) => durable.await.map(|()| resp),
        Ok((resp, None)) => Ok(resp),
        Err(err) => Err(err),
    };
    match result {
        Ok(resp) => resp,
        Err(err) => {
            tracing::debug!(status = %err.status(), error = %err, "rejected scheduler call");
            shared.lock().counters.invalid_calls += 1;
            err.into_response()
        }
    }
}

/// Refuses a framework whose principal is not the authenticated one.
fn check_principal(authenticated: Option<&str>, claimed: Option<&str>, whose: &str) -> Result<(), CallError> {
    match authenticated {
        Some(p) if claimed != Some(p) => Err(CallError::BadRequest(format!(
            "Authenticated principal '{p}' does not match principal '{}' {whose}",
            claimed.unwrap_or("")
        ))),
        _ => Ok(()),
    }
}

fn process(
    shared: &Arc<Shared>,
    principal: Option<&str>,
    method: &Method,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Response, Option<crate::registrar::Durable>), CallError> {
    if method != Method::POST {
        return Err(CallError::MethodNotAllowed(format!(
            "Expecting one of {{ 'POST' }}, but received '{method}'"
        )));
    }
    let content_type = request_content_type(headers)?;
    let call: Call = codec::decode(body, content_type).map_err(|e| {
        CallError::BadRequest(format!("Failed to parse body into Call: {e}"))
    })?;
    let kind = validate(&call)?;
    let stream_header = headers.get(STREAM_ID_HEADER).map(|v| v.to_str().unwrap_or(""));

    if kind == CallType::Subscribe {
        let accept = negotiate(headers).ok_or_else(|| {
            CallError::NotAcceptable("Expecting 'Accept' to allow application/json or application/x-protobuf".into())
        })?;
        if stream_header.is_some() {
            return Err(CallError::BadRequest(
                "Subscribe calls should not include the 'Mesos-Stream-Id' header".into(),
            ));
        }
        let Some(sub) = call.subscribe else {
            unreachable!("validated")
        };
        let mut info = sub.framework_info;
        check_principal(principal, info.principal.as_deref(), "set in `FrameworkInfo`")?;
        if info.id.is_none() {
            info.id = call.framework_id.clone();
        }
        let (subscribed, durable) = {
            let mut master = shared.lock();
            master.registrar.begin();
            let subscribed = master.subscribe(info, &sub.suppressed_roles);
            (subscribed, master.registrar.durable())
        };
        return Ok((stream::response(shared.clone(), subscribed, accept), durable));
    }

    let fid = call.framework_id.as_ref().map(|f| f.value.clone()).unwrap_or_default();
    let mut master = shared.lock();
    let fw = master
        .frameworks
        .get(&fid)
        .ok_or_else(|| CallError::BadRequest("Framework cannot be found".into()))?;
    check_principal(principal, fw.info.principal.as_deref(), "used by the framework")?;
    let current = fw
        .subscription
        .as_ref()
        .ok_or_else(|| CallError::Forbidden("Framework is not subscribed".into()))?;
    let given = stream_header.ok_or_else(|| {
        CallError::BadRequest("All non-subscribe calls should include the 'Mesos-Stream-Id' header".into())
    })?;
    if given != current.stream_id {
        return Err(CallError::BadRequest(format!(
            "The stream ID '{given}' included in this request didn't match the stream ID currently associated with framework ID {fid}"
        )));
    }

    master.registrar.begin();
    match kind {
        CallType::Teardown => master.teardown(&fid),
        CallType::Accept => master.accept(&fid, call.accept.as_ref().expect("validated")),
        CallType::Decline => master.decline(&fid, call.decline.as_ref().expect("validated")),
        CallType::Revive => master.revive(&fid),
        CallType::Suppress => master.suppress(&fid),
        CallType::Kill => master.kill(&fid, call.kill.as_ref().expect("validated")),
        CallType::Acknowledge => master.acknowledge(&fid, call.acknowledge.as_ref().expect("validated")),
        CallType::Reconcile => master.reconcile(&fid, call.reconcile.as_ref().expect("validated")),
        CallType::Message => master.framework_message(&fid, call.message.expect("validated")),
        CallType::Shutdown => master.shutdown_executor(&fid, call.shutdown.as_ref().expect("validated")),
        CallType::UpdateFramework => {
            let update = call.update_framework.as_ref().expect("validated");
            let info = update.framework_info.clone();
            master
                .update_framework(&fid, info, &update.suppressed_roles)
                .map_err(|m| CallError::BadRequest(format!("Failed to update framework: {m}")))?;
            return Ok((StatusCode::OK.into_response(), master.registrar.durable()));
        }
        // No inverse offers, resource requests or operations exist in this
        // master: these are accepted and have nothing to act on.
        other => tracing::info!(framework_id = %fid, call = ?other, "call accepted without effect"),
    }
    Ok((StatusCode::ACCEPTED.into_response(), master.registrar.durable()))
}

/// Builds the 200 streaming response headers of a subscription.
pub(crate) fn stream_headers(resp: &mut Response, stream_id: &str, content_type: ContentType) {
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type.mime()));
    if let Ok(v) = HeaderValue::from_str(stream_id) {
        headers.insert(STREAM_ID_HEADER, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn accept_negotiation() {
        assert_eq!(negotiate(&HeaderMap::new()), Some(ContentType::Json));
        assert_eq!(negotiate(&accept("*/*")), Some(ContentType::Json));
        assert_eq!(negotiate(&accept("application/x-protobuf")), Some(ContentType::Protobuf));
        assert_eq!(negotiate(&accept("application/json; q=0, application/x-protobuf")), Some(ContentType::Protobuf));
        assert_eq!(negotiate(&accept("text/html")), None);
    }
}
