//! The backend trait (renders a spec into something runnable and destroys
//! it), and the registry of backends: [`BackendKind`] names each one, builds
//! it from its options and makes the launcher of its containers. Nothing
//! else matches on backend names.

use crate::docker::{DockerBackend, DockerBackendConfig, DockerLauncher, ImageSource};
use crate::rust::{RustBackend, RustBackendConfig, RustLauncher};
use crate::{ContainerSpec, ContainerType, ContainerizerError, Isolator, Launcher, RuntimeDir};
use async_trait::async_trait;
use std::path::Path;
use std::sync::Arc;

/// A containerizer backend (`rust` on libcontainer, `docker` on the engine).
#[async_trait]
pub trait Backend: Send + Sync {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;
    /// The name used in `--containerizers` (`rust`, `docker`).
    fn name(&self) -> &'static str {
        self.kind().name()
    }
    /// Whether this backend runs containers of this type.
    fn accepts(&self, kind: ContainerType) -> bool;
    /// Isolators that prepare this backend's containers, in prepare order.
    fn isolators(&self) -> Vec<Arc<dyn Isolator>>;
    /// Provisions what the spec needs and renders it into `runtime_dir`, so
    /// that a `Launcher` made from that directory can start it.
    async fn prepare(&self, spec: &ContainerSpec, runtime_dir: &RuntimeDir) -> Result<(), ContainerizerError>;
    /// Kills every process of the container and removes everything it held.
    /// An unknown or already destroyed container is not an error.
    async fn destroy(&self, container_id: &str, runtime_dir: &RuntimeDir) -> Result<(), ContainerizerError>;
    /// After an agent restart: `known` are the specs of this backend's
    /// containers that a checkpoint still names; anything else this backend
    /// finds of its own (cgroups under its root, `mesos-*` docker containers)
    /// is an orphan and is destroyed.
    async fn recover(&self, _known: &[ContainerSpec]) -> Result<(), ContainerizerError> {
        Ok(())
    }
    /// Resolves with a limitation the backend's runtime itself recorded for
    /// the container in `runtime_dir` (beside the isolators' own watches);
    /// never resolves otherwise (the default).
    async fn watch(&self, _spec: &ContainerSpec, _runtime_dir: &RuntimeDir) -> Result<crate::Limitation, ContainerizerError> {
        std::future::pending().await
    }
}

/// The kinds of backend, as `--containerizers` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// `rust` (alias `mesos`): Mesos-type containers on libcontainer.
    Rust,
    /// `docker`: Docker-type containers on the Docker Engine.
    Docker,
}

/// What backends are built from: each kind takes its own part.
#[derive(Clone, Default)]
pub struct BackendOptions {
    pub rust: RustBackendConfig,
    pub docker: DockerBackendConfig,
}

impl BackendKind {
    /// Every kind.
    pub const ALL: [BackendKind; 2] = [BackendKind::Rust, BackendKind::Docker];
    /// The names `--containerizers` accepts, for messages.
    pub const KNOWN: &'static str = "rust, mesos, docker";

    /// The backend's own name (`rust`, `docker`), as recorded in runtime directories.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Rust => "rust",
            BackendKind::Docker => "docker",
        }
    }

    /// The kind a name in `--containerizers` means (`mesos` is `rust`).
    pub fn from_name(name: &str) -> Option<BackendKind> {
        match name {
            "rust" | "mesos" => Some(BackendKind::Rust),
            "docker" => Some(BackendKind::Docker),
            _ => None,
        }
    }

    /// Parses `--containerizers`: comma-separated names in order of
    /// preference; a name given twice counts once. An unknown name, or
    /// none at all, is an error naming the flag.
    pub fn parse_list(value: &str) -> Result<Vec<BackendKind>, ContainerizerError> {
        let mut kinds = Vec::new();
        for name in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let kind = BackendKind::from_name(name).ok_or_else(|| ContainerizerError::UnknownContainerizer(name.to_string()))?;
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        if kinds.is_empty() {
            return Err(ContainerizerError::NoContainerizer);
        }
        Ok(kinds)
    }

    /// Whether containers of this kind live in cgroups under `--cgroups_root`.
    pub fn uses_cgroups_root(self) -> bool {
        self == BackendKind::Rust
    }

    /// Whether this kind of backend gets images from mezzo's image store
    /// (the docker backend only with `--docker_image_source=store`).
    pub fn uses_image_store(self, docker_source: ImageSource) -> bool {
        match self {
            BackendKind::Rust => true,
            BackendKind::Docker => docker_source == ImageSource::Store,
        }
    }

    /// Builds the backend of this kind from its part of `options`.
    pub async fn create(self, options: &BackendOptions) -> Result<Arc<dyn Backend>, ContainerizerError> {
        Ok(match self {
            BackendKind::Rust => Arc::new(RustBackend::new(options.rust.clone())?),
            BackendKind::Docker => Arc::new(DockerBackend::new(options.docker.clone()).await?),
        })
    }

    /// The launcher of a container this kind of backend prepared in
    /// `runtime_dir`; `launcher_dir` is where mezzo's helper binaries are.
    pub fn launcher(self, runtime_dir: &RuntimeDir, launcher_dir: &Path) -> Result<Box<dyn Launcher>, ContainerizerError> {
        let spec = runtime_dir.read_spec()?;
        Ok(match self {
            BackendKind::Rust => Box::new(RustLauncher::new(spec, runtime_dir.clone(), launcher_dir)?),
            BackendKind::Docker => Box::new(DockerLauncher::new(spec, runtime_dir)?),
        })
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for BackendKind {
    type Err = ContainerizerError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        BackendKind::from_name(name.trim()).ok_or_else(|| ContainerizerError::UnknownContainerizer(name.trim().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerizers_parse_once_into_kinds() {
        use BackendKind::*;
        assert_eq!(BackendKind::parse_list("rust").unwrap(), vec![Rust]);
        assert_eq!(BackendKind::parse_list("mesos").unwrap(), vec![Rust]);
        assert_eq!(BackendKind::parse_list("docker,rust").unwrap(), vec![Docker, Rust]);
        assert_eq!(BackendKind::parse_list(" rust , docker ,").unwrap(), vec![Rust, Docker]);
        assert_eq!(BackendKind::parse_list("mesos,docker,rust").unwrap(), vec![Rust, Docker], "an alias counts once");
        for kind in BackendKind::ALL {
            assert_eq!(kind.name().parse::<BackendKind>().unwrap(), kind);
            assert_eq!(BackendKind::from_name(&kind.to_string()), Some(kind));
        }
        let e = BackendKind::parse_list("rust,lxc").unwrap_err().to_string();
        assert!(e.contains("'lxc'") && e.contains("--containerizers") && e.contains("rust, mesos, docker"), "{e}");
        let e = BackendKind::parse_list(" , ").unwrap_err().to_string();
        assert!(e.contains("--containerizers"), "{e}");
        assert!("Rust".parse::<BackendKind>().is_err(), "names are lower case, as in Mesos");
        assert!(Rust.uses_cgroups_root() && !Docker.uses_cgroups_root());
        assert!(Rust.uses_image_store(ImageSource::Engine) && !Docker.uses_image_store(ImageSource::Engine));
        assert!(Docker.uses_image_store(ImageSource::Store));
    }
}
