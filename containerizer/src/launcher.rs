//! The executor's side: start a prepared container, signal it, wait for it.

use crate::{ContainerizerError, ExitStatus, Limitation};
use async_trait::async_trait;
use std::time::Duration;

/// A command the executor runs inside a running container (a COMMAND
/// check): in the container's namespaces, cgroups and root filesystem, as
/// its user, with the container's environment plus `env`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerCommand {
    /// The program and its arguments (`["/bin/sh", "-c", value]` for a shell command).
    pub argv: Vec<String>,
    /// Variables set on top of the container's own environment.
    pub env: Vec<(String, String)>,
}

/// How a command run in a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandOutcome {
    /// It ended with this status (its exit code, or 128 + signal).
    Exited(ExitStatus),
    /// It ran longer than its timeout and was killed.
    TimedOut,
}

/// Starts and supervises one prepared container.
#[async_trait]
pub trait Launcher: Send + Sync {
    /// Starts the container; returns once its first process runs.
    async fn start(&mut self) -> Result<(), ContainerizerError>;
    /// Sends `signal` to every process of the container.
    async fn signal(&self, signal: i32) -> Result<(), ContainerizerError>;
    /// Waits until the container's first process has ended.
    async fn wait(&mut self) -> Result<ExitStatus, ContainerizerError>;
    /// IP addresses of the container once started (for
    /// `TaskStatus.container_status.network_infos`); empty on the host network.
    async fn ip_addresses(&self) -> Vec<std::net::IpAddr> {
        Vec::new()
    }
    /// After `wait`: the limitation that ended the container, when its
    /// runtime reported one (docker's `OOMKilled`).
    fn limitation(&self) -> Option<Limitation> {
        None
    }
    /// Stops the container the way its runtime does on a kill: for docker
    /// `stop` with `grace` then SIGKILL. The default sends SIGTERM.
    async fn stop(&self, _grace: std::time::Duration) -> Result<(), ContainerizerError> {
        self.signal(libc::SIGTERM).await
    }
    /// The shortest grace period a stop gets on this runtime (docker's
    /// `--docker_stop_timeout`); the executor uses the longer of this and
    /// the task's own grace period.
    fn min_stop_grace(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
    /// The container's network namespace (`/proc/<pid>/ns/net` of its first
    /// process, opened), when it has one other than this process's: where
    /// the executor's HTTP and TCP checks must connect from. `None` on the
    /// host's network (the default).
    async fn network_namespace(&self) -> Option<std::fs::File> {
        None
    }
    /// Runs `command` inside the running container and waits for it, at
    /// most `timeout` (then it is killed and `TimedOut` returned).
    async fn run_in_container(&self, _command: &ContainerCommand, _timeout: Duration) -> Result<CommandOutcome, ContainerizerError> {
        Err(ContainerizerError::Launcher("this containerizer cannot run commands in its containers".into()))
    }
}

/// `/proc/<pid>/ns/net`, opened, when it is not this process's own network
/// namespace (the same inode).
pub fn foreign_network_namespace(pid: i32) -> Option<std::fs::File> {
    use std::os::unix::fs::MetadataExt;
    let theirs = std::fs::File::open(format!("/proc/{pid}/ns/net")).ok()?;
    let ours = std::fs::metadata("/proc/self/ns/net").ok()?;
    let meta = theirs.metadata().ok()?;
    (meta.ino() != ours.ino() || meta.dev() != ours.dev()).then_some(theirs)
}
