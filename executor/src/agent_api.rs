//! The client side of the agent's executor API (`POST /api/v1/executor`):
//! one long-lived SUBSCRIBE stream of events, and one short request per
//! other call, each expecting `202 Accepted`.

use futures::StreamExt;
use mezzo_proto::mesos::v1::executor::{Call, Event};
use std::time::Duration;
use tokio::sync::mpsc;

/// Largest event the executor accepts on its stream (a LAUNCH carries a TaskInfo).
const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;
/// Bound on any non-streaming call, so a hung agent cannot stall the executor.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on connecting to the agent.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a call to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentApiError {
    /// the request could not be sent or its response not read
    #[error("request to {url} failed: {source}")]
    Http { url: String, #[source] source: reqwest::Error },
    /// the agent answered with an unexpected status code
    #[error("agent answered {status} to {call}: {body}")]
    Status { call: &'static str, status: u16, body: String },
    /// a message could not be encoded or decoded
    #[error("{0}")]
    Proto(#[from] mezzo_proto::ProtoError),
    /// the event stream broke
    #[error("event stream: {0}")]
    Stream(String),
}

/// What the subscription task reports to the executor's main loop.
#[derive(Debug)]
pub enum Connection {
    /// The agent accepted SUBSCRIBE; events follow.
    Connected { generation: u64 },
    /// One event from the stream.
    Event { generation: u64, event: Box<Event> },
    /// The subscription could not be made, or its stream ended.
    Disconnected { generation: u64, reason: String },
}

/// The agent's executor API at one URL.
#[derive(Clone)]
pub struct AgentApi {
    http: reqwest::Client,
    url: String,
    /// `Authorization` header value (`Bearer <token>`), sent on every call.
    authorization: Option<reqwest::header::HeaderValue>,
}

impl AgentApi {
    /// A client for `url` (`http://ip:port/api/v1/executor`) that sends
    /// `token` as `Authorization: Bearer` on every call.
    pub fn new(url: String, token: Option<&str>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            // The agent closes a superseded subscription; never reuse a
            // pooled connection that may be half-closed for a call.
            .pool_max_idle_per_host(0)
            .build()
            .expect("a reqwest client without TLS builds");
        let authorization = token.and_then(|t| {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).ok()?;
            value.set_sensitive(true);
            Some(value)
        });
        AgentApi { http, url, authorization }
    }

    fn post(&self) -> reqwest::RequestBuilder {
        let request = self.http.post(&self.url).header("Content-Type", crate::wire::CONTENT_TYPE.mime());
        match &self.authorization {
            Some(value) => request.header(reqwest::header::AUTHORIZATION, value.clone()),
            None => request,
        }
    }

    /// Sends a non-SUBSCRIBE call; the agent must answer `202 Accepted`.
    pub async fn send(&self, call: &Call) -> Result<(), AgentApiError> {
        let name = call_name(call);
        let body = crate::wire::encode_call(call);
        let response = self
            .post()
            .timeout(CALL_TIMEOUT)
            .body(body)
            .send()
            .await
            .map_err(|source| AgentApiError::Http { url: self.url.clone(), source })?;
        let status = response.status().as_u16();
        if status == 202 {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        Err(AgentApiError::Status { call: name, status, body })
    }

    /// Subscribes with `call` (a SUBSCRIBE) and forwards the stream's events
    /// to `tx`, tagged with `generation`, until the stream ends; always ends
    /// with a `Disconnected` report.
    pub async fn subscribe(self, call: Call, generation: u64, tx: mpsc::UnboundedSender<Connection>) {
        let reason = match self.stream_events(&call, generation, &tx).await {
            Ok(()) => "agent closed the event stream".to_string(),
            Err(e) => e.to_string(),
        };
        let _ = tx.send(Connection::Disconnected { generation, reason });
    }

    async fn stream_events(
        &self,
        call: &Call,
        generation: u64,
        tx: &mpsc::UnboundedSender<Connection>,
    ) -> Result<(), AgentApiError> {
        let body = crate::wire::encode_call(call);
        let response = self
            .post()
            .header("Accept", crate::wire::CONTENT_TYPE.mime())
            .body(body)
            .send()
            .await
            .map_err(|source| AgentApiError::Http { url: self.url.clone(), source })?;
        let status = response.status().as_u16();
        if status != 200 {
            let body = response.text().await.unwrap_or_default();
            return Err(AgentApiError::Status { call: "SUBSCRIBE", status, body });
        }
        let _ = tx.send(Connection::Connected { generation });
        let mut decoder = mezzo_proto::recordio::Decoder::new(MAX_EVENT_BYTES);
        let mut chunks = response.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| AgentApiError::Stream(e.to_string()))?;
            decoder.feed(&chunk);
            while let Some(record) = decoder.next_record()? {
                let event = crate::wire::decode_event(&record)?;
                if tx.send(Connection::Event { generation, event: Box::new(event) }).is_err() {
                    // The main loop is gone: nobody listens any more.
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// The call's type name, for messages.
fn call_name(call: &Call) -> &'static str {
    use mezzo_proto::mesos::v1::executor::call::Type;
    match call.r#type() {
        Type::Unknown => "UNKNOWN",
        Type::Subscribe => "SUBSCRIBE",
        Type::Update => "UPDATE",
        Type::Message => "MESSAGE",
        Type::Heartbeat => "HEARTBEAT",
    }
}
