//! Building the executor's `TaskStatus` updates and tracking the ones the
//! agent has not acknowledged yet.

use mezzo_proto::mesos::v1::executor::call;
use mezzo_proto::mesos::v1::{task_status, AgentId, ExecutorId, TaskId, TaskState, TaskStatus};
use std::time::{SystemTime, UNIX_EPOCH};

/// A new executor-sourced status for `task_id`, with a fresh 16-byte uuid
/// and the current time.
pub fn new_status(
    task_id: &TaskId,
    state: TaskState,
    executor_id: &str,
    agent_id: Option<&AgentId>,
    message: Option<String>,
) -> TaskStatus {
    TaskStatus {
        task_id: task_id.clone(),
        state: state as i32,
        source: Some(task_status::Source::Executor as i32),
        uuid: Some(mezzo_proto::new_uuid()),
        timestamp: Some(now_seconds()),
        executor_id: Some(ExecutorId { value: executor_id.to_string() }),
        agent_id: agent_id.cloned(),
        message,
        ..Default::default()
    }
}

/// Seconds since the epoch, as `TaskStatus.timestamp` carries them.
pub fn now_seconds() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Updates sent but not yet acknowledged by the agent, in the order they
/// were made (the agent must see them in that order when they are resent).
#[derive(Debug, Default)]
pub struct UnacknowledgedUpdates {
    updates: Vec<call::Update>,
}

impl UnacknowledgedUpdates {
    /// Keeps `update` until an ACKNOWLEDGED with its uuid arrives.
    pub fn push(&mut self, update: call::Update) {
        self.updates.push(update);
    }

    /// Forgets the update with `uuid`; returns it when it was pending.
    pub fn acknowledge(&mut self, uuid: &[u8]) -> Option<call::Update> {
        let index = self.updates.iter().position(|u| u.status.uuid.as_deref() == Some(uuid))?;
        Some(self.updates.remove(index))
    }

    /// The pending updates, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &call::Update> {
        self.updates.iter()
    }

    /// Whether every update has been acknowledged.
    pub fn is_empty(&self) -> bool {
        self.updates.is_empty()
    }

    /// Whether an update for `task_id` is still pending.
    pub fn contains_task(&self, task_id: &TaskId) -> bool {
        self.updates.iter().any(|u| &u.status.task_id == task_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> TaskId {
        TaskId { value: "t1".into() }
    }

    #[test]
    fn statuses_are_executor_sourced_with_unique_uuids() {
        let agent = AgentId { value: "S0".into() };
        let a = new_status(&task(), TaskState::TaskRunning, "t1", Some(&agent), None);
        let b = new_status(&task(), TaskState::TaskRunning, "t1", Some(&agent), None);
        assert_eq!(a.source(), task_status::Source::Executor);
        assert_eq!(a.uuid.as_ref().map(Vec::len), Some(16));
        assert_ne!(a.uuid, b.uuid);
        assert_eq!(a.executor_id.as_ref().map(|e| e.value.as_str()), Some("t1"));
        assert_eq!(a.agent_id, Some(agent));
        assert!(a.timestamp.unwrap() > 1.6e9);
    }

    #[test]
    fn acknowledging_removes_only_the_matching_update() {
        let mut pending = UnacknowledgedUpdates::default();
        let first = new_status(&task(), TaskState::TaskStarting, "t1", None, None);
        let second = new_status(&task(), TaskState::TaskRunning, "t1", None, None);
        let second_uuid = second.uuid.clone().unwrap();
        pending.push(call::Update { status: first });
        pending.push(call::Update { status: second });
        assert!(pending.acknowledge(&[0u8; 16]).is_none());
        assert!(pending.acknowledge(&second_uuid).is_some());
        let left: Vec<_> = pending.iter().map(|u| u.status.state()).collect();
        assert_eq!(left, vec![TaskState::TaskStarting]);
        assert!(pending.contains_task(&task()));
        assert!(!pending.is_empty());
    }

    #[test]
    fn terminal_states() {
        assert!(TaskState::TaskFinished.is_terminal());
        assert!(TaskState::TaskKilled.is_terminal());
        assert!(!TaskState::TaskKilling.is_terminal());
        assert!(!TaskState::TaskRunning.is_terminal());
    }
}
