//! Masters as a high-availability group on ZooKeeper (`--zk`).
//!
//! A master of a group contends for leadership ([`mezzo_zk::Contender`]).
//! Until elected it serves HTTP as a standby: `/state` says who leads,
//! `/health` and `/version` answer, and everything else (the scheduler API,
//! the operator API, `/master/redirect`, the agents' protocol) is answered
//! `307` with the leader's location in Mesos's protocol-relative form
//! (`//host:port/api/v1/scheduler`), or `503 No leader elected`.
//!
//! Once elected it claims the registry in ZooKeeper ([`ZkStore`]), builds its
//! state from it and serves as the leading master on the same socket. Its
//! registry accepts writes only while its ZooKeeper session is connected and
//! at least `--quorum` masters are in the group; a refused write answers 503.
//! When it loses its candidacy (the session expired) or its leadership, or
//! the registry says another master wrote it, [`serve_group`] returns
//! [`MasterError::LostLeadership`] and the binary exits, as Mesos's master
//! does, for a supervisor to start it again as a contender.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use mezzo_proto::mesos::v1::MasterInfo;
use mezzo_zk::{Contender, Leadership, ZkUrl};
use serde_json::json;
use tokio::sync::watch;

use crate::config::MasterConfig;
use crate::error::MasterError;
use crate::registry::RegistryError;
use crate::zk_store::ZkStore;
use crate::MESOS_VERSION;

/// How a master joins its group.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `--zk`: the ensemble and the group's path.
    pub zk: ZkUrl,
    /// `--quorum`: masters that must be in the group for the registry to accept writes.
    pub quorum: usize,
    /// `--zk_session_timeout`.
    pub session_timeout: Duration,
    /// The registry lives in ZooKeeper (else `config.registry` is kept, e.g. `--registry=in_memory`).
    pub registry_in_zk: bool,
}

/// What the standby serves from.
struct Standby {
    info: MasterInfo,
    leadership: watch::Receiver<Option<Leadership>>,
    start_time: f64,
}

/// Why the registry refuses writes now, if it does.
fn write_gate(leadership: &Leadership, quorum: usize) -> Option<String> {
    if !leadership.connected {
        return Some("not connected to ZooKeeper: no quorum".to_string());
    }
    let masters = leadership.group.candidacies.len();
    if masters < quorum {
        return Some(format!("{masters} master(s) in the group, fewer than --quorum={quorum}"));
    }
    None
}

/// Runs a master of the group `group` on `listener` until it loses its
/// candidacy or its leadership (an error saying so) or its server fails.
pub async fn serve_group(mut config: MasterConfig, listener: std::net::TcpListener, group: GroupConfig) -> Result<(), MasterError> {
    listener.set_nonblocking(true).map_err(MasterError::Serve)?;
    let local = listener.local_addr().map_err(MasterError::LocalAddr)?;
    let info = crate::master_info(&config, local);
    let start_time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    let (view_tx, view) = watch::channel(None);
    let standby = Arc::new(Standby { info: info.clone(), leadership: view, start_time });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let standby_listener = tokio::net::TcpListener::from_std(listener.try_clone().map_err(MasterError::Serve)?).map_err(MasterError::Serve)?;
    let app = axum::Router::new().fallback(standby_handler).with_state(standby);
    let mut standby_server = tokio::spawn(async move {
        axum::serve(standby_listener, app).with_graceful_shutdown(async move {
            let _ = stop_rx.await;
        })
        .await
    });
    tracing::info!(master_id = %info.id, address = %local, zk = %group.zk, "mezzo-master listening as a contender");

    let contender = Contender::contend(&group.zk, group.session_timeout, &info).await?;
    let mut leadership = contender.watch();
    loop {
        let current = leadership.borrow_and_update().clone();
        view_tx.send_replace(Some(current.clone()));
        if let Some(why) = current.lost {
            return Err(MasterError::LostLeadership(why));
        }
        if current.elected && current.connected {
            break;
        }
        if leadership.changed().await.is_err() {
            return Err(MasterError::LostLeadership("the candidacy's watch ended".into()));
        }
    }
    tracing::info!(znode = %contender.node(), "elected as the leading master");

    let (gate_tx, gate) = watch::channel(write_gate(&leadership.borrow(), group.quorum));
    let mut fenced = None;
    if group.registry_in_zk {
        let store = loop {
            match ZkStore::claim(contender.client().clone(), &group.zk, contender.node(), &info.id, group.session_timeout).await {
                Ok(store) => break store,
                Err(RegistryError::Fenced(why)) => return Err(MasterError::LostLeadership(why)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim the registry yet; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if let Some(why) = leadership.borrow().lost.clone() {
                        return Err(MasterError::LostLeadership(why));
                    }
                }
            }
        };
        let store = store.with_gate(gate.clone());
        fenced = Some(store.fenced());
        config.registry = Arc::new(store);
    }

    // The standby stops taking connections; the leading master takes the socket.
    let _ = stop_tx.send(());
    if tokio::time::timeout(Duration::from_secs(2), &mut standby_server).await.is_err() {
        standby_server.abort();
    }
    let listener = tokio::net::TcpListener::from_std(listener).map_err(MasterError::Serve)?;
    let serving = crate::serve_as(config, listener, info);
    let quorum = group.quorum;
    let lost = async move {
        loop {
            let current = leadership.borrow_and_update().clone();
            gate_tx.send_if_modified(|g| {
                let now = write_gate(&current, quorum);
                if *g == now {
                    return false;
                }
                match &now {
                    Some(why) => tracing::warn!(reason = %why, "the registry refuses writes"),
                    None => tracing::info!("the registry accepts writes again"),
                }
                *g = now;
                true
            });
            if let Some(why) = current.lost {
                return why;
            }
            if !current.elected {
                return "another master leads the group".to_string();
            }
            if leadership.changed().await.is_err() {
                return "the candidacy's watch ended".to_string();
            }
        }
    };
    let fenced = async move {
        match fenced {
            Some(mut rx) => match rx.wait_for(Option::is_some).await {
                Ok(why) => why.clone().unwrap_or_default(),
                Err(_) => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        result = serving => result,
        why = lost => Err(MasterError::LostLeadership(why)),
        why = fenced => Err(MasterError::LostLeadership(why)),
    };
    drop(gate);
    drop(contender);
    result
}

/// Everything a standby answers.
async fn standby_handler(State(standby): State<Arc<Standby>>, request: Request) -> Response {
    let path = crate::canonical_path(request.uri().path());
    let leader = standby.leadership.borrow().as_ref().and_then(|l| l.group.leader_info().cloned());
    match path.as_str() {
        "/health" => StatusCode::OK.into_response(),
        "/version" => json_response(json!({"version": MESOS_VERSION, "git_sha": "mezzo", "build_user": "mezzo", "mezzo_version": env!("CARGO_PKG_VERSION")})),
        "/state" => json_response(standby_state(&standby, leader.as_ref())),
        _ => match leader {
            None => (StatusCode::SERVICE_UNAVAILABLE, "No leader elected").into_response(),
            // Elected: the leading master is taking over this socket.
            Some(info) if info.id == standby.info.id => (StatusCode::SERVICE_UNAVAILABLE, "Master has not finished recovery").into_response(),
            Some(info) => {
                let base = format!("//{}", mezzo_zk::master_redirect_authority(&info));
                // Mesos: `/master/redirect` goes to the leader's base URL, anything else keeps its path.
                let location = if path == "/redirect" {
                    base
                } else {
                    match request.uri().query() {
                        Some(q) => format!("{base}{}?{q}", request.uri().path()),
                        None => format!("{base}{}", request.uri().path()),
                    }
                };
                (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, location)]).into_response()
            }
        },
    }
}

fn standby_state(standby: &Standby, leader: Option<&MasterInfo>) -> serde_json::Value {
    let info = &standby.info;
    let mut state = json!({
        "version": MESOS_VERSION,
        "git_sha": "mezzo",
        "build_user": "mezzo",
        "start_time": standby.start_time,
        "id": info.id,
        "pid": info.pid.clone().unwrap_or_default(),
        "hostname": info.hostname.clone().unwrap_or_default(),
        "activated_slaves": 0,
        "deactivated_slaves": 0,
        "unreachable_slaves": 0,
        "slaves": [],
        "frameworks": [],
        "completed_frameworks": [],
        "orphan_tasks": [],
        "unregistered_frameworks": [],
    });
    if let Some(leader) = leader {
        state["leader"] = json!(leader.pid.clone().unwrap_or_default());
        state["leader_info"] = mezzo_proto::json::to_json_value(leader);
    }
    state
}

fn json_response(value: serde_json::Value) -> Response {
    match mezzo_proto::json::to_ascii_json(&value) {
        Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("failed to encode json: {e}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mezzo_zk::GroupView;

    #[test]
    fn writes_need_a_session_and_a_quorum_of_masters() {
        let mut l = Leadership { elected: true, connected: true, group: GroupView { leader: None, candidacies: vec!["json.info_0000000001".into(), "json.info_0000000002".into()] }, lost: None };
        assert_eq!(write_gate(&l, 2), None);
        assert!(write_gate(&l, 3).unwrap().contains("fewer than --quorum=3"));
        l.connected = false;
        assert!(write_gate(&l, 1).unwrap().contains("no quorum"));
    }
}
