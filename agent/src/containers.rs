//! The agent's seam to its containerizer: what the agent core asks of the
//! containers it runs. The composing `Containerizer` is the real one; unit
//! tests of the agent core put a fake in its place.

use async_trait::async_trait;
use mezzo_containerizer::{ContainerConfig, Containerizer, ContainerizerError, Limitation, ResourceLimits, Resources, RuntimeDir, Usage};
use std::collections::HashSet;

/// The containers of the agent's executors.
#[async_trait]
pub trait Containers: Send + Sync {
    /// Prepares a container (rootfs, cgroups, spec) for its executor to start.
    async fn prepare(&self, config: &ContainerConfig) -> Result<RuntimeDir, ContainerizerError>;
    /// Kills what runs in it and removes it; an unknown container is done.
    async fn destroy(&self, container_id: &str) -> Result<(), ContainerizerError>;
    /// Resolves when an isolator limits the container (OOM, disk quota).
    async fn watch(&self, container_id: &str) -> Result<Limitation, ContainerizerError>;
    /// New resources for a running container.
    async fn update(&self, container_id: &str, resources: &Resources, limits: &ResourceLimits) -> Result<(), ContainerizerError>;
    /// A usage sample.
    async fn usage(&self, container_id: &str) -> Result<Usage, ContainerizerError>;
    /// After an agent restart: takes back the checkpointed containers, destroys the rest.
    async fn recover(&self, checkpointed: &HashSet<String>) -> Result<Vec<String>, ContainerizerError>;
    /// The runtime directory of a container.
    fn runtime_dir(&self, container_id: &str) -> RuntimeDir;
}

#[async_trait]
impl Containers for Containerizer {
    async fn prepare(&self, config: &ContainerConfig) -> Result<RuntimeDir, ContainerizerError> {
        Containerizer::prepare(self, config).await
    }
    async fn destroy(&self, container_id: &str) -> Result<(), ContainerizerError> {
        Containerizer::destroy(self, container_id).await
    }
    async fn watch(&self, container_id: &str) -> Result<Limitation, ContainerizerError> {
        Containerizer::watch(self, container_id).await
    }
    async fn update(&self, container_id: &str, resources: &Resources, limits: &ResourceLimits) -> Result<(), ContainerizerError> {
        Containerizer::update(self, container_id, resources, limits).await
    }
    async fn usage(&self, container_id: &str) -> Result<Usage, ContainerizerError> {
        Containerizer::usage(self, container_id).await
    }
    async fn recover(&self, checkpointed: &HashSet<String>) -> Result<Vec<String>, ContainerizerError> {
        Containerizer::recover(self, checkpointed).await
    }
    fn runtime_dir(&self, container_id: &str) -> RuntimeDir {
        Containerizer::runtime_dir(self, container_id)
    }
}
