//! The docker backend against the real engine: prepare through the
//! composing containerizer, start/wait/signal through the launcher the
//! executor uses, destroy. Needs a running docker engine and /bin/busybox
//! (a static build); no registry or internet.
//!
//! Fixture images are built from /bin/busybox with `docker import` and kept
//! in the engine for reuse (`mezzo-test-busybox:docker-backend` and
//! `mezzo-test-echo:docker-backend`); the archive test uses its own unique
//! tag and removes it. Every container is removed by a guard, even when a
//! test fails.

use mezzo_containerizer::docker::{DockerBackend, DockerBackendConfig};
use mezzo_containerizer::{Backend, Command, ContainerConfig, ContainerType, Containerizer, ExitStatus, Resources};
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const BUSYBOX_IMAGE: &str = "mezzo-test-busybox:docker-backend";
const ECHO_IMAGE: &str = "mezzo-test-echo:docker-backend";
/// Bound on every engine operation a test waits for.
const BOUND: Duration = Duration::from_secs(60);

/// Runs a host command (bounded by `timeout`) and returns its stdout.
fn sh(cmd: &str) -> Result<String, String> {
    let out = Process::new("timeout").args(["120", "sh", "-c", cmd]).output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("`{cmd}`: {} {}", out.status, String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A rootfs tarball of /bin/busybox with a symlink per applet.
fn busybox_rootfs_tar(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in sh("/bin/busybox --list").unwrap().lines().filter(|a| !a.is_empty() && *a != "busybox") {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    let tar = dir.join("rootfs.tar");
    sh(&format!("tar -C {} -cf {} .", root.display(), tar.display())).unwrap();
    tar
}

/// Makes sure the fixture images exist in the engine (once per test binary).
fn fixture_images() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let tar = busybox_rootfs_tar(tmp.path());
        if sh(&format!("docker image inspect {BUSYBOX_IMAGE} >/dev/null")).is_err() {
            sh(&format!("docker import -c 'CMD [\"/bin/sh\"]' {} {BUSYBOX_IMAGE}", tar.display())).unwrap();
        }
        if sh(&format!("docker image inspect {ECHO_IMAGE} >/dev/null")).is_err() {
            sh(&format!(
                "docker import -c 'ENTRYPOINT [\"/bin/echo\"]' -c 'CMD [\"inky\"]' {} {ECHO_IMAGE}",
                tar.display()
            ))
            .unwrap();
        }
    });
}

/// Removes the engine container of a test container id when dropped.
struct ContainerGuard(String);

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let _ = sh(&format!("docker rm -f -v mesos-{} >/dev/null 2>&1", self.0));
    }
}

/// Removes an image when dropped.
struct ImageGuard(String);

impl Drop for ImageGuard {
    fn drop(&mut self) {
        let _ = sh(&format!("docker rmi -f {} >/dev/null 2>&1", self.0));
    }
}

fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}-{}-{nanos}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

/// One test's world: a containerizer with only the docker backend, a
/// runtime root and a sandbox.
struct Harness {
    containerizer: Containerizer,
    tmp: tempfile::TempDir,
    sandbox: PathBuf,
}

impl Harness {
    async fn new(image_archive_dir: Option<PathBuf>) -> Self {
        fixture_images();
        let backend = DockerBackend::new(DockerBackendConfig { image_archive_dir, remove_delay: Duration::ZERO, ..Default::default() })
            .await
            .expect("docker backend");
        let tmp = tempfile::tempdir().unwrap();
        let sandbox = tmp.path().join("sandbox");
        std::fs::create_dir_all(&sandbox).unwrap();
        let containerizer = Containerizer::new(vec![Arc::new(backend)], tmp.path().join("runtime"));
        Harness { containerizer, tmp, sandbox }
    }

    fn config(&self, id: &str, image: &str, command: Command) -> ContainerConfig {
        ContainerConfig {
            container_id: id.to_string(),
            container_type: ContainerType::Docker,
            image: Some(image.to_string()),
            command,
            resources: Resources { cpus: Some(0.5), mem_mb: Some(64.0), disk_mb: None, ports: vec![] },
            sandbox: self.sandbox.clone(),
            hostname: None,
            labels: [("mezzo.task_id".to_string(), format!("task-{id}"))].into(),
            ..Default::default()
        }
    }

    /// Prepares, starts and waits for a container; returns its status.
    async fn run(&self, config: &ContainerConfig) -> ExitStatus {
        let dir = tokio::time::timeout(BOUND, self.containerizer.prepare(config)).await.unwrap().unwrap();
        let mut launcher = mezzo_containerizer::launcher(&dir, self.tmp.path()).unwrap();
        tokio::time::timeout(BOUND, launcher.start()).await.unwrap().unwrap();
        tokio::time::timeout(BOUND, launcher.wait()).await.unwrap().unwrap()
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.sandbox.join(name)).unwrap_or_default()
    }
}

fn shell(cmd: &str) -> Command {
    Command { shell: true, value: Some(cmd.to_string()), ..Default::default() }
}

fn inspect(name: &str) -> serde_json::Value {
    let out = sh(&format!("docker inspect {name}")).unwrap();
    serde_json::from_str::<serde_json::Value>(&out).unwrap()[0].clone()
}

#[tokio::test]
async fn docker_output_goes_to_sandbox_files_and_sandbox_is_mounted() {
    let h = Harness::new(None).await;
    let id = unique("out");
    let _guard = ContainerGuard(id.clone());
    let mut command = shell("echo hi; echo oops >&2; echo \"$MESOS_SANDBOX $GREETING\" > $MESOS_SANDBOX/seen");
    command.env.push(("GREETING".into(), "hello".into()));
    let status = h.run(&h.config(&id, BUSYBOX_IMAGE, command)).await;
    assert_eq!(status.code(), Some(0), "{status}");
    assert_eq!(h.read("stdout"), "hi\n");
    assert_eq!(h.read("stderr"), "oops\n");
    assert_eq!(h.read("seen"), "/mnt/mesos/sandbox hello\n");
    h.containerizer.destroy(&id).await.unwrap();
}

#[tokio::test]
async fn docker_exit_code_is_reported() {
    let h = Harness::new(None).await;
    let id = unique("exit");
    let _guard = ContainerGuard(id.clone());
    let status = h.run(&h.config(&id, BUSYBOX_IMAGE, shell("exit 3"))).await;
    assert_eq!(status.code(), Some(3), "{status}");
    assert!(!status.success());
    h.containerizer.destroy(&id).await.unwrap();
}

#[tokio::test]
async fn docker_limits_name_and_labels_are_set() {
    let h = Harness::new(None).await;
    let id = unique("limits");
    let _guard = ContainerGuard(id.clone());
    let read_limit = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max";
    let status = h.run(&h.config(&id, BUSYBOX_IMAGE, shell(&format!("({read_limit}) > $MESOS_SANDBOX/limit")))).await;
    assert!(status.success(), "{status}");
    let c = inspect(&format!("mesos-{id}"));
    assert_eq!(c["Name"], format!("/mesos-{id}"));
    assert_eq!(c["HostConfig"]["Memory"], 64 << 20);
    assert_eq!(c["HostConfig"]["MemoryReservation"], 64 << 20);
    assert_eq!(c["HostConfig"]["CpuShares"], 512);
    assert_eq!(c["HostConfig"]["NetworkMode"], "host");
    assert_eq!(c["Config"]["Labels"]["mezzo.container_id"], id.as_str());
    assert_eq!(c["Config"]["Labels"]["mezzo.task_id"], format!("task-{id}"));
    assert_eq!(c["Config"]["Entrypoint"], serde_json::json!(["/bin/sh"]));
    // The memory limit really is the limit of the container's cgroup, as
    // the task sees it (v1 here; v2 hosts show memory.max).
    assert_eq!(h.read("limit").trim(), (64u64 << 20).to_string());
    h.containerizer.destroy(&id).await.unwrap();
}

#[tokio::test]
async fn docker_small_memory_is_raised_to_mesos_minimum() {
    let h = Harness::new(None).await;
    let id = unique("minmem");
    let _guard = ContainerGuard(id.clone());
    let mut config = h.config(&id, BUSYBOX_IMAGE, shell("true"));
    config.resources = Resources { cpus: Some(0.001), mem_mb: Some(1.0), disk_mb: None, ports: vec![] };
    assert!(h.run(&config).await.success());
    let c = inspect(&format!("mesos-{id}"));
    assert_eq!(c["HostConfig"]["Memory"], 32 << 20);
    assert_eq!(c["HostConfig"]["CpuShares"], 2);
    h.containerizer.destroy(&id).await.unwrap();
}

#[tokio::test]
async fn docker_signal_kills_a_sleeping_task() {
    let h = Harness::new(None).await;
    let id = unique("kill");
    let _guard = ContainerGuard(id.clone());
    let dir = h.containerizer.prepare(&h.config(&id, BUSYBOX_IMAGE, shell("echo started; sleep 1000"))).await.unwrap();
    let mut launcher = mezzo_containerizer::launcher(&dir, h.tmp.path()).unwrap();
    tokio::time::timeout(BOUND, launcher.start()).await.unwrap().unwrap();
    launcher.signal(libc::SIGKILL).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), launcher.wait()).await.unwrap().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert_eq!(h.read("stdout"), "started\n");
    // A signal to a container that has ended is not an error.
    launcher.signal(libc::SIGTERM).await.unwrap();
    h.containerizer.destroy(&id).await.unwrap();
}

#[tokio::test]
async fn docker_non_shell_commands_keep_the_image_entrypoint() {
    let h = Harness::new(None).await;
    // No command: the image's entrypoint and cmd (`echo inky`).
    let id = unique("defcmd");
    let _g1 = ContainerGuard(id.clone());
    assert!(h.run(&h.config(&id, ECHO_IMAGE, Command::default())).await.success());
    assert_eq!(h.read("stdout"), "inky\n");
    h.containerizer.destroy(&id).await.unwrap();
    // A value replaces the cmd and keeps the entrypoint (`echo override`).
    let id = unique("override");
    let _g2 = ContainerGuard(id.clone());
    let command = Command { value: Some("override".into()), arguments: vec!["two".into()], ..Default::default() };
    assert!(h.run(&h.config(&id, ECHO_IMAGE, command)).await.success());
    assert_eq!(h.read("stdout"), "inky\noverride two\n");
    h.containerizer.destroy(&id).await.unwrap();
}

/// Puts `image` (a copy of the busybox fixture) into `dir/file` as a
/// `docker save` archive and removes it from the engine.
fn archive_only(image: &str, dir: &Path, file: &str) {
    fixture_images();
    sh(&format!("docker tag {BUSYBOX_IMAGE} {image}")).unwrap();
    sh(&format!("docker save -o '{}' {image}", dir.join(file).display())).unwrap();
    sh(&format!("docker rmi {image}")).unwrap();
    assert!(sh(&format!("docker image inspect {image}")).is_err());
}

#[tokio::test]
async fn docker_missing_image_is_loaded_from_the_archive_dir() {
    let archives = tempfile::tempdir().unwrap();
    // `<name>:<tag>.tar` for a tagged reference.
    let tag = unique("arch");
    let tagged = format!("mezzo-test-archive:{tag}");
    let _tagged_guard = ImageGuard(tagged.clone());
    archive_only(&tagged, archives.path(), &format!("mezzo-test-archive:{tag}.tar"));
    // `<name>.tar` for a reference without a tag (`latest`).
    let name = unique("mezzo-test-archive");
    let _latest_guard = ImageGuard(format!("{name}:latest"));
    archive_only(&format!("{name}:latest"), archives.path(), &format!("{name}.tar"));

    let h = Harness::new(Some(archives.path().to_path_buf())).await;
    for (image, word) in [(tagged.as_str(), "tagged"), (name.as_str(), "latest")] {
        let id = unique("loaded");
        let _guard = ContainerGuard(id.clone());
        let _ = std::fs::remove_file(h.sandbox.join("stdout"));
        let status = h.run(&h.config(&id, image, shell(&format!("echo from {word} archive")))).await;
        assert!(status.success(), "{status}");
        assert_eq!(h.read("stdout"), format!("from {word} archive\n"));
        assert!(sh(&format!("docker image inspect {image}")).is_ok());
        h.containerizer.destroy(&id).await.unwrap();
    }
}

#[tokio::test]
async fn docker_missing_image_fails_prepare_naming_it() {
    let archives = tempfile::tempdir().unwrap();
    let h = Harness::new(Some(archives.path().to_path_buf())).await;
    let id = unique("noimage");
    let _guard = ContainerGuard(id.clone());
    let image = format!("nosuchimage-{}", std::process::id());
    let err = h.containerizer.prepare(&h.config(&id, &image, shell("true"))).await.unwrap_err();
    assert!(err.to_string().contains(&format!("'{image}:latest'")), "{err}");
    // The failed prepare cleaned up its runtime directory.
    assert!(!h.containerizer.runtime_dir(&id).exists());
}

#[tokio::test]
async fn docker_destroy_removes_a_running_container_and_unknown_is_ok() {
    let h = Harness::new(None).await;
    let id = unique("destroy");
    let _guard = ContainerGuard(id.clone());
    let dir = h.containerizer.prepare(&h.config(&id, BUSYBOX_IMAGE, shell("sleep 1000"))).await.unwrap();
    let mut launcher = mezzo_containerizer::launcher(&dir, h.tmp.path()).unwrap();
    tokio::time::timeout(BOUND, launcher.start()).await.unwrap().unwrap();
    assert_eq!(inspect(&format!("mesos-{id}"))["State"]["Running"], true);
    tokio::time::timeout(BOUND, h.containerizer.destroy(&id)).await.unwrap().unwrap();
    assert!(sh(&format!("docker inspect mesos-{id}")).is_err(), "container still exists");
    assert!(!dir.exists());
    // The executor's wait ends (the container is gone) instead of hanging.
    assert!(tokio::time::timeout(BOUND, launcher.wait()).await.is_ok());
    // Destroying again, or a container never seen, is fine.
    h.containerizer.destroy(&id).await.unwrap();
    h.containerizer.destroy(&unique("never")).await.unwrap();
    let backend = DockerBackend::new(DockerBackendConfig::default()).await.unwrap();
    backend.destroy(&unique("never"), &mezzo_containerizer::RuntimeDir::new(h.tmp.path())).await.unwrap();
}

/// A sandbox whose `stdout` is a symlink to a host file when the task
/// starts (planted by whoever could write the sandbox): the log stream is
/// refused, and the host file is never written.
#[tokio::test]
async fn docker_log_streaming_never_writes_through_a_planted_stdout_symlink() {
    mezzo_testkit::require_docker!();
    let h = Harness::new(None).await;
    let id = unique("planted");
    let _guard = ContainerGuard(id.clone());
    let victim = h.tmp.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    std::os::unix::fs::symlink(&victim, h.sandbox.join("stdout")).unwrap();
    let dir = tokio::time::timeout(BOUND, h.containerizer.prepare(&h.config(&id, BUSYBOX_IMAGE, shell("echo OVERWRITTEN"))))
        .await
        .unwrap()
        .unwrap();
    let mut launcher = mezzo_containerizer::launcher(&dir, h.tmp.path()).unwrap();
    match tokio::time::timeout(BOUND, launcher.start()).await.unwrap() {
        Err(e) => assert!(e.to_string().contains("stdout") && e.to_string().contains("symlink"), "{e}"),
        Ok(()) => {
            let _ = tokio::time::timeout(BOUND, launcher.wait()).await;
        }
    }
    tokio::time::timeout(BOUND, h.containerizer.destroy(&id)).await.unwrap().unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched", "the log stream wrote through the symlink");
}

/// A task that replaces its `stdout` with a symlink to a host file while
/// it runs: its later output never reaches that file.
#[tokio::test]
async fn docker_task_replacing_its_stdout_with_a_symlink_never_writes_the_target() {
    mezzo_testkit::require_docker!();
    let h = Harness::new(None).await;
    let id = unique("swapout");
    let _guard = ContainerGuard(id.clone());
    let victim = h.tmp.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    let cmd = format!(
        "rm -f $MESOS_SANDBOX/stdout $MESOS_SANDBOX/stderr; ln -s {v} $MESOS_SANDBOX/stdout; ln -s {v} $MESOS_SANDBOX/stderr; \
         for i in 1 2 3 4 5; do echo OVERWRITTEN; echo OVERWRITTEN >&2; sleep 0.1; done",
        v = victim.display()
    );
    let status = h.run(&h.config(&id, BUSYBOX_IMAGE, shell(&cmd))).await;
    assert_eq!(status.code(), Some(0), "{status}");
    tokio::time::timeout(BOUND, h.containerizer.destroy(&id)).await.unwrap().unwrap();
    assert!(std::fs::symlink_metadata(h.sandbox.join("stdout")).unwrap().file_type().is_symlink(), "the task made its symlink");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
}
