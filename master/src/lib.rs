//! mezzo-master: a slim master speaking the Mesos v1 scheduler HTTP API to
//! frameworks and mezzo's own protobuf-over-HTTP protocol to agents.
//!
//! Routes:
//! - `POST /api/v1/scheduler`: the Mesos v1 scheduler API (JSON or protobuf).
//! - `POST /mezzo/v1/agent/{register,ping,status,message,executor_exited}`:
//!   the agent protocol.
//! - `POST /api/v1`: the Mesos v1 master operator API (JSON or protobuf).
//! - `GET /version`, `/health`, `/state`, `/state-summary`, `/frameworks`,
//!   `/slaves`, `/tasks`, `/flags`, `/metrics/snapshot`, `/metrics`
//!   (Prometheus), `/master/redirect`; `POST /teardown`; `/master/<x>`,
//!   `<x>.json` and trailing slashes are aliases, as in Mesos.

pub mod acls;
mod agent_api;
mod agent_link;
mod agents;
mod allocator;
pub mod config;
pub mod credentials;
mod endpoints;
pub mod error;
mod executors;
mod failover;
pub mod file_store;
mod framework;
pub mod ha;
mod http_auth;
mod launch;
mod master;
mod metrics;
mod operator;
pub mod registrar;
pub mod registry;
pub mod resources;
mod scheduler_api;
mod stream;
mod tasks;
mod validation;
pub mod zk_store;

use std::net::{IpAddr, Ipv4Addr};

use axum::extract::Request;
use axum::routing::{any, get, post};
use axum::Router;
use mezzo_proto::mesos::v1::{Address, MasterInfo};
use tokio::net::TcpListener;

pub use agent_link::AGENT_MASTER_PATH;
pub use failover::AGENT_MASTER_CHANGED_PATH;
pub use config::MasterConfig;
pub use error::{CallError, MasterError};
pub use master::MESOS_VERSION;
pub use scheduler_api::STREAM_ID_HEADER;

use crate::master::{Master, Shared};

/// Packs an IPv4 address the way Mesos fills `MasterInfo.ip`: the bytes in
/// network order read as a host-order (little-endian) u32.
pub fn pack_ip(ip: Ipv4Addr) -> u32 {
    u32::from_le_bytes(ip.octets())
}

/// Rewrites a request path to its canonical route: no trailing slash, no
/// `/master` prefix, no `.json` suffix (Mesos tools use all three).
fn canonical_path(path: &str) -> String {
    let mut p = path.trim_end_matches('/');
    if p.is_empty() {
        return "/".to_string();
    }
    if let Some(rest) = p.strip_prefix("/master/") {
        p = &path[7..7 + rest.len() + 1];
    }
    let p = p.strip_suffix(".json").unwrap_or(p);
    p.to_string()
}

fn normalize(mut req: Request) -> Request {
    let path = req.uri().path();
    let canonical = canonical_path(path);
    if canonical != path {
        let mut parts = req.uri().clone().into_parts();
        let pq = match req.uri().query() {
            Some(q) => format!("{canonical}?{q}"),
            None => canonical,
        };
        if let Ok(pq) = pq.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    req
}

fn router(shared: std::sync::Arc<Shared>) -> Router {
    // `--authenticate_http_readonly` guards these; /version and /health stay open.
    let readonly = Router::new()
        .route("/state", get(endpoints::state))
        .route("/frameworks", get(endpoints::frameworks))
        .route("/slaves", get(endpoints::slaves))
        .route("/tasks", get(endpoints::tasks))
        .route("/flags", get(endpoints::flags))
        .route("/state-summary", get(endpoints::state_summary))
        .route("/metrics/snapshot", get(metrics::snapshot_json))
        .route("/metrics", get(metrics::prometheus_text))
        .route_layer(axum::middleware::from_fn_with_state(shared.clone(), http_auth::readonly));
    Router::new()
        .route("/api/v1/scheduler", any(scheduler_api::handle))
        .route("/api/v1", any(operator::handle))
        .route("/redirect", get(endpoints::redirect))
        .route("/mezzo/v1/agent/register", post(agent_api::register))
        .route("/mezzo/v1/agent/ping", post(agent_api::ping))
        .route("/mezzo/v1/agent/status", post(agent_api::status))
        .route("/mezzo/v1/agent/message", post(agent_api::message))
        .route("/mezzo/v1/agent/executor_exited", post(agent_api::executor_exited))
        .route("/version", get(endpoints::version))
        .route("/health", get(endpoints::health))
        .route("/teardown", any(endpoints::teardown))
        .merge(readonly)
        .with_state(shared)
}

/// Aborts the background loop when `serve` returns or is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves the master on `listener` until the server fails.
pub async fn serve(config: MasterConfig, listener: TcpListener) -> Result<(), MasterError> {
    let local = listener.local_addr().map_err(MasterError::LocalAddr)?;
    let info = master_info(&config, local);
    serve_as(config, listener, info).await
}

/// The `MasterInfo` of a new master listening on `local` (a new id).
pub fn master_info(config: &MasterConfig, local: std::net::SocketAddr) -> MasterInfo {
    let ip = config.advertise_ip.unwrap_or_else(|| {
        if local.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            local.ip()
        }
    });
    let hostname = config.hostname.clone().unwrap_or_else(|| ip.to_string());
    let id = uuid::Uuid::new_v4().to_string();
    let packed = match ip {
        IpAddr::V4(v4) => pack_ip(v4),
        IpAddr::V6(_) => 0,
    };
    MasterInfo {
        id,
        ip: packed,
        port: u32::from(local.port()),
        pid: Some(format!("master@{ip}:{}", local.port())),
        hostname: Some(hostname.clone()),
        version: Some(MESOS_VERSION.to_string()),
        address: Some(Address {
            hostname: Some(hostname),
            ip: Some(ip.to_string()),
            port: i32::from(local.port()),
        }),
        ..Default::default()
    }
}

/// Serves the master described by `info` on `listener` until the server fails.
pub async fn serve_as(config: MasterConfig, listener: TcpListener, info: MasterInfo) -> Result<(), MasterError> {
    let local = listener.local_addr().map_err(MasterError::LocalAddr)?;
    let id = info.id.clone();
    let client = reqwest::Client::builder()
        .connect_timeout(config.agent_request_timeout)
        .build()
        .map_err(MasterError::HttpClient)?;
    tracing::info!(master_id = %id, address = %local, "mezzo-master listening");
    let (reports_tx, mut reports) = tokio::sync::mpsc::unbounded_channel();
    // What must survive the master's loss, from the registry.
    let recovered = registrar::load(&*config.registry).await.map_err(MasterError::Registry)?;
    let mut master = Master::new(id, info, config.clone(), client, reports_tx);
    let recovered_frameworks = master.recover(recovered);
    let registry_writer = master.registry_writer.take().expect("a new master has its registry writer");
    let (registry, on_fenced) = (config.registry.clone(), config.on_fenced.clone());
    let shared = Shared::new(master, config);
    let _registry_writer = AbortOnDrop(tokio::spawn(registrar::run_writer(registry, registry_writer, on_fenced)));
    let _recovery_timers: Vec<AbortOnDrop> = failover::start_timers(&shared, recovered_frameworks).into_iter().map(AbortOnDrop).collect();
    let _allocator = AbortOnDrop(tokio::spawn(allocator::run(shared.clone())));
    let reports_shared = shared.clone();
    let _link_reports = AbortOnDrop(tokio::spawn(async move {
        while let Some(report) = reports.recv().await {
            reports_shared.lock().link_report(report);
        }
    }));
    let app = tower::ServiceExt::map_request(router(shared), normalize);
    // Nagle's algorithm off: subscription streams carry small events.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, axum::ServiceExt::<Request>::into_make_service(app))
        .await
        .map_err(MasterError::Serve)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_canonicalized() {
        assert_eq!(canonical_path("/state/"), "/state");
        assert_eq!(canonical_path("/master/frameworks/"), "/frameworks");
        assert_eq!(canonical_path("/master/state.json"), "/state");
        assert_eq!(canonical_path("/"), "/");
        assert_eq!(canonical_path("/api/v1/scheduler"), "/api/v1/scheduler");
    }

    #[test]
    fn ip_is_packed_like_mesos() {
        assert_eq!(pack_ip(Ipv4Addr::new(127, 0, 0, 1)), 16_777_343);
    }
}
