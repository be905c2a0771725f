//! The agent's metrics under Mesos's names (`docs/monitoring.md`, `slave/*`):
//! `/metrics/snapshot` (JSON), `/metrics` (Prometheus's text format) and the
//! operator API's GET_METRICS all read [`snapshot`].

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use mezzo_proto::mesos::v1::{Resource, TaskState};
use mezzo_proto::prometheus::{self, Sample};

use crate::agent::Agent;
use crate::executor::ExecutorState;

/// When the agent started serving (set when its router is built).
static STARTED: OnceLock<Instant> = OnceLock::new();

/// Records the agent's start, for `slave/uptime_secs`.
pub fn mark_started() {
    STARTED.get_or_init(Instant::now);
}

fn scalar(resources: &[Resource], name: &str) -> f64 {
    resources.iter().filter(|r| r.name == name).filter_map(|r| r.scalar.as_ref()).map(|s| s.value).sum()
}

/// The agent's metrics now, in a stable order.
pub fn snapshot(agent: &Agent) -> Vec<Sample> {
    let uptime = STARTED.get().map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0);
    let registered = agent.agent_id.read().unwrap_or_else(|e| e.into_inner()).is_some();
    let state = agent.state.lock().unwrap_or_else(|e| e.into_inner());
    // Registering, running, terminating, terminated.
    let mut executors = [0u64; 4];
    let mut tasks: HashMap<TaskState, u64> = HashMap::new();
    let mut frameworks = BTreeSet::new();
    let mut used: Vec<Resource> = Vec::new();
    for e in state.executors.values() {
        executors[match e.state {
            ExecutorState::Registering => 0,
            ExecutorState::Running => 1,
            ExecutorState::Terminating => 2,
            ExecutorState::Terminated => 3,
        }] += 1;
        for t in &e.tasks {
            *tasks.entry(t.state).or_default() += 1;
        }
        if e.state != ExecutorState::Terminated {
            frameworks.insert(e.framework_id.as_str());
            used.extend(e.allocated());
        }
    }
    let terminated = executors[3] + state.completed.len() as u64;
    for e in &state.completed {
        for t in &e.tasks {
            *tasks.entry(t.state).or_default() += 1;
        }
    }
    let task_count = |s: TaskState| tasks.get(&s).copied().unwrap_or(0) as f64;
    let mut out = vec![
        Sample::gauge("slave/uptime_secs", uptime),
        Sample::gauge("slave/registered", if registered { 1.0 } else { 0.0 }),
        Sample::gauge("slave/frameworks_active", frameworks.len() as f64),
        Sample::gauge("slave/executors_registering", executors[0] as f64),
        Sample::gauge("slave/executors_running", executors[1] as f64),
        Sample::gauge("slave/executors_terminating", executors[2] as f64),
        Sample::counter("slave/executors_terminated", terminated as f64),
        Sample::gauge("slave/tasks_staging", task_count(TaskState::TaskStaging)),
        Sample::gauge("slave/tasks_starting", task_count(TaskState::TaskStarting)),
        Sample::gauge("slave/tasks_running", task_count(TaskState::TaskRunning)),
        Sample::gauge("slave/tasks_killing", task_count(TaskState::TaskKilling)),
        Sample::counter("slave/tasks_finished", task_count(TaskState::TaskFinished)),
        Sample::counter("slave/tasks_failed", task_count(TaskState::TaskFailed)),
        Sample::counter("slave/tasks_killed", task_count(TaskState::TaskKilled)),
        Sample::counter("slave/tasks_lost", task_count(TaskState::TaskLost)),
        Sample::counter("slave/tasks_gone", task_count(TaskState::TaskGone)),
    ];
    drop(state);
    out.push(Sample::gauge("slave/executor_directory_max_allowed_age_secs", agent.gc.max_allowed_age_secs()));
    out.push(Sample::counter("gc/path_removals_succeeded", agent.gc.succeeded.load(std::sync::atomic::Ordering::Relaxed) as f64));
    out.push(Sample::counter("gc/path_removals_failed", agent.gc.failed.load(std::sync::atomic::Ordering::Relaxed) as f64));
    out.push(Sample::gauge("gc/path_removals_pending", 2.0 * agent.gc.pending() as f64));
    for name in ["cpus", "mem", "disk", "gpus"] {
        let (total, used) = (scalar(&agent.resources, name), scalar(&used, name));
        out.push(Sample::gauge(format!("slave/{name}_total"), total));
        out.push(Sample::gauge(format!("slave/{name}_used"), used));
        out.push(Sample::gauge(format!("slave/{name}_percent"), if total > 0.0 { used / total } else { 0.0 }));
    }
    out
}

/// `GET /metrics/snapshot`: `{"slave/uptime_secs": 12.3, ...}`.
pub async fn snapshot_json(State(agent): State<Arc<Agent>>) -> Response {
    let map: serde_json::Map<String, serde_json::Value> =
        snapshot(&agent).into_iter().map(|s| (s.name, serde_json::json!(s.value))).collect();
    axum::Json(serde_json::Value::Object(map)).into_response()
}

/// `GET /metrics`: the same metrics in Prometheus's text exposition format.
pub async fn prometheus_text(State(agent): State<Arc<Agent>>) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, prometheus::CONTENT_TYPE)], prometheus::render(&snapshot(&agent))).into_response()
}
