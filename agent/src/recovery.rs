//! Agent recovery after a restart on the same work dir (Mesos's
//! `Slave::recover`): checkpointed frameworks, executors and tasks come
//! back, unacknowledged status updates are sent again, live executors are
//! adopted and must subscribe again, the containers of executors that died
//! meanwhile are reaped, and containers nothing checkpointed are destroyed.

use crate::checkpoint::RecoveredExecutor;
use crate::process::{self, ExecutorProcess};
use crate::agent::{kill_group, partition_aware, Agent};
use crate::executor::{Executor, ExecutorKind, ExecutorState, Task};
use anyhow::Context;
use mezzo_proto::mesos::v1::{task_status, FrameworkId, FrameworkInfo, TaskState};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// What recovery decided for one checkpointed executor.
enum Fate {
    /// Its process still runs: it must subscribe again.
    Adopt((String, String), i32),
    /// Its process is gone: reap its container and end its task.
    Reap((String, String)),
}

impl Agent {
    /// Recovers what an earlier run of the agent checkpointed. Returns
    /// false with `--recover=cleanup` (everything was killed; the agent exits).
    pub async fn recover(self: &Arc<Self>) -> anyhow::Result<bool> {
        let strict = self.flags.strict;
        let recovered = match self.meta.recover(strict) {
            Ok(r) => r,
            Err(e) if strict => return Err(e).context("recovery failed (start with --strict=false to recover what is readable)"),
            Err(e) => {
                tracing::error!(error = %e, "recovery of checkpointed state failed; starting afresh");
                None
            }
        };
        let mut known: HashSet<String> = HashSet::new();
        let mut fates = Vec::new();
        // Live executors of earlier runs, by container id: the truth about
        // which are alive, even where a crash lost the pid checkpoint.
        let live: HashMap<String, i32> = process::executors_under(&self.runtime_root).into_iter().map(|(pid, cid)| (cid, pid)).collect();
        if let Some(agent) = recovered {
            if let Some(id) = agent.info.id.as_ref().map(|i| i.value.clone()).filter(|v| crate::paths::safe_component(v)) {
                tracing::info!(agent_id = %id, frameworks = agent.frameworks.len(), rebooted = agent.rebooted, "recovering checkpointed state");
                *self.agent_id.write().unwrap() = Some(id);
            }
            for fw in agent.frameworks {
                let Some(fid) = fw.info.id.as_ref().map(|i| i.value.clone()) else { continue };
                self.state.lock().unwrap().frameworks.insert(fid.clone(), fw.info.clone());
                for ex in fw.executors {
                    if let Some(fate) = self.recover_executor(&fw.info, &fid, ex, agent.rebooted, &live, &mut known) {
                        fates.push(fate);
                    }
                }
            }
        }
        self.kill_orphan_executors(&known, &live);
        let containers = self.containerizer.recover(&known).await;
        let containers = match containers {
            Ok(c) => c,
            Err(e) if strict => return Err(e).context("containerizer recovery failed"),
            Err(e) => {
                tracing::error!(error = %e, "containerizer recovery failed; continuing (--strict=false)");
                Vec::new()
            }
        };
        tracing::info!(containers = containers.len(), executors = fates.len(), "recovery done");
        if self.flags.recover == crate::flags::Recover::Cleanup {
            for fate in fates {
                let key = match fate {
                    Fate::Adopt(key, pid) => {
                        kill_group(Some(pid));
                        key
                    }
                    Fate::Reap(key) => key,
                };
                self.reap(&key, true).await;
            }
            return Ok(false);
        }
        // Every recovered executor is in the state now, before any is reaped: the rest of what is on disk
        // ended before the restart.
        self.schedule_gc_on_disk();
        for fate in fates {
            let agent = self.clone();
            match fate {
                Fate::Adopt(key, pid) => {
                    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                    match agent.state.lock().unwrap().executors.get_mut(&key) {
                        Some(ex) => ex.runner = Some(tx),
                        None => continue,
                    }
                    tracing::info!(executor = %key.1, pid, "adopting a running executor; waiting for it to subscribe again");
                    agent.clone().watch_limitations(key.clone());
                    let within = agent.reregistration_timeout;
                    tokio::spawn(agent.run_executor(key, ExecutorProcess::Adopted(pid), rx, within));
                }
                Fate::Reap(key) => {
                    tokio::spawn(async move { agent.reap(&key, false).await });
                }
            }
        }
        Ok(true)
    }

    fn recover_executor(
        &self,
        framework: &FrameworkInfo,
        fid: &str,
        ex: RecoveredExecutor,
        rebooted: bool,
        live: &HashMap<String, i32>,
        known: &mut HashSet<String>,
    ) -> Option<Fate> {
        if ex.tasks.is_empty() {
            return None;
        }
        let eid = ex.info.executor_id.value.clone();
        let fid_msg = FrameworkId { value: fid.to_string() };
        if ex.completed {
            // The run ended before the restart; only its updates may still be owed.
            for task in ex.tasks {
                if !task.unacknowledged.is_empty() {
                    let acked = acknowledged_uuids(&task.updates, &task.unacknowledged);
                    self.updates.recover(fid_msg.clone(), &task.info.task_id.value, task.unacknowledged, acked, Some(task.updates_path));
                }
            }
            // Its directories are collected from their mtime (the run's end), as every run on disk no
            // executor owns (`schedule_gc_on_disk`).
            return None;
        }
        let key = (fid.to_string(), eid.clone());
        let cid = ex.container_id.clone();
        known.insert(cid.clone());
        let sandbox = crate::paths::sandbox_dir(&self.work_dir, &self.id(), fid, &eid, &cid);
        // A command task names no executor; a custom executor's tasks do.
        let kind = if ex.tasks.iter().any(|t| t.info.executor.is_some()) { ExecutorKind::Custom } else { ExecutorKind::Command };
        let mut executor = Executor::new(fid.to_string(), cid.clone(), sandbox, ex.info.clone(), kind, ex.tasks[0].info.clone(), true);
        executor.tasks.clear();
        executor.recovered = true;
        let pid = if rebooted { None } else { live.get(&cid).copied() };
        if pid.is_some() && pid != ex.pid {
            tracing::warn!(executor = %eid, checkpointed = ?ex.pid, found = ?pid, "the executor's checkpointed pid is stale; using the live one");
        }
        executor.pid = pid.or(ex.pid);
        for recovered in &ex.tasks {
            let mut task = Task::new(recovered.info.clone());
            task.state = recovered.updates.last().map(|u| u.state()).unwrap_or(TaskState::TaskStaging);
            // An update from the executor means it had the task.
            task.launched = recovered.updates.iter().any(|u| u.source() == task_status::Source::Executor);
            executor.tasks.push(task);
        }
        let alive = pid.is_some();
        let states: Vec<&str> = executor.tasks.iter().map(|t| t.state.as_str_name()).collect();
        tracing::info!(executor = %eid, container = %cid, alive, ?states, framework = %framework.name, "recovered executor");
        self.state.lock().unwrap().executors.insert(key.clone(), executor);
        for task in ex.tasks {
            // Also a task with nothing pending: its executor may send an
            // acknowledged update again, which must not reach the scheduler twice.
            let acked = acknowledged_uuids(&task.updates, &task.unacknowledged);
            self.updates.recover(fid_msg.clone(), &task.info.task_id.value, task.unacknowledged, acked, Some(task.updates_path));
        }
        match pid {
            Some(pid) => Some(Fate::Adopt(key, pid)),
            None => Some(Fate::Reap(key)),
        }
    }

    /// Kills executors of an earlier run whose containers nothing
    /// checkpointed (non-checkpointing frameworks): Mesos shuts them down too.
    fn kill_orphan_executors(&self, known: &HashSet<String>, live: &HashMap<String, i32>) {
        for (cid, &pid) in live {
            if !known.contains(cid) {
                tracing::info!(pid, container = %cid, "killing the executor of an orphan container");
                kill_group(Some(pid));
            }
        }
    }

    /// An executor that is gone: its container is destroyed (after reading
    /// the exit status its supervisor recorded) and its task, unless already
    /// terminal, ends as that status says, or as lost.
    pub async fn reap(&self, key: &(String, String), cleanup: bool) {
        let Some((cid, kind)) = self.state.lock().unwrap().executors.get_mut(key).map(|e| {
            e.state = ExecutorState::Terminating;
            (e.container_id.clone(), e.kind)
        }) else {
            return;
        };
        // The status its supervisor recorded (the rust backend's, or the container mode's).
        let recorded = self.containerizer.runtime_dir(&cid).exit_status().ok().flatten();
        if let Err(e) = self.containerizer.destroy(&cid).await {
            tracing::error!(container = %cid, error = %e, "failed to destroy the container of a dead executor");
        }
        let statuses: Vec<_> = {
            let state = self.state.lock().unwrap();
            let aware = state.frameworks.get(&key.0).map(partition_aware).unwrap_or(false);
            let lost = if aware { TaskState::TaskGone } else { TaskState::TaskLost };
            let Some(ex) = state.executors.get(key) else { return };
            ex.live_tasks()
                .map(|task| {
                    // A command task's end is its command's; a custom executor's exit says nothing of its tasks.
                    let (new_state, message) = match (cleanup, recorded, kind) {
                        (true, _, _) => (lost, "Executor killed by the agent's --recover=cleanup".to_string()),
                        (false, Some(status), ExecutorKind::Command) if status.success() => (
                            TaskState::TaskFinished,
                            format!("Executor terminated while the agent was down; the command {status}"),
                        ),
                        (false, Some(status), ExecutorKind::Command) => (
                            TaskState::TaskFailed,
                            format!("Executor terminated while the agent was down; the command {status}"),
                        ),
                        (false, Some(status), ExecutorKind::Custom) => (TaskState::TaskFailed, format!("Executor terminated while the agent was down ({status})")),
                        (false, None, _) => (lost, "Executor terminated while the agent was down".to_string()),
                    };
                    tracing::info!(task = %task.id(), state = new_state.as_str_name(), "ending the task of a dead executor");
                    self.executor_status(ex, task.id(), new_state, task_status::Reason::ExecutorTerminated, message)
                })
                .collect()
        };
        for status in statuses {
            self.record_and_forward(key, status);
        }
        self.finish_executor(key);
    }
}

/// The uuids of the checkpointed updates the scheduler acknowledged.
fn acknowledged_uuids(updates: &[mezzo_proto::mesos::v1::TaskStatus], unacknowledged: &[mezzo_proto::mesos::v1::TaskStatus]) -> Vec<Vec<u8>> {
    updates
        .iter()
        .filter_map(|u| u.uuid.clone())
        .filter(|id| !unacknowledged.iter().any(|p| p.uuid.as_ref() == Some(id)))
        .collect()
}
