//! Containers for mezzo tasks: the `Isolator` and `Backend` traits, the
//! composing `Containerizer` the agent drives, and the `Launcher` the executor
//! uses to start, signal and wait for the task's container.
//!
//! Data flows one way through a launch:
//! `ContainerConfig` (from the agent) -> isolators (`prepare` fills a
//! `ContainerSpec`) -> backend (`prepare` provisions and renders the spec into
//! its own form under the container's runtime directory) -> executor
//! (`Launcher` starts and waits) -> agent (`destroy` tears everything down).
//! Every file of a container's runtime directory is read and written
//! through `RuntimeDir`; `BackendKind` is the one registry of backends.

pub mod backend;
pub mod cgroupfs;
pub mod config;
pub mod containerizer;
pub mod docker;
pub mod error;
pub mod ids;
pub mod isolator;
pub mod isolators;
pub mod launcher;
pub mod limits;
pub mod log_rotate;
pub mod runtime_dir;
pub mod rust;
pub mod sandbox_fs;
pub mod tree;
pub mod spec;
pub mod user;

pub use backend::{Backend, BackendKind, BackendOptions};
pub use config::{
    Command, ContainerConfig, ContainerType, DockerNetwork, DockerOptions, LinuxOptions, PortMapping, RLimit,
    ResourceLimits, Resources, Volume, VolumeSource, SANDBOX_MOUNT_POINT,
};
pub use containerizer::{launcher, Containerizer};
pub use error::ContainerizerError;
pub use ids::validate_id;
pub use isolator::{Isolator, Limitation, LimitationReason, Usage};
pub use launcher::{foreign_network_namespace, CommandOutcome, ContainerCommand, Launcher};
pub use runtime_dir::RuntimeDir;
pub use spec::{signal_description, ContainerSpec, ExitStatus, Limits, Mount, Namespace, Rootfs};
