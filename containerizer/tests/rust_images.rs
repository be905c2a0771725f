//! Containers with an image rootfs: a busybox image built by the test,
//! provisioned through the real image store and mounted as an overlay.

use mezzo_containerizer::isolators::Provisioner;
use mezzo_containerizer::rust::{RustBackend, RustBackendConfig};
use mezzo_containerizer::{Backend, Command, ContainerConfig, ContainerType, Containerizer, ExitStatus, Resources};
use mezzo_images::build::{build_image, layer_tar_from_dir, ArchiveFormat, ImageSpec};
use mezzo_images::ImageStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
const IMAGE: &str = "mezzo-rust-test:1";

fn launcher_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_mezzo-launcher")).parent().unwrap().to_path_buf()
}

/// A one-layer busybox image in `archives/`, the way `docker save` writes it.
fn build_busybox_image(tmp: &Path) -> PathBuf {
    let root = tmp.join("busybox-rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in ["sh", "echo", "cat", "pwd", "id", "hostname", "ls", "sleep"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    std::fs::write(root.join("etc/marker"), "from-image\n").unwrap();
    let mut spec = ImageSpec::new(IMAGE);
    spec.env.push("FROM_IMAGE=yes".into());
    spec.env.push("OVERRIDE=image".into());
    spec.entrypoint = Some(vec!["/bin/echo".into(), "entry".into()]);
    spec.cmd = Some(vec!["cmd".into()]);
    let image = build_image(&spec, vec![layer_tar_from_dir(&root, 0).unwrap()]).unwrap();
    let archives = tmp.join("archives");
    std::fs::create_dir_all(&archives).unwrap();
    image.write_archive(&archives.join(format!("{IMAGE}.tar")), ArchiveFormat::Docker).unwrap();
    archives
}

struct Harness {
    tmp: tempfile::TempDir,
    cgroups_root: String,
    store: Arc<ImageStore>,
    containerizer: Containerizer,
}

impl Harness {
    fn new() -> Self {
        Self::with_copy(false)
    }

    fn with_copy(copy_rootfs: bool) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let archives = build_busybox_image(tmp.path());
        let store = Arc::new(ImageStore::open(tmp.path().join("store"), Some(archives)).unwrap());
        let cgroups_root = format!("mezzo-test-{}-images", std::process::id());
        let runtime_root = tmp.path().join("runtime");
        std::fs::create_dir_all(&runtime_root).unwrap();
        let backend = RustBackend::new(RustBackendConfig {
            runtime_root: runtime_root.clone(),
            provisioner: Some(store.clone() as Arc<dyn Provisioner>),
            cgroups_root: cgroups_root.clone(),
            launcher_dir: launcher_dir(),
            copy_rootfs,
            ..Default::default()
        })
        .expect("backend");
        let containerizer = Containerizer::new(vec![Arc::new(backend) as Arc<dyn Backend>], runtime_root);
        Harness { tmp, cgroups_root, store, containerizer }
    }

    fn config(&self, id: &str, image: &str, command: Command) -> ContainerConfig {
        let sandbox = self.tmp.path().join("sandboxes").join(id);
        std::fs::create_dir_all(&sandbox).unwrap();
        ContainerConfig {
            container_id: id.to_string(),
            container_type: ContainerType::Mesos,
            image: Some(image.to_string()),
            command,
            resources: Resources { cpus: Some(0.1), mem_mb: Some(32.0), disk_mb: None, ports: vec![] },
            sandbox,
            hostname: Some("task-host".into()),
            labels: Default::default(),
            ..Default::default()
        }
    }

    async fn run(&self, config: &ContainerConfig) -> (ExitStatus, String, String) {
        let dir = self.containerizer.prepare(config).await.expect("prepare");
        let mut launcher = mezzo_containerizer::launcher(&dir, &launcher_dir()).expect("launcher");
        tokio::time::timeout(WAIT, launcher.start()).await.expect("start in time").expect("start");
        let status = tokio::time::timeout(WAIT, launcher.wait()).await.expect("end in time").expect("wait");
        let out = std::fs::read_to_string(config.sandbox.join("stdout")).unwrap_or_default();
        let err = std::fs::read_to_string(config.sandbox.join("stderr")).unwrap_or_default();
        self.containerizer.destroy(&config.container_id).await.expect("destroy");
        (status, out, err)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for ctrl in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            let _ = std::fs::remove_dir(ctrl.path().join(&self.cgroups_root));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn image_rootfs_runs_with_image_config_and_sandbox() {
    mezzo_testkit::require_root!();
    let h = Harness::new();

    // A shell command: image env under the task's, sandbox mounted, cwd
    // the sandbox, writes to / land in the container's upper dir only.
    let script = "cat /etc/marker; echo $FROM_IMAGE $OVERRIDE $MESOS_SANDBOX; pwd; hostname; id -u; \
                  echo data > $MESOS_SANDBOX/out; echo new > /newfile; cat /newfile";
    let mut cmd = Command { shell: true, value: Some(script.into()), ..Default::default() };
    cmd.env.push(("OVERRIDE".into(), "task".into()));
    let c = h.config("img-shell", IMAGE, cmd);
    let (status, out, err) = h.run(&c).await;
    assert!(status.success(), "{status}: {err}");
    assert_eq!(out, "from-image\nyes task /mnt/mesos/sandbox\n/mnt/mesos/sandbox\ntask-host\n0\nnew\n");
    assert_eq!(std::fs::read_to_string(c.sandbox.join("out")).unwrap(), "data\n");
    let image = h.store.get(IMAGE).await.unwrap();
    for layer in &image.layers {
        assert!(!layer.join("newfile").exists(), "a container wrote into the shared layer {}", layer.display());
        assert!(layer.join("etc/marker").exists() || image.layers.len() > 1);
    }

    // No command value: Entrypoint + the task's arguments.
    let c = h.config("img-entry", IMAGE, Command { arguments: vec!["arg".into()], ..Default::default() });
    let (status, out, err) = h.run(&c).await;
    assert!(status.success(), "{status}: {err}");
    assert_eq!(out, "entry arg\n");

    // No command at all: Entrypoint + Cmd.
    let c = h.config("img-default", IMAGE, Command::default());
    let (status, out, _) = h.run(&c).await;
    assert!(status.success());
    assert_eq!(out, "entry cmd\n");

    // The task's user, resolved in the image's /etc/passwd.
    let cmd = Command { shell: true, value: Some("id -u; id -g".into()), user: Some("nobody".into()), ..Default::default() };
    let c = h.config("img-user", IMAGE, cmd);
    let (status, out, err) = h.run(&c).await;
    assert!(status.success(), "{status}: {err}");
    assert_eq!(out, "65534\n65534\n");

    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(h.tmp.path().to_str().unwrap()), "a mount leaked onto the host");
    assert!(std::fs::read_dir(h.tmp.path().join("runtime")).unwrap().next().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_image_fails_prepare_naming_it() {
    let h = Harness::new();
    let c = h.config("img-missing", "no-such-image:3", Command { shell: true, value: Some("true".into()), ..Default::default() });
    let err = h.containerizer.prepare(&c).await.unwrap_err();
    assert!(err.to_string().contains("no-such-image"), "{err}");
    // The failed prepare cleaned up after itself.
    assert!(!h.tmp.path().join("runtime/img-missing").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_image_layer_fails_start_with_reason() {
    mezzo_testkit::require_root!();
    let h = Harness::new();
    let c = h.config("img-broken", IMAGE, Command { shell: true, value: Some("true".into()), ..Default::default() });
    let dir = h.containerizer.prepare(&c).await.expect("prepare");
    // The layer cache lost a layer between prepare and start.
    let image = h.store.get(IMAGE).await.unwrap();
    let hidden = image.layers[0].with_extension("hidden");
    std::fs::rename(&image.layers[0], &hidden).unwrap();
    let mut launcher = mezzo_containerizer::launcher(&dir, &launcher_dir()).unwrap();
    let result = tokio::time::timeout(WAIT, launcher.start()).await.expect("no hang");
    std::fs::rename(&hidden, &image.layers[0]).unwrap();
    let err = result.unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    h.containerizer.destroy("img-broken").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn image_is_leased_while_its_container_lives_and_released_on_destroy() {
    mezzo_testkit::require_root!();
    let h = Harness::new();
    let c = h.config("img-lease", IMAGE, Command { shell: true, value: Some("true".into()), ..Default::default() });
    h.containerizer.prepare(&c).await.expect("prepare");
    let leases = h.store.leases().unwrap();
    assert!(leases.iter().any(|l| l.container_id == "img-lease"), "no lease for the container: {leases:?}");
    // A forced collection while the container exists keeps its layers.
    h.store.gc(&mezzo_images::GcPolicy { force: true, ..Default::default() }).unwrap();
    let image = h.store.get(IMAGE).await.unwrap();
    assert!(image.layers.iter().all(|l| l.exists()), "gc removed a leased layer");
    h.containerizer.destroy("img-lease").await.expect("destroy");
    assert!(h.store.leases().unwrap().iter().all(|l| l.container_id != "img-lease"), "lease outlived its container");
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_backend_runs_the_image_from_a_private_copy() {
    mezzo_testkit::require_root!();
    let h = Harness::with_copy(true);
    let script = "cat /etc/marker; echo new > /newfile; cat /newfile";
    let c = h.config("img-copy", IMAGE, Command { shell: true, value: Some(script.into()), ..Default::default() });
    let dir = h.containerizer.prepare(&c).await.expect("prepare");
    let spec = dir.read_spec().unwrap();
    let mezzo_containerizer::Rootfs::Directory(copy) = &spec.rootfs else {
        panic!("copy backend gave {:?}", spec.rootfs)
    };
    assert!(copy.join("etc/marker").is_file(), "the copy lacks the image's files");
    let mut launcher = mezzo_containerizer::launcher(&dir, &launcher_dir()).expect("launcher");
    tokio::time::timeout(WAIT, launcher.start()).await.expect("start in time").expect("start");
    let status = tokio::time::timeout(WAIT, launcher.wait()).await.expect("end in time").expect("wait");
    let out = std::fs::read_to_string(c.sandbox.join("stdout")).unwrap_or_default();
    assert!(status.success(), "{status}");
    assert_eq!(out, "from-image\nnew\n");
    // The container wrote into its own copy, never into the shared layers.
    assert!(copy.join("newfile").is_file());
    let image = h.store.get(IMAGE).await.unwrap();
    assert!(image.layers.iter().all(|l| !l.join("newfile").exists()));
    h.containerizer.destroy("img-copy").await.expect("destroy");
    assert!(!dir.exists(), "runtime directory (with the copy) survived destroy");
}
