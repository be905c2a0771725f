//! The executor's side: start a prepared container, signal it, wait for it.

use crate::{ContainerizerError, ExitStatus, Limitation};
use async_trait::async_trait;

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
}
