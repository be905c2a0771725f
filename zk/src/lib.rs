//! ZooKeeper for mezzo: what masters, agents and the CLI share.
//!
//! Masters that share a `--zk` path form a group, as Mesos's do: each master
//! contends by creating an ephemeral sequential znode `json.info_NNNNNNNNNN`
//! under the path, holding its `MasterInfo` in Mesos's JSON mapping; the
//! leader is the candidacy with the lowest sequence, and a master leads only
//! as long as its ZooKeeper session lives (the znode goes with the session).
//! Clients' detectors (pymesos, for one) list the path's children, take the
//! smallest name in string order skipping `log_replicas`, and parse it as
//! JSON: mezzo's own znodes under the path sort after `json.info_`
//! ([`REGISTRY_NODE`]), and the path is created before a master contends.
//!
//! Mesos before 0.24 also wrote a protobuf `info_NNNNNNNNNN` candidacy; such a
//! name sorts before `json.info_` and would be what those detectors read, so
//! mezzo (like Mesos since 0.24) writes the JSON form only.
//!
//! - [`ZkUrl`], [`MasterAddress`]: `zk://` and `file://` flag values.
//! - [`Contender`]: a master's candidacy and what it sees of the group.
//! - [`Detector`]: who leads now, and a stream of changes (agents, CLI).

mod url;

use std::time::Duration;

use mezzo_proto::mesos::v1::MasterInfo;
use tokio::sync::watch;
pub use url::{MasterAddress, UrlError, ZkUrl};
pub use zookeeper_client as client;
use zookeeper_client::{Acl, Acls, Client, CreateMode, Permission, SessionState};

/// Mesos's `--zk_session_timeout` default.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// Prefix of a candidacy's znode (Mesos's `json.info` label).
pub const CANDIDACY_PREFIX: &str = "json.info_";
/// The znode under the group's path that holds the registry; sorts after `json.info_`.
pub const REGISTRY_NODE: &str = "registry";
/// Mesos's replicated log's znode, which clients' detectors skip.
pub const LOG_REPLICAS: &str = "log_replicas";

/// A failed ZooKeeper operation.
#[derive(Debug, thiserror::Error)]
pub enum ZkError {
    #[error("{0}")]
    Url(#[from] UrlError),
    #[error("ZooKeeper {op} '{path}' failed: {source}")]
    Op {
        op: &'static str,
        path: String,
        #[source]
        source: zookeeper_client::Error,
    },
    #[error("cannot connect to ZooKeeper {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: zookeeper_client::Error,
    },
}

fn op_error<'a>(op: &'static str, path: &'a str) -> impl FnOnce(zookeeper_client::Error) -> ZkError + 'a {
    move |source| ZkError::Op { op, path: path.to_string(), source }
}

/// Opens a session with the ensemble of `url` (digest-authenticated when the URL has credentials).
pub async fn connect(url: &ZkUrl, session_timeout: Duration) -> Result<Client, ZkError> {
    let mut connector = Client::connector().with_session_timeout(session_timeout);
    if let Some(creds) = &url.credentials {
        connector = connector.with_auth("digest", creds.as_bytes());
    }
    connector.connect(&url.connect_string()).await.map_err(|source| ZkError::Connect { url: url.to_string(), source })
}

/// Access of what mezzo creates: anyone may read (clients' detectors do
/// not authenticate), only the creator may change it when the URL has
/// credentials, as Mesos's `EVERYONE_READ_CREATOR_ALL`; anyone otherwise.
pub fn acls(url: &ZkUrl) -> Acls<'static> {
    static READ_CREATOR_ALL: [Acl; 2] = [
        Acl::new_const(Permission::READ, "world", "anyone"),
        Acl::new_const(Permission::ALL, "auth", ""),
    ];
    if url.credentials.is_some() {
        Acls::new(&READ_CREATOR_ALL)
    } else {
        Acls::anyone_all()
    }
}

/// Creates `path` and its parents (persistent, empty) when absent.
pub async fn ensure_path(client: &Client, url: &ZkUrl, path: &str) -> Result<(), ZkError> {
    if path == "/" {
        return Ok(());
    }
    client.mkdir(path, &CreateMode::Persistent.with_acls(acls(url))).await.map_err(op_error("create", path))
}

/// The group as seen at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupView {
    /// The leader's candidacy znode (name only) and its `MasterInfo`.
    pub leader: Option<(String, MasterInfo)>,
    /// Candidacies' znode names, lowest sequence first.
    pub candidacies: Vec<String>,
}

impl GroupView {
    /// The leader's `MasterInfo`.
    pub fn leader_info(&self) -> Option<&MasterInfo> {
        self.leader.as_ref().map(|(_, info)| info)
    }
}

/// The sequence of a candidacy's znode name (`json.info_0000000012` -> 12).
pub fn candidacy_sequence(name: &str) -> Option<i64> {
    name.strip_prefix(CANDIDACY_PREFIX).filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).and_then(|s| s.parse().ok())
}

/// Reads the group under `path` and leaves a watch that fires on its next change.
async fn read_group(client: &Client, path: &str) -> Result<(GroupView, zookeeper_client::OneshotWatcher), zookeeper_client::Error> {
    loop {
        let (children, watcher) = match client.list_and_watch_children(path).await {
            Ok(found) => found,
            Err(zookeeper_client::Error::NoNode) => {
                // No group yet: wait for the path to be created.
                let (stat, watcher) = client.check_and_watch_stat(path).await?;
                if stat.is_some() {
                    continue;
                }
                return Ok((GroupView::default(), watcher));
            }
            Err(e) => return Err(e),
        };
        let mut candidacies: Vec<(i64, String)> = children.into_iter().filter_map(|c| candidacy_sequence(&c).map(|s| (s, c))).collect();
        candidacies.sort();
        let mut leader = None;
        for (_, name) in &candidacies {
            let node = if path == "/" { format!("/{name}") } else { format!("{path}/{name}") };
            match client.get_data(&node).await {
                Ok((data, _)) => match mezzo_proto::json::from_json::<MasterInfo>(&data) {
                    Ok(info) => {
                        leader = Some((name.clone(), info));
                        break;
                    }
                    // Mesos's detector fails on an unparsable leader; skipping it keeps
                    // agents following the next candidacy instead.
                    Err(e) => tracing::warn!(znode = %node, error = %e, "a candidacy's MasterInfo cannot be parsed; skipping it"),
                },
                // Gone since the listing: the watch fires for it.
                Err(zookeeper_client::Error::NoNode) => continue,
                Err(e) => return Err(e),
            }
        }
        return Ok((GroupView { leader, candidacies: candidacies.into_iter().map(|(_, n)| n).collect() }, watcher));
    }
}

/// What a contending master knows about its leadership.
#[derive(Debug, Clone, PartialEq)]
pub struct Leadership {
    /// This master's candidacy is the lowest: it leads.
    pub elected: bool,
    /// The session is connected (a disconnected leader may already be deposed).
    pub connected: bool,
    /// The group as last read.
    pub group: GroupView,
    /// The candidacy is gone for good (session expired or closed): why.
    pub lost: Option<String>,
}

/// A master's candidacy in the group of a `--zk` URL.
pub struct Contender {
    leadership: watch::Receiver<Leadership>,
    client: Client,
    node: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Contender {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Contender {
    /// Connects (retrying until connected), creates the group's path and this
    /// master's candidacy holding `info`, and follows the group from then on.
    pub async fn contend(url: &ZkUrl, session_timeout: Duration, info: &MasterInfo) -> Result<Contender, ZkError> {
        let client = connect_retrying(url, session_timeout).await;
        ensure_path(&client, url, &url.path).await?;
        let prefix = url.child(CANDIDACY_PREFIX);
        let json = mezzo_proto::json::to_json_bytes(info);
        let (_, sequence) = client
            .create(&prefix, &json, &CreateMode::EphemeralSequential.with_acls(acls(url)))
            .await
            .map_err(op_error("create", &prefix))?;
        let node = format!("{CANDIDACY_PREFIX}{sequence}");
        tracing::info!(znode = %url.child(&node), session = %client.session_id(), "contending for leadership");
        let initial = Leadership { elected: false, connected: true, group: GroupView::default(), lost: None };
        let (tx, leadership) = watch::channel(initial);
        let task = tokio::spawn(follow_candidacy(client.clone(), url.path.clone(), node.clone(), tx));
        Ok(Contender { leadership, client, node, task })
    }

    /// The current leadership, and its changes.
    pub fn watch(&self) -> watch::Receiver<Leadership> {
        self.leadership.clone()
    }

    /// This master's candidacy znode (name only).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The session the candidacy lives in (the registry writes through it).
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// Connects to `url`, retrying with a backoff (capped at 2 s) until a session is established.
pub async fn connect_retrying(url: &ZkUrl, session_timeout: Duration) -> Client {
    let mut backoff = Duration::from_millis(100);
    loop {
        match connect(url, session_timeout).await {
            Ok(client) => return client,
            Err(e) => {
                tracing::warn!(error = %e, "ZooKeeper is not reachable; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

async fn follow_candidacy(client: Client, path: String, node: String, tx: watch::Sender<Leadership>) {
    let mut states = client.state_watcher();
    let lose = |tx: &watch::Sender<Leadership>, why: String| {
        tracing::warn!(reason = %why, "lost the candidacy");
        tx.send_modify(|l| {
            l.elected = false;
            l.connected = false;
            l.lost = Some(why);
        });
    };
    loop {
        let (group, watcher) = match read_group(&client, &path).await {
            Ok(read) => read,
            Err(e @ (zookeeper_client::Error::SessionExpired | zookeeper_client::Error::ClientClosed | zookeeper_client::Error::AuthFailed)) => {
                return lose(&tx, format!("ZooKeeper session ended: {e}"));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the master group; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if !group.candidacies.contains(&node) {
            return lose(&tx, format!("the candidacy znode {node} is gone"));
        }
        let elected = group.candidacies.first() == Some(&node);
        tx.send_modify(|l| {
            l.elected = elected;
            l.connected = true;
            l.group = group;
        });
        let changed = watcher.changed();
        tokio::pin!(changed);
        loop {
            tokio::select! {
                _ = &mut changed => break,
                state = states.changed() => match state {
                    SessionState::SyncConnected | SessionState::ConnectedReadOnly => {
                        tx.send_if_modified(|l| !std::mem::replace(&mut l.connected, true));
                    }
                    SessionState::Disconnected => {
                        tracing::warn!("disconnected from ZooKeeper");
                        tx.send_if_modified(|l| std::mem::replace(&mut l.connected, false));
                    }
                    terminal => return lose(&tx, format!("ZooKeeper session {terminal}")),
                },
            };
        }
    }
}

/// Who leads a master group, followed over sessions (a new session is opened when one expires).
pub struct Detector {
    leader: watch::Receiver<Option<MasterInfo>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Detector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Detector {
    /// Starts following the group of `url` (in the background; connects when it can).
    pub fn start(url: ZkUrl, session_timeout: Duration) -> Detector {
        let (tx, leader) = watch::channel(None);
        let task = tokio::spawn(detect(url, session_timeout, tx));
        Detector { leader, task }
    }

    /// The leader as last seen.
    pub fn leader(&self) -> Option<MasterInfo> {
        self.leader.borrow().clone()
    }

    /// The leader and its changes (`None` while no master leads).
    pub fn watch(&self) -> watch::Receiver<Option<MasterInfo>> {
        self.leader.clone()
    }

    /// Waits up to `timeout` for a leader.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<MasterInfo> {
        let mut rx = self.leader.clone();
        let found = tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await;
        found.ok().and_then(|r| r.ok()).and_then(|l| l.clone())
    }
}

async fn detect(url: ZkUrl, session_timeout: Duration, tx: watch::Sender<Option<MasterInfo>>) {
    loop {
        let client = connect_retrying(&url, session_timeout).await;
        let mut states = client.state_watcher();
        'session: loop {
            let (group, watcher) = match read_group(&client, &url.path).await {
                Ok(read) => read,
                Err(zookeeper_client::Error::SessionExpired | zookeeper_client::Error::ClientClosed | zookeeper_client::Error::AuthFailed) => break 'session,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the master group; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let leader = group.leader.map(|(_, info)| info);
            tx.send_if_modified(|current| {
                if *current == leader {
                    return false;
                }
                match &leader {
                    Some(info) => tracing::info!(leader = %info.pid.as_deref().unwrap_or(&info.id), "detected a new leading master"),
                    None => tracing::warn!("no master leads"),
                }
                *current = leader;
                true
            });
            let changed = watcher.changed();
            tokio::pin!(changed);
            loop {
                tokio::select! {
                    _ = &mut changed => continue 'session,
                    state = states.changed() => if state.is_terminated() {
                        break 'session;
                    },
                }
            }
        }
        // The session is over: its view of the group is stale; a new one follows.
        tracing::warn!("the ZooKeeper session of the master detector ended; reconnecting");
        tx.send_if_modified(|current| current.take().is_some());
    }
}

/// `host:port` to reach a master at: its `address` (IP first), else its packed IPv4 and port.
pub fn master_endpoint(info: &MasterInfo) -> String {
    if let Some(address) = &info.address {
        if let Some(host) = address.ip.as_deref().or(address.hostname.as_deref()).filter(|h| !h.is_empty()) {
            let port = if address.port > 0 { address.port as u32 } else { info.port };
            return join_host_port(host, port);
        }
    }
    let ip = std::net::Ipv4Addr::from(info.ip.to_le_bytes());
    join_host_port(&ip.to_string(), info.port)
}

/// `host:port` Mesos's redirects name a master by: its hostname (else its address).
pub fn master_redirect_authority(info: &MasterInfo) -> String {
    match info.hostname.as_deref().filter(|h| !h.is_empty()) {
        Some(host) => join_host_port(host, info.port),
        None => master_endpoint(info),
    }
}

fn join_host_port(host: &str, port: u32) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mezzo_proto::mesos::v1::Address;

    #[test]
    fn candidacies_are_ordered_by_sequence() {
        assert_eq!(candidacy_sequence("json.info_0000000012"), Some(12));
        assert_eq!(candidacy_sequence("json.info_"), None);
        assert_eq!(candidacy_sequence("info_0000000001"), None);
        assert_eq!(candidacy_sequence("log_replicas"), None);
        assert_eq!(candidacy_sequence("json.info_00x"), None);
        // What a client's detector sorts by (string order) agrees with the sequence,
        // and mezzo's own znodes sort after every candidacy.
        let mut names = vec!["registry", "json.info_0000000010", "log_replicas", "json.info_0000000009"];
        names.sort();
        assert_eq!(names, vec!["json.info_0000000009", "json.info_0000000010", "log_replicas", "registry"]);
    }

    #[test]
    fn endpoints_of_a_master_info() {
        let mut info = MasterInfo { id: "m".into(), ip: 16_777_343, port: 5050, hostname: Some("master1".into()), ..Default::default() };
        assert_eq!(master_endpoint(&info), "127.0.0.1:5050");
        assert_eq!(master_redirect_authority(&info), "master1:5050");
        info.address = Some(Address { hostname: Some("master1".into()), ip: Some("10.0.0.2".into()), port: 5051 });
        assert_eq!(master_endpoint(&info), "10.0.0.2:5051");
        info.hostname = None;
        assert_eq!(master_redirect_authority(&info), "10.0.0.2:5051");
    }
}
