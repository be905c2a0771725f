//! ACCEPT: validating offers and tasks, and launching tasks on agents.
//!
//! Follows `Master::accept` / `Master::_accept` of Mesos: invalid offers drop
//! every task of the call (TASK_DROPPED, or TASK_LOST for frameworks that are
//! not partition aware, with REASON_INVALID_OFFERS); an invalid task gets
//! TASK_ERROR with REASON_TASK_INVALID; valid tasks are staged and sent to
//! the agent; what the tasks leave of the offers returns to the pool.

use std::collections::BTreeSet;

use mezzo_proto::mesos::v1::offer::operation::Type as OperationType;
use mezzo_proto::mesos::v1::scheduler::call;
use mezzo_proto::mesos::v1::executor_info::Type as ExecutorType;
use mezzo_proto::mesos::v1::{task_status::Reason, AgentId, ExecutorInfo, TaskInfo, TaskState};
use mezzo_proto::mezzo::agent::{master_to_agent, MasterToAgent, RunTask};

use crate::executors::same_executor;
use crate::master::{master_status, now_secs, ExecutorRecord, Master, TaskRecord};
use crate::resources::Resources;
pub(crate) use crate::validation::validate_id;

impl Master {
    /// Validates the offer ids of an ACCEPT; returns the agent they are on.
    fn validate_offers(&self, framework_id: &str, accept: &call::Accept) -> Result<String, String> {
        if accept.offer_ids.is_empty() {
            return Err("No offers specified".into());
        }
        let mut seen = BTreeSet::new();
        let mut agent: Option<&str> = None;
        for id in &accept.offer_ids {
            if !seen.insert(id.value.as_str()) {
                return Err(format!("Duplicate offer {} in offer list", id.value));
            }
            let record = self
                .offers
                .get(&id.value)
                .ok_or_else(|| format!("Offer {} is no longer valid", id.value))?;
            if record.framework_id != framework_id {
                return Err(format!(
                    "Offer {} has invalid framework {} while framework {} is expected",
                    id.value, record.framework_id, framework_id
                ));
            }
            match agent {
                Some(a) if a != record.agent_id => {
                    return Err(format!(
                        "Aggregated offers must belong to one single agent. Offer {} uses agent {} and agent {}",
                        id.value, record.agent_id, a
                    ));
                }
                _ => agent = Some(record.agent_id.as_str()),
            }
        }
        agent
            .map(str::to_string)
            .ok_or_else(|| "No offers specified".to_string())
    }

    /// Handles ACCEPT.
    pub(crate) fn accept(&mut self, framework_id: &str, accept: &call::Accept) {
        let agent_id = match self.validate_offers(framework_id, accept) {
            Ok(agent_id) => agent_id,
            Err(error) => {
                tracing::warn!(%framework_id, %error, "ACCEPT with invalid offers");
                self.drop_tasks_of_invalid_accept(framework_id, accept, &error);
                return;
            }
        };
        let mut pool = Resources::new();
        for id in &accept.offer_ids {
            if let Some(record) = self.remove_offer(&id.value) {
                pool.add(&record.resources);
            }
        }
        self.counters.offers_accepted += accept.offer_ids.len() as u64;

        for op in &accept.operations {
            match op.r#type() {
                OperationType::Launch => {
                    let tasks = op.launch.as_ref().map(|l| l.task_infos.as_slice()).unwrap_or(&[]);
                    for task in tasks {
                        self.launch_task(framework_id, &agent_id, task, &mut pool);
                    }
                }
                OperationType::LaunchGroup => {
                    let tasks = op
                        .launch_group
                        .as_ref()
                        .map(|g| g.task_group.tasks.as_slice())
                        .unwrap_or(&[]);
                    for task in tasks {
                        self.reject_task(
                            framework_id,
                            &agent_id,
                            task,
                            Reason::TaskGroupInvalid,
                            "Task group launches (LAUNCH_GROUP) are not supported by this master",
                        );
                    }
                }
                other => {
                    tracing::warn!(%framework_id, operation = ?other, "dropping unsupported offer operation");
                }
            }
        }
        // What no task took goes back, refused to this framework for a while.
        let refuse = accept.filters.as_ref().and_then(|f| f.refuse_seconds);
        self.add_filter(framework_id, &agent_id, pool, refuse);
        self.wake_allocator_for(&agent_id);
    }

    /// Reports every task of an ACCEPT with invalid offers as dropped, and
    /// returns the call's valid offers to the pool.
    fn drop_tasks_of_invalid_accept(&mut self, framework_id: &str, accept: &call::Accept, error: &str) {
        for id in &accept.offer_ids {
            let belongs = self
                .offers
                .get(&id.value)
                .is_some_and(|o| o.framework_id == framework_id);
            if belongs {
                self.remove_offer(&id.value);
            }
        }
        let partition_aware = self
            .frameworks
            .get(framework_id)
            .is_some_and(|fw| fw.partition_aware());
        let state = if partition_aware {
            TaskState::TaskDropped
        } else {
            TaskState::TaskLost
        };
        for op in &accept.operations {
            let mut tasks: Vec<&TaskInfo> = Vec::new();
            if let Some(l) = &op.launch {
                tasks.extend(l.task_infos.iter());
            }
            if let Some(g) = &op.launch_group {
                tasks.extend(g.task_group.tasks.iter());
            }
            for task in tasks {
                let task_id = task.task_id.value.as_str();
                let agent = Some(task.agent_id.value.as_str()).filter(|a| !a.is_empty());
                let status = master_status(
                    task_id,
                    agent,
                    state,
                    Reason::InvalidOffers,
                    format!("Task launched with invalid offers: {error}"),
                );
                self.send_update(framework_id, status);
            }
        }
        self.wake_allocator();
    }

    /// Sends TASK_ERROR for a task that cannot be launched.
    fn reject_task(&mut self, framework_id: &str, agent_id: &str, task: &TaskInfo, reason: Reason, message: &str) {
        let task_id = task.task_id.value.as_str();
        tracing::warn!(%framework_id, %task_id, %message, "task is invalid");
        self.counters.tasks_invalid += 1;
        let status = master_status(task_id, Some(agent_id), TaskState::TaskError, reason, message);
        self.send_update(framework_id, status);
    }

    /// Validates one task against the remaining pool (Mesos's
    /// `validation::task::validate`). Returns the task's own resources and,
    /// when the task names an executor the agent does not run yet, that
    /// executor, whose resources it needs too. `task.executor` gets the
    /// framework's id when it has none, as Mesos's master fills it in.
    fn validate_task(
        &self,
        framework_id: &str,
        agent_id: &str,
        task: &mut TaskInfo,
        pool: &Resources,
    ) -> Result<(Resources, Option<ExecutorRecord>), String> {
        let task_id = task.task_id.value.as_str();
        crate::validation::task(task)?;
        let fw = self
            .frameworks
            .get(framework_id)
            .ok_or("Framework cannot be found")?;
        let agent = self.agents.get(agent_id).ok_or_else(|| format!("Agent {agent_id} is not registered"))?;
        if fw.tasks.contains_key(task_id) {
            return Err(format!("Task has duplicate ID: {task_id}"));
        }
        if task.agent_id.value != agent_id {
            return Err(format!(
                "Task uses invalid agent: {} while agent {} is expected",
                task.agent_id.value, agent_id
            ));
        }
        if task.command.is_some() == task.executor.is_some() {
            return Err("Task should have at least one (but not both) of CommandInfo or ExecutorInfo present".into());
        }
        if task.max_completion_time.as_ref().is_some_and(|d| d.nanoseconds < 0) {
            return Err("Task's `max_completion_time` must be non-negative".into());
        }
        let resources = Resources::from_protos(&task.resources)
            .map_err(|e| format!("Task uses invalid resources: {e}"))?;
        let mut needed = resources.clone();
        let mut new_executor = None;
        if let Some(executor) = task.executor.as_mut() {
            let fid = executor.framework_id.get_or_insert_with(|| crate::master::framework_id(framework_id));
            if fid.value != framework_id {
                return Err(format!(
                    "ExecutorInfo has an invalid FrameworkID (Actual: {} vs Expected: {framework_id})",
                    fid.value
                ));
            }
            if executor.r#type.is_some_and(|t| t != ExecutorType::Custom as i32) {
                return Err("'ExecutorInfo.type' must be 'CUSTOM'".into());
            }
            if executor.command.is_none() {
                return Err("'ExecutorInfo.command' must be set".into());
            }
            let executor_resources = Resources::from_protos(&executor.resources)
                .map_err(|e| format!("Executor uses invalid resources: {e}"))?;
            let key = (framework_id.to_string(), executor.executor_id.value.clone());
            match agent.executors.get(&key) {
                // A running executor holds its resources already; the task
                // must describe it exactly as it was launched.
                Some(running) if !same_executor(&running.info, executor) => {
                    return Err(format!(
                        "ExecutorInfo is not compatible with existing ExecutorInfo with same ExecutorID: existing {}, task's {}",
                        compact_json(&running.info),
                        compact_json(executor)
                    ));
                }
                Some(_) => {}
                None => {
                    needed.add(&executor_resources);
                    new_executor = Some(ExecutorRecord {
                        info: executor.clone(),
                        resources: executor_resources,
                        delivered: false,
                    });
                }
            }
        }
        if needed.is_empty() {
            return Err("Task and its executor use no resources".into());
        }
        if !pool.contains(&needed) {
            return Err(format!(
                "Task uses more resources {needed} than available {pool}"
            ));
        }
        Ok((resources, new_executor))
    }

    /// Launches one task of an ACCEPT, or rejects it.
    fn launch_task(&mut self, framework_id: &str, agent_id: &str, task: &TaskInfo, pool: &mut Resources) {
        if let Err(message) = self.authorize_task(framework_id, task) {
            self.reject_task(framework_id, agent_id, task, Reason::TaskUnauthorized, &message);
            return;
        }
        let mut info = task.clone();
        let (resources, new_executor) = match self.validate_task(framework_id, agent_id, &mut info, pool) {
            Ok(valid) => valid,
            Err(message) => {
                self.reject_task(framework_id, agent_id, task, Reason::TaskInvalid, &message);
                return;
            }
        };
        info.agent_id = AgentId {
            value: agent_id.to_string(),
        };
        let task_id = info.task_id.value.clone();
        let Some(agent) = self.agents.get_mut(agent_id) else {
            return;
        };
        let Some(fw) = self.frameworks.get_mut(framework_id) else {
            return;
        };
        pool.subtract(&resources);
        agent.used.add(&resources);
        if let Some(executor) = new_executor {
            let executor_id = executor.info.executor_id.value.clone();
            tracing::info!(%framework_id, %executor_id, %agent_id, resources = %executor.resources, "launching executor");
            pool.subtract(&executor.resources);
            agent.used.add(&executor.resources);
            agent.executors.insert((framework_id.to_string(), executor_id), executor);
        }
        tracing::info!(%framework_id, %task_id, %agent_id, %resources, "launching task");
        agent.link.send(MasterToAgent {
            r#type: Some(master_to_agent::Type::RunTask as i32),
            run_task: Some(RunTask {
                framework_info: fw.info.clone(),
                task: info.clone(),
            }),
            ..Default::default()
        });
        let task = fw.tasks.entry(task_id).insert_entry(
            TaskRecord {
                info,
                framework_id: framework_id.to_string(),
                agent_id: agent_id.to_string(),
                state: TaskState::TaskStaging,
                statuses: Vec::new(),
                resources,
                launched_at: now_secs(),
                delivered: false,
            },
        );
        self.operator.task_added(task.get());
        self.counters.tasks_launched += 1;
    }
}

/// `info` as one line of JSON (Mesos's mapping), for error messages.
fn compact_json(info: &ExecutorInfo) -> String {
    mezzo_proto::json::to_json_value(info).to_string()
}
