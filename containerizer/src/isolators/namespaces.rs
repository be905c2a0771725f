//! `namespaces/pid`, `namespaces/ipc`, `namespaces/uts` (and the mount
//! namespace every rust-backend container gets).

use crate::{ContainerConfig, ContainerSpec, ContainerizerError, Isolator, Namespace};
use async_trait::async_trait;

/// Gives the container a namespace of its own.
#[derive(Debug, Clone, Copy)]
pub struct Namespaces {
    name: &'static str,
    namespace: Namespace,
}

impl Namespaces {
    /// `namespaces/pid`: the task sees only its own processes.
    pub fn pid() -> Self {
        Namespaces { name: "namespaces/pid", namespace: Namespace::Pid }
    }
    /// `namespaces/ipc`: private System V IPC and POSIX message queues.
    pub fn ipc() -> Self {
        Namespaces { name: "namespaces/ipc", namespace: Namespace::Ipc }
    }
    /// `namespaces/uts`: own hostname.
    pub fn uts() -> Self {
        Namespaces { name: "namespaces/uts", namespace: Namespace::Uts }
    }
    /// `namespaces/mount`: own mount table (needed for a rootfs and /proc).
    pub fn mount() -> Self {
        Namespaces { name: "namespaces/mount", namespace: Namespace::Mount }
    }
}

#[async_trait]
impl Isolator for Namespaces {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn prepare(&self, config: &ContainerConfig, spec: &mut ContainerSpec) -> Result<(), ContainerizerError> {
        if self.namespace == Namespace::Pid && config.linux.share_pid_namespace {
            // `LinuxInfo.share_pid_namespace`: the task stays in the agent's
            // pid namespace (and its /proc shows the host's processes).
            spec.namespaces.retain(|n| *n != Namespace::Pid);
            return Ok(());
        }
        if !spec.namespaces.contains(&self.namespace) {
            spec.namespaces.push(self.namespace);
        }
        Ok(())
    }
}
