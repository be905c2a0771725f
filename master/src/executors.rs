//! Custom executors as the master sees them (Mesos's `Slave::executors`):
//! an executor holds its own resources on its agent from the launch of the
//! first task naming it until it exits, however many tasks it runs and
//! whatever becomes of them. Framework messages (both ways) and the
//! scheduler's SHUTDOWN are best effort, as in Mesos: what cannot be
//! delivered is logged and dropped, and the call is still accepted. An
//! executor's exit frees its resources and reaches its scheduler as a
//! FAILURE event (executorLost).

use std::collections::{BTreeMap, BTreeSet};

use mezzo_proto::mesos::v1::scheduler::{call, event, Event};
use mezzo_proto::mesos::v1::{AgentId, ExecutorId, ExecutorInfo, FrameworkInfo};
use mezzo_proto::mezzo::agent::{
    master_to_agent, ExecutorExited, FrameworkMessage, MasterToAgent, RegisterAgent, ShutdownExecutor,
};
use mezzo_proto::MAX_FRAMEWORK_MESSAGE_BYTES;

use crate::master::{framework_id, ExecutorKey, ExecutorRecord, Master};
use crate::resources::Resources;
use crate::validation::validate_id;

/// Refuses framework message data over `MAX_FRAMEWORK_MESSAGE_BYTES`; the
/// message names `field` and both sizes.
pub(crate) fn check_message_size(field: &str, len: usize) -> Result<(), String> {
    if len > MAX_FRAMEWORK_MESSAGE_BYTES {
        return Err(format!(
            "'{field}' is {len} bytes, more than the {MAX_FRAMEWORK_MESSAGE_BYTES} bytes a framework message may carry"
        ));
    }
    Ok(())
}

/// Whether `a` and `b` describe the same executor, as Mesos's `operator==`
/// on ExecutorInfo: every field equal, resources compared as bags (order
/// and splitting do not matter).
pub(crate) fn same_executor(a: &ExecutorInfo, b: &ExecutorInfo) -> bool {
    let bag = |info: &ExecutorInfo| Resources::from_protos(&info.resources).ok();
    let (ra, rb) = (bag(a), bag(b));
    if ra.is_none() || ra != rb {
        return a == b;
    }
    let strip = |info: &ExecutorInfo| ExecutorInfo { resources: Vec::new(), ..info.clone() };
    strip(a) == strip(b)
}

impl Master {
    /// Handles MESSAGE: forwards the data to the executor's agent, as
    /// Mesos's `Master::message`; an unknown agent drops it.
    pub(crate) fn framework_message(&mut self, fid: &str, message: call::Message) {
        self.counters.messages_framework_to_executor += 1;
        let agent_id = message.agent_id.value.as_str();
        let Some(agent) = self.agents.get(agent_id) else {
            let executor_id = &message.executor_id.value;
            tracing::warn!(framework_id = %fid, %agent_id, %executor_id, "cannot send framework message: agent is not registered");
            self.counters.invalid_framework_to_executor_messages += 1;
            return;
        };
        tracing::debug!(framework_id = %fid, %agent_id, executor_id = %message.executor_id.value, bytes = message.data.len(), "forwarding framework message");
        agent.link.send(MasterToAgent {
            r#type: Some(master_to_agent::Type::FrameworkMessage as i32),
            framework_message: Some(FrameworkMessage {
                framework_id: framework_id(fid),
                executor_id: message.executor_id,
                data: message.data,
                agent_id: None,
            }),
            ..Default::default()
        });
        self.counters.valid_framework_to_executor_messages += 1;
    }

    /// Handles SHUTDOWN: asks the agent to shut the executor down (Mesos's
    /// ShutdownExecutorMessage); an unknown agent drops it. The executor's
    /// resources return when the agent reports its exit.
    pub(crate) fn shutdown_executor(&mut self, fid: &str, shutdown: &call::Shutdown) {
        let agent_id = shutdown.agent_id.value.as_str();
        let executor_id = shutdown.executor_id.value.as_str();
        let Some(agent) = self.agents.get(agent_id) else {
            tracing::warn!(framework_id = %fid, %agent_id, %executor_id, "cannot shut down executor: agent is not registered");
            return;
        };
        tracing::info!(framework_id = %fid, %agent_id, %executor_id, "shutting down executor");
        agent.link.send(MasterToAgent {
            r#type: Some(master_to_agent::Type::ShutdownExecutor as i32),
            shutdown_executor: Some(ShutdownExecutor {
                framework_id: framework_id(fid),
                executor_id: shutdown.executor_id.clone(),
            }),
            ..Default::default()
        });
    }

    /// A message from an executor on the authenticated agent `agent_id`:
    /// a MESSAGE event to its scheduler, dropped when the framework is
    /// unknown or not subscribed (Mesos's `Master::executorMessage`).
    pub(crate) fn executor_message(&mut self, agent_id: &str, message: FrameworkMessage) {
        self.counters.messages_executor_to_framework += 1;
        let fid = message.framework_id.value;
        let executor_id = message.executor_id.value;
        let fw = match self.frameworks.get(&fid) {
            Some(fw) if fw.subscription.is_some() => fw,
            known => {
                let why = if known.is_some() { "disconnected" } else { "unknown" };
                tracing::warn!(framework_id = %fid, %agent_id, %executor_id, "not forwarding executor message: the framework is {why}");
                self.counters.invalid_executor_to_framework_messages += 1;
                return;
            }
        };
        tracing::debug!(framework_id = %fid, %agent_id, %executor_id, bytes = message.data.len(), "forwarding executor message");
        fw.send(Event {
            r#type: Some(event::Type::Message as i32),
            message: Some(event::Message {
                agent_id: AgentId { value: agent_id.to_string() },
                executor_id: ExecutorId { value: executor_id },
                data: message.data,
            }),
            ..Default::default()
        });
        self.counters.valid_executor_to_framework_messages += 1;
    }

    /// A custom executor on the authenticated agent `agent_id` exited: its
    /// resources return and its scheduler gets a FAILURE event with the
    /// agent, the executor and the wait status (Mesos's
    /// `Master::exitedExecutor`). An executor the master does not count
    /// there is ignored, as Mesos does.
    pub(crate) fn executor_exited(&mut self, agent_id: &str, exited: ExecutorExited) {
        self.counters.messages_exited_executor += 1;
        let fid = exited.framework_id.value;
        let executor_id = exited.executor_id.value;
        if self.remove_executor(agent_id, &fid, &executor_id).is_none() {
            tracing::warn!(framework_id = %fid, %agent_id, %executor_id, "ignoring the exit of an executor unknown to the master");
            return;
        }
        tracing::info!(framework_id = %fid, %agent_id, %executor_id, status = ?exited.status, "executor exited");
        match self.frameworks.get(&fid) {
            Some(fw) if fw.subscription.is_some() => fw.send(Event {
                r#type: Some(event::Type::Failure as i32),
                failure: Some(event::Failure {
                    agent_id: Some(AgentId { value: agent_id.to_string() }),
                    executor_id: Some(ExecutorId { value: executor_id }),
                    status: exited.status,
                }),
                ..Default::default()
            }),
            _ => {
                tracing::warn!(framework_id = %fid, %agent_id, %executor_id, "not forwarding the executor's exit: the framework is not connected")
            }
        }
    }

    /// Forgets an executor on an agent and frees its resources there.
    pub(crate) fn remove_executor(&mut self, agent_id: &str, fid: &str, executor_id: &str) -> Option<ExecutorRecord> {
        let agent = self.agents.get_mut(agent_id)?;
        let record = agent.executors.remove(&(fid.to_string(), executor_id.to_string()))?;
        agent.used.subtract(&record.resources);
        self.wake_allocator_for(agent_id);
        Some(record)
    }

    /// Forgets every executor of a framework and frees their resources.
    pub(crate) fn remove_executors_of(&mut self, fid: &str) {
        for agent in self.agents.values_mut() {
            let gone: Vec<ExecutorKey> = agent.executors.keys().filter(|(f, _)| f == fid).cloned().collect();
            for key in gone {
                if let Some(record) = agent.executors.remove(&key) {
                    agent.used.subtract(&record.resources);
                }
            }
        }
        self.wake_allocator();
    }

    /// Whether `agent_id` has a non-terminal task of `fid` on `executor_id`
    /// other than `except`.
    pub(crate) fn executor_has_tasks(&self, agent_id: &str, fid: &str, executor_id: &str, except: &str) -> bool {
        self.frameworks.get(fid).is_some_and(|fw| {
            fw.tasks.values().any(|t| {
                t.agent_id == agent_id
                    && !t.state.is_terminal()
                    && t.info.task_id.value != except
                    && t.info.executor.as_ref().is_some_and(|e| e.executor_id.value == executor_id)
            })
        })
    }

    /// The executors an (re-)registering agent runs, as the master will
    /// count them: those the agent reports (`RegisterAgent.executors`, and
    /// for agents that do not list them, the executors named by their
    /// running tasks), plus those of `known` (the master's view before) whose
    /// first RUN_TASK is still on its way. An executor the master counted
    /// that the agent no longer has is dropped with its resources, as
    /// Mesos's `reconcileKnownSlave` does. Executors of removed frameworks
    /// add their framework to `shutdown`.
    pub(crate) fn reconcile_reported_executors(
        &mut self,
        agent_id: &str,
        req: &RegisterAgent,
        known: BTreeMap<ExecutorKey, ExecutorRecord>,
        shutdown: &mut BTreeSet<String>,
    ) -> BTreeMap<ExecutorKey, ExecutorRecord> {
        let infos: BTreeMap<&str, &FrameworkInfo> = req
            .frameworks
            .iter()
            .filter_map(|f| f.id.as_ref().map(|id| (id.value.as_str(), f)))
            .collect();
        let mut reported: Vec<ExecutorInfo> = req.executors.clone();
        for rt in &req.tasks {
            let running = rt.state.and_then(|s| mezzo_proto::mesos::v1::TaskState::try_from(s).ok()).is_none_or(|s| !s.is_terminal());
            if let Some(executor) = rt.task.executor.as_ref().filter(|_| running) {
                let mut executor = executor.clone();
                executor.framework_id.get_or_insert_with(|| rt.framework_id.clone());
                reported.push(executor);
            }
        }
        let mut executors = BTreeMap::new();
        for info in reported {
            let Some(fid) = info.framework_id.as_ref().map(|f| f.value.clone()) else {
                tracing::warn!(%agent_id, executor_id = %info.executor_id.value.escape_debug(), "ignoring a reported executor without a framework id");
                continue;
            };
            let executor_id = info.executor_id.value.clone();
            if validate_id(&fid).is_err() || validate_id(&executor_id).is_err() {
                tracing::warn!(%agent_id, framework_id = %fid.escape_debug(), executor_id = %executor_id.escape_debug(), "ignoring a reported executor with an invalid id");
                continue;
            }
            let key = (fid.clone(), executor_id.clone());
            if executors.contains_key(&key) {
                continue;
            }
            if self.completed_frameworks.iter().any(|f| f.id == fid) {
                shutdown.insert(fid);
                continue;
            }
            let resources = Resources::from_protos(&info.resources).unwrap_or_else(|e| {
                tracing::warn!(%agent_id, framework_id = %fid, %executor_id, error = %e, "reported executor has invalid resources; counting none");
                Resources::new()
            });
            self.adopt_framework(&fid, agent_id, &infos);
            if !known.contains_key(&key) {
                tracing::info!(%agent_id, framework_id = %fid, %executor_id, %resources, "adopting an executor the agent runs");
            }
            executors.insert(key, ExecutorRecord { info, resources, delivered: true });
        }
        for (key, record) in known {
            if executors.contains_key(&key) {
                continue;
            }
            if record.delivered {
                tracing::warn!(%agent_id, framework_id = %key.0, executor_id = %key.1, "executor unknown to the re-registered agent; its resources are freed");
            } else {
                executors.insert(key, record);
            }
        }
        executors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mezzo_proto::mesos::v1::{CommandInfo, FrameworkId};

    fn info(resources: Vec<mezzo_proto::mesos::v1::Resource>) -> ExecutorInfo {
        ExecutorInfo {
            executor_id: ExecutorId { value: "e".into() },
            framework_id: Some(FrameworkId { value: "f".into() }),
            command: Some(CommandInfo { value: Some("./run".into()), ..Default::default() }),
            resources,
            ..Default::default()
        }
    }

    #[test]
    fn executors_compare_resources_as_bags() {
        use crate::resources::scalar;
        let a = info(vec![scalar("cpus", 0.5), scalar("mem", 64.0)]);
        assert!(same_executor(&a, &info(vec![scalar("mem", 64.0), scalar("cpus", 0.25), scalar("cpus", 0.25)])));
        assert!(!same_executor(&a, &info(vec![scalar("cpus", 0.5), scalar("mem", 65.0)])));
        let mut other = a.clone();
        other.command.as_mut().unwrap().value = Some("./other".into());
        assert!(!same_executor(&a, &other));
        other = a.clone();
        other.framework_id = None;
        assert!(!same_executor(&a, &other));
    }

    #[test]
    fn message_size_is_bounded() {
        assert!(check_message_size("data", MAX_FRAMEWORK_MESSAGE_BYTES).is_ok());
        let e = check_message_size("message.data", MAX_FRAMEWORK_MESSAGE_BYTES + 1).unwrap_err();
        assert!(e.starts_with("'message.data' is 1048577 bytes"), "{e}");
        assert!(e.contains("1048576"), "{e}");
    }
}
