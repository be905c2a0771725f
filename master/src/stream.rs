//! The RecordIO event stream of a scheduler subscription.
//!
//! Each event is framed as one RecordIO record and handed to hyper as one
//! body frame, which hyper writes as one HTTP chunk: clients such as mentos
//! assume every chunk starts with a record length.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mezzo_proto::codec::{self, ContentType};
use mezzo_proto::mesos::v1::scheduler::Event;
use mezzo_proto::recordio;
use tokio::sync::mpsc;
use tokio::time::{Interval, MissedTickBehavior};

use crate::framework::{on_stream_closed, Subscribed};
use crate::master::{heartbeat_event, Shared};
use crate::scheduler_api::stream_headers;

/// Tells the master when the response body is dropped: the client went
/// away, or the master closed the stream itself.
struct CloseGuard {
    shared: Arc<Shared>,
    framework_id: Option<String>,
    stream_id: String,
}

impl Drop for CloseGuard {
    fn drop(&mut self) {
        if let Some(id) = &self.framework_id {
            on_stream_closed(&self.shared, id, &self.stream_id);
        }
    }
}

/// Where a stream is: the first event, the immediate HEARTBEAT, then the rest.
#[derive(Clone, Copy)]
enum Phase {
    First,
    Heartbeat,
    Events,
}

struct StreamState {
    rx: mpsc::UnboundedReceiver<Event>,
    heartbeat: Interval,
    content_type: ContentType,
    _guard: CloseGuard,
}

/// Frames one event as a RecordIO record in `content_type`.
pub(crate) fn frame<M: prost_reflect::ReflectMessage>(event: &M, content_type: ContentType) -> Bytes {
    Bytes::from(recordio::encode(&codec::encode(event, content_type)))
}

/// The 200 response streaming the events of `subscribed`, with a HEARTBEAT
/// right after the first event and then every heartbeat interval.
pub(crate) fn response(shared: Arc<Shared>, subscribed: Subscribed, content_type: ContentType) -> Response {
    let period = shared.config.heartbeat_interval;
    // The first HEARTBEAT is sent right after the first event; the interval
    // covers the later ones.
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let is_error_stream = subscribed.framework_id.is_none();
    let state = StreamState {
        rx: subscribed.rx,
        heartbeat,
        content_type,
        _guard: CloseGuard {
            shared,
            framework_id: subscribed.framework_id,
            stream_id: subscribed.stream_id.clone(),
        },
    };
    let events = futures::stream::unfold((state, Phase::First), move |(mut state, phase)| async move {
        let (event, next) = match phase {
            // SUBSCRIBED (or ERROR) is queued before the stream starts.
            Phase::First => (state.rx.recv().await?, Phase::Heartbeat),
            // A rejected subscription ends after its ERROR, as in Mesos.
            Phase::Heartbeat if is_error_stream => return None,
            Phase::Heartbeat => (heartbeat_event(), Phase::Events),
            Phase::Events => {
                let event = tokio::select! {
                    biased;
                    event = state.rx.recv() => event?,
                    _ = state.heartbeat.tick() => heartbeat_event(),
                };
                (event, Phase::Events)
            }
        };
        let bytes = frame(&event, state.content_type);
        Some((Ok::<Bytes, Infallible>(bytes), (state, next)))
    });
    let mut resp = (StatusCode::OK, Body::from_stream(events)).into_response();
    stream_headers(&mut resp, &subscribed.stream_id, content_type);
    resp
}
