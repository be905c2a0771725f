//! What the agent asks for: one container for one task, in plain types so
//! that this crate does not depend on the wire protos.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Which backend family a task asked for (Mesos `ContainerInfo.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerType {
    /// `ContainerInfo` absent or of type MESOS: the rust backend.
    Mesos,
    /// `ContainerInfo.type = DOCKER`: the docker backend.
    Docker,
}

/// Resources of the task, as Mesos scalars.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// `cpus`, in cores.
    pub cpus: Option<f64>,
    /// `mem`, in MiB.
    pub mem_mb: Option<f64>,
    /// `disk`, in MiB.
    pub disk_mb: Option<f64>,
}

/// The command to run, with Mesos's `CommandInfo` semantics: with `shell`
/// the `value` runs under `/bin/sh -c`; otherwise `value` is the program and
/// `arguments` its argv (argv[0] included, as in Mesos).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub shell: bool,
    pub value: Option<String>,
    pub arguments: Vec<String>,
    /// Environment from `CommandInfo.environment`, in order.
    pub env: Vec<(String, String)>,
    /// `CommandInfo.user`, when set.
    pub user: Option<String>,
}

/// One container for one task, as the agent asks for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// Mesos `ContainerID.value`; also the name of the runtime directory.
    pub container_id: String,
    pub container_type: ContainerType,
    /// Image reference (`ContainerInfo.mesos.image.docker.name` or
    /// `ContainerInfo.docker.image`); `None` runs on the host's filesystem
    /// (rust backend only).
    pub image: Option<String>,
    pub command: Command,
    pub resources: Resources,
    /// The sandbox on the host; mounted at `/mnt/mesos/sandbox` inside.
    pub sandbox: PathBuf,
    /// Hostname inside the container (uts namespace), when asked for.
    pub hostname: Option<String>,
    /// Labels for the container (agent, framework, executor and container ids).
    pub labels: BTreeMap<String, String>,
}

/// Where the sandbox appears inside a container with its own rootfs.
pub const SANDBOX_MOUNT_POINT: &str = "/mnt/mesos/sandbox";
