//! The composing containerizer: picks the first enabled backend, in flag
//! order, that accepts a task's container type, runs the isolators and the
//! backend, and destroys what they made. It also drives the isolators for a
//! running container (`isolate`, `watch`, `usage`, `update`) and finds its
//! containers again after an agent restart (`recover`).
//!
//! Each container has an entry with a lock that `prepare` and `destroy`
//! take, and a cancel token: `destroy` during `prepare` cancels it (an image
//! pull in flight is dropped), waits for it to stop, and then removes what
//! it left.

use crate::spec::Rootfs;
use crate::{
    validate_id, Backend, BackendKind, ContainerConfig, ContainerSpec, ContainerizerError, Isolator, Launcher, Limitation,
    ResourceLimits, Resources, RuntimeDir, Usage,
};
use futures::future::BoxFuture;
use futures::FutureExt;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// What the containerizer keeps for one container.
#[derive(Default)]
struct Entry {
    /// Cancelled by `destroy`; a `prepare` in flight stops at once.
    cancel: CancellationToken,
    /// Held by `prepare` and `destroy`, so that they never overlap.
    lock: tokio::sync::Mutex<()>,
    /// The prepared (or recovered) spec.
    spec: Mutex<Option<ContainerSpec>>,
}

/// The agent's view of all its containers.
pub struct Containerizer {
    backends: Vec<Arc<dyn Backend>>,
    runtime_root: PathBuf,
    containers: Mutex<HashMap<String, Arc<Entry>>>,
    log_rotation: Option<crate::log_rotate::LogRotation>,
}

impl Containerizer {
    /// A containerizer over `backends` (flag order) keeping per-container
    /// state under `runtime_root/<container id>`.
    pub fn new(backends: Vec<Arc<dyn Backend>>, runtime_root: PathBuf) -> Self {
        Containerizer { backends, runtime_root, containers: Mutex::new(HashMap::new()), log_rotation: None }
    }

    /// Rotates the output of the containers it prepares from now on (`--container_logger=logrotate`).
    pub fn with_log_rotation(mut self, rotation: Option<crate::log_rotate::LogRotation>) -> Self {
        self.log_rotation = rotation;
        self
    }

    /// Names of the enabled backends, in flag order.
    pub fn backend_names(&self) -> Vec<&'static str> {
        self.backends.iter().map(|b| b.name()).collect()
    }

    /// Runtime directory of a container.
    pub fn runtime_dir(&self, container_id: &str) -> RuntimeDir {
        RuntimeDir::of(&self.runtime_root, container_id)
    }

    /// Ids of the containers this containerizer knows (being prepared,
    /// prepared or recovered), sorted.
    pub fn containers(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.table().keys().cloned().collect();
        ids.sort();
        ids
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        // A panic while holding the map cannot leave it half-updated.
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn backend_of(&self, kind: BackendKind, container_id: &str) -> Result<Arc<dyn Backend>, ContainerizerError> {
        self.backends
            .iter()
            .find(|b| b.kind() == kind)
            .cloned()
            .ok_or_else(|| ContainerizerError::DisabledContainerizer { id: container_id.to_string(), kind })
    }

    /// Runs the isolators and the backend for `config`; on success the
    /// container can be started by its `RuntimeDir::launcher`. On failure
    /// everything prepared so far is destroyed again; a `destroy` that
    /// comes meanwhile makes it fail with `DestroyedWhilePreparing`.
    pub async fn prepare(&self, config: &ContainerConfig) -> Result<RuntimeDir, ContainerizerError> {
        let backend = self
            .backends
            .iter()
            .find(|b| b.accepts(config.container_type))
            .cloned()
            .ok_or_else(|| ContainerizerError::Unsupported {
                kind: format!("{:?}", config.container_type).to_uppercase(),
                enabled: self.backend_names().join(","),
            })?;
        let id = &config.container_id;
        validate_id(id)?;
        let dir = self.runtime_dir(id);
        let entry = Arc::new(Entry::default());
        {
            let mut table = self.table();
            if table.contains_key(id) || dir.exists() {
                return Err(ContainerizerError::InvalidSpec(format!("container {id} already exists")));
            }
            table.insert(id.clone(), entry.clone());
        }
        let _guard = entry.lock.lock().await;
        if entry.cancel.is_cancelled() {
            // destroy came first and has run already.
            self.forget(id, &entry);
            return Err(ContainerizerError::DestroyedWhilePreparing(id.clone()));
        }
        let work = async {
            dir.create()?;
            // Written first, so that a destroy at any later point knows
            // whose leftovers to remove.
            dir.write_backend(backend.kind())?;
            let mut spec = ContainerSpec::new(config);
            spec.log_rotation = self.log_rotation;
            for isolator in backend.isolators() {
                tracing::debug!(container = %id, isolator = isolator.name(), "prepare");
                isolator.prepare(config, &mut spec).await?;
            }
            dir.write_spec(&spec)?;
            backend.prepare(&spec, &dir).await?;
            Ok::<_, ContainerizerError>(spec)
        };
        let result = tokio::select! {
            biased;
            _ = entry.cancel.cancelled() => Err(ContainerizerError::DestroyedWhilePreparing(id.clone())),
            r = work => r,
        };
        match result {
            Ok(spec) => {
                *entry.spec.lock().unwrap_or_else(|p| p.into_inner()) = Some(spec);
                Ok(dir)
            }
            // The destroy waiting for our lock removes what we left.
            Err(e) if entry.cancel.is_cancelled() => Err(e),
            Err(e) => {
                if let Err(d) = self.destroy_unlocked(id).await {
                    tracing::warn!(container = %id, error = %d, "destroy after failed prepare");
                }
                self.forget(id, &entry);
                Err(e)
            }
        }
    }

    /// Drops `entry` from the table if it is still the one for `id`.
    fn forget(&self, id: &str, entry: &Arc<Entry>) {
        let mut table = self.table();
        if table.get(id).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            table.remove(id);
        }
    }

    /// Kills and removes a container from any state: a `prepare` in flight
    /// is cancelled first and its leftovers removed. Unknown is not an error.
    pub async fn destroy(&self, container_id: &str) -> Result<(), ContainerizerError> {
        validate_id(container_id)?;
        let entry = self.table().entry(container_id.to_string()).or_default().clone();
        entry.cancel.cancel();
        let _guard = entry.lock.lock().await;
        let result = self.destroy_unlocked(container_id).await;
        if result.is_ok() {
            self.forget(container_id, &entry);
        }
        result
    }

    /// Destroys what is on disk for `container_id`; the caller holds its lock.
    async fn destroy_unlocked(&self, container_id: &str) -> Result<(), ContainerizerError> {
        let dir = self.runtime_dir(container_id);
        let Some(kind) = dir.backend()? else { return dir.remove() };
        let backend = self.backend_of(kind, container_id)?;
        backend.destroy(container_id, &dir).await?;
        let mut failures = Vec::new();
        for isolator in backend.isolators().iter().rev() {
            if let Err(e) = isolator.cleanup(container_id).await {
                failures.push(format!("{}: {e}", isolator.name()));
            }
        }
        if !failures.is_empty() {
            // Keep the runtime directory: a retry of destroy needs it.
            return Err(ContainerizerError::Other(format!(
                "failed to clean up isolators of container {container_id}: {}",
                failures.join("; ")
            )));
        }
        dir.remove()
    }

    /// The backend and spec of a prepared container, from memory or from
    /// its runtime directory.
    fn lookup(&self, container_id: &str) -> Result<(Arc<dyn Backend>, ContainerSpec), ContainerizerError> {
        validate_id(container_id)?;
        let unknown = || ContainerizerError::UnknownContainer(container_id.to_string());
        let dir = self.runtime_dir(container_id);
        let kind = dir.backend().ok().flatten().ok_or_else(unknown)?;
        let backend = self.backend_of(kind, container_id)?;
        let cached = self.table().get(container_id).and_then(|e| e.spec.lock().unwrap_or_else(|p| p.into_inner()).clone());
        let spec = match cached {
            Some(spec) => spec,
            None => dir.read_spec().map_err(|_| unknown())?,
        };
        Ok((backend, spec))
    }

    /// The container's init runs as host pid `pid`: every isolator of its
    /// backend isolates it (in parallel, as Mesos).
    pub async fn isolate(&self, container_id: &str, pid: i32) -> Result<(), ContainerizerError> {
        let (backend, spec) = self.lookup(container_id)?;
        let isolators = backend.isolators();
        let results = futures::future::join_all(isolators.iter().map(|i| i.isolate(&spec, pid))).await;
        results.into_iter().collect()
    }

    /// Resolves with the first limitation any of the container's isolators
    /// reports (an OOM, a disk quota); pending for as long as there is none.
    pub async fn watch(&self, container_id: &str) -> Result<Limitation, ContainerizerError> {
        let (backend, spec) = self.lookup(container_id)?;
        let isolators: Vec<Arc<dyn Isolator>> = backend.isolators();
        let dir = self.runtime_dir(container_id);
        let mut watches: Vec<BoxFuture<'_, Result<Limitation, ContainerizerError>>> =
            isolators.iter().map(|i| i.watch(&spec).boxed()).collect();
        watches.push(backend.watch(&spec, &dir).boxed());
        let (first, _, _) = futures::future::select_all(watches).await;
        if let Ok(l) = &first {
            tracing::info!(container = %container_id, reason = ?l.reason, "container limitation");
        }
        first
    }

    /// The container's resource statistics, from all its isolators.
    pub async fn usage(&self, container_id: &str) -> Result<Usage, ContainerizerError> {
        let (backend, spec) = self.lookup(container_id)?;
        let mut usage = Usage {
            timestamp: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or_default(),
            ..Default::default()
        };
        for isolator in backend.isolators() {
            isolator.usage(&spec, &mut usage).await?;
        }
        Ok(usage)
    }

    /// New resources for a running container. As Mesos, an unknown
    /// container is ignored.
    pub async fn update(
        &self,
        container_id: &str,
        resources: &Resources,
        limits: &ResourceLimits,
    ) -> Result<(), ContainerizerError> {
        let (backend, spec) = match self.lookup(container_id) {
            Ok(found) => found,
            Err(ContainerizerError::UnknownContainer(_)) => {
                tracing::info!(container = %container_id, "ignoring update of an unknown container");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let isolators = backend.isolators();
        let results = futures::future::join_all(isolators.iter().map(|i| i.update(&spec, resources, limits))).await;
        results.into_iter().collect()
    }

    /// After an agent restart: every runtime directory that `checkpointed`
    /// names and that holds a complete container is taken back (its
    /// isolators and backend recover it); every other one is destroyed as an
    /// orphan, and so is anything of a backend's own (cgroups under its root,
    /// engine containers) that no recovered container names. Returns the
    /// recovered ids, sorted.
    pub async fn recover(&self, checkpointed: &HashSet<String>) -> Result<Vec<String>, ContainerizerError> {
        let mut recovered: BTreeMap<String, (Arc<dyn Backend>, ContainerSpec)> = BTreeMap::new();
        let mut orphans = Vec::new();
        let entries = match std::fs::read_dir(&self.runtime_root) {
            Ok(entries) => entries.flatten().collect::<Vec<_>>(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(ContainerizerError::io("read runtime root", &self.runtime_root)(e)),
        };
        for e in entries {
            let Ok(id) = e.file_name().into_string() else { continue };
            if validate_id(&id).is_err() || !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if !checkpointed.contains(&id) {
                orphans.push(id);
                continue;
            }
            match self.lookup(&id) {
                Ok(found) => {
                    recovered.insert(id, found);
                }
                Err(err) => {
                    tracing::warn!(container = %id, error = %err, "cannot recover container; destroying it");
                    orphans.push(id);
                }
            }
        }
        for backend in &self.backends {
            let specs: Vec<ContainerSpec> =
                recovered.values().filter(|(b, _)| b.kind() == backend.kind()).map(|(_, s)| s.clone()).collect();
            for isolator in backend.isolators() {
                isolator.recover(&specs).await?;
            }
            backend.recover(&specs).await?;
        }
        {
            let mut table = self.table();
            for (id, (_, spec)) in &recovered {
                let entry = Entry { spec: Mutex::new(Some(spec.clone())), ..Default::default() };
                table.insert(id.clone(), Arc::new(entry));
            }
        }
        for id in orphans {
            tracing::info!(container = %id, "destroying orphan container");
            if let Err(e) = self.destroy(&id).await {
                tracing::warn!(container = %id, error = %e, "destroy orphan container");
            }
        }
        Ok(recovered.into_keys().collect())
    }
}

impl ContainerSpec {
    /// An empty spec for `config`, before any isolator ran.
    pub fn new(config: &ContainerConfig) -> Self {
        ContainerSpec {
            container_id: config.container_id.clone(),
            image: config.image.clone(),
            rootfs: Rootfs::Host,
            args: Vec::new(),
            env: Vec::new(),
            working_dir: config.sandbox.display().to_string(),
            user: config.command.user.clone(),
            hostname: config.hostname.clone(),
            namespaces: Vec::new(),
            mounts: Vec::new(),
            limits: Default::default(),
            cgroup_path: String::new(),
            labels: config.labels.clone(),
            stdout: config.sandbox.join("stdout"),
            stderr: config.sandbox.join("stderr"),
            ..Default::default()
        }
    }
}

/// Makes the launcher for the container prepared in `runtime_dir`, by the
/// backend kind recorded there. `launcher_dir` is where mezzo's helper
/// binaries live.
pub fn launcher(runtime_dir: impl AsRef<Path>, launcher_dir: &Path) -> Result<Box<dyn Launcher>, ContainerizerError> {
    RuntimeDir::new(runtime_dir.as_ref()).launcher(launcher_dir)
}
