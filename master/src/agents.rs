//! Agent lifecycle: registration (authenticated, with the agent's report of
//! its tasks), pings and removal of silent agents.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use mezzo_proto::mesos::v1::{task_status::Reason, AgentId, FrameworkInfo, TaskState, TimeInfo};
use mezzo_proto::mezzo::agent::{master_to_agent, AgentRegistered, MasterToAgent, RegisterAgent, ShutdownFramework};

use crate::agent_link::{AgentLink, LinkReport, LinkTarget};
use crate::credentials::{constant_time_eq, random_token, secret_hash};
use crate::error::CallError;
use crate::launch::validate_id;
use crate::master::{framework_id, master_status, now_secs, Agent, Framework, Master, TaskRecord};
use crate::resources::Resources;

impl Master {
    /// Checks the agent's `--credential` against `--credentials`.
    fn authenticate_agent(&self, req: &RegisterAgent) -> Result<(), CallError> {
        let principal = req.principal.as_deref().filter(|p| !p.is_empty());
        match (principal, &self.config.credentials) {
            (Some(principal), Some(credentials)) => {
                let secret = req.secret.as_deref().unwrap_or("");
                if credentials.authenticate(principal, secret) {
                    Ok(())
                } else {
                    tracing::warn!(%principal, endpoint = %req.endpoint, "agent authentication failed");
                    Err(CallError::Forbidden(format!(
                        "Agent authentication failed: unknown principal '{principal}' or wrong secret"
                    )))
                }
            }
            (None, _) if self.config.authenticate_agents => Err(CallError::Unauthorized(
                "Agent is not authenticated: this master runs with --authenticate_agents; start the agent with --credential"
                    .into(),
            )),
            // No credentials configured: an agent's credential proves nothing here.
            _ => Ok(()),
        }
    }

    /// Registers (or re-registers) an agent and assigns its id. A
    /// re-registration under a known id must carry that agent's secret. The
    /// agent's report of its tasks is reconciled with the master's view.
    pub(crate) fn register_agent(&mut self, req: RegisterAgent) -> Result<AgentRegistered, CallError> {
        let bad = CallError::BadRequest;
        if req.endpoint.is_empty() {
            return Err(bad("'endpoint' must not be empty".into()));
        }
        self.authenticate_agent(&req)?;
        let agent_secret = req.agent_secret.as_deref().filter(|s| !s.is_empty()).ok_or_else(|| {
            CallError::Unauthorized("'agent_secret' must be set: an agent proves its identity with it".into())
        })?;
        let agent_token = req.agent_token.clone().filter(|s| !s.is_empty()).ok_or_else(|| {
            CallError::Unauthorized("'agent_token' must be set: the master presents it to the agent".into())
        })?;
        let mut info = req.agent_info.clone();
        // The agent reports its resources either way; take the explicit list.
        let list = if req.total_resources.is_empty() {
            info.resources.clone()
        } else {
            req.total_resources.clone()
        };
        let total = Resources::from_protos(&list).map_err(|e| bad(format!("invalid resources: {e}")))?;
        let requested = info.id.as_ref().map(|i| i.value.clone()).filter(|v| !v.is_empty());
        if let Some(id) = &requested {
            validate_id(id).map_err(|e| bad(format!("invalid agent id '{id}': {e}")))?;
        }
        let presented = secret_hash(agent_secret);
        if let Some(known) = requested.as_ref().and_then(|id| self.agent_secrets.get(id)) {
            if !constant_time_eq(known, &presented) {
                let id = requested.as_deref().unwrap_or_default();
                tracing::warn!(agent_id = %id, endpoint = %req.endpoint, "refusing re-registration: wrong agent secret");
                return Err(CallError::Forbidden(format!(
                    "Agent {id} is registered with another secret: refusing the re-registration"
                )));
            }
        }
        if let Some(id) = &requested {
            self.check_not_gone(id)?;
        }
        let id = match requested {
            Some(id) => id,
            None => {
                let id = format!("{}-S{}", self.id, self.next_agent);
                self.next_agent += 1;
                id
            }
        };
        self.agent_secrets.insert(id.clone(), presented);
        info.id = Some(AgentId { value: id.clone() });
        info.resources = total.to_protos();

        if let Some(offer_id) = self.agents.get(&id).and_then(|a| a.offer_id.clone()) {
            // The resources may have changed: the old offer no longer holds.
            self.rescind_offer(&offer_id);
        }
        let master_token = random_token();
        let token_hash = secret_hash(&master_token);
        let mut previous = self.agents.remove(&id);
        // Back after a master failover, or after being marked unreachable.
        let was_recovered = self.recovered_agents.remove(&id).is_some();
        let was_unreachable = self.unreachable_agents.remove(&id).is_some();
        let was_registered = previous.is_some();
        let known = was_registered || was_unreachable;
        let known_executors = previous.as_mut().map(|a| std::mem::take(&mut a.executors)).unwrap_or_default();
        let link = match previous {
            Some(old) => {
                self.agent_tokens.remove(&old.token_hash);
                self.counters.agent_reregistrations += 1;
                if old.endpoint == req.endpoint {
                    tracing::info!(agent_id = %id, endpoint = %req.endpoint, "agent re-registered");
                    old.link.set_token(agent_token.clone());
                    Some(old.link)
                } else {
                    tracing::info!(agent_id = %id, endpoint = %req.endpoint, old = %old.endpoint, "agent re-registered from a new endpoint");
                    None
                }
            }
            None if was_recovered || was_unreachable => {
                tracing::info!(agent_id = %id, endpoint = %req.endpoint, was_unreachable, "agent re-registered");
                self.counters.agent_reregistrations += 1;
                None
            }
            None => {
                self.counters.agent_registrations += 1;
                None
            }
        };
        let link = link.unwrap_or_else(|| {
            tracing::info!(agent_id = %id, endpoint = %req.endpoint, hostname = %info.hostname, resources = %total, "agent registered");
            AgentLink::spawn(
                self.client.clone(),
                LinkTarget {
                    agent_id: id.clone(),
                    endpoint: req.endpoint.clone(),
                    token: agent_token,
                    timeout: self.config.agent_request_timeout,
                    attempts: self.config.agent_send_attempts,
                },
                self.link_reports.clone(),
            )
        });
        let mut shutdown = self.reconcile_reported_tasks(&id, &req, known);
        self.add_completed_frameworks(&id, &req);
        let executors = self.reconcile_reported_executors(&id, &req, known_executors, &mut shutdown);
        for fid in shutdown {
            tracing::info!(agent_id = %id, framework_id = %fid, "agent runs tasks of a removed framework: shutting it down");
            link.send(MasterToAgent {
                r#type: Some(master_to_agent::Type::ShutdownFramework as i32),
                shutdown_framework: Some(ShutdownFramework { framework_id: framework_id(&fid) }),
                ..Default::default()
            });
        }
        // Non-terminal tasks the master counts on this agent, and its
        // executors, keep their resources.
        let mut used = Resources::new();
        for executor in executors.values() {
            used.add(&executor.resources);
        }
        for fw in self.frameworks.values() {
            for task in fw.tasks.values() {
                if task.agent_id == id && !task.state.is_terminal() {
                    used.add(&task.resources);
                }
            }
        }
        self.agent_tokens.insert(token_hash, id.clone());
        self.agents.insert(
            id.clone(),
            Agent {
                id: id.clone(),
                info,
                endpoint: req.endpoint,
                total,
                used,
                executors,
                offered: Resources::new(),
                offer_id: None,
                last_ping: Instant::now(),
                registered_time: now_secs(),
                link,
                token_hash,
            },
        );
        if !was_registered {
            self.operator.agent_added(&self.agents[&id]);
        }
        // Admitted: the registry keeps it (and the hash of its secret, so
        // that nobody else takes its id after a failover).
        if let Some(record) = self.agent_record(&id) {
            self.registrar.put_agent(&record);
        }
        self.wake_allocator();
        // Agents ping three times per ping period, so one lost ping is harmless.
        let interval = (self.config.agent_ping_timeout.as_secs_f64() / 3.0).max(0.1);
        Ok(AgentRegistered {
            agent_id: AgentId { value: id },
            ping_interval_seconds: Some(interval),
            master_token: Some(master_token),
        })
    }

    /// Reconciles an agent's report of its tasks with the master's view, as
    /// Mesos's master does on re-registration: tasks the agent runs and the
    /// master does not know are adopted (with their framework, when the
    /// master forgot it too); tasks the master had launched there that the
    /// agent does not have end TASK_DROPPED (TASK_LOST when the framework is
    /// not partition aware) with REASON_RECONCILIATION. Returns the removed
    /// frameworks the agent still runs tasks of, to be shut down there.
    fn reconcile_reported_tasks(&mut self, agent_id: &str, req: &RegisterAgent, known: bool) -> BTreeSet<String> {
        let infos: BTreeMap<&str, &FrameworkInfo> = req
            .frameworks
            .iter()
            .filter_map(|f| f.id.as_ref().map(|id| (id.value.as_str(), f)))
            .collect();
        let mut reported: BTreeSet<(String, String)> = BTreeSet::new();
        let mut shutdown = BTreeSet::new();
        for rt in &req.tasks {
            let fid = rt.framework_id.value.clone();
            let task_id = rt.task.task_id.value.clone();
            if validate_id(&fid).is_err() || validate_id(&task_id).is_err() {
                tracing::warn!(%agent_id, framework_id = %fid.escape_debug(), task_id = %task_id.escape_debug(), "ignoring a reported task with an invalid id");
                continue;
            }
            reported.insert((fid.clone(), task_id.clone()));
            let state = rt.state.and_then(|s| TaskState::try_from(s).ok()).unwrap_or(TaskState::TaskStaging);
            if self.completed_frameworks.iter().any(|f| f.id == fid) {
                shutdown.insert(fid);
                continue;
            }
            if state.is_terminal() {
                // Its terminal update is on its way; nothing runs or holds resources.
                continue;
            }
            self.adopt_framework(&fid, agent_id, &infos);
            let Some(fw) = self.frameworks.get_mut(&fid) else {
                continue;
            };
            match fw.tasks.get_mut(&task_id) {
                Some(task) if task.agent_id == agent_id => {
                    task.delivered = true;
                    for update in &rt.unacknowledged_updates {
                        if update.uuid.is_some() && !task.statuses.iter().any(|s| s.uuid == update.uuid) {
                            task.statuses.push(update.clone());
                        }
                    }
                    if task.state == TaskState::TaskUnreachable {
                        // Back from a partition: the task still runs. Its
                        // framework hears its current state (Mesos 1.5+).
                        task.state = state;
                        let mut status = master_status(&task_id, Some(agent_id), state, Reason::AgentReregistered, "Agent reregistered");
                        if let Some(last) = rt.unacknowledged_updates.last() {
                            status.executor_id = last.executor_id.clone();
                            status.container_status = last.container_status.clone();
                            status.healthy = last.healthy;
                            status.check_status = last.check_status.clone();
                        }
                        tracing::info!(%agent_id, framework_id = %fid, %task_id, ?state, "unreachable task is back");
                        self.operator.task_updated(&fid, state, &status);
                        fw.send(crate::master::update_event(status));
                    } else if state != TaskState::TaskStaging && !task.state.is_terminal() {
                        task.state = state;
                    }
                }
                Some(_) => {
                    tracing::warn!(%agent_id, framework_id = %fid, %task_id, "agent reports a task the master placed on another agent; ignoring it");
                }
                None => {
                    let mut info = rt.task.clone();
                    info.agent_id = AgentId { value: agent_id.to_string() };
                    // Its executor's resources are counted once, with the agent's executors.
                    let resources = Resources::from_protos(&info.resources).unwrap_or_default();
                    tracing::info!(%agent_id, framework_id = %fid, %task_id, ?state, "adopting a task the agent runs");
                    fw.tasks.insert(
                        task_id.clone(),
                        TaskRecord {
                            info,
                            framework_id: fid.clone(),
                            agent_id: agent_id.to_string(),
                            state,
                            statuses: rt.unacknowledged_updates.clone(),
                            resources,
                            launched_at: now_secs(),
                            delivered: true,
                        },
                    );
                    self.operator.task_added(&fw.tasks[&task_id]);
                }
            }
        }
        if known {
            let missing: Vec<(String, String)> = self
                .frameworks
                .values()
                .flat_map(|fw| {
                    fw.tasks
                        .values()
                        .filter(|t| t.agent_id == agent_id && t.delivered && !t.state.is_terminal())
                        .map(|t| (fw.id.clone(), t.info.task_id.value.clone()))
                })
                .filter(|key| !reported.contains(key))
                .collect();
            for (fid, task_id) in missing {
                tracing::warn!(%agent_id, framework_id = %fid, %task_id, "task unknown to the re-registered agent");
                self.end_task(&fid, &task_id, Reason::Reconciliation, "Reconciliation: task unknown to the agent");
            }
        }
        shutdown
    }

    /// Makes sure the master knows framework `fid`, which an agent runs
    /// tasks or executors of: a framework the master forgot (it restarted)
    /// is adopted with the FrameworkInfo the agent reports, disconnected
    /// until its scheduler subscribes again.
    pub(crate) fn adopt_framework(&mut self, fid: &str, agent_id: &str, infos: &BTreeMap<&str, &FrameworkInfo>) {
        if self.frameworks.contains_key(fid) {
            return;
        }
        let mut info = infos.get(fid).map(|i| (*i).clone()).unwrap_or_default();
        info.id = Some(framework_id(fid));
        tracing::info!(framework_id = %fid, %agent_id, "adopting a framework an agent runs tasks or executors of");
        self.frameworks.insert(
            fid.to_string(),
            Framework {
                id: fid.to_string(),
                info,
                subscription: None,
                suppressed: false,
                filters: Vec::new(),
                tasks: Default::default(),
                completed_tasks: Default::default(),
                registered_time: now_secs(),
                unregistered_time: Some(now_secs()),
                offers_sent: 0,
                epoch: 0,
            },
        );
        self.operator.framework_changed(&self.frameworks[fid], true);
        self.record_framework(fid);
    }

    /// Takes the completed tasks of the frameworks whose executors all ended
    /// on the agent (`ReregisterSlaveMessage.completed_frameworks` in Mesos):
    /// a master that failed over lists them again.
    fn add_completed_frameworks(&mut self, agent_id: &str, req: &RegisterAgent) {
        for completed in &req.completed_frameworks {
            let Some(fid) = completed.info.id.as_ref().map(|i| i.value.clone()) else {
                continue;
            };
            if validate_id(&fid).is_err() {
                continue;
            }
            let record = |rt: &mezzo_proto::mezzo::agent::ReportedTask| TaskRecord {
                info: rt.task.clone(),
                framework_id: fid.clone(),
                agent_id: agent_id.to_string(),
                state: rt.state.and_then(|s| TaskState::try_from(s).ok()).unwrap_or(TaskState::TaskLost),
                statuses: rt.unacknowledged_updates.clone(),
                resources: Resources::new(),
                launched_at: 0.0,
                delivered: true,
            };
            let known = |tasks: &std::collections::VecDeque<TaskRecord>, id: &str| tasks.iter().any(|t| t.info.task_id.value == id);
            // Only frameworks the master knows: listing an unknown one as
            // completed would refuse its scheduler's re-subscription.
            let Some(fw) = self.frameworks.get_mut(&fid) else {
                continue;
            };
            for rt in &completed.tasks {
                if !fw.tasks.contains_key(&rt.task.task_id.value) && !known(&fw.completed_tasks, &rt.task.task_id.value) {
                    fw.completed_tasks.push_back(record(rt));
                }
            }
            while fw.completed_tasks.len() > crate::master::MAX_COMPLETED_TASKS {
                fw.completed_tasks.pop_front();
            }
        }
    }

    /// Ends a non-terminal task from the master: TASK_DROPPED, or TASK_LOST
    /// for frameworks that are not partition aware; its resources return.
    pub(crate) fn end_task(&mut self, fid: &str, task_id: &str, reason: Reason, message: &str) {
        let Some(fw) = self.frameworks.get_mut(fid) else {
            return;
        };
        let state = if fw.partition_aware() { TaskState::TaskDropped } else { TaskState::TaskLost };
        let Some(task) = fw.tasks.get_mut(task_id) else {
            return;
        };
        if task.state.is_terminal() {
            return;
        }
        let status = master_status(task_id, Some(&task.agent_id), state, reason, message);
        self.operator.task_updated(fid, state, &status);
        task.state = state;
        task.statuses.push(status.clone());
        let (agent_id, resources) = (task.agent_id.clone(), task.resources.clone());
        // No uuid, no acknowledgement: the task is done with now.
        fw.complete_task(task_id);
        fw.send(crate::master::update_event(status));
        if let Some(agent) = self.agents.get_mut(&agent_id) {
            agent.used.subtract(&resources);
        }
        self.wake_allocator_for(&agent_id);
    }

    /// Takes a link's report on a RUN_TASK: a delivered task may be
    /// reconciled later; an undeliverable one ends, as Mesos's master ends a
    /// task launched on a disconnected agent.
    pub(crate) fn link_report(&mut self, report: LinkReport) {
        match report {
            LinkReport::Delivered { agent_id, framework_id, task_id } => {
                let Some(task) = self.frameworks.get_mut(&framework_id).and_then(|f| f.tasks.get_mut(&task_id)) else {
                    return;
                };
                if task.agent_id != agent_id {
                    return;
                }
                task.delivered = true;
                // The agent has the task's executor now.
                let executor_id = task.info.executor.as_ref().map(|e| e.executor_id.value.clone());
                if let (Some(executor_id), Some(agent)) = (executor_id, self.agents.get_mut(&agent_id)) {
                    if let Some(executor) = agent.executors.get_mut(&(framework_id, executor_id)) {
                        executor.delivered = true;
                    }
                }
            }
            LinkReport::Undeliverable { agent_id, framework_id, task_id, error } => {
                let staging = self
                    .frameworks
                    .get(&framework_id)
                    .and_then(|f| f.tasks.get(&task_id))
                    .is_some_and(|t| t.agent_id == agent_id && !t.delivered && t.state == TaskState::TaskStaging);
                if !staging {
                    return;
                }
                tracing::warn!(%agent_id, %framework_id, %task_id, %error, "RUN_TASK could not be delivered; the task is lost");
                let executor_id = self
                    .frameworks
                    .get(&framework_id)
                    .and_then(|f| f.tasks.get(&task_id))
                    .and_then(|t| t.info.executor.as_ref())
                    .map(|e| e.executor_id.value.clone());
                self.end_task(&framework_id, &task_id, Reason::AgentDisconnected, "Agent disconnected");
                // An executor no RUN_TASK reached never started: it holds nothing.
                if let Some(executor_id) = executor_id {
                    let never_started = self
                        .agents
                        .get(&agent_id)
                        .and_then(|a| a.executors.get(&(framework_id.clone(), executor_id.clone())))
                        .is_some_and(|e| !e.delivered);
                    if never_started && !self.executor_has_tasks(&agent_id, &framework_id, &executor_id, &task_id) {
                        self.remove_executor(&agent_id, &framework_id, &executor_id);
                    }
                }
            }
        }
    }

    /// The agent a request comes from, by the session token it presents.
    pub(crate) fn authenticated_agent(&self, authorization: Option<&str>) -> Result<String, CallError> {
        let token = authorization
            .and_then(crate::credentials::bearer_token)
            .ok_or_else(|| CallError::Unauthorized("Expecting 'Authorization: Bearer <session token>'".into()))?;
        self.agent_tokens
            .get(&secret_hash(token))
            .cloned()
            .ok_or_else(|| CallError::Unauthorized("Unknown or expired agent session: register again".into()))
    }

    /// Records a ping; false when the agent is unknown (it must register).
    pub(crate) fn ping(&mut self, agent_id: &str) -> bool {
        match self.agents.get_mut(agent_id) {
            Some(agent) => {
                agent.last_ping = Instant::now();
                true
            }
            None => false,
        }
    }

    /// Marks unreachable the agents silent for `--max_agent_ping_timeouts`
    /// ping periods (`--agent_ping_timeout`) in a row, as Mesos counts
    /// missed pings.
    pub(crate) fn remove_silent_agents(&mut self, now: Instant) {
        let period = self.config.agent_ping_timeout;
        let max = self.config.max_agent_ping_timeouts.max(1);
        let silent: Vec<(String, u128)> = self
            .agents
            .values()
            .filter_map(|a| {
                let missed = now.saturating_duration_since(a.last_ping).as_nanos() / period.as_nanos().max(1);
                (missed >= u128::from(max)).then(|| (a.id.clone(), missed))
            })
            .collect();
        for (id, missed) in silent {
            self.mark_agent_unreachable(&id, &format!("{missed} missed pings (--max_agent_ping_timeouts={max}, --agent_ping_timeout={period:?})"));
        }
    }

    /// Removes an agent that became unreachable: its offer is rescinded, its
    /// tasks go TASK_UNREACHABLE (TASK_LOST for frameworks that are not
    /// partition aware) and are kept as unreachable tasks until the agent
    /// comes back, and every framework hears of the loss with a FAILURE
    /// event, as in Mesos.
    pub(crate) fn remove_agent(&mut self, id: &str, why: &str) {
        self.remove_agent_as(id, why, TaskState::TaskUnreachable, Reason::AgentRemoved);
    }

    /// Removes an agent; its non-terminal tasks go `state` with `reason`
    /// (TASK_LOST for frameworks that are not partition aware). Unreachable
    /// tasks are kept (the agent may come back); other states end them.
    pub(crate) fn remove_agent_as(&mut self, id: &str, why: &str, state: TaskState, reason: Reason) {
        if let Some(offer_id) = self.agents.get(id).and_then(|a| a.offer_id.clone()) {
            self.rescind_offer(&offer_id);
        }
        let Some(agent) = self.agents.remove(id) else {
            return;
        };
        self.agent_tokens.remove(&agent.token_hash);
        tracing::warn!(agent_id = %id, hostname = %agent.info.hostname, %why, "removing agent");
        self.counters.agent_removals += 1;
        let message = if state == TaskState::TaskUnreachable {
            format!("Agent {} is unreachable: {why}", agent.info.hostname)
        } else {
            format!("Agent {} was removed: {why}", agent.info.hostname)
        };
        let now = now_secs();
        for fw in self.frameworks.values_mut() {
            let partition_aware = fw.partition_aware();
            let affected: Vec<String> = fw
                .tasks
                .iter()
                .filter(|(_, t)| t.agent_id == id && !t.state.is_terminal() && !(state == TaskState::TaskUnreachable && t.state == TaskState::TaskUnreachable))
                .map(|(k, _)| k.clone())
                .collect();
            for task_id in affected {
                let Some(task) = fw.tasks.get_mut(&task_id) else {
                    continue;
                };
                // Mesos's `__removeSlave`: TASK_LOST (REASON_AGENT_REMOVED) for frameworks that are not partition aware.
                let (sent, sent_reason) = if partition_aware { (state, reason) } else { (TaskState::TaskLost, Reason::AgentRemoved) };
                let mut status = master_status(&task_id, Some(id), sent, sent_reason, &message);
                if state == TaskState::TaskUnreachable {
                    status.unreachable_time = Some(TimeInfo { nanoseconds: (now * 1e9) as i64 });
                    task.state = TaskState::TaskUnreachable;
                } else {
                    task.state = sent;
                }
                self.operator.task_updated(&fw.id, status.state(), &status);
                task.statuses.push(status.clone());
                if task.state.is_terminal() {
                    fw.complete_task(&task_id);
                }
                fw.send(crate::master::update_event(status));
            }
            fw.send(crate::failover::agent_failure_event(id));
        }
        // After its tasks' updates, as Mesos's `_removeSlave`.
        self.operator.agent_removed(id);
        self.wake_allocator();
    }
}
