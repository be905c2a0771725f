//! The master's registry: what must survive a master's loss.
//!
//! Mesos keeps admitted, unreachable and gone agents in its registry; mezzo
//! also keeps frameworks (their `FrameworkInfo` and failover timeout) so a
//! framework that does not come back is torn down even across a failover.
//! Tasks are not kept: agents report them when they re-register.
//!
//! A store keeps opaque entries (encoded protobuf records) by kind and id.
//! Three stores implement [`RegistryStore`]: in memory (`--registry=in_memory`,
//! nothing survives), a directory under `--work_dir` (one file per entry,
//! written to a temporary file, fsynced and renamed), and ZooKeeper under the
//! `--zk` path (one znode per entry, writes conditional on the version last
//! seen so a deposed leader cannot overwrite its successor).

use std::collections::BTreeMap;
use std::sync::Mutex;

use futures::future::BoxFuture;

/// The kinds of entries a registry keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// An agent (admitted, unreachable or gone), by agent id.
    Agent,
    /// A framework, by framework id.
    Framework,
}

impl Kind {
    /// Every kind, in load order.
    pub const ALL: [Kind; 2] = [Kind::Agent, Kind::Framework];

    /// The name of the kind in stores (a directory, a znode).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Agent => "agents",
            Kind::Framework => "frameworks",
        }
    }
}

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub bytes: Vec<u8>,
}

/// Why the registry could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A local file operation failed.
    #[error("registry {op} '{path}' failed: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Another master wrote the registry since this one last read it: this
    /// master is no longer the leader and must stop writing.
    #[error("registry fenced: {0}")]
    Fenced(String),
    /// The store cannot be reached (no ZooKeeper quorum): no write is accepted.
    #[error("registry unavailable: {0}")]
    Unavailable(String),
    /// A stored entry cannot be decoded.
    #[error("registry entry {kind:?} '{id}' is corrupt: {message}")]
    Corrupt { kind: Kind, id: String, message: String },
}

/// Where the registry lives. A write that returns `Ok` is durable.
pub trait RegistryStore: std::fmt::Debug + Send + Sync + 'static {
    /// Every entry of `kind`, as last stored.
    fn load(&self, kind: Kind) -> BoxFuture<'_, Result<Vec<Entry>, RegistryError>>;
    /// Creates or replaces the entry `id` of `kind`.
    fn put(&self, kind: Kind, id: &str, bytes: Vec<u8>) -> BoxFuture<'_, Result<(), RegistryError>>;
    /// Removes the entry `id` of `kind`; removing a missing entry is not an error.
    fn delete(&self, kind: Kind, id: &str) -> BoxFuture<'_, Result<(), RegistryError>>;
    /// A short description for logs and `/flags` (`in_memory`, a path, a zk URL).
    fn describe(&self) -> String;
}

/// `--registry=in_memory`: entries live as long as the master process.
#[derive(Debug, Default)]
pub struct InMemoryStore {
    entries: Mutex<BTreeMap<(Kind, String), Vec<u8>>>,
}

impl InMemoryStore {
    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<(Kind, String), Vec<u8>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl RegistryStore for InMemoryStore {
    fn load(&self, kind: Kind) -> BoxFuture<'_, Result<Vec<Entry>, RegistryError>> {
        let entries = self
            .entries()
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, id), bytes)| Entry { id: id.clone(), bytes: bytes.clone() })
            .collect();
        Box::pin(async move { Ok(entries) })
    }

    fn put(&self, kind: Kind, id: &str, bytes: Vec<u8>) -> BoxFuture<'_, Result<(), RegistryError>> {
        self.entries().insert((kind, id.to_string()), bytes);
        Box::pin(async { Ok(()) })
    }

    fn delete(&self, kind: Kind, id: &str) -> BoxFuture<'_, Result<(), RegistryError>> {
        self.entries().remove(&(kind, id.to_string()));
        Box::pin(async { Ok(()) })
    }

    fn describe(&self) -> String {
        "in_memory".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_memory_store_keeps_entries_by_kind_and_id() {
        let store = InMemoryStore::default();
        store.put(Kind::Agent, "a1", b"one".to_vec()).await.unwrap();
        store.put(Kind::Agent, "a1", b"two".to_vec()).await.unwrap();
        store.put(Kind::Framework, "a1", b"fw".to_vec()).await.unwrap();
        assert_eq!(store.load(Kind::Agent).await.unwrap(), vec![Entry { id: "a1".into(), bytes: b"two".to_vec() }]);
        store.delete(Kind::Agent, "a1").await.unwrap();
        store.delete(Kind::Agent, "missing").await.unwrap();
        assert!(store.load(Kind::Agent).await.unwrap().is_empty());
        assert_eq!(store.load(Kind::Framework).await.unwrap().len(), 1);
    }
}
