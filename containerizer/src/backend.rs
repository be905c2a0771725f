//! The backend trait: renders a spec into something runnable and destroys it.

use crate::{ContainerSpec, ContainerType, ContainerizerError, Isolator};
use async_trait::async_trait;
use std::path::Path;
use std::sync::Arc;

/// A containerizer backend (`rust` on libcontainer, `docker` on the engine).
#[async_trait]
pub trait Backend: Send + Sync {
    /// The name used in `--containerizers` (`rust`, `docker`).
    fn name(&self) -> &'static str;
    /// Whether this backend runs containers of this type.
    fn accepts(&self, kind: ContainerType) -> bool;
    /// Isolators that prepare this backend's containers, in prepare order.
    fn isolators(&self) -> Vec<Arc<dyn Isolator>>;
    /// Provisions what the spec needs and renders it under `runtime_dir`, so
    /// that a `Launcher` made from that directory can start it.
    async fn prepare(&self, spec: &ContainerSpec, runtime_dir: &Path) -> Result<(), ContainerizerError>;
    /// Kills every process of the container and removes everything it held.
    /// An unknown or already destroyed container is not an error.
    async fn destroy(&self, container_id: &str, runtime_dir: &Path) -> Result<(), ContainerizerError>;
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
    async fn watch(&self, _spec: &ContainerSpec, _runtime_dir: &Path) -> Result<crate::Limitation, ContainerizerError> {
        std::future::pending().await
    }
}
