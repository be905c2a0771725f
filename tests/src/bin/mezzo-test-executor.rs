//! `mezzo-test-executor`: a small custom executor for the end-to-end tests,
//! as a framework would bring its own. It speaks the Mesos v1 executor API
//! (`POST http://$MESOS_AGENT_ENDPOINT/api/v1/executor`, JSON or protobuf,
//! events as a RecordIO stream) and runs any number of tasks at once.
//!
//! What a task does is in its `TaskInfo.data` (UTF-8):
//! - `run <secs>`: TASK_RUNNING, then TASK_FINISHED after `secs`;
//! - `fail <code>`: TASK_RUNNING, then TASK_FAILED naming the code;
//! - `forever`: TASK_RUNNING until killed (TASK_KILLED).
//!
//! Framework messages are commands:
//! - `echo <text>`: sends a MESSAGE with `<text>` back to the scheduler;
//! - `exit <code>`: exits at once with that code, tasks still running;
//! - `crash`: aborts (SIGABRT);
//! - `finish <task_id>`: the task ends with TASK_FINISHED.
//!
//! Updates stay unacknowledged until the agent's ACKNOWLEDGED; they are sent
//! again in SUBSCRIBE (with the tasks the agent has not acknowledged) when
//! the executor re-subscribes after losing the agent, as Mesos's executor
//! library does: with a checkpointing framework it retries with a backoff
//! up to `MESOS_SUBSCRIPTION_BACKOFF_MAX` for `MESOS_RECOVERY_TIMEOUT`,
//! without one it exits. SHUTDOWN (or SIGTERM) kills every task and exits 0.
//!
//! Arguments: `--content-type=json|protobuf` (default json),
//! `--no-subscribe` to sleep without ever subscribing (an executor the agent
//! must time out), `--no-authentication` to send no token (a third-party
//! executor that knows none). Logs go to stderr.

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use mezzo_proto::codec::{decode, encode, ContentType};
use mezzo_proto::mesos::v1::executor::{call, event, Call, Event};
use mezzo_proto::mesos::v1::{task_status, AgentId, ExecutorId, FrameworkId, TaskId, TaskInfo, TaskState, TaskStatus};
use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Largest event accepted on the stream (a LAUNCH carries a TaskInfo).
const MAX_EVENT_BYTES: usize = 16 << 20;
/// Bound on every call other than SUBSCRIBE.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// First delay before subscribing again; it doubles up to `MESOS_SUBSCRIPTION_BACKOFF_MAX`.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// How long the first subscription is tried (the agent's registration timeout ends us sooner).
const REGISTRATION_LIMIT: Duration = Duration::from_secs(60);
/// How often updates the agent has not acknowledged are sent again while subscribed.
const RESEND_INTERVAL: Duration = Duration::from_secs(5);
/// How long `--no-subscribe` sleeps: longer than any test's registration timeout.
const NO_SUBSCRIBE_SLEEP: Duration = Duration::from_secs(300);
/// Used when the agent gives no `MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD` (Mesos's default).
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

macro_rules! log {
    ($($arg:tt)*) => {
        {
            // One write per line (stderr is unbuffered: eprintln! writes each piece).
            let line = format!("{} mezzo-test-executor[{}]: {}\n", timestamp(), std::process::id(), format_args!($($arg)*));
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        }
    };
}

fn timestamp() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:03}", now.as_secs(), now.subsec_millis())
}

/// What the executor learns from its environment and arguments.
struct Config {
    url: String,
    framework_id: FrameworkId,
    executor_id: ExecutorId,
    agent_id: Option<AgentId>,
    checkpoint: bool,
    recovery_timeout: Duration,
    backoff_max: Duration,
    shutdown_grace: Duration,
    authorization: Option<String>,
    content_type: ContentType,
}

impl Config {
    fn from_env(args: &[String]) -> Result<Config> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let required = |name: &str| var(name).with_context(|| format!("environment variable {name} is not set"));
        let duration = |name: &str, default: Duration| -> Result<Duration> {
            match var(name) {
                None => Ok(default),
                Some(v) => mezzo_proto::duration::parse(&v).map_err(|e| anyhow::anyhow!("{name}={v}: {e}")),
            }
        };
        let mut content_type = ContentType::Json;
        let mut no_authentication = false;
        for arg in args {
            match arg.as_str() {
                "--content-type=json" => content_type = ContentType::Json,
                "--content-type=protobuf" => content_type = ContentType::Protobuf,
                "--no-subscribe" => {}
                "--no-authentication" => no_authentication = true,
                other => bail!("unknown argument {other}"),
            }
        }
        Ok(Config {
            url: format!("http://{}/api/v1/executor", required("MESOS_AGENT_ENDPOINT")?),
            framework_id: FrameworkId { value: required("MESOS_FRAMEWORK_ID")? },
            executor_id: ExecutorId { value: required("MESOS_EXECUTOR_ID")? },
            agent_id: var("MESOS_SLAVE_ID").map(|value| AgentId { value }),
            checkpoint: var("MESOS_CHECKPOINT").as_deref() == Some("1"),
            // Mesos's defaults for --recovery_timeout and --executor_reregistration_timeout.
            recovery_timeout: duration("MESOS_RECOVERY_TIMEOUT", Duration::from_secs(15 * 60))?,
            backoff_max: duration("MESOS_SUBSCRIPTION_BACKOFF_MAX", Duration::from_secs(2))?,
            shutdown_grace: duration("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", DEFAULT_SHUTDOWN_GRACE)?,
            authorization: var("MESOS_EXECUTOR_AUTHENTICATION_TOKEN").filter(|_| !no_authentication).map(|t| format!("Bearer {t}")),
            content_type,
        })
    }
}

/// What the main loop reacts to.
enum Input {
    /// The agent accepted SUBSCRIBE attempt `generation`.
    Connected(u64),
    /// One event of subscription `generation`.
    Event(u64, Box<Event>),
    /// Subscription `generation` failed or its stream ended.
    Disconnected(u64, String),
    /// A task's behaviour came to its end.
    TaskEnded { task_id: TaskId, state: TaskState, message: String },
}

/// What a task does, from its `data`.
#[derive(Debug, Clone, PartialEq)]
enum Behaviour {
    Run(Duration),
    Fail(i32),
    Forever,
}

fn parse_behaviour(data: &[u8]) -> Result<Behaviour, String> {
    let text = std::str::from_utf8(data).map_err(|_| "task data is not UTF-8".to_string())?;
    let mut words = text.split_whitespace();
    let behaviour = match (words.next(), words.next(), words.next()) {
        (Some("run"), Some(secs), None) => {
            let secs: f64 = secs.parse().map_err(|_| format!("bad seconds in '{text}'"))?;
            if !(0.0..=86400.0).contains(&secs) {
                return Err(format!("seconds out of range in '{text}'"));
            }
            Behaviour::Run(Duration::from_secs_f64(secs))
        }
        (Some("fail"), Some(code), None) => Behaviour::Fail(code.parse().map_err(|_| format!("bad exit code in '{text}'"))?),
        (Some("forever"), None, None) => Behaviour::Forever,
        _ => return Err(format!("unknown task behaviour '{text}' (run <secs>, fail <code>, forever)")),
    };
    Ok(behaviour)
}

struct Task {
    info: TaskInfo,
    state: TaskState,
    /// The agent acknowledged one of its updates: it knows the task for sure.
    acknowledged: bool,
    timer: Option<tokio::task::JoinHandle<()>>,
}

struct Pending {
    update: call::Update,
    sent_at: Option<Instant>,
}

struct Executor {
    config: Config,
    http: reqwest::Client,
    inputs_tx: mpsc::UnboundedSender<Input>,
    inputs: mpsc::UnboundedReceiver<Input>,
    outgoing: mpsc::UnboundedSender<Call>,
    generation: u64,
    subscribed: bool,
    ever_subscribed: bool,
    started_at: Instant,
    disconnected_at: Option<Instant>,
    resubscribe_at: Option<Instant>,
    backoff: Duration,
    /// Uuids of the updates the last SUBSCRIBE carried.
    in_subscribe: HashSet<Vec<u8>>,
    tasks: Vec<Task>,
    pending: Vec<Pending>,
    /// Set on SHUTDOWN: exit once every update is acknowledged, or at this time.
    exit_by: Option<Instant>,
}

impl Executor {
    fn new(config: Config) -> Executor {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // A subscription the agent closed may leave a half-closed pooled connection.
            .pool_max_idle_per_host(0)
            .build()
            .expect("a reqwest client without TLS builds");
        let (inputs_tx, inputs) = mpsc::unbounded_channel();
        let outgoing = spawn_sender(http.clone(), config.url.clone(), config.authorization.clone(), config.content_type);
        Executor {
            config,
            http,
            inputs_tx,
            inputs,
            outgoing,
            generation: 0,
            subscribed: false,
            ever_subscribed: false,
            started_at: Instant::now(),
            disconnected_at: None,
            resubscribe_at: None,
            backoff: INITIAL_BACKOFF,
            in_subscribe: HashSet::new(),
            tasks: Vec::new(),
            pending: Vec::new(),
            exit_by: None,
        }
    }

    /// Runs until SHUTDOWN, SIGTERM or the loss of the agent; the exit code.
    async fn run(mut self) -> i32 {
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let mut resend = tokio::time::interval(RESEND_INTERVAL);
        resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.subscribe();
        loop {
            let code = tokio::select! {
                Some(input) = self.inputs.recv() => self.on_input(input),
                _ = sleep_until(self.resubscribe_at) => {
                    self.resubscribe_at = None;
                    self.subscribe();
                    None
                }
                _ = sleep_until(self.exit_by) => {
                    log!("{} update(s) still unacknowledged at the end of the shutdown grace period; exiting", self.pending.len());
                    Some(0)
                }
                _ = resend.tick() => {
                    self.resend(false);
                    None
                }
                _ = async { sigterm.as_mut()?.recv().await }, if sigterm.is_some() => {
                    log!("SIGTERM: killing the tasks and exiting");
                    self.shutdown(Duration::from_secs(1))
                }
            };
            if let Some(code) = code {
                return code;
            }
        }
    }

    fn on_input(&mut self, input: Input) -> Option<i32> {
        match input {
            Input::Connected(generation) if generation == self.generation => {
                log!("SUBSCRIBE accepted (attempt {generation})");
                None
            }
            Input::Event(generation, event) if generation == self.generation => self.on_event(*event),
            Input::Disconnected(generation, reason) if generation == self.generation => self.on_disconnected(reason),
            Input::TaskEnded { task_id, state, message } => {
                if self.task(&task_id).is_some_and(|t| !t.state.is_terminal()) {
                    self.update(&task_id, state, Some(message), None);
                }
                self.done_if_shutting_down()
            }
            // A report of an attempt that was superseded.
            _ => None,
        }
    }

    /// Starts a SUBSCRIBE attempt that carries what the agent may not have.
    fn subscribe(&mut self) {
        self.generation += 1;
        self.subscribed = false;
        let unacknowledged_tasks: Vec<TaskInfo> = self.tasks.iter().filter(|t| !t.acknowledged).map(|t| t.info.clone()).collect();
        let unacknowledged_updates: Vec<call::Update> = self.pending.iter().map(|p| p.update.clone()).collect();
        self.in_subscribe = unacknowledged_updates.iter().filter_map(|u| u.status.uuid.clone()).collect();
        log!(
            "subscribing to {} ({:?}, attempt {}, {} unacknowledged task(s), {} unacknowledged update(s))",
            self.config.url,
            self.config.content_type,
            self.generation,
            unacknowledged_tasks.len(),
            unacknowledged_updates.len()
        );
        let mut call = self.call(call::Type::Subscribe);
        call.subscribe = Some(call::Subscribe { unacknowledged_tasks, unacknowledged_updates });
        let request = self.post(&call).header("Accept", self.config.content_type.mime());
        tokio::spawn(stream_events(request, self.config.content_type, self.generation, self.inputs_tx.clone()));
    }

    fn on_disconnected(&mut self, reason: String) -> Option<i32> {
        self.subscribed = false;
        if self.exit_by.is_some() {
            log!("lost the agent while shutting down ({reason}); exiting");
            return Some(0);
        }
        let now = Instant::now();
        if self.ever_subscribed && !self.config.checkpoint {
            log!("lost the agent ({reason}) and the framework does not checkpoint; exiting");
            return Some(1);
        }
        let (since, limit) = match self.ever_subscribed {
            true => (*self.disconnected_at.get_or_insert(now), self.config.recovery_timeout),
            false => (self.started_at, REGISTRATION_LIMIT),
        };
        if now.duration_since(since) >= limit {
            log!("could not subscribe to the agent within {limit:?} ({reason}); exiting");
            return Some(1);
        }
        let delay = self.backoff;
        log!("not subscribed ({reason}); trying again in {delay:?}");
        self.resubscribe_at = Some(now + delay);
        self.backoff = (self.backoff * 2).min(self.config.backoff_max.max(INITIAL_BACKOFF));
        None
    }

    fn on_event(&mut self, event: Event) -> Option<i32> {
        match event.r#type() {
            event::Type::Subscribed => {
                let subscribed = event.subscribed?;
                if subscribed.executor_info.executor_id != self.config.executor_id {
                    log!("SUBSCRIBED for executor '{}', but this is '{}'", subscribed.executor_info.executor_id.value, self.config.executor_id.value);
                    return Some(1);
                }
                if let Some(id) = subscribed.agent_info.id {
                    self.config.agent_id = Some(id);
                }
                log!(
                    "SUBSCRIBED (agent {:?}, container {:?})",
                    self.config.agent_id.as_ref().map(|a| &a.value),
                    subscribed.container_id.as_ref().map(|c| &c.value)
                );
                self.subscribed = true;
                self.ever_subscribed = true;
                self.disconnected_at = None;
                self.backoff = INITIAL_BACKOFF;
                // Updates made while the SUBSCRIBE was under way were in no call yet.
                self.resend(true);
                None
            }
            event::Type::Launch => {
                let launch = event.launch?;
                self.launch(launch.task);
                None
            }
            event::Type::LaunchGroup => {
                for task in event.launch_group?.task_group.tasks {
                    log!("task {}: task groups are not supported", task.task_id.value);
                    let task_id = task.task_id.clone();
                    self.tasks.push(Task { info: task, state: TaskState::TaskStaging, acknowledged: false, timer: None });
                    self.update(&task_id, TaskState::TaskFailed, Some("mezzo-test-executor runs no task groups".into()), None);
                }
                None
            }
            event::Type::Kill => {
                let kill = event.kill?;
                match self.task(&kill.task_id).map(|t| t.state) {
                    Some(state) if !state.is_terminal() => {
                        log!("KILL of task {}", kill.task_id.value);
                        self.kill(&kill.task_id);
                    }
                    Some(state) => log!("KILL of task {} that already ended {state:?} (ignored)", kill.task_id.value),
                    None => log!("KILL of unknown task {} (ignored)", kill.task_id.value),
                }
                self.done_if_shutting_down()
            }
            event::Type::Acknowledged => {
                let ack = event.acknowledged?;
                match self.pending.iter().position(|p| p.update.status.uuid.as_deref() == Some(&ack.uuid[..])) {
                    Some(i) => {
                        let p = self.pending.remove(i);
                        log!("update {:?} of task {} acknowledged", p.update.status.state(), ack.task_id.value);
                    }
                    None => log!("ACKNOWLEDGED for an unknown update of task {} (ignored)", ack.task_id.value),
                }
                if let Some(task) = self.task_mut(&ack.task_id) {
                    task.acknowledged = true;
                }
                self.done_if_shutting_down()
            }
            event::Type::Message => {
                let data = event.message?.data;
                self.on_message(&data)
            }
            event::Type::Shutdown => {
                log!("SHUTDOWN: killing the tasks and exiting");
                // Leave the agent a second of its grace period to see our updates.
                let grace = self.config.shutdown_grace.saturating_sub(Duration::from_secs(1)).max(Duration::from_millis(500));
                self.shutdown(grace)
            }
            event::Type::Error => {
                log!("ERROR event: {}", event.error.map(|e| e.message).unwrap_or_default());
                None
            }
            event::Type::Heartbeat => None,
            event::Type::Unknown => {
                log!("event of unknown type (ignored)");
                None
            }
        }
    }

    fn launch(&mut self, info: TaskInfo) {
        let task_id = info.task_id.clone();
        if self.task(&task_id).is_some() {
            log!("LAUNCH of task {} that this executor already has (ignored)", task_id.value);
            return;
        }
        let behaviour = parse_behaviour(info.data.as_deref().unwrap_or_default());
        log!("LAUNCH of task {}: {behaviour:?}", task_id.value);
        self.tasks.push(Task { info, state: TaskState::TaskStaging, acknowledged: false, timer: None });
        let behaviour = match behaviour {
            Ok(b) => b,
            Err(message) => {
                self.update(&task_id, TaskState::TaskFailed, Some(message), None);
                return;
            }
        };
        self.update(&task_id, TaskState::TaskRunning, None, None);
        match behaviour {
            Behaviour::Forever => {}
            Behaviour::Fail(code) => {
                self.update(&task_id, TaskState::TaskFailed, Some(format!("Command exited with status {code}")), None);
            }
            Behaviour::Run(after) => {
                let tx = self.inputs_tx.clone();
                let id = task_id.clone();
                let timer = tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let message = format!("ran for {after:?}");
                    let _ = tx.send(Input::TaskEnded { task_id: id, state: TaskState::TaskFinished, message });
                });
                if let Some(task) = self.task_mut(&task_id) {
                    task.timer = Some(timer);
                }
            }
        }
    }

    fn kill(&mut self, task_id: &TaskId) {
        if let Some(timer) = self.task_mut(task_id).and_then(|t| t.timer.take()) {
            timer.abort();
        }
        self.update(task_id, TaskState::TaskKilled, Some("Killed by the scheduler".into()), None);
    }

    /// A framework message: one command.
    fn on_message(&mut self, data: &[u8]) -> Option<i32> {
        let text = String::from_utf8_lossy(data).into_owned();
        log!("MESSAGE: {text:?}");
        let (command, rest) = text.split_once(' ').unwrap_or((text.as_str(), ""));
        match command {
            "echo" => {
                let mut call = self.call(call::Type::Message);
                call.message = Some(call::Message { data: rest.as_bytes().to_vec() });
                let _ = self.outgoing.send(call);
            }
            "exit" => {
                let code: i32 = rest.trim().parse().unwrap_or(1);
                let running = self.tasks.iter().filter(|t| !t.state.is_terminal()).count();
                log!("exiting with code {code}, {running} task(s) still running");
                std::process::exit(code);
            }
            "crash" => {
                log!("aborting");
                std::process::abort();
            }
            "finish" => {
                let task_id = TaskId { value: rest.trim().to_string() };
                match self.task(&task_id).map(|t| t.state) {
                    Some(state) if !state.is_terminal() => {
                        if let Some(timer) = self.task_mut(&task_id).and_then(|t| t.timer.take()) {
                            timer.abort();
                        }
                        self.update(&task_id, TaskState::TaskFinished, Some("finished on the scheduler's message".into()), None);
                    }
                    other => log!("finish: task {} is {other:?} (ignored)", task_id.value),
                }
            }
            _ => log!("unknown command {command:?} (echo, exit, crash, finish)"),
        }
        None
    }

    /// Kills every running task and exits once their updates are
    /// acknowledged, or after `grace`.
    fn shutdown(&mut self, grace: Duration) -> Option<i32> {
        let running: Vec<TaskId> = self.tasks.iter().filter(|t| !t.state.is_terminal()).map(|t| t.info.task_id.clone()).collect();
        for task_id in running {
            self.kill(&task_id);
        }
        let by = Instant::now() + grace;
        self.exit_by = Some(self.exit_by.map_or(by, |t| t.min(by)));
        self.done_if_shutting_down()
    }

    fn done_if_shutting_down(&self) -> Option<i32> {
        (self.exit_by.is_some() && self.pending.is_empty()).then(|| {
            log!("every update acknowledged; exiting");
            0
        })
    }

    /// Makes an update, keeps it until acknowledged, sends it when subscribed.
    fn update(&mut self, task_id: &TaskId, state: TaskState, message: Option<String>, reason: Option<task_status::Reason>) {
        let status = TaskStatus {
            task_id: task_id.clone(),
            state: state as i32,
            source: Some(task_status::Source::Executor as i32),
            uuid: Some(mezzo_proto::new_uuid()),
            timestamp: Some(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()),
            executor_id: Some(self.config.executor_id.clone()),
            agent_id: self.config.agent_id.clone(),
            message,
            reason: reason.map(|r| r as i32),
            ..Default::default()
        };
        if let Some(task) = self.task_mut(task_id) {
            task.state = state;
        }
        log!("task {}: {:?}", task_id.value, state);
        let update = call::Update { status };
        let sent_at = self.subscribed.then(Instant::now);
        if self.subscribed {
            let mut call = self.call(call::Type::Update);
            call.update = Some(update.clone());
            let _ = self.outgoing.send(call);
        }
        self.pending.push(Pending { update, sent_at });
    }

    /// Sends the unacknowledged updates again: all those not in the last
    /// SUBSCRIBE (`after_subscribe`), else those sent over RESEND_INTERVAL ago.
    fn resend(&mut self, after_subscribe: bool) {
        if !self.subscribed {
            return;
        }
        let now = Instant::now();
        let mut calls = Vec::new();
        for p in &mut self.pending {
            let due = match after_subscribe {
                true => !p.update.status.uuid.as_ref().is_some_and(|u| self.in_subscribe.contains(u)),
                false => p.sent_at.is_none_or(|t| now.duration_since(t) >= RESEND_INTERVAL),
            };
            if due {
                p.sent_at = Some(now);
                calls.push(p.update.clone());
            }
        }
        for update in calls {
            let mut call = self.call(call::Type::Update);
            call.update = Some(update);
            let _ = self.outgoing.send(call);
        }
    }

    fn task(&self, id: &TaskId) -> Option<&Task> {
        self.tasks.iter().find(|t| &t.info.task_id == id)
    }

    fn task_mut(&mut self, id: &TaskId) -> Option<&mut Task> {
        self.tasks.iter_mut().find(|t| &t.info.task_id == id)
    }

    fn call(&self, kind: call::Type) -> Call {
        Call {
            executor_id: self.config.executor_id.clone(),
            framework_id: self.config.framework_id.clone(),
            r#type: Some(kind as i32),
            ..Default::default()
        }
    }

    fn post(&self, call: &Call) -> reqwest::RequestBuilder {
        post(&self.http, &self.config.url, self.config.authorization.as_deref(), self.config.content_type, call)
    }
}

fn post(http: &reqwest::Client, url: &str, authorization: Option<&str>, content_type: ContentType, call: &Call) -> reqwest::RequestBuilder {
    let request = http.post(url).header("Content-Type", content_type.mime()).body(encode(call, content_type));
    match authorization {
        Some(value) => request.header("Authorization", value),
        None => request,
    }
}

/// Sends SUBSCRIBE and forwards its events until the stream ends; always
/// ends with `Disconnected`.
async fn stream_events(request: reqwest::RequestBuilder, content_type: ContentType, generation: u64, tx: mpsc::UnboundedSender<Input>) {
    let result = async {
        let response = request.send().await.context("SUBSCRIBE")?;
        let status = response.status();
        if status != 200 {
            bail!("SUBSCRIBE answered {status}: {}", response.text().await.unwrap_or_default());
        }
        let _ = tx.send(Input::Connected(generation));
        let mut decoder = mezzo_proto::recordio::Decoder::new(MAX_EVENT_BYTES);
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            decoder.feed(&chunk.context("event stream")?);
            while let Some(record) = decoder.next_record()? {
                let event = decode_event(&record, content_type)?;
                if tx.send(Input::Event(generation, Box::new(event))).is_err() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
    .await;
    let reason = match result {
        Ok(()) => "the agent closed the event stream".to_string(),
        Err(e) => format!("{e:#}"),
    };
    let _ = tx.send(Input::Disconnected(generation, reason));
}

/// Decodes an event. Protobuf goes through plain prost, as executor
/// libraries decode it: the required-field check of `codec::decode` builds
/// the descriptor pool on first use, milliseconds of CPU on the path from
/// SUBSCRIBED to the first update. JSON goes through the JSON mapping.
fn decode_event(record: &[u8], content_type: ContentType) -> Result<Event> {
    match content_type {
        ContentType::Protobuf => <Event as prost::Message>::decode(record).context("decode an event"),
        ContentType::Json => Ok(decode(record, content_type)?),
    }
}

/// Posts calls one at a time, in order; each must be answered 202. A failed
/// UPDATE stays unacknowledged and is sent again; a failed MESSAGE is lost
/// (framework messages are best effort).
fn spawn_sender(http: reqwest::Client, url: String, authorization: Option<String>, content_type: ContentType) -> mpsc::UnboundedSender<Call> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Call>();
    tokio::spawn(async move {
        while let Some(call) = rx.recv().await {
            let what = match &call.update {
                Some(u) => format!("UPDATE {:?} of task {}", u.status.state(), u.status.task_id.value),
                None => format!("{:?}", call.r#type()),
            };
            let response = post(&http, &url, authorization.as_deref(), content_type, &call).timeout(CALL_TIMEOUT).send().await;
            match response {
                Ok(r) if r.status() == 202 => {}
                Ok(r) => {
                    let code = r.status();
                    log!("{what}: the agent answered {code}: {}", r.text().await.unwrap_or_default());
                }
                Err(e) => log!("{what}: {e}"),
            }
        }
    });
    tx
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match Config::from_env(&args) {
        Ok(c) => c,
        Err(e) => {
            log!("{e:#}");
            std::process::exit(2);
        }
    };
    log!(
        "executor {} of framework {} starting (agent {}, checkpoint {}, recovery timeout {:?}, backoff max {:?})",
        config.executor_id.value,
        config.framework_id.value,
        config.url,
        config.checkpoint,
        config.recovery_timeout,
        config.backoff_max
    );
    if args.iter().any(|a| a == "--no-subscribe") {
        log!("--no-subscribe: sleeping {NO_SUBSCRIBE_SLEEP:?} without subscribing");
        std::thread::sleep(NO_SUBSCRIBE_SLEEP);
        std::process::exit(0);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            log!("cannot start the runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = runtime.block_on(async { Executor::new(config).run().await });
    runtime.shutdown_timeout(Duration::from_millis(500));
    log!("exiting with code {code}");
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaviours_parse() {
        assert_eq!(parse_behaviour(b"run 1.5"), Ok(Behaviour::Run(Duration::from_millis(1500))));
        assert_eq!(parse_behaviour(b"fail 3"), Ok(Behaviour::Fail(3)));
        assert_eq!(parse_behaviour(b" forever\n"), Ok(Behaviour::Forever));
        for bad in [&b"run"[..], b"run -1", b"run x", b"fail", b"sleep 3", b"", b"\xff"] {
            assert!(parse_behaviour(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
