//! `cgroups/cpu` and `cgroups/mem`: limits from the task's resources, with
//! Mesos's arithmetic, in the container's own cgroup `/<root>/<id>`.

use crate::{ContainerConfig, ContainerSpec, ContainerizerError, Isolator};
use async_trait::async_trait;

/// cpu.shares per requested cpu (Mesos `CPU_SHARES_PER_CPU`).
pub const CPU_SHARES_PER_CPU: f64 = 1024.0;
/// Smallest cpu.shares the kernel accepts (Mesos `MIN_CPU_SHARES`).
pub const MIN_CPU_SHARES: u64 = 2;
/// Smallest memory limit Mesos sets (`MIN_MEMORY`, 32 MiB).
pub const MIN_MEMORY_BYTES: i64 = 32 * 1024 * 1024;

/// The container's cgroup, relative to each hierarchy's root.
pub fn cgroup_path(cgroups_root: &str, container_id: &str) -> String {
    let root = cgroups_root.trim_matches('/');
    if root.is_empty() {
        format!("/{container_id}")
    } else {
        format!("/{root}/{container_id}")
    }
}

/// `cgroups/cpu`: cpu.shares = max(2, 1024 × cpus).
#[derive(Debug, Clone)]
pub struct CgroupsCpu {
    cgroups_root: String,
}

impl CgroupsCpu {
    /// Puts containers under `/<cgroups_root>/<id>` (Mesos `--cgroups_root`).
    pub fn new(cgroups_root: impl Into<String>) -> Self {
        CgroupsCpu { cgroups_root: cgroups_root.into() }
    }
}

#[async_trait]
impl Isolator for CgroupsCpu {
    fn name(&self) -> &'static str {
        "cgroups/cpu"
    }

    async fn prepare(&self, config: &ContainerConfig, spec: &mut ContainerSpec) -> Result<(), ContainerizerError> {
        spec.cgroup_path = cgroup_path(&self.cgroups_root, &config.container_id);
        if let Some(cpus) = config.resources.cpus {
            if !cpus.is_finite() || cpus < 0.0 {
                return Err(ContainerizerError::InvalidSpec(format!("invalid cpus {cpus}")));
            }
            spec.limits.cpu_shares = Some(MIN_CPU_SHARES.max((cpus * CPU_SHARES_PER_CPU) as u64));
        }
        Ok(())
    }
}

/// `cgroups/mem`: hard limit and soft limit (reservation) both
/// max(mem, 32 MiB), as Mesos does for a task with a request and no limit.
#[derive(Debug, Clone)]
pub struct CgroupsMem {
    cgroups_root: String,
}

impl CgroupsMem {
    /// Puts containers under `/<cgroups_root>/<id>` (Mesos `--cgroups_root`).
    pub fn new(cgroups_root: impl Into<String>) -> Self {
        CgroupsMem { cgroups_root: cgroups_root.into() }
    }
}

#[async_trait]
impl Isolator for CgroupsMem {
    fn name(&self) -> &'static str {
        "cgroups/mem"
    }

    async fn prepare(&self, config: &ContainerConfig, spec: &mut ContainerSpec) -> Result<(), ContainerizerError> {
        spec.cgroup_path = cgroup_path(&self.cgroups_root, &config.container_id);
        if let Some(mem) = config.resources.mem_mb {
            if !mem.is_finite() || mem < 0.0 {
                return Err(ContainerizerError::InvalidSpec(format!("invalid mem {mem}")));
            }
            let bytes = MIN_MEMORY_BYTES.max((mem * 1024.0 * 1024.0) as i64);
            spec.limits.memory_limit_bytes = Some(bytes);
            spec.limits.memory_reservation_bytes = Some(bytes);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Command, ContainerType, Resources};

    fn config(cpus: Option<f64>, mem_mb: Option<f64>) -> ContainerConfig {
        ContainerConfig {
            container_id: "c1".into(),
            container_type: ContainerType::Mesos,
            image: None,
            command: Command::default(),
            resources: Resources { cpus, mem_mb, disk_mb: None, ports: vec![] },
            sandbox: "/tmp/sb".into(),
            hostname: None,
            labels: Default::default(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn cpu_shares_follow_mesos() {
        for (cpus, shares) in [(0.5, 512), (2.0, 2048), (0.001, 2), (0.1, 102)] {
            let c = config(Some(cpus), None);
            let mut spec = ContainerSpec::new(&c);
            CgroupsCpu::new("mezzo").prepare(&c, &mut spec).await.unwrap();
            assert_eq!(spec.limits.cpu_shares, Some(shares), "cpus {cpus}");
            assert_eq!(spec.cgroup_path, "/mezzo/c1");
        }
    }

    #[tokio::test]
    async fn memory_has_mesos_minimum() {
        let c = config(None, Some(16.0));
        let mut spec = ContainerSpec::new(&c);
        CgroupsMem::new("/a/b/").prepare(&c, &mut spec).await.unwrap();
        assert_eq!(spec.limits.memory_limit_bytes, Some(MIN_MEMORY_BYTES));
        assert_eq!(spec.cgroup_path, "/a/b/c1");
        let c = config(None, Some(64.0));
        let mut spec = ContainerSpec::new(&c);
        CgroupsMem::new("mezzo").prepare(&c, &mut spec).await.unwrap();
        assert_eq!(spec.limits.memory_limit_bytes, Some(64 << 20));
        assert_eq!(spec.limits.memory_reservation_bytes, Some(64 << 20));
    }
}
