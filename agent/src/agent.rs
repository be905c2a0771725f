//! The agent's core: frameworks, executors and their tasks, launch and kill.

use crate::checkpoint::Meta;
use crate::containers::Containers;
use crate::executor::{command_executor_info, event, Executor, ExecutorKind, ExecutorState, Task};
use crate::flags::{format_duration, Flags};
use crate::paths;
use crate::process::ExecutorProcess;
use crate::runner::RunnerCommand;
use crate::status_update_manager::{Forward, StatusUpdateManager, MIN_RETRY};
use anyhow::Context;
use mezzo_containerizer::{ContainerConfig, Containerizer, Limitation, LimitationReason};
use mezzo_proto::mesos::v1::executor::event::Type as EventType;
use mezzo_proto::mesos::v1::executor::{self as executor_api};
use mezzo_proto::mesos::v1::{
    framework_info, task_status, AgentId, AgentInfo, ContainerId, ContainerStatus, ExecutorId, FrameworkId, FrameworkInfo, KillPolicy, Resource,
    TaskId, TaskInfo, TaskResourceLimitation, TaskState, TaskStatus,
};
use std::collections::HashMap;
use std::future::IntoFuture;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// The `REASON_CONTAINER_LIMITATION*` reasons.
pub fn is_limitation_reason(reason: task_status::Reason) -> bool {
    matches!(
        reason,
        task_status::Reason::ContainerLimitation
            | task_status::Reason::ContainerLimitationMemory
            | task_status::Reason::ContainerLimitationDisk
    )
}

/// Whether a framework asked for `PARTITION_AWARE` (TASK_GONE instead of TASK_LOST).
pub fn partition_aware(info: &FrameworkInfo) -> bool {
    info.capabilities.iter().any(|c| c.r#type() == framework_info::capability::Type::PartitionAware)
}

/// Mutable state of the agent.
#[derive(Default)]
pub struct State {
    pub frameworks: HashMap<String, FrameworkInfo>,
    /// Keyed by (framework id, executor id).
    pub executors: HashMap<(String, String), Executor>,
    /// Executors that ended, newest last (kept for `/state`).
    pub completed: Vec<Executor>,
}

/// The agent.
pub struct Agent {
    /// This agent, for the background work its methods start.
    pub me: Weak<Agent>,
    pub flags: Flags,
    pub work_dir: PathBuf,
    pub launcher_dir: PathBuf,
    pub containerizer: Arc<dyn Containers>,
    pub resources: Vec<Resource>,
    pub hostname: String,
    pub agent_id: RwLock<Option<String>>,
    pub state: Mutex<State>,
    pub updates: Arc<StatusUpdateManager>,
    pub http: reqwest::Client,
    pub shutdown_grace: Duration,
    pub registration_timeout: Duration,
    /// Signalled once the master assigned an id.
    pub registered: Notify,
    /// The master marked this agent gone: shut down (as on SIGUSR1).
    pub shutdown_requested: Notify,
    /// A master recovered its registry: ping (and re-register) now.
    pub ping_now: Notify,
    /// Checkpoints under `<work_dir>/meta`.
    pub meta: Meta,
    /// After an agent restart, how long recovered executors have to subscribe again.
    pub reregistration_timeout: Duration,
    /// Given to checkpointing executors as `MESOS_RECOVERY_TIMEOUT`.
    pub recovery_timeout: Duration,
    /// Root of the containers' runtime directories.
    pub runtime_root: PathBuf,
    /// The secrets of the link to the master.
    pub session: crate::master_link::Session,
    /// Signs and checks the executors' tokens.
    pub executor_auth: crate::executor_auth::ExecutorAuth,
    /// Basic authentication of the operator endpoints.
    pub http_auth: crate::http_auth::HttpAuth,
    /// Fetches `CommandInfo.uris` into sandboxes before launches.
    pub fetcher: crate::fetcher::Fetcher,
    /// Removes the sandboxes and meta directories of ended runs.
    pub gc: crate::gc::Gc,
}

/// On exit (SIGTERM): the bound on destroying the containers of
/// non-checkpointing frameworks, and on reporting one of their tasks lost.
const EXIT_DESTROY_TIMEOUT: Duration = Duration::from_secs(10);
const EXIT_UPDATE_TIMEOUT: Duration = Duration::from_secs(2);

/// How the agent was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM or SIGINT: exit at once and leave recoverable executors
    /// running for the next agent (Mesos's agent exiting on SIGTERM).
    Leave(&'static str),
    /// SIGUSR1: kill every executor and destroy every container, then exit
    /// (Mesos's agent shutting down on SIGUSR1).
    Shutdown,
}

/// Waits for SIGTERM, SIGINT or SIGUSR1.
async fn stop_signal() -> anyhow::Result<Stop> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("install a SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install a SIGINT handler")?;
    let mut usr1 = signal(SignalKind::user_defined1()).context("install a SIGUSR1 handler")?;
    Ok(tokio::select! {
        _ = term.recv() => Stop::Leave("SIGTERM"),
        _ = int.recv() => Stop::Leave("SIGINT"),
        _ = usr1.recv() => Stop::Shutdown,
    })
}

/// Runs the agent until the process is stopped.
pub async fn run(flags: Flags) -> anyhow::Result<()> {
    // Before anything touches the work dir or the cgroups: this agent must
    // be their only owner (held until the process exits).
    let _ownership = crate::ownership::acquire(&flags)?;
    let listener = tokio::net::TcpListener::bind((flags.ip.as_str(), flags.port))
        .await
        .with_context(|| format!("failed to listen on {}:{}", flags.ip, flags.port))?;
    let agent = Agent::new(flags).await?;
    if !agent.recover().await? {
        tracing::info!("--recover=cleanup: every executor of the earlier run is gone; exiting");
        agent.remove_cgroups_root();
        return Ok(());
    }
    tokio::spawn(crate::gc::Gc::run(agent.clone()));
    tokio::spawn(crate::master_link::register_and_ping(agent.clone()));
    let app = crate::http::router(agent.clone());
    tracing::info!(address = %listener.local_addr()?, "agent listening");
    // Not a graceful shutdown of the server: executors' SUBSCRIBE streams
    // never end by themselves, and waiting for them hung the agent.
    let stop = tokio::select! {
        served = axum::serve(no_delay(listener), app).into_future() => {
            served?;
            return Ok(());
        }
        stop = stop_signal() => stop?,
        () = agent.shutdown_requested.notified() => Stop::Shutdown,
    };
    match stop {
        Stop::Leave(signal) => agent.leave(signal).await,
        Stop::Shutdown => {
            tracing::info!("shutting down (SIGUSR1, or the master marked this agent gone): killing every executor and destroying every container");
            agent.shutdown_all().await;
        }
    }
    Ok(())
}

impl Agent {
    /// Builds the agent and its containerizer from flags.
    pub async fn new(flags: Flags) -> anyhow::Result<Arc<Agent>> {
        let work_dir = flags.work_dir.clone();
        std::fs::create_dir_all(&work_dir).with_context(|| format!("create --work_dir {}", work_dir.display()))?;
        let work_dir = work_dir.canonicalize()?;
        let launcher_dir = match &flags.launcher_dir {
            Some(d) => d.clone(),
            None => std::env::current_exe()?.parent().context("agent binary has no directory")?.to_path_buf(),
        };
        let runtime_dir = flags.runtime_dir.clone().unwrap_or_else(|| work_dir.join("run"));
        let runtime_root = runtime_dir.join("containers");
        std::fs::create_dir_all(&runtime_root)?;
        let store_dir = flags.docker_store_dir.clone().unwrap_or_else(|| work_dir.join("store").join("docker"));
        let backends = crate::backends::build_backends(&flags, &work_dir, &runtime_root, &store_dir, &launcher_dir).await?;
        let containerizer: Arc<dyn Containers> = Arc::new(Containerizer::new(backends, runtime_root.clone()).with_log_rotation(flags.log_rotation()));
        Agent::assemble(flags, work_dir, launcher_dir, runtime_root, containerizer, None)
    }

    /// Builds the agent around `containerizer`. Status updates go to the
    /// master, or to `forward` when given (the agent core's unit tests).
    pub fn assemble(
        flags: Flags,
        work_dir: PathBuf,
        launcher_dir: PathBuf,
        runtime_root: PathBuf,
        containerizer: Arc<dyn Containers>,
        forward: Option<Forward>,
    ) -> anyhow::Result<Arc<Agent>> {
        let resources = crate::resources::parse(flags.resources.as_deref())?;
        let hostname = flags.hostname.clone().unwrap_or_else(|| {
            nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| flags.ip.clone())
        });
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        let shutdown_grace = flags.executor_shutdown_grace_period;
        let registration_timeout = flags.executor_registration_timeout;
        let reregistration_timeout = flags.executor_reregistration_timeout;
        let recovery_timeout = flags.recovery_timeout;
        let meta = Meta::new(&work_dir);
        let leader = crate::master_link::MasterLocator::new(&flags.master, flags.zk_session_timeout)?;
        let session = crate::master_link::Session::load(&work_dir, leader)?;
        let executor_auth = crate::executor_auth::ExecutorAuth::load(
            flags.jwt_secret_key.as_deref(),
            &work_dir.join("meta"),
            flags.authenticate_http_executors,
        )
        .context("invalid --jwt_secret_key")?;
        let http_auth = crate::http_auth::HttpAuth::new(
            flags.authenticate_http_readonly,
            flags.authenticate_http_readwrite,
            flags.http_credentials.as_deref(),
        )?;
        let fetcher = crate::fetcher::Fetcher::new(&crate::fetcher::FetcherOptions {
            cache_dir: flags.fetcher_cache_dir.clone().unwrap_or_else(|| work_dir.join("fetch")),
            cache_size: flags.fetcher_cache_size,
            stall_timeout: flags.fetcher_stall_timeout,
            ca_file: flags.fetcher_ca_file.clone(),
        })
        .map_err(anyhow::Error::msg)?;
        let agent = Arc::new_cyclic(|weak: &std::sync::Weak<Agent>| {
            let weak_me = weak.clone();
            let weak = weak.clone();
            let forward: Forward = forward.unwrap_or_else(|| Arc::new(move |fid, status| {
                let weak = weak.clone();
                Box::pin(async move {
                    match weak.upgrade() {
                        Some(agent) => agent.send_status_to_master(fid, status).await,
                        None => Err("agent is shutting down".to_string()),
                    }
                })
            }));
            Agent {
                me: weak_me,
                flags: flags.clone(),
                work_dir,
                launcher_dir,
                containerizer,
                resources,
                hostname,
                agent_id: RwLock::new(None),
                state: Mutex::new(State::default()),
                updates: StatusUpdateManager::new(forward, MIN_RETRY),
                http,
                shutdown_grace,
                registration_timeout,
                registered: Notify::new(),
                shutdown_requested: Notify::new(),
                ping_now: Notify::new(),
                meta,
                reregistration_timeout,
                recovery_timeout,
                runtime_root,
                session,
                executor_auth,
                http_auth,
                fetcher,
                gc: crate::gc::Gc::new(flags.gc_delay, flags.gc_disk_headroom, flags.disk_watch_interval),
            }
        });
        Ok(agent)
    }

    /// The id the master gave this agent (empty before registration).
    pub fn id(&self) -> String {
        self.agent_id.read().unwrap().clone().unwrap_or_default()
    }

    /// `ip:port` of this agent's HTTP API.
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.flags.ip, self.flags.port)
    }

    /// What the agent tells the master and executors about itself.
    pub fn info(&self) -> AgentInfo {
        let id = self.agent_id.read().unwrap().clone();
        AgentInfo {
            hostname: self.hostname.clone(),
            port: Some(self.flags.port as i32),
            resources: self.resources.clone(),
            id: id.map(|value| AgentId { value }),
            ..Default::default()
        }
    }

    /// Takes the id the master gave this agent, checkpointing it when it is new.
    pub fn set_agent_id(&self, id: &str) {
        let changed = {
            let mut ids = self.agent_id.write().unwrap();
            let changed = ids.as_deref() != Some(id);
            *ids = Some(id.to_string());
            changed
        };
        if changed {
            if let Err(e) = self.meta.checkpoint_agent(&self.info()) {
                tracing::error!(error = %e, "failed to checkpoint the agent's info");
            }
        }
    }

    /// Handles RUN_TASK from the master. A command task gets a command
    /// executor of its own (executor id = task id); a task that names an
    /// `ExecutorInfo` goes to that executor, which is launched first when it
    /// does not run yet, and is queued until it has subscribed.
    pub fn run_task(self: &Arc<Self>, framework_info: FrameworkInfo, task: TaskInfo) {
        let framework_id = framework_info.id.clone().map(|f| f.value).unwrap_or_default();
        let task_id = task.task_id.value.clone();
        let (mut info, kind) = match &task.executor {
            Some(info) => (info.clone(), ExecutorKind::Custom),
            None => (command_executor_info(&framework_info, &task), ExecutorKind::Command),
        };
        info.framework_id = Some(FrameworkId { value: framework_id.clone() });
        let executor_id = info.executor_id.value.clone();
        let fail = |msg: String, reason: task_status::Reason| {
            let status = self.agent_status(&task_id, &executor_id, "", TaskState::TaskFailed, reason, msg);
            self.updates.update(FrameworkId { value: framework_id.clone() }, status);
        };
        if !paths::safe_component(&framework_id) || !paths::safe_component(&task_id) || !paths::safe_component(&executor_id) {
            fail("invalid framework, executor or task id".to_string(), task_status::Reason::TaskInvalid);
            return;
        }
        if task.command.is_some() == task.executor.is_some() {
            fail("Task should have at least one (but not both) of CommandInfo or ExecutorInfo present".to_string(), task_status::Reason::TaskInvalid);
            return;
        }
        // The master may send a task before our registration response was
        // processed; the task names the id the master gave us.
        let current = self.agent_id.read().unwrap().clone();
        let agent_id = match current {
            Some(id) => id,
            None => {
                self.set_agent_id(&task.agent_id.value);
                task.agent_id.value.clone()
            }
        };
        if agent_id != task.agent_id.value || !paths::safe_component(&agent_id) {
            fail(format!("task is for agent '{}', this is '{agent_id}'", task.agent_id.value), task_status::Reason::TaskInvalid);
            return;
        }
        let key = (framework_id.clone(), executor_id.clone());
        let checkpoint = framework_info.checkpoint.unwrap_or(false);
        let mut state = self.state.lock().unwrap();
        state.frameworks.insert(framework_id.clone(), framework_info.clone());
        if let Some(ex) = state.executors.get_mut(&key) {
            let refusal = match (kind, ex.state) {
                (ExecutorKind::Command, _) => Some((format!("task '{task_id}' is already running on this agent"), task_status::Reason::TaskInvalid)),
                _ if ex.task(&task_id).is_some() => Some((format!("task '{task_id}' is already running on this agent"), task_status::Reason::TaskInvalid)),
                (_, ExecutorState::Terminating | ExecutorState::Terminated) => Some((
                    format!("Executor '{executor_id}' is terminating; task '{task_id}' cannot be launched on it"),
                    task_status::Reason::ContainerLaunchFailed,
                )),
                _ => None,
            };
            if let Some((message, reason)) = refusal {
                drop(state);
                fail(message, reason);
                return;
            }
            if checkpoint {
                if let Err(e) = self.meta.checkpoint_task(&agent_id, &framework_id, &executor_id, &ex.container_id, &task) {
                    tracing::error!(task = %task_id, error = %e, "failed to checkpoint the task");
                }
            }
            tracing::info!(task = %task_id, executor = %executor_id, "queueing a task for a running executor");
            ex.tasks.push(Task::new(task));
            // A registering executor's container may not exist yet: it is
            // sized for all its queued tasks when the executor subscribes.
            let subscribed = ex.state == ExecutorState::Running;
            drop(state);
            if subscribed {
                self.clone().grow_and_deliver(key);
            }
            return;
        }
        let container_id = uuid::Uuid::new_v4().to_string();
        let sandbox = paths::sandbox_dir(&self.work_dir, &agent_id, &framework_id, &executor_id, &container_id);
        let executor = Executor::new(framework_id.clone(), container_id.clone(), sandbox.clone(), info.clone(), kind, task.clone(), checkpoint);
        if checkpoint {
            // Before anything runs: a restarted agent must know this container.
            let written = self
                .meta
                .checkpoint_framework(&agent_id, &framework_info)
                .and_then(|()| self.meta.checkpoint_executor(&agent_id, &info, &container_id, &task));
            if let Err(e) = written {
                tracing::error!(task = %task_id, error = %e, "failed to checkpoint the executor");
            }
        }
        state.executors.insert(key.clone(), executor);
        drop(state);
        let agent = self.clone();
        tokio::spawn(async move {
            agent.launch(framework_info, task, key, container_id, sandbox).await;
        });
    }

    /// The container grows to hold the executor's queued tasks, then they go
    /// to the executor (Mesos updates the container before it sends tasks).
    pub fn grow_and_deliver(self: Arc<Self>, key: (String, String)) {
        let custom = self.state.lock().unwrap().executors.get(&key).is_some_and(|e| e.kind == ExecutorKind::Custom);
        if !custom {
            // A command executor's container is its task's, sized at launch.
            self.deliver_queued(&key);
            return;
        }
        tokio::spawn(async move {
            self.update_container(&key).await;
            self.deliver_queued(&key);
        });
    }

    /// Sends the executor the tasks that wait for it, in order, when it is
    /// subscribed (the rest wait for its SUBSCRIBE). A task killed before it
    /// was sent ends here, TASK_KILLED.
    pub fn deliver_queued(&self, key: &(String, String)) {
        let mut killed = Vec::new();
        {
            let mut state = self.state.lock().unwrap();
            let Some(ex) = state.executors.get_mut(key) else { return };
            if ex.state != ExecutorState::Running || ex.stream.is_none() {
                return;
            }
            let Executor { tasks, stream, .. } = ex;
            for task in tasks.iter_mut().filter(|t| !t.launched && !t.state.is_terminal()) {
                task.launched = true;
                if task.kill_requested {
                    killed.push(task.id().to_string());
                    continue;
                }
                let launch = executor_api::Event {
                    r#type: Some(EventType::Launch as i32),
                    launch: Some(executor_api::event::Launch { task: task.info.clone() }),
                    ..Default::default()
                };
                if let Some(stream) = stream {
                    let _ = stream.send(launch);
                }
            }
        }
        for task_id in killed {
            self.end_task(key, &task_id, TaskState::TaskKilled, task_status::Reason::TaskKilledDuringLaunch, "task killed before it was delivered to the executor");
        }
    }

    /// Gives a custom executor's container what its executor and its live
    /// tasks need (Mesos's `containerizer->update` on task launch and end).
    /// A failed update ends the executor's live tasks as Mesos does
    /// (TASK_GONE, or TASK_LOST when not partition-aware,
    /// `REASON_CONTAINER_UPDATE_FAILED`).
    pub async fn update_container(&self, key: &(String, String)) {
        let (container_id, resources) = {
            let state = self.state.lock().unwrap();
            let Some(ex) = state.executors.get(key).filter(|ex| ex.kind == ExecutorKind::Custom && ex.state != ExecutorState::Terminated) else {
                return;
            };
            let resources = match crate::translate::resources(&ex.allocated()) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(executor = %key.1, error = %e, "cannot compute the container's resources");
                    return;
                }
            };
            // Already its size (a new executor's tasks were all there at prepare).
            if ex.sized_for.as_ref() == Some(&resources) {
                return;
            }
            (ex.container_id.clone(), resources)
        };
        match self.containerizer.update(&container_id, &resources, &Default::default()).await {
            Ok(()) => {
                tracing::debug!(executor = %key.1, cpus = ?resources.cpus, mem_mb = ?resources.mem_mb, "container updated");
                if let Some(ex) = self.state.lock().unwrap().executors.get_mut(key) {
                    ex.sized_for = Some(resources);
                }
            }
            Err(e) => {
                tracing::warn!(executor = %key.1, error = %e, "container update failed; ending the executor's tasks");
                let (state, live): (TaskState, Vec<String>) = {
                    let guard = self.state.lock().unwrap();
                    let aware = guard.frameworks.get(&key.0).map(partition_aware).unwrap_or(false);
                    let live = guard.executors.get(key).map(|ex| ex.live_tasks().map(|t| t.id().to_string()).collect()).unwrap_or_default();
                    (if aware { TaskState::TaskGone } else { TaskState::TaskLost }, live)
                };
                for task_id in live {
                    self.end_task(key, &task_id, state, task_status::Reason::ContainerUpdateFailed, &format!("Failed to update the container: {e}"));
                }
                self.shutdown_executor(&key.0, &key.1);
            }
        }
    }

    /// The agent ends one task itself (the executor does not have it).
    fn end_task(&self, key: &(String, String), task_id: &str, state: TaskState, reason: task_status::Reason, message: &str) {
        let status = {
            let guard = self.state.lock().unwrap();
            let Some(ex) = guard.executors.get(key) else { return };
            if ex.task(task_id).is_none_or(|t| t.state.is_terminal()) {
                return;
            }
            self.executor_status(ex, task_id, state, reason, message.to_string())
        };
        self.record_and_forward(key, status);
    }

    async fn launch(self: Arc<Self>, framework_info: FrameworkInfo, task: TaskInfo, key: (String, String), container_id: String, sandbox: PathBuf) {
        let task_id = task.task_id.value.clone();
        if let Err(e) = create_sandbox(&sandbox) {
            self.terminate_without_executor(&key, TaskState::TaskFailed, task_status::Reason::ContainerLaunchFailed, format!("failed to create sandbox: {e}")).await;
            return;
        }
        let (kind, allocated, info) = {
            let state = self.state.lock().unwrap();
            match state.executors.get(&key) {
                Some(ex) => (ex.kind, ex.allocated(), ex.info.clone()),
                None => return,
            }
        };
        let allocated_at_prepare = allocated.clone();
        let role = allocation_role(&framework_info, &allocated_at_prepare);
        let config = match kind {
            ExecutorKind::Command => self.container_config(&framework_info, &task, &key.1, &role, &container_id, &sandbox),
            ExecutorKind::Custom => self.executor_container_config(&framework_info, &info, allocated, &role, &container_id, &sandbox),
        };
        let prepared = match config {
            Ok(config) => self.containerizer.prepare(&config).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        let runtime_dir = match prepared {
            Ok(dir) => {
                if let (ExecutorKind::Custom, Ok(resources)) = (kind, crate::translate::resources(&allocated_at_prepare)) {
                    if let Some(ex) = self.state.lock().unwrap().executors.get_mut(&key) {
                        ex.sized_for = Some(resources);
                    }
                }
                dir
            }
            Err(e) => {
                tracing::warn!(task = %task_id, error = %e, "container launch failed");
                self.terminate_without_executor(&key, TaskState::TaskFailed, task_status::Reason::ContainerLaunchFailed, e).await;
                return;
            }
        };
        // Mesos's FETCHING: the URIs go into the sandbox before anything runs;
        // a failed fetch fails the launch, never the task's command.
        let uris = match kind {
            ExecutorKind::Command => task.command.as_ref().map(|c| c.uris.clone()).unwrap_or_default(),
            ExecutorKind::Custom => info.command.as_ref().map(|c| c.uris.clone()).unwrap_or_default(),
        };
        if !uris.is_empty() {
            let disk = crate::translate::resources(&allocated_at_prepare).ok().and_then(|r| r.disk_mb).map(|mb| (mb * 1024.0 * 1024.0) as u64);
            // A kill while fetching ends the fetch (Mesos destroys the container while FETCHING).
            let killed = async {
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if self.state.lock().unwrap().executors.get(&key).is_none_or(|e| e.tasks.iter().all(|t| t.kill_requested)) {
                        return;
                    }
                }
            };
            let fetched = tokio::select! {
                r = self.fetcher.fetch(&uris, &sandbox, disk) => r,
                () = killed => {
                    let msg = "task killed while its URIs were being fetched".to_string();
                    self.terminate_without_executor(&key, TaskState::TaskKilled, task_status::Reason::TaskKilledDuringLaunch, msg).await;
                    return;
                }
            };
            if let Err(e) = fetched {
                tracing::warn!(task = %task_id, error = %e, "fetch failed; the launch fails");
                self.terminate_without_executor(&key, TaskState::TaskFailed, task_status::Reason::ContainerLaunchFailed, e.to_string()).await;
                return;
            }
        }
        let all_killed = self.state.lock().unwrap().executors.get(&key).is_none_or(|e| e.tasks.iter().all(|t| t.kill_requested));
        if all_killed {
            self.terminate_without_executor(&key, TaskState::TaskKilled, task_status::Reason::TaskKilledDuringLaunch, "task killed before it started".to_string()).await;
            return;
        }
        let child = match self.spawn_executor(&framework_info, kind, &key.1, &role, &container_id, &sandbox, runtime_dir.path()) {
            Ok(child) => child,
            Err(e) => {
                self.terminate_without_executor(&key, TaskState::TaskFailed, task_status::Reason::ContainerLaunchFailed, format!("failed to start executor: {e:#}")).await;
                return;
            }
        };
        let pid = child.id().map(|p| p as i32);
        let (tx, rx) = mpsc::unbounded_channel();
        let checkpoint = {
            let mut state = self.state.lock().unwrap();
            match state.executors.get_mut(&key) {
                Some(ex) => {
                    ex.pid = pid;
                    ex.runner = Some(tx);
                    ex.checkpoint
                }
                None => false,
            }
        };
        if let (true, Some(pid)) = (checkpoint, pid) {
            if let Err(e) = self.meta.checkpoint_pid(&self.id(), &key.0, &key.1, &container_id, pid) {
                tracing::error!(task = %task_id, error = %e, "failed to checkpoint the executor's pid");
            }
        }
        self.clone().watch_limitations(key.clone());
        let within = self.registration_timeout;
        self.run_executor(key, ExecutorProcess::Child(child), rx, within).await;
    }

    /// Watches the container for a limitation (an OOM, a disk quota) until
    /// the executor is finished; one ends the task.
    pub fn watch_limitations(self: Arc<Self>, key: (String, String)) {
        let Some((container_id, done)) =
            self.state.lock().unwrap().executors.get(&key).map(|e| (e.container_id.clone(), e.done.clone()))
        else {
            return;
        };
        tokio::spawn(async move {
            tracing::debug!(container = %container_id, "watching the container for limitations");
            let watched = tokio::select! {
                r = self.containerizer.watch(&container_id) => r,
                _ = done.cancelled() => return,
            };
            match watched {
                Ok(limitation) => self.on_limitation(&key, limitation),
                Err(e) => tracing::warn!(container = %container_id, error = %e, "cannot watch the container for limitations"),
            }
        });
    }

    /// A limitation ended the container: the executor is killed at once (it
    /// must not report the task's end as its own failure), and its exit
    /// reports TASK_FAILED with the limitation for each of its live tasks.
    fn on_limitation(&self, key: &(String, String), limitation: Limitation) {
        let mut state = self.state.lock().unwrap();
        let Some(ex) = state.executors.get_mut(key) else { return };
        tracing::warn!(executor = %ex.executor_id, reason = ?limitation.reason, message = %limitation.message, "container limitation; killing the executor");
        ex.limitation = Some(limitation);
        ex.state = ExecutorState::Terminating;
        match &ex.runner {
            Some(_) => ex.tell(RunnerCommand::Kill),
            None => kill_executor(ex.pid),
        }
    }

    /// An executor reported its task ended by a limitation its launcher
    /// read from the runtime (the supervisor's record of an OOM kill,
    /// docker's `OOMKilled`): the agent adopts it as the container's
    /// limitation and reports it itself, as Mesos's containerizer does, so
    /// that a limitation always reaches the framework the same way.
    pub fn adopt_executor_limitation(&self, key: &(String, String), status: &TaskStatus) -> bool {
        let reason = match status.reason() {
            task_status::Reason::ContainerLimitationMemory => LimitationReason::Memory,
            task_status::Reason::ContainerLimitationDisk => LimitationReason::Disk,
            task_status::Reason::ContainerLimitation => LimitationReason::Generic,
            _ => return false,
        };
        if status.state() != TaskState::TaskFailed {
            return false;
        }
        let limited = {
            let mut state = self.state.lock().unwrap();
            let Some(ex) = state.executors.get_mut(key) else { return false };
            let Some(task) = ex.task(&status.task_id.value) else { return false };
            let limitation = Limitation {
                reason,
                resources: status.limitation.iter().flat_map(|l| l.resources.iter().map(|r| r.name.clone())).collect(),
                message: status.message.clone().unwrap_or_default(),
            };
            let limited = self.limitation_status(ex, task, &limitation);
            ex.limitation = Some(limitation);
            limited
        };
        self.record_and_forward(key, limited);
        true
    }

    /// The agent's TASK_FAILED for a limitation.
    pub fn limitation_status(&self, ex: &Executor, task: &Task, limitation: &Limitation) -> TaskStatus {
        let reason = match limitation.reason {
            LimitationReason::Memory => task_status::Reason::ContainerLimitationMemory,
            LimitationReason::Disk => task_status::Reason::ContainerLimitationDisk,
            LimitationReason::Generic => task_status::Reason::ContainerLimitation,
        };
        let mut status = self.executor_status(ex, task.id(), TaskState::TaskFailed, reason, limitation.message.clone());
        let resources = limitation
            .resources
            .iter()
            .map(|name| {
                task.info
                    .resources
                    .iter()
                    .find(|r| &r.name == name)
                    .cloned()
                    .unwrap_or_else(|| crate::resources::scalar(name, 0.0))
            })
            .collect();
        status.limitation = Some(TaskResourceLimitation { resources });
        status
    }

    /// Ends the tasks of an executor that never started (prepare failed or
    /// every task was killed early).
    async fn terminate_without_executor(&self, key: &(String, String), state: TaskState, reason: task_status::Reason, message: String) {
        let (container_id, statuses): (String, Vec<TaskStatus>) = {
            let mut guard = self.state.lock().unwrap();
            let Some(ex) = guard.executors.get_mut(key) else { return };
            ex.state = ExecutorState::Terminating;
            (ex.container_id.clone(), ex.live_tasks().map(|t| self.executor_status(ex, t.id(), state, reason, message.clone())).collect())
        };
        if let Err(e) = self.containerizer.destroy(&container_id).await {
            tracing::error!(container = %container_id, error = %e, "failed to destroy container");
        }
        for status in statuses {
            self.record_and_forward(key, status);
        }
        self.finish_executor(key);
    }

    /// Moves a finished executor to the completed ones.
    pub fn finish_executor(&self, key: &(String, String)) {
        let mut state = self.state.lock().unwrap();
        if let Some(mut ex) = state.executors.remove(key) {
            let run = (ex.framework_id.clone(), ex.executor_id.clone(), ex.container_id.clone());
            ex.done.cancel();
            // A framework that was shut down has no checkpoints left to update.
            if ex.checkpoint && state.frameworks.contains_key(&ex.framework_id) {
                if let Err(e) = self.meta.mark_completed(&self.id(), &ex.framework_id, &ex.executor_id, &ex.container_id) {
                    tracing::error!(executor = %ex.executor_id, error = %e, "failed to checkpoint the executor's end");
                }
            }
            ex.state = ExecutorState::Terminated;
            ex.stream = None;
            ex.runner = None;
            state.completed.push(ex);
            let excess = state.completed.len().saturating_sub(150);
            state.completed.drain(..excess);
            drop(state);
            self.schedule_gc(&run.0, &run.1, &run.2);
        }
    }

    /// Records the task's new state and queues the update for the master.
    /// A command executor whose task ended gets a while to exit; a custom
    /// executor's container shrinks to what its live tasks need.
    pub fn record_and_forward(&self, key: &(String, String), status: TaskStatus) {
        let (checkpoint, shrink) = {
            let mut state = self.state.lock().unwrap();
            let known = state.frameworks.contains_key(&key.0);
            let aid = self.id();
            match state.executors.get_mut(key) {
                Some(ex) => {
                    let terminal = status.state().is_terminal();
                    let mut newly_terminal = false;
                    if let Some(task) = ex.task_mut(&status.task_id.value) {
                        newly_terminal = terminal && !task.state.is_terminal();
                        task.state = status.state();
                    }
                    if newly_terminal && ex.kind == ExecutorKind::Command {
                        ex.tell(RunnerCommand::TasksTerminal);
                    }
                    let path = (ex.checkpoint && known)
                        .then(|| self.meta.task_updates_path(&aid, &ex.framework_id, &ex.executor_id, &ex.container_id, &status.task_id.value));
                    (path, newly_terminal && ex.kind == ExecutorKind::Custom && ex.state == ExecutorState::Running)
                }
                None => (None, false),
            }
        };
        self.updates.update_checkpointed(FrameworkId { value: key.0.clone() }, status, checkpoint);
        if shrink {
            if let Some(agent) = self.me.upgrade() {
                let key = key.clone();
                tokio::spawn(async move { agent.update_container(&key).await });
            }
        }
    }

    /// Whether a limitation the agent saw ended the executor's container: the
    /// executor's TASK_FAILED is then dropped (the agent's own TASK_FAILED
    /// with the limitation goes instead).
    ///
    /// Nothing is waited for: a memory limitation never races the exit.
    /// Both backends record an OOM kill before the task's end is known (the
    /// rust supervisor reads the memory cgroup's `oom_kill` counter after
    /// reaping the container's init and before it writes the exit status;
    /// docker's `OOMKilled` comes with the engine's exit code), so the
    /// executor's update already carries the limitation when there was one.
    pub fn limitation_ended(&self, key: &(String, String)) -> bool {
        self.state.lock().unwrap().executors.get(key).is_some_and(|ex| ex.limitation.is_some())
    }

    /// A status update generated by the agent itself for a task of `ex`.
    pub fn executor_status(&self, ex: &Executor, task_id: &str, state: TaskState, reason: task_status::Reason, message: String) -> TaskStatus {
        self.agent_status(task_id, &ex.executor_id, &ex.container_id, state, reason, message)
    }

    /// A status update generated by the agent itself.
    pub fn agent_status(&self, task_id: &str, executor_id: &str, container_id: &str, state: TaskState, reason: task_status::Reason, message: String) -> TaskStatus {
        let mut status = TaskStatus {
            task_id: TaskId { value: task_id.to_string() },
            message: Some(message),
            agent_id: Some(AgentId { value: self.id() }),
            executor_id: Some(ExecutorId { value: executor_id.to_string() }),
            timestamp: Some(now()),
            uuid: Some(mezzo_proto::new_uuid()),
            ..Default::default()
        };
        if !container_id.is_empty() {
            status.container_status = Some(ContainerStatus {
                container_id: Some(ContainerId { value: container_id.to_string(), parent: None }),
                ..Default::default()
            });
        }
        status.set_state(state);
        status.set_source(task_status::Source::Agent);
        status.set_reason(reason);
        status
    }

    fn labels(&self, framework: &FrameworkInfo, executor_id: &str, container_id: &str) -> std::collections::BTreeMap<String, String> {
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("mezzo.agent_id".to_string(), self.id());
        labels.insert("mezzo.framework_id".to_string(), framework.id.clone().map(|f| f.value).unwrap_or_default());
        labels.insert("mezzo.executor_id".to_string(), executor_id.to_string());
        labels.insert("mezzo.container_id".to_string(), container_id.to_string());
        labels
    }

    /// A task's container. Its environment is, as a Mesos command task's:
    /// `--executor_environment_variables`, then the variables Mesos gives
    /// executors (`MESOS_FRAMEWORK_ID`, `MESOS_ALLOCATION_ROLE`, ...), then
    /// the task's own `CommandInfo.environment`, each winning over the one before.
    fn container_config(&self, framework: &FrameworkInfo, task: &TaskInfo, executor_id: &str, role: &str, container_id: &str, sandbox: &std::path::Path) -> Result<ContainerConfig, String> {
        let labels = self.labels(framework, executor_id, container_id);
        let mut config = crate::translate::container_config(task, container_id, sandbox, labels).map_err(|e| e.to_string())?;
        config.command.user = crate::translate::task_user(task, framework, self.flags.switch_user);
        let mut env = self.flags.executor_environment_variables.as_ref().map(|e| e.0.clone()).unwrap_or_default();
        crate::translate::merge_env(&mut env, self.executor_env(framework, executor_id, role, sandbox));
        crate::translate::merge_env(&mut env, std::mem::take(&mut config.command.env));
        config.command.env = env;
        Ok(config)
    }

    /// The container of a custom executor: its command, its `ContainerInfo`,
    /// sized to `allocated` (the executor's resources plus its tasks'), with
    /// the environment Mesos gives executors.
    fn executor_container_config(
        &self,
        framework: &FrameworkInfo,
        info: &mezzo_proto::mesos::v1::ExecutorInfo,
        allocated: Vec<Resource>,
        role: &str,
        container_id: &str,
        sandbox: &std::path::Path,
    ) -> Result<ContainerConfig, String> {
        // The executor's container is made as a command task's would be.
        let as_task = TaskInfo {
            name: info.name.clone().unwrap_or_default(),
            task_id: TaskId { value: info.executor_id.value.clone() },
            command: info.command.clone(),
            container: info.container.clone(),
            resources: allocated,
            ..Default::default()
        };
        if as_task.command.is_none() {
            return Err("ExecutorInfo has no command".to_string());
        }
        let mut config = self.container_config(framework, &as_task, &info.executor_id.value, role, container_id, sandbox)?;
        let framework_id = framework.id.clone().map(|f| f.value).unwrap_or_default();
        let token = self.executor_auth.issue(&crate::executor_auth::Claims {
            fid: framework_id.clone(),
            eid: info.executor_id.value.clone(),
            cid: container_id.to_string(),
        });
        // The agent's variables win over the executor's own (as Mesos).
        let mut env: Vec<(String, String)> = self.executor_env(framework, &info.executor_id.value, role, sandbox);
        env.push(("MESOS_EXECUTOR_AUTHENTICATION_TOKEN".into(), token));
        crate::translate::merge_env(&mut config.command.env, env);
        Ok(config)
    }

    /// The environment Mesos gives every executor (`executorEnvironment`),
    /// but the token.
    fn executor_env(&self, framework: &FrameworkInfo, executor_id: &str, role: &str, sandbox: &std::path::Path) -> Vec<(String, String)> {
        let framework_id = framework.id.clone().map(|f| f.value).unwrap_or_default();
        let checkpoint = framework.checkpoint.unwrap_or(false);
        let mut env = vec![
            ("MESOS_FRAMEWORK_ID".to_string(), framework_id),
            ("MESOS_EXECUTOR_ID".to_string(), executor_id.to_string()),
            ("MESOS_DIRECTORY".to_string(), sandbox.display().to_string()),
            ("MESOS_SLAVE_ID".to_string(), self.id()),
            ("MESOS_AGENT_ID".to_string(), self.id()),
            ("MESOS_SLAVE_PID".to_string(), format!("slave(1)@{}", self.endpoint())),
            ("MESOS_AGENT_ENDPOINT".to_string(), self.endpoint()),
            ("MESOS_CHECKPOINT".to_string(), if checkpoint { "1" } else { "0" }.to_string()),
            ("MESOS_HTTP_COMMAND_EXECUTOR".to_string(), "1".to_string()),
            ("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD".to_string(), format_duration(self.shutdown_grace)),
            ("MESOS_ALLOCATION_ROLE".to_string(), role.to_string()),
        ];
        if checkpoint {
            env.push(("MESOS_RECOVERY_TIMEOUT".to_string(), format_duration(self.recovery_timeout)));
            // Retry at least twice within the agent's re-registration window.
            env.push(("MESOS_SUBSCRIPTION_BACKOFF_MAX".to_string(), format_duration((self.reregistration_timeout / 2).max(Duration::from_millis(100)))));
        }
        env
    }

    /// Starts the process the agent supervises for an executor: for a
    /// command task, mezzo-executor itself; for a custom executor,
    /// mezzo-executor in its container mode, which starts the prepared
    /// container (whose first process is the framework's executor), waits
    /// for it and records its exit. Either outlives the agent, so a
    /// restarted agent adopts it the same way.
    #[allow(clippy::too_many_arguments)]
    fn spawn_executor(
        &self,
        framework: &FrameworkInfo,
        kind: ExecutorKind,
        executor_id: &str,
        role: &str,
        container_id: &str,
        sandbox: &std::path::Path,
        runtime_dir: &std::path::Path,
    ) -> anyhow::Result<tokio::process::Child> {
        let program = self.launcher_dir.join("mezzo-executor");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(sandbox.join("executor.log"))
            .context("open executor.log")?;
        let mut cmd = tokio::process::Command::new(&program);
        cmd.current_dir(sandbox)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_else(|_| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()))
            .env("MESOS_SANDBOX", sandbox)
            .env("MEZZO_CONTAINER_ID", container_id)
            .env("MEZZO_RUNTIME_DIR", runtime_dir)
            .env("MEZZO_LAUNCHER_DIR", &self.launcher_dir)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(false);
        // `--executor_environment_variables` first (its PATH too), the agent's variables over it.
        for (k, v) in self.flags.executor_environment_variables.iter().flat_map(|e| e.0.iter()) {
            cmd.env(k, v);
        }
        for (k, v) in self.executor_env(framework, executor_id, role, sandbox) {
            cmd.env(k, v);
        }
        match kind {
            ExecutorKind::Command => {
                let token = self.executor_auth.issue(&crate::executor_auth::Claims {
                    fid: framework.id.clone().map(|f| f.value).unwrap_or_default(),
                    eid: executor_id.to_string(),
                    cid: container_id.to_string(),
                });
                cmd.env("MESOS_EXECUTOR_AUTHENTICATION_TOKEN", token);
                // Mesos gives these to checkpointing executors only; the command executor always uses them.
                cmd.env("MESOS_RECOVERY_TIMEOUT", format_duration(self.recovery_timeout));
                cmd.env("MESOS_SUBSCRIPTION_BACKOFF_MAX", format_duration((self.reregistration_timeout / 2).max(Duration::from_millis(100))));
            }
            ExecutorKind::Custom => {
                cmd.env("MEZZO_EXECUTOR_MODE", "container");
            }
        }
        if let Ok(filter) = std::env::var("RUST_LOG") {
            cmd.env("RUST_LOG", filter);
        }
        // mezzo-executor makes itself the leader of its own session (the agent
        // finds, adopts and kills executors by session): no code runs between
        // fork and exec here, so the spawn is a posix_spawn, not a fork of the agent.
        cmd.spawn().with_context(|| format!("spawn {}", program.display()))
    }

    /// Handles KILL_TASK from the master: forwarded to the executor that
    /// has the task; a task it does not have yet is ended by the agent.
    pub async fn kill_task(self: &Arc<Self>, framework_id: &str, task_id: &str, kill_policy: Option<KillPolicy>) {
        enum Action {
            None,
            /// Not yet with the executor: the agent ends it.
            EndHere { kill_executor: Option<i32> },
        }
        let (key, action) = {
            let mut state = self.state.lock().unwrap();
            let Some(key) = state.executors.iter().find(|(k, ex)| k.0 == framework_id && ex.task(task_id).is_some()).map(|(k, _)| k.clone()) else {
                tracing::warn!(task = %task_id, "kill for an unknown task");
                return;
            };
            let ex = state.executors.get_mut(&key).expect("found above");
            let task = ex.task_mut(task_id).expect("found above");
            task.kill_requested = true;
            let (launched, terminal) = (task.launched, task.state.is_terminal());
            let only_task = ex.tasks.iter().all(|t| t.id() == task_id || t.state.is_terminal());
            let action = match (&ex.stream, launched, ex.state) {
                _ if terminal => Action::None,
                // Recovered and not yet back: SUBSCRIBE answers with SHUTDOWN,
                // and one that never comes back is killed at its timeout.
                (None, _, ExecutorState::Registering) if ex.recovered => Action::None,
                (Some(stream), true, _) => {
                    let _ = stream.send(executor_api::Event {
                        r#type: Some(EventType::Kill as i32),
                        kill: Some(executor_api::event::Kill { task_id: TaskId { value: task_id.to_string() }, kill_policy }),
                        ..Default::default()
                    });
                    Action::None
                }
                // Still preparing: launch() sees the kill.
                (_, _, ExecutorState::Registering) if ex.pid.is_none() => Action::None,
                // Started, but the task is not with the executor: the agent
                // ends it; a command executor left with nothing to run goes too.
                _ => {
                    let kill_executor = (only_task && ex.kind == ExecutorKind::Command).then_some(ex.pid).flatten();
                    if kill_executor.is_some() {
                        ex.state = ExecutorState::Terminating;
                    }
                    Action::EndHere { kill_executor }
                }
            };
            (key, action)
        };
        if let Action::EndHere { kill_executor } = action {
            self.end_task(&key, task_id, TaskState::TaskKilled, task_status::Reason::TaskKilledDuringLaunch, "task killed before its executor started it");
            if let Some(pid) = kill_executor {
                crate::agent::kill_executor(Some(pid));
            }
        }
    }

    /// Shuts one executor down (the scheduler's SHUTDOWN, a framework's
    /// teardown, a failed container update): SHUTDOWN to the executor, and
    /// its container destroyed after the grace period (the executor's own
    /// `shutdown_grace_period`, else `--executor_shutdown_grace_period`).
    /// Its tasks that it leaves unfinished end TASK_KILLED.
    pub fn shutdown_executor(&self, framework_id: &str, executor_id: &str) {
        let key = (framework_id.to_string(), executor_id.to_string());
        let mut state = self.state.lock().unwrap();
        let Some(ex) = state.executors.get_mut(&key) else {
            tracing::warn!(framework = %framework_id, executor = %executor_id, "shutdown of an unknown executor");
            return;
        };
        let grace = ex
            .info
            .shutdown_grace_period
            .as_ref()
            .and_then(|d| u64::try_from(d.nanoseconds).ok())
            .map(Duration::from_nanos)
            .unwrap_or(self.shutdown_grace);
        tracing::info!(framework = %framework_id, executor = %executor_id, ?grace, "shutting down executor");
        for task in &mut ex.tasks {
            task.kill_requested = true;
        }
        ex.state = ExecutorState::Terminating;
        ex.send(event(EventType::Shutdown));
        // Without a runner yet (still preparing), launch() sees every task killed.
        ex.tell(RunnerCommand::Shutdown { grace });
    }

    /// Handles a scheduler's MESSAGE for an executor (best effort, as Mesos:
    /// dropped when the executor is not subscribed).
    pub fn framework_message(&self, framework_id: &str, executor_id: &str, data: Vec<u8>) {
        let key = (framework_id.to_string(), executor_id.to_string());
        let state = self.state.lock().unwrap();
        let sent = state.executors.get(&key).is_some_and(|ex| {
            ex.state == ExecutorState::Running
                && ex.send(executor_api::Event {
                    r#type: Some(EventType::Message as i32),
                    message: Some(executor_api::event::Message { data }),
                    ..Default::default()
                })
        });
        if !sent {
            tracing::warn!(framework = %framework_id, executor = %executor_id, "dropping a framework message for an executor that is not running");
        }
    }

    /// An executor's MESSAGE for its scheduler: to the master, best effort
    /// (Mesos's ExecutorToFrameworkMessage), in the background.
    pub fn executor_message(&self, key: &(String, String), data: Vec<u8>) {
        let msg = mezzo_proto::mezzo::agent::FrameworkMessage {
            framework_id: FrameworkId { value: key.0.clone() },
            executor_id: ExecutorId { value: key.1.clone() },
            data,
            agent_id: Some(AgentId { value: self.id() }),
        };
        let Some(agent) = self.me.upgrade() else { return };
        tokio::spawn(async move {
            if let Err(e) = crate::master_link::post_authenticated(&agent, "/mezzo/v1/agent/message", &msg).await {
                tracing::warn!(executor = %msg.executor_id.value, error = %e, "dropping an executor's message: the master did not take it");
            }
        });
    }

    /// A task a re-subscribing executor does not have: lost in flight
    /// (TASK_DROPPED for partition-aware frameworks, else TASK_LOST).
    pub fn task_dropped(&self, key: &(String, String), task_id: &str) {
        let aware = self.state.lock().unwrap().frameworks.get(&key.0).map(partition_aware).unwrap_or(false);
        let state = if aware { TaskState::TaskDropped } else { TaskState::TaskLost };
        self.end_task(key, task_id, state, task_status::Reason::ExecutorTerminated, "The executor subscribed again without the task: it was lost in flight");
    }

    /// Handles SHUTDOWN_FRAMEWORK: shuts down its executors.
    pub fn shutdown_framework(self: &Arc<Self>, framework_id: &str) {
        let keys: Vec<(String, String)> = {
            let mut state = self.state.lock().unwrap();
            state.frameworks.remove(framework_id);
            state.executors.keys().filter(|k| k.0 == framework_id).cloned().collect()
        };
        for key in keys {
            self.shutdown_executor(&key.0, &key.1);
        }
        self.updates.remove_framework(framework_id);
        self.meta.remove_framework(&self.id(), framework_id);
    }

    /// SIGTERM or SIGINT: the agent exits at once, as Mesos's does. The
    /// executors of checkpointing frameworks keep running (with their
    /// containers) for the next agent to recover. Those of frameworks that
    /// do not checkpoint cannot be recovered (Mesos's exit when they lose
    /// the agent, and its master reports their tasks TASK_LOST with
    /// REASON_AGENT_DISCONNECTED): they are killed and their containers
    /// destroyed now, so nothing of theirs outlives the agent, and their
    /// tasks are reported TASK_LOST (TASK_GONE when partition-aware) with
    /// that reason, in one bounded attempt.
    pub async fn leave(self: &Arc<Self>, signal: &str) {
        type Doomed = ((String, String), String, Option<i32>, Vec<TaskStatus>);
        let doomed: Vec<Doomed> = {
            let mut guard = self.state.lock().unwrap();
            let state = &mut *guard;
            let frameworks = &state.frameworks;
            state
                .executors
                .values_mut()
                .filter(|e| !e.checkpoint)
                .map(|e| {
                    let aware = frameworks.get(&e.framework_id).map(partition_aware).unwrap_or(false);
                    let lost = if aware { TaskState::TaskGone } else { TaskState::TaskLost };
                    let message = format!("Agent shut down ({signal}); the framework does not checkpoint, so its executor cannot be recovered");
                    let statuses = e
                        .live_tasks()
                        .map(|t| self.executor_status(e, t.id(), lost, task_status::Reason::AgentDisconnected, message.clone()))
                        .collect();
                    // Recorded before the kill: the executor's exit must not
                    // be reported as the tasks' failure.
                    for t in e.tasks.iter_mut().filter(|t| !t.state.is_terminal()) {
                        t.state = lost;
                        t.kill_requested = true;
                    }
                    e.state = ExecutorState::Terminating;
                    // Its sandbox stays for the next agent to collect, --gc_delay from now.
                    crate::gc::touch(&e.sandbox);
                    (e.key(), e.container_id.clone(), e.pid, statuses)
                })
                .collect()
        };
        let kept = self.state.lock().unwrap().executors.len() - doomed.len();
        tracing::info!(signal, kept, destroyed = doomed.len(), "agent exiting; executors of checkpointing frameworks keep running");
        let ends = doomed.into_iter().map(|(key, container_id, pid, statuses)| async move {
            kill_executor(pid);
            if let Err(e) = self.containerizer.destroy(&container_id).await {
                tracing::warn!(container = %container_id, error = %e, "destroy on exit");
            }
            for status in statuses {
                let sent = self.send_status_to_master(FrameworkId { value: key.0.clone() }, status);
                if let Err(e) = tokio::time::timeout(EXIT_UPDATE_TIMEOUT, sent).await.map_err(|_| "timed out".to_string()).and_then(|r| r) {
                    tracing::warn!(executor = %key.1, error = %e, "could not report the task lost on exit");
                }
            }
        });
        if tokio::time::timeout(EXIT_DESTROY_TIMEOUT, futures::future::join_all(ends)).await.is_err() {
            tracing::warn!("destroying the containers of non-checkpointing frameworks took too long; exiting anyway");
        }
    }

    /// Stops every executor and destroys every container (agent shutdown on
    /// SIGUSR1; SIGTERM leaves recoverable ones running, see `leave`).
    pub async fn shutdown_all(self: &Arc<Self>) {
        let keys: Vec<(String, Option<i32>)> = self.state.lock().unwrap().executors.values().map(|e| (e.container_id.clone(), e.pid)).collect();
        for (container_id, pid) in keys {
            kill_executor(pid);
            if let Err(e) = self.containerizer.destroy(&container_id).await {
                tracing::warn!(container = %container_id, error = %e, "destroy on shutdown");
            }
        }
        self.remove_cgroups_root();
    }

    /// Leaves no empty `--cgroups_root` behind (rmdir fails, harmlessly, while in use).
    pub fn remove_cgroups_root(&self) {
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                let _ = std::fs::remove_dir(h.path().join(&self.flags.cgroups_root));
            }
        }
        let _ = std::fs::remove_dir(std::path::Path::new("/sys/fs/cgroup").join(&self.flags.cgroups_root));
    }

    /// POSTs one status update to the master. A master that does not know
    /// the framework (410) will never want its updates: they are dropped,
    /// as a Mesos agent drops those of a completed framework.
    pub async fn send_status_to_master(&self, framework_id: FrameworkId, status: TaskStatus) -> Result<(), String> {
        let fid = framework_id.value.clone();
        let msg = mezzo_proto::mezzo::agent::StatusUpdate { framework_id, status };
        match crate::master_link::post_authenticated(self, "/mezzo/v1/agent/status", &msg).await {
            Ok(_) => Ok(()),
            Err(e) if e.status == Some(410) => {
                tracing::warn!(framework_id = %fid, error = %e, "the master does not know the framework; dropping its status updates");
                self.updates.remove_framework(&fid);
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

/// `MESOS_ALLOCATION_ROLE`: the role the executor's resources are
/// allocated to (`Resource.allocation_info.role`), else the framework's
/// only role, else `*`.
fn allocation_role(framework: &FrameworkInfo, resources: &[Resource]) -> String {
    #[allow(deprecated)] // FrameworkInfo.role: what frameworks without MULTI_ROLE set
    let framework_role = framework.roles.first().cloned().or_else(|| framework.role.clone());
    resources
        .iter()
        .find_map(|r| r.allocation_info.as_ref().and_then(|a| a.role.clone()))
        .or(framework_role)
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "*".to_string())
}

fn create_sandbox(sandbox: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(sandbox)?;
    for f in ["stdout", "stderr"] {
        std::fs::OpenOptions::new().create(true).append(true).open(sandbox.join(f))?;
    }
    // runs/latest -> <container id>, as in Mesos.
    if let (Some(runs), Some(name)) = (sandbox.parent(), sandbox.file_name()) {
        let latest = runs.join("latest");
        let tmp = runs.join(".latest.tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(name, &tmp)?;
        std::fs::rename(&tmp, &latest)?;
    }
    Ok(())
}

/// SIGKILLs the process group (session) led by `pid`: what an executor
/// left behind once it exited.
pub fn kill_group(pid: Option<i32>) {
    if let Some(pid) = pid.filter(|p| *p > 1) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

/// SIGKILLs a live executor: its session, or the process itself when it
/// leads none yet (mezzo-executor makes itself a session leader first
/// thing, but a kill may come before that).
pub fn kill_executor(pid: Option<i32>) {
    use nix::sys::signal::{kill, killpg, Signal};
    if let Some(pid) = pid.filter(|p| *p > 1).map(nix::unistd::Pid::from_raw) {
        if killpg(pid, Signal::SIGKILL) == Err(nix::errno::Errno::ESRCH) {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

/// The listener with Nagle's algorithm off on every connection: executor
/// subscriptions stream small events (a response head, then SUBSCRIBED, then
/// LAUNCH), which Nagle held back until the executor's delayed ACK came.
pub fn no_delay(listener: tokio::net::TcpListener) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    })
}

/// Seconds since the epoch, as Mesos timestamps are.
pub fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}
