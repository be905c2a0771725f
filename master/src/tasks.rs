//! Task updates: status updates from agents, ACKNOWLEDGE, KILL and RECONCILE.

use mezzo_proto::mesos::v1::scheduler::call;
use mezzo_proto::mesos::v1::{task_status, task_status::Reason, AgentId, TaskState, TaskStatus};
use mezzo_proto::mezzo::agent::{
    master_to_agent, AcknowledgeUpdate, KillTask, MasterToAgent, StatusUpdate,
};

use crate::error::CallError;
use crate::master::{framework_id, master_status, Master};

/// Mesos keeps the statuses of a task; a bound keeps a chatty health check
/// from growing a task without limit.
const MAX_STATUSES_PER_TASK: usize = 100;

impl Master {
    /// Records a status update from the authenticated agent `agent_id` and
    /// forwards it to the framework. An agent may only update its own tasks;
    /// an update for a framework the master does not know is answered with
    /// 410 Gone so that the agent stops resending it.
    pub(crate) fn status_update(&mut self, agent_id: &str, update: StatusUpdate) -> Result<(), CallError> {
        let fid = update.framework_id.value;
        let mut status = update.status;
        let task_id = status.task_id.value.clone();
        if TaskState::try_from(status.state).is_err() {
            return Err(CallError::BadRequest(format!("status update has unknown state {}", status.state)));
        }
        self.counters.status_updates += 1;
        let Some(fw) = self.frameworks.get_mut(&fid) else {
            self.counters.invalid_status_updates += 1;
            tracing::warn!(framework_id = %fid, %task_id, %agent_id, "refusing status update for unknown framework");
            return Err(CallError::Gone(format!(
                "Framework {fid} is unknown to the master (removed or never registered): its updates are not wanted"
            )));
        };
        if let Some(task) = fw.tasks.get(&task_id) {
            if task.agent_id != agent_id {
                self.counters.invalid_status_updates += 1;
                tracing::warn!(framework_id = %fid, %task_id, %agent_id, "refusing status update for a task of another agent");
                return Err(CallError::Forbidden(format!("Task {task_id} does not run on agent {agent_id}")));
            }
        }
        // The authenticated agent is the source, whatever the update claims.
        status.agent_id = Some(AgentId { value: agent_id.to_string() });
        let mut freed = None;
        if let Some(task) = fw.tasks.get_mut(&task_id) {
            // The agent retries until acknowledged: a retry is forwarded
            // again (the scheduler acknowledges again) but recorded once.
            let duplicate = status.uuid.is_some()
                && task.statuses.iter().any(|s| s.uuid == status.uuid);
            if !duplicate {
                let new_state = status.state();
                let was_terminal = task.state.is_terminal();
                if task.statuses.last().map(|s| s.state) != Some(status.state) { self.operator.task_updated(&fid, new_state, &status); }
                task.state = new_state;
                task.statuses.push(status.clone());
                if task.statuses.len() > MAX_STATUSES_PER_TASK {
                    task.statuses.remove(0);
                }
                if new_state.is_terminal() && !was_terminal {
                    freed = Some((task.agent_id.clone(), task.resources.clone()));
                }
            }
            // Without a uuid no acknowledgement will come to retire the task.
            if task.state.is_terminal() && status.uuid.is_none() {
                fw.complete_task(&task_id);
            }
        } else {
            tracing::warn!(framework_id = %fid, %task_id, "forwarding status update for a task unknown to the master");
        }
        tracing::info!(
            framework_id = %fid,
            %task_id,
            state = ?status.state(),
            "status update"
        );
        fw.send(crate::master::update_event(status));
        if let Some((agent_id, resources)) = freed {
            if let Some(agent) = self.agents.get_mut(&agent_id) {
                agent.used.subtract(&resources);
            }
            self.wake_allocator_for(&agent_id);
        }
        Ok(())
    }

    /// Handles ACKNOWLEDGE: forwards it to the agent that sent the update and
    /// retires a terminal task once its last update is acknowledged.
    pub(crate) fn acknowledge(&mut self, fid: &str, ack: &call::Acknowledge) {
        let agent_id = ack.agent_id.value.as_str();
        let task_id = ack.task_id.value.as_str();
        if let Some(fw) = self.frameworks.get_mut(fid) {
            let retire = fw.tasks.get(task_id).is_some_and(|t| {
                t.state.is_terminal() && t.latest_uuid() == Some(ack.uuid.as_slice())
            });
            if retire {
                fw.complete_task(task_id);
            }
        }
        match self.agents.get(agent_id) {
            Some(agent) => agent.link.send(MasterToAgent {
                r#type: Some(master_to_agent::Type::Acknowledge as i32),
                acknowledge: Some(AcknowledgeUpdate {
                    framework_id: framework_id(fid),
                    task_id: ack.task_id.clone(),
                    uuid: ack.uuid.clone(),
                }),
                ..Default::default()
            }),
            None => {
                tracing::warn!(framework_id = %fid, %agent_id, %task_id, "dropping acknowledgement for unknown agent")
            }
        }
    }

    /// Handles KILL: forwards it to the task's agent; an unknown task is
    /// answered by reconciling it, as Mesos does.
    pub(crate) fn kill(&mut self, fid: &str, kill: &call::Kill) {
        let task_id = kill.task_id.value.as_str();
        let agent_id = self
            .frameworks
            .get(fid)
            .and_then(|fw| fw.tasks.get(task_id))
            .map(|t| t.agent_id.clone());
        match agent_id {
            Some(agent_id) => {
                let Some(agent) = self.agents.get(&agent_id) else {
                    tracing::warn!(framework_id = %fid, %task_id, %agent_id, "cannot kill task: agent is gone");
                    return;
                };
                tracing::info!(framework_id = %fid, %task_id, %agent_id, "killing task");
                agent.link.send(MasterToAgent {
                    r#type: Some(master_to_agent::Type::KillTask as i32),
                    kill_task: Some(KillTask {
                        framework_id: framework_id(fid),
                        task_id: kill.task_id.clone(),
                        kill_policy: kill.kill_policy,
                    }),
                    ..Default::default()
                });
            }
            None => {
                tracing::warn!(framework_id = %fid, %task_id, "cannot kill unknown task, reconciling it");
                let reconcile = call::Reconcile {
                    tasks: vec![call::reconcile::Task {
                        task_id: kill.task_id.clone(),
                        agent_id: kill.agent_id.clone(),
                    }],
                };
                self.reconcile(fid, &reconcile);
            }
        }
    }

    /// Handles RECONCILE, implicit (no tasks) or explicit, following
    /// `Master::_reconcileTasks`. Answers carry no uuid.
    pub(crate) fn reconcile(&mut self, fid: &str, reconcile: &call::Reconcile) {
        let Some(fw) = self.frameworks.get(fid) else {
            return;
        };
        let partition_aware = fw.partition_aware();
        let latest = |t: &crate::master::TaskRecord| -> TaskStatus {
            // An unreachable task is TASK_LOST to a framework that is not partition aware.
            let (state, message) = match t.state {
                TaskState::TaskUnreachable if partition_aware => (TaskState::TaskUnreachable, "Reconciliation: Task is unreachable"),
                TaskState::TaskUnreachable => (TaskState::TaskLost, "Reconciliation: Task is unreachable"),
                state => (state, "Reconciliation: Latest task state"),
            };
            let mut status = master_status(&t.info.task_id.value, Some(&t.agent_id), state, Reason::Reconciliation, message);
            if t.state == TaskState::TaskUnreachable {
                status.unreachable_time = t.statuses.iter().rev().find_map(|s| s.unreachable_time);
            }
            if let Some(last) = t.statuses.iter().rev().find(|s| s.source() != task_status::Source::Master) {
                status.healthy = last.healthy;
                status.check_status = last.check_status.clone();
                status.executor_id = last.executor_id.clone();
                status.container_status = last.container_status.clone();
                status.labels = last.labels.clone();
            }
            status
        };
        let mut answers = Vec::new();
        if reconcile.tasks.is_empty() {
            answers.extend(fw.tasks.values().map(latest));
        } else {
            for entry in &reconcile.tasks {
                let task_id = entry.task_id.value.as_str();
                let agent_id = entry.agent_id.as_ref().map(|a| a.value.as_str());
                if let Some(task) = fw.tasks.get(task_id) {
                    answers.push(latest(task));
                    continue;
                }
                // Mesos's `_reconcileTasks`: what the master knows of the agent decides.
                let (state, message) = match agent_id {
                    // Recovered from the registry, not re-registered yet (or no agent
                    // given while some are): the agent may still report the task.
                    Some(a) if self.recovered_agents.contains_key(a) => continue,
                    None if !self.recovered_agents.is_empty() => continue,
                    Some(a) if self.agents.contains_key(a) => (TaskState::TaskGone, "Reconciliation: Task is unknown to the agent"),
                    Some(a) if self.unreachable_agents.contains_key(a) => (TaskState::TaskUnreachable, "Reconciliation: Task is unreachable"),
                    Some(a) if self.gone_agents.contains_key(a) => (TaskState::TaskGoneByOperator, "Reconciliation: Task is gone"),
                    _ => (TaskState::TaskUnknown, "Reconciliation: Task is unknown"),
                };
                let state = if partition_aware { state } else { TaskState::TaskLost };
                answers.push(master_status(
                    task_id,
                    agent_id,
                    state,
                    Reason::Reconciliation,
                    message,
                ));
            }
        }
        for status in answers {
            fw.send(crate::master::update_event(status));
        }
    }
}
