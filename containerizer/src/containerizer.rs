//! The composing containerizer: picks the first enabled backend, in flag
//! order, that accepts a task's container type, runs the isolators and the
//! backend, and destroys what they made.

use crate::spec::Rootfs;
use crate::{Backend, ContainerConfig, ContainerSpec, ContainerizerError, Launcher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// File in a container's runtime directory naming its backend.
pub const BACKEND_FILE: &str = "backend";
/// File in a container's runtime directory holding its `ContainerSpec` as JSON.
pub const SPEC_FILE: &str = "spec.json";

/// The agent's view of all its containers.
pub struct Containerizer {
    backends: Vec<Arc<dyn Backend>>,
    runtime_root: PathBuf,
}

impl Containerizer {
    /// A containerizer over `backends` (flag order) keeping per-container
    /// state under `runtime_root/<container id>`.
    pub fn new(backends: Vec<Arc<dyn Backend>>, runtime_root: PathBuf) -> Self {
        Containerizer { backends, runtime_root }
    }

    /// Names of the enabled backends, in flag order.
    pub fn backend_names(&self) -> Vec<&'static str> {
        self.backends.iter().map(|b| b.name()).collect()
    }

    /// Runtime directory of a container.
    pub fn runtime_dir(&self, container_id: &str) -> PathBuf {
        self.runtime_root.join(container_id)
    }

    /// Runs the isolators and the backend for `config`; on success the
    /// container can be started by `launcher(runtime_dir)`. On failure
    /// everything prepared so far is destroyed again.
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
        validate_id(&config.container_id)?;
        let dir = self.runtime_dir(&config.container_id);
        std::fs::create_dir_all(&dir).map_err(ContainerizerError::io("create runtime directory", &dir))?;
        write_atomic(&dir.join(BACKEND_FILE), backend.name().as_bytes())?;
        let result = async {
            let mut spec = ContainerSpec::new(config);
            for isolator in backend.isolators() {
                tracing::debug!(container = %config.container_id, isolator = isolator.name(), "prepare");
                isolator.prepare(config, &mut spec).await?;
            }
            let json = serde_json::to_vec_pretty(&spec).map_err(|e| ContainerizerError::Other(e.to_string()))?;
            write_atomic(&dir.join(SPEC_FILE), &json)?;
            backend.prepare(&spec, &dir).await
        }
        .await;
        if let Err(e) = result {
            if let Err(d) = self.destroy(&config.container_id).await {
                tracing::warn!(container = %config.container_id, error = %d, "destroy after failed prepare");
            }
            return Err(e);
        }
        Ok(dir)
    }

    /// Kills and removes a container from any state. Unknown is not an error.
    pub async fn destroy(&self, container_id: &str) -> Result<(), ContainerizerError> {
        validate_id(container_id)?;
        let dir = self.runtime_dir(container_id);
        let name = match std::fs::read_to_string(dir.join(BACKEND_FILE)) {
            Ok(name) => name,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = std::fs::remove_dir_all(&dir);
                return Ok(());
            }
            Err(e) => return Err(ContainerizerError::io("read backend file", &dir)(e)),
        };
        let backend = self
            .backends
            .iter()
            .find(|b| b.name() == name.trim())
            .cloned()
            .ok_or_else(|| ContainerizerError::UnknownContainerizer(name.trim().to_string()))?;
        backend.destroy(container_id, &dir).await?;
        for isolator in backend.isolators().iter().rev() {
            isolator.cleanup(container_id).await?;
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ContainerizerError::io("remove runtime directory", &dir)(e)),
        }
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

/// Writes `data` to `path` through a temp file, fsync and rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), ContainerizerError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(ContainerizerError::io("create", &tmp))?;
    f.write_all(data).map_err(ContainerizerError::io("write", &tmp))?;
    f.sync_all().map_err(ContainerizerError::io("fsync", &tmp))?;
    std::fs::rename(&tmp, path).map_err(ContainerizerError::io("rename", path))
}
