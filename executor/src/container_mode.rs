//! `mezzo-executor` in container mode (`MEZZO_EXECUTOR_MODE=container`):
//! the supervisor of a custom executor's container. The agent prepares the
//! container (its first process is the framework's executor, which speaks
//! to the agent itself) and starts this process in its own session; it
//! starts the container, passes SIGTERM on, waits for the container's end
//! and records the exit status in the runtime directory, where the agent
//! reads it (for the scheduler's FAILURE event) also after a restart.

use mezzo_containerizer::{ContainerizerError, ExitStatus, RuntimeDir};
use std::path::Path;
use tokio::signal::unix::{signal, SignalKind};

/// The environment variable that selects this mode.
pub const MODE_VAR: &str = "MEZZO_EXECUTOR_MODE";

/// Errors of the container mode.
#[derive(Debug, thiserror::Error)]
pub enum ContainerModeError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error(transparent)]
    Container(#[from] ContainerizerError),
    #[error("cannot install a signal handler: {0}")]
    Signal(std::io::Error),
}

/// Starts the container prepared in `runtime_dir` and supervises it to its
/// end; returns its exit status (also recorded in `runtime_dir`).
pub async fn supervise(runtime_dir: &Path, launcher_dir: &Path) -> Result<ExitStatus, ContainerModeError> {
    let dir = RuntimeDir::new(runtime_dir);
    let mut launcher = mezzo_containerizer::launcher(runtime_dir, launcher_dir)?;
    let mut term = signal(SignalKind::terminate()).map_err(ContainerModeError::Signal)?;
    launcher.start().await?;
    tracing::info!(runtime_dir = %runtime_dir.display(), "the executor's container runs");
    let status = loop {
        tokio::select! {
            status = launcher.wait() => break status?,
            _ = term.recv() => {
                tracing::info!("SIGTERM: passing it to the executor's container");
                if let Err(e) = launcher.signal(libc::SIGTERM).await {
                    tracing::warn!(error = %e, "could not signal the container");
                }
            }
        }
    };
    // The rust backend's supervisor records the status itself; a docker
    // container's is recorded here.
    if !dir.has_exit_status() {
        dir.write_exit_status(status)?;
    }
    tracing::info!(status = status.0, "the executor's container ended");
    Ok(status)
}

/// The process exit code that mirrors `status` (128 + signal for a signal).
pub fn exit_code(status: ExitStatus) -> i32 {
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1)
}
