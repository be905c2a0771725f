//! The rust backend: renders a container spec into an OCI bundle and runs
//! it with youki's libcontainer, always from the single-threaded
//! `mezzo-launcher` helper (never in the multi-threaded agent or executor).
//!
//! Its files in a container's runtime directory (see `RuntimeDir`): the
//! OCI bundle, libcontainer's state, the host rootfs mount point, the v1
//! placement and cgroup views, and the supervisor's pids, limitation, exit
//! status and log.
//!
//! The container's init (its PID 1) is the supervisor's own code: the
//! libcontainer init process forks the task (in a process group of its
//! own) and stays, forwarding signals to the task's group, reaping
//! orphans, and reporting the task's wait status to the supervisor when the
//! task ends. A command task is then never PID 1, so its SIGTERM is not
//! dropped by the kernel.

mod launcher;
mod oci;
mod placement;

pub use launcher::{live_supervisor, RustLauncher};
pub use oci::{render, DEFAULT_PATH};
pub use placement::{own_cgroup, view_dir, PlacedHierarchy, Placement, DEVICE_ALLOW_RULES};

use crate::cgroupfs::{container_dirs, kill_all, kill_in, mounts_under, remove_in};
use crate::isolators::{
    isolators_from_names, parse_isolation, CgroupFs, CgroupsOptions, IsolatorContext, Namespaces, Provisioner, DEFAULT_ISOLATION,
    DEFAULT_MAX_PIDS,
};
use crate::spec::Rootfs;
use crate::{Backend, BackendKind, ContainerSpec, ContainerType, ContainerizerError, Isolator, RuntimeDir};
use async_trait::async_trait;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Name of the helper binary in the launcher directory.
pub const LAUNCHER_BIN: &str = "mezzo-launcher";
/// Signals the supervisor forwards to the container's init, which forwards
/// them to the task's process group (SIGKILL goes to every process of the
/// container instead).
pub const FORWARDED_SIGNALS: [i32; 7] =
    [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2, libc::SIGWINCH];
/// Default `--cgroups_root`, as Mesos's `mesos`.
pub const DEFAULT_CGROUPS_ROOT: &str = "mezzo";

/// Where the OCI root of `spec` is, for a container in `runtime_dir`.
pub fn rootfs_path(spec: &ContainerSpec, runtime_dir: &RuntimeDir) -> PathBuf {
    match &spec.rootfs {
        Rootfs::Host => runtime_dir.host_rootfs_dir(),
        Rootfs::Overlay { target, .. } => target.clone(),
        Rootfs::Directory(dir) => dir.clone(),
    }
}

/// How the agent sets up the rust backend.
#[derive(Clone)]
pub struct RustBackendConfig {
    /// Parent of the containers' runtime directories (the `Containerizer`'s).
    pub runtime_root: PathBuf,
    /// Provisions images for tasks that name one; `None` rejects them.
    pub provisioner: Option<Arc<dyn Provisioner>>,
    /// Containers' cgroups are `/<cgroups_root>/<id>` in every hierarchy.
    pub cgroups_root: String,
    /// Directory holding the `mezzo-launcher` binary.
    pub launcher_dir: PathBuf,
    /// `--isolation`: isolator names (see `isolators::KNOWN_ISOLATORS`).
    pub isolation: Vec<String>,
    /// `--cgroups_enable_cfs`: a CFS quota from the cpu request too.
    pub cgroups_enable_cfs: bool,
    /// pids.max of every container (`cgroups/pids`); `None` is unlimited.
    pub cgroups_max_pids: Option<u64>,
    /// The cgroup filesystem; `None` detects the host's at `/sys/fs/cgroup`.
    pub cgroupfs: Option<CgroupFs>,
    /// `--container_disk_watch_interval`: how often `disk/du` measures.
    pub container_disk_watch_interval: Duration,
    /// `--enforce_container_disk_quota`: `disk/du` ends containers over their `disk`.
    pub enforce_container_disk_quota: bool,
    /// `--image_provisioner_backend=copy`: image rootfses are copies, not overlays.
    pub copy_rootfs: bool,
}

impl Default for RustBackendConfig {
    /// Mesos's defaults: `--isolation` `DEFAULT_ISOLATION`, cgroups root
    /// `mezzo`, CFS off; the paths are empty and must be set.
    fn default() -> Self {
        RustBackendConfig {
            runtime_root: PathBuf::new(),
            provisioner: None,
            cgroups_root: DEFAULT_CGROUPS_ROOT.to_string(),
            launcher_dir: PathBuf::new(),
            isolation: parse_isolation(DEFAULT_ISOLATION),
            cgroups_enable_cfs: false,
            cgroups_max_pids: Some(DEFAULT_MAX_PIDS),
            cgroupfs: None,
            container_disk_watch_interval: crate::isolators::DEFAULT_DISK_WATCH_INTERVAL,
            enforce_container_disk_quota: false,
            copy_rootfs: false,
        }
    }
}

/// The `rust` containerizer backend (Mesos-type containers on libcontainer).
pub struct RustBackend {
    config: RustBackendConfig,
    cgroupfs: CgroupFs,
    isolators: Vec<Arc<dyn Isolator>>,
}

impl RustBackend {
    /// A backend with the isolators `config.isolation` names, in their
    /// fixed order, plus the mount namespace every container gets. Fails
    /// on an unknown isolator name.
    pub fn new(config: RustBackendConfig) -> Result<Self, ContainerizerError> {
        let cgroupfs = config.cgroupfs.clone().unwrap_or_else(CgroupFs::detect);
        let ctx = IsolatorContext {
            runtime_root: config.runtime_root.clone(),
            provisioner: config.provisioner.clone(),
            cgroups: CgroupsOptions {
                fs: cgroupfs.clone(),
                root: config.cgroups_root.clone(),
                enable_cfs: config.cgroups_enable_cfs,
                max_pids: config.cgroups_max_pids,
            },
            disk_watch_interval: config.container_disk_watch_interval,
            enforce_disk_quota: config.enforce_container_disk_quota,
            copy_rootfs: config.copy_rootfs,
        };
        let mut isolators = isolators_from_names(&config.isolation, &ctx)?;
        isolators.push(Arc::new(Namespaces::mount()));
        Ok(RustBackend { config, cgroupfs, isolators })
    }

    /// The backend's configuration.
    pub fn config(&self) -> &RustBackendConfig {
        &self.config
    }
}

/// How long destroy waits for the container's processes and supervisor.
const DESTROY_TIMEOUT: Duration = Duration::from_secs(10);

#[async_trait]
impl Backend for RustBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Rust
    }

    fn accepts(&self, kind: ContainerType) -> bool {
        kind == ContainerType::Mesos
    }

    fn isolators(&self) -> Vec<Arc<dyn Isolator>> {
        self.isolators.clone()
    }

    async fn prepare(&self, spec: &ContainerSpec, runtime_dir: &RuntimeDir) -> Result<(), ContainerizerError> {
        // On v1 the supervisor places the container in its cgroups itself
        // (see `placement`); on v2 libcontainer does.
        let placement = if !self.cgroupfs.is_v2() && !spec.cgroup_path.is_empty() {
            let (fs, path, dir) = (self.cgroupfs.clone(), spec.cgroup_path.clone(), runtime_dir.clone());
            let placement = tokio::task::spawn_blocking(move || Placement::prepare(&fs, &path, &dir))
                .await
                .map_err(|e| ContainerizerError::Other(format!("prepare cgroups task: {e}")))??;
            placement.save(runtime_dir)?;
            Some(placement)
        } else {
            None
        };
        let oci = render(spec, runtime_dir, placement.as_ref())?;
        let bundle = runtime_dir.bundle_dir();
        std::fs::create_dir_all(&bundle).map_err(ContainerizerError::io("create bundle directory", &bundle))?;
        let config = bundle.join("config.json");
        oci.save(&config).map_err(|e| ContainerizerError::InvalidSpec(format!("write {}: {e}", config.display())))?;
        let state = runtime_dir.state_dir();
        std::fs::create_dir_all(&state).map_err(ContainerizerError::io("create state directory", &state))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700))
                .map_err(ContainerizerError::io("chmod state directory", &state))?;
        }
        if spec.rootfs == Rootfs::Host {
            let dir = runtime_dir.host_rootfs_dir();
            std::fs::create_dir_all(&dir).map_err(ContainerizerError::io("create rootfs directory", &dir))?;
        }
        Ok(())
    }

    async fn destroy(&self, container_id: &str, runtime_dir: &RuntimeDir) -> Result<(), ContainerizerError> {
        crate::validate_id(container_id)?;
        let cgroup = match runtime_dir.read_spec() {
            Ok(spec) if !spec.cgroup_path.is_empty() => spec.cgroup_path,
            _ => crate::isolators::cgroup_path(&self.config.cgroups_root, container_id),
        };
        let runtime_dir = runtime_dir.clone();
        let id = container_id.to_string();
        tokio::task::spawn_blocking(move || destroy_blocking(&id, &runtime_dir, &cgroup))
            .await
            .map_err(|e| ContainerizerError::Other(format!("destroy task: {e}")))?
    }

    /// The supervisor records an OOM kill of the init (read from the
    /// kernel's counter before the cgroup goes) in `limitation`; the cgroups
    /// isolator's own watch cannot see an OOM whose cgroup is already gone.
    async fn watch(&self, _spec: &ContainerSpec, runtime_dir: &RuntimeDir) -> Result<crate::Limitation, ContainerizerError> {
        loop {
            // exit_status is written after limitation: once it exists, the
            // limitation file is final either way.
            let ended = runtime_dir.has_exit_status();
            if let Ok(Some(l)) = runtime_dir.limitation() {
                return Ok(l);
            }
            if ended || !runtime_dir.exists() {
                return std::future::pending().await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn recover(&self, known: &[ContainerSpec]) -> Result<(), ContainerizerError> {
        let root = self.config.cgroups_root.trim_matches('/').to_string();
        if root.is_empty() {
            // Without a root of our own, nothing tells our cgroups apart.
            return Ok(());
        }
        let known: std::collections::HashSet<String> = known.iter().map(|s| s.cgroup_path.clone()).collect();
        let fs = self.cgroupfs.clone();
        tokio::task::spawn_blocking(move || {
            let mut orphans = std::collections::BTreeSet::new();
            for dir in fs.existing_dirs(&root) {
                for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        if let Ok(name) = e.file_name().into_string() {
                            let path = crate::isolators::cgroup_path(&root, &name);
                            if !known.contains(&path) {
                                orphans.insert(path);
                            }
                        }
                    }
                }
            }
            for path in orphans {
                tracing::info!(cgroup = %path, "destroying orphan cgroup that no checkpoint names");
                fs.kill(&path, DESTROY_TIMEOUT)?;
                fs.remove(&path, DESTROY_TIMEOUT)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| ContainerizerError::Other(format!("recover task: {e}")))?
    }
}

/// Kills, waits for the supervisor, and removes cgroups, mounts and state.
fn destroy_blocking(id: &str, runtime_dir: &RuntimeDir, cgroup: &str) -> Result<(), ContainerizerError> {
    let fail = |what: &str, e: String| ContainerizerError::Other(format!("destroy {id}: {what}: {e}"));
    let dirs = container_dirs(cgroup);
    kill_in(&dirs, cgroup, DESTROY_TIMEOUT).map_err(|e| fail("kill", e.to_string()))?;
    // The supervisor records the exit status and deletes libcontainer's
    // state once the init is gone; give it that chance. A supervisor still
    // building its container only puts processes in the cgroup now, so
    // keep killing while waiting. It usually needs a few milliseconds:
    // look again soon, then less often.
    let deadline = std::time::Instant::now() + DESTROY_TIMEOUT;
    let mut pause = Duration::from_millis(1);
    let mut waited = false;
    while let Some(pid) = launcher::live_supervisor(runtime_dir) {
        waited = true;
        if std::time::Instant::now() >= deadline {
            tracing::warn!(container = id, pid, "supervisor did not exit after its container was killed; killing it");
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            break;
        }
        let _ = kill_all(cgroup, Duration::from_secs(1));
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    // A supervisor may have made cgroups (in more hierarchies) meanwhile.
    let dirs = if waited { container_dirs(cgroup) } else { dirs };
    kill_in(&dirs, cgroup, DESTROY_TIMEOUT).map_err(|e| fail("kill", e.to_string()))?;
    remove_in(&dirs, DESTROY_TIMEOUT).map_err(|e| fail("remove cgroups", e.to_string()))?;
    // Mounts live in the supervisor's private namespace; anything found on
    // the host under the runtime directory is a leak to undo.
    let leftover = mounts_under(runtime_dir.path());
    for m in &leftover {
        if let Err(e) = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!(container = id, mount = %m.display(), error = %e, "unmount leftover");
        }
    }
    let left = if leftover.is_empty() { leftover } else { mounts_under(runtime_dir.path()) };
    if !left.is_empty() {
        // Never remove a tree that still has something mounted in it: the
        // host rootfs bind would take the host's files with it.
        return Err(fail("unmount", format!("still mounted: {left:?}")));
    }
    let state = runtime_dir.state_dir();
    match std::fs::remove_dir_all(&state) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ContainerizerError::io("remove", &state)(e)),
    }
    // Only ever an empty mount point on the host: rmdir, never a recursive remove.
    let rootfs = runtime_dir.host_rootfs_dir();
    match std::fs::remove_dir(&rootfs) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ContainerizerError::io("remove", &rootfs)(e)),
    }
}
