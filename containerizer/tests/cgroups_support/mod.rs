//! Shared by the tests that run real rust-backend containers on the
//! kernel's cgroups (v1 on a v1 or hybrid host, v2 in scripts/v2-guest.sh's
//! guest): a per-test runtime root and cgroups root, cleaned up (processes
//! killed, cgroups removed) when the harness is dropped, also on a failed
//! assertion.

#![allow(dead_code)]

use mezzo_containerizer::isolators::{parse_isolation, CgroupFs, Provisioner};
use mezzo_containerizer::rust::{RustBackend, RustBackendConfig};
use mezzo_containerizer::{Backend, Command, ContainerConfig, Containerizer, Launcher, Resources};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Bound on every wait.
pub const WAIT: Duration = Duration::from_secs(60);

/// `--isolation` of the tests: what the cgroups tests need.
pub const ISOLATION: &str = "filesystem/linux,cgroups/cpu,cgroups/mem,cgroups/pids,cgroups/blkio,namespaces/pid";

pub fn launcher_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_mezzo-launcher")).parent().unwrap().to_path_buf()
}

/// Every mounted cgroup hierarchy (v1 controllers and v2).
pub fn cgroup_mounts() -> Vec<PathBuf> {
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

/// How a test wants its backend.
#[derive(Clone)]
pub struct Options {
    pub isolation: String,
    pub enable_cfs: bool,
    pub max_pids: Option<u64>,
    pub provisioner: Option<Arc<dyn Provisioner>>,
}

impl Default for Options {
    fn default() -> Self {
        Options { isolation: ISOLATION.into(), enable_cfs: false, max_pids: Some(4096), provisioner: None }
    }
}

pub struct Harness {
    pub tmp: tempfile::TempDir,
    pub cgroups_root: String,
    pub options: Options,
    pub containerizer: Containerizer,
}

impl Harness {
    pub fn new(tag: &str, options: Options) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let cgroups_root = format!("mezzo-test-{}-{tag}", std::process::id());
        std::fs::create_dir_all(tmp.path().join("runtime")).unwrap();
        let mut h = Harness { tmp, cgroups_root, options, containerizer: Containerizer::new(vec![], PathBuf::new()) };
        h.containerizer = h.new_containerizer();
        h
    }

    /// Another containerizer over the same runtime and cgroups roots (an
    /// agent after a restart).
    pub fn new_containerizer(&self) -> Containerizer {
        let backend = RustBackend::new(RustBackendConfig {
            runtime_root: self.runtime_root(),
            provisioner: self.options.provisioner.clone(),
            cgroups_root: self.cgroups_root.clone(),
            launcher_dir: launcher_dir(),
            isolation: parse_isolation(&self.options.isolation),
            cgroups_enable_cfs: self.options.enable_cfs,
            cgroups_max_pids: self.options.max_pids,
            ..Default::default()
        })
        .expect("backend");
        Containerizer::new(vec![Arc::new(backend) as Arc<dyn Backend>], self.runtime_root())
    }

    pub fn runtime_root(&self) -> PathBuf {
        self.tmp.path().join("runtime")
    }

    pub fn config(&self, id: &str, command: &str, cpus: f64, mem_mb: f64) -> ContainerConfig {
        let sandbox = self.tmp.path().join("sandboxes").join(id);
        std::fs::create_dir_all(&sandbox).unwrap();
        ContainerConfig {
            container_id: id.to_string(),
            command: Command { shell: true, value: Some(command.to_string()), ..Default::default() },
            resources: Resources { cpus: Some(cpus), mem_mb: Some(mem_mb), ..Default::default() },
            sandbox,
            ..Default::default()
        }
    }

    /// Whether the kernel's cgroups are the unified (v2) hierarchy.
    pub fn v2(&self) -> bool {
        CgroupFs::detect().is_v2()
    }

    /// The container's cgroup in v1 hierarchy `controller` (on v2, its one
    /// cgroup whatever `controller` names).
    pub fn cgroup(&self, controller: &str, id: &str) -> PathBuf {
        CgroupFs::detect().dir(controller, &format!("/{}/{id}", self.cgroups_root))
    }

    pub fn read(&self, controller: &str, id: &str, file: &str) -> String {
        let path = self.cgroup(controller, id).join(file);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().to_string()
    }

    pub async fn start(&self, config: &ContainerConfig) -> Box<dyn Launcher> {
        let dir = self.containerizer.prepare(config).await.expect("prepare");
        let mut launcher = mezzo_containerizer::launcher(&dir, &launcher_dir()).expect("launcher");
        tokio::time::timeout(WAIT, launcher.start()).await.expect("start in time").expect("start");
        launcher
    }

    /// Pid of the container's init, as the supervisor recorded it.
    pub fn init_pid(&self, id: &str) -> i32 {
        mezzo_containerizer::RuntimeDir::of(&self.runtime_root(), id).pid().unwrap().expect("init pid recorded")
    }

    /// Waits (bounded) until `cond` holds.
    pub async fn until(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + WAIT;
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Whatever a failed test left: kill it, then remove the cgroups.
        for m in cgroup_mounts() {
            let root = m.join(&self.cgroups_root);
            for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
                if let Ok(name) = e.file_name().into_string() {
                    let path = format!("/{}/{name}", self.cgroups_root);
                    let _ = mezzo_containerizer::cgroupfs::kill_all(&path, Duration::from_secs(10));
                    let _ = mezzo_containerizer::cgroupfs::remove_dirs(&path, Duration::from_secs(10));
                }
            }
            let _ = std::fs::remove_dir(&root);
        }
    }
}
