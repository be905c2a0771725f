//! The registrar: writes the registry's records to the store, in the order
//! the master decided them, and tells the callers when they are durable.
//!
//! The master's state is behind a sync mutex and store writes are async, so
//! the master never writes itself: a method that changes what the registry
//! keeps queues the record on [`Registrar`] (under the lock, so writes keep
//! the order of the decisions) and one writer task stores the records one by
//! one. A call whose answer must wait for durability (an agent's admission,
//! a framework's subscription, MARK_AGENT_GONE) runs through
//! [`Shared::durably`]: it marks the registrar under the lock, runs the
//! master's method, takes the writes that method queued, releases the lock
//! and awaits them. Writes queued by background work (ping timeouts,
//! failover timers) are not awaited: the writer logs their failures.
//!
//! Failures: `Unavailable` (and local I/O errors) answer the call 503 naming
//! the registry; `Fenced` means another master leads now: the writer calls
//! the binary's fencing hook (`MasterConfig::on_fenced`, which exits the
//! process as Mesos's master does) and refuses every later write.

use std::sync::Arc;

use futures::future::BoxFuture;
use mezzo_proto::mezzo::registry::{registry_agent, RegistryAgent, RegistryFramework};
use prost::Message;
use tokio::sync::{mpsc, oneshot};

use crate::error::CallError;
use crate::master::{Master, Shared};
use crate::registry::{Kind, RegistryError, RegistryStore};

/// Resolves when the writes a call queued are durable (503 otherwise).
pub(crate) type Durable = BoxFuture<'static, Result<(), CallError>>;

/// Called once when the store says this master was fenced (lost leadership).
#[derive(Clone)]
pub struct FencedHook(pub Arc<dyn Fn(&str) + Send + Sync>);

impl std::fmt::Debug for FencedHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FencedHook")
    }
}

impl Default for FencedHook {
    /// Logs; the binary installs a hook that exits the process.
    fn default() -> Self {
        FencedHook(Arc::new(|message| tracing::error!(%message, "registry fenced: this master no longer leads")))
    }
}

/// Why a queued write did not become durable.
#[derive(Debug, Clone)]
pub(crate) enum WriteFailure {
    /// The store could not be written (unreachable, I/O error).
    Unavailable(String),
    /// Another master leads now.
    Fenced(String),
}

enum OpKind {
    Put(Vec<u8>),
    Delete,
    /// Writes nothing: done once every write queued before it is.
    #[cfg_attr(not(test), allow(dead_code))]
    Barrier,
}

struct Op {
    kind: Kind,
    id: String,
    op: OpKind,
    done: oneshot::Sender<Result<(), WriteFailure>>,
}

/// The master's side of the registrar: queues writes in decision order.
pub(crate) struct Registrar {
    tx: mpsc::UnboundedSender<Op>,
    /// Writes queued since the last `begin`.
    pending: Vec<oneshot::Receiver<Result<(), WriteFailure>>>,
    /// The store, named in errors.
    describe: String,
}

/// What the writer task consumes.
pub(crate) struct Writer {
    rx: mpsc::UnboundedReceiver<Op>,
}

impl Registrar {
    /// A registrar and the writer that must be run (`run_writer`) for its writes to happen.
    pub(crate) fn new(describe: String) -> (Registrar, Writer) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Registrar { tx, pending: Vec::new(), describe }, Writer { rx })
    }

    fn queue(&mut self, kind: Kind, id: &str, op: OpKind) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Op { kind, id: id.to_string(), op, done }).is_err() {
            tracing::error!(kind = kind.name(), %id, "registry writer stopped: write dropped");
        }
        self.pending.push(rx);
    }

    /// Queues the record of an agent.
    pub(crate) fn put_agent(&mut self, record: &RegistryAgent) {
        let id = record.info.id.as_ref().map(|i| i.value.clone()).unwrap_or_default();
        self.queue(Kind::Agent, &id, OpKind::Put(record.encode_to_vec()));
    }

    /// Queues the record of a framework.
    pub(crate) fn put_framework(&mut self, record: &RegistryFramework) {
        let id = record.info.id.as_ref().map(|i| i.value.clone()).unwrap_or_default();
        self.queue(Kind::Framework, &id, OpKind::Put(record.encode_to_vec()));
    }

    /// Queues the removal of a framework (torn down).
    pub(crate) fn delete_framework(&mut self, id: &str) {
        self.queue(Kind::Framework, id, OpKind::Delete);
    }

    /// Queues a barrier: awaiting it (`durable`) waits for every write
    /// queued before, by whomever (tests; an operator call that must see
    /// earlier background writes durable).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn barrier(&mut self) {
        self.queue(Kind::Agent, "", OpKind::Barrier);
    }

    /// Forgets the writes queued so far (background work does not await them).
    pub(crate) fn begin(&mut self) {
        self.pending.clear();
    }

    /// A future that resolves when every write queued since `begin` is
    /// durable, or with the 503 of the first that failed; `None` when
    /// nothing was queued.
    pub(crate) fn durable(&mut self) -> Option<Durable> {
        if self.pending.is_empty() {
            return None;
        }
        let pending = std::mem::take(&mut self.pending);
        let describe = self.describe.clone();
        Some(Box::pin(async move {
            for rx in pending {
                match rx.await {
                    Ok(Ok(())) => {}
                    Ok(Err(WriteFailure::Unavailable(m))) => {
                        return Err(CallError::ServiceUnavailable(format!("The registry ({describe}) is unavailable: {m}")))
                    }
                    Ok(Err(WriteFailure::Fenced(m))) => {
                        return Err(CallError::ServiceUnavailable(format!(
                            "This master no longer leads (registry {describe} fenced: {m})"
                        )))
                    }
                    Err(_) => {
                        return Err(CallError::ServiceUnavailable(format!(
                            "The registry ({describe}) is unavailable: its writer stopped"
                        )))
                    }
                }
            }
            Ok(())
        }))
    }
}

/// Stores queued records one at a time, in order, until the master is dropped.
pub(crate) async fn run_writer(store: Arc<dyn RegistryStore>, mut writer: Writer, on_fenced: FencedHook) {
    let mut fenced: Option<String> = None;
    while let Some(op) = writer.rx.recv().await {
        let result = match &fenced {
            Some(m) => Err(WriteFailure::Fenced(m.clone())),
            None => {
                let outcome = match op.op {
                    OpKind::Put(bytes) => store.put(op.kind, &op.id, bytes).await,
                    OpKind::Delete => store.delete(op.kind, &op.id).await,
                    OpKind::Barrier => Ok(()),
                };
                match outcome {
                    Ok(()) => Ok(()),
                    Err(RegistryError::Fenced(m)) => {
                        tracing::error!(store = %store.describe(), message = %m, "registry fenced: another master leads; refusing every later write");
                        fenced = Some(m.clone());
                        (on_fenced.0)(&m);
                        Err(WriteFailure::Fenced(m))
                    }
                    Err(e) => {
                        tracing::error!(store = %store.describe(), kind = op.kind.name(), id = %op.id, error = %e, "registry write failed");
                        Err(WriteFailure::Unavailable(e.to_string()))
                    }
                }
            }
        };
        // The caller may have stopped waiting (background work): that is fine.
        let _ = op.done.send(result);
    }
}

/// What the registry held when the master started.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    pub(crate) agents: Vec<RegistryAgent>,
    pub(crate) frameworks: Vec<RegistryFramework>,
}

fn decode<M: Message + Default>(kind: Kind, id: &str, bytes: &[u8]) -> Result<M, RegistryError> {
    M::decode(bytes).map_err(|e| RegistryError::Corrupt { kind, id: id.to_string(), message: e.to_string() })
}

/// Reads every record; a record that does not decode, or whose id is not
/// its entry's, is `Corrupt` naming the entry.
pub(crate) async fn load(store: &dyn RegistryStore) -> Result<Recovered, RegistryError> {
    let mut recovered = Recovered::default();
    for entry in store.load(Kind::Agent).await? {
        let record: RegistryAgent = decode(Kind::Agent, &entry.id, &entry.bytes)?;
        if record.info.id.as_ref().map(|i| i.value.as_str()) != Some(entry.id.as_str()) {
            return Err(RegistryError::Corrupt { kind: Kind::Agent, id: entry.id, message: "the record names another agent id".into() });
        }
        if record.state.is_some() && registry_agent::State::try_from(record.state.unwrap_or_default()).is_err() {
            return Err(RegistryError::Corrupt { kind: Kind::Agent, id: entry.id, message: "unknown agent state".into() });
        }
        recovered.agents.push(record);
    }
    for entry in store.load(Kind::Framework).await? {
        let record: RegistryFramework = decode(Kind::Framework, &entry.id, &entry.bytes)?;
        if record.info.id.as_ref().map(|i| i.value.as_str()) != Some(entry.id.as_str()) {
            return Err(RegistryError::Corrupt {
                kind: Kind::Framework,
                id: entry.id,
                message: "the record names another framework id".into(),
            });
        }
        recovered.frameworks.push(record);
    }
    Ok(recovered)
}

impl Shared {
    /// Runs `f` on the master and, once the lock is released, waits until the
    /// registry writes `f` queued are durable: the caller answers only then
    /// (503 when the registry cannot be written). See the module comment.
    pub(crate) async fn durably<R>(&self, f: impl FnOnce(&mut Master) -> Result<R, CallError>) -> Result<R, CallError> {
        let (result, durable) = {
            let mut master = self.lock();
            master.registrar.begin();
            let result = f(&mut master);
            (result, master.registrar.durable())
        };
        let value = result?;
        if let Some(durable) = durable {
            durable.await?;
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file_store::FileStore;
    use mezzo_proto::mesos::v1::{AgentId, AgentInfo, FrameworkId, FrameworkInfo};

    fn agent(id: &str) -> RegistryAgent {
        RegistryAgent {
            info: AgentInfo { hostname: "h".into(), id: Some(AgentId { value: id.into() }), ..Default::default() },
            endpoint: Some("10.0.0.1:5051".into()),
            secret_hash: Some(vec![7; 32]),
            state: Some(registry_agent::State::Admitted as i32),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn records_written_in_order_come_back_and_a_corrupt_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn RegistryStore> = Arc::new(FileStore::open(dir.path()).unwrap());
        let (mut registrar, writer) = Registrar::new(store.describe());
        tokio::spawn(run_writer(store.clone(), writer, FencedHook::default()));
        registrar.begin();
        registrar.put_agent(&agent("a1"));
        let mut gone = agent("a1");
        gone.state = Some(registry_agent::State::Gone as i32);
        registrar.put_agent(&gone);
        registrar.put_framework(&RegistryFramework {
            info: FrameworkInfo { user: "u".into(), name: "n".into(), id: Some(FrameworkId { value: "f1".into() }), failover_timeout: Some(60.0), ..Default::default() },
            ..Default::default()
        });
        registrar.put_framework(&RegistryFramework {
            info: FrameworkInfo { user: "u".into(), name: "n".into(), id: Some(FrameworkId { value: "f2".into() }), ..Default::default() },
            ..Default::default()
        });
        registrar.delete_framework("f2");
        registrar.durable().unwrap().await.unwrap();
        let recovered = load(&*store).await.unwrap();
        assert_eq!(recovered.agents, vec![gone]);
        assert_eq!(recovered.frameworks.len(), 1);
        assert_eq!(recovered.frameworks[0].info.failover_timeout, Some(60.0));

        std::fs::write(dir.path().join("registry/agents/a2"), b"\xff\xff\xff not a record").unwrap();
        let err = load(&*store).await.unwrap_err();
        assert!(matches!(&err, RegistryError::Corrupt { kind: Kind::Agent, id, .. } if id == "a2"), "{err}");
        assert!(err.to_string().contains("'a2'"), "{err}");
        // A record filed under another agent's id is corrupt too.
        std::fs::write(dir.path().join("registry/agents/a2"), agent("a3").encode_to_vec()).unwrap();
        assert!(matches!(load(&*store).await.unwrap_err(), RegistryError::Corrupt { .. }));
    }

    /// A store that fences every write, as a deposed leader's ZooKeeper store does.
    #[derive(Debug)]
    struct Fencing;

    impl RegistryStore for Fencing {
        fn load(&self, _: Kind) -> BoxFuture<'_, Result<Vec<crate::registry::Entry>, RegistryError>> {
            Box::pin(async { Ok(Vec::new()) })
        }
        fn put(&self, _: Kind, _: &str, _: Vec<u8>) -> BoxFuture<'_, Result<(), RegistryError>> {
            Box::pin(async { Err(RegistryError::Fenced("a newer leader wrote".into())) })
        }
        fn delete(&self, _: Kind, _: &str) -> BoxFuture<'_, Result<(), RegistryError>> {
            Box::pin(async { Err(RegistryError::Unavailable("no quorum".into())) })
        }
        fn describe(&self) -> String {
            "fencing".into()
        }
    }

    #[tokio::test]
    async fn a_fenced_write_calls_the_hook_once_and_fails_every_later_write() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = calls.clone();
        let hook = FencedHook(Arc::new(move |_| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
        let (mut registrar, writer) = Registrar::new("fencing".into());
        tokio::spawn(run_writer(Arc::new(Fencing), writer, hook));
        registrar.begin();
        registrar.put_agent(&agent("a1"));
        let err = registrar.durable().unwrap().await.unwrap_err();
        assert_eq!(err.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert!(err.to_string().contains("no longer leads"), "{err}");
        registrar.begin();
        registrar.delete_framework("f");
        assert!(registrar.durable().unwrap().await.unwrap_err().to_string().contains("fenced"));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_unavailable_store_answers_503_naming_the_registry() {
        let (mut registrar, writer) = Registrar::new("zk://h:2181/mezzo".into());
        #[derive(Debug)]
        struct Down;
        impl RegistryStore for Down {
            fn load(&self, _: Kind) -> BoxFuture<'_, Result<Vec<crate::registry::Entry>, RegistryError>> {
                Box::pin(async { Ok(Vec::new()) })
            }
            fn put(&self, _: Kind, _: &str, _: Vec<u8>) -> BoxFuture<'_, Result<(), RegistryError>> {
                Box::pin(async { Err(RegistryError::Unavailable("no quorum".into())) })
            }
            fn delete(&self, _: Kind, _: &str) -> BoxFuture<'_, Result<(), RegistryError>> {
                Box::pin(async { Ok(()) })
            }
            fn describe(&self) -> String {
                "down".into()
            }
        }
        tokio::spawn(run_writer(Arc::new(Down), writer, FencedHook::default()));
        registrar.begin();
        registrar.put_agent(&agent("a1"));
        let err = registrar.durable().unwrap().await.unwrap_err();
        assert_eq!(err.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert!(err.to_string().contains("registry (zk://h:2181/mezzo) is unavailable: registry unavailable: no quorum"), "{err}");
    }
}
