//! The agent's core: frameworks, executors and their tasks, launch and kill.

use crate::flags::{format_duration, parse_duration, Flags};
use crate::paths;
use crate::status_update_manager::{Forward, StatusUpdateManager, MIN_RETRY};
use anyhow::Context;
use mezzo_containerizer::{Backend, Command, ContainerConfig, ContainerType, Containerizer, Resources};
use mezzo_proto::mesos::v1::executor;
use mezzo_proto::mesos::v1::{
    container_info, task_status, AgentId, AgentInfo, ContainerId, ContainerStatus, ExecutorId, FrameworkId,
    FrameworkInfo, KillPolicy, Resource, TaskId, TaskInfo, TaskState, TaskStatus,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// An event for a subscribed executor's stream.
pub type ExecutorEventSender = mpsc::UnboundedSender<executor::Event>;

/// Where an executor is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The containerizer is preparing the task's container.
    Preparing,
    /// mezzo-executor runs (pid) and may have subscribed.
    Running,
    /// The executor is gone and its container destroyed.
    Terminated,
}

/// One executor (for a command task: one task) on this agent.
pub struct Executor {
    pub framework_id: String,
    pub executor_id: String,
    pub container_id: String,
    pub sandbox: PathBuf,
    pub task: TaskInfo,
    /// Latest state of the task as reported by the executor or the agent.
    pub task_state: TaskState,
    pub phase: Phase,
    /// pid of mezzo-executor (leader of its own session).
    pub pid: Option<i32>,
    /// The executor's SUBSCRIBE stream, when connected.
    pub stream: Option<ExecutorEventSender>,
    /// LAUNCH was sent to the executor.
    pub launched: bool,
    /// A kill arrived; the task must not (re)start.
    pub kill_requested: bool,
    /// Set when the task reached a terminal state, so the executor's exit is expected.
    pub terminal: Arc<Notify>,
}

impl Executor {
    fn key(&self) -> (String, String) {
        (self.framework_id.clone(), self.executor_id.clone())
    }
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
    pub flags: Flags,
    pub work_dir: PathBuf,
    pub launcher_dir: PathBuf,
    pub containerizer: Arc<Containerizer>,
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
}

/// Runs the agent until the process is stopped.
pub async fn run(flags: Flags) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind((flags.ip.as_str(), flags.port))
        .await
        .with_context(|| format!("failed to listen on {}:{}", flags.ip, flags.port))?;
    let agent = Agent::new(flags).await?;
    agent.clone().recover_orphans().await;
    tokio::spawn(crate::master_link::register_and_ping(agent.clone()));
    let app = crate::http::router(agent.clone());
    tracing::info!(address = %listener.local_addr()?, "agent listening");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    agent.shutdown_all().await;
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
        let backends = build_backends(&flags, &runtime_root, &store_dir, &launcher_dir).await?;
        let containerizer = Arc::new(Containerizer::new(backends, runtime_root));
        let resources = crate::resources::parse(flags.resources.as_deref())?;
        let hostname = flags.hostname.clone().unwrap_or_else(|| {
            nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| flags.ip.clone())
        });
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        let shutdown_grace = parse_duration(&flags.executor_shutdown_grace_period).map_err(anyhow::Error::msg)?;
        let registration_timeout = parse_duration(&flags.executor_registration_timeout).map_err(anyhow::Error::msg)?;
        let agent = Arc::new_cyclic(|weak: &std::sync::Weak<Agent>| {
            let weak = weak.clone();
            let forward: Forward = Arc::new(move |fid, status| {
                let weak = weak.clone();
                Box::pin(async move {
                    match weak.upgrade() {
                        Some(agent) => agent.send_status_to_master(fid, status).await,
                        None => Err("agent is shutting down".to_string()),
                    }
                })
            });
            Agent {
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

    /// Containers left in the runtime directory by an earlier run are orphans:
    /// nothing checkpointed names them, so they are destroyed.
    async fn recover_orphans(self: Arc<Self>) {
        let root = self.containerizer.runtime_dir("");
        let Ok(entries) = std::fs::read_dir(&root) else { return };
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().to_string();
            tracing::info!(container = %id, "destroying orphan container");
            if let Err(e) = self.containerizer.destroy(&id).await {
                tracing::warn!(container = %id, error = %e, "failed to destroy orphan container");
            }
        }
    }

    /// Handles RUN_TASK from the master.
    pub fn run_task(self: &Arc<Self>, framework_info: FrameworkInfo, task: TaskInfo) {
        let framework_id = framework_info.id.clone().map(|f| f.value).unwrap_or_default();
        let task_id = task.task_id.value.clone();
        let fail = |msg: String, reason: task_status::Reason| {
            let status = self.agent_status(&task_id, "", TaskState::TaskFailed, reason, msg);
            self.updates.update(FrameworkId { value: framework_id.clone() }, status);
        };
        if !paths::safe_component(&framework_id) || !paths::safe_component(&task_id) {
            fail("invalid framework or task id".to_string(), task_status::Reason::TaskInvalid);
            return;
        }
        if task.executor.is_some() {
            fail(
                "custom executors are not supported yet; send a command task".to_string(),
                task_status::Reason::TaskInvalid,
            );
            return;
        }
        // Command tasks: the executor id is the task id, as in Mesos.
        let executor_id = task_id.clone();
        let container_id = uuid::Uuid::new_v4().to_string();
        // The master may send a task before our registration response was
        // processed; the task names the id the master gave us.
        let agent_id = {
            let mut id = self.agent_id.write().unwrap();
            id.get_or_insert_with(|| task.agent_id.value.clone()).clone()
        };
        if agent_id != task.agent_id.value || !paths::safe_component(&agent_id) {
            fail(format!("task is for agent '{}', this is '{agent_id}'", task.agent_id.value), task_status::Reason::TaskInvalid);
            return;
        }
        let sandbox = paths::sandbox_dir(&self.work_dir, &agent_id, &framework_id, &executor_id, &container_id);
        {
            let mut state = self.state.lock().unwrap();
            if state.executors.contains_key(&(framework_id.clone(), executor_id.clone())) {
                drop(state);
                fail(format!("task '{task_id}' is already running on this agent"), task_status::Reason::TaskInvalid);
                return;
            }
            state.frameworks.insert(framework_id.clone(), framework_info.clone());
            let executor = Executor {
                framework_id: framework_id.clone(),
                executor_id: executor_id.clone(),
                container_id: container_id.clone(),
                sandbox: sandbox.clone(),
                task: task.clone(),
                task_state: TaskState::TaskStaging,
                phase: Phase::Preparing,
                pid: None,
                stream: None,
                launched: false,
                kill_requested: false,
                terminal: Arc::new(Notify::new()),
            };
            state.executors.insert(executor.key(), executor);
        }
        let agent = self.clone();
        tokio::spawn(async move {
            agent.launch(framework_info, task, framework_id, executor_id, container_id, sandbox).await;
        });
    }

    async fn launch(
        self: Arc<Self>,
        framework_info: FrameworkInfo,
        task: TaskInfo,
        framework_id: String,
        executor_id: String,
        container_id: String,
        sandbox: PathBuf,
    ) {
        let key = (framework_id.clone(), executor_id.clone());
        let task_id = task.task_id.value.clone();
        if let Err(e) = create_sandbox(&sandbox) {
            self.terminate_without_executor(&key, TaskState::TaskFailed, task_status::Reason::ContainerLaunchFailed, format!("failed to create sandbox: {e}")).await;
            return;
        }
        let config = self.container_config(&framework_info, &task, &executor_id, &container_id, &sandbox);
        let prepared = match config {
            Ok(config) => self.containerizer.prepare(&config).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        let runtime_dir = match prepared {
            Ok(dir) => dir,
            Err(e) => {
                tracing::warn!(task = %task_id, error = %e, "container launch failed");
                self.terminate_without_executor(&key, TaskState::TaskFailed, task_status::Reason::ContainerLaunchFailed, e).await;
                return;
            }
        };
        if self.state.lock().unwrap().executors.get(&key).map(|e| e.kill_requested).unwrap_or(true) {
            self.terminate_without_executor(&key, TaskState::TaskKilled, task_status::Reason::TaskKilledDuringLaunch, "task killed before it started".to_string()).await;
            return;
        }
        let child = match self.spawn_executor(&framework_info, &executor_id, &container_id, &sandbox, &runtime_dir) {
            Ok(child) => child,
            Err(e) => {
                self.terminate_without_executor(&key, TaskState::TaskFailed, task_status::Reason::ContainerLaunchFailed, format!("failed to start executor: {e:#}")).await;
                return;
            }
        };
        let pid = child.id().map(|p| p as i32);
        let terminal = {
            let mut state = self.state.lock().unwrap();
            match state.executors.get_mut(&key) {
                Some(ex) => {
                    ex.pid = pid;
                    ex.phase = Phase::Running;
                    ex.terminal.clone()
                }
                None => Arc::new(Notify::new()),
            }
        };
        self.supervise_executor(key, child, terminal).await;
    }

    /// Waits for the executor to exit, forcing it out when it does not
    /// subscribe in time or lingers after its task ended; then destroys the
    /// container and reports a task the executor left unfinished.
    async fn supervise_executor(self: Arc<Self>, key: (String, String), mut child: tokio::process::Child, terminal: Arc<Notify>) {
        use tokio::time::Instant;
        let pid = child.id().map(|p| p as i32);
        let mut registration_check = Some(Instant::now() + self.registration_timeout);
        let mut kill_at: Option<Instant> = None;
        let status = loop {
            let next = match (registration_check, kill_at) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => Instant::now() + Duration::from_secs(86400),
            };
            tokio::select! {
                status = child.wait() => break status.ok(),
                _ = terminal.notified() => {
                    // Time for the executor to get its acknowledgement and exit.
                    kill_at.get_or_insert(Instant::now() + self.shutdown_grace + Duration::from_secs(60));
                }
                _ = tokio::time::sleep_until(next) => {
                    let now = Instant::now();
                    if registration_check.is_some_and(|t| t <= now) {
                        registration_check = None;
                        let subscribed = self.state.lock().unwrap().executors.get(&key).is_some_and(|e| e.stream.is_some());
                        if !subscribed {
                            tracing::warn!(executor = %key.1, "executor did not subscribe in time; killing it");
                            kill_group(pid);
                        }
                    }
                    if kill_at.is_some_and(|t| t <= now) {
                        tracing::warn!(executor = %key.1, "executor did not exit after its task ended; killing it");
                        kill_group(pid);
                        kill_at = None;
                    }
                }
            }
        };
        kill_group(pid); // anything the executor left in its session
        tracing::info!(executor = %key.1, status = ?status, "executor exited");
        self.executor_terminated(&key, status.map(|s| s.to_string())).await;
    }

    async fn executor_terminated(&self, key: &(String, String), exit: Option<String>) {
        let (container_id, task_id, task_state, kill_requested) = {
            let mut state = self.state.lock().unwrap();
            let Some(ex) = state.executors.get_mut(key) else { return };
            ex.stream = None;
            (ex.container_id.clone(), ex.task.task_id.value.clone(), ex.task_state, ex.kill_requested)
        };
        if let Err(e) = self.containerizer.destroy(&container_id).await {
            tracing::error!(container = %container_id, error = %e, "failed to destroy container");
        }
        if !task_state.is_terminal() {
            let (state, reason) = if kill_requested {
                (TaskState::TaskKilled, task_status::Reason::ExecutorTerminated)
            } else {
                (TaskState::TaskFailed, task_status::Reason::ExecutorTerminated)
            };
            let message = format!("Executor terminated{}", exit.map(|e| format!(" ({e})")).unwrap_or_default());
            let status = self.agent_status(&task_id, &container_id, state, reason, message);
            self.record_and_forward(key, status);
        }
        self.finish_executor(key);
    }

    /// Ends a task whose executor never started (prepare failed or killed early).
    async fn terminate_without_executor(&self, key: &(String, String), state: TaskState, reason: task_status::Reason, message: String) {
        let Some((container_id, task_id)) = self
            .state
            .lock()
            .unwrap()
            .executors
            .get(key)
            .map(|e| (e.container_id.clone(), e.task.task_id.value.clone()))
        else {
            return;
        };
        if let Err(e) = self.containerizer.destroy(&container_id).await {
            tracing::error!(container = %container_id, error = %e, "failed to destroy container");
        }
        let status = self.agent_status(&task_id, &container_id, state, reason, message);
        self.record_and_forward(key, status);
        self.finish_executor(key);
    }

    fn finish_executor(&self, key: &(String, String)) {
        let mut state = self.state.lock().unwrap();
        if let Some(mut ex) = state.executors.remove(key) {
            ex.phase = Phase::Terminated;
            ex.stream = None;
            state.completed.push(ex);
            let excess = state.completed.len().saturating_sub(150);
            state.completed.drain(..excess);
        }
    }

    /// Records the task's new state and queues the update for the master.
    pub fn record_and_forward(&self, key: &(String, String), status: TaskStatus) {
        {
            let mut state = self.state.lock().unwrap();
            if let Some(ex) = state.executors.get_mut(key) {
                ex.task_state = status.state();
                if status.state().is_terminal() {
                    ex.terminal.notify_one();
                }
            }
        }
        self.updates.update(FrameworkId { value: key.0.clone() }, status);
    }

    /// A status update generated by the agent itself.
    pub fn agent_status(&self, task_id: &str, container_id: &str, state: TaskState, reason: task_status::Reason, message: String) -> TaskStatus {
        let mut status = TaskStatus {
            task_id: TaskId { value: task_id.to_string() },
            message: Some(message),
            agent_id: Some(AgentId { value: self.id() }),
            executor_id: Some(ExecutorId { value: task_id.to_string() }),
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

    fn container_config(&self, framework: &FrameworkInfo, task: &TaskInfo, executor_id: &str, container_id: &str, sandbox: &std::path::Path) -> Result<ContainerConfig, String> {
        let (container_type, image, hostname) = match &task.container {
            None => (ContainerType::Mesos, None, None),
            Some(ci) => match ci.r#type() {
                container_info::Type::Mesos => (
                    ContainerType::Mesos,
                    ci.mesos.as_ref().and_then(|m| m.image.as_ref()).and_then(|i| i.docker.as_ref()).map(|d| d.name.clone()),
                    ci.hostname.clone(),
                ),
                container_info::Type::Docker => {
                    let image = ci.docker.as_ref().map(|d| d.image.clone()).filter(|s| !s.is_empty());
                    if image.is_none() {
                        return Err("DOCKER container requires ContainerInfo.docker.image".to_string());
                    }
                    (ContainerType::Docker, image, ci.hostname.clone())
                }
            },
        };
        let command = task.command.as_ref().ok_or("task has no command")?;
        let env = command
            .environment
            .as_ref()
            .map(|e| e.variables.iter().map(|v| (v.name.clone(), v.value.clone().unwrap_or_default())).collect())
            .unwrap_or_default();
        let scalar = |name: &str| crate::resources::scalar_of(&task.resources, name);
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("mezzo.agent_id".to_string(), self.id());
        labels.insert("mezzo.framework_id".to_string(), framework.id.clone().map(|f| f.value).unwrap_or_default());
        labels.insert("mezzo.executor_id".to_string(), executor_id.to_string());
        labels.insert("mezzo.container_id".to_string(), container_id.to_string());
        Ok(ContainerConfig {
            container_id: container_id.to_string(),
            container_type,
            image,
            command: Command {
                shell: command.shell.unwrap_or(true),
                value: command.value.clone(),
                arguments: command.arguments.clone(),
                env,
                user: command.user.clone(),
            },
            resources: Resources { cpus: scalar("cpus"), mem_mb: scalar("mem"), disk_mb: scalar("disk"), ports: vec![] },
            sandbox: sandbox.to_path_buf(),
            hostname,
            labels,
            ..Default::default()
        })
    }

    fn spawn_executor(&self, framework: &FrameworkInfo, executor_id: &str, container_id: &str, sandbox: &std::path::Path, runtime_dir: &std::path::Path) -> anyhow::Result<tokio::process::Child> {
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
            .env("MESOS_FRAMEWORK_ID", framework.id.clone().map(|f| f.value).unwrap_or_default())
            .env("MESOS_EXECUTOR_ID", executor_id)
            .env("MESOS_DIRECTORY", sandbox)
            .env("MESOS_SANDBOX", sandbox)
            .env("MESOS_SLAVE_ID", self.id())
            .env("MESOS_SLAVE_PID", format!("slave(1)@{}", self.endpoint()))
            .env("MESOS_AGENT_ENDPOINT", self.endpoint())
            .env("MESOS_CHECKPOINT", if framework.checkpoint.unwrap_or(false) { "1" } else { "0" })
            .env("MESOS_HTTP_COMMAND_EXECUTOR", "1")
            .env("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", format_duration(self.shutdown_grace))
            .env("MEZZO_CONTAINER_ID", container_id)
            .env("MEZZO_RUNTIME_DIR", runtime_dir)
            .env("MEZZO_LAUNCHER_DIR", &self.launcher_dir)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(false);
        if let Ok(filter) = std::env::var("RUST_LOG") {
            cmd.env("RUST_LOG", filter);
        }
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        cmd.spawn().with_context(|| format!("spawn {}", program.display()))
    }

    /// Handles KILL_TASK from the master.
    pub async fn kill_task(self: &Arc<Self>, framework_id: &str, task_id: &str, kill_policy: Option<KillPolicy>) {
        let key = (framework_id.to_string(), task_id.to_string());
        let action = {
            let mut state = self.state.lock().unwrap();
            let Some(ex) = state.executors.get_mut(&key) else {
                tracing::warn!(task = %task_id, "kill for an unknown task");
                return;
            };
            ex.kill_requested = true;
            match (&ex.stream, ex.launched, ex.phase) {
                (Some(stream), true, _) => {
                    let event = executor::Event {
                        r#type: Some(executor::event::Type::Kill as i32),
                        kill: Some(executor::event::Kill { task_id: TaskId { value: task_id.to_string() }, kill_policy }),
                        ..Default::default()
                    };
                    let _ = stream.send(event);
                    None
                }
                // Not yet running in the executor: the agent ends it.
                (_, _, Phase::Running) => Some(ex.pid),
                (_, _, _) => None, // preparing: launch() sees kill_requested
            }
        };
        if let Some(pid) = action {
            let (container_id, state) = {
                let s = self.state.lock().unwrap();
                let ex = s.executors.get(&key);
                (ex.map(|e| e.container_id.clone()).unwrap_or_default(), ex.map(|e| e.task_state))
            };
            if state.map(TaskState::is_terminal) == Some(false) {
                let status = self.agent_status(task_id, &container_id, TaskState::TaskKilled, task_status::Reason::TaskKilledDuringLaunch, "task killed before its executor started it".to_string());
                self.record_and_forward(&key, status);
            }
            kill_group(pid);
        }
    }

    /// Handles SHUTDOWN_FRAMEWORK: asks its executors to shut down and
    /// destroys those that do not within the grace period.
    pub fn shutdown_framework(self: &Arc<Self>, framework_id: &str) {
        let pids: Vec<Option<i32>> = {
            let mut state = self.state.lock().unwrap();
            state.frameworks.remove(framework_id);
            state
                .executors
                .values_mut()
                .filter(|e| e.framework_id == framework_id)
                .map(|ex| {
                    ex.kill_requested = true;
                    if let Some(stream) = &ex.stream {
                        let _ = stream.send(executor::Event {
                            r#type: Some(executor::event::Type::Shutdown as i32),
                            ..Default::default()
                        });
                    }
                    ex.pid
                })
                .collect()
        };
        self.updates.remove_framework(framework_id);
        let grace = self.shutdown_grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            for pid in pids {
                kill_group(pid);
            }
        });
    }

    /// Stops every executor and destroys every container (agent shutdown).
    pub async fn shutdown_all(self: &Arc<Self>) {
        let keys: Vec<(String, String, String, Option<i32>)> = self
            .state
            .lock()
            .unwrap()
            .executors
            .values()
            .map(|e| (e.framework_id.clone(), e.executor_id.clone(), e.container_id.clone(), e.pid))
            .collect();
        for (_, _, container_id, pid) in keys {
            kill_group(pid);
            if let Err(e) = self.containerizer.destroy(&container_id).await {
                tracing::warn!(container = %container_id, error = %e, "destroy on shutdown");
            }
        }
        // Leave no empty `--cgroups_root` behind (rmdir fails, harmlessly, while in use).
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                let _ = std::fs::remove_dir(h.path().join(&self.flags.cgroups_root));
            }
        }
        let _ = std::fs::remove_dir(std::path::Path::new("/sys/fs/cgroup").join(&self.flags.cgroups_root));
    }

    /// POSTs one status update to the master.
    pub async fn send_status_to_master(&self, framework_id: FrameworkId, status: TaskStatus) -> Result<(), String> {
        let msg = mezzo_proto::mezzo::agent::StatusUpdate { framework_id, status };
        crate::master_link::post(&self.http, &self.flags.master, "/mezzo/v1/agent/status", &msg)
            .await
            .map(|_| ())
    }
}

async fn build_backends(flags: &Flags, runtime_root: &std::path::Path, store_dir: &std::path::Path, launcher_dir: &std::path::Path) -> anyhow::Result<Vec<Arc<dyn Backend>>> {
    let mut backends: Vec<Arc<dyn Backend>> = Vec::new();
    let mut store: Option<Arc<mezzo_images::ImageStore>> = None;
    for name in flags.containerizers.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match name {
            "rust" | "mesos" => {
                let store = match &store {
                    Some(s) => s.clone(),
                    None => {
                        let s = Arc::new(mezzo_images::ImageStore::open(store_dir.to_path_buf(), flags.docker_registry.clone())?);
                        store = Some(s.clone());
                        s
                    }
                };
                backends.push(Arc::new(mezzo_containerizer::rust::RustBackend::new(mezzo_containerizer::rust::RustBackendConfig {
                    runtime_root: runtime_root.to_path_buf(),
                    provisioner: Some(store),
                    cgroups_root: flags.cgroups_root.clone(),
                    launcher_dir: launcher_dir.to_path_buf(),
                })));
            }
            "docker" => {
                backends.push(Arc::new(mezzo_containerizer::docker::DockerBackend::new(mezzo_containerizer::docker::DockerBackendConfig {
                    image_archive_dir: flags.docker_registry.clone(),
                })
                .await?));
            }
            other => anyhow::bail!("unknown containerizer '{other}' in --containerizers (known: rust, mesos, docker)"),
        }
    }
    if backends.is_empty() {
        anyhow::bail!("--containerizers names no containerizer");
    }
    Ok(backends)
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

/// SIGKILLs the process group (session) led by `pid`.
pub fn kill_group(pid: Option<i32>) {
    if let Some(pid) = pid.filter(|p| *p > 1) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Seconds since the epoch, as Mesos timestamps are.
pub fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}
