//! Agent lifecycle: registration, pings and removal of silent agents.

use std::time::Instant;

use mezzo_proto::mesos::v1::scheduler::{event, Event};
use mezzo_proto::mesos::v1::{AgentId, TaskState};
use mezzo_proto::mezzo::agent::{AgentRegistered, RegisterAgent};

use crate::agent_link::AgentLink;
use crate::launch::validate_id;
use crate::master::{now_secs, Agent, Master};
use crate::resources::Resources;

impl Master {
    /// Registers (or re-registers) an agent and assigns its id.
    pub(crate) fn register_agent(&mut self, req: RegisterAgent) -> Result<AgentRegistered, String> {
        let mut info = req.agent_info;
        if req.endpoint.is_empty() {
            return Err("'endpoint' must not be empty".into());
        }
        // The agent reports its resources either way; take the explicit list.
        let list = if req.total_resources.is_empty() {
            info.resources.clone()
        } else {
            req.total_resources.clone()
        };
        let total = Resources::from_protos(&list).map_err(|e| format!("invalid resources: {e}"))?;
        let requested = info.id.as_ref().map(|i| i.value.clone()).filter(|v| !v.is_empty());
        if let Some(id) = &requested {
            validate_id(id).map_err(|e| format!("invalid agent id '{id}': {e}"))?;
        }
        let id = match requested {
            Some(id) => id,
            None => {
                let id = format!("{}-S{}", self.id, self.next_agent);
                self.next_agent += 1;
                id
            }
        };
        info.id = Some(AgentId { value: id.clone() });
        info.resources = total.to_protos();

        if let Some(offer_id) = self.agents.get(&id).and_then(|a| a.offer_id.clone()) {
            // The resources may have changed: the old offer no longer holds.
            self.rescind_offer(&offer_id);
        }
        // Non-terminal tasks the master still counts on this agent keep their resources.
        let mut used = Resources::new();
        for fw in self.frameworks.values() {
            for task in fw.tasks.values() {
                if task.agent_id == id && !task.state.is_terminal() {
                    used.add(&task.resources);
                }
            }
        }
        let link = match self.agents.remove(&id) {
            Some(old) if old.endpoint == req.endpoint => {
                self.counters.agent_reregistrations += 1;
                tracing::info!(agent_id = %id, endpoint = %req.endpoint, "agent re-registered");
                old.link
            }
            previous => {
                if previous.is_some() {
                    self.counters.agent_reregistrations += 1;
                } else {
                    self.counters.agent_registrations += 1;
                }
                tracing::info!(agent_id = %id, endpoint = %req.endpoint, hostname = %info.hostname, resources = %total, "agent registered");
                AgentLink::spawn(
                    self.client.clone(),
                    id.clone(),
                    req.endpoint.clone(),
                    self.config.agent_request_timeout,
                    self.config.agent_send_attempts,
                )
            }
        };
        self.agents.insert(
            id.clone(),
            Agent {
                id: id.clone(),
                info,
                endpoint: req.endpoint,
                total,
                used,
                offered: Resources::new(),
                offer_id: None,
                last_ping: Instant::now(),
                registered_time: now_secs(),
                link,
            },
        );
        self.wake_allocator();
        // Agents ping three times per timeout, so one lost ping is harmless.
        let interval = (self.config.agent_ping_timeout.as_secs_f64() / 3.0).max(0.1);
        Ok(AgentRegistered {
            agent_id: AgentId { value: id },
            ping_interval_seconds: Some(interval),
        })
    }

    /// Records a ping; false when the agent is unknown (it must register).
    pub(crate) fn ping(&mut self, agent_id: &str) -> bool {
        match self.agents.get_mut(agent_id) {
            Some(agent) => {
                agent.last_ping = Instant::now();
                true
            }
            None => false,
        }
    }

    /// Removes agents whose last ping is older than the ping timeout.
    pub(crate) fn remove_silent_agents(&mut self, now: Instant) {
        let timeout = self.config.agent_ping_timeout;
        let silent: Vec<String> = self
            .agents
            .values()
            .filter(|a| now.saturating_duration_since(a.last_ping) > timeout)
            .map(|a| a.id.clone())
            .collect();
        for id in silent {
            self.remove_agent(&id, "ping timeout");
        }
    }

    /// Removes an agent: its offer is rescinded, its tasks become TASK_LOST
    /// (TASK_UNREACHABLE for partition-aware frameworks), and every
    /// framework hears of the loss with a FAILURE event, as in Mesos.
    pub(crate) fn remove_agent(&mut self, id: &str, why: &str) {
        if let Some(offer_id) = self.agents.get(id).and_then(|a| a.offer_id.clone()) {
            self.rescind_offer(&offer_id);
        }
        let Some(agent) = self.agents.remove(id) else {
            return;
        };
        tracing::warn!(agent_id = %id, hostname = %agent.info.hostname, %why, "removing agent");
        self.counters.agent_removals += 1;
        let message = format!("Agent {} is unreachable: {why}", agent.info.hostname);
        for fw in self.frameworks.values_mut() {
            let partition_aware = fw.partition_aware();
            let lost: Vec<String> = fw
                .tasks
                .iter()
                .filter(|(_, t)| t.agent_id == id && !t.state.is_terminal() && t.state != TaskState::TaskUnreachable)
                .map(|(k, _)| k.clone())
                .collect();
            for task_id in lost {
                let Some(task) = fw.tasks.get_mut(&task_id) else {
                    continue;
                };
                let status = Master::agent_lost_status(&task.info.task_id, id, partition_aware, &message);
                task.state = status.state();
                task.statuses.push(status.clone());
                if task.state.is_terminal() {
                    fw.complete_task(&task_id);
                }
                fw.send(crate::master::update_event(status));
            }
            fw.send(Event {
                r#type: Some(event::Type::Failure as i32),
                failure: Some(event::Failure {
                    agent_id: Some(AgentId {
                        value: id.to_string(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
}
