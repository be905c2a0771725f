//! The master's metrics under Mesos's names (`docs/monitoring.md`):
//! `/metrics/snapshot` (JSON), `/metrics` (Prometheus's text format) and the
//! operator API's GET_METRICS all read [`snapshot`]: `master/*` and the
//! allocator's `allocator/mesos/*`. What mezzo counts that Mesos does not is
//! named `mezzo/master/...`, outside Mesos's namespace.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use mezzo_proto::prometheus::{self, Sample};
use serde_json::{json, Map, Value};

use crate::master::{now_secs, Master, Shared};
use crate::resources::Resources;

/// Every task state, as Mesos names the per-state metrics (`master/tasks_running`).
const TASK_STATES: [&str; 13] = [
    "TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING", "TASK_FINISHED", "TASK_FAILED", "TASK_KILLED",
    "TASK_ERROR", "TASK_LOST", "TASK_DROPPED", "TASK_UNREACHABLE", "TASK_GONE", "TASK_GONE_BY_OPERATOR",
];

/// The master's metrics now, in a stable order.
pub(crate) fn snapshot(master: &Master) -> Vec<Sample> {
    let mut states: HashMap<&'static str, u64> = HashMap::new();
    for fw in master.frameworks.values().chain(master.completed_frameworks.iter()) {
        for t in fw.tasks.values().chain(fw.completed_tasks.iter()) {
            *states.entry(t.state.as_str_name()).or_default() += 1;
        }
    }
    let mut total = Resources::new();
    let mut used = Resources::new();
    for a in master.agents.values() {
        total.add(&a.total);
        used.add(&a.used);
    }
    let connected = master.frameworks.values().filter(|f| f.subscription.is_some()).count() as f64;
    let active = master.frameworks.values().filter(|f| f.subscription.is_some() && !f.suppressed).count() as f64;
    let frameworks = master.frameworks.len() as f64;
    let agents = master.agents.len() as f64;
    let c = &master.counters;
    let valid_updates = c.status_updates.saturating_sub(c.invalid_status_updates);
    let mut out = vec![
        Sample::gauge("master/uptime_secs", now_secs() - master.start_time),
        Sample::gauge("master/elected", 1.0),
        Sample::gauge("master/slaves_active", agents),
        Sample::gauge("master/slaves_inactive", 0.0),
        Sample::gauge("master/slaves_connected", agents),
        Sample::gauge("master/slaves_disconnected", 0.0),
        Sample::gauge("master/slaves_unreachable", 0.0),
        Sample::counter("master/slave_registrations", c.agent_registrations as f64),
        Sample::counter("master/slave_reregistrations", c.agent_reregistrations as f64),
        Sample::counter("master/slave_removals", c.agent_removals as f64),
        Sample::gauge("master/frameworks_active", active),
        Sample::gauge("master/frameworks_inactive", frameworks - active),
        Sample::gauge("master/frameworks_connected", connected),
        Sample::gauge("master/frameworks_disconnected", frameworks - connected),
        Sample::gauge("master/outstanding_offers", master.offers.len() as f64),
        Sample::gauge("master/operator_event_stream_subscribers", master.operator.subscribers() as f64),
        Sample::counter("master/messages_status_update", c.status_updates as f64),
        Sample::counter("master/valid_status_updates", valid_updates as f64),
        Sample::counter("master/invalid_status_updates", c.invalid_status_updates as f64),
        Sample::counter("master/messages_framework_to_executor", c.messages_framework_to_executor as f64),
        Sample::counter("master/valid_framework_to_executor_messages", c.valid_framework_to_executor_messages as f64),
        Sample::counter("master/invalid_framework_to_executor_messages", c.invalid_framework_to_executor_messages as f64),
        Sample::counter("master/messages_executor_to_framework", c.messages_executor_to_framework as f64),
        Sample::counter("master/valid_executor_to_framework_messages", c.valid_executor_to_framework_messages as f64),
        Sample::counter("master/invalid_executor_to_framework_messages", c.invalid_executor_to_framework_messages as f64),
        Sample::counter("master/messages_exited_executor", c.messages_exited_executor as f64),
    ];
    for state in TASK_STATES {
        let key = state.trim_start_matches("TASK_").to_ascii_lowercase();
        let count = states.get(state).copied().unwrap_or(0) as f64;
        // Mesos: the states a task passes through are gauges, the terminal ones counters.
        let terminal = !matches!(state, "TASK_STAGING" | "TASK_STARTING" | "TASK_RUNNING" | "TASK_KILLING" | "TASK_UNREACHABLE");
        out.push(if terminal { Sample::counter(format!("master/tasks_{key}"), count) } else { Sample::gauge(format!("master/tasks_{key}"), count) });
    }
    for name in ["cpus", "mem", "disk", "gpus"] {
        let (t, u) = (total.scalar(name), used.scalar(name));
        out.push(Sample::gauge(format!("master/{name}_total"), t));
        out.push(Sample::gauge(format!("master/{name}_used"), u));
        out.push(Sample::gauge(format!("master/{name}_percent"), if t > 0.0 { u / t } else { 0.0 }));
    }
    out.extend([
        Sample::counter("mezzo/master/offers_sent", c.offers_sent as f64),
        Sample::counter("mezzo/master/offers_accepted", c.offers_accepted as f64),
        Sample::counter("mezzo/master/offers_declined", c.offers_declined as f64),
        Sample::counter("mezzo/master/offers_rescinded", c.offers_rescinded as f64),
        Sample::counter("mezzo/master/tasks_launched", c.tasks_launched as f64),
        Sample::counter("mezzo/master/invalid_tasks", c.tasks_invalid as f64),
        Sample::counter("mezzo/master/framework_subscriptions", c.framework_subscriptions as f64),
        Sample::counter("mezzo/master/framework_teardowns", c.framework_teardowns as f64),
        Sample::counter("mezzo/master/invalid_scheduler_calls", c.invalid_calls as f64),
    ]);
    // The allocator's, as Mesos names them: a run counter and a timer.
    out.extend(master.allocation_timer.metrics().into_iter().map(|(name, value)| {
        if name == "allocator/mesos/allocation_runs" { Sample::counter(name, value) } else { Sample::gauge(name, value) }
    }));
    out
}

/// `GET /metrics/snapshot`: `{"master/uptime_secs": 12.3, ...}`.
pub(crate) async fn snapshot_json(State(shared): State<Arc<Shared>>) -> Response {
    let samples = snapshot(&shared.lock());
    let map: Map<String, Value> = samples.into_iter().map(|s| (s.name, json!(s.value))).collect();
    crate::endpoints::json_response(&Value::Object(map))
}

/// `GET /metrics`: the same metrics in Prometheus's text exposition format.
pub(crate) async fn prometheus_text(State(shared): State<Arc<Shared>>) -> Response {
    let samples = snapshot(&shared.lock());
    (StatusCode::OK, [(header::CONTENT_TYPE, prometheus::CONTENT_TYPE)], prometheus::render(&samples)).into_response()
}
