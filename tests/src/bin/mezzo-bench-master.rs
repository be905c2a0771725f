//! `mezzo-bench-master [--agents=N] [--cycles=N] [--tasks=N]`: the
//! `master_offer_cycle_10k` and `master_launch_rate` figures of `make bench`.
//!
//! It starts a `mezzo-master` (next to this binary) and a load generator in
//! this process: N simulated agents (10,000 by default) that register through
//! the agent protocol (`/mezzo/v1/agent/register`, each with its own secret
//! and session token) and share one HTTP endpoint that receives the master's
//! messages; a RUN_TASK is answered at once with a TASK_RUNNING status update
//! from that agent. A framework speaking protobuf, as Mesos's own clients do,
//! then drives the master:
//! - offer cycle: it declines every outstanding offer (a filter of 1 µs, so the
//!   resources come back at once) and waits until every agent is offered
//!   again, `--cycles` times. Reported: the master's own time for the
//!   allocation run that offered every agent (its
//!   `mezzo/master/allocation_last_offering_run_ms` gauge), and in the detail
//!   the framework's view, DECLINE sent to the last offer received;
//! - launch rate: one ACCEPT per offer with one task each (`--tasks` tasks, 64
//!   calls in flight), every TASK_RUNNING acknowledged; tasks per second from
//!   the first ACCEPT to the last TASK_RUNNING received.
//!
//! Prints one JSON object per figure on stdout (`name`, `value`, `unit`,
//! `runs`, `detail`); progress and errors on stderr.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use futures::StreamExt;
use mezzo_proto::mesos::v1::offer::{operation, Operation};
use mezzo_proto::mesos::v1::scheduler::{call, event, Call, Event};
use mezzo_proto::mesos::v1::{
    task_status, AgentId, AgentInfo, CommandInfo, Filters, FrameworkId, FrameworkInfo, Offer, TaskId, TaskInfo,
    TaskState, TaskStatus,
};
use mezzo_proto::mezzo::agent::{master_to_agent, AgentRegistered, MasterToAgent, RegisterAgent, StatusUpdate};
use mezzo_tests::{bin_dir, free_port, scalar, Proc};
use prost::Message;
use tokio::sync::mpsc;

const PROTOBUF: &str = "application/x-protobuf";
const TIMEOUT: Duration = Duration::from_secs(300);

/// One simulated agent's session, by the token the master presents to it.
#[derive(Clone)]
struct Session {
    agent_id: String,
    /// What the agent presents to the master.
    master_token: String,
}

struct Sim {
    master: String,
    http: reqwest::Client,
    sessions: RwLock<HashMap<String, Session>>,
    /// Messages that were refused or failed (the bench fails when any is).
    errors: std::sync::atomic::AtomicU64,
}

async fn post(http: &reqwest::Client, url: String, bearer: Option<&str>, body: Vec<u8>) -> Result<bytes::Bytes> {
    let mut req = http.post(url).header("Content-Type", PROTOBUF).header("Accept", PROTOBUF).body(body);
    if let Some(token) = bearer {
        req = req.header("Authorization", format!("Bearer {token}"));
    }
    let resp = req.send().await?;
    let status = resp.status();
    let body = resp.bytes().await?;
    if !status.is_success() {
        bail!("{status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(body)
}

/// `POST /mezzo/v1/master` of every simulated agent.
async fn agent_endpoint(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let Some(session) = sim.sessions.read().unwrap().get(token).cloned() else {
        return StatusCode::UNAUTHORIZED;
    };
    let Ok(msg) = MasterToAgent::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    if msg.r#type() != master_to_agent::Type::RunTask {
        return StatusCode::ACCEPTED;
    }
    let Some(run) = msg.run_task else {
        return StatusCode::BAD_REQUEST;
    };
    let update = StatusUpdate {
        framework_id: run.framework_info.id.clone().unwrap_or_default(),
        status: TaskStatus {
            task_id: run.task.task_id.clone(),
            state: TaskState::TaskRunning as i32,
            source: Some(task_status::Source::Executor as i32),
            agent_id: Some(AgentId { value: session.agent_id.clone() }),
            uuid: Some(uuid::Uuid::new_v4().as_bytes().to_vec()),
            timestamp: Some(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()),
            ..Default::default()
        },
    };
    // Answered first, as an agent acknowledges a RUN_TASK before it runs it.
    tokio::spawn(async move {
        let url = format!("http://{}/mezzo/v1/agent/status", sim.master);
        if let Err(e) = post(&sim.http, url, Some(&session.master_token), update.encode_to_vec()).await {
            sim.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            eprintln!("status update of {}: {e:#}", session.agent_id);
        }
    });
    StatusCode::ACCEPTED
}

async fn register_agents(sim: &Arc<Sim>, endpoint: SocketAddr, count: usize) -> Result<()> {
    let registered = futures::stream::iter(0..count)
        .map(|i| {
            let sim = sim.clone();
            async move {
                let agent_token = uuid::Uuid::new_v4().simple().to_string();
                let resources = vec![scalar("cpus", 4.0), scalar("mem", 8192.0)];
                let req = RegisterAgent {
                    agent_info: AgentInfo { hostname: format!("sim-{i}"), port: Some(endpoint.port() as i32), resources: resources.clone(), ..Default::default() },
                    endpoint: endpoint.to_string(),
                    total_resources: resources,
                    agent_secret: Some(uuid::Uuid::new_v4().simple().to_string()),
                    agent_token: Some(agent_token.clone()),
                    ..Default::default()
                };
                // The session is known before the master can send anything on it.
                let url = format!("http://{}/mezzo/v1/agent/register", sim.master);
                let reply = AgentRegistered::decode(post(&sim.http, url, None, req.encode_to_vec()).await?)?;
                let session = Session { agent_id: reply.agent_id.value, master_token: reply.master_token.context("no master_token")? };
                sim.sessions.write().unwrap().insert(agent_token, session);
                anyhow::Ok(())
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    registered.into_iter().collect::<Result<Vec<_>>>()?;
    Ok(())
}

/// A framework speaking protobuf.
struct Framework {
    master: String,
    http: reqwest::Client,
    framework_id: FrameworkId,
    stream_id: String,
    events: mpsc::UnboundedReceiver<Event>,
}

impl Framework {
    async fn subscribe(master: &str) -> Result<Framework> {
        let http = reqwest::Client::builder().pool_max_idle_per_host(128).build()?;
        let info = FrameworkInfo { user: "root".into(), name: "bench-master".into(), ..Default::default() };
        let call = Call { r#type: Some(call::Type::Subscribe as i32), subscribe: Some(call::Subscribe { framework_info: info, ..Default::default() }), ..Default::default() };
        let resp = http
            .post(format!("http://{master}/api/v1/scheduler"))
            .header("Content-Type", PROTOBUF)
            .header("Accept", PROTOBUF)
            .body(call.encode_to_vec())
            .send()
            .await?;
        if resp.status() != 200 {
            bail!("SUBSCRIBE: {} {}", resp.status(), resp.text().await.unwrap_or_default());
        }
        let stream_id = resp.headers().get("Mesos-Stream-Id").context("no Mesos-Stream-Id")?.to_str()?.to_string();
        let (tx, mut events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut body = resp.bytes_stream();
            let mut decoder = mezzo_proto::recordio::Decoder::new(256 << 20);
            while let Some(Ok(chunk)) = body.next().await {
                decoder.feed(&chunk);
                while let Ok(Some(record)) = decoder.next_record() {
                    match Event::decode(record.as_slice()) {
                        Ok(ev) => {
                            if tx.send(ev).is_err() {
                                return;
                            }
                        }
                        Err(e) => eprintln!("undecodable event: {e}"),
                    }
                }
            }
        });
        let first = tokio::time::timeout(Duration::from_secs(30), events.recv()).await.context("no SUBSCRIBED")?.context("stream closed")?;
        let framework_id = first.subscribed.context("first event is not SUBSCRIBED")?.framework_id;
        Ok(Framework { master: master.to_string(), http, framework_id, stream_id, events })
    }

    fn call_request(&self, mut call: Call) -> reqwest::RequestBuilder {
        call.framework_id = Some(self.framework_id.clone());
        self.http
            .post(format!("http://{}/api/v1/scheduler", self.master))
            .header("Content-Type", PROTOBUF)
            .header("Mesos-Stream-Id", &self.stream_id)
            .body(call.encode_to_vec())
    }

    async fn call(&self, call: Call) -> Result<()> {
        let resp = self.call_request(call).send().await?;
        if !resp.status().is_success() {
            bail!("call: {} {}", resp.status(), resp.text().await.unwrap_or_default());
        }
        Ok(())
    }

    async fn next_event(&mut self, deadline: Instant) -> Result<Event> {
        loop {
            let ev = tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), self.events.recv())
                .await
                .context("timed out waiting for an event")?
                .context("event stream closed")?;
            if ev.r#type() != event::Type::Heartbeat {
                return Ok(ev);
            }
        }
    }

    /// Collects offers until there is one for each of `count` agents.
    async fn offers_for_all(&mut self, count: usize) -> Result<Vec<Offer>> {
        let deadline = Instant::now() + TIMEOUT;
        let mut offers = Vec::with_capacity(count);
        let mut agents = HashSet::with_capacity(count);
        while agents.len() < count {
            if let Some(batch) = self.next_event(deadline).await?.offers {
                for offer in batch.offers {
                    agents.insert(offer.agent_id.value.clone());
                    offers.push(offer);
                }
            }
        }
        Ok(offers)
    }
}

/// The master's allocation timer, from `/metrics/snapshot`.
async fn allocation_metrics(master: &str) -> Result<serde_json::Value> {
    let body = reqwest::get(format!("http://{master}/metrics/snapshot")).await?.bytes().await?;
    Ok(serde_json::from_slice(&body)?)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

async fn run(agents: usize, cycles: usize, tasks: usize) -> Result<()> {
    let work = tempfile::Builder::new().prefix("mezzo-bench-master-").tempdir()?;
    let port = free_port();
    let master = format!("127.0.0.1:{port}");
    // Simulated agents do not ping: the ping timeout outlasts the bench.
    let args = vec!["--ip=127.0.0.1".to_string(), format!("--port={port}"), "--agent_ping_timeout=1hrs".into()];
    let mut master_proc = Proc::spawn("mezzo-master", &bin_dir().join("mezzo-master"), &args, &work.path().join("master.log"))?;
    let result = async {
        let http = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while http.get(format!("http://{master}/health")).send().await.is_err() {
            if Instant::now() > deadline {
                bail!("the master did not start; its log:\n{}", std::fs::read_to_string(work.path().join("master.log")).unwrap_or_default());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let sim = Arc::new(Sim { master: master.clone(), http, sessions: RwLock::new(HashMap::new()), errors: Default::default() });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = listener.local_addr()?;
        let app = axum::Router::new().route(mezzo_master_path(), axum::routing::post(agent_endpoint)).with_state(sim.clone());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });

        let t = Instant::now();
        register_agents(&sim, endpoint, agents).await?;
        eprintln!("{agents} agents registered in {:.2} s", t.elapsed().as_secs_f64());

        let mut fw = Framework::subscribe(&master).await?;
        let mut offers = fw.offers_for_all(agents).await?;
        eprintln!("first offers for {agents} agents received");
        let mut seen_ms = Vec::new();
        let mut run_ms = Vec::new();
        for _ in 0..cycles {
            let decline = Call {
                r#type: Some(call::Type::Decline as i32),
                decline: Some(call::Decline {
                    offer_ids: offers.iter().map(|o| o.id.clone()).collect(),
                    filters: Some(Filters { refuse_seconds: Some(1e-6) }),
                }),
                ..Default::default()
            };
            let t = Instant::now();
            fw.call(decline).await?;
            offers = fw.offers_for_all(agents).await?;
            seen_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            // The master's own time for the run that offered every agent
            // (runs that offer nothing do not replace it).
            let m = allocation_metrics(&master).await?;
            let made = m["mezzo/master/allocation_last_offering_run_offers"].as_f64().unwrap_or(0.0);
            if made as usize != agents {
                bail!("the latest offering run made {made} offers, not {agents}: the offers came in several runs");
            }
            run_ms.push(m["mezzo/master/allocation_last_offering_run_ms"].as_f64().context("no allocation_last_offering_run_ms")?);
        }
        let cycle = median(&mut run_ms);
        let seen = median(&mut seen_ms);
        println!(
            "{}",
            serde_json::json!({"name": format!("master_offer_cycle_{}", short_count(agents)), "value": round2(cycle), "unit": "ms", "runs": cycles,
                "target": "<= 50 ms",
                "detail": format!("{agents} agents: the master's allocation run offering every agent (median of {cycles}, samples {:?} ms); \
                    from the framework's DECLINE of every offer to the last new offer received (decline, run, encoding, transfer, decoding): median {seen:.1} ms",
                    run_ms.iter().map(|v| round2(*v)).collect::<Vec<_>>())})
        );

        // Launch rate: one ACCEPT per offer, one task each.
        let launch: Vec<Offer> = offers.drain(..tasks.min(offers.len())).collect();
        let count = launch.len();
        let t = Instant::now();
        let fw = Arc::new(tokio::sync::Mutex::new(fw));
        let calls = {
            let f = fw.lock().await;
            launch.into_iter().enumerate().map(|(i, offer)| f.call_request(accept_one(&offer, i))).collect::<Vec<_>>()
        };
        let sender = tokio::spawn(async move {
            futures::stream::iter(calls)
                .map(|req| async move {
                    let resp = req.send().await?;
                    if !resp.status().is_success() {
                        bail!("ACCEPT: {} {}", resp.status(), resp.text().await.unwrap_or_default());
                    }
                    anyhow::Ok(())
                })
                .buffer_unordered(64)
                .collect::<Vec<_>>()
                .await
        });
        let mut running = HashSet::with_capacity(count);
        let mut acks = Vec::new();
        {
            let mut f = fw.lock().await;
            let deadline = Instant::now() + TIMEOUT;
            while running.len() < count {
                let ev = f.next_event(deadline).await?;
                let Some(update) = ev.update else { continue };
                let status = update.status;
                match status.state() {
                    TaskState::TaskRunning => {
                        running.insert(status.task_id.value.clone());
                    }
                    other => bail!("task {} went {other:?}: {:?}", status.task_id.value, status.message),
                }
                if let (Some(uuid), Some(agent_id)) = (status.uuid.clone(), status.agent_id.clone()) {
                    let ack = Call {
                        r#type: Some(call::Type::Acknowledge as i32),
                        acknowledge: Some(call::Acknowledge { agent_id, task_id: status.task_id.clone(), uuid }),
                        ..Default::default()
                    };
                    acks.push(f.call_request(ack).send());
                }
            }
        }
        let elapsed = t.elapsed().as_secs_f64();
        for result in sender.await? {
            result?;
        }
        for ack in futures::future::join_all(acks).await {
            let resp = ack?;
            if !resp.status().is_success() {
                bail!("ACKNOWLEDGE: {}", resp.status());
            }
        }
        let errors = sim.errors.load(std::sync::atomic::Ordering::Relaxed);
        if errors > 0 {
            bail!("{errors} status updates were refused");
        }
        println!(
            "{}",
            serde_json::json!({"name": "master_launch_rate", "value": round2(count as f64 / elapsed), "unit": "tasks/s", "runs": 1,
                "target": ">= 2000 tasks/s",
                "detail": format!("{count} tasks, one ACCEPT each (64 in flight), to their TASK_RUNNING at the framework in {elapsed:.2} s, {agents} simulated agents")})
        );
        server.abort();
        Ok(())
    }
    .await;
    master_proc.stop(Duration::from_secs(10));
    result
}

fn accept_one(offer: &Offer, i: usize) -> Call {
    let task = TaskInfo {
        name: format!("bench-{i}"),
        task_id: TaskId { value: format!("bench-{i}") },
        agent_id: offer.agent_id.clone(),
        resources: vec![scalar("cpus", 0.1), scalar("mem", 32.0)],
        command: Some(CommandInfo { value: Some("true".into()), ..Default::default() }),
        ..Default::default()
    };
    Call {
        r#type: Some(call::Type::Accept as i32),
        accept: Some(call::Accept {
            offer_ids: vec![offer.id.clone()],
            operations: vec![Operation { r#type: Some(operation::Type::Launch as i32), launch: Some(operation::Launch { task_infos: vec![task] }), ..Default::default() }],
            filters: None,
        }),
        ..Default::default()
    }
}

fn mezzo_master_path() -> &'static str {
    "/mezzo/v1/master"
}

fn short_count(n: usize) -> String {
    if n % 1000 == 0 { format!("{}k", n / 1000) } else { n.to_string() }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn main() -> Result<()> {
    let (mut agents, mut cycles, mut tasks) = (10_000usize, 9usize, 10_000usize);
    for arg in std::env::args().skip(1) {
        if let Some(v) = arg.strip_prefix("--agents=") {
            agents = v.parse().context("--agents")?;
        } else if let Some(v) = arg.strip_prefix("--cycles=") {
            cycles = v.parse().context("--cycles")?;
        } else if let Some(v) = arg.strip_prefix("--tasks=") {
            tasks = v.parse().context("--tasks")?;
        } else {
            bail!("unknown argument {arg} (--agents=N --cycles=N --tasks=N)");
        }
    }
    if agents == 0 || cycles == 0 || tasks == 0 {
        bail!("--agents, --cycles and --tasks must be positive");
    }
    if std::env::var_os("MEZZO_BIN_DIR").is_none() {
        let dir = std::env::current_exe()?.parent().context("the binary's directory")?.to_path_buf();
        std::env::set_var("MEZZO_BIN_DIR", dir);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run(agents, cycles, tasks))
}
