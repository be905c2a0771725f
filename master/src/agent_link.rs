//! Ordered, retried, authenticated delivery of `MasterToAgent` messages to
//! one agent.
//!
//! One worker task per agent sends messages in the order the master produced
//! them, so a KILL_TASK never overtakes the RUN_TASK it refers to. Every
//! message carries the session token the agent gave at registration
//! (`Authorization: Bearer`); the agent refuses anything else. What became
//! of a RUN_TASK is reported back to the master, so a task whose launch
//! cannot be delivered does not stay in TASK_STAGING.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use mezzo_proto::mezzo::agent::{master_to_agent, MasterToAgent};
use prost::Message;
use tokio::sync::mpsc;

/// The path on the agent that receives master messages.
pub const AGENT_MASTER_PATH: &str = "/mezzo/v1/master";

/// What became of a RUN_TASK, for the master's bookkeeping.
#[derive(Debug)]
pub(crate) enum LinkReport {
    /// The agent accepted the RUN_TASK.
    Delivered { agent_id: String, framework_id: String, task_id: String },
    /// Every attempt failed, or the agent refused it.
    Undeliverable { agent_id: String, framework_id: String, task_id: String, error: String },
}

/// A handle to the delivery worker of one agent; dropping it ends the worker
/// once the queued messages are sent.
#[derive(Debug)]
pub(crate) struct AgentLink {
    tx: mpsc::UnboundedSender<MasterToAgent>,
    token: Arc<RwLock<String>>,
}

/// Where and how one worker delivers.
pub(crate) struct LinkTarget {
    pub(crate) agent_id: String,
    pub(crate) endpoint: String,
    /// The agent's session token.
    pub(crate) token: String,
    pub(crate) timeout: Duration,
    pub(crate) attempts: u32,
}

impl AgentLink {
    /// Starts a worker that delivers to `http://<endpoint>/mezzo/v1/master`.
    pub(crate) fn spawn(client: reqwest::Client, target: LinkTarget, reports: mpsc::UnboundedSender<LinkReport>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<MasterToAgent>();
        let url = format!("http://{}{AGENT_MASTER_PATH}", target.endpoint);
        let token = Arc::new(RwLock::new(target.token.clone()));
        let worker_token = token.clone();
        let agent_id = target.agent_id;
        let (timeout, attempts) = (target.timeout, target.attempts.max(1));
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                let result = deliver(&client, &agent_id, &url, &worker_token, &msg, timeout, attempts).await;
                if let Some(run) = msg.run_task.as_ref().filter(|_| msg.r#type() == master_to_agent::Type::RunTask) {
                    let framework_id = run.framework_info.id.as_ref().map(|i| i.value.clone()).unwrap_or_default();
                    let task_id = run.task.task_id.value.clone();
                    let agent_id = agent_id.clone();
                    let report = match result {
                        Ok(()) => LinkReport::Delivered { agent_id, framework_id, task_id },
                        Err(error) => LinkReport::Undeliverable { agent_id, framework_id, task_id, error },
                    };
                    let _ = reports.send(report);
                }
            }
        });
        Self { tx, token }
    }

    /// Queues a message; never blocks.
    pub(crate) fn send(&self, msg: MasterToAgent) {
        if self.tx.send(msg).is_err() {
            tracing::warn!("agent delivery worker is gone, message dropped");
        }
    }

    /// Presents `token` from now on (the agent registered again).
    pub(crate) fn set_token(&self, token: String) {
        *self.token.write().unwrap_or_else(|e| e.into_inner()) = token;
    }
}

async fn deliver(
    client: &reqwest::Client,
    agent_id: &str,
    url: &str,
    token: &RwLock<String>,
    msg: &MasterToAgent,
    timeout: Duration,
    attempts: u32,
) -> Result<(), String> {
    let body = msg.encode_to_vec();
    let kind = msg.r#type();
    let mut backoff = Duration::from_millis(200);
    let mut last_error = String::new();
    for attempt in 1..=attempts {
        // Read at every attempt: a re-registration may have brought a new one.
        let bearer = format!("Bearer {}", token.read().unwrap_or_else(|e| e.into_inner()));
        let result = client
            .post(url)
            .header("Content-Type", "application/x-protobuf")
            .header("Authorization", bearer)
            .timeout(timeout)
            .body(body.clone())
            .send()
            .await;
        match result {
            Ok(resp) if resp.status().is_success() => {
                tracing::debug!(agent_id, ?kind, "delivered message to agent");
                return Ok(());
            }
            // 401: the agent restarted and has not registered its new token
            // yet; it will, so this is worth retrying.
            Ok(resp) if resp.status() == reqwest::StatusCode::UNAUTHORIZED => {
                last_error = format!("agent answered {}", resp.status());
                tracing::warn!(agent_id, ?kind, attempt, "agent refused the session token");
            }
            // Another 4xx means the agent understood and refused: retrying cannot help.
            Ok(resp) if resp.status().is_client_error() => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                tracing::warn!(agent_id, ?kind, %status, body = %text, "agent rejected message");
                return Err(format!("agent answered {status}: {text}"));
            }
            Ok(resp) => {
                last_error = format!("agent answered {}", resp.status());
                tracing::warn!(agent_id, ?kind, status = %resp.status(), attempt, "agent answered with an error");
            }
            Err(err) => {
                last_error = err.to_string();
                tracing::warn!(agent_id, ?kind, error = %err, attempt, "failed to reach agent");
            }
        }
        if attempt < attempts {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
    tracing::error!(agent_id, ?kind, attempts, "giving up delivering message to agent");
    Err(last_error)
}
