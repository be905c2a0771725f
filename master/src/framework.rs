//! Framework lifecycle: SUBSCRIBE (and failover), disconnection, TEARDOWN,
//! SUPPRESS, REVIVE and UPDATE_FRAMEWORK.

use std::sync::Arc;
use std::time::Duration;

use mezzo_proto::mesos::v1::scheduler::{event, Event};
use mezzo_proto::mesos::v1::{FrameworkInfo, TaskInfo, TaskState};
use mezzo_proto::mezzo::agent::{master_to_agent, MasterToAgent, ShutdownFramework};
use tokio::sync::mpsc;

use crate::acls::Acls;
use crate::master::{
    error_event, framework_id, now_secs, Framework, Master, Shared, Subscription,
    MAX_COMPLETED_FRAMEWORKS,
};

/// What a SUBSCRIBE produced: a stream whose first event is SUBSCRIBED, or
/// one holding a single ERROR (the framework was removed earlier).
pub(crate) struct Subscribed {
    pub(crate) stream_id: String,
    pub(crate) framework_id: Option<String>,
    pub(crate) rx: mpsc::UnboundedReceiver<Event>,
}

/// Checks a role name the way Mesos does (`src/common/roles.cpp`).
fn validate_role(role: &str) -> Result<(), String> {
    if role == "*" {
        return Ok(());
    }
    if role.is_empty() {
        return Err("Empty role name is invalid".into());
    }
    if role.starts_with('/') || role.ends_with('/') || role.contains("//") {
        return Err(format!("Role '{role}' cannot start or end with '/', or contain '//'"));
    }
    for part in role.split('/') {
        if part == "." || part == ".." {
            return Err(format!("Role '{role}' cannot contain '.' or '..' as a path component"));
        }
        if part.starts_with('-') {
            return Err(format!("Role '{role}' cannot have a component starting with '-'"));
        }
        if part == "*" {
            return Err(format!("Role '{role}' cannot contain '*' as a path component"));
        }
    }
    if role.chars().any(|c| c.is_whitespace() || c.is_control() || c == '\\') {
        return Err(format!("Role '{role}' contains an invalid character"));
    }
    Ok(())
}

/// The roles a FrameworkInfo asks for: `roles`, else the legacy `role`,
/// else `*`.
pub(crate) fn roles_of(info: &FrameworkInfo) -> Vec<String> {
    #[allow(deprecated)]
    let legacy_role = &info.role;
    if !info.roles.is_empty() {
        info.roles.clone()
    } else {
        vec![legacy_role.clone().unwrap_or_else(|| "*".to_string())]
    }
}

/// The `register_frameworks` ACLs: the framework's principal must be
/// allowed every role it asks for.
fn authorize_registration(acls: Option<&Acls>, info: &FrameworkInfo) -> Result<(), String> {
    let Some(acls) = acls else {
        return Ok(());
    };
    let principal = info.principal.as_deref();
    for role in roles_of(info) {
        if !acls.can_register(principal, &role) {
            return Err(format!(
                "Not authorized to use role '{role}': principal '{}' is not allowed by the 'register_frameworks' ACLs",
                principal.unwrap_or("")
            ));
        }
    }
    Ok(())
}

fn validate_framework_info(info: &FrameworkInfo) -> Result<(), String> {
    #[allow(deprecated)]
    let legacy_role = &info.role;
    if let Some(role) = legacy_role {
        validate_role(role)?;
    }
    for role in &info.roles {
        validate_role(role)?;
    }
    Ok(())
}

impl Master {
    /// Handles SUBSCRIBE: a new framework, or the failover of a known one.
    pub(crate) fn subscribe(&mut self, mut info: FrameworkInfo, suppressed_roles: &[String]) -> Subscribed {
        let stream_id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = mpsc::unbounded_channel();
        let requested = info.id.as_ref().map(|id| id.value.clone()).filter(|v| !v.is_empty());

        // Mesos answers these with a 200 stream holding one ERROR event.
        let rejection = if let Err(e) = validate_framework_info(&info) {
            Some(e)
        } else if let Err(e) = authorize_registration(self.config.acls.as_deref(), &info) {
            Some(e)
        } else if requested
            .as_ref()
            .is_some_and(|id| self.completed_frameworks.iter().any(|f| &f.id == id))
        {
            Some("Framework has been removed".to_string())
        } else {
            None
        };
        if let Some(message) = rejection {
            tracing::warn!(%message, "rejecting framework subscription");
            let _ = tx.send(error_event(&message));
            return Subscribed {
                stream_id,
                framework_id: None,
                rx,
            };
        }

        let id = match requested {
            Some(id) => id,
            None => {
                let id = format!("{}-{:04}", self.id, self.next_framework);
                self.next_framework += 1;
                id
            }
        };
        info.id = Some(framework_id(&id));
        let suppressed = !suppressed_roles.is_empty();
        let added = !self.frameworks.contains_key(&id);
        self.counters.framework_subscriptions += 1;

        if let Some(fw) = self.frameworks.get_mut(&id) {
            if let Some(old) = fw.subscription.take() {
                tracing::info!(framework_id = %id, "framework failed over");
                let _ = old.tx.send(error_event("Framework failed over"));
            }
            fw.info = info;
            fw.suppressed = suppressed;
            fw.epoch += 1;
            fw.unregistered_time = None;
        } else {
            tracing::info!(framework_id = %id, name = %info.name, "framework subscribed");
            self.frameworks.insert(
                id.clone(),
                Framework {
                    id: id.clone(),
                    info,
                    subscription: None,
                    suppressed,
                    filters: Vec::new(),
                    tasks: Default::default(),
                    completed_tasks: Default::default(),
                    registered_time: now_secs(),
                    unregistered_time: None,
                    offers_sent: 0,
                    epoch: 0,
                },
            );
        }
        // Offers made to the previous scheduler instance are void: it is gone
        // and the new one never saw them.
        self.remove_offers_of(&id, false);
        // The registry keeps it (and its failover timeout) across a failover.
        self.record_framework(&id);

        let subscribed = Event {
            r#type: Some(event::Type::Subscribed as i32),
            subscribed: Some(event::Subscribed {
                framework_id: framework_id(&id),
                heartbeat_interval_seconds: Some(self.config.heartbeat_interval.as_secs_f64()),
                master_info: Some(self.info.clone()),
            }),
            ..Default::default()
        };
        let _ = tx.send(subscribed);
        if let Some(fw) = self.frameworks.get_mut(&id) {
            fw.subscription = Some(Subscription {
                stream_id: stream_id.clone(),
                tx,
            });
            self.operator.framework_changed(fw, added);
        }
        self.wake_allocator();
        Subscribed {
            stream_id,
            framework_id: Some(id),
            rx,
        }
    }

    /// The scheduler's stream `stream_id` ended. Returns the epoch and the
    /// failover timeout when the framework is now disconnected.
    pub(crate) fn framework_disconnected(&mut self, id: &str, stream_id: &str) -> Option<(u64, f64)> {
        let fw = self.frameworks.get_mut(id)?;
        if fw.subscription.as_ref().map(|s| s.stream_id.as_str()) != Some(stream_id) {
            return None;
        }
        fw.subscription = None;
        fw.unregistered_time = Some(now_secs());
        let result = (fw.epoch, fw.info.failover_timeout.unwrap_or(0.0));
        tracing::info!(framework_id = %id, failover_timeout = result.1, "framework disconnected");
        self.record_framework(id);
        self.remove_offers_of(id, false);
        self.wake_allocator();
        Some(result)
    }

    /// Removes a framework that stayed disconnected past its failover timeout.
    pub(crate) fn failover_expired(&mut self, id: &str, epoch: u64) {
        let expired = self
            .frameworks
            .get(id)
            .is_some_and(|fw| fw.subscription.is_none() && fw.epoch == epoch);
        if expired {
            tracing::info!(framework_id = %id, "framework failover timeout expired");
            self.teardown(id);
        }
    }

    /// Handles TEARDOWN: shuts the framework down on its agents and forgets it.
    pub(crate) fn teardown(&mut self, id: &str) {
        self.remove_offers_of(id, false);
        let Some(mut fw) = self.frameworks.remove(id) else {
            return;
        };
        tracing::info!(framework_id = %id, "removing framework");
        self.registrar.delete_framework(id);
        self.counters.framework_teardowns += 1;
        let mut agents: Vec<String> = fw.tasks.values().map(|t| t.agent_id.clone()).collect();
        // Executors outlive their tasks: their agents shut them down too.
        agents.extend(
            self.agents
                .values()
                .filter(|a| a.executors.keys().any(|(f, _)| f == id))
                .map(|a| a.id.clone()),
        );
        agents.sort();
        agents.dedup();
        for agent_id in &agents {
            if let Some(agent) = self.agents.get(agent_id) {
                agent.link.send(MasterToAgent {
                    r#type: Some(master_to_agent::Type::ShutdownFramework as i32),
                    shutdown_framework: Some(ShutdownFramework {
                        framework_id: framework_id(id),
                    }),
                    ..Default::default()
                });
            }
        }
        let task_ids: Vec<String> = fw.tasks.keys().cloned().collect();
        for task_id in task_ids {
            if let Some(task) = fw.tasks.get_mut(&task_id) {
                if !task.state.is_terminal() {
                    if let Some(agent) = self.agents.get_mut(&task.agent_id) {
                        agent.used.subtract(&task.resources);
                    }
                    // Mesos records the tasks of a removed framework as killed.
                    task.state = TaskState::TaskKilled;
                    self.operator.task_killed_with_framework(task);
                }
            }
            fw.complete_task(&task_id);
        }
        self.remove_executors_of(id);
        self.operator.framework_removed(&fw.info);
        // Dropping the sender ends the scheduler's stream.
        fw.subscription = None;
        fw.unregistered_time = Some(now_secs());
        self.completed_frameworks.push_back(fw);
        while self.completed_frameworks.len() > MAX_COMPLETED_FRAMEWORKS {
            self.completed_frameworks.pop_front();
        }
        self.wake_allocator();
    }

    /// Handles SUPPRESS: no more offers until REVIVE.
    pub(crate) fn suppress(&mut self, id: &str) {
        if let Some(fw) = self.frameworks.get_mut(id) {
            fw.suppressed = true;
        }
    }

    /// Handles REVIVE: clears filters and resumes offers.
    pub(crate) fn revive(&mut self, id: &str) {
        if let Some(fw) = self.frameworks.get_mut(id) {
            fw.suppressed = false;
            fw.filters.clear();
        }
        self.wake_allocator();
    }

    /// Handles UPDATE_FRAMEWORK: replaces the FrameworkInfo, keeping the id.
    pub(crate) fn update_framework(
        &mut self,
        id: &str,
        mut info: FrameworkInfo,
        suppressed_roles: &[String],
    ) -> Result<(), String> {
        validate_framework_info(&info)?;
        if let Some(given) = &info.id {
            if given.value != id {
                return Err("'framework_info.id' differs from 'framework_id'".into());
            }
        }
        let fw = self
            .frameworks
            .get_mut(id)
            .ok_or_else(|| "Framework cannot be found".to_string())?;
        if info.principal != fw.info.principal {
            return Err("Changing the framework's principal is not allowed".into());
        }
        authorize_registration(self.config.acls.as_deref(), &info)?;
        info.id = Some(framework_id(id));
        fw.info = info;
        fw.suppressed = !suppressed_roles.is_empty();
        self.operator.framework_changed(fw, false);
        self.record_framework(id);
        self.wake_allocator();
        Ok(())
    }
}

impl Master {
    /// The `run_tasks` ACLs: the framework's principal must be allowed to
    /// run tasks as the task's user (`CommandInfo.user`, the executor's
    /// `CommandInfo.user`, else `FrameworkInfo.user`, as Mesos).
    pub(crate) fn authorize_task(&self, framework_id: &str, task: &TaskInfo) -> Result<(), String> {
        let Some(acls) = self.config.acls.as_deref() else {
            return Ok(());
        };
        let Some(fw) = self.frameworks.get(framework_id) else {
            return Ok(());
        };
        let user = task
            .command
            .as_ref()
            .and_then(|c| c.user.as_deref())
            .or_else(|| task.executor.as_ref().and_then(|e| e.command.as_ref()).and_then(|c| c.user.as_deref()))
            .unwrap_or(&fw.info.user);
        let principal = fw.info.principal.as_deref();
        if acls.can_run_as(principal, user) {
            return Ok(());
        }
        Err(format!(
            "Not authorized to launch task '{}' as user '{user}': principal '{}' is not allowed by the 'run_tasks' ACLs",
            task.task_id.value,
            principal.unwrap_or("")
        ))
    }

    /// The `teardown_frameworks` ACLs: may `principal` (an operator, `None`
    /// when unauthenticated) tear the framework down?
    pub(crate) fn authorize_teardown(&self, principal: Option<&str>, framework_id: &str) -> Result<(), String> {
        let Some(acls) = self.config.acls.as_deref() else {
            return Ok(());
        };
        let owner = self
            .frameworks
            .get(framework_id)
            .and_then(|fw| fw.info.principal.as_deref());
        if acls.can_teardown(principal, owner) {
            return Ok(());
        }
        Err(format!(
            "Principal '{}' is not allowed by the 'teardown_frameworks' ACLs to tear down framework {framework_id} of principal '{}'",
            principal.unwrap_or(""),
            owner.unwrap_or("")
        ))
    }
}

/// Called when a subscription's response body is dropped (client gone or
/// stream closed by us); starts the failover timer when it applies.
pub(crate) fn on_stream_closed(shared: &Arc<Shared>, framework_id: &str, stream_id: &str) {
    let outcome = shared.lock().framework_disconnected(framework_id, stream_id);
    let Some((epoch, timeout)) = outcome else {
        return;
    };
    let timeout = if timeout.is_finite() && timeout > 0.0 {
        Duration::from_secs_f64(timeout.min(1e9))
    } else {
        Duration::ZERO
    };
    // Dropping happens inside the runtime except at shutdown, when there is
    // nothing left to time out.
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        let shared = shared.clone();
        let id = framework_id.to_string();
        handle.spawn(async move {
            tokio::time::sleep(timeout).await;
            shared.lock().failover_expired(&id, epoch);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::validate_role;

    #[test]
    fn roles_follow_mesos_rules() {
        assert!(validate_role("*").is_ok());
        assert!(validate_role("web").is_ok());
        assert!(validate_role("a/b").is_ok());
        assert!(validate_role("").is_err());
        assert!(validate_role("..").is_err());
        assert!(validate_role("-x").is_err());
        assert!(validate_role("a b").is_err());
        assert!(validate_role("/a").is_err());
    }
}
