//! `volume/host_path`, `volume/sandbox_path` and `volume/image`: the
//! task's `ContainerInfo.volumes` as mounts in its own mount namespace.
//!
//! Mesos's rules: a relative `container_path` is under the sandbox (as the
//! task sees it); without an image rootfs an absolute `container_path` must
//! already exist on the host (the mount point is never made on the host's
//! filesystem); a sandbox path must stay inside the sandbox.

use super::filesystem::Provisioner;
use crate::config::SANDBOX_MOUNT_POINT;
use crate::spec::ImageMount;
use crate::{ContainerConfig, ContainerSpec, ContainerizerError, Isolator, Mount, Rootfs, Volume, VolumeSource};
use async_trait::async_trait;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

fn invalid(msg: String) -> ContainerizerError {
    ContainerizerError::InvalidSpec(msg)
}

/// `path` split into normal components; `..`, `.`-only or root parts are refused.
fn relative_components(path: &str, what: &str) -> Result<PathBuf, ContainerizerError> {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err(invalid(format!("{what} '{path}' must not contain '..'"))),
            Component::RootDir | Component::Prefix(_) => {
                return Err(invalid(format!("{what} '{path}' must be relative")))
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(invalid(format!("{what} '{path}' names no path")));
    }
    Ok(out)
}

/// Where a volume is mounted inside the container: relative paths under the
/// sandbox as the task sees it; absolute paths as they are, and on the
/// host's rootfs only onto something that exists already.
pub fn volume_target(config: &ContainerConfig, spec: &ContainerSpec, volume: &Volume) -> Result<String, ContainerizerError> {
    let path = &volume.container_path;
    if path.is_empty() {
        return Err(invalid("volume has an empty container path".into()));
    }
    if !path.starts_with('/') {
        let rel = relative_components(path, "volume container path")?;
        let sandbox = match spec.rootfs {
            Rootfs::Host => config.sandbox.clone(),
            _ => PathBuf::from(SANDBOX_MOUNT_POINT),
        };
        // The mount point is in the sandbox; make sure no symlink there
        // leads it elsewhere before the runtime creates it.
        let host = config.sandbox.join(&rel);
        check_inside(&config.sandbox, &host, "volume container path")?;
        return Ok(sandbox.join(rel).display().to_string());
    }
    if Path::new(path).components().any(|c| c == Component::ParentDir) {
        return Err(invalid(format!("volume container path '{path}' must not contain '..'")));
    }
    if Path::new(path).components().all(|c| c == Component::RootDir) {
        return Err(invalid("a volume cannot be mounted onto '/'".into()));
    }
    if spec.rootfs == Rootfs::Host && std::fs::symlink_metadata(path).is_err() {
        return Err(invalid(format!(
            "mount point '{path}' does not exist on the host; a container without an image can only mount volumes \
             onto existing paths (or onto a path relative to the sandbox)"
        )));
    }
    Ok(path.clone())
}

/// Refuses `path` when its deepest existing ancestor resolves (through
/// symlinks) outside `root`; returns that resolved ancestor.
fn check_inside(root: &Path, path: &Path, what: &str) -> Result<PathBuf, ContainerizerError> {
    let root = root.canonicalize().map_err(ContainerizerError::io("resolve sandbox", root))?;
    let mut existing = path.to_path_buf();
    let resolved = loop {
        match existing.canonicalize() {
            Ok(p) => break p,
            Err(_) => match existing.parent() {
                Some(p) => existing = p.to_path_buf(),
                None => return Err(invalid(format!("{what} {} cannot be resolved", path.display()))),
            },
        }
    };
    if !resolved.starts_with(&root) {
        return Err(invalid(format!(
            "{what} {} escapes the sandbox (it resolves to {})",
            path.display(),
            resolved.display()
        )));
    }
    Ok(resolved)
}

/// `volume/host_path`: binds host paths (`Volume.host_path` or
/// `Source.HOST_PATH`) read-only or read-write.
#[derive(Debug, Clone, Default)]
pub struct VolumeHostPath;

impl VolumeHostPath {
    /// The isolator.
    pub fn new() -> Self {
        VolumeHostPath
    }
}

#[async_trait]
impl Isolator for VolumeHostPath {
    fn name(&self) -> &'static str {
        "volume/host_path"
    }

    async fn prepare(&self, config: &ContainerConfig, spec: &mut ContainerSpec) -> Result<(), ContainerizerError> {
        for v in &config.volumes {
            let VolumeSource::HostPath(host) = &v.source else { continue };
            if !host.is_absolute() {
                return Err(invalid(format!("host path '{}' of a volume must be absolute", host.display())));
            }
            if std::fs::metadata(host).is_err() {
                return Err(invalid(format!("host path '{}' of a volume does not exist", host.display())));
            }
            let target = volume_target(config, spec, v)?;
            spec.mounts.push(Mount { source: host.clone(), target, read_only: v.read_only });
        }
        Ok(())
    }
}

/// `volume/sandbox_path`: binds a directory of the task's own sandbox
/// (`SANDBOX_PATH` of type SELF), made when missing, never outside it.
#[derive(Debug, Clone, Default)]
pub struct VolumeSandboxPath;

impl VolumeSandboxPath {
    /// The isolator.
    pub fn new() -> Self {
        VolumeSandboxPath
    }

    /// The host directory for sandbox path `rel` of `sandbox`, created when
    /// missing; refused when it would lie outside the sandbox, by `..` or
    /// through a symlink.
    pub fn source(sandbox: &Path, rel: &str) -> Result<PathBuf, ContainerizerError> {
        let rel = relative_components(rel, "sandbox path")?;
        let path = sandbox.join(&rel);
        // Check before creating anything: mkdir -p through a symlink would
        // otherwise make directories outside the sandbox.
        check_inside(sandbox, &path, "sandbox path")?;
        if std::fs::symlink_metadata(&path).is_err() {
            std::fs::create_dir_all(&path).map_err(ContainerizerError::io("create sandbox path volume", &path))?;
        }
        check_inside(sandbox, &path, "sandbox path")
    }
}

#[async_trait]
impl Isolator for VolumeSandboxPath {
    fn name(&self) -> &'static str {
        "volume/sandbox_path"
    }

    async fn prepare(&self, config: &ContainerConfig, spec: &mut ContainerSpec) -> Result<(), ContainerizerError> {
        for v in &config.volumes {
            let VolumeSource::SandboxPath(rel) = &v.source else { continue };
            let source = Self::source(&config.sandbox, rel)?;
            let target = volume_target(config, spec, v)?;
            spec.mounts.push(Mount { source, target, read_only: v.read_only });
        }
        Ok(())
    }
}

/// `volume/image`: another image's filesystem, provisioned like a rootfs
/// and mounted read-only.
#[derive(Clone, Default)]
pub struct VolumeImage {
    provisioner: Option<Arc<dyn Provisioner>>,
}

impl VolumeImage {
    /// Without a provisioner, tasks with image volumes fail to prepare.
    pub fn new(provisioner: Option<Arc<dyn Provisioner>>) -> Self {
        VolumeImage { provisioner }
    }
}

#[async_trait]
impl Isolator for VolumeImage {
    fn name(&self) -> &'static str {
        "volume/image"
    }

    async fn prepare(&self, config: &ContainerConfig, spec: &mut ContainerSpec) -> Result<(), ContainerizerError> {
        for (index, v) in config.volumes.iter().enumerate() {
            let VolumeSource::Image(reference) = &v.source else { continue };
            if !v.read_only {
                return Err(invalid(format!("image volume '{reference}' can only be mounted read-only (mode RO)")));
            }
            let provisioner = self.provisioner.as_ref().ok_or_else(|| ContainerizerError::Image {
                image: reference.clone(),
                reason: "no image provisioner is configured".into(),
            })?;
            let image = provisioner
                .provision(&format!("{}/volume-{index}", config.container_id), reference)
                .await
                .map_err(|reason| ContainerizerError::Image { image: reference.clone(), reason })?;
            if image.layers.is_empty() {
                return Err(ContainerizerError::Image {
                    image: reference.clone(),
                    reason: "the image has no layers to mount".into(),
                });
            }
            let target = volume_target(config, spec, v)?;
            spec.image_mounts.push(ImageMount { image: reference.clone(), layers: image.layers, target });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_paths_stay_in_the_sandbox() {
        let tmp = tempfile::tempdir().unwrap();
        let sandbox = tmp.path().join("sb");
        std::fs::create_dir_all(&sandbox).unwrap();
        std::fs::create_dir_all(tmp.path().join("outside")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("outside"), sandbox.join("link")).unwrap();
        let made = VolumeSandboxPath::source(&sandbox, "a/b").unwrap();
        assert!(made.is_dir() && made.ends_with("sb/a/b"));
        for bad in ["../x", "a/../../x", "/etc", "link", "link/new", "."] {
            assert!(VolumeSandboxPath::source(&sandbox, bad).is_err(), "{bad} was accepted");
        }
        assert!(!tmp.path().join("outside/new").exists(), "a directory was made outside the sandbox");
    }
}
