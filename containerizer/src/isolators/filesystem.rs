//! `filesystem/linux` (with Mesos's `docker/runtime` folded in): the
//! container's root filesystem, the sandbox mount, and the command,
//! environment and working directory from the task and its image.

use crate::config::SANDBOX_MOUNT_POINT;
use crate::user::{chown_sandbox, resolve_user, user_db_roots};
use crate::{Command, ContainerConfig, ContainerSpec, ContainerizerError, Isolator, Mount, Rootfs, RuntimeDir};
use async_trait::async_trait;
use std::path::PathBuf;
use std::sync::Arc;

/// The runtime part of an image's config (Docker `config`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageRuntime {
    /// `KEY=VALUE` entries.
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

/// An image made ready on this host: its unpacked layers and runtime config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProvisionedImage {
    /// Unpacked layer directories, bottom first.
    pub layers: Vec<PathBuf>,
    pub runtime: ImageRuntime,
}

/// Makes images available on this host (Mesos's provisioner).
#[async_trait]
pub trait Provisioner: Send + Sync {
    /// Fetches (or finds cached) `reference` and keeps it from garbage
    /// collection under `lease` (the container id, or `<container id>/<what>`
    /// for a second image of one container) until `release`; the error text
    /// says why not.
    async fn provision(&self, lease: &str, reference: &str) -> Result<ProvisionedImage, String>;
    /// Drops the leases of `container_id` (and of its `<container id>/...`
    /// leases); an unknown container is not an error.
    async fn release(&self, _container_id: &str) -> Result<(), String> {
        Ok(())
    }
}

#[async_trait]
impl Provisioner for mezzo_images::ImageStore {
    async fn provision(&self, lease: &str, reference: &str) -> Result<ProvisionedImage, String> {
        let image = self.get_leased(lease, reference).await.map_err(|e| e.to_string())?;
        let c = image.config;
        Ok(ProvisionedImage {
            layers: image.layers,
            runtime: ImageRuntime { env: c.env, entrypoint: c.entrypoint, cmd: c.cmd, working_dir: c.working_dir, user: c.user },
        })
    }

    async fn release(&self, container_id: &str) -> Result<(), String> {
        let store = self.clone();
        let id = container_id.to_string();
        tokio::task::spawn_blocking(move || {
            store.release(&id).map_err(|e| e.to_string())?;
            let prefix = format!("{id}/");
            for lease in store.leases().map_err(|e| e.to_string())? {
                if lease.container_id.starts_with(&prefix) {
                    store.release(&lease.container_id).map_err(|e| e.to_string())?;
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

/// `filesystem/linux`: host rootfs without an image, an overlay of the
/// image's layers with one.
#[derive(Clone)]
pub struct FilesystemLinux {
    runtime_root: PathBuf,
    provisioner: Option<Arc<dyn Provisioner>>,
    /// `--image_provisioner_backend=copy`: copy the layers into a directory
    /// of the container's own instead of mounting an overlay.
    copy: bool,
}

impl FilesystemLinux {
    /// Keeps per-container overlay directories under
    /// `<runtime_root>/<id>/overlay`; without a provisioner, tasks that name
    /// an image fail to prepare.
    pub fn new(runtime_root: PathBuf, provisioner: Option<Arc<dyn Provisioner>>) -> Self {
        FilesystemLinux { runtime_root, provisioner, copy: false }
    }

    /// With `copy`, image rootfses are copies of the layers (Mesos's `copy`
    /// provisioner backend, for hosts without overlayfs) instead of overlays.
    pub fn with_copy_backend(mut self, copy: bool) -> Self {
        self.copy = copy;
        self
    }

    fn overlay_dir(&self, container_id: &str) -> PathBuf {
        RuntimeDir::of(&self.runtime_root, container_id).overlay_dir()
    }
}

impl FilesystemLinux {
    /// The rootfs, then the sandbox handed to the task's user.
    async fn prepare_all(&self, config: &ContainerConfig, spec: &mut ContainerSpec) -> Result<(), ContainerizerError> {
        self.prepare_rootfs(config, spec).await?;
        if let Some(user) = &config.command.user {
            // As Mesos: the sandbox and the task's output files belong to
            // the task's user (resolved in the container's own user database).
            let resolved = resolve_user(user, &user_db_roots(&spec.rootfs))?;
            let (sandbox, stdout, stderr) = (config.sandbox.clone(), spec.stdout.clone(), spec.stderr.clone());
            tokio::task::spawn_blocking(move || {
                chown_sandbox(&sandbox, &[&stdout, &stderr], resolved.uid, resolved.gid)
            })
            .await
            .map_err(|e| ContainerizerError::Other(format!("chown sandbox task: {e}")))??;
        }
        Ok(())
    }

    /// The rootfs, sandbox mount, command, environment and working directory.
    async fn prepare_rootfs(&self, config: &ContainerConfig, spec: &mut ContainerSpec) -> Result<(), ContainerizerError> {
        let Some(reference) = &config.image else {
            // As Mesos: the host's filesystem, the sandbox as cwd and
            // MESOS_SANDBOX, the task's environment on top.
            spec.rootfs = Rootfs::Host;
            spec.args = resolve_command(&config.command, None)?;
            spec.env.extend(config.command.env.iter().cloned());
            spec.env.push(("MESOS_SANDBOX".into(), config.sandbox.display().to_string()));
            spec.working_dir = config.sandbox.display().to_string();
            return Ok(());
        };
        let provisioner = self.provisioner.as_ref().ok_or_else(|| ContainerizerError::Image {
            image: reference.clone(),
            reason: "no image provisioner is configured".into(),
        })?;
        let image = provisioner
            .provision(&config.container_id, reference)
            .await
            .map_err(|reason| ContainerizerError::Image { image: reference.clone(), reason })?;

        let base = self.overlay_dir(&config.container_id);
        if self.copy {
            let target = base.join("rootfs");
            let layers = image.layers.clone();
            let dest = target.clone();
            tokio::task::spawn_blocking(move || mezzo_images::rootfs::copy_layers(&layers, &dest))
                .await
                .map_err(|e| ContainerizerError::Other(format!("copy rootfs task: {e}")))?
                .map_err(|e| ContainerizerError::Image { image: reference.clone(), reason: e.to_string() })?;
            spec.rootfs = Rootfs::Directory(target);
        } else {
            let (upper, work, target) = (base.join("upper"), base.join("work"), base.join("merged"));
            let mut lowers = image.layers.clone();
            if lowers.is_empty() {
                // overlayfs needs a lower directory; an image without layers
                // (scratch) starts from an empty one.
                lowers.push(base.join("empty"));
            }
            for dir in [&upper, &work, &target].into_iter().chain(lowers.iter().filter(|l| l.starts_with(&base))) {
                std::fs::create_dir_all(dir).map_err(ContainerizerError::io("create overlay directory", dir))?;
            }
            spec.rootfs = Rootfs::Overlay { lowers, upper, work, target };
        }
        spec.mounts.push(Mount { source: config.sandbox.clone(), target: SANDBOX_MOUNT_POINT.into(), read_only: false });

        // Image env first, the task's own environment wins over it.
        for entry in &image.runtime.env {
            match entry.split_once('=') {
                Some((k, v)) => spec.env.push((k.to_string(), v.to_string())),
                None => spec.env.push((entry.clone(), String::new())),
            }
        }
        spec.env.extend(config.command.env.iter().cloned());
        spec.env.push(("MESOS_SANDBOX".into(), SANDBOX_MOUNT_POINT.into()));
        spec.working_dir = image
            .runtime
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| SANDBOX_MOUNT_POINT.to_string());
        spec.args = resolve_command(&config.command, Some(&image.runtime))?;
        Ok(())
    }
}

#[async_trait]
impl Isolator for FilesystemLinux {
    fn name(&self) -> &'static str {
        "filesystem/linux"
    }

    async fn prepare(&self, config: &ContainerConfig, spec: &mut ContainerSpec) -> Result<(), ContainerizerError> {
        self.prepare_all(config, spec).await
    }

    async fn cleanup(&self, container_id: &str) -> Result<(), ContainerizerError> {
        if let Some(provisioner) = &self.provisioner {
            provisioner
                .release(container_id)
                .await
                .map_err(|e| ContainerizerError::Other(format!("release image leases of {container_id}: {e}")))?;
        }
        let dir = self.overlay_dir(container_id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ContainerizerError::io("remove overlay directories", &dir)(e)),
        }
    }
}

/// The argv of the container's first process, with Mesos's precedence
/// between `CommandInfo` and the image's Entrypoint/Cmd (`docker/runtime`).
pub fn resolve_command(command: &Command, image: Option<&ImageRuntime>) -> Result<Vec<String>, ContainerizerError> {
    let invalid = |m: &str| ContainerizerError::InvalidSpec(m.to_string());
    if command.shell {
        let value = command.value.as_ref().ok_or_else(|| invalid("shell command has no value"))?;
        return Ok(vec!["/bin/sh".into(), "-c".into(), value.clone()]);
    }
    if let Some(value) = &command.value {
        // `arguments` is the whole argv, argv[0] included; OCI has no
        // separate argv[0], so the program path takes its place.
        let mut args = vec![value.clone()];
        args.extend(command.arguments.iter().skip(1).cloned());
        return Ok(args);
    }
    let image = image.ok_or_else(|| invalid("command has no value and the task has no image"))?;
    let entrypoint = image.entrypoint.clone().unwrap_or_default();
    let cmd = image.cmd.clone().unwrap_or_default();
    let args = if command.arguments.is_empty() {
        [entrypoint, cmd].concat()
    } else if !entrypoint.is_empty() {
        [entrypoint, command.arguments.clone()].concat()
    } else {
        // No entrypoint: Cmd's program with the task's arguments.
        cmd.into_iter().take(1).chain(command.arguments.iter().cloned()).collect()
    };
    if args.is_empty() {
        return Err(invalid("neither the command nor the image says what to run"));
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(shell: bool, value: Option<&str>, args: &[&str]) -> Command {
        Command {
            shell,
            value: value.map(String::from),
            arguments: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_precedence_follows_mesos() {
        let image = ImageRuntime {
            entrypoint: Some(strings(&["/entry", "-x"])),
            cmd: Some(strings(&["/cmd", "y"])),
            ..Default::default()
        };
        let only_cmd = ImageRuntime { cmd: Some(strings(&["/cmd", "y"])), ..Default::default() };
        let r = |c: &Command, i: Option<&ImageRuntime>| resolve_command(c, i);
        assert_eq!(r(&cmd(true, Some("echo hi"), &[]), Some(&image)).unwrap(), strings(&["/bin/sh", "-c", "echo hi"]));
        assert!(r(&cmd(true, None, &[]), Some(&image)).is_err());
        assert_eq!(r(&cmd(false, Some("/bin/ls"), &["ls", "-l"]), Some(&image)).unwrap(), strings(&["/bin/ls", "-l"]));
        assert_eq!(r(&cmd(false, None, &[]), Some(&image)).unwrap(), strings(&["/entry", "-x", "/cmd", "y"]));
        assert_eq!(r(&cmd(false, None, &["a"]), Some(&image)).unwrap(), strings(&["/entry", "-x", "a"]));
        assert_eq!(r(&cmd(false, None, &["a"]), Some(&only_cmd)).unwrap(), strings(&["/cmd", "a"]));
        assert!(r(&cmd(false, None, &[]), Some(&ImageRuntime::default())).is_err());
        assert!(r(&cmd(false, None, &[]), None).is_err());
    }
}
