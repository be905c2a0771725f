//! The docker backend's isolators: what a docker container needs from the
//! spec, with the Mesos docker containerizer's rules (`docker run` option
//! mapping). Cgroups and namespaces are the engine's job, so these only fill
//! the spec; nothing is left behind for `cleanup`.

use crate::{ContainerConfig, ContainerSpec, ContainerizerError, Isolator, Mount, SANDBOX_MOUNT_POINT};
use async_trait::async_trait;
use bollard::Docker;
use std::path::PathBuf;

use super::container_name;
use super::image::{ensure_image, ImageRef};

/// Mesos's floor for a container's memory (`MIN_MEMORY`).
pub const MIN_MEMORY_BYTES: i64 = 32 << 20;
/// Mesos's floor for cpu shares (`MIN_CPU_SHARES`).
pub const MIN_CPU_SHARES: u64 = 2;
/// cpu shares per whole cpu (`CPU_SHARES_PER_CPU`).
pub const CPU_SHARES_PER_CPU: f64 = 1024.0;

/// `docker/resources`: cpu shares and memory limits from the task's resources.
#[derive(Debug, Default, Clone, Copy)]
pub struct DockerResourcesIsolator;

#[async_trait]
impl Isolator for DockerResourcesIsolator {
    fn name(&self) -> &'static str {
        "docker/resources"
    }

    async fn prepare(&self, config: &ContainerConfig, spec: &mut ContainerSpec) -> Result<(), ContainerizerError> {
        if let Some(cpus) = config.resources.cpus {
            if !(cpus.is_finite() && cpus >= 0.0) {
                return Err(ContainerizerError::InvalidSpec(format!("invalid cpus {cpus}")));
            }
            spec.limits.cpu_shares = Some(cpu_shares(cpus));
        }
        if let Some(mem_mb) = config.resources.mem_mb {
            if !(mem_mb.is_finite() && mem_mb >= 0.0) {
                return Err(ContainerizerError::InvalidSpec(format!("invalid mem {mem_mb}")));
            }
            // Mesos: `--memory max(mem, 32MB)` and the same reservation when
            // the request is the limit.
            let bytes = memory_bytes(mem_mb);
            spec.limits.memory_limit_bytes = Some(bytes);
            spec.limits.memory_reservation_bytes = Some(bytes);
        }
        Ok(())
    }
}

/// `max(2, cpus * 1024)`, as Mesos computes `--cpu-shares`.
pub fn cpu_shares(cpus: f64) -> u64 {
    ((cpus * CPU_SHARES_PER_CPU) as u64).max(MIN_CPU_SHARES)
}

/// `mem` MiB in bytes, at least 32 MiB.
pub fn memory_bytes(mem_mb: f64) -> i64 {
    ((mem_mb * (1u64 << 20) as f64) as i64).max(MIN_MEMORY_BYTES)
}

/// `docker/runtime`: the command, environment, sandbox mount, working
/// directory and user of a docker task. Resolving a non-shell command needs
/// the image's entrypoint, so this is where the image is first provisioned.
#[derive(Clone)]
pub struct DockerRuntimeIsolator {
    docker: Docker,
    image_archive_dir: Option<PathBuf>,
}

impl DockerRuntimeIsolator {
    /// An isolator asking `docker` about images, loading missing ones from
    /// `image_archive_dir`.
    pub fn new(docker: Docker, image_archive_dir: Option<PathBuf>) -> Self {
        DockerRuntimeIsolator { docker, image_archive_dir }
    }
}

#[async_trait]
impl Isolator for DockerRuntimeIsolator {
    fn name(&self) -> &'static str {
        "docker/runtime"
    }

    async fn prepare(&self, config: &ContainerConfig, spec: &mut ContainerSpec) -> Result<(), ContainerizerError> {
        let image = config
            .image
            .as_deref()
            .ok_or_else(|| ContainerizerError::InvalidSpec("docker: a docker container needs an image".into()))?;
        let image = ImageRef::parse(image)?;
        let command = &config.command;
        spec.args = if command.shell {
            // Mesos: `--entrypoint /bin/sh` and `-c <value>`; arguments are ignored.
            let value = command
                .value
                .as_deref()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| ContainerizerError::InvalidSpec("docker: a shell command needs a value".into()))?;
            vec!["/bin/sh".into(), "-c".into(), value.into()]
        } else {
            // Mesos: `[value] + arguments` replace the image's Cmd and keep
            // its Entrypoint; with neither, the image's defaults run.
            let inspect = ensure_image(&self.docker, &image, self.image_archive_dir.as_deref()).await?;
            let image_config = inspect.config.unwrap_or_default();
            let task: Vec<String> = command.value.iter().cloned().chain(command.arguments.iter().cloned()).collect();
            let cmd = if task.is_empty() { image_config.cmd.unwrap_or_default() } else { task };
            let argv: Vec<String> = image_config.entrypoint.unwrap_or_default().into_iter().chain(cmd).collect();
            if argv.is_empty() {
                return Err(ContainerizerError::InvalidSpec(format!(
                    "docker: image '{}' has no entrypoint or cmd and the task gave no command",
                    image.reference
                )));
            }
            argv
        };
        spec.image = Some(image.reference);
        spec.env.extend(command.env.iter().cloned());
        spec.env.push(("MESOS_SANDBOX".into(), SANDBOX_MOUNT_POINT.into()));
        spec.env.push(("MESOS_CONTAINER_NAME".into(), container_name(&config.container_id)));
        spec.mounts.push(Mount {
            source: config.sandbox.clone(),
            target: SANDBOX_MOUNT_POINT.into(),
            read_only: false,
        });
        // Empty: the image's WorkingDir, as `docker run` without `-w`.
        spec.working_dir = String::new();
        // Mesos's docker containerizer runs the image's user: `CommandInfo.user`
        // only decides who owns the sandbox, and a host user name need not
        // exist inside the image.
        spec.user = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesos_resource_rules() {
        assert_eq!(cpu_shares(0.0), 2);
        assert_eq!(cpu_shares(0.001), 2);
        assert_eq!(cpu_shares(0.5), 512);
        assert_eq!(cpu_shares(2.0), 2048);
        assert_eq!(memory_bytes(1.0), 32 << 20);
        assert_eq!(memory_bytes(64.0), 64 << 20);
        assert_eq!(memory_bytes(128.5), (128 << 20) + (1 << 19));
    }
}
