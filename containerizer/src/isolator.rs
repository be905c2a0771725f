//! The isolator trait, shared by both backends.

use crate::{ContainerConfig, ContainerSpec, ContainerizerError};
use async_trait::async_trait;

/// One aspect of a container's isolation (cgroups, namespaces, filesystem, ...).
///
/// `prepare` runs in a fixed order and contributes to the spec; `cleanup`
/// runs in reverse order when the container is destroyed and must succeed
/// for a container it never saw.
#[async_trait]
pub trait Isolator: Send + Sync {
    /// Mesos-style name, e.g. `cgroups/mem`.
    fn name(&self) -> &'static str;
    /// Contributes this isolator's part of the container spec.
    async fn prepare(&self, config: &ContainerConfig, spec: &mut ContainerSpec) -> Result<(), ContainerizerError>;
    /// Releases what `prepare` took for `container_id`.
    async fn cleanup(&self, _container_id: &str) -> Result<(), ContainerizerError> {
        Ok(())
    }
}
