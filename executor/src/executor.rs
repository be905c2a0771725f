//! The command executor: subscribes to the agent, runs the one task it is
//! given in its prepared container, reports each state change reliably and
//! exits once the agent has acknowledged the terminal update.

use crate::agent_api::{AgentApi, Connection};
use crate::checks::{HealthCheckSpec, HealthState, HealthUpdate, ProbeOutcome, RunningCheck};
use crate::config::Config;
use crate::status::{new_status, UnacknowledgedUpdates};
use mezzo_containerizer::{ExitStatus, Launcher};
use mezzo_proto::mesos::v1::executor::{call, event, Call, Event};
use mezzo_containerizer::{Limitation, LimitationReason};
use mezzo_proto::mesos::v1::{
    framework_info, network_info, task_status, value, AgentId, ContainerId, ContainerStatus, ExecutorId,
    FrameworkId, FrameworkInfo, KillPolicy, NetworkInfo, Resource, TaskId, TaskInfo, TaskResourceLimitation,
    TaskState, TaskStatus,
};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

/// Kill grace period when neither KILL nor the task names one (Mesos keeps
/// 3 s for backwards compatibility).
pub const DEFAULT_KILL_GRACE_PERIOD: Duration = Duration::from_secs(3);
/// How long the executor waits for the terminal update's acknowledgement
/// before exiting anyway.
pub const TERMINAL_ACK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the executor keeps trying to make its first subscription
/// (Mesos's `--executor_registration_timeout` default).
pub const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on waiting for a SIGKILLed container when the executor gives up.
const FORCED_KILL_WAIT: Duration = Duration::from_secs(10);
/// First delay between subscription attempts; it doubles up to the maximum.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// The message Mesos's command executor sends for a second task.
pub const MULTIPLE_TASKS_MESSAGE: &str = "Attempted to run multiple tasks using a \"command\" executor";

/// How the executor ended; the binary turns it into an exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The task's terminal update was acknowledged, or there was no task to run.
    Done,
    /// The terminal update was never acknowledged within the fail-safe time.
    Unacknowledged,
    /// The executor lost the agent or was misconfigured; `reason` says how.
    Failed(String),
}

/// What the container is doing, from the executor's point of view.
enum Container {
    /// No task launched yet.
    Idle,
    /// The task's container runs.
    Running(Box<dyn Launcher>),
    /// The task ended (or never started); its terminal update was made.
    Ended,
}

/// A kill in progress: SIGTERM was sent, SIGKILL follows at `deadline`.
struct Killing {
    deadline: Instant,
    escalated: bool,
}

/// The command executor's state; `run` drives it.
pub struct CommandExecutor {
    config: Config,
    api: AgentApi,
    executor_id: ExecutorId,
    framework_id: FrameworkId,
    agent_id: Option<AgentId>,
    framework_info: Option<FrameworkInfo>,
    connections: mpsc::UnboundedReceiver<Connection>,
    connections_tx: mpsc::UnboundedSender<Connection>,
    /// Generation of the current subscription attempt; reports of older
    /// ones are stale.
    generation: u64,
    subscribed: bool,
    ever_subscribed: bool,
    started_at: Instant,
    disconnected_at: Option<Instant>,
    resubscribe_at: Option<Instant>,
    backoff: Duration,
    outgoing: mpsc::UnboundedSender<Call>,
    task: Option<TaskInfo>,
    /// Whether the agent acknowledged any update of the task, so that it
    /// no longer needs the task itself in SUBSCRIBE.
    task_acknowledged: bool,
    container: Container,
    killing: Option<Killing>,
    /// `TaskInfo.max_completion_time`: when the running task is killed if it
    /// has not ended, counted from TASK_RUNNING (as Mesos's command executor).
    completion_deadline: Option<Instant>,
    /// The task was killed for reaching its max_completion_time (its end is
    /// TASK_FAILED with REASON_MAX_COMPLETION_TIME_REACHED).
    completion_expired: Option<Duration>,
    /// The task's health check while it runs, with its state.
    health: Option<(RunningCheck, HealthState, HealthCheckSpec)>,
    /// The task's general check while it runs, with the last status reported.
    check: Option<(RunningCheck, mezzo_proto::mesos::v1::CheckStatusInfo)>,
    /// The task was killed for failing its health check: why (its end is
    /// TASK_KILLED with `healthy=false`, as Mesos).
    killed_by_health_check: Option<String>,
    /// The latest update made: health and check updates are copies of it
    /// (as Mesos's command executor makes them), so they keep the container
    /// status and the other result.
    last_status: Option<TaskStatus>,
    pending: UnacknowledgedUpdates,
    terminal_sent_at: Option<Instant>,
}

impl CommandExecutor {
    /// An executor for `config`; nothing happens until `run`. Must be
    /// called inside a tokio runtime (it starts the update sender).
    pub fn new(config: Config) -> Self {
        let api = AgentApi::new(config.executor_api_url(), config.authentication_token.as_ref().map(|t| t.0.as_str()));
        let (connections_tx, connections) = mpsc::unbounded_channel();
        let outgoing = spawn_sender(api.clone());
        CommandExecutor {
            executor_id: ExecutorId { value: config.executor_id.clone() },
            framework_id: FrameworkId { value: config.framework_id.clone() },
            agent_id: config.agent_id.clone().map(|value| AgentId { value }),
            config,
            api,
            framework_info: None,
            connections,
            connections_tx,
            generation: 0,
            subscribed: false,
            ever_subscribed: false,
            started_at: Instant::now(),
            disconnected_at: None,
            resubscribe_at: None,
            backoff: INITIAL_BACKOFF,
            outgoing,
            task: None,
            task_acknowledged: false,
            container: Container::Idle,
            killing: None,
            completion_deadline: None,
            completion_expired: None,
            health: None,
            check: None,
            killed_by_health_check: None,
            last_status: None,
            pending: UnacknowledgedUpdates::default(),
            terminal_sent_at: None,
        }
    }

    /// Runs until the task is done and acknowledged, the agent is lost, or
    /// the agent shuts the executor down.
    pub async fn run(mut self) -> Outcome {
        let mut sigterm = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                None
            }
        };
        let mut resend = tokio::time::interval_at(
            Instant::now() + self.config.resend_interval,
            self.config.resend_interval,
        );
        resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.subscribe();
        loop {
            let kill_deadline = self.killing.as_ref().filter(|k| !k.escalated).map(|k| k.deadline);
            let fail_safe = self.terminal_sent_at.map(|t| t + TERMINAL_ACK_TIMEOUT);
            let outcome = tokio::select! {
                Some(report) = self.connections.recv() => self.on_connection(report).await,
                status = wait_container(&mut self.container) => self.on_reaped(status),
                _ = sleep_until_some(kill_deadline) => {
                    self.escalate().await;
                    None
                }
                _ = sleep_until_some(self.completion_deadline) => {
                    self.completion_timeout().await;
                    None
                }
                Some(outcome) = next_outcome(self.health.as_mut().map(|h| &mut h.0)) => {
                    self.on_health_outcome(outcome).await;
                    None
                }
                Some(outcome) = next_outcome(self.check.as_mut().map(|c| &mut c.0)) => {
                    self.on_check_outcome(outcome);
                    None
                }
                _ = sleep_until_some(self.resubscribe_at) => {
                    self.resubscribe_at = None;
                    self.subscribe();
                    None
                }
                _ = resend.tick() => {
                    self.resend();
                    None
                }
                _ = recv_signal(&mut sigterm) => {
                    tracing::info!("received SIGTERM; shutting down");
                    self.shutdown().await
                }
                _ = sleep_until_some(fail_safe) => {
                    tracing::error!("terminal update not acknowledged within {TERMINAL_ACK_TIMEOUT:?}; exiting");
                    Some(Outcome::Unacknowledged)
                }
            };
            if let Some(outcome) = outcome {
                self.force_kill().await;
                return outcome;
            }
        }
    }

    /// Starts a subscription attempt carrying everything the agent may not have.
    fn subscribe(&mut self) {
        self.generation += 1;
        let mut call = self.call(call::Type::Subscribe);
        let unacknowledged_tasks = match &self.task {
            Some(task) if !self.task_acknowledged || self.pending.contains_task(&task.task_id) => {
                vec![task.clone()]
            }
            _ => Vec::new(),
        };
        call.subscribe = Some(call::Subscribe {
            unacknowledged_tasks,
            unacknowledged_updates: self.pending.iter().cloned().collect(),
        });
        tracing::info!(
            generation = self.generation,
            unacknowledged = self.pending.iter().count(),
            url = %self.config.executor_api_url(),
            "subscribing"
        );
        tokio::spawn(self.api.clone().subscribe(call, self.generation, self.connections_tx.clone()));
    }

    async fn on_connection(&mut self, report: Connection) -> Option<Outcome> {
        match report {
            Connection::Connected { generation } if generation == self.generation => {
                tracing::debug!(generation, "subscription accepted");
                None
            }
            Connection::Event { generation, event } if generation == self.generation => {
                self.on_event(*event).await
            }
            Connection::Disconnected { generation, reason } if generation == self.generation => {
                self.on_disconnected(reason)
            }
            _ => None,
        }
    }

    fn on_disconnected(&mut self, reason: String) -> Option<Outcome> {
        self.subscribed = false;
        let now = Instant::now();
        if self.ever_subscribed && !self.config.checkpoint {
            // Without checkpointing the agent cannot recover us: give up.
            return Some(Outcome::Failed(format!("lost the agent ({reason}) and the framework does not checkpoint")));
        }
        let (since, limit) = if self.ever_subscribed {
            (*self.disconnected_at.get_or_insert(now), self.config.recovery_timeout)
        } else {
            (self.started_at, REGISTRATION_TIMEOUT)
        };
        if now.duration_since(since) >= limit {
            return Some(Outcome::Failed(format!("could not (re)subscribe to the agent within {limit:?}: {reason}")));
        }
        tracing::warn!(reason = %reason, retry_in = ?self.backoff, "not subscribed to the agent");
        self.resubscribe_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(self.config.subscription_backoff_max.max(INITIAL_BACKOFF));
        None
    }

    async fn on_event(&mut self, event: Event) -> Option<Outcome> {
        match event.r#type() {
            event::Type::Subscribed => {
                let subscribed = event.subscribed?;
                self.on_subscribed(subscribed)
            }
            event::Type::Launch => match event.launch {
                Some(launch) => {
                    self.launch(launch.task).await;
                    None
                }
                None => {
                    tracing::warn!("LAUNCH event without a task");
                    None
                }
            },
            event::Type::LaunchGroup => {
                tracing::error!("the command executor cannot run task groups; shutting down");
                self.shutdown().await
            }
            event::Type::Kill => {
                let kill = event.kill?;
                self.kill_task(&kill.task_id, kill.kill_policy.as_ref()).await;
                None
            }
            event::Type::Acknowledged => {
                let ack = event.acknowledged?;
                self.on_acknowledged(&ack.task_id, &ack.uuid)
            }
            event::Type::Shutdown => {
                tracing::info!("agent asked the executor to shut down");
                self.shutdown().await
            }
            event::Type::Message => {
                tracing::info!(bytes = event.message.map(|m| m.data.len()).unwrap_or(0), "framework message (ignored)");
                None
            }
            event::Type::Error => {
                let message = event.error.map(|e| e.message).unwrap_or_default();
                tracing::error!(message = %message, "error event from the agent");
                None
            }
            event::Type::Heartbeat => None,
            event::Type::Unknown => {
                tracing::warn!("event of unknown type (ignored)");
                None
            }
        }
    }

    fn on_subscribed(&mut self, subscribed: event::Subscribed) -> Option<Outcome> {
        if subscribed.executor_info.executor_id != self.executor_id {
            return Some(Outcome::Failed(format!(
                "subscribed as executor '{}' but this is executor '{}'",
                subscribed.executor_info.executor_id.value, self.executor_id.value
            )));
        }
        if let Some(id) = &subscribed.framework_info.id {
            if id != &self.framework_id {
                return Some(Outcome::Failed(format!(
                    "subscribed for framework '{}' but this executor belongs to '{}'",
                    id.value, self.framework_id.value
                )));
            }
        }
        if let Some(id) = subscribed.agent_info.id.clone() {
            self.agent_id = Some(id);
        }
        tracing::info!(
            agent = ?self.agent_id.as_ref().map(|a| &a.value),
            container = ?subscribed.container_id.as_ref().map(|c| &c.value),
            "subscribed"
        );
        self.framework_info = Some(subscribed.framework_info);
        self.subscribed = true;
        self.ever_subscribed = true;
        self.disconnected_at = None;
        self.backoff = INITIAL_BACKOFF;
        None
    }

    async fn launch(&mut self, task: TaskInfo) {
        if self.task.is_some() {
            tracing::error!(task = %task.task_id.value, "{MULTIPLE_TASKS_MESSAGE}");
            self.update(&task.task_id, TaskState::TaskFailed, Some(MULTIPLE_TASKS_MESSAGE.to_string()), None);
            return;
        }
        tracing::info!(task = %task.task_id.value, "launching task");
        let task_id = task.task_id.clone();
        self.task = Some(task);
        self.update(&task_id, TaskState::TaskStarting, None, None);
        let started = async {
            let mut launcher = mezzo_containerizer::launcher(&self.config.runtime_dir, &self.config.launcher_dir)?;
            launcher.start().await?;
            Ok::<_, mezzo_containerizer::ContainerizerError>(launcher)
        }
        .await;
        match started {
            Ok(launcher) => {
                let ips = launcher.ip_addresses().await;
                self.container = Container::Running(launcher);
                self.completion_deadline = self.max_completion_time().map(|limit| Instant::now() + limit);
                tracing::info!(task = %task_id.value, ?ips, "task is running");
                let container_status = self.container_status(&ips);
                self.update_with(&task_id, TaskState::TaskRunning, None, None, |status| {
                    status.container_status = Some(container_status);
                });
                self.start_checks();
            }
            Err(e) => {
                tracing::error!(task = %task_id.value, error = %e, "failed to launch container");
                self.container = Container::Ended;
                self.update(
                    &task_id,
                    TaskState::TaskFailed,
                    Some(format!("Failed to launch container: {e}")),
                    Some(task_status::Reason::ContainerLaunchFailed),
                );
            }
        }
    }

    /// `TaskStatus.container_status`: the container's id and, when it has
    /// addresses of its own (a docker bridge or user network), one
    /// `NetworkInfo` carrying them, as Mesos's docker executor reports it.
    fn container_status(&self, ips: &[std::net::IpAddr]) -> ContainerStatus {
        let runtime_dir = mezzo_containerizer::RuntimeDir::new(&self.config.runtime_dir);
        let container_id = runtime_dir
            .read_spec()
            .map(|spec| spec.container_id)
            .ok()
            .or_else(|| runtime_dir.container_id())
            .map(|value| ContainerId { value, parent: None });
        let network_infos = if ips.is_empty() {
            Vec::new()
        } else {
            vec![NetworkInfo {
                ip_addresses: ips
                    .iter()
                    .map(|ip| network_info::IpAddress {
                        protocol: Some(match ip {
                            std::net::IpAddr::V4(_) => network_info::Protocol::IPv4 as i32,
                            std::net::IpAddr::V6(_) => network_info::Protocol::IPv6 as i32,
                        }),
                        ip_address: Some(ip.to_string()),
                    })
                    .collect(),
                ..Default::default()
            }]
        };
        ContainerStatus { container_id, network_infos, ..Default::default() }
    }

    /// `TaskInfo.max_completion_time`, when the task has one (the master
    /// refuses a negative one; zero means at once, as in Mesos).
    fn max_completion_time(&self) -> Option<Duration> {
        let d = self.task.as_ref()?.max_completion_time.as_ref()?;
        Some(Duration::from_nanos(u64::try_from(d.nanoseconds).unwrap_or(0)))
    }

    /// The task ran past its max_completion_time: it is killed with its
    /// kill policy's grace and will end TASK_FAILED.
    async fn completion_timeout(&mut self) {
        self.completion_deadline = None;
        if self.killing.is_some() || !matches!(self.container, Container::Running(_)) {
            return;
        }
        let limit = self.max_completion_time().unwrap_or_default();
        tracing::info!(?limit, "killing the task: it reached its max_completion_time");
        self.completion_expired = Some(limit);
        let grace = self.kill_grace(None);
        self.kill(grace).await;
    }

    /// Grace period for a kill: KILL's policy, else the task's, else 3 s.
    fn kill_grace(&self, kill_policy: Option<&KillPolicy>) -> Duration {
        let from_policy = |p: Option<&KillPolicy>| {
            p.and_then(|p| p.grace_period.as_ref())
                .map(|d| Duration::from_nanos(d.nanoseconds.max(0) as u64))
        };
        from_policy(kill_policy)
            .or_else(|| from_policy(self.task.as_ref().and_then(|t| t.kill_policy.as_ref())))
            .unwrap_or(DEFAULT_KILL_GRACE_PERIOD)
    }

    async fn kill_task(&mut self, task_id: &TaskId, kill_policy: Option<&KillPolicy>) {
        if self.task.as_ref().map(|t| &t.task_id) != Some(task_id) {
            tracing::warn!(task = %task_id.value, "KILL for a task this executor does not run (ignored)");
            return;
        }
        let grace = self.kill_grace(kill_policy);
        self.kill(grace).await;
    }

    /// Stops the container through its launcher (SIGTERM; docker's stop),
    /// sends TASK_KILLING where the framework understands it, and arms
    /// SIGKILL after `grace`. A second kill may only shorten the grace.
    async fn kill(&mut self, grace: Duration) {
        // No health or check results once the task is being killed (Mesos
        // pauses its checkers): a dying task is not reported unhealthy.
        if matches!(self.container, Container::Running(_)) {
            self.stop_checks();
        }
        let Container::Running(launcher) = &self.container else {
            tracing::info!("kill requested but no task is running");
            return;
        };
        // The runtime may ask for a longer grace (docker's --docker_stop_timeout).
        let grace = grace.max(launcher.min_stop_grace());
        let deadline = Instant::now() + grace;
        if let Some(killing) = &mut self.killing {
            if !killing.escalated && deadline < killing.deadline {
                tracing::info!(?grace, "shortening the kill grace period");
                killing.deadline = deadline;
            }
            return;
        }
        tracing::info!(?grace, "killing task: stop (SIGTERM), then SIGKILL after the grace period");
        if let Err(e) = launcher.stop(grace).await {
            tracing::warn!(error = %e, "failed to stop the container");
        }
        self.killing = Some(Killing { deadline, escalated: false });
        if self.framework_has_capability(framework_info::capability::Type::TaskKillingState) {
            if let Some(task_id) = self.task.as_ref().map(|t| t.task_id.clone()) {
                self.update(&task_id, TaskState::TaskKilling, None, None);
            }
        }
    }

    async fn escalate(&mut self) {
        if let Some(killing) = &mut self.killing {
            killing.escalated = true;
        }
        if let Container::Running(launcher) = &self.container {
            tracing::info!("grace period over: SIGKILL");
            if let Err(e) = launcher.signal(libc::SIGKILL).await {
                tracing::warn!(error = %e, "failed to send SIGKILL");
            }
        }
    }

    fn on_reaped(&mut self, status: Result<ExitStatus, mezzo_containerizer::ContainerizerError>) -> Option<Outcome> {
        let limitation = match &self.container {
            Container::Running(launcher) => launcher.limitation(),
            _ => None,
        };
        self.container = Container::Ended;
        self.stop_checks();
        let task_id = self.task.as_ref()?.task_id.clone();
        if let Some(limitation) = limitation {
            // The runtime ended the task for exceeding a limit (docker's
            // OOMKilled): TASK_FAILED with the limitation, as Mesos does.
            let exit = match &status {
                Ok(status) => format!("Command {status}"),
                Err(e) => format!("Failed to wait for the container: {e}"),
            };
            let message = format!("{}; {exit}", limitation.message);
            tracing::info!(task = %task_id.value, reason = ?limitation.reason, message = %message, "task ended by a limitation");
            let resources = self.limited_resources(&limitation);
            self.update_with(&task_id, TaskState::TaskFailed, Some(message), Some(limitation_reason(&limitation)), |s| {
                s.limitation = Some(TaskResourceLimitation { resources });
            });
            return self.finished_if_acknowledged();
        }
        self.completion_deadline = None;
        if let Some(limit) = self.completion_expired {
            let exit = match &status {
                Ok(status) => format!("Command {status}"),
                Err(e) => format!("Failed to wait for the container: {e}"),
            };
            let message = format!("Task exceeded its max_completion_time of {}; {exit}", mezzo_proto::duration::format(limit));
            tracing::info!(task = %task_id.value, message = %message, "task ended at its max_completion_time");
            self.update(&task_id, TaskState::TaskFailed, Some(message), Some(task_status::Reason::MaxCompletionTimeReached));
            return self.finished_if_acknowledged();
        }
        let killed = self.killing.is_some();
        let (state, message, reason) = match status {
            Ok(status) => {
                let state = if killed {
                    TaskState::TaskKilled
                } else if status.success() {
                    TaskState::TaskFinished
                } else {
                    TaskState::TaskFailed
                };
                (state, format!("Command {status}"), None)
            }
            // The executor lost its container (the Docker engine went away
            // for good): its end is unknown, so not a plain failure of the
            // command; the agent destroys what is left of it.
            Err(e) => {
                let state = if killed { TaskState::TaskKilled } else { TaskState::TaskFailed };
                (state, format!("Failed to wait for the container: {e}"), Some(task_status::Reason::ExecutorTerminated))
            }
        };
        tracing::info!(task = %task_id.value, state = ?state, message = %message, "task ended");
        match self.killed_by_health_check.clone().filter(|_| killed) {
            // Mesos's command executor: TASK_KILLED with healthy=false; the
            // message also says which failures killed it.
            Some(why) => self.update_with(&task_id, state, Some(format!("{message}; {why}")), reason, |s| s.healthy = Some(false)),
            None => self.update(&task_id, state, Some(message), reason),
        }
        self.finished_if_acknowledged()
    }

    async fn shutdown(&mut self) -> Option<Outcome> {
        match &self.container {
            Container::Running(_) => {
                // Leave a second before the agent's own deadline to destroy us.
                let limit = self.config.shutdown_grace_period.saturating_sub(Duration::from_secs(1));
                let grace = self.kill_grace(None).min(limit);
                self.kill(grace).await;
                None
            }
            Container::Idle => Some(Outcome::Done),
            Container::Ended => self.finished_if_acknowledged(),
        }
    }

    fn on_acknowledged(&mut self, task_id: &TaskId, uuid: &[u8]) -> Option<Outcome> {
        match self.pending.acknowledge(uuid) {
            Some(update) => {
                tracing::debug!(task = %task_id.value, state = ?update.status.state(), "update acknowledged");
                if self.task.as_ref().map(|t| &t.task_id) == Some(task_id) {
                    self.task_acknowledged = true;
                }
            }
            None => tracing::debug!(task = %task_id.value, "acknowledgement for an unknown update (ignored)"),
        }
        self.finished_if_acknowledged()
    }

    /// Done once the task's terminal update has been acknowledged.
    fn finished_if_acknowledged(&self) -> Option<Outcome> {
        (self.terminal_sent_at.is_some() && self.pending.is_empty()).then_some(Outcome::Done)
    }

    /// The task's resources named by `limitation` (Mesos reports the
    /// container's `mem` resource); a name the task lacks is reported as a
    /// scalar without a value.
    fn limited_resources(&self, limitation: &Limitation) -> Vec<Resource> {
        limitation
            .resources
            .iter()
            .map(|name| {
                self.task
                    .as_ref()
                    .and_then(|t| t.resources.iter().find(|r| &r.name == name).cloned())
                    .unwrap_or_else(|| Resource {
                        name: name.clone(),
                        r#type: value::Type::Scalar as i32,
                        ..Default::default()
                    })
            })
            .collect()
    }

    /// Makes an update, keeps it until acknowledged and sends it when subscribed.
    fn update(
        &mut self,
        task_id: &TaskId,
        state: TaskState,
        message: Option<String>,
        reason: Option<task_status::Reason>,
    ) {
        self.update_with(task_id, state, message, reason, |_| {});
    }

    /// `update`, with `fill` adding fields of the status before it is sent.
    fn update_with(
        &mut self,
        task_id: &TaskId,
        state: TaskState,
        message: Option<String>,
        reason: Option<task_status::Reason>,
        fill: impl FnOnce(&mut TaskStatus),
    ) {
        let mut status = new_status(task_id, state, &self.executor_id.value, self.agent_id.as_ref(), message);
        status.reason = reason.map(|r| r as i32);
        fill(&mut status);
        self.send_status(status);
    }

    /// Keeps `status` until acknowledged and sends it when subscribed.
    fn send_status(&mut self, mut status: TaskStatus) {
        let task_id = &status.task_id;
        let state = status.state();
        let ours = self.task.as_ref().filter(|t| &t.task_id == task_id);
        // A task with a check: every update carries a check status, empty
        // until there is a result (as Mesos).
        if let Some(check) = ours.and_then(|t| t.check.as_ref()).filter(|_| status.check_status.is_none()) {
            status.check_status = Some(crate::checks::empty_check_status(check));
        }
        if ours.is_some() {
            self.last_status = Some(status.clone());
        }
        if state.is_terminal() && self.task.as_ref().map(|t| &t.task_id) == Some(task_id) {
            self.terminal_sent_at = Some(Instant::now());
        }
        let update = call::Update { status };
        self.pending.push(update.clone());
        if self.subscribed {
            let mut call = self.call(call::Type::Update);
            call.update = Some(update);
            let _ = self.outgoing.send(call);
        }
    }

    /// Sends every unacknowledged update again (the agent drops duplicates).
    fn resend(&mut self) {
        if !self.subscribed || self.pending.is_empty() {
            return;
        }
        tracing::debug!(count = self.pending.iter().count(), "resending unacknowledged updates");
        for update in self.pending.iter() {
            let mut call = self.call(call::Type::Update);
            call.update = Some(update.clone());
            let _ = self.outgoing.send(call);
        }
    }

    fn call(&self, kind: call::Type) -> Call {
        Call {
            executor_id: self.executor_id.clone(),
            framework_id: self.framework_id.clone(),
            r#type: Some(kind as i32),
            ..Default::default()
        }
    }

    fn framework_has_capability(&self, capability: framework_info::capability::Type) -> bool {
        self.framework_info
            .as_ref()
            .map(|f| f.capabilities.iter().any(|c| c.r#type() == capability))
            .unwrap_or(false)
    }

    /// Starts the task's health check and check, if it has them, once it
    /// runs. A check that cannot be made is logged and not run (the master
    /// refuses invalid ones before they get here).
    fn start_checks(&mut self) {
        let Some(task) = self.task.clone() else { return };
        let launcher = || mezzo_containerizer::launcher(&self.config.runtime_dir, &self.config.launcher_dir);
        if let Some(proto) = &task.health_check {
            match HealthCheckSpec::from_proto(proto) {
                Ok(spec) => match launcher() {
                    Ok(l) => {
                        tracing::info!(probe = ?spec.probe, timing = ?spec.timing, grace = ?spec.grace_period, consecutive_failures = spec.consecutive_failures, "starting the health check");
                        let state = HealthState::new(&spec, Instant::now());
                        let running = crate::checks::start_probing(spec.probe.clone(), spec.timing, l);
                        self.health = Some((running, state, spec));
                    }
                    Err(e) => tracing::error!(error = %e, "cannot start the health check"),
                },
                Err(e) => tracing::error!(error = %e, "invalid health check (not run)"),
            }
        }
        if let Some(proto) = &task.check {
            match crate::checks::check_from_proto(proto) {
                Ok((probe, timing)) => match launcher() {
                    Ok(l) => {
                        tracing::info!(?probe, ?timing, "starting the check");
                        self.check = Some((crate::checks::start_probing(probe, timing, l), crate::checks::empty_check_status(proto)));
                    }
                    Err(e) => tracing::error!(error = %e, "cannot start the check"),
                },
                Err(e) => tracing::error!(error = %e, "invalid check (not run)"),
            }
        }
    }

    fn stop_checks(&mut self) {
        if self.health.take().is_some() {
            tracing::info!("health checking stopped");
        }
        if self.check.take().is_some() {
            tracing::info!("checking stopped");
        }
    }

    /// A health check result: a TASK_RUNNING update with `healthy` on the
    /// transitions Mesos reports; the task is killed (with its kill
    /// policy's grace) after `consecutive_failures` failures in a row.
    async fn on_health_outcome(&mut self, outcome: ProbeOutcome) {
        if self.killing.is_some() || !matches!(self.container, Container::Running(_)) {
            return;
        }
        let Some((_, state, spec)) = self.health.as_mut() else { return };
        let failure = outcome.health_failure(&spec.probe);
        match &failure {
            Some(why) => tracing::warn!(%why, "health check failed"),
            None => tracing::debug!("health check passed"),
        }
        let failed = failure.is_some();
        let Some(update) = state.on_result(failure.map_or(Ok(()), Err), Instant::now()) else {
            if failed {
                tracing::info!("ignoring the failure: the health check is still in its grace period");
            }
            return;
        };
        let (healthy, kill) = match &update {
            HealthUpdate::Healthy => (true, None),
            HealthUpdate::Unhealthy { consecutive, kill, message } => {
                (false, kill.then(|| format!("killed after {consecutive} consecutive failed health checks: {message}")))
            }
        };
        tracing::info!(healthy, "task health changed");
        self.send_copy(task_status::Reason::TaskHealthCheckStatusUpdated, |s| s.healthy = Some(healthy));
        if let Some(why) = kill {
            tracing::warn!(%why, "killing the task");
            self.killed_by_health_check = Some(why);
            let grace = self.kill_grace(None);
            self.kill(grace).await;
        }
    }

    /// A check result: a TASK_RUNNING update with the new `check_status`
    /// when it differs from the last one reported (as Mesos).
    fn on_check_outcome(&mut self, outcome: ProbeOutcome) {
        if self.killing.is_some() || !matches!(self.container, Container::Running(_)) {
            return;
        }
        let Some(check) = self.task.as_ref().and_then(|t| t.check.clone()) else { return };
        let Some((_, last)) = self.check.as_mut() else { return };
        if let ProbeOutcome::Failed(why) = &outcome {
            tracing::warn!(%why, "check could not be done");
        }
        let status = crate::checks::check_status(&check, &outcome);
        if &status == last {
            return;
        }
        *last = status.clone();
        tracing::info!(check_status = ?status, "check status changed");
        self.send_copy(task_status::Reason::TaskCheckStatusUpdated, |s| s.check_status = Some(status));
    }

    /// A copy of the latest update with a fresh uuid and time, `reason`,
    /// and what `fill` changes.
    fn send_copy(&mut self, reason: task_status::Reason, fill: impl FnOnce(&mut TaskStatus)) {
        let Some(mut status) = self.last_status.clone() else { return };
        status.uuid = Some(mezzo_proto::new_uuid());
        status.timestamp = Some(crate::status::now_seconds());
        status.reason = Some(reason as i32);
        fill(&mut status);
        self.send_status(status);
    }

    /// Leaves nothing running behind when the executor gives up.
    async fn force_kill(&mut self) {
        if let Container::Running(launcher) = &mut self.container {
            tracing::warn!("killing the task's container before exiting");
            if let Err(e) = launcher.signal(libc::SIGKILL).await {
                tracing::warn!(error = %e, "failed to send SIGKILL");
            }
            match tokio::time::timeout(FORCED_KILL_WAIT, launcher.wait()).await {
                Ok(Ok(status)) => tracing::info!(%status, "container ended"),
                Ok(Err(e)) => tracing::warn!(error = %e, "failed to wait for the container"),
                Err(_) => tracing::warn!("container did not end within {FORCED_KILL_WAIT:?} of SIGKILL"),
            }
            self.container = Container::Ended;
        }
    }
}

/// The `TaskStatus.Reason` of a limitation.
fn limitation_reason(limitation: &Limitation) -> task_status::Reason {
    match limitation.reason {
        LimitationReason::Memory => task_status::Reason::ContainerLimitationMemory,
        LimitationReason::Disk => task_status::Reason::ContainerLimitationDisk,
        LimitationReason::Generic => task_status::Reason::ContainerLimitation,
    }
}

/// Posts calls one at a time, in order; failures are only logged because
/// unacknowledged updates are resent anyway.
fn spawn_sender(api: AgentApi) -> mpsc::UnboundedSender<Call> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Call>();
    tokio::spawn(async move {
        while let Some(call) = rx.recv().await {
            let state = call.update.as_ref().map(|u| u.status.state());
            match api.send(&call).await {
                Ok(()) => tracing::debug!(?state, "update accepted"),
                Err(e) => tracing::warn!(?state, error = %e, "failed to send update"),
            }
        }
    });
    tx
}

/// Waits for the running container; pending forever when none runs.
async fn wait_container(container: &mut Container) -> Result<ExitStatus, mezzo_containerizer::ContainerizerError> {
    match container {
        // Dropping this future (when another branch wins) and calling wait
        // again later is how the executor signals the container meanwhile.
        Container::Running(launcher) => launcher.wait().await,
        _ => std::future::pending().await,
    }
}

/// The next outcome of a running check; pending forever when none runs.
async fn next_outcome(check: Option<&mut RunningCheck>) -> Option<ProbeOutcome> {
    match check {
        Some(check) => check.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn recv_signal(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}
