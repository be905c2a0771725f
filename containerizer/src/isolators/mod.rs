//! Backend-neutral isolators: each contributes one aspect of a container's
//! isolation to the `ContainerSpec` (Mesos names: `cgroups/cpu`,
//! `cgroups/mem`, `namespaces/*`, `filesystem/linux`).

mod cgroups;
mod filesystem;
mod namespaces;

pub use cgroups::{cgroup_path, CgroupsCpu, CgroupsMem, CPU_SHARES_PER_CPU, MIN_CPU_SHARES, MIN_MEMORY_BYTES};
pub use filesystem::{resolve_command, FilesystemLinux, ImageRuntime, ProvisionedImage, Provisioner, OVERLAY_DIR};
pub use namespaces::Namespaces;
