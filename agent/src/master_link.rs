//! The agent's side of our agent<->master protocol: registration, pings and
//! protobuf POSTs to the master, authenticated both ways.
//!
//! The agent holds a persistent secret (`<work_dir>/meta/agent.secret`, mode
//! 0600) that proves a re-registration under its id comes from it, and a
//! token of this process that the master must present on every message to
//! the agent. The master answers a registration with the token the agent
//! presents on every later message to the master. Tokens travel as
//! `Authorization: Bearer <token>` and are compared in constant time.

use crate::agent::Agent;
use anyhow::Context;
use mezzo_master::credentials::{bearer_token, constant_time_eq, random_token};
use mezzo_proto::mesos::v1::{FrameworkId, FrameworkInfo};
use mezzo_proto::mezzo::agent::{AgentRegistered, CompletedFramework, Ping, RegisterAgent, ReportedTask};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The secrets of the agent's link to the master.
pub struct Session {
    /// What the master presents to this agent process.
    agent_token: String,
    /// The agent's persistent secret.
    agent_secret: String,
    /// What this agent presents to the master; none before registration.
    master_token: RwLock<Option<String>>,
    /// Where the (leading) master is.
    pub leader: MasterLocator,
}

/// Where the agent finds its master: `--master=host:port`, or the leader of
/// a group on ZooKeeper (`--master=zk://...`), followed as it changes.
pub enum MasterLocator {
    Fixed(String),
    Zk(mezzo_zk::Detector),
}

impl MasterLocator {
    /// From `--master` (and `--zk_session_timeout`); starts following the group for `zk://`.
    pub fn new(master: &str, session_timeout: Duration) -> anyhow::Result<MasterLocator> {
        Ok(match mezzo_zk::MasterAddress::parse("master", master)? {
            mezzo_zk::MasterAddress::Fixed(address) => MasterLocator::Fixed(address),
            mezzo_zk::MasterAddress::Zk(url) => {
                tracing::info!(zk = %url, "following the leading master of a group on ZooKeeper");
                MasterLocator::Zk(mezzo_zk::Detector::start(url, session_timeout))
            }
        })
    }

    /// `host:port` of the (leading) master; none while no master leads.
    pub fn current(&self) -> Option<String> {
        match self {
            MasterLocator::Fixed(address) => Some(address.clone()),
            MasterLocator::Zk(detector) => detector.leader().map(|info| mezzo_zk::master_endpoint(&info)),
        }
    }

    /// Leader changes, for a group.
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<Option<mezzo_proto::mesos::v1::MasterInfo>>> {
        match self {
            MasterLocator::Fixed(_) => None,
            MasterLocator::Zk(detector) => Some(detector.watch()),
        }
    }
}

/// Waits `delay`, or less when the leading master changes first (`changes` of a group).
async fn wait_or_new_leader(delay: Duration, changes: &mut Option<tokio::sync::watch::Receiver<Option<mezzo_proto::mesos::v1::MasterInfo>>>) -> bool {
    match changes {
        Some(rx) => tokio::select! {
            _ = tokio::time::sleep(delay) => false,
            changed = rx.changed() => changed.is_ok(),
        },
        None => {
            tokio::time::sleep(delay).await;
            false
        }
    }
}

impl Session {
    /// Loads the agent's secret from `<work_dir>/meta/agent.secret`,
    /// creating it (0600) when absent, and starts a new session token.
    pub fn load(work_dir: &Path, leader: MasterLocator) -> anyhow::Result<Self> {
        let meta = work_dir.join("meta");
        std::fs::create_dir_all(&meta).with_context(|| format!("create {}", meta.display()))?;
        let path = meta.join("agent.secret");
        let agent_secret = match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => {
                let mode = std::fs::metadata(&path)?.permissions().mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), "the agent secret was readable by others; restricting it to 0600");
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
                }
                text.trim().to_string()
            }
            Ok(_) => write_secret(&path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_secret(&path)?,
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        Ok(Session { agent_token: random_token(), agent_secret, master_token: RwLock::new(None), leader })
    }

    /// Whether an `Authorization` header value carries this session's token.
    pub fn is_master(&self, authorization: Option<&str>) -> bool {
        authorization
            .and_then(bearer_token)
            .is_some_and(|t| constant_time_eq(t.as_bytes(), self.agent_token.as_bytes()))
    }

    fn master_token(&self) -> Option<String> {
        self.master_token.read().unwrap().clone()
    }
}

/// Writes a new secret: created 0600 under a temporary name, synced, renamed.
fn write_secret(path: &Path) -> anyhow::Result<String> {
    let secret = random_token();
    let tmp = path.with_extension("secret.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    f.write_all(secret.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(secret)
}

/// A refusal or failure of a POST to the master.
#[derive(Debug)]
pub struct PostError {
    /// The HTTP status, when the master answered.
    pub status: Option<u16>,
    pub message: String,
}

impl std::fmt::Display for PostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// POSTs a protobuf message to the master, with `token` as the bearer
/// token when given; returns the response body.
pub async fn post<M: prost::Message>(
    http: &reqwest::Client,
    master: &str,
    path: &str,
    msg: &M,
    token: Option<&str>,
) -> Result<(u16, bytes::Bytes), PostError> {
    let url = format!("http://{master}{path}");
    let mut req = http
        .post(&url)
        .header("Content-Type", "application/x-protobuf")
        .header("Accept", "application/x-protobuf");
    if let Some(token) = token {
        req = req.header("Authorization", format!("Bearer {token}"));
    }
    let failed = |e: reqwest::Error| PostError { status: None, message: format!("POST {url}: {e}") };
    let resp = req.body(msg.encode_to_vec()).send().await.map_err(failed)?;
    let code = resp.status().as_u16();
    let body = resp.bytes().await.map_err(failed)?;
    if (200..300).contains(&code) {
        Ok((code, body))
    } else {
        Err(PostError { status: Some(code), message: format!("POST {url}: {code} {}", String::from_utf8_lossy(&body)) })
    }
}

/// POSTs to the master as the registered agent (with the session token).
pub async fn post_authenticated<M: prost::Message>(agent: &Agent, path: &str, msg: &M) -> Result<(u16, bytes::Bytes), PostError> {
    let token = agent.session.master_token();
    let Some(token) = token else {
        return Err(PostError { status: None, message: "not registered with the master yet".into() });
    };
    let master = leading_master(agent)?;
    post(&agent.http, &master, path, msg, Some(&token)).await
}

fn leading_master(agent: &Agent) -> Result<String, PostError> {
    agent.session.leader.current().ok_or_else(|| PostError { status: None, message: "no master leads (ZooKeeper names none)".into() })
}

/// Where a master that recovered its registry tells its agents to ping now
/// (`POST`, no body; answered 202).
pub const MASTER_CHANGED_PATH: &str = mezzo_master::AGENT_MASTER_CHANGED_PATH;

/// Time between pings while the master does not answer.
const MASTER_LOST_RETRY: Duration = Duration::from_millis(250);

/// Registers with the master (retrying with backoff), then pings it and
/// re-registers whenever the master no longer knows this agent's session.
pub async fn register_and_ping(agent: Arc<Agent>) {
    let mut refusals = 0u32;
    // A new leading master: register with it at once (Mesos's agent re-registers on a new leader).
    let mut changes = agent.session.leader.changes();
    loop {
        if let Some(rx) = changes.as_mut() {
            rx.borrow_and_update();
        }
        let registered = register(&agent).await;
        let interval = match registered {
            Ok(reg) => {
                refusals = 0;
                let first = agent.agent_id.read().unwrap().is_none();
                agent.set_agent_id(&reg.agent_id.value);
                *agent.session.master_token.write().unwrap() = reg.master_token.clone();
                if first {
                    agent.registered.notify_waiters();
                }
                tracing::info!(agent_id = %reg.agent_id.value, "registered with master");
                Duration::from_secs_f64(reg.ping_interval_seconds.unwrap_or(5.0).clamp(0.1, 60.0))
            }
            Err(e) if e.status == Some(410) => {
                // Marked gone by an operator: this id never comes back (Mesos's ShutdownMessage).
                tracing::error!(error = %e, "the master marked this agent gone: shutting down");
                agent.shutdown_requested.notify_one();
                return;
            }
            Err(e) if matches!(e.status, Some(401 | 403)) => {
                // Refused: a wrong --credential, or another agent's id. Say
                // so loudly and keep trying slowly (an operator may fix the master).
                refusals = refusals.saturating_add(1);
                tracing::error!(error = %e, "the master refused this agent's registration");
                tokio::time::sleep(Duration::from_secs(u64::from(refusals.min(10)))).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "registration with master failed; retrying");
                // 503: a newly elected master finishing its recovery, soon ready.
                let delay = if e.status == Some(503) { Duration::from_millis(100) } else { Duration::from_millis(500) };
                wait_or_new_leader(delay, &mut changes).await;
                continue;
            }
        };
        // Ping until the master forgets us or another master leads. While the
        // master cannot be reached (it failed), ping more often: a master
        // restarted on its work_dir waits for its agents, and they come back
        // within a retry.
        let retry = MASTER_LOST_RETRY.min(interval);
        let mut wait = interval;
        let mut last_ping = tokio::time::Instant::now();
        loop {
            let new_leader = tokio::select! {
                new_leader = wait_or_new_leader(wait, &mut changes) => new_leader,
                () = agent.ping_now.notified() => {
                    // The nudge needs no credentials (any task can send it):
                    // at most one early ping per MASTER_LOST_RETRY, however often it comes.
                    tokio::time::sleep_until(last_ping + MASTER_LOST_RETRY).await;
                    tracing::debug!("told a master recovered its registry: pinging the master now");
                    false
                }
            };
            last_ping = tokio::time::Instant::now();
            if new_leader {
                tracing::info!(master = ?agent.session.leader.current(), "a new master leads; re-registering");
                break;
            }
            let ping = Ping { agent_id: mezzo_proto::mesos::v1::AgentId { value: agent.id() } };
            match post_authenticated(&agent, "/mezzo/v1/agent/ping", &ping).await {
                Ok(_) => wait = interval,
                Err(e) if matches!(e.status, Some(401 | 404)) => {
                    tracing::warn!(error = %e, "master does not know this agent's session; re-registering");
                    break;
                }
                Err(e) => {
                    if wait == interval {
                        tracing::warn!(error = %e, "ping to master failed");
                    }
                    wait = retry;
                }
            }
        }
    }
}

async fn register(agent: &Agent) -> Result<AgentRegistered, PostError> {
    let Report { tasks, frameworks, executors, completed_frameworks } = report(agent);
    let credential = agent.flags.credential.as_ref();
    let msg = RegisterAgent {
        agent_info: agent.info(),
        endpoint: agent.endpoint(),
        total_resources: agent.resources.clone(),
        agent_secret: Some(agent.session.agent_secret.clone()),
        agent_token: Some(agent.session.agent_token.clone()),
        principal: credential.map(|c| c.principal.clone()),
        secret: credential.map(|c| c.secret.clone()),
        tasks,
        frameworks,
        executors,
        completed_frameworks,
    };
    let master = leading_master(agent)?;
    let (_, body) = post(&agent.http, &master, "/mezzo/v1/agent/register", &msg, None).await?;
    mezzo_proto::from_protobuf::<AgentRegistered>(&body).map_err(|e| PostError { status: None, message: e.to_string() })
}

/// What an agent reports when it (re-)registers, as Mesos's ReregisterSlaveMessage.
struct Report {
    tasks: Vec<ReportedTask>,
    frameworks: Vec<FrameworkInfo>,
    executors: Vec<mezzo_proto::mesos::v1::ExecutorInfo>,
    completed_frameworks: Vec<CompletedFramework>,
}

/// The tasks this agent runs, with their latest state and their updates the
/// scheduler has not acknowledged, their frameworks, the custom executors
/// that run them, and the frameworks whose executors all ended here with
/// their completed tasks.
fn report(agent: &Agent) -> Report {
    let state = agent.state.lock().unwrap();
    let reported = |framework_id: &str, t: &crate::executor::Task| ReportedTask {
        framework_id: FrameworkId { value: framework_id.to_string() },
        task: t.info.clone(),
        state: Some(t.state as i32),
        unacknowledged_updates: agent.updates.pending_of(framework_id, t.id()),
    };
    let tasks: Vec<ReportedTask> = state.executors.values().flat_map(|ex| ex.tasks.iter().map(|t| reported(&ex.framework_id, t))).collect();
    let executors = state.executors.values().filter(|ex| ex.kind == crate::executor::ExecutorKind::Custom).map(|ex| ex.info.clone()).collect();
    let frameworks = state
        .frameworks
        .iter()
        .filter(|(id, _)| tasks.iter().any(|t| &t.framework_id.value == *id))
        .map(|(_, info)| info.clone())
        .collect();
    let mut completed: BTreeMap<&str, CompletedFramework> = BTreeMap::new();
    for ex in &state.completed {
        if state.executors.keys().any(|(f, _)| f == &ex.framework_id) {
            continue;
        }
        let Some(info) = state.frameworks.get(&ex.framework_id) else { continue };
        let entry = completed.entry(&ex.framework_id).or_insert_with(|| CompletedFramework { info: info.clone(), tasks: Vec::new() });
        entry.tasks.extend(ex.tasks.iter().map(|t| reported(&ex.framework_id, t)));
    }
    Report { tasks, frameworks, executors, completed_frameworks: completed.into_values().collect() }
}
