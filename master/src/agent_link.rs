//! Ordered, retried delivery of `MasterToAgent` messages to one agent.
//!
//! One worker task per agent sends messages in the order the master produced
//! them, so a KILL_TASK never overtakes the RUN_TASK it refers to.

use std::time::Duration;

use mezzo_proto::mezzo::agent::MasterToAgent;
use prost::Message;
use tokio::sync::mpsc;

/// The path on the agent that receives master messages.
pub const AGENT_MASTER_PATH: &str = "/mezzo/v1/master";

/// A handle to the delivery worker of one agent; dropping it ends the worker
/// once the queued messages are sent.
#[derive(Debug)]
pub(crate) struct AgentLink {
    tx: mpsc::UnboundedSender<MasterToAgent>,
}

impl AgentLink {
    /// Starts a worker that delivers to `http://<endpoint>/mezzo/v1/master`.
    pub(crate) fn spawn(
        client: reqwest::Client,
        agent_id: String,
        endpoint: String,
        timeout: Duration,
        attempts: u32,
    ) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<MasterToAgent>();
        let url = format!("http://{endpoint}{AGENT_MASTER_PATH}");
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                deliver(&client, &agent_id, &url, &msg, timeout, attempts.max(1)).await;
            }
        });
        Self { tx }
    }

    /// Queues a message; never blocks.
    pub(crate) fn send(&self, msg: MasterToAgent) {
        if self.tx.send(msg).is_err() {
            tracing::warn!("agent delivery worker is gone, message dropped");
        }
    }
}

async fn deliver(
    client: &reqwest::Client,
    agent_id: &str,
    url: &str,
    msg: &MasterToAgent,
    timeout: Duration,
    attempts: u32,
) {
    let body = msg.encode_to_vec();
    let kind = msg.r#type();
    let mut backoff = Duration::from_millis(200);
    for attempt in 1..=attempts {
        let result = client
            .post(url)
            .header("Content-Type", "application/x-protobuf")
            .timeout(timeout)
            .body(body.clone())
            .send()
            .await;
        match result {
            Ok(resp) if resp.status().is_success() => {
                tracing::debug!(agent_id, ?kind, "delivered message to agent");
                return;
            }
            // A 4xx means the agent understood and refused: retrying cannot help.
            Ok(resp) if resp.status().is_client_error() => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                tracing::warn!(agent_id, ?kind, %status, body = %text, "agent rejected message");
                return;
            }
            Ok(resp) => {
                tracing::warn!(agent_id, ?kind, status = %resp.status(), attempt, "agent answered with an error");
            }
            Err(err) => {
                tracing::warn!(agent_id, ?kind, error = %err, attempt, "failed to reach agent");
            }
        }
        if attempt < attempts {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
    tracing::error!(agent_id, ?kind, attempts, "giving up delivering message to agent");
}
