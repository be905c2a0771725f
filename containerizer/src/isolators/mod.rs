//! Backend-neutral isolators: each contributes one aspect of a container's
//! isolation to the `ContainerSpec` (Mesos names: `cgroups/cpu`,
//! `cgroups/mem`, `namespaces/*`, `filesystem/linux`), and the `--isolation`
//! registry that builds them from their names.

mod cgroups;
mod disk;
mod filesystem;
mod linux;
mod namespaces;
mod volumes;

pub use crate::cgroupfs::{procs_of, write_file, CgroupFs, CgroupVersion, DEFAULT_CGROUPFS_ROOT};
pub use cgroups::{cgroup_path, oom_killed, oom_limitation, CgroupsIsolator, CgroupsOptions, Controller, DEFAULT_MAX_PIDS};
pub use filesystem::{resolve_command, FilesystemLinux, ImageRuntime, ProvisionedImage, Provisioner};
pub use linux::{
    capability_name, LinuxCapabilities, LinuxNnp, LinuxSeccomp, PosixRlimits, CLONE_NAMESPACE_FLAGS, DEFAULT_CAPABILITIES,
    MASKED_PATHS, READONLY_PATHS, RLIMIT_KINDS, SECCOMP_BLOCKED, SECCOMP_ENOSYS,
};
pub use disk::{disk_usage, format_bytes, DiskDu, DEFAULT_DISK_WATCH_INTERVAL, MAX_DU_ENTRIES};
pub use namespaces::Namespaces;
pub use volumes::{volume_target, VolumeHostPath, VolumeImage, VolumeSandboxPath};

use crate::{ContainerizerError, Isolator};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// `--isolation` when the flag is not given.
pub const DEFAULT_ISOLATION: &str = "filesystem/linux,cgroups/cpu,cgroups/mem,cgroups/pids,namespaces/pid,namespaces/ipc,\
namespaces/uts,volume/host_path,volume/sandbox_path,volume/image,linux/capabilities,linux/nnp,linux/seccomp,posix/rlimits";

/// Every isolator name `--isolation` accepts, in the fixed order in which
/// they prepare (Mesos's table order: filesystem, runtime, volumes, disk,
/// seccomp); cleanup runs in reverse.
pub const KNOWN_ISOLATORS: &[&str] = &[
    "filesystem/linux",
    "posix/cpu",
    "posix/mem",
    "posix/rlimits",
    "cgroups/cpu",
    "cgroups/mem",
    "cgroups/pids",
    "cgroups/blkio",
    "linux/capabilities",
    "linux/nnp",
    "namespaces/ipc",
    "namespaces/pid",
    "namespaces/uts",
    "volume/sandbox_path",
    "volume/host_path",
    "volume/image",
    "disk/du",
    "linux/seccomp",
];

/// Mesos's shorthand names and what they stand for.
const ALIASES: &[(&str, &[&str])] = &[
    ("cgroups", &["cgroups/cpu", "cgroups/mem"]),
    ("cgroups/all", &["cgroups/cpu", "cgroups/mem", "cgroups/pids", "cgroups/blkio"]),
    ("process", &["posix/cpu", "posix/mem"]),
    ("posix/disk", &["disk/du"]),
];

/// What the isolators named in `--isolation` are built from.
#[derive(Clone)]
pub struct IsolatorContext {
    /// Parent of the containers' runtime directories.
    pub runtime_root: PathBuf,
    /// Provisions images for `filesystem/linux`; `None` rejects tasks with one.
    pub provisioner: Option<Arc<dyn Provisioner>>,
    /// cgroupfs, `--cgroups_root`, `--cgroups_enable_cfs`, pids.max.
    pub cgroups: CgroupsOptions,
    /// `--container_disk_watch_interval` (`disk/du`).
    pub disk_watch_interval: std::time::Duration,
    /// `--enforce_container_disk_quota` (`disk/du`).
    pub enforce_disk_quota: bool,
    /// `--image_provisioner_backend=copy` (`filesystem/linux`).
    pub copy_rootfs: bool,
}

impl IsolatorContext {
    /// A context with the default for everything but the paths, the
    /// provisioner and the cgroups options.
    pub fn new(runtime_root: PathBuf, provisioner: Option<Arc<dyn Provisioner>>, cgroups: CgroupsOptions) -> Self {
        IsolatorContext {
            runtime_root,
            provisioner,
            cgroups,
            disk_watch_interval: DEFAULT_DISK_WATCH_INTERVAL,
            enforce_disk_quota: false,
            copy_rootfs: false,
        }
    }
}

/// Splits an `--isolation` value into names.
pub fn parse_isolation(flag: &str) -> Vec<String> {
    flag.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

/// Checks isolator names as `--isolation` gives them (Mesos's names and
/// aliases, each once), so that the agent can refuse a bad flag at start.
pub fn check_isolation(names: &[String]) -> Result<(), ContainerizerError> {
    resolve_names(names).map(|_| ())
}

/// The isolators `names` stand for (aliases expanded), by position in `KNOWN_ISOLATORS`.
fn resolve_names(names: &[String]) -> Result<BTreeMap<usize, &'static str>, ContainerizerError> {
    let mut seen = std::collections::BTreeSet::new();
    // Position in KNOWN_ISOLATORS -> name.
    let mut wanted: BTreeMap<usize, &'static str> = BTreeMap::new();
    for raw in names {
        let name = raw.trim();
        if name.is_empty() {
            continue;
        }
        if !seen.insert(name.to_string()) {
            return Err(ContainerizerError::Other(format!("isolator '{name}' is listed more than once")));
        }
        let expanded: Vec<&str> = match ALIASES.iter().find(|(alias, _)| *alias == name) {
            Some((_, targets)) => targets.to_vec(),
            None => vec![name],
        };
        for n in expanded {
            let pos = KNOWN_ISOLATORS.iter().position(|k| *k == n).ok_or_else(|| ContainerizerError::UnknownIsolator {
                name: n.to_string(),
                known: KNOWN_ISOLATORS.join(","),
            })?;
            wanted.insert(pos, KNOWN_ISOLATORS[pos]);
        }
    }
    Ok(wanted)
}

/// Builds the isolators `names` ask for, in the fixed prepare order of
/// `KNOWN_ISOLATORS` whatever the order of the names. All `cgroups/*` (and
/// `posix/cpu`, `posix/mem`) share one cgroups isolator, which is there even
/// when none is named: every container gets a cgroup of its own. An unknown
/// or repeated name is an error.
pub fn isolators_from_names(names: &[String], ctx: &IsolatorContext) -> Result<Vec<Arc<dyn Isolator>>, ContainerizerError> {
    let wanted = resolve_names(names)?;

    let mut controllers = Vec::new();
    for name in wanted.values() {
        controllers.extend(match *name {
            "cgroups/cpu" => Some(Controller::Cpu),
            "cgroups/mem" => Some(Controller::Mem),
            "cgroups/pids" => Some(Controller::Pids),
            "cgroups/blkio" => Some(Controller::Blkio),
            "posix/cpu" => Some(Controller::CpuAccounting),
            "posix/mem" => Some(Controller::MemAccounting),
            _ => None,
        });
    }
    let mut cgroups = Some(Arc::new(CgroupsIsolator::new(ctx.cgroups.clone(), controllers)) as Arc<dyn Isolator>);
    let cgroups_slot = KNOWN_ISOLATORS.iter().position(|k| k.starts_with("cgroups/")).unwrap_or(0);

    let mut isolators: Vec<Arc<dyn Isolator>> = Vec::new();
    for (pos, name) in wanted {
        if pos >= cgroups_slot {
            isolators.extend(cgroups.take());
        }
        let isolator: Arc<dyn Isolator> = match name {
            "filesystem/linux" => {
                Arc::new(FilesystemLinux::new(ctx.runtime_root.clone(), ctx.provisioner.clone()).with_copy_backend(ctx.copy_rootfs))
            }
            "posix/cpu" | "posix/mem" | "cgroups/cpu" | "cgroups/mem" | "cgroups/pids" | "cgroups/blkio" => continue,
            "namespaces/pid" => Arc::new(Namespaces::pid()),
            "namespaces/ipc" => Arc::new(Namespaces::ipc()),
            "namespaces/uts" => Arc::new(Namespaces::uts()),
            // --- hardening isolators (linux.rs) ---
            "linux/capabilities" => Arc::new(LinuxCapabilities::new()),
            "linux/nnp" => Arc::new(LinuxNnp::new()),
            "linux/seccomp" => Arc::new(LinuxSeccomp::new()),
            "posix/rlimits" => Arc::new(PosixRlimits::new()),
            "volume/host_path" => Arc::new(VolumeHostPath::new()),
            "volume/sandbox_path" => Arc::new(VolumeSandboxPath::new()),
            "volume/image" => Arc::new(VolumeImage::new(ctx.provisioner.clone())),
            "disk/du" => Arc::new(DiskDu::new(ctx.disk_watch_interval, ctx.enforce_disk_quota)),
            other => return Err(ContainerizerError::Other(format!("isolator {other} has no constructor"))),
        };
        isolators.push(isolator);
    }
    isolators.extend(cgroups.take());
    Ok(isolators)
}
