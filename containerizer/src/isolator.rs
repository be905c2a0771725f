//! The isolator trait, shared by both backends.

use crate::{ContainerConfig, ContainerSpec, ContainerizerError, Resources, ResourceLimits};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Why a container was ended by an isolator (Mesos `ContainerLimitation`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limitation {
    /// Which Mesos `TaskStatus.Reason` this maps to.
    pub reason: LimitationReason,
    /// Resource names for `TaskStatus.limitation.resources` (`mem`, `disk`, ...).
    pub resources: Vec<String>,
    /// Human readable, for `TaskStatus.message`.
    pub message: String,
}

/// The `REASON_CONTAINER_LIMITATION*` reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LimitationReason {
    /// `REASON_CONTAINER_LIMITATION`
    Generic,
    /// `REASON_CONTAINER_LIMITATION_MEMORY`
    Memory,
    /// `REASON_CONTAINER_LIMITATION_DISK`
    Disk,
}

/// A sample of a container's usage, in Mesos `ResourceStatistics` terms
/// (field names match; the agent converts to the proto).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Seconds since the epoch.
    pub timestamp: f64,
    pub processes: Option<u32>,
    pub threads: Option<u32>,
    pub cpus_user_time_secs: Option<f64>,
    pub cpus_system_time_secs: Option<f64>,
    pub cpus_limit: Option<f64>,
    pub cpus_nr_periods: Option<u32>,
    pub cpus_nr_throttled: Option<u32>,
    pub cpus_throttled_time_secs: Option<f64>,
    pub mem_total_bytes: Option<u64>,
    pub mem_rss_bytes: Option<u64>,
    pub mem_cache_bytes: Option<u64>,
    pub mem_limit_bytes: Option<u64>,
    pub mem_soft_limit_bytes: Option<u64>,
    pub disk_limit_bytes: Option<u64>,
    pub disk_used_bytes: Option<u64>,
    pub net_rx_bytes: Option<u64>,
    pub net_tx_bytes: Option<u64>,
    pub net_rx_packets: Option<u64>,
    pub net_tx_packets: Option<u64>,
}

/// One aspect of a container's isolation (cgroups, namespaces, filesystem, ...).
///
/// The containerizer calls, per container: `prepare` (in the fixed isolator
/// order; contributes to the spec), `isolate` once the container's init pid
/// is known, `watch` for its whole life (a returned limitation ends the
/// container), `update` and `usage` while it runs, and `cleanup` (in reverse
/// order) when it is destroyed. After an agent restart `recover` is called
/// once with the containers that are still known. Every method must succeed
/// for a container the isolator never saw.
#[async_trait]
pub trait Isolator: Send + Sync {
    /// Mesos-style name, e.g. `cgroups/mem`.
    fn name(&self) -> &'static str;
    /// Takes back the state of containers that survived an agent restart
    /// (their specs); anything of this isolator's not named is an orphan to clean up.
    async fn recover(&self, _containers: &[ContainerSpec]) -> Result<(), ContainerizerError> {
        Ok(())
    }
    /// Contributes this isolator's part of the container spec.
    async fn prepare(&self, config: &ContainerConfig, spec: &mut ContainerSpec) -> Result<(), ContainerizerError>;
    /// The container's init runs as host pid `pid`.
    async fn isolate(&self, _spec: &ContainerSpec, _pid: i32) -> Result<(), ContainerizerError> {
        Ok(())
    }
    /// Resolves when the container exceeds what this isolator enforces;
    /// never resolves otherwise (the default).
    async fn watch(&self, _spec: &ContainerSpec) -> Result<Limitation, ContainerizerError> {
        std::future::pending().await
    }
    /// Applies new resources to a running container.
    async fn update(
        &self,
        _spec: &ContainerSpec,
        _resources: &Resources,
        _limits: &ResourceLimits,
    ) -> Result<(), ContainerizerError> {
        Ok(())
    }
    /// Adds this isolator's statistics to `usage`.
    async fn usage(&self, _spec: &ContainerSpec, _usage: &mut Usage) -> Result<(), ContainerizerError> {
        Ok(())
    }
    /// Releases what `prepare` took for `container_id`.
    async fn cleanup(&self, _container_id: &str) -> Result<(), ContainerizerError> {
        Ok(())
    }
}
