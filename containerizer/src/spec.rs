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
    /// `--container_logger=logrotate`: the output is copied into `stdout` and `stderr` and rotated by size;
    /// `None` (the `sandbox` logger): the container writes the files itself.
    #[serde(default)]
    pub log_rotation: Option<crate::log_rotate::LogRotation>,
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

/// What glibc's `strsignal` says of `sig` (in the C locale), as Mesos's
/// `WSTRINGIFY` reports a signal death: `Killed`, `Terminated`, ...
pub fn signal_description(sig: i32) -> String {
    const NAMES: [&str; 31] = [
        "Hangup",
        "Interrupt",
        "Quit",
        "Illegal instruction",
        "Trace/breakpoint trap",
        "Aborted",
        "Bus error",
        "Floating point exception",
        "Killed",
        "User defined signal 1",
        "Segmentation fault",
        "User defined signal 2",
        "Broken pipe",
        "Alarm clock",
        "Terminated",
        "Stack fault",
        "Child exited",
        "Continued",
        "Stopped (signal)",
        "Stopped",
        "Stopped (tty input)",
        "Stopped (tty output)",
        "Urgent I/O condition",
        "CPU time limit exceeded",
        "File size limit exceeded",
        "Virtual timer expired",
        "Profiling timer expired",
        "Window changed",
        "I/O possible",
        "Power failure",
        "Bad system call",
    ];
    match usize::try_from(sig) {
        Ok(n @ 1..=31) => NAMES[n - 1].to_string(),
        _ if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&sig) => format!("Real-time signal {}", sig - libc::SIGRTMIN()),
        _ => format!("Unknown signal {sig}"),
    }
}

impl std::fmt::Display for ExitStatus {
    /// Mesos's `WSTRINGIFY`: "exited with status N" or "terminated with signal NAME".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(code) = self.code() {
            write!(f, "exited with status {code}")
        } else if let Some(sig) = self.signal() {
            write!(f, "terminated with signal {}", signal_description(sig))
        } else {
            write!(f, "ended with wait status {}", self.0)
        }
    }
}

#[cfg(test)]
mod exit_status_tests {
    use super::*;

    #[test]
    fn signal_deaths_are_named_as_strsignal_names_them() {
        assert_eq!(ExitStatus::from_signal(libc::SIGKILL).to_string(), "terminated with signal Killed");
        assert_eq!(ExitStatus::from_signal(libc::SIGTERM).to_string(), "terminated with signal Terminated");
        assert_eq!(ExitStatus::from_signal(libc::SIGSEGV).to_string(), "terminated with signal Segmentation fault");
        assert_eq!(ExitStatus::from_code(3).to_string(), "exited with status 3");
        assert_eq!(signal_description(libc::SIGRTMIN() + 2), "Real-time signal 2");
        assert_eq!(signal_description(99), "Unknown signal 99");
    }
}
