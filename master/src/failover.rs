//! What survives the master's loss: recovery from the registry at start,
//! the agents that do not come back (`--agent_reregister_timeout`), agents
//! marked unreachable or gone, and the registry records of agents and
//! frameworks.
//!
//! Task rules follow Mesos 1.x: the tasks of an agent marked unreachable go
//! TASK_UNREACHABLE for PARTITION_AWARE frameworks and TASK_LOST otherwise
//! (the master keeps them as unreachable tasks either way); when the agent
//! re-registers, the tasks it still runs are re-added and their frameworks
//! get an update with the task's current state and REASON_AGENT_REREGISTERED
//! (since Mesos 1.5 the tasks of non-partition-aware frameworks are no
//! longer killed then). An agent marked gone never comes back: its tasks go
//! TASK_GONE_BY_OPERATOR (TASK_LOST for frameworks that are not partition
//! aware), it is told to shut its frameworks down, and a re-registration
//! under its id is refused.

use std::sync::Arc;
use std::time::Duration;

use mezzo_proto::mesos::v1::scheduler::{event, Event};
use mezzo_proto::mesos::v1::{task_status::Reason, AgentId, TaskState};
use mezzo_proto::mezzo::agent::{master_to_agent, MasterToAgent, ShutdownFramework};
use mezzo_proto::mezzo::registry::{registry_agent::State as AgentState, RegistryAgent, RegistryFramework};

use crate::error::CallError;
use crate::master::{framework_id, master_status, now_secs, Framework, Master, Shared};
use crate::registrar::Recovered;

impl Master {
    /// The registry record of a registered agent.
    pub(crate) fn agent_record(&self, id: &str) -> Option<RegistryAgent> {
        let agent = self.agents.get(id)?;
        Some(RegistryAgent {
            info: agent.info.clone(),
            endpoint: Some(agent.endpoint.clone()),
            secret_hash: self.agent_secrets.get(id).map(|h| h.to_vec()),
            state: Some(AgentState::Admitted as i32),
            registered_time: Some(agent.registered_time),
            ..Default::default()
        })
    }

    /// Queues the registry record of framework `id` (its latest FrameworkInfo
    /// and when it disconnected).
    pub(crate) fn record_framework(&mut self, id: &str) {
        let Some(fw) = self.frameworks.get(id) else {
            return;
        };
        let record = RegistryFramework {
            info: fw.info.clone(),
            registered_time: Some(fw.registered_time),
            unregistered_time: fw.unregistered_time,
        };
        self.registrar.put_framework(&record);
    }

    /// Takes what the registry held at start: admitted agents wait to
    /// re-register (their secrets keep their ids theirs), unreachable and
    /// gone agents are remembered, frameworks are known and disconnected
    /// from now on. Returns the frameworks' failover timeouts, to be timed
    /// from now.
    pub(crate) fn recover(&mut self, recovered: Recovered) -> Vec<(String, f64)> {
        let now = now_secs();
        for record in recovered.agents {
            let Some(id) = record.info.id.as_ref().map(|i| i.value.clone()) else {
                continue;
            };
            if let Some(hash) = record.secret_hash.as_deref().and_then(|h| <[u8; 32]>::try_from(h).ok()) {
                self.agent_secrets.insert(id.clone(), hash);
            }
            match record.state() {
                AgentState::Admitted => {
                    self.recovered_agents.insert(id, record);
                }
                AgentState::Unreachable => {
                    self.unreachable_agents.insert(id, record);
                }
                AgentState::Gone => {
                    self.gone_agents.insert(id, record);
                }
            }
        }
        let mut timeouts = Vec::new();
        for record in recovered.frameworks {
            let Some(id) = record.info.id.as_ref().map(|i| i.value.clone()) else {
                continue;
            };
            timeouts.push((id.clone(), record.info.failover_timeout.unwrap_or(0.0)));
            self.frameworks.insert(
                id.clone(),
                Framework {
                    id,
                    info: record.info,
                    subscription: None,
                    suppressed: false,
                    filters: Vec::new(),
                    tasks: Default::default(),
                    completed_tasks: Default::default(),
                    registered_time: record.registered_time.unwrap_or(now),
                    // Disconnected from the recovery on: its failover timeout counts from now.
                    unregistered_time: Some(now),
                    offers_sent: 0,
                    epoch: 0,
                },
            );
        }
        tracing::info!(
            agents = self.recovered_agents.len(),
            unreachable = self.unreachable_agents.len(),
            gone = self.gone_agents.len(),
            frameworks = timeouts.len(),
            registry = %self.config.registry.describe(),
            "recovered the registry"
        );
        timeouts
    }

    /// `--agent_reregister_timeout` after the recovery: the agents that did
    /// not come back are marked unreachable (Mesos's `recoveredSlavesTimeout`).
    /// The master knows none of their tasks: their frameworks learn of them
    /// through reconciliation (TASK_UNREACHABLE, or TASK_LOST).
    pub(crate) fn recovered_agents_timeout(&mut self) {
        let now = now_secs();
        for (id, mut record) in std::mem::take(&mut self.recovered_agents) {
            tracing::warn!(agent_id = %id, "agent did not re-register within --agent_reregister_timeout: marking it unreachable");
            record.state = Some(AgentState::Unreachable as i32);
            record.unreachable_time = Some(now);
            self.registrar.put_agent(&record);
            self.counters.agent_removals += 1;
            self.unreachable_agents.insert(id, record);
        }
    }

    /// Marks a registered agent unreachable (silent past its ping timeouts):
    /// its tasks go TASK_UNREACHABLE (TASK_LOST for frameworks that are not
    /// partition aware) and the registry records it unreachable.
    pub(crate) fn mark_agent_unreachable(&mut self, id: &str, why: &str) {
        let Some(mut record) = self.agent_record(id) else {
            return;
        };
        self.remove_agent(id, why);
        record.state = Some(AgentState::Unreachable as i32);
        record.unreachable_time = Some(now_secs());
        self.registrar.put_agent(&record);
        self.unreachable_agents.insert(id.to_string(), record);
    }

    /// MARK_AGENT_GONE: the agent (registered, recovered or unreachable) is
    /// gone for good. Its tasks go TASK_GONE_BY_OPERATOR (TASK_LOST for
    /// frameworks that are not partition aware) with
    /// REASON_AGENT_REMOVED_BY_OPERATOR, a registered agent is told to shut
    /// down its frameworks, and the registry records it gone, so that it may
    /// never register again under this id (after a failover too).
    ///
    /// Durability: the registry write is queued on `self.registrar`; call it
    /// through `Shared::durably(|m| m.mark_agent_gone(id))` and answer once
    /// that returns (Ok: the agent is recorded gone; 503 when the registry
    /// could not be written).
    // Wired to the operator API's MARK_AGENT_GONE.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn mark_agent_gone(&mut self, agent_id: &str) -> Result<(), CallError> {
        if self.gone_agents.contains_key(agent_id) {
            // Mesos answers 200 to marking a gone agent gone again.
            return Ok(());
        }
        let record = if let Some(record) = self.agent_record(agent_id) {
            let frameworks: std::collections::BTreeSet<String> = self
                .frameworks
                .values()
                .filter(|fw| fw.tasks.values().any(|t| t.agent_id == agent_id))
                .map(|fw| fw.id.clone())
                .chain(self.agents.get(agent_id).into_iter().flat_map(|a| a.executors.keys().map(|(f, _)| f.clone())))
                .collect();
            if let Some(agent) = self.agents.get(agent_id) {
                for fid in &frameworks {
                    agent.link.send(MasterToAgent {
                        r#type: Some(master_to_agent::Type::ShutdownFramework as i32),
                        shutdown_framework: Some(ShutdownFramework { framework_id: framework_id(fid) }),
                        ..Default::default()
                    });
                }
            }
            self.remove_agent_as(agent_id, "marked gone by an operator", TaskState::TaskGoneByOperator, Reason::AgentRemovedByOperator);
            record
        } else if let Some(record) = self.recovered_agents.remove(agent_id) {
            record
        } else if let Some(record) = self.unreachable_agents.remove(agent_id) {
            // Its unreachable tasks are gone now.
            self.end_tasks_of(agent_id, TaskState::TaskGoneByOperator, Reason::AgentRemovedByOperator, "Agent was marked gone by an operator");
            record
        } else {
            return Err(CallError::NotFound(format!("Agent '{agent_id}' not found")));
        };
        tracing::warn!(%agent_id, "agent marked gone");
        let mut record = record;
        record.state = Some(AgentState::Gone as i32);
        record.gone_time = Some(now_secs());
        self.registrar.put_agent(&record);
        self.gone_agents.insert(agent_id.to_string(), record);
        Ok(())
    }

    /// Ends every task the master keeps on `agent_id` (an unreachable agent
    /// marked gone) with `state` (TASK_LOST for frameworks that are not
    /// partition aware).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn end_tasks_of(&mut self, agent_id: &str, state: TaskState, reason: Reason, message: &str) {
        for fw in self.frameworks.values_mut() {
            let partition_aware = fw.partition_aware();
            let ids: Vec<String> =
                fw.tasks.iter().filter(|(_, t)| t.agent_id == agent_id && !t.state.is_terminal()).map(|(k, _)| k.clone()).collect();
            for task_id in ids {
                let Some(task) = fw.tasks.get_mut(&task_id) else {
                    continue;
                };
                // Mesos's `__removeSlave`: TASK_LOST (REASON_AGENT_REMOVED) for frameworks that are not partition aware.
                let (state, reason) = if partition_aware { (state, reason) } else { (TaskState::TaskLost, Reason::AgentRemoved) };
                let status = master_status(&task_id, Some(agent_id), state, reason, message);
                task.state = state;
                task.statuses.push(status.clone());
                self.operator.task_updated(&fw.id, state, &status);
                fw.complete_task(&task_id);
                fw.send(crate::master::update_event(status));
            }
        }
    }

    /// Whether agent `id` may register: a gone agent may not.
    pub(crate) fn check_not_gone(&self, id: &str) -> Result<(), CallError> {
        if self.gone_agents.contains_key(id) {
            tracing::warn!(agent_id = %id, "refusing the registration of an agent marked gone");
            return Err(CallError::Forbidden(format!("Agent {id} was marked gone: it may not register again under this id")));
        }
        Ok(())
    }
}

/// Tells every framework that agent `id` was lost (a FAILURE event).
pub(crate) fn agent_failure_event(id: &str) -> Event {
    Event {
        r#type: Some(event::Type::Failure as i32),
        failure: Some(event::Failure { agent_id: Some(AgentId { value: id.to_string() }), ..Default::default() }),
        ..Default::default()
    }
}

/// Starts the timers of a recovery: each recovered framework is torn down
/// when it has not re-subscribed within its failover timeout (from now), and
/// the agents that did not re-register within `--agent_reregister_timeout`
/// are marked unreachable.
pub(crate) fn start_timers(shared: &Arc<Shared>, frameworks: Vec<(String, f64)>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut handles = Vec::new();
    for (id, timeout) in frameworks {
        let timeout = if timeout.is_finite() && timeout > 0.0 { Duration::from_secs_f64(timeout.min(1e9)) } else { Duration::ZERO };
        let shared = shared.clone();
        handles.push(tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            // Epoch 0: a re-subscription bumps it, so this does nothing then.
            shared.lock().failover_expired(&id, 0);
        }));
    }
    let has_recovered = !shared.lock().recovered_agents.is_empty();
    if has_recovered {
        let shared = shared.clone();
        let timeout = shared.config.agent_reregister_timeout;
        handles.push(tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            shared.lock().recovered_agents_timeout();
        }));
    }
    handles
}
