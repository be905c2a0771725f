//! The runner of one executor (Mesos's `Executor` in slave.cpp, Nomad's
//! TaskRunner): it owns the executor's process and timers. HTTP handlers
//! and the master link hand it commands; it alone decides when the
//! executor is forced out, and on its end destroys the container and ends
//! the tasks the executor left unfinished.

use crate::agent::{kill_executor, kill_group, partition_aware, Agent};
use crate::executor::{event, ExecutorKind, ExecutorState};
use crate::process::ExecutorProcess;
use mezzo_proto::mesos::v1::executor::event::Type as EventType;
use mezzo_proto::mesos::v1::{task_status, FrameworkId, TaskState, TaskStatus};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What the runner is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerCommand {
    /// SHUTDOWN was sent (or could not be): the executor gets `grace` to
    /// exit before it is killed.
    Shutdown { grace: Duration },
    /// Every task of a command executor is terminal: its executor exits by
    /// itself once its update is acknowledged; it gets a while for that.
    TasksTerminal,
    /// Kill it now (a limitation ended its container).
    Kill,
}

/// The timers of a runner, as deadlines.
#[derive(Debug, Default, Clone, Copy)]
pub struct Deadlines {
    /// The executor must have subscribed by then.
    pub registration: Option<Instant>,
    /// Kill it then.
    pub kill: Option<Instant>,
    /// Next HEARTBEAT on its subscription.
    pub heartbeat: Option<Instant>,
}

impl Deadlines {
    fn next(&self) -> Option<Instant> {
        [self.registration, self.kill, self.heartbeat].into_iter().flatten().min()
    }

    /// Applies a command; returns true when the executor must be killed now.
    pub fn apply(&mut self, command: RunnerCommand, now: Instant, linger: Duration) -> bool {
        match command {
            RunnerCommand::Shutdown { grace } => {
                let at = now + grace;
                self.kill = Some(self.kill.map_or(at, |k| k.min(at)));
                false
            }
            RunnerCommand::TasksTerminal => {
                self.kill.get_or_insert(now + linger);
                false
            }
            RunnerCommand::Kill => true,
        }
    }
}

/// Where the executor stood when its registration deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationCheck {
    Subscribed,
    /// Not subscribed: kill it.
    TimedOut,
}

impl Agent {
    /// Runs an executor's runner until the executor has exited and its
    /// container is destroyed. `subscribe_within` is the registration (or,
    /// for a recovered executor, re-registration) timeout.
    pub async fn run_executor(self: Arc<Self>, key: (String, String), mut child: ExecutorProcess, mut commands: mpsc::UnboundedReceiver<RunnerCommand>, subscribe_within: Duration) {
        let pid = child.pid();
        let linger = self.shutdown_grace + Duration::from_secs(60);
        let heartbeat = self.flags.executor_heartbeat_interval;
        let now = Instant::now();
        let mut deadlines = Deadlines { registration: Some(now + subscribe_within), kill: None, heartbeat: Some(now + heartbeat) };
        let status = loop {
            let sleep = async {
                match deadlines.next() {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                status = child.wait() => break status,
                command = commands.recv() => {
                    // The sender lives in the executor's entry; it is dropped only once the executor is finished.
                    let Some(command) = command else { continue };
                    if deadlines.apply(command, Instant::now(), linger) {
                        kill_executor(pid);
                    }
                }
                _ = sleep => {
                    let now = Instant::now();
                    if deadlines.registration.is_some_and(|t| t <= now) {
                        deadlines.registration = None;
                        if self.registration_deadline(&key) == RegistrationCheck::TimedOut {
                            tracing::warn!(executor = %key.1, "executor did not subscribe in time; killing it");
                            kill_executor(pid);
                        }
                    }
                    if deadlines.kill.is_some_and(|t| t <= now) {
                        tracing::warn!(executor = %key.1, "executor did not exit in time; killing it");
                        kill_executor(pid);
                        deadlines.kill = None;
                    }
                    if deadlines.heartbeat.is_some_and(|t| t <= now) {
                        deadlines.heartbeat = Some(now + heartbeat);
                        if let Some(ex) = self.state.lock().unwrap().executors.get(&key) {
                            ex.send(event(EventType::Heartbeat));
                        }
                    }
                }
            }
        };
        kill_group(pid); // anything the supervisor left in its session
        tracing::info!(executor = %key.1, status = ?status, "executor exited");
        self.executor_terminated(&key, status).await;
    }

    /// At the registration deadline: was the executor subscribed?
    fn registration_deadline(&self, key: &(String, String)) -> RegistrationCheck {
        let mut state = self.state.lock().unwrap();
        match state.executors.get_mut(key) {
            Some(ex) if ex.stream.is_none() && ex.state == ExecutorState::Registering => {
                if ex.recovered {
                    ex.reregistration_timed_out = true;
                } else {
                    ex.registration_timed_out = true;
                }
                ex.state = ExecutorState::Terminating;
                RegistrationCheck::TimedOut
            }
            _ => RegistrationCheck::Subscribed,
        }
    }

    /// The executor is gone: its container is destroyed, every task it left
    /// unfinished ends as Mesos ends them, the master hears of a custom
    /// executor's exit (the scheduler's FAILURE event), and it is moved to
    /// the completed executors.
    pub async fn executor_terminated(&self, key: &(String, String), exit: Option<String>) {
        let (container_id, kind) = {
            let mut state = self.state.lock().unwrap();
            let Some(ex) = state.executors.get_mut(key) else { return };
            ex.stream = None;
            ex.state = ExecutorState::Terminating;
            (ex.container_id.clone(), ex.kind)
        };
        // A custom executor's status is the one its container recorded.
        let recorded = self.containerizer.runtime_dir(&container_id).exit_status().ok().flatten();
        if let Err(e) = self.containerizer.destroy(&container_id).await {
            tracing::error!(container = %container_id, error = %e, "failed to destroy container");
        }
        for status in self.termination_updates(key, exit.or_else(|| recorded.map(|s| s.to_string()))) {
            self.record_and_forward(key, status);
        }
        if kind == ExecutorKind::Custom {
            self.report_executor_exited(key, recorded.map(|s| s.0));
        }
        self.finish_executor(key);
    }

    /// The updates for the tasks an ended executor left unfinished
    /// (Mesos's `sendExecutorTerminatedStatusUpdate`).
    pub fn termination_updates(&self, key: &(String, String), exit: Option<String>) -> Vec<TaskStatus> {
        let state = self.state.lock().unwrap();
        let aware = state.frameworks.get(&key.0).map(partition_aware).unwrap_or(false);
        let Some(ex) = state.executors.get(key) else { return Vec::new() };
        let lost = if aware { TaskState::TaskGone } else { TaskState::TaskLost };
        ex.live_tasks()
            .map(|task| {
                if let Some(limitation) = &ex.limitation {
                    return self.limitation_status(ex, task, limitation);
                }
                let (state, reason, message) = if ex.reregistration_timed_out {
                    (
                        lost,
                        task_status::Reason::ExecutorReregistrationTimeout,
                        "Executor did not re-register within the re-registration timeout after the agent restarted".to_string(),
                    )
                } else if ex.registration_timed_out {
                    (
                        TaskState::TaskFailed,
                        task_status::Reason::ExecutorRegistrationTimeout,
                        format!("Executor did not register within {}", crate::flags::format_duration(self.registration_timeout)),
                    )
                } else {
                    let state = if task.kill_requested { TaskState::TaskKilled } else { TaskState::TaskFailed };
                    let message = format!("Executor terminated{}", exit.as_ref().map(|e| format!(" ({e})")).unwrap_or_default());
                    (state, task_status::Reason::ExecutorTerminated, message)
                };
                self.executor_status(ex, task.id(), state, reason, message)
            })
            .collect()
    }

    /// Tells the master a custom executor ended (Mesos's
    /// ExitedExecutorMessage): best effort, in the background.
    fn report_executor_exited(&self, key: &(String, String), status: Option<i32>) {
        let msg = mezzo_proto::mezzo::agent::ExecutorExited {
            framework_id: FrameworkId { value: key.0.clone() },
            executor_id: mezzo_proto::mesos::v1::ExecutorId { value: key.1.clone() },
            status,
        };
        let Some(agent) = self.me.upgrade() else { return };
        tokio::spawn(async move {
            if let Err(e) = crate::master_link::post_authenticated(&agent, "/mezzo/v1/agent/executor_exited", &msg).await {
                tracing::warn!(executor = %msg.executor_id.value, error = %e, "could not tell the master that the executor exited");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn shutdown_sets_the_earliest_kill_and_kill_is_immediate() {
        let now = Instant::now();
        let linger = Duration::from_secs(65);
        let mut d = Deadlines::default();
        assert!(!d.apply(RunnerCommand::TasksTerminal, now, linger));
        assert_eq!(d.kill, Some(now + linger));
        // A shutdown shortens the wait; a later, longer one does not extend it.
        assert!(!d.apply(RunnerCommand::Shutdown { grace: Duration::from_secs(5) }, now, linger));
        assert_eq!(d.kill, Some(now + Duration::from_secs(5)));
        assert!(!d.apply(RunnerCommand::Shutdown { grace: Duration::from_secs(30) }, now, linger));
        assert_eq!(d.kill, Some(now + Duration::from_secs(5)));
        assert!(!d.apply(RunnerCommand::TasksTerminal, now, linger));
        assert_eq!(d.kill, Some(now + Duration::from_secs(5)));
        assert!(d.apply(RunnerCommand::Kill, now, linger));
        assert_eq!(d.next(), Some(now + Duration::from_secs(5)));
    }
}
