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
    Backend, ContainerConfig, ContainerSpec, ContainerizerError, Isolator, Launcher, Limitation, ResourceLimits, Resources,
    Usage,
};
use futures::future::BoxFuture;
use futures::FutureExt;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// File in a container's runtime directory naming its backend.
pub const BACKEND_FILE: &str = "backend";
/// File in a container's runtime directory holding its `ContainerSpec` as JSON.
pub const SPEC_FILE: &str = "spec.json";

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
}

impl Containerizer {
    /// A containerizer over `backends` (flag order) keeping per-container
    /// state under `runtime_root/<container id>`.
    pub fn new(backends: Vec<Arc<dyn Backend>>, runtime_root: PathBuf) -> Self {
        Containerizer { backends, runtime_root, containers: Mutex::new(HashMap::new()) }
    }

    /// Names of the enabled backends, in flag order.
    pub fn backend_names(&self) -> Vec<&'static str> {
        self.backends.iter().map(|b| b.name()).collect()
    }

    /// Runtime directory of a container.
    pub fn runtime_dir(&self, container_id: &str) -> PathBuf {
        self.runtime_root.join(container_id)
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

    fn backend_named(&self, name: &str) -> Result<Arc<dyn Backend>, ContainerizerError> {
        self.backends
            .iter()
            .find(|b| b.name() == name.trim())
            .cloned()
            .ok_or_else(|| ContainerizerError::UnknownContainerizer(name.trim().to_string()))
    }

    /// Runs the isolators and the backend for `config`; on success the
    /// container can be started by `launcher(runtime_dir)`. On failure
    /// everything prepared so far is destroyed again; a `destroy` that
    /// comes meanwhile makes it fail with `DestroyedWhilePreparing`.
    pub async fn prepare(&self, config: &ContainerConfig) -> Result<PathBuf, ContainerizerError> {
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
            std::fs::create_dir_all(&dir).map_err(ContainerizerError::io("create runtime directory", &dir))?;
            // Written first, so that a destroy at any later point knows
            // whose leftovers to remove.
            write_atomic(&dir.join(BACKEND_FILE), backend.name().as_bytes())?;
            let mut spec = ContainerSpec::new(config);
            for isolator in backend.isolators() {
                tracing::debug!(container = %id, isolator = isolator.name(), "prepare");
                isolator.prepare(config, &mut spec).await?;
            }
            let json = serde_json::to_vec_pretty(&spec).map_err(|e| ContainerizerError::Other(e.to_string()))?;
            write_atomic(&dir.join(SPEC_FILE), &json)?;
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
        let name = match std::fs::read_to_string(dir.join(BACKEND_FILE)) {
            Ok(name) => name,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return match std::fs::remove_dir_all(&dir) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(ContainerizerError::io("remove runtime directory", &dir)(e)),
                };
            }
            Err(e) => return Err(ContainerizerError::io("read backend file", &dir)(e)),
        };
        let backend = self.backend_named(&name)?;
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
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ContainerizerError::io("remove runtime directory", &dir)(e)),
        }
    }

    /// The backend and spec of a prepared container, from memory or from
    /// its runtime directory.
    fn lookup(&self, container_id: &str) -> Result<(Arc<dyn Backend>, ContainerSpec), ContainerizerError> {
        validate_id(container_id)?;
        let unknown = || ContainerizerError::UnknownContainer(container_id.to_string());
        let dir = self.runtime_dir(container_id);
        let name = std::fs::read_to_string(dir.join(BACKEND_FILE)).map_err(|_| unknown())?;
        let backend = self.backend_named(&name)?;
        let cached = self.table().get(container_id).and_then(|e| e.spec.lock().unwrap_or_else(|p| p.into_inner()).clone());
        let spec = match cached {
            Some(spec) => spec,
            None => read_spec(&dir).map_err(|_| unknown())?,
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
                recovered.values().filter(|(b, _)| b.name() == backend.name()).map(|(_, s)| s.clone()).collect();
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

/// Reads a prepared container's spec back from its runtime directory.
pub fn read_spec(runtime_dir: &Path) -> Result<ContainerSpec, ContainerizerError> {
    let path = runtime_dir.join(SPEC_FILE);
    let bytes = std::fs::read(&path).map_err(ContainerizerError::io("read container spec", &path))?;
    serde_json::from_slice(&bytes).map_err(|e| ContainerizerError::InvalidSpec(format!("{}: {e}", path.display())))
}

/// Makes the launcher for a prepared container, by the backend named in
/// its runtime directory. `launcher_dir` is where mezzo's helper binaries live.
pub fn launcher(runtime_dir: &Path, launcher_dir: &Path) -> Result<Box<dyn Launcher>, ContainerizerError> {
    let name = std::fs::read_to_string(runtime_dir.join(BACKEND_FILE))
        .map_err(ContainerizerError::io("read backend file", runtime_dir))?;
    let spec = read_spec(runtime_dir)?;
    match name.trim() {
        "rust" => Ok(Box::new(crate::rust::RustLauncher::new(spec, runtime_dir, launcher_dir)?)),
        "docker" => Ok(Box::new(crate::docker::DockerLauncher::new(spec, runtime_dir)?)),
        other => Err(ContainerizerError::UnknownContainerizer(other.to_string())),
    }
}

/// Container ids become directory and cgroup names: keep them tame.
pub fn validate_id(id: &str) -> Result<(), ContainerizerError> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 128
        && id.chars().all(|c| c.is_ascii_alphanumeric() || "_+.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ContainerizerError::InvalidSpec(format!("invalid container id '{id}'")))
    }
}

/// Writes `data` to `path` through a temp file and a rename, without fsync.
///
/// For the files of a container's runtime directory (`backend`,
/// `spec.json`, the supervisor's `pid` and `exit_status`): the rename keeps
/// readers from ever seeing a partly written file, also when the writer
/// crashes. They need no fsync: they only matter while the node stays up,
/// since a reboot ends every container, and recovery destroys a runtime
/// directory whose files are missing or unreadable. Two fsyncs per launch
/// cost milliseconds on a busy disk.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), ContainerizerError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(ContainerizerError::io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(ContainerizerError::io("rename", path))
}
