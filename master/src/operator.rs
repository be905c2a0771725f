//! The master operator API, `POST /api/v1` (Mesos's `mesos.v1.master.Call`,
//! JSON or protobuf), as `src/master/http.cpp` serves it: the GET_* calls,
//! TEARDOWN, MARK_AGENT_GONE and SUBSCRIBE, whose RecordIO stream starts with
//! SUBSCRIBED (the whole GET_STATE) and then carries TASK_ADDED,
//! TASK_UPDATED, AGENT_ADDED, AGENT_REMOVED, FRAMEWORK_ADDED,
//! FRAMEWORK_UPDATED, FRAMEWORK_REMOVED and a HEARTBEAT every heartbeat
//! interval.
//!
//! Events come from one-line hooks in the master's bookkeeping
//! (`self.operator.task_added(..)`, ...) into a broadcast channel; an event is
//! built only when someone subscribed. A subscriber that falls more than
//! `EVENT_BUFFER` events behind loses its stream (it subscribes again and gets
//! a fresh SUBSCRIBED), so a slow client cannot grow the master's memory.
//!
//! Authentication, as Mesos with one addition: `--authenticate_http_readwrite`
//! guards every call (Mesos serves `/api/v1` in its read-write realm), and
//! `--authenticate_http_readonly` guards the calls that only read (GET_*,
//! SUBSCRIBE), so that `/api/v1` opens nothing `/state` keeps closed.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use mezzo_proto::codec::{self, ContentType};
use mezzo_proto::mesos::v1::master::{call, event, response, Call, Event, Response as ApiResponse};
use mezzo_proto::mesos::v1::{
    task_status::Reason, AgentId, AgentInfo, ExecutorId, Flag, FrameworkInfo, Metric, Role, Task, TaskState, TaskStatus,
    TimeInfo, VersionInfo,
};
use serde_json::Value;
use tokio::sync::broadcast;
use tokio::time::MissedTickBehavior;

use crate::error::CallError;
use crate::http_auth::{self, Realm};
use crate::master::{framework_id, master_status, Agent, Framework, Master, Shared, TaskRecord, MESOS_VERSION};
use crate::resources::Resources;
use crate::framework::roles_of;
use crate::scheduler_api::{negotiate, request_content_type};
use crate::validation::id_field;

/// How many events a subscriber may fall behind before its stream is closed.
const EVENT_BUFFER: usize = 4096;

/// The operator event streams of the master (Mesos's `Master::subscribers`).
#[derive(Debug)]
pub(crate) struct Operator {
    events: broadcast::Sender<Arc<Event>>,
}

impl Default for Operator {
    fn default() -> Self {
        Self { events: broadcast::channel(EVENT_BUFFER).0 }
    }
}

impl Operator {
    /// How many SUBSCRIBE streams are open (`master/operator_event_stream_subscribers`).
    pub(crate) fn subscribers(&self) -> usize {
        self.events.receiver_count()
    }

    /// Publishes the event `make` builds, when anyone listens.
    fn publish(&self, make: impl FnOnce() -> Event) {
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(Arc::new(make()));
        }
    }

    /// TASK_ADDED: the master added a task (launched, or adopted from an agent's report).
    pub(crate) fn task_added(&self, task: &TaskRecord) {
        self.publish(|| Event {
            r#type: Some(event::Type::TaskAdded as i32),
            task_added: Some(event::TaskAdded { task: task_proto(task) }),
            ..Default::default()
        });
    }

    /// TASK_UPDATED: a task of `framework_id` reached a new state through `status`.
    pub(crate) fn task_updated(&self, framework_id: &str, state: TaskState, status: &TaskStatus) {
        self.publish(|| {
            let mut status = status.clone();
            // Mesos keeps no `data` in the master: it may be large.
            status.data = None;
            Event {
                r#type: Some(event::Type::TaskUpdated as i32),
                task_updated: Some(event::TaskUpdated {
                    framework_id: crate::master::framework_id(framework_id),
                    status,
                    state: state as i32,
                }),
                ..Default::default()
            }
        });
    }

    /// TASK_UPDATED for a task its framework's removal killed, with the
    /// status Mesos records (TASK_KILLED, REASON_FRAMEWORK_REMOVED).
    pub(crate) fn task_killed_with_framework(&self, task: &TaskRecord) {
        if self.events.receiver_count() > 0 {
            let id = &task.info.task_id.value;
            let status = master_status(id, Some(&task.agent_id), TaskState::TaskKilled, Reason::FrameworkRemoved, "Framework removed");
            self.task_updated(&task.framework_id, TaskState::TaskKilled, &status);
        }
    }

    /// AGENT_ADDED: an agent the master did not have registered.
    pub(crate) fn agent_added(&self, agent: &Agent) {
        self.publish(|| Event {
            r#type: Some(event::Type::AgentAdded as i32),
            agent_added: Some(event::AgentAdded { agent: agent_entry(agent) }),
            ..Default::default()
        });
    }

    /// AGENT_REMOVED.
    pub(crate) fn agent_removed(&self, agent_id: &str) {
        self.publish(|| Event {
            r#type: Some(event::Type::AgentRemoved as i32),
            agent_removed: Some(event::AgentRemoved { agent_id: AgentId { value: agent_id.to_string() } }),
            ..Default::default()
        });
    }

    /// FRAMEWORK_ADDED (`added`) or FRAMEWORK_UPDATED: a framework
    /// subscribed, re-subscribed or changed its FrameworkInfo.
    pub(crate) fn framework_changed(&self, fw: &Framework, added: bool) {
        self.publish(|| {
            let framework = framework_entry(fw, None);
            if added {
                Event {
                    r#type: Some(event::Type::FrameworkAdded as i32),
                    framework_added: Some(event::FrameworkAdded { framework }),
                    ..Default::default()
                }
            } else {
                Event {
                    r#type: Some(event::Type::FrameworkUpdated as i32),
                    framework_updated: Some(event::FrameworkUpdated { framework }),
                    ..Default::default()
                }
            }
        });
    }

    /// FRAMEWORK_REMOVED.
    pub(crate) fn framework_removed(&self, info: &FrameworkInfo) {
        self.publish(|| Event {
            r#type: Some(event::Type::FrameworkRemoved as i32),
            framework_removed: Some(event::FrameworkRemoved { framework_info: info.clone() }),
            ..Default::default()
        });
    }
}

fn time_info(secs: f64) -> TimeInfo {
    TimeInfo { nanoseconds: (secs * 1e9) as i64 }
}

/// A task as the operator API shows it (Mesos's `Task`; statuses without `data`).
pub(crate) fn task_proto(task: &TaskRecord) -> Task {
    let info = &task.info;
    let statuses: Vec<TaskStatus> = task
        .statuses
        .iter()
        .map(|s| TaskStatus { data: None, ..s.clone() })
        .collect();
    let latest = task.statuses.last();
    let mut t = Task {
        name: info.name.clone(),
        task_id: info.task_id.clone(),
        framework_id: framework_id(&task.framework_id),
        executor_id: info.executor.as_ref().map(|e| ExecutorId { value: e.executor_id.value.clone() }),
        agent_id: AgentId { value: task.agent_id.clone() },
        resources: info.resources.clone(),
        statuses,
        status_update_state: latest.map(|s| s.state),
        status_update_uuid: latest.and_then(|s| s.uuid.clone()),
        labels: info.labels.clone(),
        discovery: info.discovery.clone(),
        container: info.container.clone(),
        health_check: info.health_check.clone(),
        kill_policy: info.kill_policy,
        user: info.command.as_ref().and_then(|c| c.user.clone()),
        limits: info.limits.clone(),
        ..Default::default()
    };
    t.set_state(task.state);
    t
}

/// An agent as GET_AGENTS and AGENT_ADDED show it.
fn agent_entry(agent: &Agent) -> response::get_agents::Agent {
    response::get_agents::Agent {
        agent_info: agent.info.clone(),
        active: true,
        deactivated: Some(false),
        version: MESOS_VERSION.to_string(),
        pid: Some(agent.pid()),
        registered_time: Some(time_info(agent.registered_time)),
        reregistered_time: None,
        total_resources: agent.total.to_protos(),
        allocated_resources: agent.used.to_protos(),
        offered_resources: agent.offered.to_protos(),
        capabilities: Vec::new(),
    }
}

/// A framework as GET_FRAMEWORKS shows it; with `master`, its offers and
/// resources too (the events carry neither, as Mesos's).
fn framework_entry(fw: &Framework, master: Option<&Master>) -> response::get_frameworks::Framework {
    let connected = fw.subscription.is_some();
    let mut entry = response::get_frameworks::Framework {
        framework_info: fw.info.clone(),
        active: connected && !fw.suppressed,
        connected,
        recovered: false,
        registered_time: Some(time_info(fw.registered_time)),
        reregistered_time: None,
        unregistered_time: fw.unregistered_time.map(time_info),
        offers: Vec::new(),
        inverse_offers: Vec::new(),
        allocated_resources: Vec::new(),
        offered_resources: Vec::new(),
    };
    if let Some(master) = master {
        let (used, offered) = framework_resources(fw, master);
        entry.allocated_resources = used.to_protos();
        entry.offered_resources = offered.to_protos();
        entry.offers = master.offers.values().filter(|o| o.framework_id == fw.id).map(|o| o.offer.clone()).collect();
    }
    entry
}

/// What a framework holds (its live tasks and executors) and has on offer.
fn framework_resources(fw: &Framework, master: &Master) -> (Resources, Resources) {
    let mut used = Resources::new();
    for task in fw.tasks.values().filter(|t| !t.state.is_terminal()) {
        used.add(&task.resources);
    }
    for agent in master.agents.values() {
        for ((fid, _), executor) in &agent.executors {
            if fid == &fw.id {
                used.add(&executor.resources);
            }
        }
    }
    let mut offered = Resources::new();
    for offer in master.offers.values().filter(|o| o.framework_id == fw.id) {
        offered.add(&offer.resources);
    }
    (used, offered)
}

fn get_agents(master: &Master) -> response::GetAgents {
    response::GetAgents { agents: master.agents.values().map(agent_entry).collect(), recovered_agents: master.recovered_agents.values().map(|r| r.info.clone()).collect::<Vec<AgentInfo>>() }
}

fn get_frameworks(master: &Master) -> response::GetFrameworks {
    response::GetFrameworks {
        frameworks: master.frameworks.values().map(|f| framework_entry(f, Some(master))).collect(),
        completed_frameworks: master.completed_frameworks.iter().map(|f| framework_entry(f, None)).collect(),
    }
}

fn get_executors(master: &Master) -> response::GetExecutors {
    let executors = master
        .agents
        .values()
        .flat_map(|agent| {
            agent.executors.values().map(|e| response::get_executors::Executor {
                executor_info: e.info.clone(),
                agent_id: AgentId { value: agent.id.clone() },
            })
        })
        .collect();
    response::GetExecutors { executors }
}

fn get_tasks(master: &Master) -> response::GetTasks {
    let mut out = response::GetTasks::default();
    for fw in master.frameworks.values() {
        for task in fw.tasks.values() {
            if task.state == TaskState::TaskUnreachable {
                out.unreachable_tasks.push(task_proto(task));
            } else {
                out.tasks.push(task_proto(task));
            }
        }
        out.completed_tasks.extend(fw.completed_tasks.iter().map(task_proto));
    }
    // A removed framework's tasks are all over.
    for fw in &master.completed_frameworks {
        out.completed_tasks.extend(fw.tasks.values().chain(fw.completed_tasks.iter()).map(task_proto));
    }
    out
}

/// GET_STATE, also the body of SUBSCRIBED.
pub(crate) fn get_state(master: &Master) -> response::GetState {
    response::GetState {
        get_tasks: Some(get_tasks(master)),
        get_executors: Some(get_executors(master)),
        get_frameworks: Some(get_frameworks(master)),
        get_agents: Some(get_agents(master)),
    }
}

fn get_roles(master: &Master) -> response::GetRoles {
    let mut roles: BTreeMap<String, (Vec<String>, Resources)> = BTreeMap::new();
    for fw in master.frameworks.values() {
        let names = roles_of(&fw.info);
        for name in &names {
            roles.entry(name.clone()).or_default().0.push(fw.id.clone());
        }
        // mezzo allocates a framework's resources to its first role.
        let (mut used, offered) = framework_resources(fw, master);
        used.add(&offered);
        if let Some(first) = names.first() {
            roles.entry(first.clone()).or_default().1.add(&used);
        }
    }
    let roles = roles
        .into_iter()
        .map(|(name, (frameworks, resources))| Role {
            name,
            weight: 1.0,
            frameworks: frameworks.iter().map(|f| framework_id(f)).collect(),
            resources: resources.to_protos(),
        })
        .collect();
    response::GetRoles { roles }
}

fn get_flags(master: &Master) -> Vec<Flag> {
    let Value::Object(flags) = crate::endpoints::flags_json(master) else {
        return Vec::new();
    };
    flags
        .into_iter()
        .map(|(name, value)| Flag { name, value: Some(value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string())) })
        .collect()
}

/// Mesos's logging level is glog's verbosity: 0 for INFO and above, more
/// for more detail; here from the most verbose level tracing lets through.
fn logging_level() -> u32 {
    use tracing::level_filters::LevelFilter;
    match LevelFilter::current() {
        LevelFilter::TRACE => 2,
        LevelFilter::DEBUG => 1,
        _ => 0,
    }
}

pub(crate) fn version_info(start_time: f64) -> VersionInfo {
    VersionInfo {
        version: MESOS_VERSION.to_string(),
        build_date: Some(crate::endpoints::build_date(start_time)),
        build_time: Some(start_time),
        build_user: Some(crate::endpoints::BUILD_USER.to_string()),
        git_sha: Some(crate::endpoints::GIT_SHA.to_string()),
        git_branch: None,
        git_tag: Some(format!("mezzo-{}", env!("CARGO_PKG_VERSION"))),
    }
}

/// Whether a call only reads (guarded by `--authenticate_http_readonly`).
fn reads_only(kind: call::Type) -> bool {
    use call::Type::*;
    matches!(
        kind,
        GetHealth
            | GetFlags
            | GetVersion
            | GetMetrics
            | GetLoggingLevel
            | ListFiles
            | ReadFile
            | GetState
            | GetAgents
            | GetFrameworks
            | GetExecutors
            | GetOperations
            | GetTasks
            | GetRoles
            | GetWeights
            | GetMaster
            | Subscribe
            | GetMaintenanceStatus
            | GetMaintenanceSchedule
            | GetQuota
    )
}

/// Validates a call as `validation::master::call::validate`: 400 for an
/// absent type or body, 501 for UNKNOWN and the calls this master does not serve.
fn validate(call: &Call) -> Result<call::Type, CallError> {
    let invalid = |m: String| CallError::BadRequest(format!("Failed to validate master::Call: {m}"));
    let Some(raw) = call.r#type else {
        return Err(invalid("Expecting 'type' to be present".into()));
    };
    let Ok(kind) = call::Type::try_from(raw) else {
        return Err(invalid(format!("Unknown call type {raw}")));
    };
    use call::Type::*;
    let missing = match kind {
        GetMetrics if call.get_metrics.is_none() => Some("get_metrics"),
        Teardown if call.teardown.is_none() => Some("teardown"),
        MarkAgentGone if call.mark_agent_gone.is_none() => Some("mark_agent_gone"),
        _ => None,
    };
    if let Some(field) = missing {
        return Err(invalid(format!("Expecting '{field}' to be present")));
    }
    if let Some(teardown) = &call.teardown {
        id_field("teardown.framework_id", &teardown.framework_id.value).map_err(invalid)?;
    }
    if let Some(gone) = &call.mark_agent_gone {
        id_field("mark_agent_gone.agent_id", &gone.agent_id.value).map_err(invalid)?;
    }
    match kind {
        GetHealth | GetFlags | GetVersion | GetMetrics | GetLoggingLevel | GetState | GetAgents | GetFrameworks
        | GetExecutors | GetOperations | GetTasks | GetRoles | GetMaster | Subscribe | Teardown | MarkAgentGone => Ok(kind),
        Unknown => Err(CallError::NotImplemented("Call type UNKNOWN is not supported: set 'type' to a call".into())),
        other => Err(CallError::NotImplemented(format!("Call type {} is not supported by this master", other.as_str_name()))),
    }
}

/// The axum handler of `POST /api/v1`.
pub(crate) async fn handle(State(shared): State<Arc<Shared>>, method: Method, headers: HeaderMap, body: Bytes) -> Response {
    let result = match accept_call(&shared, &method, &headers, &body) {
        Ok(Accepted::Refused(resp)) => Ok(resp),
        Ok(Accepted::Call { kind: call::Type::Teardown, call, principal, .. }) => {
            let id = call.teardown.as_ref().expect("validated").framework_id.value.clone();
            durably(&shared, |master| teardown(master, principal.as_deref(), &id)).await.map(|()| StatusCode::OK.into_response())
        }
        Ok(Accepted::Call { kind: call::Type::MarkAgentGone, call, principal, .. }) => {
            let id = call.mark_agent_gone.as_ref().expect("validated").agent_id.value.clone();
            tracing::info!(agent_id = %id, principal = principal.as_deref().unwrap_or(""), "marking agent gone");
            durably(&shared, |master| master.mark_agent_gone(&id)).await.map(|()| StatusCode::OK.into_response())
        }
        Ok(Accepted::Call { kind, accept, .. }) => Ok(answer(&shared, kind, accept)),
        Err(err) => Err(err),
    };
    result.unwrap_or_else(|err| {
        tracing::debug!(status = %err.status(), error = %err, "rejected operator call");
        err.into_response()
    })
}

/// The calls that change state answer once the registry holds the change
/// (`Shared::durably`: 503 when it cannot be written).
async fn durably<R>(shared: &Shared, f: impl FnOnce(&mut Master) -> Result<R, CallError>) -> Result<R, CallError> {
    shared.durably(f).await
}

/// A call past decoding, validation and authentication, or the answer that
/// refused it (a 401 with its challenge).
enum Accepted {
    Refused(Response),
    Call { kind: call::Type, call: Call, principal: Option<String>, accept: ContentType },
}

fn accept_call(shared: &Shared, method: &Method, headers: &HeaderMap, body: &[u8]) -> Result<Accepted, CallError> {
    // Mesos serves /api/v1 in its read-write realm: that flag guards every
    // call, before anything is read.
    let mut principal = match http_auth::authenticate(&shared.config, Realm::ReadWrite, headers) {
        Ok(p) => p,
        Err(resp) => return Ok(Accepted::Refused(resp)),
    };
    if method != Method::POST {
        return Err(CallError::MethodNotAllowed(format!("Expecting one of {{ 'POST' }}, but received '{method}'")));
    }
    let content_type = request_content_type(headers)?;
    let call: Call =
        codec::decode(body, content_type).map_err(|e| CallError::BadRequest(format!("Failed to parse body into Call: {e}")))?;
    let kind = validate(&call)?;
    if reads_only(kind) && principal.is_none() {
        principal = match http_auth::authenticate(&shared.config, Realm::ReadOnly, headers) {
            Ok(p) => p,
            Err(resp) => return Ok(Accepted::Refused(resp)),
        };
    }
    let accept = negotiate(headers).ok_or_else(|| {
        CallError::NotAcceptable("Expecting 'Accept' to allow 'application/x-protobuf' or 'application/json'".into())
    })?;
    tracing::debug!(call = kind.as_str_name(), principal = principal.as_deref().unwrap_or(""), "operator call");
    Ok(Accepted::Call { kind, call, principal, accept })
}

/// Answers a call that only reads (SUBSCRIBE included).
fn answer(shared: &Shared, kind: call::Type, accept: ContentType) -> Response {
    use call::Type::*;
    let reply = {
        let master = shared.lock();
        let mut reply = ApiResponse::default();
        let answer = match kind {
            GetHealth => {
                reply.get_health = Some(response::GetHealth { healthy: true });
                response::Type::GetHealth
            }
            GetFlags => {
                reply.get_flags = Some(response::GetFlags { flags: get_flags(&master) });
                response::Type::GetFlags
            }
            GetVersion => {
                reply.get_version = Some(response::GetVersion { version_info: version_info(master.start_time) });
                response::Type::GetVersion
            }
            GetMetrics => {
                let metrics = crate::metrics::snapshot(&master)
                    .into_iter()
                    .map(|m| Metric { name: m.name, value: Some(m.value) })
                    .collect();
                reply.get_metrics = Some(response::GetMetrics { metrics });
                response::Type::GetMetrics
            }
            GetLoggingLevel => {
                reply.get_logging_level = Some(response::GetLoggingLevel { level: logging_level() });
                response::Type::GetLoggingLevel
            }
            GetState => {
                reply.get_state = Some(get_state(&master));
                response::Type::GetState
            }
            GetAgents => {
                reply.get_agents = Some(get_agents(&master));
                response::Type::GetAgents
            }
            GetFrameworks => {
                reply.get_frameworks = Some(get_frameworks(&master));
                response::Type::GetFrameworks
            }
            GetExecutors => {
                reply.get_executors = Some(get_executors(&master));
                response::Type::GetExecutors
            }
            // No offer operation this master performs is tracked (no
            // reservations, volumes or resource providers): none to list.
            GetOperations => {
                reply.get_operations = Some(response::GetOperations { operations: Vec::new() });
                response::Type::GetOperations
            }
            GetTasks => {
                reply.get_tasks = Some(get_tasks(&master));
                response::Type::GetTasks
            }
            GetRoles => {
                reply.get_roles = Some(get_roles(&master));
                response::Type::GetRoles
            }
            GetMaster => {
                reply.get_master = Some(response::GetMaster {
                    master_info: Some(master.info.clone()),
                    start_time: Some(master.start_time),
                    elected_time: Some(master.start_time),
                });
                response::Type::GetMaster
            }
            Subscribe => {
                let state = get_state(&master);
                let rx = master.operator.events.subscribe();
                drop(master);
                return stream_response(shared, state, rx, accept);
            }
            other => unreachable!("validate() refuses {other:?} and the handler answers the writes"),
        };
        reply.r#type = Some(answer as i32);
        reply
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, accept.mime())], codec::encode(&reply, accept)).into_response()
}

/// TEARDOWN, as Mesos's `_teardown`: 400 for an unknown framework, 403 when
/// the `teardown_frameworks` ACLs refuse the operator.
fn teardown(master: &mut Master, principal: Option<&str>, id: &str) -> Result<(), CallError> {
    if !master.frameworks.contains_key(id) {
        return Err(CallError::BadRequest("No framework found with specified ID".into()));
    }
    master.authorize_teardown(principal, id).map_err(CallError::Forbidden)?;
    tracing::info!(framework_id = %id, principal = principal.unwrap_or(""), "teardown by an operator (TEARDOWN)");
    master.teardown(id);
    Ok(())
}

/// The 200 RecordIO stream of a SUBSCRIBE: SUBSCRIBED, then the events, with
/// a HEARTBEAT every heartbeat interval (the first one interval after
/// SUBSCRIBED, as Mesos's heartbeater). The stream ends when the subscriber
/// falls `EVENT_BUFFER` events behind.
fn stream_response(
    shared: &Shared,
    state: response::GetState,
    rx: broadcast::Receiver<Arc<Event>>,
    content_type: ContentType,
) -> Response {
    let period = shared.config.heartbeat_interval;
    let subscribed = Event {
        r#type: Some(event::Type::Subscribed as i32),
        subscribed: Some(event::Subscribed { get_state: Some(state), heartbeat_interval_seconds: Some(period.as_secs_f64()) }),
        ..Default::default()
    };
    let first = crate::stream::frame(&subscribed, content_type);
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let rest = futures::stream::unfold((rx, heartbeat), move |(mut rx, mut heartbeat)| async move {
        let event = tokio::select! {
            biased;
            event = rx.recv() => match event {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "operator event subscriber fell behind: closing its stream");
                    return None;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            },
            _ = heartbeat.tick() => Arc::new(Event { r#type: Some(event::Type::Heartbeat as i32), ..Default::default() }),
        };
        Some((Ok::<Bytes, Infallible>(crate::stream::frame(event.as_ref(), content_type)), (rx, heartbeat)))
    });
    let events = futures::StreamExt::chain(futures::stream::once(async move { Ok::<Bytes, Infallible>(first) }), rest);
    let mut resp = (StatusCode::OK, Body::from_stream(events)).into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type.mime()));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_validated_like_mesos() {
        let call = |t: call::Type| Call { r#type: Some(t as i32), ..Default::default() };
        assert!(matches!(validate(&Call::default()), Err(CallError::BadRequest(m)) if m.contains("'type'")));
        assert!(matches!(validate(&Call { r#type: Some(999), ..Default::default() }), Err(CallError::BadRequest(m)) if m.contains("999")));
        assert!(matches!(validate(&call(call::Type::Unknown)), Err(CallError::NotImplemented(_))));
        assert!(matches!(validate(&call(call::Type::ReserveResources)), Err(CallError::NotImplemented(m)) if m.contains("RESERVE_RESOURCES")));
        assert!(matches!(validate(&call(call::Type::GetMetrics)), Err(CallError::BadRequest(m)) if m.contains("'get_metrics'")));
        assert!(matches!(validate(&call(call::Type::Teardown)), Err(CallError::BadRequest(m)) if m.contains("'teardown'")));
        assert_eq!(validate(&call(call::Type::GetState)), Ok(call::Type::GetState));
        assert!(reads_only(call::Type::Subscribe) && !reads_only(call::Type::Teardown) && !reads_only(call::Type::MarkAgentGone));
    }

    #[test]
    fn times_are_nanoseconds() {
        assert_eq!(time_info(1.5).nanoseconds, 1_500_000_000);
    }
}
