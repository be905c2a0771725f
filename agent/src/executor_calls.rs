//! The executor API's calls, as the agent core takes them (Mesos's
//! `Slave::subscribe`, `Slave::statusUpdate`, `Http::executor` checks): the
//! HTTP handler decodes and authenticates, then hands the call here.

use crate::agent::{now, Agent};
use crate::executor::{ExecutorKind, ExecutorState};
use mezzo_proto::mesos::v1::executor::{self, call, event};
use mezzo_proto::mesos::v1::{task_status, ContainerId, ContainerStatus, ExecutorId, TaskState, TaskStatus};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Why the agent refuses an executor's call (the HTTP status Mesos answers with).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallRefusal {
    /// 400.
    #[error("{0}")]
    BadRequest(String),
    /// 403.
    #[error("{0}")]
    Forbidden(String),
}

impl Agent {
    /// The checks of a call of `kind` for the executor `key` after
    /// authentication: its framework and executor must be known, and every
    /// call but SUBSCRIBE needs a subscribed executor.
    pub fn check_executor_call(&self, key: &(String, String), kind: call::Type) -> Result<(), CallRefusal> {
        let state = self.state.lock().unwrap();
        if !state.frameworks.contains_key(&key.0) {
            return Err(CallRefusal::BadRequest("Framework cannot be found".into()));
        }
        let Some(ex) = state.executors.get(key) else {
            return Err(CallRefusal::BadRequest("Executor cannot be found".into()));
        };
        if kind != call::Type::Subscribe && ex.state == ExecutorState::Registering {
            return Err(CallRefusal::Forbidden("Executor is not subscribed".into()));
        }
        Ok(())
    }

    /// SUBSCRIBE (Mesos's `Slave::subscribe`): replaces an older connection,
    /// replays the updates the executor still holds, answers SUBSCRIBED and
    /// sends the tasks that wait for it, in order (SHUTDOWN instead when it is
    /// being shut down or every task it had was killed).
    pub fn subscribe_executor(self: &Arc<Self>, key: (String, String), subscription: executor::call::Subscribe) -> Result<mpsc::UnboundedReceiver<executor::Event>, CallRefusal> {
        let (tx, rx) = mpsc::unbounded_channel::<executor::Event>();
        let (subscribed, shutdown, dropped) = {
            let mut state = self.state.lock().unwrap();
            let Some(framework_info) = state.frameworks.get(&key.0).cloned() else {
                return Err(CallRefusal::BadRequest("Framework cannot be found".into()));
            };
            let Some(ex) = state.executors.get_mut(&key) else {
                return Err(CallRefusal::BadRequest("Executor cannot be found".into()));
            };
            ex.stream = Some(tx.clone());
            // An executor that re-subscribes after an agent restart still holds
            // the tasks it lists: they must not be launched again.
            for held in &subscription.unacknowledged_tasks {
                if let Some(task) = ex.task_mut(&held.task_id.value) {
                    task.launched = true;
                }
            }
            // Every task it was to run was killed before it came: it has nothing to do (Mesos shuts it down).
            let nothing_to_run = ex.tasks.iter().all(|t| t.kill_requested);
            let shutdown = ex.state == ExecutorState::Terminating || nothing_to_run;
            if shutdown && ex.state != ExecutorState::Terminating {
                ex.state = ExecutorState::Terminating;
                ex.tell(crate::runner::RunnerCommand::Shutdown { grace: self.shutdown_grace });
            }
            if ex.state == ExecutorState::Registering {
                ex.state = ExecutorState::Running;
            }
            // An executor that subscribes again and does not list a task that
            // was sent to it and never reported lost it in flight (Mesos:
            // TASK_DROPPED, or TASK_LOST). After an agent restart, what was sent
            // is not known: tasks it never reported are sent again, and the
            // executor, which lists every task it has, cannot get one twice.
            let dropped: Vec<String> = if ex.kind == ExecutorKind::Custom {
                ex.tasks
                    .iter()
                    .filter(|t| t.launched && t.state == TaskState::TaskStaging)
                    .filter(|t| !subscription.unacknowledged_tasks.iter().any(|h| h.task_id.value == t.id()))
                    .map(|t| t.id().to_string())
                    .collect()
            } else {
                Vec::new()
            };
            let subscribed = executor::Event {
                r#type: Some(event::Type::Subscribed as i32),
                subscribed: Some(event::Subscribed {
                    executor_info: ex.info.clone(),
                    framework_info,
                    agent_info: self.info(),
                    container_id: Some(ContainerId { value: ex.container_id.clone(), parent: None }),
                }),
                ..Default::default()
            };
            (subscribed, shutdown, dropped)
        };
        // Updates the executor still holds (after a reconnect) enter the stream again.
        for update in subscription.unacknowledged_updates {
            let _ = self.executor_update(&key, update.status);
        }
        let _ = tx.send(subscribed);
        for task_id in dropped {
            self.task_dropped(&key, &task_id);
        }
        if shutdown {
            let _ = tx.send(executor::Event { r#type: Some(event::Type::Shutdown as i32), ..Default::default() });
        } else {
            // Its container exists now that it runs in it: sized for every
            // task that waited, then the tasks go.
            self.clone().grow_and_deliver(key.clone());
        }
        tracing::info!(executor = %key.1, "executor subscribed");
        Ok(rx)
    }

    /// Validates an executor's update like Mesos, queues it for the master and
    /// acknowledges it to the executor.
    pub fn executor_update(&self, key: &(String, String), mut status: TaskStatus) -> Result<(), CallRefusal> {
        let uuid = status.uuid.clone().unwrap_or_default();
        if uuid.len() != 16 {
            return Err(CallRefusal::BadRequest("Expecting 'uuid' to be present and 16 bytes long".into()));
        }
        if status.source() != task_status::Source::Executor || status.source.is_none() {
            return Err(CallRefusal::BadRequest("Received Call from executor with 'source' not SOURCE_EXECUTOR".into()));
        }
        if status.state() == TaskState::TaskStaging {
            return Err(CallRefusal::BadRequest("Received TASK_STAGING from executor which is not allowed".into()));
        }
        if status.executor_id.as_ref().is_some_and(|e| e.value != key.1) {
            return Err(CallRefusal::BadRequest("ExecutorID in Call does not match ExecutorID in TaskStatus".into()));
        }
        let (superseded, stream) = {
            let state = self.state.lock().unwrap();
            let Some(ex) = state.executors.get(key) else {
                return Err(CallRefusal::BadRequest("Executor cannot be found".into()));
            };
            let Some(task) = ex.task(&status.task_id.value) else {
                // An executor acts on its own tasks only.
                return Err(CallRefusal::Forbidden(format!("Task '{}' is not a task of executor '{}'", status.task_id.value, key.1)));
            };
            // The first terminal state wins: an update after it (a late
            // non-terminal one, as Mesos drops it; a resend of the terminal one,
            // already queued; the executor's own view of a task the agent has
            // already ended, e.g. lost on the agent's exit) is acknowledged and
            // dropped.
            let superseded = task.state.is_terminal();
            status.agent_id = Some(mezzo_proto::mesos::v1::AgentId { value: self.id() });
            status.executor_id = Some(ExecutorId { value: ex.executor_id.clone() });
            let container_status = status.container_status.get_or_insert_with(ContainerStatus::default);
            container_status.container_id = Some(ContainerId { value: ex.container_id.clone(), parent: None });
            if status.timestamp.is_none() {
                status.timestamp = Some(now());
            }
            (superseded, ex.stream.clone())
        };
        let task_id = status.task_id.clone();
        let ack = move || {
            if let Some(stream) = stream {
                let _ = stream.send(executor::Event {
                    r#type: Some(event::Type::Acknowledged as i32),
                    acknowledged: Some(event::Acknowledged { task_id, uuid }),
                    ..Default::default()
                });
            }
        };
        if superseded {
            tracing::info!(task = %status.task_id.value, state = ?status.state(), "update after the task's terminal state; acknowledged and dropped");
            ack();
            return Ok(());
        }
        if status.state() == TaskState::TaskFailed && self.limitation_ended(key) {
            tracing::info!(task = %status.task_id.value, "dropping the executor's TASK_FAILED: a limitation ended the container");
        } else if !self.adopt_executor_limitation(key, &status) {
            self.record_and_forward(key, status);
        }
        ack();
        Ok(())
    }
}
