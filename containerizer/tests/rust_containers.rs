//! Real containers through the rust backend: run as root, each test with
//! its own runtime root and cgroups root, cleaned up at the end.

use mezzo_containerizer::isolators::{CgroupFs, Provisioner};
use mezzo_containerizer::rust::{RustBackend, RustBackendConfig};
use mezzo_containerizer::{Backend, Command, ContainerConfig, ContainerType, Containerizer, ExitStatus, Launcher, Resources};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn launcher_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_mezzo-launcher")).parent().unwrap().to_path_buf()
}

/// Every mounted cgroup hierarchy (v1 controllers and v2).
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

fn host_mounts_under(prefix: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|m| Path::new(m).starts_with(prefix))
        .collect()
}

struct Harness {
    tmp: tempfile::TempDir,
    cgroups_root: String,
    containerizer: Containerizer,
}

impl Harness {
    fn new(tag: &str, provisioner: Option<Arc<dyn Provisioner>>) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let cgroups_root = format!("mezzo-test-{}-{tag}", std::process::id());
        let runtime_root = tmp.path().join("runtime");
        std::fs::create_dir_all(&runtime_root).unwrap();
        let backend = RustBackend::new(RustBackendConfig {
            runtime_root: runtime_root.clone(),
            provisioner,
            cgroups_root: cgroups_root.clone(),
            launcher_dir: launcher_dir(),
            ..Default::default()
        })
        .expect("backend");
        let containerizer = Containerizer::new(vec![Arc::new(backend) as Arc<dyn Backend>], runtime_root);
        Harness { tmp, cgroups_root, containerizer }
    }

    fn runtime_root(&self) -> PathBuf {
        self.tmp.path().join("runtime")
    }

    fn config(&self, id: &str, command: Command) -> ContainerConfig {
        let sandbox = self.tmp.path().join("sandboxes").join(id);
        std::fs::create_dir_all(&sandbox).unwrap();
        ContainerConfig {
            container_id: id.to_string(),
            container_type: ContainerType::Mesos,
            image: None,
            command,
            resources: Resources { cpus: Some(0.5), mem_mb: Some(64.0), disk_mb: None, ports: vec![] },
            sandbox,
            hostname: None,
            labels: Default::default(),
            ..Default::default()
        }
    }

    /// The container's cgroup in v1 hierarchy `controller`, or its one v2 cgroup.
    fn cgroup(&self, controller: &str, id: &str) -> PathBuf {
        CgroupFs::detect().dir(controller, &format!("/{}/{id}", self.cgroups_root))
    }

    fn memory_cgroup(&self, id: &str) -> PathBuf {
        self.cgroup("memory", id)
    }

    async fn start(&self, config: &ContainerConfig) -> Box<dyn Launcher> {
        let dir = self.containerizer.prepare(config).await.expect("prepare");
        let mut launcher = mezzo_containerizer::launcher(&dir, &launcher_dir()).expect("launcher");
        tokio::time::timeout(WAIT, launcher.start()).await.expect("start in time").expect("start");
        launcher
    }

    /// Runs `config` to its end; returns its status and stdout.
    async fn run(&self, config: &ContainerConfig) -> (ExitStatus, String, String) {
        let mut launcher = self.start(config).await;
        let status = tokio::time::timeout(WAIT, launcher.wait()).await.expect("end in time").expect("wait");
        let out = std::fs::read_to_string(config.sandbox.join("stdout")).unwrap_or_default();
        let err = std::fs::read_to_string(config.sandbox.join("stderr")).unwrap_or_default();
        self.containerizer.destroy(&config.container_id).await.expect("destroy");
        (status, out, err)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Only the shared parent should be left; rmdir refuses anything else.
        for m in cgroup_mounts() {
            let _ = std::fs::remove_dir(m.join(&self.cgroups_root));
        }
    }
}

fn shell(cmd: &str) -> Command {
    Command { shell: true, value: Some(cmd.to_string()), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread")]
async fn host_echo_writes_stdout_and_exits_zero() {
    mezzo_testkit::require_root!();
    let h = Harness::new("echo", None);
    let c = h.config("echo", shell("echo hi; pwd; echo \"sb=$MESOS_SANDBOX\""));
    let (status, out, err) = h.run(&c).await;
    assert!(status.success(), "{status}: {err}");
    let sandbox = c.sandbox.display().to_string();
    assert_eq!(out, format!("hi\n{sandbox}\nsb={sandbox}\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_code_comes_back() {
    mezzo_testkit::require_root!();
    let h = Harness::new("exit", None);
    let (status, _, err) = h.run(&h.config("exit3", shell("exit 3"))).await;
    assert_eq!(status.code(), Some(3), "{status}: {err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_limit_applies_and_sigkill_ends_it() {
    mezzo_testkit::require_root!();
    let h = Harness::new("mem", None);
    let c = h.config("mem", shell("sleep 1000"));
    let mut launcher = h.start(&c).await;
    let cg = h.memory_cgroup("mem");
    let read = |dir: &Path, file: &str| std::fs::read_to_string(dir.join(file)).unwrap().trim().to_string();
    // The request is both limits; the cpu share is 0.5 cpus' (v1's shares, v2's weight).
    let (hard, soft, cpu_file, cpu_value) = if CgroupFs::detect().is_v2() {
        ("memory.max", "memory.low", "cpu.weight", "50")
    } else {
        ("memory.limit_in_bytes", "memory.soft_limit_in_bytes", "cpu.shares", "512")
    };
    assert_eq!(read(&cg, hard), (64u64 << 20).to_string());
    assert_eq!(read(&cg, soft), (64u64 << 20).to_string());
    assert_eq!(read(&h.cgroup("cpu", "mem"), cpu_file), cpu_value);
    assert!(!read(&cg, "cgroup.procs").is_empty());
    launcher.signal(libc::SIGKILL).await.expect("signal");
    let status = tokio::time::timeout(WAIT, launcher.wait()).await.expect("end in time").expect("wait");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    h.containerizer.destroy("mem").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn task_sees_only_its_own_processes() {
    mezzo_testkit::require_root!();
    let h = Harness::new("pidns", None);
    let c = h.config("pidns", shell("echo $$; ls /proc | grep -c '^[0-9][0-9]*$'"));
    let (status, out, err) = h.run(&c).await;
    assert!(status.success(), "{status}: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "2", "the task runs under the container's init: {out}");
    // init, sh, ls and grep at most.
    assert!(lines[1].parse::<u32>().unwrap() <= 4, "{out}");
}

/// A task that does not trap SIGTERM still ends on it: the container's init
/// is PID 1 (whose SIGTERM the kernel would drop), not the task. The task's
/// own status comes back, a signal death as such.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_ends_a_task_that_does_not_trap_it() {
    mezzo_testkit::require_root!();
    let h = Harness::new("untrapped", None);
    for (name, command) in [("direct", Command { value: Some("sleep".into()), arguments: vec!["sleep".into(), "1000".into()], shell: false, ..Default::default() }), ("shell", shell("sleep 1000"))] {
        let c = h.config(name, command);
        let mut launcher = h.start(&c).await;
        let begun = std::time::Instant::now();
        launcher.signal(libc::SIGTERM).await.expect("signal");
        let status = tokio::time::timeout(WAIT, launcher.wait()).await.expect("end in time").expect("wait");
        assert_eq!(status.signal(), Some(libc::SIGTERM), "{name}: {status}");
        assert_eq!(status.to_string(), "terminated with signal Terminated");
        assert!(begun.elapsed() < Duration::from_secs(1), "{name}: SIGTERM took {:?}", begun.elapsed());
        h.containerizer.destroy(name).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_is_forwarded_to_the_task() {
    mezzo_testkit::require_root!();
    let h = Harness::new("term", None);
    let c = h.config("term", shell("trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.1; done"));
    let mut launcher = h.start(&c).await;
    // The trap must be installed before the signal comes.
    let deadline = std::time::Instant::now() + WAIT;
    while !std::fs::read_to_string(c.sandbox.join("stdout")).unwrap_or_default().contains("ready") {
        assert!(std::time::Instant::now() < deadline, "task never got ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    launcher.signal(libc::SIGTERM).await.expect("signal");
    let status = tokio::time::timeout(WAIT, launcher.wait()).await.expect("end in time").expect("wait");
    assert_eq!(status.code(), Some(7), "{status}");
    assert!(std::fs::read_to_string(c.sandbox.join("stdout")).unwrap().contains("got-term"));
    h.containerizer.destroy("term").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_program_fails_start_with_reason() {
    mezzo_testkit::require_root!();
    let h = Harness::new("noprog", None);
    let c = h.config("noprog", Command { value: Some("/no/such/program".into()), ..Default::default() });
    let dir = h.containerizer.prepare(&c).await.unwrap();
    let mut launcher = mezzo_containerizer::launcher(&dir, &launcher_dir()).unwrap();
    let err = tokio::time::timeout(WAIT, launcher.start()).await.expect("no hang").unwrap_err();
    eprintln!("start error: {err}");
    assert!(err.to_string().contains("/no/such/program"), "{err}");
    h.containerizer.destroy("noprog").await.unwrap();
    assert!(!h.memory_cgroup("noprog").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn destroy_removes_processes_cgroups_and_mounts() {
    mezzo_testkit::require_root!();
    let h = Harness::new("destroy", None);
    let c = h.config("destroy", shell("sleep 1000 & sleep 1000"));
    let mut launcher = h.start(&c).await;
    let cg = h.memory_cgroup("destroy");
    let deadline = std::time::Instant::now() + WAIT;
    let pids: Vec<i32> = loop {
        let pids: Vec<i32> = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap().lines().map(|l| l.parse().unwrap()).collect();
        if pids.len() >= 2 || std::time::Instant::now() > deadline {
            break pids;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(pids.len() >= 2, "{pids:?}");
    tokio::time::timeout(WAIT, h.containerizer.destroy("destroy")).await.unwrap().expect("destroy");
    let status = tokio::time::timeout(WAIT, launcher.wait()).await.expect("end in time");
    // The supervisor may have been killed by destroy before it recorded
    // anything only if it hung; here it records the SIGKILL.
    assert_eq!(status.expect("wait").signal(), Some(libc::SIGKILL));
    for pid in pids {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "process {pid} survived destroy");
    }
    for m in cgroup_mounts() {
        assert!(!m.join(&h.cgroups_root).join("destroy").exists(), "cgroup left in {}", m.display());
    }
    assert!(host_mounts_under(&h.runtime_root()).is_empty());
    assert!(!h.runtime_root().join("destroy").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn destroy_of_unknown_container_is_ok() {
    let h = Harness::new("unknown", None);
    h.containerizer.destroy("never-existed").await.expect("destroy unknown");
    let backend = RustBackend::new(RustBackendConfig {
        runtime_root: h.runtime_root(),
        provisioner: None,
        cgroups_root: h.cgroups_root.clone(),
        launcher_dir: launcher_dir(),
        ..Default::default()
    })
    .expect("backend");
    // A half-prepared container: a runtime directory and nothing else.
    let dir = mezzo_containerizer::RuntimeDir::of(&h.runtime_root(), "half");
    dir.create().unwrap();
    backend.destroy("half", &dir).await.expect("destroy half-prepared");
}

/// Cgroup v1 placement by the supervisor (`Placement`): only on v1 hosts.
fn is_v1_host() -> bool {
    let v1 = !mezzo_containerizer::isolators::CgroupFs::detect().is_v2();
    if !v1 {
        mezzo_testkit::skip("needs cgroup v1 (this host is v2)");
    }
    v1
}

/// The `/proc/<pid>/cgroup` line of v1 hierarchy `name`.
fn proc_cgroup_of(pid: &str, name: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    mezzo_containerizer::rust::own_cgroup(&text, name).unwrap_or_else(|| panic!("no {name} line in {text}")).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn v1_container_is_in_its_cgroups_and_its_supervisor_is_not() {
    mezzo_testkit::require_root!();
    if !is_v1_host() {
        return;
    }
    let h = Harness::new("placed", None);
    let c = h.config("placed", shell("sleep 30"));
    let mut launcher = h.start(&c).await;
    let dir = mezzo_containerizer::RuntimeDir::of(&h.runtime_root(), "placed");
    let init = dir.pid().unwrap().expect("init pid recorded").to_string();
    let supervisor = dir.launcher_pid().unwrap().expect("supervisor pid recorded").to_string();
    let own = format!("/{}/placed", h.cgroups_root);
    for hierarchy in ["cpu", "cpuacct", "memory", "pids", "freezer", "devices"] {
        assert_eq!(proc_cgroup_of(init.trim(), hierarchy), own, "init in {hierarchy}");
        assert_ne!(proc_cgroup_of(supervisor.trim(), hierarchy), own, "supervisor left {hierarchy}");
    }
    // The limits the isolators wrote are the container's.
    let limit = std::fs::read_to_string(h.memory_cgroup("placed").join("memory.limit_in_bytes")).unwrap();
    assert_eq!(limit.trim(), (64u64 << 20).to_string());
    h.containerizer.destroy("placed").await.expect("destroy");
    let status = tokio::time::timeout(WAIT, launcher.wait()).await.expect("end in time").expect("wait");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    for m in cgroup_mounts() {
        assert!(!m.join(&h.cgroups_root).join("placed").exists(), "cgroup left in {}", m.display());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn v1_container_sees_its_own_cgroups_read_only() {
    mezzo_testkit::require_root!();
    if !is_v1_host() {
        return;
    }
    let h = Harness::new("view", None);
    let c = h.config(
        "view",
        shell(
            "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; cat /sys/fs/cgroup/pids/cgroup.procs | wc -l; \
             ls /sys/fs/cgroup/freezer/freezer.state; \
             touch /sys/fs/cgroup/x 2>/dev/null && echo writable || echo read-only; \
             echo 1 > /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null && echo writable || echo read-only; \
             ls /sys/fs/cgroup | tr '\\n' ' '",
        ),
    );
    let (status, out, err) = h.run(&c).await;
    assert!(status.success(), "{status}: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], (64u64 << 20).to_string(), "memory limit seen inside: {out}");
    // The container's init, sh, cat and wc: its own processes, no host's.
    assert!(lines[1].trim().parse::<u32>().unwrap() <= 4, "{out}");
    assert_eq!(lines[2], "/sys/fs/cgroup/freezer/freezer.state");
    assert_eq!(&lines[3..5], ["read-only", "read-only"], "{out}");
    // One entry per hierarchy the container is placed in, by its name.
    assert_eq!(lines[5].trim(), "cpu cpuacct devices freezer memory pids", "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn v1_devices_outside_the_allow_list_cannot_be_opened() {
    mezzo_testkit::require_root!();
    if !is_v1_host() {
        return;
    }
    if !Path::new("/dev/loop-control").exists() {
        mezzo_testkit::skip("no /dev/loop-control on this host");
        return;
    }
    let h = Harness::new("devices", None);
    // loop-control (10:237) opens for root anywhere, but it is not on the
    // allow-list; mknod itself is allowed (c *:* m).
    let c = h.config(
        "devices",
        shell(
            "mknod /dev/lc c 10 237 && echo made; head -c 0 /dev/lc 2>/dev/null && echo opened || echo denied; \
             echo x > /dev/null && echo null-ok; head -c 4 /dev/urandom | wc -c",
        ),
    );
    let (status, out, err) = h.run(&c).await;
    assert!(status.success(), "{status}: {err}");
    assert_eq!(out, "made\ndenied\nnull-ok\n4\n", "stderr: {err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn destroy_while_the_supervisor_builds_the_container_leaves_nothing() {
    mezzo_testkit::require_root!();
    let h = Harness::new("racing", None);
    // Destroy lands at different points of the start: before, while and
    // after the supervisor is in the container's cgroups.
    for (i, delay_us) in [0u64, 1000, 2500, 5000, 8000, 15000].into_iter().enumerate() {
        let id = format!("racing{i}");
        let c = h.config(&id, shell("sleep 30"));
        let dir = h.containerizer.prepare(&c).await.expect("prepare");
        let mut launcher = mezzo_containerizer::launcher(&dir, &launcher_dir()).expect("launcher");
        let started = tokio::spawn(async move {
            let r = tokio::time::timeout(WAIT, launcher.start()).await.expect("start returns in time");
            (r, launcher)
        });
        let deadline = std::time::Instant::now() + WAIT;
        let supervisor = loop {
            if let Some(pid) = dir.launcher_pid().unwrap() {
                break pid;
            }
            assert!(std::time::Instant::now() < deadline, "supervisor never started");
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        tokio::time::sleep(Duration::from_micros(delay_us)).await;
        tokio::time::timeout(WAIT, h.containerizer.destroy(&id)).await.expect("destroy in time").expect("destroy");
        let (result, mut launcher) = started.await.unwrap();
        if result.is_ok() {
            // Started before the kill: its end is the kill.
            let status = tokio::time::timeout(WAIT, launcher.wait()).await.expect("end in time");
            assert!(status.is_err() || status.as_ref().unwrap().signal() == Some(libc::SIGKILL), "{status:?}");
        }
        drop(launcher);
        let gone = std::time::Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{supervisor}/cmdline")).exists()
            && std::fs::read(format!("/proc/{supervisor}/cmdline")).map(|c| !c.is_empty()).unwrap_or(false)
        {
            assert!(std::time::Instant::now() < gone, "supervisor {supervisor} outlived destroy ({delay_us} µs)");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for m in cgroup_mounts() {
            assert!(!m.join(&h.cgroups_root).join(&id).exists(), "cgroup left in {} ({delay_us} µs)", m.display());
        }
        assert!(host_mounts_under(&h.runtime_root()).is_empty(), "mounts left ({delay_us} µs)");
        assert!(!h.runtime_root().join(&id).exists(), "runtime directory left ({delay_us} µs)");
    }
}
