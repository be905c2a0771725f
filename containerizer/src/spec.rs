//! The backend-neutral container spec that isolators fill and backends render.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A Linux namespace a container gets of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Namespace {
    Pid,
    Mount,
    Ipc,
    Uts,
    Network,
}

/// A bind mount from the host into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: String,
    pub read_only: bool,
}

/// Root filesystem of the container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rootfs {
    /// The host's own filesystem (a task without an image, as in Mesos).
    #[default]
    Host,
    /// An overlay of unpacked image layers, listed bottom-first, with this
    /// container's own upper and work directories.
    Overlay { lowers: Vec<PathBuf>, upper: PathBuf, work: PathBuf, target: PathBuf },
    /// A directory that is already the complete rootfs (copy backend).
    Directory(PathBuf),
}

/// cgroup limits derived from the task's resources.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// cpu.shares (v1) — converted to cpu.weight on v2 by libcgroups.
    pub cpu_shares: Option<u64>,
    /// CFS quota in microseconds per `cpu_period_us`.
    pub cpu_quota_us: Option<i64>,
    pub cpu_period_us: Option<u64>,
    /// Hard memory limit in bytes.
    pub memory_limit_bytes: Option<i64>,
    /// Soft memory limit (reservation) in bytes.
    pub memory_reservation_bytes: Option<i64>,
    /// Maximum number of processes.
    pub pids_limit: Option<i64>,
}

/// A read-only mount of an image's layers (a `volume/image` volume).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageMount {
    /// Image reference, for messages.
    pub image: String,
    /// Unpacked layer directories, bottom first.
    pub layers: Vec<PathBuf>,
    /// Absolute path inside the container.
    pub target: String,
}

/// Capability sets of the container's process, as `CAP_*` names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilitySets {
    /// Effective and permitted set.
    pub effective: Vec<String>,
    /// Bounding set (a superset of `effective`).
    pub bounding: Vec<String>,
    /// Also grant `effective` as inheritable and ambient capabilities, so
    /// that a non-root user keeps them across exec (Mesos grants an
    /// explicitly asked effective set to every set).
    pub ambient: bool,
}

/// Process hardening the `linux/*` and `posix/rlimits` isolators ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hardening {
    /// `None` keeps the backend's default capability set.
    #[serde(default)]
    pub capabilities: Option<CapabilitySets>,
    /// Sets `no_new_privs`: setuid binaries and file capabilities grant nothing.
    #[serde(default)]
    pub no_new_privileges: bool,
    /// Applies the default seccomp profile (Docker's blocked syscalls).
    #[serde(default)]
    pub seccomp: bool,
    /// POSIX rlimits (`NOFILE`, ...); `None` soft and hard is unlimited.
    #[serde(default)]
    pub rlimits: Vec<crate::config::RLimit>,
}

/// What `disk/du` measures for a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskQuota {
    /// Directories whose usage counts (the sandbox, the rootfs's upper dir).
    pub paths: Vec<PathBuf>,
    /// The task's `disk` resource in bytes, when it has one.
    pub limit_bytes: Option<u64>,
}

/// What the container runs and how it is isolated; backends render this.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub container_id: String,
    /// Image reference when the task named one (docker backend pulls by it).
    pub image: Option<String>,
    pub rootfs: Rootfs,
    /// argv of the container's first process.
    pub args: Vec<String>,
    /// Environment, `KEY=VALUE` order preserved, later entries win.
    pub env: Vec<(String, String)>,
    pub working_dir: String,
    /// User to run as (`name`, `uid` or `uid:gid`); `None` keeps root.
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub namespaces: Vec<Namespace>,
    pub mounts: Vec<Mount>,
    pub limits: Limits,
    /// cgroup path relative to each hierarchy's root, e.g. `/mezzo/<id>`.
    pub cgroup_path: String,
    pub labels: BTreeMap<String, String>,
    /// Host files that receive the container's stdout and stderr.
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// Read-only image volumes, mounted after `mounts`.
    #[serde(default)]
    pub image_mounts: Vec<ImageMount>,
    /// Capabilities, no_new_privs, seccomp and rlimits.
    #[serde(default)]
    pub hardening: Hardening,
    /// Set by `disk/du`.
    #[serde(default)]
    pub disk: Option<DiskQuota>,
}

/// How a container's first process ended, as a raw wait status so that both
/// an exit code and a terminating signal can be told apart (as in Mesos).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus(pub i32);

impl ExitStatus {
    /// Status of a process that exited with `code`.
    pub fn from_code(code: i32) -> Self {
        ExitStatus((code & 0xff) << 8)
    }
    /// Status of a process killed by `signal`.
    pub fn from_signal(signal: i32) -> Self {
        ExitStatus(signal & 0x7f)
    }
    /// The exit code, when the process exited.
    pub fn code(&self) -> Option<i32> {
        libc::WIFEXITED(self.0).then(|| libc::WEXITSTATUS(self.0))
    }
    /// The terminating signal, when the process was killed by one.
    pub fn signal(&self) -> Option<i32> {
        libc::WIFSIGNALED(self.0).then(|| libc::WTERMSIG(self.0))
    }
    pub fn success(&self) -> bool {
        self.code() == Some(0)
    }
}

impl std::fmt::Display for ExitStatus {
    /// Mesos's `WSTRINGIFY`: "exited with status N" or "terminated with signal NAME".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(code) = self.code() {
            write!(f, "exited with status {code}")
        } else if let Some(sig) = self.signal() {
            let name = nix::sys::signal::Signal::try_from(sig)
                .map(|s| s.as_str().trim_start_matches("SIG").to_string())
                .unwrap_or_else(|_| sig.to_string());
            write!(f, "terminated with signal {name}")
        } else {
            write!(f, "ended with wait status {}", self.0)
        }
    }
}
