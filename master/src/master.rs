//! The master's bookkeeping: frameworks, agents, offers and tasks.
//!
//! Everything lives in one `Master` behind a mutex. Its methods never await:
//! events go to schedulers through unbounded channels and messages to agents
//! through their `AgentLink` queues, so the lock is held only for bookkeeping.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use mezzo_proto::mesos::v1::framework_info::capability::Type as FrameworkCapability;
use mezzo_proto::mesos::v1::scheduler::{event, Event};
use mezzo_proto::mesos::v1::{
    task_status, AgentId, AgentInfo, ExecutorInfo, FrameworkId, FrameworkInfo, MasterInfo, Offer, TaskId,
    TaskInfo, TaskState, TaskStatus,
};
use tokio::sync::{mpsc, Notify};

use crate::agent_link::{AgentLink, LinkReport};
use crate::config::MasterConfig;
use crate::registrar::{Registrar, Writer};
use mezzo_proto::mezzo::registry::RegistryAgent;
use crate::resources::Resources;

/// How many completed tasks a framework remembers (Mesos: `--max_completed_tasks_per_framework` 1000).
pub(crate) const MAX_COMPLETED_TASKS: usize = 1000;
/// How many removed frameworks the master remembers (Mesos: `--max_completed_frameworks` 50).
pub(crate) const MAX_COMPLETED_FRAMEWORKS: usize = 50;
/// The version we report; numeric so that pymesos can parse it.
pub const MESOS_VERSION: &str = "1.11.0";

/// State shared by the HTTP handlers and the background loops.
pub(crate) struct Shared {
    master: Mutex<Master>,
    /// Wakes the allocator when something changed that may produce offers.
    pub(crate) allocation_wanted: Arc<Notify>,
    /// The configuration the master was started with.
    pub(crate) config: MasterConfig,
}

impl Shared {
    pub(crate) fn new(master: Master, config: MasterConfig) -> Arc<Self> {
        let allocation_wanted = master.allocation_wanted.clone();
        Arc::new(Self {
            master: Mutex::new(master),
            allocation_wanted,
            config,
        })
    }

    /// Locks the master; a poisoned lock is recovered because every method
    /// leaves the bookkeeping consistent before it could panic.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Master> {
        self.master.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A scheduler's live event stream.
#[derive(Debug)]
pub(crate) struct Subscription {
    /// The `Mesos-Stream-Id` of the stream.
    pub(crate) stream_id: String,
    pub(crate) tx: mpsc::UnboundedSender<Event>,
}

/// A refusal to be offered some resources of an agent until a deadline.
#[derive(Debug, Clone)]
pub(crate) struct OfferFilter {
    pub(crate) agent_id: String,
    pub(crate) resources: Resources,
    pub(crate) expires: Instant,
}

/// A task the master knows about.
#[derive(Debug, Clone)]
pub(crate) struct TaskRecord {
    /// The TaskInfo as launched, `agent_id` filled in.
    pub(crate) info: TaskInfo,
    pub(crate) framework_id: String,
    pub(crate) agent_id: String,
    pub(crate) state: TaskState,
    /// Every distinct status received, oldest first.
    pub(crate) statuses: Vec<TaskStatus>,
    /// What the task holds on its agent while not terminal (its own
    /// resources: its executor's are counted once, in `Agent::executors`).
    pub(crate) resources: Resources,
    /// When the master launched it, seconds since the epoch.
    pub(crate) launched_at: f64,
    /// The agent accepted its RUN_TASK (or reported it at registration).
    pub(crate) delivered: bool,
}

impl TaskRecord {
    /// The uuid of the latest status, when it carried one.
    pub(crate) fn latest_uuid(&self) -> Option<&[u8]> {
        self.statuses.last().and_then(|s| s.uuid.as_deref())
    }
}

/// A framework known to the master.
#[derive(Debug)]
pub(crate) struct Framework {
    pub(crate) id: String,
    /// The latest FrameworkInfo, with `id` set.
    pub(crate) info: FrameworkInfo,
    pub(crate) subscription: Option<Subscription>,
    pub(crate) suppressed: bool,
    pub(crate) filters: Vec<OfferFilter>,
    pub(crate) tasks: BTreeMap<String, TaskRecord>,
    pub(crate) completed_tasks: VecDeque<TaskRecord>,
    pub(crate) registered_time: f64,
    pub(crate) unregistered_time: Option<f64>,
    /// Offers sent so far; the allocator favours frameworks with fewer.
    pub(crate) offers_sent: u64,
    /// Bumped on every subscription, so a stale failover timer does nothing.
    pub(crate) epoch: u64,
}

impl Framework {
    /// Whether the framework declared the PARTITION_AWARE capability.
    pub(crate) fn partition_aware(&self) -> bool {
        self.info
            .capabilities
            .iter()
            .any(|c| c.r#type() == FrameworkCapability::PartitionAware)
    }

    /// Sends an event on the live stream, if any.
    pub(crate) fn send(&self, event: Event) {
        if let Some(sub) = &self.subscription {
            if sub.tx.send(event).is_err() {
                tracing::debug!(framework_id = %self.id, "event dropped: stream closed");
            }
        }
    }

    /// Moves a task out of the active map into the bounded completed list.
    pub(crate) fn complete_task(&mut self, task_id: &str) {
        if let Some(task) = self.tasks.remove(task_id) {
            self.completed_tasks.push_back(task);
            while self.completed_tasks.len() > MAX_COMPLETED_TASKS {
                self.completed_tasks.pop_front();
            }
        }
    }
}

/// A custom executor the master counts on an agent (Mesos's
/// `Slave::executors`): it holds its own resources there from the launch of
/// the first task naming it until it exits, whatever becomes of its tasks.
#[derive(Debug, Clone)]
pub(crate) struct ExecutorRecord {
    /// As the first task named it (or the agent reported it), `framework_id` set.
    pub(crate) info: ExecutorInfo,
    /// The executor's own resources (`ExecutorInfo.resources`).
    pub(crate) resources: Resources,
    /// The agent has it: it accepted a RUN_TASK naming it, or reported it.
    pub(crate) delivered: bool,
}

/// Key of an executor on an agent: (framework id, executor id).
pub(crate) type ExecutorKey = (String, String);

/// An agent registered with the master.
#[derive(Debug)]
pub(crate) struct Agent {
    pub(crate) id: String,
    /// The AgentInfo as registered, with `id` set.
    pub(crate) info: AgentInfo,
    /// `host:port` where the agent serves.
    pub(crate) endpoint: String,
    pub(crate) total: Resources,
    /// Held by non-terminal tasks and live executors.
    pub(crate) used: Resources,
    /// The custom executors running there.
    pub(crate) executors: BTreeMap<ExecutorKey, ExecutorRecord>,
    /// Held by the outstanding offer.
    pub(crate) offered: Resources,
    pub(crate) offer_id: Option<String>,
    pub(crate) last_ping: Instant,
    pub(crate) registered_time: f64,
    pub(crate) link: AgentLink,
    /// SHA-256 of the token the agent presents in this session.
    pub(crate) token_hash: [u8; 32],
}

impl Agent {
    /// Resources neither used by tasks or executors nor offered.
    pub(crate) fn available(&self) -> Resources {
        let mut free = self.total.minus(&self.used);
        free.subtract(&self.offered);
        free
    }

    /// `slave(1)@ip:port`, the libprocess pid Mesos tools split on `@`.
    pub(crate) fn pid(&self) -> String {
        format!("slave(1)@{}", self.endpoint)
    }
}

/// An outstanding offer.
#[derive(Debug, Clone)]
pub(crate) struct OfferRecord {
    pub(crate) offer: Offer,
    pub(crate) framework_id: String,
    pub(crate) agent_id: String,
    pub(crate) resources: Resources,
}

/// Counters for `/metrics/snapshot`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Counters {
    pub(crate) status_updates: u64,
    pub(crate) offers_sent: u64,
    pub(crate) offers_declined: u64,
    pub(crate) offers_accepted: u64,
    pub(crate) offers_rescinded: u64,
    pub(crate) tasks_launched: u64,
    pub(crate) tasks_invalid: u64,
    pub(crate) agent_registrations: u64,
    pub(crate) agent_reregistrations: u64,
    pub(crate) agent_removals: u64,
    pub(crate) framework_subscriptions: u64,
    pub(crate) framework_teardowns: u64,
    pub(crate) invalid_calls: u64,
    pub(crate) invalid_status_updates: u64,
    pub(crate) messages_framework_to_executor: u64,
    pub(crate) valid_framework_to_executor_messages: u64,
    pub(crate) invalid_framework_to_executor_messages: u64,
    pub(crate) messages_executor_to_framework: u64,
    pub(crate) valid_executor_to_framework_messages: u64,
    pub(crate) invalid_executor_to_framework_messages: u64,
    pub(crate) messages_exited_executor: u64,
}

/// The whole bookkeeping of the master.
pub(crate) struct Master {
    /// The master's UUID, prefix of every id it generates.
    pub(crate) id: String,
    pub(crate) info: MasterInfo,
    pub(crate) config: MasterConfig,
    pub(crate) client: reqwest::Client,
    pub(crate) start_time: f64,
    pub(crate) frameworks: BTreeMap<String, Framework>,
    pub(crate) completed_frameworks: VecDeque<Framework>,
    pub(crate) agents: BTreeMap<String, Agent>,
    pub(crate) offers: BTreeMap<String, OfferRecord>,
    pub(crate) next_framework: u64,
    pub(crate) next_agent: u64,
    pub(crate) next_offer: u64,
    pub(crate) counters: Counters,
    pub(crate) allocation_wanted: Arc<Notify>,
    /// SHA-256 of each live session token -> the agent it belongs to.
    pub(crate) agent_tokens: HashMap<[u8; 32], String>,
    /// SHA-256 of each agent's persistent secret, kept after the agent is
    /// removed so that nobody else can take its id.
    pub(crate) agent_secrets: HashMap<String, [u8; 32]>,
    /// Where agent links report what became of RUN_TASKs.
    pub(crate) link_reports: mpsc::UnboundedSender<LinkReport>,
    /// How long allocation runs take (`allocator/mesos/allocation_run_ms`).
    pub(crate) allocation_timer: crate::allocator::AllocationTimer,
    /// The agents the next allocation run looks at.
    pub(crate) allocation_candidates: crate::allocator::Candidates,
    /// The operator API's event streams (SUBSCRIBE on `/api/v1`).
    pub(crate) operator: crate::operator::Operator,
    /// Queues the registry's writes (see `registrar`).
    pub(crate) registrar: Registrar,
    /// The writer of `registrar`'s queue, until `serve` starts it.
    pub(crate) registry_writer: Option<Writer>,
    /// Agents of the registry that have not re-registered since this master
    /// recovered it (Mesos's `slaves.recovered`).
    pub(crate) recovered_agents: BTreeMap<String, RegistryAgent>,
    /// Agents marked unreachable (Mesos's `slaves.unreachable`); they may
    /// come back.
    pub(crate) unreachable_agents: BTreeMap<String, RegistryAgent>,
    /// Agents marked gone (Mesos's `slaves.gone`); they never come back.
    pub(crate) gone_agents: BTreeMap<String, RegistryAgent>,
}

/// Seconds since the epoch, as Mesos timestamps are.
pub(crate) fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A status generated by the master: source MASTER and, as Mesos does for
/// its own updates, no uuid, so schedulers do not acknowledge it.
pub(crate) fn master_status(
    task_id: &str,
    agent_id: Option<&str>,
    state: TaskState,
    reason: task_status::Reason,
    message: impl Into<String>,
) -> TaskStatus {
    TaskStatus {
        task_id: TaskId {
            value: task_id.to_string(),
        },
        state: state as i32,
        message: Some(message.into()),
        source: Some(task_status::Source::Master as i32),
        reason: Some(reason as i32),
        agent_id: agent_id.map(|a| AgentId {
            value: a.to_string(),
        }),
        timestamp: Some(now_secs()),
        ..Default::default()
    }
}

/// An UPDATE event carrying `status`.
pub(crate) fn update_event(status: TaskStatus) -> Event {
    Event {
        r#type: Some(event::Type::Update as i32),
        update: Some(event::Update {
            status,
        }),
        ..Default::default()
    }
}

/// An ERROR event.
pub(crate) fn error_event(message: &str) -> Event {
    Event {
        r#type: Some(event::Type::Error as i32),
        error: Some(event::Error {
            message: message.to_string(),
        }),
        ..Default::default()
    }
}

/// A HEARTBEAT event.
pub(crate) fn heartbeat_event() -> Event {
    Event {
        r#type: Some(event::Type::Heartbeat as i32),
        ..Default::default()
    }
}

/// Wraps an id string into a `FrameworkId`.
pub(crate) fn framework_id(value: &str) -> FrameworkId {
    FrameworkId {
        value: value.to_string(),
    }
}

impl Master {
    /// A master with no frameworks and no agents.
    pub(crate) fn new(
        id: String,
        info: MasterInfo,
        config: MasterConfig,
        client: reqwest::Client,
        link_reports: mpsc::UnboundedSender<LinkReport>,
    ) -> Self {
        let (registrar, registry_writer) = Registrar::new(config.registry.describe());
        Self {
            id,
            info,
            config,
            client,
            start_time: now_secs(),
            frameworks: BTreeMap::new(),
            completed_frameworks: VecDeque::new(),
            agents: BTreeMap::new(),
            offers: BTreeMap::new(),
            next_framework: 0,
            next_agent: 0,
            next_offer: 0,
            counters: Counters::default(),
            allocation_wanted: Arc::new(Notify::new()),
            agent_tokens: HashMap::new(),
            agent_secrets: HashMap::new(),
            link_reports,
            allocation_timer: Default::default(),
            allocation_candidates: Default::default(),
            operator: Default::default(),
            registrar,
            registry_writer: Some(registry_writer),
            recovered_agents: BTreeMap::new(),
            unreachable_agents: BTreeMap::new(),
            gone_agents: BTreeMap::new(),
        }
    }

    /// Asks the allocator to run soon, over every agent: something changed
    /// that may concern any of them (a framework came, revived, left...).
    pub(crate) fn wake_allocator(&mut self) {
        self.allocation_candidates.all = true;
        self.allocation_wanted.notify_one();
    }

    /// Asks the allocator to run soon over `agent_id`, whose free resources
    /// changed (Mesos's allocation candidates): with many agents, the runs
    /// that events trigger cost what changed, not the cluster's size.
    pub(crate) fn wake_allocator_for(&mut self, agent_id: &str) {
        if !self.allocation_candidates.all {
            self.allocation_candidates.agents.insert(agent_id.to_string());
        }
        self.allocation_wanted.notify_one();
    }

    /// Sends an UPDATE to a framework, if it is connected.
    pub(crate) fn send_update(&self, framework_id: &str, status: TaskStatus) {
        if let Some(fw) = self.frameworks.get(framework_id) {
            fw.send(update_event(status));
        }
    }
}
