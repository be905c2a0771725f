//! Shared by the namespaces, volumes and hardening tests: a busybox image
//! built by the test, an image store, and a rust backend with a chosen
//! `--isolation`, each harness with its own runtime and cgroups roots.

#![allow(dead_code)]

use mezzo_containerizer::isolators::Provisioner;
use mezzo_containerizer::rust::{RustBackend, RustBackendConfig};
use mezzo_containerizer::{Backend, Command, ContainerConfig, ContainerType, Containerizer, ExitStatus, Launcher, Resources};
use mezzo_images::build::{build_image, layer_tar_from_dir, ArchiveFormat, ImageSpec};
use mezzo_images::ImageStore;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const WAIT: Duration = Duration::from_secs(60);
/// One layer: busybox with every applet, /etc/passwd with `nobody`.
pub const IMAGE: &str = "mezzo-isolation-test:1";
/// Two layers: the first plus `/etc/marker2`, for overlay image volumes.
pub const IMAGE2: &str = "mezzo-isolation-test:2";

pub fn launcher_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_mezzo-launcher")).parent().unwrap().to_path_buf()
}

pub fn shell(cmd: &str) -> Command {
    Command { shell: true, value: Some(cmd.to_string()), ..Default::default() }
}

/// Mount points on the host (this test's mount namespace) under `prefix`.
pub fn host_mounts_under(prefix: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|m| Path::new(m).starts_with(prefix))
        .collect()
}

fn cgroup_mounts() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            matches!(f[sep + 1], "cgroup" | "cgroup2").then(|| PathBuf::from(f[4]))
        })
        .collect()
}

/// Writes both test images as docker archives into `tmp/archives`.
fn build_images(tmp: &Path) -> PathBuf {
    let root = tmp.join("busybox-rootfs");
    for d in ["bin", "etc", "tmp", "root"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let list = std::process::Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines().filter(|a| *a != "busybox") {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    std::fs::write(root.join("etc/marker"), "from-image\n").unwrap();
    let base = layer_tar_from_dir(&root, 0).unwrap();

    let top = tmp.join("second-layer");
    std::fs::create_dir_all(top.join("etc")).unwrap();
    std::fs::write(top.join("etc/marker2"), "second-layer\n").unwrap();
    let second = layer_tar_from_dir(&top, 0).unwrap();

    let archives = tmp.join("archives");
    std::fs::create_dir_all(&archives).unwrap();
    for (name, layers) in [(IMAGE, vec![base.clone()]), (IMAGE2, vec![base, second])] {
        let mut spec = ImageSpec::new(name);
        spec.cmd = Some(vec!["/bin/sh".into()]);
        let image = build_image(&spec, layers).unwrap();
        image.write_archive(&archives.join(format!("{name}.tar")), ArchiveFormat::Docker).unwrap();
    }
    archives
}

/// A rust backend over a fresh runtime root and image store.
pub struct Harness {
    pub tmp: tempfile::TempDir,
    pub cgroups_root: String,
    pub store: Arc<ImageStore>,
    pub containerizer: Containerizer,
}

impl Harness {
    /// The default `--isolation`.
    pub fn new(tag: &str) -> Self {
        Self::with(tag, |_| {})
    }

    /// `configure` adjusts the backend's configuration (isolation, disk flags).
    pub fn with(tag: &str, configure: impl FnOnce(&mut RustBackendConfig)) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        // Tasks running as another user on the host's rootfs must reach
        // their sandbox through this directory.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let archives = build_images(tmp.path());
        let store = Arc::new(ImageStore::open(tmp.path().join("store"), Some(archives)).unwrap());
        let cgroups_root = format!("mezzo-test-{}-{tag}", std::process::id());
        let runtime_root = tmp.path().join("runtime");
        std::fs::create_dir_all(&runtime_root).unwrap();
        let mut config = RustBackendConfig {
            runtime_root: runtime_root.clone(),
            provisioner: Some(store.clone() as Arc<dyn Provisioner>),
            cgroups_root: cgroups_root.clone(),
            launcher_dir: launcher_dir(),
            ..Default::default()
        };
        configure(&mut config);
        let backend = RustBackend::new(config).expect("backend");
        let containerizer = Containerizer::new(vec![Arc::new(backend) as Arc<dyn Backend>], runtime_root);
        Harness { tmp, cgroups_root, store, containerizer }
    }

    pub fn runtime_root(&self) -> PathBuf {
        self.tmp.path().join("runtime")
    }

    /// A config for container `id` with its own sandbox; `image` `None`
    /// runs on the host's rootfs.
    pub fn config(&self, id: &str, image: Option<&str>, command: Command) -> ContainerConfig {
        let sandboxes = self.tmp.path().join("sandboxes");
        let sandbox = sandboxes.join(id);
        std::fs::create_dir_all(&sandbox).unwrap();
        std::fs::set_permissions(&sandboxes, std::fs::Permissions::from_mode(0o755)).unwrap();
        ContainerConfig {
            container_id: id.to_string(),
            container_type: ContainerType::Mesos,
            image: image.map(String::from),
            command,
            resources: Resources { cpus: Some(0.1), mem_mb: Some(64.0), disk_mb: None, ports: vec![] },
            sandbox,
            ..Default::default()
        }
    }

    pub async fn start(&self, config: &ContainerConfig) -> Box<dyn Launcher> {
        let dir = self.containerizer.prepare(config).await.expect("prepare");
        let mut launcher = mezzo_containerizer::launcher(&dir, &launcher_dir()).expect("launcher");
        tokio::time::timeout(WAIT, launcher.start()).await.expect("start in time").expect("start");
        launcher
    }

    /// Runs `config` to its end and destroys it; its status, stdout and stderr.
    pub async fn run(&self, config: &ContainerConfig) -> (ExitStatus, String, String) {
        let mut launcher = self.start(config).await;
        let status = tokio::time::timeout(WAIT, launcher.wait()).await.expect("end in time").expect("wait");
        let out = std::fs::read_to_string(config.sandbox.join("stdout")).unwrap_or_default();
        let err = std::fs::read_to_string(config.sandbox.join("stderr")).unwrap_or_default();
        self.containerizer.destroy(&config.container_id).await.expect("destroy");
        assert!(host_mounts_under(self.tmp.path()).is_empty(), "a mount leaked onto the host");
        (status, out, err)
    }

    /// Runs `config` and insists it exits 0; its stdout.
    pub async fn run_ok(&self, config: &ContainerConfig) -> String {
        let (status, out, err) = self.run(config).await;
        assert!(status.success(), "{status}: stdout {out:?} stderr {err:?}");
        out
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for m in cgroup_mounts() {
            let _ = std::fs::remove_dir(m.join(&self.cgroups_root));
        }
    }
}

/// The value of `field` in a `/proc/<pid>/status` text.
pub fn status_field<'a>(status: &'a str, field: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}
