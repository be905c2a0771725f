//! The client side of the agent's executor API (`POST /api/v1/executor`):
//! one long-lived SUBSCRIBE stream of events, and one short request per
//! other call, each expecting `202 Accepted`.
//!
//! Straight HTTP/1.1 over hyper's connection API, one connection per
//! request: the executor talks to one agent on one address, so it needs no
//! pool, no redirects, no TLS and no proxy (nor their code in every
//! executor's memory). A fresh connection per call also means a call never
//! goes out on a connection the agent has half-closed (it closes a
//! superseded subscription).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Request, Response, Uri};
use mezzo_proto::mesos::v1::executor::{Call, Event};
use std::time::Duration;
use tokio::sync::mpsc;

/// Largest event the executor accepts on its stream (a LAUNCH carries a TaskInfo).
const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;
/// Bound on any non-streaming call, so a hung agent cannot stall the executor.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on connecting to the agent.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on reading the body of an error answer.
const ERROR_BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a call to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentApiError {
    /// the request could not be sent or its response not read
    #[error("request to {url} failed: {reason}")]
    Http { url: String, reason: String },
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
    url: String,
    /// `host:port` of the agent, to connect to and to name in `Host`.
    authority: String,
    /// The request path (`/api/v1/executor`).
    path: String,
    /// `Authorization` header value (`Bearer <token>`), sent on every call.
    authorization: Option<HeaderValue>,
}

impl AgentApi {
    /// A client for `url` (`http://ip:port/api/v1/executor`) that sends
    /// `token` as `Authorization: Bearer` on every call.
    pub fn new(url: String, token: Option<&str>) -> Self {
        let uri = url.parse::<Uri>().ok();
        let authority = uri.as_ref().and_then(|u| u.authority()).map(|a| a.to_string()).unwrap_or_default();
        let path = uri.as_ref().map(|u| u.path().to_string()).filter(|p| !p.is_empty()).unwrap_or_else(|| "/".to_string());
        let authorization = token.and_then(|t| {
            let mut value = HeaderValue::from_str(&format!("Bearer {t}")).ok()?;
            value.set_sensitive(true);
            Some(value)
        });
        AgentApi { url, authority, path, authorization }
    }

    fn http_err(&self, reason: impl std::fmt::Display) -> AgentApiError {
        AgentApiError::Http { url: self.url.clone(), reason: reason.to_string() }
    }

    /// POSTs `body` on a new connection; `stream` asks for the event stream.
    async fn post(&self, body: Vec<u8>, stream: bool) -> Result<Response<hyper::body::Incoming>, AgentApiError> {
        if self.authority.is_empty() {
            return Err(self.http_err("the URL names no host"));
        }
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&self.authority))
            .await
            .map_err(|_| self.http_err(format!("connect timed out after {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| self.http_err(format!("connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| self.http_err(e))?;
        // Drives the connection until the response (and its body) is done.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mime = crate::wire::CONTENT_TYPE.mime();
        let mut request = Request::post(&self.path).header(HOST, &self.authority).header(CONTENT_TYPE, mime);
        if stream {
            request = request.header(ACCEPT, mime);
        }
        if let Some(value) = &self.authorization {
            request = request.header(AUTHORIZATION, value.clone());
        }
        let request = request.body(Full::new(Bytes::from(body))).map_err(|e| self.http_err(e))?;
        sender.send_request(request).await.map_err(|e| self.http_err(e))
    }

    /// The body of an error answer, as text (bounded in time; empty if unreadable).
    async fn error_body(response: Response<hyper::body::Incoming>) -> String {
        match tokio::time::timeout(ERROR_BODY_TIMEOUT, response.into_body().collect()).await {
            Ok(Ok(body)) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
            _ => String::new(),
        }
    }

    /// Sends a non-SUBSCRIBE call; the agent must answer `202 Accepted`.
    pub async fn send(&self, call: &Call) -> Result<(), AgentApiError> {
        let name = call_name(call);
        let body = crate::wire::encode_call(call);
        let response = tokio::time::timeout(CALL_TIMEOUT, self.post(body, false))
            .await
            .map_err(|_| self.http_err(format!("no answer within {CALL_TIMEOUT:?}")))??;
        let status = response.status().as_u16();
        if status == 202 {
            return Ok(());
        }
        Err(AgentApiError::Status { call: name, status, body: Self::error_body(response).await })
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
        let response = self.post(crate::wire::encode_call(call), true).await?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(AgentApiError::Status { call: "SUBSCRIBE", status, body: Self::error_body(response).await });
        }
        let _ = tx.send(Connection::Connected { generation });
        let mut decoder = mezzo_proto::recordio::Decoder::new(MAX_EVENT_BYTES);
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| AgentApiError::Stream(e.to_string()))?;
            let Ok(chunk) = frame.into_data() else { continue };
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
