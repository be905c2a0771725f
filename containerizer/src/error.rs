//! Errors of the containerizer.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ContainerizerError {
    /// no enabled containerizer accepts the task
    #[error("no enabled containerizer ({enabled}) supports containers of type {kind}")]
    Unsupported { kind: String, enabled: String },
    /// a name in `--containerizers` that no backend has
    #[error("unknown containerizer '{0}' in --containerizers (known: rust, mesos, docker)")]
    UnknownContainerizer(String),
    #[error("--containerizers names no containerizer")]
    NoContainerizer,
    /// a container made by a backend that is not enabled now
    #[error("container {id} belongs to the {kind} containerizer, which --containerizers does not enable")]
    DisabledContainerizer { id: String, kind: crate::BackendKind },
    /// a file of a container's runtime directory that is too large or unreadable
    #[error("runtime file {path}: {reason}")]
    RuntimeFile { path: PathBuf, reason: String },
    #[error("failed to provision image '{image}': {reason}")]
    Image { image: String, reason: String },
    #[error("invalid container spec: {0}")]
    InvalidSpec(String),
    #[error("container {0} is not known")]
    UnknownContainer(String),
    #[error("docker: {0}")]
    Docker(String),
    /// The Docker engine went away while a container ran and did not come
    /// back in time: the container's end is not known.
    #[error("docker: {0}")]
    EngineGone(String),
    #[error("launcher: {0}")]
    Launcher(String),
    #[error("{context} ({path}): {source}")]
    Io { context: &'static str, path: PathBuf, #[source] source: std::io::Error },
    /// a name in `--isolation` that no isolator has
    #[error("unknown isolator '{name}' in --isolation (known: {known})")]
    UnknownIsolator { name: String, known: String },
    /// `destroy` ended a container while it was being prepared
    #[error("container {0} was destroyed while it was being prepared")]
    DestroyedWhilePreparing(String),
    #[error("{0}")]
    Other(String),
}

impl ContainerizerError {
    /// Wraps an I/O error with what was being done and on which path.
    pub fn io(context: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ContainerizerError::Io { context, path, source }
    }
}
