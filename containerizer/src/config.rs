//! What the agent asks for: one container for one task, in plain types so
//! that this crate does not depend on the wire protos.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Which backend family a task asked for (Mesos `ContainerInfo.type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerType {
    /// `ContainerInfo` absent or of type MESOS: the rust backend.
    #[default]
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
    /// Host ports from the `ports` ranges resource, in offer order.
    #[serde(default)]
    pub ports: Vec<u16>,
}

/// `TaskInfo.limits`: hard limits above the requested resources. An
/// infinite limit (Mesos allows `inf`) is `f64::INFINITY`: no limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceLimits {
    /// `cpus` limit in cores (CFS quota).
    pub cpus: Option<f64>,
    /// `mem` limit in MiB (hard memory limit).
    pub mem_mb: Option<f64>,
}

/// Where a volume's content comes from (Mesos `Volume.Source` and the
/// legacy `Volume.host_path`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumeSource {
    /// `Volume.host_path` (legacy) or `Source.HOST_PATH`: an absolute host path.
    HostPath(PathBuf),
    /// `Source.SANDBOX_PATH` of type SELF: a path relative to the sandbox
    /// (must not escape it).
    SandboxPath(String),
    /// `Volume.image`: the rootfs of another image, mounted read-only.
    Image(String),
}

/// One volume from `ContainerInfo.volumes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// Mount point in the container (absolute, or relative to the sandbox as in Mesos).
    pub container_path: String,
    pub source: VolumeSource,
    /// `Volume.mode == RO`.
    pub read_only: bool,
}

/// One rlimit from `RLimitInfo` (`RLMT_NOFILE` -> `"NOFILE"`); `None` is unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RLimit {
    pub kind: String,
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

/// `LinuxInfo` and friends: what the hardening isolators apply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinuxOptions {
    /// `LinuxInfo.effective_capabilities` (or legacy `capability_info`), as
    /// `CAP_*` names; `None` keeps the default set.
    pub effective_capabilities: Option<Vec<String>>,
    /// `LinuxInfo.bounding_capabilities`, as `CAP_*` names.
    pub bounding_capabilities: Option<Vec<String>>,
    /// `ContainerInfo.rlimit_info`.
    pub rlimits: Vec<RLimit>,
    /// `LinuxInfo.share_pid_namespace`: stay in the agent's pid namespace.
    pub share_pid_namespace: bool,
    /// Run with a seccomp profile unless the task's `SeccompInfo.unconfined` says not to.
    pub seccomp_unconfined: bool,
}

/// Docker network modes (`ContainerInfo.DockerInfo.network`, or USER with
/// the name from `ContainerInfo.network_infos`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DockerNetwork {
    Host,
    Bridge,
    /// A user-defined network by name.
    User(String),
    None,
}

/// One `DockerInfo.PortMapping`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp` (default) or `udp`.
    pub protocol: String,
}

/// `ContainerInfo.DockerInfo`: what only the docker backend reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerOptions {
    pub network: DockerNetwork,
    pub port_mappings: Vec<PortMapping>,
    pub privileged: bool,
    /// `DockerInfo.parameters`, in order (`key`, `value`), as docker-run flags without `--`.
    pub parameters: Vec<(String, String)>,
    pub force_pull_image: bool,
}

impl Default for DockerOptions {
    fn default() -> Self {
        DockerOptions {
            network: DockerNetwork::Host,
            port_mappings: Vec::new(),
            privileged: false,
            parameters: Vec::new(),
            force_pull_image: false,
        }
    }
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// `TaskInfo.limits`.
    #[serde(default)]
    pub limits: ResourceLimits,
    /// `ContainerInfo.volumes`.
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// Capabilities, rlimits, pid sharing, seccomp.
    #[serde(default)]
    pub linux: LinuxOptions,
    /// Present for `ContainerType::Docker`.
    #[serde(default)]
    pub docker: Option<DockerOptions>,
}

/// Where the sandbox appears inside a container with its own rootfs.
pub const SANDBOX_MOUNT_POINT: &str = "/mnt/mesos/sandbox";
