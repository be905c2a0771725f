//! Test harness: a master on loopback, a fake agent that records what the
//! master sends it, and a scheduler client that reads the RecordIO stream.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use mezzo_master::{MasterConfig, STREAM_ID_HEADER};
use mezzo_proto::codec::{self, ContentType};
use mezzo_proto::mesos::v1::scheduler::{call, event, Call, Event};
use mezzo_proto::mesos::v1::{
    offer, value, AgentId, AgentInfo, CommandInfo, ExecutorId, FrameworkId, FrameworkInfo, Offer, OfferId,
    Resource, TaskId, TaskInfo, TaskStatus,
};
use mezzo_proto::mezzo::agent::{
    AgentRegistered, ExecutorExited, FrameworkMessage, MasterToAgent, RegisterAgent, StatusUpdate,
};
use mezzo_proto::recordio;
use prost::Message;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Upper bound of every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// A master serving on an ephemeral loopback port; aborted on drop.
pub struct TestMaster {
    pub addr: SocketAddr,
    handle: JoinHandle<()>,
}

impl Drop for TestMaster {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

impl TestMaster {
    pub async fn start() -> Self {
        Self::start_with(MasterConfig::default()).await
    }

    pub async fn start_with(config: MasterConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = tokio::spawn(async move {
            mezzo_master::serve(config, listener).await.unwrap();
        });
        Self { addr, handle }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn state(&self) -> serde_json::Value {
        let text = reqwest::get(self.url("/state")).await.unwrap().text().await.unwrap();
        serde_json::from_str(&text).unwrap()
    }
}

/// A fake agent: an HTTP server that records every MasterToAgent it gets.
pub struct FakeAgent {
    pub endpoint: String,
    pub agent_id: String,
    /// The agent's persistent secret, presented at (re-)registration.
    pub secret: String,
    /// What the master must present to this agent.
    pub token: String,
    /// What this agent presents to the master (from its last registration).
    pub master_token: std::sync::Mutex<String>,
    rx: mpsc::UnboundedReceiver<MasterToAgent>,
    handle: JoinHandle<()>,
    master: SocketAddr,
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

async fn receive(
    State((tx, token)): State<(mpsc::UnboundedSender<MasterToAgent>, String)>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> StatusCode {
    // As the real agent: only the master of this session is obeyed.
    let expected = format!("Bearer {token}");
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return StatusCode::UNAUTHORIZED;
    }
    match MasterToAgent::decode(body.as_ref()) {
        Ok(msg) => {
            let _ = tx.send(msg);
            StatusCode::ACCEPTED
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

pub fn scalar(name: &str, v: f64) -> Resource {
    Resource {
        name: name.into(),
        r#type: value::Type::Scalar as i32,
        scalar: Some(value::Scalar { value: v }),
        ..Default::default()
    }
}

pub fn ports(begin: u64, end: u64) -> Resource {
    Resource {
        name: "ports".into(),
        r#type: value::Type::Ranges as i32,
        ranges: Some(value::Ranges {
            range: vec![value::Range { begin, end }],
        }),
        ..Default::default()
    }
}

/// The default fake agent's resources.
pub fn agent_resources() -> Vec<Resource> {
    vec![
        scalar("cpus", 2.0),
        scalar("mem", 1024.0),
        scalar("disk", 4096.0),
        ports(31000, 32000),
    ]
}

impl FakeAgent {
    /// Starts the agent server and registers it with the master.
    pub async fn start(master: &TestMaster) -> Self {
        Self::start_with(master, agent_resources()).await
    }

    pub async fn start_with(master: &TestMaster, resources: Vec<Resource>) -> Self {
        let mut agent = Self::serve(master).await;
        let reg = agent.register(None, resources).await;
        agent.agent_id = reg.agent_id.value;
        agent
    }

    /// Starts the agent server without registering.
    pub async fn serve(master: &TestMaster) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let token = uuid::Uuid::new_v4().to_string();
        let app = Router::new()
            .route("/mezzo/v1/master", post(receive))
            .with_state((tx, token.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = listener.local_addr().unwrap().to_string();
        let handle = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            endpoint,
            agent_id: String::new(),
            secret: uuid::Uuid::new_v4().to_string(),
            token,
            master_token: Default::default(),
            rx,
            handle,
            master: master.addr,
        }
    }

    /// Stops serving: the master can no longer reach this agent.
    pub fn stop_serving(&self) {
        self.handle.abort();
    }

    pub async fn register(&self, id: Option<&str>, resources: Vec<Resource>) -> AgentRegistered {
        let (status, reg) = self.try_register(self.request(id, resources)).await;
        assert_eq!(status, 200);
        let reg = reg.unwrap();
        *self.master_token.lock().unwrap() = reg.master_token.clone().unwrap_or_default();
        reg
    }

    /// The registration request this agent sends.
    pub fn request(&self, id: Option<&str>, resources: Vec<Resource>) -> RegisterAgent {
        let port: i32 = self.endpoint.rsplit(':').next().unwrap().parse().unwrap();
        RegisterAgent {
            agent_info: AgentInfo {
                hostname: "localhost".into(),
                port: Some(port),
                id: id.map(|v| AgentId { value: v.into() }),
                ..Default::default()
            },
            endpoint: self.endpoint.clone(),
            total_resources: resources,
            agent_secret: Some(self.secret.clone()),
            agent_token: Some(self.token.clone()),
            ..Default::default()
        }
    }

    /// Sends a registration; the status and, on 200, the reply.
    pub async fn try_register(&self, req: RegisterAgent) -> (u16, Option<AgentRegistered>) {
        let resp = reqwest::Client::new()
            .post(format!("http://{}/mezzo/v1/agent/register", self.master))
            .header("Content-Type", "application/x-protobuf")
            .body(req.encode_to_vec())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap();
        (status, (status == 200).then(|| AgentRegistered::decode(body).unwrap()))
    }

    /// Pings as the agent does; returns the HTTP status.
    pub async fn ping(&self) -> u16 {
        let ping = mezzo_proto::mezzo::agent::Ping { agent_id: AgentId { value: self.agent_id.clone() } };
        let token = self.master_token.lock().unwrap().clone();
        reqwest::Client::new()
            .post(format!("http://{}/mezzo/v1/agent/ping", self.master))
            .header("Content-Type", "application/x-protobuf")
            .header("Authorization", format!("Bearer {token}"))
            .body(ping.encode_to_vec())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Posts a status update as the agent does; returns the HTTP status.
    pub async fn send_status(&self, framework_id: &str, status: TaskStatus) -> StatusCode {
        let token = self.master_token.lock().unwrap().clone();
        self.send_status_with(framework_id, status, Some(&token)).await
    }

    /// Posts a status update with `token` as bearer (none: no header).
    pub async fn send_status_with(&self, framework_id: &str, status: TaskStatus, token: Option<&str>) -> StatusCode {
        let update = StatusUpdate {
            framework_id: FrameworkId {
                value: framework_id.into(),
            },
            status,
        };
        let mut req = reqwest::Client::new()
            .post(format!("http://{}/mezzo/v1/agent/status", self.master))
            .header("Content-Type", "application/x-protobuf");
        if let Some(token) = token {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        let resp = req
            .body(update.encode_to_vec())
            .send()
            .await
            .unwrap();
        StatusCode::from_u16(resp.status().as_u16()).unwrap()
    }

    /// Registers with `req` (built by `request` and completed by the
    /// caller), keeping the session token; panics unless it is accepted.
    pub async fn register_with(&mut self, req: RegisterAgent) -> AgentRegistered {
        let (status, reg) = self.try_register(req).await;
        assert_eq!(status, 200);
        let reg = reg.unwrap();
        *self.master_token.lock().unwrap() = reg.master_token.clone().unwrap_or_default();
        self.agent_id = reg.agent_id.value.clone();
        reg
    }

    /// Posts `body` (protobuf) to the master's `path` as this agent, with
    /// its session token (`token` None: the session's, Some(None): no
    /// header); returns the status and the body text.
    pub async fn post(&self, path: &str, body: Vec<u8>, token: Option<Option<&str>>) -> (StatusCode, String) {
        let session = self.master_token.lock().unwrap().clone();
        let token = token.unwrap_or(Some(session.as_str()));
        let mut req = reqwest::Client::new()
            .post(format!("http://{}{path}", self.master))
            .header("Content-Type", "application/x-protobuf");
        if let Some(token) = token {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        let resp = req.body(body).send().await.unwrap();
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
        (status, resp.text().await.unwrap())
    }

    /// Sends an executor's message to its scheduler as the agent does.
    pub async fn send_framework_message(&self, framework_id: &str, executor_id: &str, data: Vec<u8>) -> (StatusCode, String) {
        let msg = FrameworkMessage {
            framework_id: FrameworkId { value: framework_id.into() },
            executor_id: ExecutorId { value: executor_id.into() },
            data,
            agent_id: Some(AgentId { value: self.agent_id.clone() }),
        };
        self.post("/mezzo/v1/agent/message", msg.encode_to_vec(), None).await
    }

    /// Reports the exit of a custom executor as the agent does.
    pub async fn executor_exited(&self, framework_id: &str, executor_id: &str, status: Option<i32>) -> (StatusCode, String) {
        let exited = ExecutorExited {
            framework_id: FrameworkId { value: framework_id.into() },
            executor_id: ExecutorId { value: executor_id.into() },
            status,
        };
        self.post("/mezzo/v1/agent/executor_exited", exited.encode_to_vec(), None).await
    }

    /// The next message the master sent, within `WAIT`.
    pub async fn next_message(&mut self) -> MasterToAgent {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("timed out waiting for a message to the agent")
            .expect("agent channel closed")
    }

    /// Whether no message arrives within `d`.
    pub async fn silent_for(&mut self, d: Duration) -> bool {
        tokio::time::timeout(d, self.rx.recv()).await.is_err()
    }
}

/// A scheduler connection: the subscription stream and the call client.
pub struct Scheduler {
    pub master: SocketAddr,
    pub stream_id: String,
    pub framework_id: String,
    pub content_type: ContentType,
    resp: reqwest::Response,
    decoder: recordio::Decoder,
    pub client: reqwest::Client,
}

pub fn framework_info(name: &str) -> FrameworkInfo {
    FrameworkInfo {
        user: "root".into(),
        name: name.into(),
        ..Default::default()
    }
}

pub fn subscribe_call(info: FrameworkInfo) -> Call {
    Call {
        framework_id: info.id.clone(),
        r#type: Some(call::Type::Subscribe as i32),
        subscribe: Some(call::Subscribe {
            framework_info: info,
            suppressed_roles: vec![],
        }),
        ..Default::default()
    }
}

/// One decoded event and, for JSON streams, its raw JSON.
pub struct Received {
    pub event: Event,
    pub json: Option<serde_json::Value>,
}

impl Received {
    pub fn kind(&self) -> event::Type {
        self.event.r#type()
    }
}

impl Scheduler {
    /// Subscribes and reads the SUBSCRIBED event.
    pub async fn subscribe(master: &TestMaster, info: FrameworkInfo, ct: ContentType) -> Self {
        Self::subscribe_with(master, info, ct, reqwest::Client::new()).await
    }

    /// Subscribes with `client` (e.g. one sending credentials), used for
    /// every later call too.
    pub async fn subscribe_with(master: &TestMaster, info: FrameworkInfo, ct: ContentType, client: reqwest::Client) -> Self {
        let resp = client
            .post(master.url("/api/v1/scheduler"))
            .header("Content-Type", ct.mime())
            .header("Accept", ct.mime())
            .body(codec::encode(&subscribe_call(info), ct))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let stream_id = resp
            .headers()
            .get(STREAM_ID_HEADER)
            .expect("Mesos-Stream-Id header")
            .to_str()
            .unwrap()
            .to_string();
        let mut s = Self {
            master: master.addr,
            stream_id,
            framework_id: String::new(),
            content_type: ct,
            resp,
            decoder: recordio::Decoder::new(1 << 24),
            client,
        };
        let first = s.next().await.expect("stream ended before SUBSCRIBED");
        assert_eq!(first.kind(), event::Type::Subscribed);
        s.framework_id = first.event.subscribed.unwrap().framework_id.value;
        s
    }

    /// The next event of any type; None when the stream ends.
    pub async fn next(&mut self) -> Option<Received> {
        tokio::time::timeout(WAIT, self.next_inner())
            .await
            .expect("timed out waiting for an event")
    }

    async fn next_inner(&mut self) -> Option<Received> {
        loop {
            if let Some(record) = self.decoder.next_record().unwrap() {
                let event: Event = codec::decode(&record, self.content_type).unwrap();
                let json = match self.content_type {
                    ContentType::Json => Some(serde_json::from_slice(&record).unwrap()),
                    ContentType::Protobuf => None,
                };
                return Some(Received { event, json });
            }
            match self.resp.chunk().await {
                Ok(Some(chunk)) => self.decoder.feed(&chunk),
                _ => return None,
            }
        }
    }

    /// The next event that is not a HEARTBEAT.
    pub async fn next_non_heartbeat(&mut self) -> Option<Received> {
        loop {
            let e = self.next().await?;
            if e.kind() != event::Type::Heartbeat {
                return Some(e);
            }
        }
    }

    /// Waits for an event of `kind`, skipping heartbeats only.
    pub async fn expect(&mut self, kind: event::Type) -> Received {
        let e = self.next_non_heartbeat().await.expect("stream ended");
        assert_eq!(e.kind(), kind, "unexpected event {:?}", e.event);
        e
    }

    /// Waits for the next OFFERS, skipping heartbeats.
    pub async fn next_offers(&mut self) -> Vec<Offer> {
        self.expect(event::Type::Offers).await.event.offers.unwrap().offers
    }

    /// Waits for the next UPDATE, skipping heartbeats.
    pub async fn next_update(&mut self) -> (TaskStatus, Option<serde_json::Value>) {
        let e = self.expect(event::Type::Update).await;
        (e.event.update.unwrap().status, e.json)
    }

    /// Sends a call with this framework's id and stream id; the status and
    /// the body text.
    pub async fn call_text(&self, mut c: Call) -> (StatusCode, String) {
        c.framework_id = Some(FrameworkId {
            value: self.framework_id.clone(),
        });
        let resp = self
            .client
            .post(format!("http://{}/api/v1/scheduler", self.master))
            .header("Content-Type", self.content_type.mime())
            .header(STREAM_ID_HEADER, &self.stream_id)
            .body(codec::encode(&c, self.content_type))
            .send()
            .await
            .unwrap();
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
        (status, resp.text().await.unwrap())
    }

    /// Sends a call with this framework's id and stream id.
    pub async fn call(&self, c: Call) -> StatusCode {
        self.call_text(c).await.0
    }
}

pub fn task(id: &str, agent_id: &str, resources: Vec<Resource>) -> TaskInfo {
    TaskInfo {
        name: format!("task {id}"),
        task_id: TaskId { value: id.into() },
        agent_id: AgentId {
            value: agent_id.into(),
        },
        resources,
        command: Some(CommandInfo {
            value: Some("sleep 100".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn accept_call(offer_ids: &[&OfferId], tasks: Vec<TaskInfo>) -> Call {
    Call {
        r#type: Some(call::Type::Accept as i32),
        accept: Some(call::Accept {
            offer_ids: offer_ids.iter().map(|o| (*o).clone()).collect(),
            operations: vec![offer::Operation {
                r#type: Some(offer::operation::Type::Launch as i32),
                launch: Some(offer::operation::Launch { task_infos: tasks }),
                ..Default::default()
            }],
            filters: None,
        }),
        ..Default::default()
    }
}

pub fn scalar_of(resources: &[Resource], name: &str) -> f64 {
    resources
        .iter()
        .filter(|r| r.name == name)
        .filter_map(|r| r.scalar.as_ref().map(|s| s.value))
        .sum()
}
