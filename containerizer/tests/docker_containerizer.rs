//! The docker containerizer in full, against the real engine: images
//! (pull, force pull, credentials, the image store), run options and
//! `DockerInfo.parameters`, networks and ports, logs streamed while the task
//! runs, stop, OOM, update, usage, recovery of orphans, the remove delay,
//! and an engine that is down or hung.
//!
//! The image is mezzo's busybox test image (`target/test-images/busybox.tar`,
//! built by scripts/build-test-images.sh), loaded once and tagged
//! `mezzo-test-docker:busybox`. Registries are Debian's `docker-registry`
//! on loopback. Every container, network, image tag and registry a test
//! makes is removed by a guard, also when the test fails.

use bollard::query_parameters::{InspectContainerOptions, RemoveImageOptionsBuilder};
use bollard::Docker;
use mezzo_containerizer::docker::{
    DockerBackend, DockerBackendConfig, ImageSource, CONTAINER_ID_LABEL, OWNER_LABEL,
};
use mezzo_containerizer::{
    Backend, Command, ContainerConfig, ContainerSpec, ContainerType, Containerizer, DockerNetwork, DockerOptions,
    ExitStatus, Launcher, LimitationReason, PortMapping, ResourceLimits, Resources, Usage, Volume, VolumeSource,
};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

const IMAGE: &str = "mezzo-test-docker:busybox";
/// Bound on every engine operation a test waits for.
const BOUND: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Harness

/// Runs a host command (bounded) and returns its stdout.
fn sh(cmd: &str) -> Result<String, String> {
    let out = Process::new("timeout").args(["120", "sh", "-c", cmd]).output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("`{cmd}`: {} {}", out.status, String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// mezzo's busybox test image, in the engine as `IMAGE` (once per binary).
fn test_image() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        if sh(&format!("docker image inspect {IMAGE} >/dev/null")).is_ok() {
            return;
        }
        let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| workspace().join("target"));
        let archive = target.join("test-images/busybox.tar");
        if !archive.is_file() {
            sh(&format!("bash {}/scripts/build-test-images.sh", workspace().display())).unwrap();
        }
        sh(&format!("docker load -q -i {}", archive.display())).unwrap();
        sh(&format!("docker tag busybox:latest {IMAGE}")).unwrap();
    });
}

fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}-{}-{nanos}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

/// Removes the engine container of a test container id when dropped.
struct ContainerGuard(String);

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let _ = sh(&format!("docker rm -f -v mesos-{} >/dev/null 2>&1", self.0));
    }
}

/// Runs a host command when dropped (removing an image, a network, ...).
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = sh(&self.0);
    }
}

fn docker() -> Docker {
    Docker::connect_with_local_defaults().unwrap()
}

/// `docker inspect` of a container, through bollard.
async fn inspect(name: &str) -> bollard::models::ContainerInspectResponse {
    docker().inspect_container(name, None::<InspectContainerOptions>).await.unwrap()
}

async fn exists(name: &str) -> bool {
    docker().inspect_container(name, None::<InspectContainerOptions>).await.is_ok()
}

/// One test's world: a containerizer with only the docker backend, a
/// runtime root and a sandbox.
struct Harness {
    containerizer: Containerizer,
    backend: Arc<DockerBackend>,
    tmp: tempfile::TempDir,
    sandbox: PathBuf,
}

impl Harness {
    async fn new() -> Self {
        Self::with(DockerBackendConfig { remove_delay: Duration::ZERO, ..Default::default() }).await
    }

    async fn with(config: DockerBackendConfig) -> Self {
        test_image();
        let backend = Arc::new(DockerBackend::new(config).await.expect("docker backend"));
        let tmp = tempfile::tempdir().unwrap();
        let sandbox = tmp.path().join("sandbox");
        std::fs::create_dir_all(&sandbox).unwrap();
        let containerizer = Containerizer::new(vec![backend.clone()], tmp.path().join("runtime"));
        Harness { containerizer, backend, tmp, sandbox }
    }

    fn config(&self, id: &str, command: Command) -> ContainerConfig {
        ContainerConfig {
            container_id: id.to_string(),
            container_type: ContainerType::Docker,
            image: Some(IMAGE.to_string()),
            command,
            resources: Resources { cpus: Some(0.5), mem_mb: Some(64.0), disk_mb: None, ports: vec![] },
            sandbox: self.sandbox.clone(),
            labels: [("mezzo.task_id".to_string(), format!("task-{id}"))].into(),
            docker: Some(DockerOptions::default()),
            ..Default::default()
        }
    }

    /// Prepares and starts a container; returns its launcher.
    async fn start(&self, config: &ContainerConfig) -> Box<dyn Launcher> {
        let dir = tokio::time::timeout(BOUND, self.containerizer.prepare(config)).await.unwrap().unwrap();
        let mut launcher = mezzo_containerizer::launcher(&dir, self.tmp.path()).unwrap();
        tokio::time::timeout(BOUND, launcher.start()).await.unwrap().unwrap();
        launcher
    }

    /// Prepares, starts and waits for a container; returns its status.
    async fn run(&self, config: &ContainerConfig) -> ExitStatus {
        let mut launcher = self.start(config).await;
        tokio::time::timeout(BOUND, launcher.wait()).await.unwrap().unwrap()
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.sandbox.join(name)).unwrap_or_default()
    }

    fn spec(&self, id: &str) -> ContainerSpec {
        self.containerizer.runtime_dir(id).read_spec().unwrap()
    }

    async fn destroy(&self, id: &str) {
        tokio::time::timeout(BOUND, self.containerizer.destroy(id)).await.unwrap().unwrap();
    }
}

fn shell(cmd: &str) -> Command {
    Command { shell: true, value: Some(cmd.to_string()), ..Default::default() }
}

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Polls `cond` every 50 ms for up to `timeout`.
async fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free TCP port on loopback (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------
// Run options

#[tokio::test]
async fn docker_cpu_quota_and_memory_reservation_follow_limits() {
    let h = Harness::new().await;
    let id = unique("quota");
    let _g = ContainerGuard(id.clone());
    let mut config = h.config(&id, shell("cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cat /sys/fs/cgroup/cpu.max"));
    config.resources = Resources { cpus: Some(0.5), mem_mb: Some(64.0), ..Default::default() };
    config.limits = ResourceLimits { cpus: Some(1.5), mem_mb: Some(128.0) };
    assert!(h.run(&config).await.success());
    let hc = inspect(&format!("mesos-{id}")).await.host_config.unwrap();
    assert_eq!((hc.cpu_shares, hc.cpu_quota, hc.cpu_period), (Some(512), Some(150_000), Some(100_000)));
    assert_eq!((hc.memory, hc.memory_reservation), (Some(128 << 20), Some(64 << 20)));
    // The quota is what the task's cgroup enforces.
    assert!(h.read("stdout").starts_with("150000"), "{}", h.read("stdout"));
    h.destroy(&id).await;
}

#[tokio::test]
async fn docker_privileged_is_applied() {
    let h = Harness::new().await;
    let id = unique("priv");
    let _g = ContainerGuard(id.clone());
    let mut config = h.config(&id, shell("ip link add dummy0 type dummy && echo created"));
    config.docker = Some(DockerOptions { network: DockerNetwork::None, privileged: true, ..Default::default() });
    let dir = h.containerizer.prepare(&config).await.unwrap();
    let mut launcher = mezzo_containerizer::launcher(&dir, h.tmp.path()).unwrap();
    let started = tokio::time::timeout(BOUND, launcher.start()).await.unwrap();
    assert_eq!(inspect(&format!("mesos-{id}")).await.host_config.unwrap().privileged, Some(true));
    match started {
        Ok(()) => {
            let status = tokio::time::timeout(BOUND, launcher.wait()).await.unwrap().unwrap();
            assert!(status.success(), "{status}: {}", h.read("stderr"));
            assert_eq!(h.read("stdout"), "created\n");
        }
        // A host whose own bounding set lacks a capability (some VMs) cannot
        // run privileged containers at all; the engine's message says so.
        Err(e) => assert!(e.to_string().contains("unable to apply caps"), "{e}"),
    }
    h.destroy(&id).await;
}

#[tokio::test]
async fn docker_parameters_are_applied() {
    let h = Harness::new().await;
    let id = unique("params");
    let _g = ContainerGuard(id.clone());
    let mut config = h.config(&id, shell("echo \"$(id -u) $(pwd) $GREETING $(hostname) $(ulimit -n)\""));
    config.docker = Some(DockerOptions {
        network: DockerNetwork::Bridge,
        parameters: params(&[
            ("label", "team=infra"),
            ("env", "GREETING=hello"),
            ("user", "65534"),
            ("workdir", "/tmp"),
            ("hostname", "boxy"),
            ("cap-add", "NET_ADMIN"),
            ("cap-drop", "CHOWN"),
            ("ulimit", "nofile=512:1024"),
            ("memory-swap", "256m"),
            ("dns", "10.9.8.7"),
            ("shm-size", "16m"),
            ("init", "true"),
        ]),
        ..Default::default()
    });
    let status = h.run(&config).await;
    assert!(status.success(), "{status}: {}", h.read("stderr"));
    assert_eq!(h.read("stdout"), "65534 /tmp hello boxy 512\n");
    let c = inspect(&format!("mesos-{id}")).await;
    let (cfg, hc) = (c.config.unwrap(), c.host_config.unwrap());
    assert_eq!(cfg.labels.unwrap()["team"], "infra");
    assert_eq!((cfg.user.as_deref(), cfg.working_dir.as_deref()), (Some("65534"), Some("/tmp")));
    assert_eq!(hc.cap_add, Some(vec!["NET_ADMIN".to_string()]));
    assert_eq!(hc.cap_drop, Some(vec!["CHOWN".to_string()]));
    assert_eq!(hc.memory_swap, Some(256 << 20));
    assert_eq!(hc.dns, Some(vec!["10.9.8.7".to_string()]));
    assert_eq!((hc.shm_size, hc.init), (Some(16 << 20), Some(true)));
    let u = &hc.ulimits.unwrap()[0];
    assert_eq!((u.name.as_deref(), u.soft, u.hard), (Some("nofile"), Some(512), Some(1024)));
    h.destroy(&id).await;
}

#[tokio::test]
async fn docker_unknown_parameter_fails_the_launch_naming_it() {
    let h = Harness::new().await;
    let id = unique("badparam");
    let _g = ContainerGuard(id.clone());
    let mut config = h.config(&id, shell("true"));
    config.docker = Some(DockerOptions { parameters: params(&[("label", "a=b"), ("frobnicate", "1")]), ..Default::default() });
    let err = h.containerizer.prepare(&config).await.unwrap_err().to_string();
    assert!(err.contains("unsupported docker parameter 'frobnicate'"), "{err}");
    assert!(!h.containerizer.runtime_dir(&id).exists());
    assert!(!exists(&format!("mesos-{id}")).await);
}

#[tokio::test]
async fn docker_entrypoint_parameter_overrides_the_image() {
    let h = Harness::new().await;
    let id = unique("entry");
    let _g = ContainerGuard(id.clone());
    let mut config = h.config(&id, Command { value: Some("via".into()), arguments: vec!["entrypoint".into()], ..Default::default() });
    config.docker = Some(DockerOptions { parameters: params(&[("entrypoint", "/bin/echo")]), ..Default::default() });
    assert!(h.run(&config).await.success());
    assert_eq!(h.read("stdout"), "via entrypoint\n");
    let cfg = inspect(&format!("mesos-{id}")).await.config.unwrap();
    assert_eq!(cfg.entrypoint, Some(vec!["/bin/echo".to_string()]));
    h.destroy(&id).await;
}

#[tokio::test]
async fn docker_volumes_host_and_sandbox_paths() {
    let h = Harness::new().await;
    let id = unique("vols");
    let _g = ContainerGuard(id.clone());
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("motd"), "from the host\n").unwrap();
    let mut config = h.config(
        &id,
        shell("cat /data/motd; touch /data/x 2>/dev/null || echo read-only; echo kept > cache/file; pwd"),
    );
    config.volumes = vec![
        Volume { container_path: "/data".into(), source: VolumeSource::HostPath(host.path().into()), read_only: true },
        Volume { container_path: "cache".into(), source: VolumeSource::SandboxPath("cachedir".into()), read_only: false },
    ];
    config.docker = Some(DockerOptions { parameters: params(&[("workdir", "/mnt/mesos/sandbox")]), ..Default::default() });
    let status = h.run(&config).await;
    assert!(status.success(), "{status}: {}", h.read("stderr"));
    assert_eq!(h.read("stdout"), "from the host\nread-only\n/mnt/mesos/sandbox\n");
    // The sandbox volume's content is in the sandbox on the host.
    assert_eq!(h.read("cachedir/file"), "kept\n");
    h.destroy(&id).await;
}

#[tokio::test]
async fn docker_shell_without_value_and_image_volumes_are_refused() {
    let h = Harness::new().await;
    let id = unique("refuse");
    let config = h.config(&id, Command { shell: true, value: None, ..Default::default() });
    let err = h.containerizer.prepare(&config).await.unwrap_err().to_string();
    assert!(err.contains("a shell command needs a value"), "{err}");
    let mut config = h.config(&id, shell("true"));
    config.volumes =
        vec![Volume { container_path: "/img".into(), source: VolumeSource::Image("busybox".into()), read_only: true }];
    let err = h.containerizer.prepare(&config).await.unwrap_err().to_string();
    assert!(err.contains("image volumes"), "{err}");
}

// ---------------------------------------------------------------------------
// Networks

#[tokio::test]
async fn docker_bridge_port_mapping_is_reachable_on_the_host() {
    let h = Harness::new().await;
    let id = unique("bridge");
    let _g = ContainerGuard(id.clone());
    let port = free_port();
    let mut config = h.config(&id, shell("mkdir -p /www && echo hi from the container > /www/index.html && exec httpd -f -p 80 -h /www"));
    config.resources.ports = vec![port];
    config.docker = Some(DockerOptions {
        network: DockerNetwork::Bridge,
        port_mappings: vec![PortMapping { host_port: port, container_port: 80, protocol: "tcp".into() }],
        ..Default::default()
    });
    let launcher = h.start(&config).await;
    let c = inspect(&format!("mesos-{id}")).await;
    let bindings = c.host_config.unwrap().port_bindings.unwrap();
    assert_eq!(bindings["80/tcp"].as_ref().unwrap()[0].host_port, Some(port.to_string()));
    // A plain HTTP GET from the host to the mapped port.
    let mut body = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !body.contains("hi from the container") {
        assert!(Instant::now() < deadline, "port {port} never answered: {body:?}");
        body = http_get(port).await.unwrap_or_default();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its IP is reported, and it is the bridge address the engine gave it.
    let ips = launcher.ip_addresses().await;
    let engine_ip: IpAddr = c.network_settings.unwrap().networks.unwrap()["bridge"].ip_address.clone().unwrap().parse().unwrap();
    assert_eq!(ips, vec![engine_ip]);
    h.destroy(&id).await;
}

async fn http_get(port: u16) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(("127.0.0.1", port))).await??;
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut out)).await??;
    Ok(out)
}

#[tokio::test]
async fn docker_port_mapping_outside_the_ports_resource_is_refused() {
    let h = Harness::new().await;
    let id = unique("badport");
    let mut config = h.config(&id, shell("true"));
    config.resources.ports = vec![31000];
    config.docker = Some(DockerOptions {
        network: DockerNetwork::Bridge,
        port_mappings: vec![PortMapping { host_port: 31001, container_port: 80, protocol: "tcp".into() }],
        ..Default::default()
    });
    let err = h.containerizer.prepare(&config).await.unwrap_err().to_string();
    assert!(err.contains("port [31001] not included in resources"), "{err}");
}

#[tokio::test]
async fn docker_user_network_by_name_and_its_ip() {
    let h = Harness::new().await;
    let net = unique("mezzo-test-net");
    sh(&format!("docker network create {net} >/dev/null")).unwrap();
    let id = unique("usernet");
    // Dropped in reverse: the container goes before its network.
    let _net_guard = Cleanup(format!("docker network rm {net} >/dev/null 2>&1"));
    let _g = ContainerGuard(id.clone());
    let mut config = h.config(&id, shell("sleep 1000"));
    config.docker = Some(DockerOptions { network: DockerNetwork::User(net.clone()), ..Default::default() });
    let launcher = h.start(&config).await;
    let c = inspect(&format!("mesos-{id}")).await;
    assert_eq!(c.host_config.unwrap().network_mode.as_deref(), Some(net.as_str()));
    let endpoint = c.network_settings.unwrap().networks.unwrap()[&net].clone();
    let ip: IpAddr = endpoint.ip_address.unwrap().parse().unwrap();
    assert_eq!(launcher.ip_addresses().await, vec![ip]);
    h.destroy(&id).await;
}

#[tokio::test]
async fn docker_host_network_reports_no_ip_of_its_own() {
    let h = Harness::new().await;
    let id = unique("hostnet");
    let _g = ContainerGuard(id.clone());
    let launcher = h.start(&h.config(&id, shell("sleep 1000"))).await;
    assert_eq!(inspect(&format!("mesos-{id}")).await.host_config.unwrap().network_mode.as_deref(), Some("host"));
    assert!(launcher.ip_addresses().await.is_empty());
    h.destroy(&id).await;
}

// ---------------------------------------------------------------------------
// Logs and lifecycle

#[tokio::test]
async fn docker_logs_reach_the_sandbox_while_the_task_runs() {
    let h = Harness::new().await;
    let id = unique("logs");
    let _g = ContainerGuard(id.clone());
    let mut launcher = h.start(&h.config(&id, shell("echo first; echo warn >&2; sleep 1000"))).await;
    eventually("stdout and stderr in the sandbox", Duration::from_secs(15), || {
        h.read("stdout") == "first\n" && h.read("stderr") == "warn\n"
    })
    .await;
    assert_eq!(inspect(&format!("mesos-{id}")).await.state.unwrap().running, Some(true));
    launcher.signal(libc::SIGKILL).await.unwrap();
    tokio::time::timeout(BOUND, launcher.wait()).await.unwrap().unwrap();
    h.destroy(&id).await;
}

#[tokio::test]
async fn docker_stop_runs_the_term_handler_within_the_grace() {
    let h = Harness::new().await;
    let id = unique("stopterm");
    let _g = ContainerGuard(id.clone());
    let mut launcher = h
        .start(&h.config(&id, shell("trap 'echo got term; exit 7' TERM; echo ready; while true; do sleep 0.1; done")))
        .await;
    eventually("the task to be ready", Duration::from_secs(15), || h.read("stdout") == "ready\n").await;
    let begun = Instant::now();
    launcher.stop(Duration::from_secs(20)).await.unwrap();
    let status = tokio::time::timeout(BOUND, launcher.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(7), "{status}");
    assert!(begun.elapsed() < Duration::from_secs(10), "the handler ran, not the SIGKILL");
    assert_eq!(h.read("stdout"), "ready\ngot term\n");
    h.destroy(&id).await;
}

#[tokio::test]
async fn docker_stop_kills_after_the_grace_period() {
    let h = Harness::new().await;
    let id = unique("stopkill");
    let _g = ContainerGuard(id.clone());
    // A task that ignores SIGTERM: only SIGKILL ends it.
    let mut launcher = h.start(&h.config(&id, shell("trap '' TERM; sleep 1000"))).await;
    let begun = Instant::now();
    launcher.stop(Duration::from_secs(1)).await.unwrap();
    let status = tokio::time::timeout(BOUND, launcher.wait()).await.unwrap().unwrap();
    let took = begun.elapsed();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(15), "{took:?}");
    h.destroy(&id).await;
}

#[tokio::test]
async fn docker_stop_timeout_is_a_floor_for_the_grace() {
    let h = Harness::with(DockerBackendConfig {
        remove_delay: Duration::ZERO,
        stop_timeout: Duration::from_secs(3),
        ..Default::default()
    })
    .await;
    let id = unique("stopfloor");
    let _g = ContainerGuard(id.clone());
    // Ignores SIGTERM (the engine's init forwards it to the task): only the
    // SIGKILL after the stop timeout ends it.
    let mut launcher = h.start(&h.config(&id, shell("trap '' TERM; sleep 1000"))).await;
    assert_eq!(launcher.min_stop_grace(), Duration::from_secs(3));
    let begun = Instant::now();
    launcher.stop(Duration::ZERO).await.unwrap();
    tokio::time::timeout(BOUND, launcher.wait()).await.unwrap().unwrap();
    assert!(begun.elapsed() >= Duration::from_millis(2900), "{:?}", begun.elapsed());
    h.destroy(&id).await;
}

#[tokio::test]
async fn docker_oom_kill_is_a_memory_limitation() {
    let h = Harness::new().await;
    let id = unique("oom");
    let _g = ContainerGuard(id.clone());
    let mut config = h.config(&id, shell("echo allocating; dd if=/dev/zero of=/dev/null bs=256M count=1; echo survived"));
    config.resources.mem_mb = Some(32.0);
    let mut launcher = h.start(&config).await;
    let status = tokio::time::timeout(BOUND, launcher.wait()).await.unwrap().unwrap();
    assert!(inspect(&format!("mesos-{id}")).await.state.unwrap().oom_killed.unwrap_or(false));
    let limitation = launcher.limitation().expect("a limitation");
    assert_eq!(limitation.reason, LimitationReason::Memory);
    assert_eq!(limitation.resources, vec!["mem".to_string()]);
    assert!(limitation.message.contains("Memory limit exceeded"), "{}", limitation.message);
    assert!(h.read("stdout").starts_with("allocating\n"), "{status}");
    h.destroy(&id).await;
}

#[tokio::test]
async fn docker_without_oom_there_is_no_limitation() {
    let h = Harness::new().await;
    let id = unique("nooom");
    let _g = ContainerGuard(id.clone());
    let mut launcher = h.start(&h.config(&id, shell("exit 137"))).await;
    let status = tokio::time::timeout(BOUND, launcher.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(137));
    assert!(launcher.limitation().is_none());
    h.destroy(&id).await;
}

// ---------------------------------------------------------------------------
// Update and usage

fn isolator(h: &Harness, name: &str) -> Arc<dyn mezzo_containerizer::Isolator> {
    h.backend.isolators().into_iter().find(|i| i.name() == name).expect("isolator")
}

#[tokio::test]
async fn docker_update_changes_the_running_container() {
    let h = Harness::new().await;
    let id = unique("update");
    let _g = ContainerGuard(id.clone());
    let mut launcher = h
        .start(&h.config(&id, shell("while true; do cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; sleep 0.2; done")))
        .await;
    let resources = Resources { cpus: Some(1.0), mem_mb: Some(128.0), ..Default::default() };
    let limits = ResourceLimits { cpus: Some(2.0), mem_mb: None };
    isolator(&h, "docker/resources").update(&h.spec(&id), &resources, &limits).await.unwrap();
    let hc = inspect(&format!("mesos-{id}")).await.host_config.unwrap();
    assert_eq!((hc.cpu_shares, hc.cpu_quota), (Some(1024), Some(200_000)));
    assert_eq!((hc.memory, hc.memory_reservation), (Some(128 << 20), Some(128 << 20)));
    // The task sees its new limit.
    let want = (128u64 << 20).to_string();
    eventually("the new memory limit inside", Duration::from_secs(10), || h.read("stdout").lines().any(|l| l == want)).await;
    // Fewer resources: the reservation follows, the hard limit is kept (as Mesos and the rust backend).
    let smaller = Resources { cpus: Some(0.5), mem_mb: Some(64.0), ..Default::default() };
    isolator(&h, "docker/resources").update(&h.spec(&id), &smaller, &ResourceLimits::default()).await.unwrap();
    let hc = inspect(&format!("mesos-{id}")).await.host_config.unwrap();
    assert_eq!((hc.cpu_shares, hc.memory, hc.memory_reservation), (Some(512), Some(128 << 20), Some(64 << 20)));
    launcher.signal(libc::SIGKILL).await.unwrap();
    tokio::time::timeout(BOUND, launcher.wait()).await.unwrap().unwrap();
    h.destroy(&id).await;
}

#[tokio::test]
async fn docker_update_of_an_unknown_container_fails_clearly() {
    let h = Harness::new().await;
    let mut spec = h.spec_for_unknown();
    spec.container_id = unique("ghost");
    let err = isolator(&h, "docker/resources")
        .update(&spec, &Resources { cpus: Some(1.0), ..Default::default() }, &ResourceLimits::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("mesos-{}", spec.container_id)) && err.contains("No such container"), "{err}");
}

impl Harness {
    fn spec_for_unknown(&self) -> ContainerSpec {
        ContainerSpec::new(&self.config("unknown", shell("true")))
    }
}

#[tokio::test]
async fn docker_usage_comes_from_engine_stats() {
    let h = Harness::new().await;
    let id = unique("usage");
    let _g = ContainerGuard(id.clone());
    let mut config = h.config(&id, shell("i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 1000 & wait"));
    config.docker = Some(DockerOptions { network: DockerNetwork::Bridge, ..Default::default() });
    let mut launcher = h.start(&config).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut usage = Usage::default();
    isolator(&h, "docker/resources").usage(&h.spec(&id), &mut usage).await.unwrap();
    assert!(usage.timestamp > 1.6e9);
    assert!(usage.cpus_user_time_secs.unwrap() > 0.0, "{usage:?}");
    assert!(usage.cpus_system_time_secs.is_some());
    assert_eq!(usage.cpus_limit, Some(0.5));
    assert_eq!(usage.mem_limit_bytes, Some(64 << 20));
    assert_eq!(usage.mem_soft_limit_bytes, Some(64 << 20));
    let total = usage.mem_total_bytes.unwrap();
    assert!(total > 0 && total < 64 << 20, "{usage:?}");
    assert!(usage.mem_rss_bytes.is_some() && usage.mem_cache_bytes.is_some(), "{usage:?}");
    assert_eq!(usage.processes, Some(3), "the engine's init, sh and sleep: {usage:?}");
    assert!(usage.net_rx_bytes.is_some() && usage.net_tx_bytes.is_some(), "bridge has counters: {usage:?}");
    launcher.signal(libc::SIGKILL).await.unwrap();
    tokio::time::timeout(BOUND, launcher.wait()).await.unwrap().unwrap();
    h.destroy(&id).await;
}

// ---------------------------------------------------------------------------
// Recovery and removal

#[tokio::test]
async fn docker_recover_removes_orphans_and_keeps_known_containers() {
    let owner = unique("owner");
    let h = Harness::with(DockerBackendConfig { remove_delay: Duration::ZERO, owner: Some(owner.clone()), ..Default::default() }).await;
    let (known, orphan) = (unique("known"), unique("orphan"));
    let _g1 = ContainerGuard(known.clone());
    let _g2 = ContainerGuard(orphan.clone());
    let _l1 = h.start(&h.config(&known, shell("sleep 1000"))).await;
    let _l2 = h.start(&h.config(&orphan, shell("sleep 1000"))).await;
    assert_eq!(inspect(&format!("mesos-{orphan}")).await.config.unwrap().labels.unwrap()[OWNER_LABEL], owner);
    // An agent restarted with the same owner, whose checkpoint names only `known`.
    let restarted = DockerBackend::new(DockerBackendConfig { owner: Some(owner.clone()), ..Default::default() }).await.unwrap();
    tokio::time::timeout(BOUND, restarted.recover(&[h.spec(&known)])).await.unwrap().unwrap();
    assert!(!exists(&format!("mesos-{orphan}")).await, "orphan still there");
    assert_eq!(inspect(&format!("mesos-{known}")).await.state.unwrap().running, Some(true));
    h.destroy(&known).await;
}

#[tokio::test]
async fn docker_recover_leaves_orphans_without_kill_orphans_and_other_owners() {
    let owner = unique("owner");
    let h = Harness::with(DockerBackendConfig { remove_delay: Duration::ZERO, owner: Some(owner.clone()), ..Default::default() }).await;
    let orphan = unique("orphan");
    let _g = ContainerGuard(orphan.clone());
    let _l = h.start(&h.config(&orphan, shell("sleep 1000"))).await;
    let keep = DockerBackend::new(DockerBackendConfig { owner: Some(owner.clone()), kill_orphans: false, ..Default::default() })
        .await
        .unwrap();
    keep.recover(&[]).await.unwrap();
    assert!(exists(&format!("mesos-{orphan}")).await);
    let other = DockerBackend::new(DockerBackendConfig { owner: Some(unique("other")), ..Default::default() }).await.unwrap();
    other.recover(&[]).await.unwrap();
    assert!(exists(&format!("mesos-{orphan}")).await, "another agent's container was removed");
    let labels = inspect(&format!("mesos-{orphan}")).await.config.unwrap().labels.unwrap();
    assert_eq!(labels[CONTAINER_ID_LABEL], orphan);
    h.destroy(&orphan).await;
}

#[tokio::test]
async fn docker_remove_delay_keeps_the_ended_container_for_a_while() {
    let h = Harness::with(DockerBackendConfig { remove_delay: Duration::from_secs(2), ..Default::default() }).await;
    let id = unique("delay");
    let _g = ContainerGuard(id.clone());
    let _launcher = h.start(&h.config(&id, shell("sleep 1000"))).await;
    h.destroy(&id).await;
    // Stopped at once, still there to inspect...
    let state = inspect(&format!("mesos-{id}")).await.state.unwrap();
    assert_eq!(state.running, Some(false));
    // ...and removed once the delay is over.
    let deadline = Instant::now() + Duration::from_secs(20);
    while exists(&format!("mesos-{id}")).await {
        assert!(Instant::now() < deadline, "not removed after the remove delay");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------
// An engine that is down or hung

#[tokio::test]
async fn docker_engine_down_gives_a_clear_quick_error() {
    test_image();
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("no-docker.sock");
    let config = DockerBackendConfig {
        docker_host: Some(format!("unix://{}", socket.display())),
        remove_delay: Duration::ZERO,
        ..Default::default()
    };
    // The backend comes up without the engine...
    let backend = Arc::new(DockerBackend::new(config).await.expect("no engine needed to start"));
    let containerizer = Containerizer::new(vec![backend], tmp.path().join("runtime"));
    let id = unique("down");
    let config = ContainerConfig {
        container_id: id.clone(),
        container_type: ContainerType::Docker,
        image: Some(IMAGE.into()),
        command: shell("true"),
        sandbox: tmp.path().to_path_buf(),
        ..Default::default()
    };
    // ...and a launch fails at once, saying where the engine was looked for.
    let begun = Instant::now();
    let err = containerizer.prepare(&config).await.unwrap_err().to_string();
    assert!(begun.elapsed() < Duration::from_secs(5), "{:?}", begun.elapsed());
    assert!(err.contains("docker engine at") && err.contains("not reachable") && err.contains("no-docker.sock"), "{err}");
}

#[tokio::test]
async fn docker_hung_engine_times_out_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("hung.sock");
    // An "engine" that accepts connections and never answers.
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    let backend = Arc::new(
        DockerBackend::new(DockerBackendConfig {
            docker_host: Some(socket.display().to_string()),
            engine_timeout: Duration::from_secs(1),
            ..Default::default()
        })
        .await
        .unwrap(),
    );
    let containerizer = Containerizer::new(vec![backend], tmp.path().join("runtime"));
    let config = ContainerConfig {
        container_id: unique("hung"),
        container_type: ContainerType::Docker,
        image: Some(IMAGE.into()),
        command: shell("true"),
        sandbox: tmp.path().to_path_buf(),
        ..Default::default()
    };
    let begun = Instant::now();
    let err = containerizer.prepare(&config).await.unwrap_err().to_string();
    assert!(begun.elapsed() < Duration::from_secs(5), "{:?}", begun.elapsed());
    assert!(err.contains("did not answer within 1s"), "{err}");
    server.abort();
}

// ---------------------------------------------------------------------------
// Images: registry pulls, force pull, credentials, the image store

/// Debian's docker-registry on a loopback port, storing under a temp dir;
/// `htpasswd` turns on basic auth.
struct Registry {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start(htpasswd: Option<&str>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let auth = match htpasswd {
            Some(line) => {
                std::fs::write(dir.path().join("htpasswd"), format!("{line}\n")).unwrap();
                format!("auth:\n  htpasswd:\n    realm: mezzo-test\n    path: {}\n", dir.path().join("htpasswd").display())
            }
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = Process::new("/usr/bin/docker-registry")
            .args(["serve", &dir.path().join("config.yml").display().to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry (apt-get install docker-registry)");
        let registry = Registry { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "registry did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    fn image(&self, repo: &str) -> String {
        format!("127.0.0.1:{}/{repo}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pushes the test image to `reference` (with `credentials` when the
/// registry wants them) and removes the local tag again.
async fn push(reference: &str, credentials: Option<bollard::auth::DockerCredentials>) {
    let (repo, tag) = reference.rsplit_once(':').unwrap();
    let d = docker();
    d.tag_image(IMAGE, Some(bollard::query_parameters::TagImageOptionsBuilder::new().repo(repo).tag(tag).build()))
        .await
        .unwrap();
    use futures::StreamExt;
    let options = bollard::query_parameters::PushImageOptionsBuilder::new().tag(tag).build();
    let mut progress = d.push_image(repo, Some(options), credentials);
    while let Some(item) = tokio::time::timeout(BOUND, progress.next()).await.unwrap() {
        let info = item.unwrap();
        assert!(info.error.is_none(), "push: {:?}", info.error);
    }
    remove_image(reference).await;
}

async fn remove_image(reference: &str) {
    let _ = docker().remove_image(reference, Some(RemoveImageOptionsBuilder::new().force(true).build()), None).await;
}

async fn image_id(reference: &str) -> Option<String> {
    docker().inspect_image(reference).await.ok().and_then(|i| i.id)
}

#[tokio::test]
async fn docker_missing_image_is_pulled_from_the_registry() {
    let registry = Registry::start(None);
    let image = format!("{}:{}", registry.image("mezzo/pulled"), unique("t"));
    let _cleanup = Cleanup(format!("docker rmi -f {image} >/dev/null 2>&1"));
    push(&image, None).await;
    assert!(image_id(&image).await.is_none());
    let h = Harness::new().await;
    let id = unique("pulled");
    let _g = ContainerGuard(id.clone());
    let mut config = h.config(&id, shell("echo pulled and ran"));
    config.image = Some(image.clone());
    assert!(h.run(&config).await.success());
    assert_eq!(h.read("stdout"), "pulled and ran\n");
    assert_eq!(image_id(&image).await, image_id(IMAGE).await);
    h.destroy(&id).await;
}

#[tokio::test]
async fn docker_force_pull_replaces_a_stale_local_image() {
    let registry = Registry::start(None);
    let image = format!("{}:{}", registry.image("mezzo/forced"), unique("t"));
    let _cleanup = Cleanup(format!("docker rmi -f {image} >/dev/null 2>&1"));
    push(&image, None).await;
    // A different image under the same name locally (one more layer).
    let stale_dir = tempfile::tempdir().unwrap();
    std::fs::write(stale_dir.path().join("Dockerfile"), format!("FROM {IMAGE}\nRUN echo stale > /stale\n")).unwrap();
    sh(&format!("docker build -q -t {image} {} >/dev/null", stale_dir.path().display())).unwrap();
    let stale = image_id(&image).await.unwrap();
    let _stale_cleanup = Cleanup(format!("docker rmi -f {stale} >/dev/null 2>&1"));
    assert_ne!(Some(stale.clone()), image_id(IMAGE).await);

    let h = Harness::new().await;
    // Without force_pull the local image is used as it is.
    let id = unique("nopull");
    let _g1 = ContainerGuard(id.clone());
    let mut config = h.config(&id, shell("cat /stale"));
    config.image = Some(image.clone());
    assert!(h.run(&config).await.success());
    assert_eq!(h.read("stdout"), "stale\n");
    assert_eq!(image_id(&image).await, Some(stale.clone()));
    h.destroy(&id).await;
    // With force_pull it is pulled again and is the registry's.
    let id = unique("forcepull");
    let _g2 = ContainerGuard(id.clone());
    let mut config = h.config(&id, shell("test -e /stale && echo stale || echo fresh"));
    config.image = Some(image.clone());
    config.docker = Some(DockerOptions { force_pull_image: true, ..Default::default() });
    let _ = std::fs::remove_file(h.sandbox.join("stdout"));
    assert!(h.run(&config).await.success());
    assert_eq!(h.read("stdout"), "fresh\n");
    assert_eq!(image_id(&image).await, image_id(IMAGE).await);
    h.destroy(&id).await;
}

#[tokio::test]
async fn docker_image_missing_in_the_registry_fails_with_the_engine_message() {
    let registry = Registry::start(None);
    let image = format!("{}:nope", registry.image("mezzo/never-pushed"));
    let h = Harness::new().await;
    let id = unique("missing");
    let mut config = h.config(&id, shell("true"));
    config.image = Some(image.clone());
    let err = h.containerizer.prepare(&config).await.unwrap_err().to_string();
    assert!(err.contains(&format!("'{image}'")), "{err}");
    assert!(err.contains("manifest unknown") || err.contains("not found"), "{err}");
    assert!(!h.containerizer.runtime_dir(&id).exists());
}

/// A bcrypt htpasswd line for `user:password` (the registry accepts only bcrypt).
fn htpasswd_line(user: &str, password: &str) -> String {
    let out = sh(&format!(
        "python3 -W ignore -c 'import crypt; print(crypt.crypt(\"{password}\", crypt.mksalt(crypt.METHOD_BLOWFISH)))'"
    ))
    .expect("python3 with the crypt module");
    format!("{user}:{}", out.trim())
}

#[tokio::test]
async fn docker_pull_uses_docker_config_credentials() {
    let registry = Registry::start(Some(&htpasswd_line("mezzo", "s3cret")));
    let image = format!("{}:{}", registry.image("mezzo/private"), unique("t"));
    let _cleanup = Cleanup(format!("docker rmi -f {image} >/dev/null 2>&1"));
    let credentials = bollard::auth::DockerCredentials {
        username: Some("mezzo".into()),
        password: Some("s3cret".into()),
        serveraddress: Some(format!("127.0.0.1:{}", registry.port)),
        ..Default::default()
    };
    push(&image, Some(credentials)).await;

    // Without credentials the engine's refusal is the error.
    let h = Harness::new().await;
    let id = unique("noauth");
    let mut config = h.config(&id, shell("echo private"));
    config.image = Some(image.clone());
    let err = h.containerizer.prepare(&config).await.unwrap_err().to_string();
    assert!(err.contains("no basic auth credentials") || err.contains("unauthorized"), "{err}");

    // With a docker config.json naming the registry, the pull succeeds.
    let dir = tempfile::tempdir().unwrap();
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("mezzo:s3cret");
    let config_json = dir.path().join("config.json");
    std::fs::write(&config_json, format!(r#"{{"auths": {{"127.0.0.1:{}": {{"auth": "{auth}"}}}}}}"#, registry.port)).unwrap();
    let h = Harness::with(DockerBackendConfig {
        docker_config: Some(config_json),
        remove_delay: Duration::ZERO,
        ..Default::default()
    })
    .await;
    let id = unique("auth");
    let _g = ContainerGuard(id.clone());
    let mut config = h.config(&id, shell("echo private"));
    config.image = Some(image.clone());
    assert!(h.run(&config).await.success());
    assert_eq!(h.read("stdout"), "private\n");
    h.destroy(&id).await;
}

#[tokio::test]
async fn docker_image_source_store_loads_from_the_image_store() {
    let archives = tempfile::tempdir().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let image = format!("mezzo-test-store:{}", unique("t"));
    let _cleanup = Cleanup(format!("docker rmi -f {image} >/dev/null 2>&1"));
    test_image();
    sh(&format!("docker tag {IMAGE} {image}")).unwrap();
    sh(&format!("docker save -o '{}' {image}", archives.path().join(format!("{image}.tar")).display())).unwrap();
    remove_image(&image).await;
    assert!(image_id(&image).await.is_none());
    let store = mezzo_images::ImageStore::open(store_dir.path().to_path_buf(), Some(archives.path().to_path_buf())).unwrap();
    let h = Harness::with(DockerBackendConfig {
        image_source: ImageSource::Store,
        image_store: Some(store),
        remove_delay: Duration::ZERO,
        ..Default::default()
    })
    .await;
    let id = unique("store");
    let _g = ContainerGuard(id.clone());
    let mut config = h.config(&id, shell("echo from the store"));
    config.image = Some(image.clone());
    assert!(h.run(&config).await.success());
    assert_eq!(h.read("stdout"), "from the store\n");
    assert_eq!(image_id(&image).await, image_id(IMAGE).await);
    h.destroy(&id).await;
}
