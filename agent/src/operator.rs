//! The agent's operator surface: the v1 operator API (`POST /api/v1`,
//! Mesos's `mesos.v1.agent.Call`/`Response`, JSON or protobuf) and the
//! usage endpoints `/monitor/statistics` and `/containers`.

use crate::flags::{enum_name, format_duration};
use crate::http::{error, request_type, response_type};
use crate::agent::Agent;
use crate::executor::{Executor, ExecutorState};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use mezzo_containerizer::Usage;
use mezzo_proto::codec::ContentType;
use mezzo_proto::mesos::v1::agent::{call, response, Call, Response as ApiResponse};
use mezzo_proto::mesos::v1::{
    AgentId, ContainerId, ContainerStatus, ExecutorId, Flag, FrameworkId, Metric, ResourceStatistics, Task, VersionInfo,
};
use std::sync::Arc;

/// The Mesos version whose API this agent speaks.
pub const MESOS_VERSION: &str = "1.11.0";

/// Statistics converted from the containerizer's usage sample.
pub fn statistics(u: &Usage) -> ResourceStatistics {
    ResourceStatistics {
        timestamp: u.timestamp,
        processes: u.processes,
        threads: u.threads,
        cpus_user_time_secs: u.cpus_user_time_secs,
        cpus_system_time_secs: u.cpus_system_time_secs,
        cpus_limit: u.cpus_limit,
        cpus_nr_periods: u.cpus_nr_periods,
        cpus_nr_throttled: u.cpus_nr_throttled,
        cpus_throttled_time_secs: u.cpus_throttled_time_secs,
        mem_total_bytes: u.mem_total_bytes,
        mem_rss_bytes: u.mem_rss_bytes,
        mem_cache_bytes: u.mem_cache_bytes,
        mem_limit_bytes: u.mem_limit_bytes,
        mem_soft_limit_bytes: u.mem_soft_limit_bytes,
        disk_limit_bytes: u.disk_limit_bytes,
        disk_used_bytes: u.disk_used_bytes,
        net_rx_bytes: u.net_rx_bytes,
        net_tx_bytes: u.net_tx_bytes,
        net_rx_packets: u.net_rx_packets,
        net_tx_packets: u.net_tx_packets,
        ..Default::default()
    }
}

/// One running executor's container, with its usage when it could be sampled.
struct ContainerView {
    framework_id: String,
    executor_id: String,
    executor_name: String,
    task_id: String,
    container_id: String,
    pid: Option<i32>,
    statistics: Option<ResourceStatistics>,
}

/// The containers of running executors, each with a fresh usage sample.
async fn container_views(agent: &Agent) -> Vec<ContainerView> {
    let running: Vec<ContainerView> = agent
        .state
        .lock()
        .unwrap()
        .executors
        .values()
        .filter(|e| e.pid.is_some() && matches!(e.state, ExecutorState::Registering | ExecutorState::Running))
        .map(|e| ContainerView {
            framework_id: e.framework_id.clone(),
            executor_id: e.executor_id.clone(),
            executor_name: e.info.name.clone().unwrap_or_default(),
            task_id: e.tasks.first().map(|t| t.id().to_string()).unwrap_or_default(),
            container_id: e.container_id.clone(),
            pid: e.pid,
            statistics: None,
        })
        .collect();
    let samples = futures::future::join_all(running.iter().map(|c| agent.containerizer.usage(&c.container_id))).await;
    running
        .into_iter()
        .zip(samples)
        .map(|(mut c, sample)| {
            match sample {
                Ok(u) => c.statistics = Some(statistics(&u)),
                // The container may have ended between the listing and the sample.
                Err(e) => tracing::debug!(container = %c.container_id, error = %e, "no usage for container"),
            }
            c
        })
        .collect()
}

/// `GET /monitor/statistics(.json)`: Mesos's list of
/// `{executor_id, executor_name, framework_id, source, statistics}`.
pub async fn monitor_statistics(State(agent): State<Arc<Agent>>) -> Response {
    let entries: Vec<serde_json::Value> = container_views(&agent)
        .await
        .into_iter()
        .filter_map(|c| {
            let stats = c.statistics?;
            Some(serde_json::json!({
                "executor_id": c.executor_id,
                "executor_name": c.executor_name,
                "framework_id": c.framework_id,
                "source": c.task_id,
                "statistics": mezzo_proto::to_json_value(&stats),
            }))
        })
        .collect();
    axum::Json(entries).into_response()
}

/// `GET /containers`: Mesos's list of `{framework_id, executor_id,
/// executor_name, source, container_id, status, statistics}`.
pub async fn containers_json(State(agent): State<Arc<Agent>>) -> Response {
    let entries: Vec<serde_json::Value> = container_views(&agent)
        .await
        .into_iter()
        .map(|c| {
            let mut v = serde_json::json!({
                "framework_id": c.framework_id,
                "executor_id": c.executor_id,
                "executor_name": c.executor_name,
                "source": c.task_id,
                "container_id": c.container_id,
                "status": mezzo_proto::to_json_value(&container_status(&c.container_id, c.pid)),
            });
            if let Some(stats) = &c.statistics {
                v["statistics"] = mezzo_proto::to_json_value(stats);
            }
            v
        })
        .collect();
    axum::Json(entries).into_response()
}

fn container_status(container_id: &str, pid: Option<i32>) -> ContainerStatus {
    ContainerStatus {
        container_id: Some(ContainerId { value: container_id.to_string(), parent: None }),
        executor_pid: pid.map(|p| p as u32),
        ..Default::default()
    }
}

/// `POST /api/v1`: the agent operator API.
pub async fn operator_api(State(agent): State<Arc<Agent>>, method: Method, headers: HeaderMap, body: Bytes) -> Response {
    if method != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, format!("Expecting a 'POST' request, received '{method}'"));
    }
    let ct = match request_type(&headers) {
        Ok(ct) => ct,
        Err(r) => return r,
    };
    let accept = match response_type(&headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let call: Call = match mezzo_proto::codec::decode(&body, ct) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("Failed to parse body into Call: {e}")),
    };
    // GET_* calls and the files' reads read; every other call may change state.
    let reads = matches!(call.r#type(), call::Type::ListFiles | call::Type::ReadFile);
    let access = if reads || call.r#type().as_str_name().starts_with("GET_") {
        crate::http_auth::Access::ReadOnly
    } else {
        crate::http_auth::Access::ReadWrite
    };
    if let Err(r) = agent.http_auth.check(&headers, access) {
        return r;
    }
    let reply = match call.r#type() {
        call::Type::Unknown => return error(StatusCode::BAD_REQUEST, "Expecting 'type' to be present"),
        call::Type::GetHealth => ApiResponse {
            r#type: Some(response::Type::GetHealth as i32),
            get_health: Some(response::GetHealth { healthy: true }),
            ..Default::default()
        },
        call::Type::GetVersion => ApiResponse {
            r#type: Some(response::Type::GetVersion as i32),
            get_version: Some(response::GetVersion { version_info: version_info() }),
            ..Default::default()
        },
        call::Type::GetFlags => ApiResponse {
            r#type: Some(response::Type::GetFlags as i32),
            get_flags: Some(response::GetFlags { flags: flags(&agent) }),
            ..Default::default()
        },
        call::Type::GetMetrics => ApiResponse {
            r#type: Some(response::Type::GetMetrics as i32),
            get_metrics: Some(response::GetMetrics {
                metrics: crate::metrics::snapshot(&agent).into_iter().map(|s| Metric { name: s.name, value: Some(s.value) }).collect(),
            }),
            ..Default::default()
        },
        call::Type::GetAgent => ApiResponse {
            r#type: Some(response::Type::GetAgent as i32),
            get_agent: Some(response::GetAgent { agent_info: Some(agent.info()) }),
            ..Default::default()
        },
        call::Type::GetContainers => {
            let containers = container_views(&agent)
                .await
                .into_iter()
                .map(|c| response::get_containers::Container {
                    framework_id: Some(FrameworkId { value: c.framework_id }),
                    executor_id: Some(ExecutorId { value: c.executor_id }),
                    executor_name: Some(c.executor_name),
                    container_status: Some(container_status(&c.container_id, c.pid)),
                    container_id: ContainerId { value: c.container_id, parent: None },
                    resource_statistics: c.statistics,
                })
                .collect();
            ApiResponse {
                r#type: Some(response::Type::GetContainers as i32),
                get_containers: Some(response::GetContainers { containers }),
                ..Default::default()
            }
        }
        call::Type::GetFrameworks => ApiResponse {
            r#type: Some(response::Type::GetFrameworks as i32),
            get_frameworks: Some(frameworks(&agent)),
            ..Default::default()
        },
        call::Type::GetExecutors => ApiResponse {
            r#type: Some(response::Type::GetExecutors as i32),
            get_executors: Some(executors(&agent)),
            ..Default::default()
        },
        call::Type::GetTasks => ApiResponse {
            r#type: Some(response::Type::GetTasks as i32),
            get_tasks: Some(tasks(&agent)),
            ..Default::default()
        },
        call::Type::GetState => ApiResponse {
            r#type: Some(response::Type::GetState as i32),
            get_state: Some(response::GetState {
                get_tasks: Some(tasks(&agent)),
                get_executors: Some(executors(&agent)),
                get_frameworks: Some(frameworks(&agent)),
            }),
            ..Default::default()
        },
        call::Type::ListFiles => {
            let Some(list) = &call.list_files else { return error(StatusCode::BAD_REQUEST, "Expecting 'list_files' to be present") };
            match crate::files::browse(&agent, &list.path).await {
                Ok((file_infos, _truncated)) => ApiResponse {
                    r#type: Some(response::Type::ListFiles as i32),
                    list_files: Some(response::ListFiles { file_infos }),
                    ..Default::default()
                },
                Err(e) => return e.response(),
            }
        }
        call::Type::ReadFile => {
            let Some(read) = &call.read_file else { return error(StatusCode::BAD_REQUEST, "Expecting 'read_file' to be present") };
            match crate::files::read(&agent, &read.path, read.offset, read.length).await {
                Ok((size, data)) => ApiResponse {
                    r#type: Some(response::Type::ReadFile as i32),
                    read_file: Some(response::ReadFile { size, data }),
                    ..Default::default()
                },
                Err(e) => return e.response(),
            }
        }
        other => {
            return error(StatusCode::NOT_IMPLEMENTED, format!("Call type {} is not supported by this agent", other.as_str_name()));
        }
    };
    encoded(&reply, accept)
}

fn encoded(reply: &ApiResponse, accept: ContentType) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, accept.mime())], mezzo_proto::codec::encode(reply, accept)).into_response()
}

fn version_info() -> VersionInfo {
    VersionInfo { version: MESOS_VERSION.to_string(), git_tag: Some(format!("mezzo-{}", env!("CARGO_PKG_VERSION"))), ..Default::default() }
}

fn flags(agent: &Agent) -> Vec<Flag> {
    let f = &agent.flags;
    let mut out = vec![
        ("master", Some(f.master.clone())),
        ("work_dir", Some(agent.work_dir.display().to_string())),
        ("ip", Some(f.ip.clone())),
        ("port", Some(f.port.to_string())),
        ("containerizers", Some(f.containerizers.to_string())),
        ("isolation", f.isolation.as_ref().map(|i| i.to_string())),
        ("cgroups_root", Some(f.cgroups_root.clone())),
        ("cgroups_enable_cfs", Some(f.cgroups_enable_cfs.to_string())),
        ("enforce_container_disk_quota", Some(f.enforce_container_disk_quota.to_string())),
        ("docker_registry", f.docker_registry.clone()),
        ("docker_remove_delay", Some(format_duration(f.docker_remove_delay))),
        ("docker_kill_orphans", Some(f.docker_kill_orphans.to_string())),
        ("executor_registration_timeout", Some(format_duration(f.executor_registration_timeout))),
        ("executor_reregistration_timeout", Some(format_duration(f.executor_reregistration_timeout))),
        ("executor_shutdown_grace_period", Some(format_duration(f.executor_shutdown_grace_period))),
        ("switch_user", Some(f.switch_user.to_string())),
        (
            "executor_environment_variables",
            f.executor_environment_variables.as_ref().map(|e| serde_json::Value::Object(e.0.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect()).to_string()),
        ),
        ("recover", Some(enum_name(&f.recover))),
        ("strict", Some(f.strict.to_string())),
        ("fetcher_cache_dir", Some(f.fetcher_cache_dir.clone().unwrap_or_else(|| agent.work_dir.join("fetch")).display().to_string())),
        ("fetcher_cache_size", Some(crate::fetcher::show_bytes(f.fetcher_cache_size))),
        ("fetcher_stall_timeout", Some(format_duration(f.fetcher_stall_timeout))),
        ("gc_delay", Some(format_duration(f.gc_delay))),
        ("container_logger", Some(f.container_logger.to_string())),
        ("logrotate_max_stdout_size", Some(crate::fetcher::show_bytes(f.logrotate_max_stdout_size))),
        ("logrotate_max_stderr_size", Some(crate::fetcher::show_bytes(f.logrotate_max_stderr_size))),
        ("logrotate_stdout_options", Some(format!("rotate {}", f.logrotate_stdout_options))),
        ("logrotate_stderr_options", Some(format!("rotate {}", f.logrotate_stderr_options))),
        ("gc_disk_headroom", Some(f.gc_disk_headroom.to_string())),
        ("disk_watch_interval", Some(format_duration(f.disk_watch_interval))),
    ];
    out.retain(|(_, v)| v.is_some());
    out.into_iter().map(|(name, value)| Flag { name: name.to_string(), value }).collect()
}

fn frameworks(agent: &Agent) -> response::GetFrameworks {
    let state = agent.state.lock().unwrap();
    let frameworks = state.frameworks.values().map(|i| response::get_frameworks::Framework { framework_info: i.clone() }).collect();
    response::GetFrameworks { frameworks, completed_frameworks: Vec::new() }
}

fn executors(agent: &Agent) -> response::GetExecutors {
    let state = agent.state.lock().unwrap();
    let info = |e: &Executor| response::get_executors::Executor { executor_info: e.info.clone() };
    response::GetExecutors {
        executors: state.executors.values().map(info).collect(),
        completed_executors: state.completed.iter().map(info).collect(),
    }
}

fn task_of(agent: &Agent, e: &Executor, task: &crate::executor::Task) -> Task {
    let info = &task.info;
    let mut t = Task {
        name: info.name.clone(),
        task_id: info.task_id.clone(),
        framework_id: FrameworkId { value: e.framework_id.clone() },
        executor_id: Some(ExecutorId { value: e.executor_id.clone() }),
        agent_id: AgentId { value: agent.id() },
        resources: info.resources.clone(),
        labels: info.labels.clone(),
        discovery: info.discovery.clone(),
        container: info.container.clone(),
        health_check: info.health_check.clone(),
        kill_policy: info.kill_policy,
        limits: info.limits.clone(),
        ..Default::default()
    };
    t.set_state(task.state);
    t
}

fn tasks(agent: &Agent) -> response::GetTasks {
    let state = agent.state.lock().unwrap();
    let mut out = response::GetTasks::default();
    for e in state.executors.values() {
        for task in &e.tasks {
            let view = task_of(agent, e, task);
            if task.state.is_terminal() {
                out.terminated_tasks.push(view);
            } else if e.pid.is_none() && e.state == ExecutorState::Registering {
                out.pending_tasks.push(view);
            } else if !task.launched {
                out.queued_tasks.push(view);
            } else {
                out.launched_tasks.push(view);
            }
        }
    }
    out.completed_tasks = state.completed.iter().flat_map(|e| e.tasks.iter().map(|t| task_of(agent, e, t))).collect();
    out
}
