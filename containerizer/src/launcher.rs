//! The executor's side: start a prepared container, signal it, wait for it.

use crate::{ContainerizerError, ExitStatus};
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
}
