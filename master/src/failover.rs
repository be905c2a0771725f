//! What survives the master's loss: recovery from the registry at start,
//! the agents that do not come back (`--agent_reregister_timeout`), agents
//! marked unreachable or gone, and the registry records of agents and
//! frameworks.
//!
//! Task rules follow Mesos 1.x: the tasks of an agent marked unreachable go
//! TASK_UNREACHABLE for PARTITION_AWARE frameworks and TASK_LOST otherwise
//! (the master keeps them as unreachable tasks either way); when the agent
//! re-registers, the tasks it still runs are re-added and their frameworks
//! get an update with the task's current state and REASON_AGENT_REREGISTERED
//! (since Mesos 1.5 the tasks of non-partition-aware frameworks are no
//! longer killed then). An agent marked gone never comes back: its tasks go
//! TASK_GONE_BY_OPERATOR (TASK_LOST for frameworks that are not partition
//! aware), it is told to shut down, and a re-registration under its id is
//! refused with 410 (the agent shuts down on it).

use std::sync::Arc;
use std::time::Duration;

use mezzo_proto::mesos::v1::scheduler::{event, Event};
use mezzo_proto::mesos::v1::{task_status::Reason, AgentId, TaskState};
use mezzo_proto::mezzo::agent::{master_to_agent, MasterToAgent, ShutdownAgent};
use mezzo_proto::mezzo::registry::{registry_agent::State as AgentState, RegistryAgent, RegistryFramework};

use crate::error::CallError;
use crate::master::{master_status, now_secs, Framework, Master, Shared};
use crate::registrar::Recovered;

impl Master {
    /// The registry record of a registered agent.
    pub(crate) fn agent_record(&self, id: &str) -> Option<RegistryAgent> {
        let agent = self.agents.get(id)?;
        Some(RegistryAgent {
            info: agent.info.clone(),
            endpoint: Some(agent.endpoint.clone()),
            secret_hash: self.agent_secrets.get(id).map(|h| h.to_vec()),
            state: Some(AgentState::Admitted as i32),
            registered_time: Some(agent.registered_time),
            ..Default::default()
        })
    }

    /// Queues the registry record of framework `id` (its latest FrameworkInfo
    /// and when it disconnected).
    pub(crate) fn record_framework(&mut self, id: &str) {
        let Some(fw) = self.frameworks.get(id) else {
            return;
        };
        let record = RegistryFramework {
            info: fw.info.clone(),
            registered_time: Some(fw.registered_time),
            unregistered_time: fw.unregistered_time,
        };
        self.registrar.put_framework(&record);
    }

    /// Takes what the registry held at start: admitted agents wait to
    /// re-register (their secrets keep their ids theirs), unreachable and
    /// gone agents are remembered, frameworks are known and disconnected
    /// from now on. Returns the frameworks' failover timeouts, to be timed
    /// from now.
    pub(crate) fn recover(&mut self, recovered: Recovered) -> Vec<(String, f64)> {
        let now = now_secs();
        for record in recovered.agents {
            let Some(id) = record.info.id.as_ref().map(|i| i.value.clone()) else {
                continue;
            };
            if let Some(hash) = record.secret_hash.as_deref().and_then(|h| <[u8; 32]>::try_from(h).ok()) {
                self.agent_secrets.insert(id.clone(), hash);
            }
            match record.state() {
                AgentState::Admitted => {
                    self.recovered_agents.insert(id, record);
                }
                AgentState::Unreachable => {
                    self.unreachable_agents.insert(id, record);
                }
                AgentState::Gone => {
                    self.gone_agents.insert(id, record);
                }
            }
        }
        let mut timeouts = Vec::new();
        for record in recovered.frameworks {
            let Some(id) = record.info.id.as_ref().map(|i| i.value.clone()) else {
                continue;
            };
            timeouts.push((id.clone(), record.info.failover_timeout.unwrap_or(0.0)));
            self.frameworks.insert(
                id.clone(),
                Framework {
                    id,
                    info: record.info,
                    subscription: None,
                    suppressed: false,
                    filters: Vec::new(),
                    tasks: Default::default(),
                    completed_tasks: Default::default(),
                    registered_time: record.registered_time.unwrap_or(now),
                    // Disconnected from the recovery on: its failover timeout counts from now.
                    unregistered_time: Some(now),
                    offers_sent: 0,
                    epoch: 0,
                },
            );
        }
        tracing::info!(
            agents = self.recovered_agents.len(),
            unreachable = self.unreachable_agents.len(),
            gone = self.gone_agents.len(),
            frameworks = timeouts.len(),
            registry = %self.config.registry.describe(),
            "recovered the registry"
        );
        timeouts
    }

    /// `--agent_reregister_timeout` after the recovery: the agents that did
    /// not come back are marked unreachable (Mesos's `recoveredSlavesTimeout`).
    /// The master knows none of their tasks: their frameworks learn of them
    /// through reconciliation (TASK_UNREACHABLE, or TASK_LOST).
    pub(crate) fn recovered_agents_timeout(&mut self) {
        let now = now_secs();
        for (id, mut record) in std::mem::take(&mut self.recovered_agents) {
            tracing::warn!(agent_id = %id, "agent did not re-register within --agent_reregister_timeout: marking it unreachable");
            record.state = Some(AgentState::Unreachable as i32);
            record.unreachable_time = Some(now);
            self.registrar.put_agent(&record);
            self.counters.agent_removals += 1;
            self.unreachable_agents.insert(id, record);
        }
    }

    /// Marks a registered agent unreachable (silent past its ping timeouts):
    /// its tasks go TASK_UNREACHABLE (TASK_LOST for frameworks that are not
    /// partition aware) and the registry records it unreachable.
    pub(crate) fn mark_agent_unreachable(&mut self, id: &str, why: &str) {
        let Some(mut record) = self.agent_record(id) else {
            return;
        };
        self.remove_agent(id, why);
        record.state = Some(AgentState::Unreachable as i32);
        record.unreachable_time = Some(now_secs());
        self.registrar.put_agent(&record);
        self.unreachable_agents.insert(id.to_string(), record);
    }

    /// MARK_AGENT_GONE: the agent (registered, recovered or unreachable) is
    /// gone for good. Its tasks go TASK_GONE_BY_OPERATOR (TASK_LOST for
    /// frameworks that are not partition aware) with
    /// REASON_AGENT_REMOVED_BY_OPERATOR, a registered agent is told to shut
    /// down (SHUTDOWN_AGENT: it destroys its containers and exits), and the
    /// registry records it gone, so that it may never register again under
    /// this id (after a failover too: 410, on which the agent shuts down).
    ///
    /// Durability: the registry write is queued on `self.registrar`; call it
    /// through `Shared::durably(|m| m.mark_agent_gone(id))` and answer once
    /// that returns (Ok: the agent is recorded gone; 503 when the registry
    /// could not be written).
    // Wired to the operator API's MARK_AGENT_GONE.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn mark_agent_gone(&mut self, agent_id: &str) -> Result<(), CallError> {
        if self.gone_agents.contains_key(agent_id) {
            // Mesos answers 200 to marking a gone agent gone again.
            return Ok(());
        }
        let record = if let Some(record) = self.agent_record(agent_id) {
            if let Some(agent) = self.agents.get(agent_id) {
                // Queued before the link is dropped: its worker delivers what it holds.
                agent.link.send(MasterToAgent {
                    r#type: Some(master_to_agent::Type::ShutdownAgent as i32),
                    shutdown_agent: Some(ShutdownAgent { message: Some("Agent was marked gone by an operator".into()) }),
                    ..Default::default()
                });
            }
            self.remove_agent_as(agent_id, "marked gone by an operator", TaskState::TaskGoneByOperator, Reason::AgentRemovedByOperator);
            record
        } else if let Some(record) = self.recovered_agents.remove(agent_id) {
            record
        } else if let Some(record) = self.unreachable_agents.remove(agent_id) {
            // Its unreachable tasks are gone now.
            self.end_tasks_of(agent_id, TaskState::TaskGoneByOperator, Reason::AgentRemovedByOperator, "Agent was marked gone by an operator");
            record
        } else {
            return Err(CallError::NotFound(format!("Agent '{agent_id}' not found")));
        };
        tracing::warn!(%agent_id, "agent marked gone");
        let mut record = record;
        record.state = Some(AgentState::Gone as i32);
        record.gone_time = Some(now_secs());
        self.registrar.put_agent(&record);
        self.gone_agents.insert(agent_id.to_string(), record);
        Ok(())
    }

    /// Ends every task the master keeps on `agent_id` (an unreachable agent
    /// marked gone) with `state` (TASK_LOST for frameworks that are not
    /// partition aware).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn end_tasks_of(&mut self, agent_id: &str, state: TaskState, reason: Reason, message: &str) {
        for fw in self.frameworks.values_mut() {
            let partition_aware = fw.partition_aware();
            let ids: Vec<String> =
                fw.tasks.iter().filter(|(_, t)| t.agent_id == agent_id && !t.state.is_terminal()).map(|(k, _)| k.clone()).collect();
            for task_id in ids {
                let Some(task) = fw.tasks.get_mut(&task_id) else {
                    continue;
                };
                // Mesos's `__removeSlave`: TASK_LOST (REASON_AGENT_REMOVED) for frameworks that are not partition aware.
                let (state, reason) = if partition_aware { (state, reason) } else { (TaskState::TaskLost, Reason::AgentRemoved) };
                let status = master_status(&task_id, Some(agent_id), state, reason, message);
                task.state = state;
                task.statuses.push(status.clone());
                self.operator.task_updated(&fw.id, state, &status);
                fw.complete_task(&task_id);
                fw.send(crate::master::update_event(status));
            }
        }
    }

    /// Whether agent `id` may register: a gone agent may not.
    pub(crate) fn check_not_gone(&self, id: &str) -> Result<(), CallError> {
        if self.gone_agents.contains_key(id) {
            tracing::warn!(agent_id = %id, "refusing the registration of an agent marked gone");
            // 410: the agent shuts down, as on Mesos's ShutdownMessage.
            return Err(CallError::Gone(format!("Agent {id} was marked gone: it may not register again under this id")));
        }
        Ok(())
    }
}

/// Tells every framework that agent `id` was lost (a FAILURE event).
pub(crate) fn agent_failure_event(id: &str) -> Event {
    Event {
        r#type: Some(event::Type::Failure as i32),
        failure: Some(event::Failure { agent_id: Some(AgentId { value: id.to_string() }), ..Default::default() }),
        ..Default::default()
    }
}

/// The agent's path on which a master that recovered its registry tells it
/// to ping now (`mezzo_agent::master_link::MASTER_CHANGED_PATH`).
pub const AGENT_MASTER_CHANGED_PATH: &str = "/mezzo/v1/master_changed";

/// Starts the timers of a recovery: each recovered framework is torn down
/// when it has not re-subscribed within its failover timeout (from now), and
/// the agents that did not re-register within `--agent_reregister_timeout`
/// are marked unreachable.
pub(crate) fn start_timers(shared: &Arc<Shared>, frameworks: Vec<(String, f64)>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut handles = Vec::new();
    for (id, timeout) in frameworks {
        let timeout = if timeout.is_finite() && timeout > 0.0 { Duration::from_secs_f64(timeout.min(1e9)) } else { Duration::ZERO };
        let shared = shared.clone();
        handles.push(tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            // Epoch 0: a re-subscription bumps it, so this does nothing then.
            shared.lock().failover_expired(&id, 0);
        }));
    }
    // Tell the recovered agents this master is up: they ping it at once and
    // re-register instead of waiting for their next ping. Best effort; the
    // request carries nothing they trust.
    let (endpoints, client) = {
        let master = shared.lock();
        let endpoints: Vec<String> = master.recovered_agents.values().filter_map(|r| r.endpoint.clone()).collect();
        (endpoints, master.client.clone())
    };
    let has_recovered = !endpoints.is_empty();
    for endpoint in endpoints {
        let client = client.clone();
        let timeout = shared.config.agent_request_timeout;
        handles.push(tokio::spawn(async move {
            let url = format!("http://{endpoint}{AGENT_MASTER_CHANGED_PATH}");
            if let Err(e) = client.post(&url).timeout(timeout).send().await {
                tracing::debug!(%url, error = %e, "could not tell a recovered agent this master is up");
            }
        }));
    }
    if has_recovered {
        let shared = shared.clone();
        let timeout = shared.config.agent_reregister_timeout;
        handles.push(tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            shared.lock().recovered_agents_timeout();
        }));
    }
    handles
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{InMemoryStore, Kind, RegistryStore};
    use mezzo_proto::mesos::v1::framework_info::{capability::Type as Cap, Capability};
    use mezzo_proto::mesos::v1::scheduler::{call, event};
    use mezzo_proto::mesos::v1::{
        task_status::Source, value, AgentInfo, CommandInfo, FrameworkId, FrameworkInfo, MasterInfo, Resource, TaskId, TaskInfo,
        TaskStatus,
    };
    use mezzo_proto::mezzo::agent::{RegisterAgent, ReportedTask};
    use prost::Message;
    use std::time::Instant;
    use tokio::sync::mpsc;

    fn scalar(name: &str, v: f64) -> Resource {
        Resource { name: name.into(), r#type: value::Type::Scalar as i32, scalar: Some(value::Scalar { value: v }), ..Default::default() }
    }

    /// A master on `store` whose registry writer runs; recovered from the store.
    fn master_on(store: Arc<dyn RegistryStore>, recovered: Recovered) -> (Master, Vec<(String, f64)>) {
        let config = crate::MasterConfig {
            registry: store.clone(),
            agent_ping_timeout: Duration::from_secs(1),
            max_agent_ping_timeouts: 3,
            ..Default::default()
        };
        let (reports, _) = mpsc::unbounded_channel();
        let mut master = Master::new("M".into(), MasterInfo::default(), config.clone(), reqwest::Client::new(), reports);
        let timeouts = master.recover(recovered);
        let writer = master.registry_writer.take().unwrap();
        tokio::spawn(crate::registrar::run_writer(store, writer, config.on_fenced.clone()));
        (master, timeouts)
    }

    fn framework(name: &str, partition_aware: bool) -> FrameworkInfo {
        FrameworkInfo {
            user: "u".into(),
            name: name.into(),
            failover_timeout: Some(3600.0),
            capabilities: if partition_aware { vec![Capability { r#type: Some(Cap::PartitionAware as i32) }] } else { vec![] },
            ..Default::default()
        }
    }

    fn task(id: &str) -> TaskInfo {
        TaskInfo {
            name: id.into(),
            task_id: TaskId { value: id.into() },
            agent_id: AgentId { value: "A1".into() },
            resources: vec![scalar("cpus", 1.0), scalar("mem", 128.0)],
            command: Some(CommandInfo { value: Some("sleep 1000".into()), ..Default::default() }),
            ..Default::default()
        }
    }

    /// The registration of agent A1 running `tasks` (framework id, task id).
    fn registration(tasks: &[(&FrameworkInfo, &str)]) -> RegisterAgent {
        RegisterAgent {
            agent_info: AgentInfo { hostname: "h1".into(), id: Some(AgentId { value: "A1".into() }), ..Default::default() },
            endpoint: "127.0.0.1:9".into(),
            total_resources: vec![scalar("cpus", 2.0), scalar("mem", 1024.0)],
            agent_secret: Some("secret-of-a1".into()),
            agent_token: Some("token".into()),
            tasks: tasks
                .iter()
                .map(|(fw, id)| ReportedTask {
                    framework_id: fw.id.clone().unwrap(),
                    task: task(id),
                    state: Some(TaskState::TaskRunning as i32),
                    unacknowledged_updates: vec![TaskStatus {
                        task_id: TaskId { value: id.to_string() },
                        state: TaskState::TaskRunning as i32,
                        uuid: Some(vec![1; 16]),
                        source: Some(Source::Executor as i32),
                        ..Default::default()
                    }],
                })
                .collect(),
            frameworks: tasks.iter().map(|(fw, _)| (*fw).clone()).collect(),
            ..Default::default()
        }
    }

    async fn flush(master: &mut Master) {
        master.registrar.begin();
        master.registrar.barrier();
        if let Some(durable) = master.registrar.durable() {
            durable.await.unwrap();
        }
    }

    fn updates(rx: &mut mpsc::UnboundedReceiver<Event>) -> Vec<TaskStatus> {
        let mut out = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            if ev.r#type == Some(event::Type::Update as i32) {
                out.push(ev.update.unwrap().status);
            }
        }
        out
    }

    fn reconcile(master: &mut Master, fid: &str, tasks: &[(&str, &str)]) {
        let tasks = tasks
            .iter()
            .map(|(t, a)| call::reconcile::Task { task_id: TaskId { value: t.to_string() }, agent_id: Some(AgentId { value: a.to_string() }) })
            .collect();
        master.reconcile(fid, &call::Reconcile { tasks });
    }

    #[tokio::test]
    async fn after_a_failover_agents_bring_back_their_tasks_and_frameworks_their_subscription() {
        let store: Arc<dyn RegistryStore> = Arc::new(InMemoryStore::default());
        let (mut first, _) = master_on(store.clone(), Recovered::default());
        let sub = first.subscribe(framework("web", true), &[]);
        let fid = sub.framework_id.clone().unwrap();
        let mut info = framework("web", true);
        info.id = Some(FrameworkId { value: fid.clone() });
        first.register_agent(registration(&[])).unwrap();
        flush(&mut first).await;
        drop(first);

        // The new master knows the agent (waiting for it) and the framework (disconnected).
        let recovered = crate::registrar::load(&*store).await.unwrap();
        let (mut master, timeouts) = master_on(store.clone(), recovered);
        assert_eq!(timeouts, vec![(fid.clone(), 3600.0)]);
        assert!(master.recovered_agents.contains_key("A1") && master.agents.is_empty());
        assert!(master.frameworks[&fid].subscription.is_none());
        // Another agent cannot take A1's id.
        let mut thief = registration(&[]);
        thief.agent_secret = Some("guess".into());
        assert!(matches!(master.register_agent(thief), Err(CallError::Forbidden(_))));

        let mut sub = master.subscribe(info.clone(), &[]);
        assert_eq!(sub.framework_id.as_deref(), Some(fid.as_str()));
        // The agent is not back yet: an unknown task on it gets no answer.
        reconcile(&mut master, &fid, &[("t1", "A1")]);
        updates(&mut sub.rx);
        assert!(updates(&mut sub.rx).is_empty());

        master.register_agent(registration(&[(&info, "t1"), (&info, "t2")])).unwrap();
        assert_eq!(master.counters.agent_reregistrations, 1);
        let agent = &master.agents["A1"];
        assert_eq!((agent.used.scalar("cpus"), agent.available().scalar("cpus")), (2.0, 0.0), "running tasks hold their resources");
        // The scheduler's acknowledgement of the pending update retires nothing but matches it.
        assert_eq!(master.frameworks[&fid].tasks["t1"].latest_uuid(), Some(&[1u8; 16][..]));

        reconcile(&mut master, &fid, &[("t1", "A1"), ("t3", "A1"), ("t4", "A9")]);
        let answers = updates(&mut sub.rx);
        let got: Vec<(String, TaskState)> = answers.iter().map(|s| (s.task_id.value.clone(), s.state())).collect();
        assert_eq!(
            got,
            vec![("t1".into(), TaskState::TaskRunning), ("t3".into(), TaskState::TaskGone), ("t4".into(), TaskState::TaskUnknown)]
        );
        for s in &answers {
            assert_eq!((s.reason(), s.source(), s.uuid.is_none()), (Reason::Reconciliation, Source::Master, true), "{s:?}");
        }
        master.reconcile(&fid, &call::Reconcile { tasks: vec![] });
        let mut implicit: Vec<(String, TaskState)> = updates(&mut sub.rx).iter().map(|s| (s.task_id.value.clone(), s.state())).collect();
        implicit.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(implicit, vec![("t1".into(), TaskState::TaskRunning), ("t2".into(), TaskState::TaskRunning)]);
    }

    #[tokio::test]
    async fn agents_not_back_in_time_and_silent_agents_become_unreachable_and_come_back() {
        let store: Arc<dyn RegistryStore> = Arc::new(InMemoryStore::default());
        let (mut master, _) = master_on(store.clone(), Recovered::default());
        let mut aware = master.subscribe(framework("aware", true), &[]);
        let mut plain = master.subscribe(framework("plain", false), &[]);
        let (fa, fp) = (aware.framework_id.clone().unwrap(), plain.framework_id.clone().unwrap());
        let info = |fw: &Master, id: &str| fw.frameworks[id].info.clone();
        let (ia, ip) = (info(&master, &fa), info(&master, &fp));
        master.register_agent(registration(&[(&ia, "a1"), (&ip, "p1")])).unwrap();

        // Silent for fewer than --max_agent_ping_timeouts periods: still there.
        let last = master.agents["A1"].last_ping;
        master.remove_silent_agents(last + Duration::from_millis(2500));
        assert!(master.agents.contains_key("A1"));
        master.remove_silent_agents(last + Duration::from_millis(3100));
        assert!(!master.agents.contains_key("A1") && master.unreachable_agents.contains_key("A1"));
        let a: Vec<TaskState> = updates(&mut aware.rx).iter().map(|s| s.state()).collect();
        let p: Vec<TaskState> = updates(&mut plain.rx).iter().map(|s| s.state()).collect();
        assert_eq!((a, p), (vec![TaskState::TaskUnreachable], vec![TaskState::TaskLost]));
        flush(&mut master).await;
        let stored = store.load(Kind::Agent).await.unwrap();
        let record = RegistryAgent::decode(&stored[0].bytes[..]).unwrap();
        assert_eq!(record.state(), AgentState::Unreachable);

        // Reconciliation while it is away: UNREACHABLE, or LOST when not partition aware.
        reconcile(&mut master, &fa, &[("a1", "A1"), ("a9", "A1")]);
        reconcile(&mut master, &fp, &[("p1", "A1")]);
        let a: Vec<TaskState> = updates(&mut aware.rx).iter().map(|s| s.state()).collect();
        let p: Vec<TaskState> = updates(&mut plain.rx).iter().map(|s| s.state()).collect();
        assert_eq!((a, p), (vec![TaskState::TaskUnreachable, TaskState::TaskUnreachable], vec![TaskState::TaskLost]));

        // Back: both frameworks hear their task runs (Mesos 1.5+), nothing is killed.
        master.register_agent(registration(&[(&ia, "a1"), (&ip, "p1")])).unwrap();
        for rx in [&mut aware.rx, &mut plain.rx] {
            let back = updates(rx);
            assert_eq!(back.len(), 1, "{back:?}");
            assert_eq!((back[0].state(), back[0].reason(), back[0].source()), (TaskState::TaskRunning, Reason::AgentReregistered, Source::Master));
        }
        assert_eq!(master.agents["A1"].used.scalar("cpus"), 2.0);
        flush(&mut master).await;
        let record = RegistryAgent::decode(&store.load(Kind::Agent).await.unwrap()[0].bytes[..]).unwrap();
        assert_eq!(record.state(), AgentState::Admitted);

        // A failover: the agent does not come back within --agent_reregister_timeout.
        drop(master);
        let (mut master, _) = master_on(store.clone(), crate::registrar::load(&*store).await.unwrap());
        let mut aware = master.subscribe(ia.clone(), &[]);
        master.recovered_agents_timeout();
        assert!(master.unreachable_agents.contains_key("A1") && master.recovered_agents.is_empty());
        reconcile(&mut master, &fa, &[("a1", "A1")]);
        let a: Vec<TaskState> = updates(&mut aware.rx).iter().map(|s| s.state()).collect();
        assert_eq!(a, vec![TaskState::TaskUnreachable]);
        let _ = Instant::now();
    }

    #[tokio::test]
    async fn an_agent_marked_gone_never_comes_back() {
        let store: Arc<dyn RegistryStore> = Arc::new(InMemoryStore::default());
        let (mut master, _) = master_on(store.clone(), Recovered::default());
        let mut aware = master.subscribe(framework("aware", true), &[]);
        let mut plain = master.subscribe(framework("plain", false), &[]);
        let (fa, fp) = (aware.framework_id.clone().unwrap(), plain.framework_id.clone().unwrap());
        let (ia, ip) = (master.frameworks[&fa].info.clone(), master.frameworks[&fp].info.clone());
        master.register_agent(registration(&[(&ia, "a1"), (&ip, "p1")])).unwrap();
        assert!(matches!(master.mark_agent_gone("nobody"), Err(CallError::NotFound(_))));
        master.mark_agent_gone("A1").unwrap();
        master.mark_agent_gone("A1").unwrap();
        let a: Vec<(TaskState, Reason)> = updates(&mut aware.rx).iter().map(|s| (s.state(), s.reason())).collect();
        let p: Vec<(TaskState, Reason)> = updates(&mut plain.rx).iter().map(|s| (s.state(), s.reason())).collect();
        assert_eq!(a, vec![(TaskState::TaskGoneByOperator, Reason::AgentRemovedByOperator)]);
        assert_eq!(p, vec![(TaskState::TaskLost, Reason::AgentRemoved)]);
        assert!(matches!(master.register_agent(registration(&[])), Err(CallError::Gone(_))));
        reconcile(&mut master, &fa, &[("a1", "A1")]);
        assert_eq!(updates(&mut aware.rx)[0].state(), TaskState::TaskGoneByOperator);
        flush(&mut master).await;
        drop(master);
        // After a failover too; someone else presenting its id is refused as before.
        let (mut master, _) = master_on(store.clone(), crate::registrar::load(&*store).await.unwrap());
        assert!(matches!(master.register_agent(registration(&[])), Err(CallError::Gone(_))));
        let mut thief = registration(&[]);
        thief.agent_secret = Some("guess".into());
        assert!(matches!(master.register_agent(thief), Err(CallError::Forbidden(_))));
    }
}
