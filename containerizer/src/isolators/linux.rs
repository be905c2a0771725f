//! Process hardening: `linux/capabilities`, `linux/seccomp`, `linux/nnp`
//! and `posix/rlimits`. Each only records what it wants in
//! `ContainerSpec.hardening`; the backends render it (the rust backend into
//! OCI `process.capabilities`, `linux.seccomp`, `process.noNewPrivileges`
//! and `process.rlimits`).

use crate::spec::CapabilitySets;
use crate::{ContainerConfig, ContainerSpec, ContainerizerError, Isolator, RLimit};
use async_trait::async_trait;

/// Docker's default capabilities: a root task may own files, bind low ports,
/// send signals and change its user, but cannot administer the host.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Paths hidden from the task (runc's and Mesos's lists together): a
/// directory gets an empty read-only tmpfs, a file `/dev/null`.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/key-users",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
];

/// Paths the task may read but not write (runc's default list).
pub const READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// System calls the default seccomp profile refuses with `EPERM`: those
/// Docker's default profile blocks for a container without extra
/// capabilities (kernel modules and kexec, mounts and namespaces, keyrings,
/// clocks, swap, reboot, bpf, perf, userfaultfd, handle-based opens,
/// accounting, the kernel log, NUMA policy, obsolete and 32-bit-only calls,
/// io_uring).
pub const SECCOMP_BLOCKED: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "get_mempolicy",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "mount",
    "mount_setattr",
    "move_mount",
    "move_pages",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "query_module",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "_sysctl",
    "sysfs",
    "syslog",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
];

/// System calls answered with `ENOSYS` so that libc falls back to a call
/// the profile can inspect: `clone3` passes its flags in memory, where a
/// seccomp filter cannot see them; `clone` then gets its namespace flags checked.
pub const SECCOMP_ENOSYS: &[&str] = &["clone3"];

/// `clone` flags that create namespaces; `clone` with any of them is refused.
pub const CLONE_NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// rlimit names as in `RLimitInfo` (without the `RLMT_` prefix).
pub const RLIMIT_KINDS: &[&str] = &[
    "AS", "CORE", "CPU", "DATA", "FSIZE", "LOCKS", "MEMLOCK", "MSGQUEUE", "NICE", "NOFILE", "NPROC", "RSS", "RTPRIO",
    "RTTIME", "SIGPENDING", "STACK",
];

/// Normalises a capability name to `CAP_*` upper case and checks that the
/// kernel has such a capability.
pub fn capability_name(name: &str) -> Result<String, ContainerizerError> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
    serde_json::from_value::<libcontainer::oci_spec::runtime::Capability>(serde_json::Value::String(full.clone()))
        .map_err(|_| ContainerizerError::InvalidSpec(format!("unknown capability '{name}'")))?;
    Ok(full)
}

fn capability_names(names: &[String]) -> Result<Vec<String>, ContainerizerError> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        let n = capability_name(n)?;
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

/// `linux/capabilities`: the task's effective and bounding capability sets
/// from `LinuxInfo`, Docker's default set otherwise.
#[derive(Debug, Clone, Default)]
pub struct LinuxCapabilities;

impl LinuxCapabilities {
    /// The isolator.
    pub fn new() -> Self {
        LinuxCapabilities
    }

    /// The sets `config` asks for, as Mesos computes them: an explicit
    /// effective set is also the bounding set unless one is given, and must
    /// lie within it; without either the default set applies to both.
    pub fn sets(config: &ContainerConfig) -> Result<CapabilitySets, ContainerizerError> {
        let linux = &config.linux;
        let default: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect();
        let effective = linux.effective_capabilities.as_deref().map(capability_names).transpose()?;
        let bounding = linux.bounding_capabilities.as_deref().map(capability_names).transpose()?;
        let sets = match (effective, bounding) {
            (None, None) => CapabilitySets { effective: default.clone(), bounding: default, ambient: false },
            (Some(e), None) => CapabilitySets { effective: e.clone(), bounding: e, ambient: true },
            (None, Some(b)) => {
                // Only a bounding set: the default set, clipped to it.
                let e = default.into_iter().filter(|c| b.contains(c)).collect();
                CapabilitySets { effective: e, bounding: b, ambient: false }
            }
            (Some(e), Some(b)) => {
                if let Some(extra) = e.iter().find(|c| !b.contains(c)) {
                    return Err(ContainerizerError::InvalidSpec(format!(
                        "effective capability {extra} is not in the bounding capabilities"
                    )));
                }
                CapabilitySets { effective: e, bounding: b, ambient: true }
            }
        };
        Ok(sets)
    }
}

#[async_trait]
impl Isolator for LinuxCapabilities {
    fn name(&self) -> &'static str {
        "linux/capabilities"
    }

    async fn prepare(&self, config: &ContainerConfig, spec: &mut ContainerSpec) -> Result<(), ContainerizerError> {
        spec.hardening.capabilities = Some(Self::sets(config)?);
        Ok(())
    }
}

/// `linux/seccomp`: the default profile, unless the task asked to run unconfined.
#[derive(Debug, Clone, Default)]
pub struct LinuxSeccomp;

impl LinuxSeccomp {
    /// The isolator.
    pub fn new() -> Self {
        LinuxSeccomp
    }
}

#[async_trait]
impl Isolator for LinuxSeccomp {
    fn name(&self) -> &'static str {
        "linux/seccomp"
    }

    async fn prepare(&self, config: &ContainerConfig, spec: &mut ContainerSpec) -> Result<(), ContainerizerError> {
        spec.hardening.seccomp = !config.linux.seccomp_unconfined;
        Ok(())
    }
}

/// `linux/nnp`: sets `no_new_privs`, so nothing the task execs gains privileges.
#[derive(Debug, Clone, Default)]
pub struct LinuxNnp;

impl LinuxNnp {
    /// The isolator.
    pub fn new() -> Self {
        LinuxNnp
    }
}

#[async_trait]
impl Isolator for LinuxNnp {
    fn name(&self) -> &'static str {
        "linux/nnp"
    }

    async fn prepare(&self, _config: &ContainerConfig, spec: &mut ContainerSpec) -> Result<(), ContainerizerError> {
        spec.hardening.no_new_privileges = true;
        Ok(())
    }
}

/// `posix/rlimits`: `ContainerInfo.rlimit_info` as the task's rlimits.
#[derive(Debug, Clone, Default)]
pub struct PosixRlimits;

impl PosixRlimits {
    /// The isolator.
    pub fn new() -> Self {
        PosixRlimits
    }

    /// Checks and normalises rlimits as Mesos does: the kind is known, soft
    /// and hard are both set (or both unset: unlimited), soft <= hard, and
    /// each kind appears once.
    pub fn validate(rlimits: &[RLimit]) -> Result<Vec<RLimit>, ContainerizerError> {
        let mut out: Vec<RLimit> = Vec::new();
        for r in rlimits {
            let upper = r.kind.trim().to_ascii_uppercase();
            let kind = upper.strip_prefix("RLMT_").unwrap_or(&upper).to_string();
            if !RLIMIT_KINDS.contains(&kind.as_str()) {
                return Err(ContainerizerError::InvalidSpec(format!("unknown rlimit '{}'", r.kind)));
            }
            match (r.soft, r.hard) {
                (Some(s), Some(h)) if s > h => {
                    return Err(ContainerizerError::InvalidSpec(format!(
                        "rlimit {kind}: soft limit {s} is above the hard limit {h}"
                    )))
                }
                (Some(_), None) | (None, Some(_)) => {
                    return Err(ContainerizerError::InvalidSpec(format!(
                        "rlimit {kind}: soft and hard limits must both be set, or neither (unlimited)"
                    )))
                }
                _ => {}
            }
            if out.iter().any(|o| o.kind == kind) {
                return Err(ContainerizerError::InvalidSpec(format!("rlimit {kind} is given more than once")));
            }
            out.push(RLimit { kind, soft: r.soft, hard: r.hard });
        }
        Ok(out)
    }
}

#[async_trait]
impl Isolator for PosixRlimits {
    fn name(&self) -> &'static str {
        "posix/rlimits"
    }

    async fn prepare(&self, config: &ContainerConfig, spec: &mut ContainerSpec) -> Result<(), ContainerizerError> {
        spec.hardening.rlimits = Self::validate(&config.linux.rlimits)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LinuxOptions;

    fn config(effective: Option<&[&str]>, bounding: Option<&[&str]>) -> ContainerConfig {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
        ContainerConfig {
            linux: LinuxOptions {
                effective_capabilities: effective.map(v),
                bounding_capabilities: bounding.map(v),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn capability_sets_follow_mesos() {
        let s = LinuxCapabilities::sets(&config(None, None)).unwrap();
        assert_eq!(s.effective.len(), 14);
        assert_eq!(s.effective, s.bounding);
        let s = LinuxCapabilities::sets(&config(Some(&["net_admin", "CAP_CHOWN"]), None)).unwrap();
        assert_eq!(s.effective, vec!["CAP_NET_ADMIN", "CAP_CHOWN"]);
        assert_eq!(s.bounding, s.effective);
        assert!(s.ambient);
        let s = LinuxCapabilities::sets(&config(None, Some(&["CAP_KILL", "CAP_SYS_ADMIN"]))).unwrap();
        assert_eq!(s.effective, vec!["CAP_KILL"]);
        let err = LinuxCapabilities::sets(&config(Some(&["CAP_SYS_ADMIN"]), Some(&["CAP_KILL"]))).unwrap_err();
        assert!(err.to_string().contains("CAP_SYS_ADMIN"), "{err}");
        let err = LinuxCapabilities::sets(&config(Some(&["CAP_NO_SUCH"]), None)).unwrap_err();
        assert!(err.to_string().contains("unknown capability"), "{err}");
    }

    #[test]
    fn rlimits_are_checked_as_mesos_does() {
        let r = |k: &str, s: Option<u64>, h: Option<u64>| RLimit { kind: k.into(), soft: s, hard: h };
        let ok = PosixRlimits::validate(&[r("RLMT_NOFILE", Some(10), Some(20)), r("core", None, None)]).unwrap();
        assert_eq!(ok, vec![r("NOFILE", Some(10), Some(20)), r("CORE", None, None)]);
        assert!(PosixRlimits::validate(&[r("NOFILE", Some(30), Some(20))]).is_err());
        assert!(PosixRlimits::validate(&[r("NOFILE", Some(30), None)]).is_err());
        assert!(PosixRlimits::validate(&[r("BOGUS", None, None)]).is_err());
        assert!(PosixRlimits::validate(&[r("CPU", None, None), r("RLMT_CPU", None, None)]).is_err());
    }
}
