//! Operator HTTP endpoints: the read-only `/version`, `/health`, `/state`,
//! `/frameworks`, `/slaves`, `/tasks` and `/flags`, in
//! the legacy JSON shapes Mesos tools read (`src/master/http.cpp`), and
//! `POST /teardown`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use mezzo_proto::json::{to_ascii_json, to_json_value};
use serde_json::{json, Map, Value};

use crate::error::CallError;
use crate::http_auth::{self, Realm};
use crate::master::{Agent, ExecutorRecord, Framework, Master, Shared, TaskRecord, MESOS_VERSION};
use crate::resources::Resources;
use mezzo_proto::mesos::v1::TaskState;

/// The build identity reported by `/version` and `/state`.
pub(crate) const GIT_SHA: &str = "mezzo";
pub(crate) const BUILD_USER: &str = "mezzo";

pub(crate) fn json_response(value: &Value) -> Response {
    match to_ascii_json(value) {
        Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("failed to encode json: {e}")).into_response(),
    }
}

/// `GET /version`.
pub(crate) async fn version(State(shared): State<Arc<Shared>>) -> Response {
    let start = shared.lock().start_time;
    json_response(&json!({
        "version": MESOS_VERSION,
        "build_date": build_date(start),
        "build_time": start,
        "build_user": BUILD_USER,
        "git_sha": GIT_SHA,
        "mezzo_version": env!("CARGO_PKG_VERSION"),
    }))
}

/// Mesos prints the build date like `2024-01-01 00:00:00`; ours is the start time.
pub(crate) fn build_date(secs: f64) -> String {
    let secs = secs as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// `GET /health`.
pub(crate) async fn health() -> StatusCode {
    StatusCode::OK
}

fn task_json(task: &TaskRecord) -> Value {
    let info = &task.info;
    let statuses: Vec<Value> = task
        .statuses
        .iter()
        .map(|s| {
            let mut m = Map::new();
            m.insert("state".into(), json!(s.state().as_str_name()));
            m.insert("timestamp".into(), json!(s.timestamp.unwrap_or(0.0)));
            if let Some(h) = s.healthy {
                m.insert("healthy".into(), json!(h));
            }
            if let Some(cs) = &s.check_status {
                m.insert("check_status".into(), to_json_value(cs));
            }
            if let Some(cs) = &s.container_status {
                m.insert("container_status".into(), to_json_value(cs));
            }
            if let Some(l) = &s.labels {
                m.insert("labels".into(), to_json_value(l).get("labels").cloned().unwrap_or(json!([])));
            }
            Value::Object(m)
        })
        .collect();
    let mut m = Map::new();
    m.insert("id".into(), json!(info.task_id.value));
    m.insert("name".into(), json!(info.name));
    m.insert("framework_id".into(), json!(task.framework_id));
    m.insert(
        "executor_id".into(),
        json!(info
            .executor
            .as_ref()
            .map(|e| e.executor_id.value.as_str())
            .unwrap_or("")),
    );
    m.insert("slave_id".into(), json!(task.agent_id));
    m.insert("agent_id".into(), json!(task.agent_id));
    m.insert("state".into(), json!(task.state.as_str_name()));
    m.insert("role".into(), json!("*"));
    m.insert("resources".into(), task.resources.to_state_json());
    m.insert("statuses".into(), Value::Array(statuses));
    if let Some(l) = &info.labels {
        m.insert("labels".into(), to_json_value(l).get("labels").cloned().unwrap_or(json!([])));
    }
    if let Some(c) = &info.container {
        m.insert("container".into(), to_json_value(c));
    }
    if let Some(d) = &info.discovery {
        m.insert("discovery".into(), to_json_value(d));
    }
    if let Some(h) = &info.health_check {
        m.insert("health_check".into(), to_json_value(h));
    }
    if let Some(k) = &info.kill_policy {
        m.insert("kill_policy".into(), to_json_value(k));
    }
    Value::Object(m)
}

/// An executor as Mesos's `/state` shows it (`json(ExecutorInfo)` plus `slave_id`).
fn executor_json(executor: &ExecutorRecord, agent_id: &str) -> Value {
    let info = &executor.info;
    let mut m = Map::new();
    m.insert("executor_id".into(), json!(info.executor_id.value));
    m.insert("name".into(), json!(info.name.clone().unwrap_or_default()));
    m.insert("framework_id".into(), json!(info.framework_id.as_ref().map(|f| f.value.as_str()).unwrap_or("")));
    m.insert("command".into(), info.command.as_ref().map(to_json_value).unwrap_or_else(|| json!({})));
    m.insert("resources".into(), executor.resources.to_state_json());
    if !info.resources.is_empty() {
        m.insert("role".into(), json!("*"));
    }
    if let Some(l) = &info.labels {
        m.insert("labels".into(), to_json_value(l).get("labels").cloned().unwrap_or(json!([])));
    }
    if info.r#type.is_some() {
        m.insert("type".into(), json!(info.r#type().as_str_name()));
    }
    m.insert("slave_id".into(), json!(agent_id));
    Value::Object(m)
}

pub(crate) fn framework_json(fw: &Framework, master: &Master) -> Value {
    let info = &fw.info;
    let mut used = Resources::new();
    for t in fw.tasks.values() {
        if !t.state.is_terminal() {
            used.add(&t.resources);
        }
    }
    let mut executors = Vec::new();
    for agent in master.agents.values() {
        for ((fid, _), executor) in &agent.executors {
            if fid == &fw.id {
                used.add(&executor.resources);
                executors.push(executor_json(executor, &agent.id));
            }
        }
    }
    let mut offered = Resources::new();
    let offers: Vec<Value> = master
        .offers
        .values()
        .filter(|o| o.framework_id == fw.id)
        .map(|o| {
            offered.add(&o.resources);
            json!({
                "id": o.offer.id.value,
                "framework_id": fw.id,
                "slave_id": o.agent_id,
                "resources": o.resources.to_state_json(),
            })
        })
        .collect();
    let capabilities: Vec<Value> = info
        .capabilities
        .iter()
        .map(|c| json!(c.r#type().as_str_name()))
        .collect();
    #[allow(deprecated)]
    let role = info.role.clone().unwrap_or_else(|| "*".to_string());
    let connected = fw.subscription.is_some();
    let mut allocated = used.clone();
    allocated.add(&offered);
    json!({
        "id": fw.id,
        "name": info.name,
        "user": info.user,
        "role": role,
        "roles": if info.roles.is_empty() { vec![role.clone()] } else { info.roles.clone() },
        "active": connected && !fw.suppressed,
        "connected": connected,
        "recovered": false,
        "suppressed": fw.suppressed,
        "hostname": info.hostname.clone().unwrap_or_default(),
        "webui_url": info.webui_url.clone().unwrap_or_default(),
        "principal": info.principal.clone().unwrap_or_default(),
        "failover_timeout": info.failover_timeout.unwrap_or(0.0),
        "checkpoint": info.checkpoint.unwrap_or(false),
        "capabilities": capabilities,
        "registered_time": fw.registered_time,
        "unregistered_time": fw.unregistered_time.unwrap_or(0.0),
        "tasks": fw.tasks.values().filter(|t| t.state != TaskState::TaskUnreachable).map(task_json).collect::<Vec<_>>(),
        "completed_tasks": fw.completed_tasks.iter().map(task_json).collect::<Vec<_>>(),
        // On agents marked unreachable, as Mesos lists them apart.
        "unreachable_tasks": fw.tasks.values().filter(|t| t.state == TaskState::TaskUnreachable).map(task_json).collect::<Vec<_>>(),
        "executors": executors,
        "completed_executors": [],
        "offers": offers,
        "resources": allocated.to_state_json(),
        "used_resources": used.to_state_json(),
        "offered_resources": offered.to_state_json(),
    })
}

pub(crate) fn agent_json(agent: &Agent) -> Value {
    let attributes: Map<String, Value> = agent
        .info
        .attributes
        .iter()
        .map(|a| {
            let v = to_json_value(a);
            let value = v
                .get("text")
                .and_then(|t| t.get("value"))
                .cloned()
                .or_else(|| v.get("scalar").and_then(|s| s.get("value")).cloned())
                .unwrap_or(Value::Null);
            (a.name.clone(), value)
        })
        .collect();
    json!({
        "id": agent.id,
        "hostname": agent.info.hostname,
        "port": agent.info.port.unwrap_or(5051),
        "pid": agent.pid(),
        "resources": agent.total.to_state_json(),
        "used_resources": agent.used.to_state_json(),
        "offered_resources": agent.offered.to_state_json(),
        "unreserved_resources": agent.total.to_state_json(),
        "reserved_resources": {},
        "attributes": attributes,
        "active": true,
        "deactivated": false,
        "version": MESOS_VERSION,
        "capabilities": [],
        "registered_time": agent.registered_time,
    })
}

fn leader_pid(master: &Master) -> String {
    master.info.pid.clone().unwrap_or_default()
}

/// `GET /state` (and `/master/state`).
pub(crate) async fn state(State(shared): State<Arc<Shared>>) -> Response {
    let master = shared.lock();
    let value = json!({
        "version": MESOS_VERSION,
        "git_sha": GIT_SHA,
        "build_date": build_date(master.start_time),
        "build_time": master.start_time,
        "build_user": BUILD_USER,
        "start_time": master.start_time,
        "elected_time": master.start_time,
        "id": master.info.id,
        "pid": leader_pid(&master),
        "hostname": master.info.hostname.clone().unwrap_or_default(),
        "activated_slaves": master.agents.len(),
        "deactivated_slaves": 0,
        "unreachable_slaves": master.unreachable_agents.len(),
        "leader": leader_pid(&master),
        "leader_info": to_json_value(&master.info),
        "flags": flags_json(&master),
        "slaves": master.agents.values().map(agent_json).collect::<Vec<_>>(),
        "frameworks": master.frameworks.values().map(|f| framework_json(f, &master)).collect::<Vec<_>>(),
        "completed_frameworks": master.completed_frameworks.iter().map(|f| framework_json(f, &master)).collect::<Vec<_>>(),
        "orphan_tasks": [],
        "unregistered_frameworks": [],
    });
    drop(master);
    json_response(&value)
}

/// `GET /frameworks`.
pub(crate) async fn frameworks(State(shared): State<Arc<Shared>>) -> Response {
    let master = shared.lock();
    let value = json!({
        "frameworks": master.frameworks.values().map(|f| framework_json(f, &master)).collect::<Vec<_>>(),
        "completed_frameworks": master.completed_frameworks.iter().map(|f| framework_json(f, &master)).collect::<Vec<_>>(),
        "unregistered_frameworks": [],
    });
    drop(master);
    json_response(&value)
}

/// `GET /slaves`.
pub(crate) async fn slaves(State(shared): State<Arc<Shared>>) -> Response {
    let value = json!({
        "slaves": shared.lock().agents.values().map(agent_json).collect::<Vec<_>>(),
        // Known from the registry, not re-registered since the failover.
        "recovered_slaves": shared.lock().recovered_agents.values().map(|r| to_json_value(&r.info)).collect::<Vec<_>>(),
    });
    json_response(&value)
}

/// The task states `/state-summary` counts, as Mesos's `TaskStateSummary`.
const SUMMARY_STATES: [TaskState; 10] = [
    TaskState::TaskStaging,
    TaskState::TaskStarting,
    TaskState::TaskRunning,
    TaskState::TaskKilling,
    TaskState::TaskFinished,
    TaskState::TaskKilled,
    TaskState::TaskFailed,
    TaskState::TaskLost,
    TaskState::TaskError,
    TaskState::TaskUnreachable,
];

/// `GET /state-summary`: Mesos's summary of agents and frameworks, each
/// with its task counts by state and the ids of the other side.
pub(crate) async fn state_summary(State(shared): State<Arc<Shared>>) -> Response {
    let master = shared.lock();
    // (framework, agent) -> task counts by state, over live and completed tasks.
    let mut counts: HashMap<(&str, &str), HashMap<TaskState, u64>> = HashMap::new();
    for fw in master.frameworks.values() {
        for t in fw.tasks.values().chain(fw.completed_tasks.iter()) {
            *counts.entry((fw.id.as_str(), t.agent_id.as_str())).or_default().entry(t.state).or_default() += 1;
        }
    }
    let summed = |keep: &dyn Fn(&str, &str) -> bool, m: &mut Map<String, Value>| {
        let mut ids = std::collections::BTreeSet::new();
        let mut by_state: HashMap<TaskState, u64> = HashMap::new();
        for ((fid, aid), states) in &counts {
            if keep(fid, aid) {
                for (state, n) in states {
                    *by_state.entry(*state).or_default() += n;
                }
                ids.insert((*fid, *aid));
            }
        }
        for state in SUMMARY_STATES {
            m.insert(state.as_str_name().into(), json!(by_state.get(&state).copied().unwrap_or(0)));
        }
        ids
    };
    let slaves: Vec<Value> = master
        .agents
        .values()
        .map(|agent| {
            let mut m = match agent_json(agent) {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            let ids = summed(&|_, aid| aid == agent.id, &mut m);
            let mut frameworks: Vec<&str> = ids.iter().map(|(f, _)| *f).collect();
            frameworks.dedup();
            m.insert("framework_ids".into(), json!(frameworks));
            Value::Object(m)
        })
        .collect();
    let frameworks: Vec<Value> = master
        .frameworks
        .values()
        .map(|fw| {
            let full = framework_json(fw, &master);
            let mut m = Map::new();
            for key in [
                "id", "name", "used_resources", "offered_resources", "capabilities", "hostname", "webui_url", "active",
                "connected", "recovered",
            ] {
                m.insert(key.into(), full.get(key).cloned().unwrap_or(Value::Null));
            }
            let ids = summed(&|fid, _| fid == fw.id, &mut m);
            let mut agents: Vec<&str> = ids.iter().map(|(_, a)| *a).collect();
            agents.sort_unstable();
            agents.dedup();
            m.insert("slave_ids".into(), json!(agents));
            Value::Object(m)
        })
        .collect();
    let value = json!({
        "hostname": master.info.hostname.clone().unwrap_or_default(),
        "slaves": slaves,
        "frameworks": frameworks,
    });
    drop(master);
    json_response(&value)
}

/// `GET /master/redirect`: 307 to the leading master, `Location:
/// //host:port` as Mesos answers (this master leads).
pub(crate) async fn redirect(State(shared): State<Arc<Shared>>) -> Response {
    let master = shared.lock();
    let info = &master.info;
    let host = info
        .address
        .as_ref()
        .and_then(|a| a.hostname.clone().or_else(|| a.ip.clone()))
        .or_else(|| info.hostname.clone())
        .unwrap_or_default();
    let location = format!("//{host}:{}", info.port);
    drop(master);
    (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, location)]).into_response()
}

/// `GET /tasks?task_id=&framework_id=&limit=&offset=&order=`.
pub(crate) async fn tasks(State(shared): State<Arc<Shared>>, Query(query): Query<HashMap<String, String>>) -> Response {
    let master = shared.lock();
    let mut all: Vec<&TaskRecord> = Vec::new();
    for fw in master.frameworks.values().chain(master.completed_frameworks.iter()) {
        all.extend(fw.tasks.values());
        all.extend(fw.completed_tasks.iter());
    }
    if let Some(id) = query.get("task_id") {
        all.retain(|t| &t.info.task_id.value == id);
    }
    if let Some(id) = query.get("framework_id") {
        all.retain(|t| &t.framework_id == id);
    }
    // Mesos orders by start time, newest first unless order=asc.
    all.sort_by(|a, b| a.launched_at.total_cmp(&b.launched_at));
    if query.get("order").map(String::as_str) != Some("asc") {
        all.reverse();
    }
    let offset: usize = query.get("offset").and_then(|o| o.parse().ok()).unwrap_or(0);
    let limit: i64 = query.get("limit").and_then(|l| l.parse().ok()).unwrap_or(100);
    let iter = all.into_iter().skip(offset);
    let list: Vec<Value> = if limit < 0 {
        iter.map(task_json).collect()
    } else {
        iter.take(limit as usize).map(task_json).collect()
    };
    drop(master);
    json_response(&json!({ "tasks": list }))
}

pub(crate) fn flags_json(master: &Master) -> Value {
    let c = &master.config;
    json!({
        "hostname": master.info.hostname.clone().unwrap_or_default(),
        "port": master.info.port.to_string(),
        "agent_ping_timeout": format!("{}secs", c.agent_ping_timeout.as_secs_f64()),
        "allocation_interval": format!("{}secs", c.allocation_interval.as_secs_f64()),
        "heartbeat_interval": format!("{}secs", c.heartbeat_interval.as_secs_f64()),
        "authenticate_agents": c.authenticate_agents.to_string(),
        "authenticate_frameworks": c.authenticate_frameworks.to_string(),
        "authenticate_http_frameworks": c.authenticate_frameworks.to_string(),
        "authenticate_http_readwrite": c.authenticate_http_readwrite.to_string(),
        "authenticate_http_readonly": c.authenticate_http_readonly.to_string(),
        "authorizers": "local",
    })
}

/// `GET /flags`.
pub(crate) async fn flags(State(shared): State<Arc<Shared>>) -> Response {
    let value = json!({ "flags": flags_json(&shared.lock()) });
    json_response(&value)
}

/// `POST /teardown` with `frameworkId=<id>` in a form-encoded body: removes
/// the framework and kills its tasks, as Mesos's `/master/teardown`. Needs
/// credentials with `--authenticate_http_readwrite` and the caller must be
/// allowed by the `teardown_frameworks` ACLs (403 otherwise).
pub(crate) async fn teardown(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let principal = match http_auth::authenticate(&shared.config, Realm::ReadWrite, &headers) {
        Ok(principal) => principal,
        Err(resp) => return resp,
    };
    let durable = teardown_call(&shared, principal.as_deref(), &method, &query, &body);
    let result = match durable {
        Ok(Some(durable)) => durable.await,
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}

fn teardown_call(
    shared: &Shared,
    principal: Option<&str>,
    method: &Method,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Result<Option<crate::registrar::Durable>, CallError> {
    if method != Method::POST {
        return Err(CallError::MethodNotAllowed(format!(
            "Expecting one of {{ 'POST' }}, but received '{method}'"
        )));
    }
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(body)
        .map_err(|e| CallError::BadRequest(format!("Unable to decode the request body: {e}")))?;
    let id = form
        .get("frameworkId")
        .or_else(|| query.get("frameworkId"))
        .ok_or_else(|| CallError::BadRequest("Missing 'frameworkId' query parameter in the request body".into()))?;
    crate::validation::id_field("frameworkId", id).map_err(CallError::BadRequest)?;
    let mut master = shared.lock();
    if !master.frameworks.contains_key(id) {
        return Err(CallError::BadRequest("No framework found with specified ID".into()));
    }
    if let Err(message) = master.authorize_teardown(principal, id) {
        tracing::warn!(framework_id = %id, principal = principal.unwrap_or(""), "teardown refused");
        return Err(CallError::Forbidden(message));
    }
    tracing::info!(framework_id = %id, principal = principal.unwrap_or(""), "teardown by an operator");
    // Answered once the registry no longer has it.
    master.registrar.begin();
    master.teardown(id);
    Ok(master.registrar.durable())
}

#[cfg(test)]
mod tests {
    use super::build_date;

    #[test]
    fn build_date_is_civil_time() {
        assert_eq!(build_date(0.0), "1970-01-01 00:00:00");
        assert_eq!(build_date(1_700_000_000.0), "2023-11-14 22:13:20");
    }
}
