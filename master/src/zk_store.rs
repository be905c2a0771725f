//! The registry in ZooKeeper (`--zk`): one znode per entry under
//! `<zk path>/registry/<kind>/<id>` (a znode holds at most 1 MB by default).
//!
//! Fencing: a newly elected leader claims the registry by setting the data
//! of `<zk path>/registry`, in one transaction with a check that its own
//! candidacy znode still exists; the version that claim produced is the
//! leader's epoch. Every later write is a transaction that first checks the
//! registry znode still has that version, and writes an entry conditional
//! on the entry's version last read or written. A deposed leader's write
//! therefore fails ([`RegistryError::Fenced`]) once its successor has
//! claimed the registry. Without a connected session (no ZooKeeper quorum)
//! nothing is written ([`RegistryError::Unavailable`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use mezzo_zk::client::{CheckWriteError, Client, CreateMode, Error as ZkError, SessionState};
use mezzo_zk::ZkUrl;
use tokio::sync::watch;

use crate::registry::{Entry, Kind, RegistryError, RegistryStore};

/// The registry of a master group, in its ZooKeeper.
pub struct ZkStore {
    client: Client,
    url: ZkUrl,
    /// `<zk path>/registry`.
    root: String,
    /// The version of `root` this master's claim produced.
    epoch: i32,
    /// The version of each entry as last read or written.
    versions: Mutex<HashMap<(Kind, String), i32>>,
    /// Set (with the reason) once a write was fenced: this master no longer leads.
    fenced: watch::Sender<Option<String>>,
    /// Bound of one operation.
    op_timeout: Duration,
    /// Why writes are refused now (`Some`): set by the master group (no quorum of masters).
    gate: Option<watch::Receiver<Option<String>>>,
}

impl std::fmt::Debug for ZkStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkStore").field("root", &self.root).field("epoch", &self.epoch).finish()
    }
}

/// An entry id as a znode name: `/` and `%` are percent-encoded.
fn encode_id(id: &str) -> String {
    id.replace('%', "%25").replace('/', "%2F")
}

fn decode_id(name: &str) -> String {
    name.replace("%2F", "/").replace("%25", "%")
}

impl ZkStore {
    /// Claims the registry of the group at `url` for the master whose
    /// candidacy is the znode `candidacy` (name only), through `client` (the
    /// candidacy's session). Creates the registry's znodes when absent.
    pub async fn claim(client: Client, url: &ZkUrl, candidacy: &str, owner: &str, op_timeout: Duration) -> Result<ZkStore, RegistryError> {
        let root = url.child(mezzo_zk::REGISTRY_NODE);
        let (fenced, _) = watch::channel(None);
        let mut store = ZkStore { client, url: url.clone(), root, epoch: -1, versions: Mutex::new(HashMap::new()), fenced, op_timeout, gate: None };
        for kind in Kind::ALL {
            let path = store.kind_path(kind);
            let options = CreateMode::Persistent.with_acls(mezzo_zk::acls(url));
            store.bounded("create", &path, store.client.mkdir(&path, &options)).await?;
        }
        let candidacy = url.child(candidacy);
        // An ephemeral candidacy is never written: version 0 while it exists.
        let mut txn = store.client.new_check_writer(&candidacy, Some(0)).map_err(|e| unavailable("claim", &candidacy, e))?;
        txn.add_set_data(&store.root, owner.as_bytes(), None).map_err(|e| unavailable("claim", &store.root, e))?;
        let results = match tokio::time::timeout(op_timeout, txn.commit()).await {
            Err(_) => return Err(RegistryError::Unavailable(format!("claiming {} timed out", store.root))),
            Ok(Err(CheckWriteError::CheckFailed { source })) => {
                return Err(RegistryError::Fenced(format!("the candidacy {candidacy} is gone ({source}): not the leader")))
            }
            Ok(Err(e)) => return Err(RegistryError::Unavailable(format!("claiming {}: {e}", store.root))),
            Ok(Ok(results)) => results,
        };
        store.epoch = match results.into_iter().next() {
            Some(mezzo_zk::client::MultiWriteResult::SetData { stat }) => stat.version,
            other => return Err(RegistryError::Unavailable(format!("claiming {}: unexpected answer {other:?}", store.root))),
        };
        tracing::info!(registry = %store.root, epoch = store.epoch, "claimed the registry");
        Ok(store)
    }

    /// Refuses writes (`Unavailable`, with the reason) while `gate` holds `Some(reason)`.
    pub fn with_gate(mut self, gate: watch::Receiver<Option<String>>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Becomes `Some(reason)` when a write was fenced.
    pub fn fenced(&self) -> watch::Receiver<Option<String>> {
        self.fenced.subscribe()
    }

    /// The epoch (the registry znode's version) of this master's claim.
    pub fn epoch(&self) -> i32 {
        self.epoch
    }

    fn kind_path(&self, kind: Kind) -> String {
        format!("{}/{}", self.root, kind.name())
    }

    fn entry_path(&self, kind: Kind, id: &str) -> String {
        format!("{}/{}/{}", self.root, kind.name(), encode_id(id))
    }

    fn versions(&self) -> std::sync::MutexGuard<'_, HashMap<(Kind, String), i32>> {
        self.versions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fence(&self, reason: String) -> RegistryError {
        tracing::error!(reason = %reason, "registry write fenced: another master leads");
        self.fenced.send_if_modified(|f| f.is_none() && f.replace(reason.clone()).is_none());
        RegistryError::Fenced(reason)
    }

    /// Refuses at once without a connected session: no quorum, no write.
    fn connected(&self) -> Result<(), RegistryError> {
        if let Some(reason) = self.gate.as_ref().and_then(|g| g.borrow().clone()) {
            return Err(RegistryError::Unavailable(reason));
        }
        match self.client.state() {
            SessionState::SyncConnected => Ok(()),
            SessionState::Expired | SessionState::Closed | SessionState::AuthFailed => Err(self.fence(format!("ZooKeeper session {}", self.client.state()))),
            state => Err(RegistryError::Unavailable(format!("ZooKeeper session {state}: no quorum"))),
        }
    }

    async fn bounded<T>(&self, op: &'static str, path: &str, f: impl std::future::Future<Output = Result<T, ZkError>>) -> Result<T, RegistryError> {
        match tokio::time::timeout(self.op_timeout, f).await {
            Err(_) => Err(RegistryError::Unavailable(format!("ZooKeeper {op} '{path}' timed out"))),
            Ok(Err(e @ (ZkError::SessionExpired | ZkError::ClientClosed))) => Err(self.fence(format!("ZooKeeper {op} '{path}': {e}"))),
            Ok(Err(e)) => Err(unavailable(op, path, e)),
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// Commits `txn` (the epoch check, then one write of `path`).
    async fn commit(&self, op: &'static str, path: &str, txn: mezzo_zk::client::CheckWriter<'_>) -> Result<Option<i32>, RegistryError> {
        self.try_commit(op, path, txn).await.map_err(|e| match e {
            Failed::Op(source) => unavailable(op, path, source),
            Failed::Registry(e) => e,
        })
    }

    /// Like `commit`; the write's own error (not a fencing one) is kept apart for the caller to look at.
    async fn try_commit(&self, op: &'static str, path: &str, txn: mezzo_zk::client::CheckWriter<'_>) -> Result<Option<i32>, Failed> {
        match tokio::time::timeout(self.op_timeout, txn.commit()).await {
            Err(_) => Err(Failed::Registry(RegistryError::Unavailable(format!("ZooKeeper {op} '{path}' timed out")))),
            Ok(Err(CheckWriteError::CheckFailed { source })) => {
                Err(Failed::Registry(self.fence(format!("the registry was claimed by another master ({source})"))))
            }
            Ok(Err(CheckWriteError::OperationFailed { source: ZkError::BadVersion, .. })) => {
                Err(Failed::Registry(self.fence(format!("'{path}' was written by another master"))))
            }
            Ok(Err(CheckWriteError::OperationFailed { source, .. })) => Err(Failed::Op(source)),
            Ok(Err(CheckWriteError::RequestFailed { source: e @ (ZkError::SessionExpired | ZkError::ClientClosed) })) => {
                Err(Failed::Registry(self.fence(format!("ZooKeeper {op} '{path}': {e}"))))
            }
            Ok(Err(CheckWriteError::RequestFailed { source })) => Err(Failed::Registry(unavailable(op, path, source))),
            Ok(Ok(results)) => Ok(results.into_iter().next().and_then(|r| match r {
                mezzo_zk::client::MultiWriteResult::SetData { stat } | mezzo_zk::client::MultiWriteResult::Create { stat, .. } => Some(stat.version),
                _ => None,
            })),
        }
    }

    fn txn(&self) -> Result<mezzo_zk::client::CheckWriter<'_>, RegistryError> {
        self.client.new_check_writer(&self.root, Some(self.epoch)).map_err(|e| unavailable("check", &self.root, e))
    }

    async fn put_entry(&self, kind: Kind, id: &str, bytes: Vec<u8>) -> Result<(), RegistryError> {
        self.connected()?;
        let path = self.entry_path(kind, id);
        let known = self.versions().get(&(kind, id.to_string())).copied();
        let mut txn = self.txn()?;
        let version = match known {
            Some(version) => {
                txn.add_set_data(&path, &bytes, Some(version)).map_err(|e| unavailable("set", &path, e))?;
                self.commit("set", &path, txn).await?
            }
            None => {
                txn.add_create(&path, &bytes, &CreateMode::Persistent.with_acls(mezzo_zk::acls(&self.url))).map_err(|e| unavailable("create", &path, e))?;
                match self.try_commit("create", &path, txn).await {
                    Err(Failed::Op(ZkError::NodeExists)) => {
                        // Written before this master loaded it: overwrite the version it has now.
                        let (_, stat) = self.bounded("get", &path, self.client.get_data(&path)).await?;
                        let mut txn = self.txn()?;
                        txn.add_set_data(&path, &bytes, Some(stat.version)).map_err(|e| unavailable("set", &path, e))?;
                        self.commit("set", &path, txn).await?
                    }
                    Err(Failed::Op(source)) => return Err(unavailable("create", &path, source)),
                    Err(Failed::Registry(e)) => return Err(e),
                    Ok(version) => version,
                }
            }
        };
        // A create's stat may be invalid on old servers (ZOOKEEPER-4026): a new node has version 0.
        let version = match (known, version) {
            (None, Some(v)) if v < 0 => 0,
            (_, Some(v)) => v,
            (_, None) => 0,
        };
        self.versions().insert((kind, id.to_string()), version);
        Ok(())
    }

    async fn delete_entry(&self, kind: Kind, id: &str) -> Result<(), RegistryError> {
        self.connected()?;
        let path = self.entry_path(kind, id);
        let known = self.versions().get(&(kind, id.to_string())).copied();
        let mut txn = self.txn()?;
        txn.add_delete(&path, known).map_err(|e| unavailable("delete", &path, e))?;
        match self.try_commit("delete", &path, txn).await {
            Ok(_) | Err(Failed::Op(ZkError::NoNode)) => {}
            Err(Failed::Op(source)) => return Err(unavailable("delete", &path, source)),
            Err(Failed::Registry(e)) => return Err(e),
        }
        self.versions().remove(&(kind, id.to_string()));
        Ok(())
    }

    async fn load_kind(&self, kind: Kind) -> Result<Vec<Entry>, RegistryError> {
        let dir = self.kind_path(kind);
        let names = self.bounded("list", &dir, self.client.list_children(&dir)).await?;
        let reads = names.iter().map(|name| {
            let path = format!("{dir}/{name}");
            async move {
                let read = tokio::time::timeout(self.op_timeout, self.client.get_data(&path)).await;
                (name, path, read)
            }
        });
        let mut entries = Vec::with_capacity(names.len());
        let mut versions = Vec::with_capacity(names.len());
        for (name, path, read) in futures::future::join_all(reads).await {
            match read {
                Ok(Ok((bytes, stat))) => {
                    let id = decode_id(name);
                    versions.push(((kind, id.clone()), stat.version));
                    entries.push(Entry { id, bytes });
                }
                // Deleted since the listing.
                Ok(Err(ZkError::NoNode)) => {}
                Ok(Err(e)) => return Err(unavailable("get", &path, e)),
                Err(_) => return Err(RegistryError::Unavailable(format!("ZooKeeper get '{path}' timed out"))),
            }
        }
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        self.versions().extend(versions);
        Ok(entries)
    }
}

/// Why a transaction failed: its write's own error, or what the registry makes of it.
enum Failed {
    Op(ZkError),
    Registry(RegistryError),
}

fn unavailable(op: &str, path: &str, e: ZkError) -> RegistryError {
    RegistryError::Unavailable(format!("ZooKeeper {op} '{path}': {e}"))
}

impl RegistryStore for ZkStore {
    fn load(&self, kind: Kind) -> BoxFuture<'_, Result<Vec<Entry>, RegistryError>> {
        Box::pin(self.load_kind(kind))
    }

    fn put(&self, kind: Kind, id: &str, bytes: Vec<u8>) -> BoxFuture<'_, Result<(), RegistryError>> {
        let id = id.to_string();
        Box::pin(async move { self.put_entry(kind, &id, bytes).await })
    }

    fn delete(&self, kind: Kind, id: &str) -> BoxFuture<'_, Result<(), RegistryError>> {
        let id = id.to_string();
        Box::pin(async move { self.delete_entry(kind, &id).await })
    }

    fn describe(&self) -> String {
        self.url.child(mezzo_zk::REGISTRY_NODE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_become_znode_names_and_back() {
        for id in ["a1", "5f3c-S0", "a/b", "100%", "%2F"] {
            let name = encode_id(id);
            assert!(!name.contains('/'));
            assert_eq!(decode_id(&name), id);
        }
    }
}
