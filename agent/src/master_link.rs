//! The agent's side of our agent<->master protocol: registration, pings and
//! protobuf POSTs to the master.

use crate::slave::Agent;
use mezzo_proto::mezzo::agent::{AgentRegistered, Ping, RegisterAgent};
use std::sync::Arc;
use std::time::Duration;

/// POSTs a protobuf message to the master; returns the response body.
pub async fn post<M: prost::Message>(http: &reqwest::Client, master: &str, path: &str, msg: &M) -> Result<(u16, bytes::Bytes), String> {
    let url = format!("http://{master}{path}");
    let resp = http
        .post(&url)
        .header("Content-Type", "application/x-protobuf")
        .header("Accept", "application/x-protobuf")
        .body(msg.encode_to_vec())
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    let code = resp.status().as_u16();
    let body = resp.bytes().await.map_err(|e| format!("POST {url}: {e}"))?;
    if (200..300).contains(&code) {
        Ok((code, body))
    } else {
        Err(format!("POST {url}: {code} {}", String::from_utf8_lossy(&body)))
    }
}

/// Registers with the master (retrying with backoff), then pings it and
/// re-registers whenever the master no longer knows this agent.
pub async fn register_and_ping(agent: Arc<Agent>) {
    loop {
        let registered = register(&agent).await;
        let interval = match registered {
            Ok(reg) => {
                let first = agent.agent_id.read().unwrap().is_none();
                agent.set_agent_id(&reg.agent_id.value);
                if first {
                    agent.registered.notify_waiters();
                }
                tracing::info!(agent_id = %reg.agent_id.value, "registered with master");
                Duration::from_secs_f64(reg.ping_interval_seconds.unwrap_or(5.0).clamp(0.1, 60.0))
            }
            Err(e) => {
                tracing::warn!(error = %e, "registration with master failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        // Ping until the master forgets us.
        loop {
            tokio::time::sleep(interval).await;
            let ping = Ping { agent_id: mezzo_proto::mesos::v1::AgentId { value: agent.id() } };
            match post(&agent.http, &agent.flags.master, "/mezzo/v1/agent/ping", &ping).await {
                Ok(_) => {}
                Err(e) if e.contains(": 404 ") => {
                    tracing::warn!("master does not know this agent; re-registering");
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "ping to master failed"),
            }
        }
    }
}

async fn register(agent: &Agent) -> Result<AgentRegistered, String> {
    let msg = RegisterAgent { agent_info: agent.info(), endpoint: agent.endpoint(), total_resources: agent.resources.clone() };
    let (_, body) = post(&agent.http, &agent.flags.master, "/mezzo/v1/agent/register", &msg).await?;
    mezzo_proto::from_protobuf::<AgentRegistered>(&body).map_err(|e| e.to_string())
}
