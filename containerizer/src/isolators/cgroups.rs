//! `cgroups/*`: one isolator for every cgroup controller a container gets
//! (as Mesos keeps one cgroups isolator however many `cgroups/*` names are
//! listed). Each container has one leaf `/<cgroups_root>/<id>`; limits follow
//! Mesos's arithmetic, on cgroups v1 and v2.
//!
//! The isolator creates the cgroup and writes its limits in `prepare` (the
//! same values also travel in `ContainerSpec.limits` so that libcontainer
//! applies them when it joins the cgroup), reads statistics in `usage`,
//! changes limits in `update`, watches for the kernel's OOM events in
//! `watch`, and kills and removes the cgroup in `cleanup`.

use crate::cgroupfs::{count_lines, keyed, parse_limit, read_file, read_opt, write_file, CgroupFs};
use crate::limits::{CgroupValues, CPU_CFS_PERIOD_US};
use crate::{
    ContainerConfig, ContainerSpec, ContainerizerError, Isolator, Limitation, LimitationReason, ResourceLimits, Resources,
    Usage,
};
use async_trait::async_trait;
use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default pids.max of a container (`--cgroups_max_pids`).
pub const DEFAULT_MAX_PIDS: u64 = 4096;

/// How long cleanup waits for the container's processes to die and its
/// cgroups to go.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the v2 OOM watch reads `memory.events`, and the v1 watch
/// re-checks its cgroup besides waiting for the eventfd.
const OOM_POLL: Duration = Duration::from_millis(100);

/// The container's cgroup, relative to each hierarchy's root.
pub fn cgroup_path(cgroups_root: &str, container_id: &str) -> String {
    let root = cgroups_root.trim_matches('/');
    if root.is_empty() {
        format!("/{container_id}")
    } else {
        format!("/{root}/{container_id}")
    }
}

/// A cgroup controller the isolator manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Controller {
    /// `cgroups/cpu`: shares/weight, CFS quota, cpu accounting.
    Cpu,
    /// `posix/cpu`: cpu accounting only.
    CpuAccounting,
    /// `cgroups/mem`: soft and hard limits, OOM watch, memory accounting.
    Mem,
    /// `posix/mem`: memory accounting only.
    MemAccounting,
    /// `cgroups/pids`: pids.max and process counts.
    Pids,
    /// `cgroups/blkio` (`io` on v2): placement only.
    Blkio,
}

impl Controller {
    /// v1 hierarchies this controller needs.
    fn hierarchies(self) -> &'static [&'static str] {
        match self {
            Controller::Cpu | Controller::CpuAccounting => &["cpu", "cpuacct"],
            Controller::Mem | Controller::MemAccounting => &["memory"],
            Controller::Pids => &["pids"],
            Controller::Blkio => &["blkio"],
        }
    }
}

/// How the cgroups isolator is set up (`--cgroups_*` flags).
#[derive(Debug, Clone)]
pub struct CgroupsOptions {
    /// The cgroup filesystem (`CgroupFs::detect()` on a real host).
    pub fs: CgroupFs,
    /// Containers' cgroups are `/<root>/<id>` (`--cgroups_root`).
    pub root: String,
    /// CFS quota from the cpu request too, not only from a cpu limit
    /// (`--cgroups_enable_cfs`).
    pub enable_cfs: bool,
    /// pids.max of every container; `None` leaves it unlimited.
    pub max_pids: Option<u64>,
}

/// The `cgroups/*` isolator (and `posix/cpu`, `posix/mem` accounting).
#[derive(Debug, Clone)]
pub struct CgroupsIsolator {
    options: CgroupsOptions,
    controllers: BTreeSet<Controller>,
}

impl CgroupsIsolator {
    /// An isolator for `controllers`; with none it still places every
    /// container in its own cgroup (as Mesos's linux launcher does).
    pub fn new(options: CgroupsOptions, controllers: impl IntoIterator<Item = Controller>) -> Self {
        CgroupsIsolator { options, controllers: controllers.into_iter().collect() }
    }

    /// The controllers this isolator manages.
    pub fn controllers(&self) -> impl Iterator<Item = Controller> + '_ {
        self.controllers.iter().copied()
    }

    fn has(&self, c: Controller) -> bool {
        self.controllers.contains(&c)
    }

    fn fs(&self) -> &CgroupFs {
        &self.options.fs
    }

    /// The container's directory for v1 hierarchy `hierarchy` (or the v2 one).
    fn dir(&self, hierarchy: &str, spec: &ContainerSpec) -> PathBuf {
        self.fs().dir(hierarchy, &spec.cgroup_path)
    }

    fn path_of(&self, container_id: &str) -> String {
        cgroup_path(&self.options.root, container_id)
    }

    fn hierarchies(&self) -> Vec<&'static str> {
        let mut h: Vec<&'static str> = self.controllers.iter().flat_map(|c| c.hierarchies().iter().copied()).collect();
        h.sort_unstable();
        h.dedup();
        h
    }

    /// Mesos's values for `resources` and `limits`, with this isolator's
    /// `--cgroups_enable_cfs`.
    fn values(&self, resources: &Resources, limits: &ResourceLimits) -> Result<CgroupValues, ContainerizerError> {
        CgroupValues::new(resources, limits, self.options.enable_cfs)
    }

    /// Writes the cpu limits of `values`.
    fn apply_cpu(&self, spec: &ContainerSpec, values: &CgroupValues) -> Result<(), ContainerizerError> {
        let quota = values.cpu_quota_us;
        let dir = self.dir("cpu", spec);
        if self.fs().is_v2() {
            if let Some(weight) = values.cpu_weight {
                write_file(&dir.join("cpu.weight"), &weight.to_string())?;
            }
            let max = match quota {
                Some(q) => format!("{q} {CPU_CFS_PERIOD_US}"),
                None => format!("max {CPU_CFS_PERIOD_US}"),
            };
            write_file(&dir.join("cpu.max"), &max)
        } else {
            if let Some(shares) = values.cpu_shares {
                write_file(&dir.join("cpu.shares"), &shares.to_string())?;
            }
            // The period first: the kernel checks the quota against it.
            write_file(&dir.join("cpu.cfs_period_us"), &CPU_CFS_PERIOD_US.to_string())?;
            write_file(&dir.join("cpu.cfs_quota_us"), &quota.unwrap_or(-1).to_string())
        }
    }

    /// Writes the memory limits; the hard limit only when `initial` or
    /// when it grows (lowering it under a running task could OOM it).
    fn apply_mem(&self, spec: &ContainerSpec, values: &CgroupValues, initial: bool) -> Result<(), ContainerizerError> {
        let dir = self.dir("memory", spec);
        let v2 = self.fs().is_v2();
        let (soft_file, hard_file) = if v2 {
            ("memory.low", "memory.max")
        } else {
            ("memory.soft_limit_in_bytes", "memory.limit_in_bytes")
        };
        let hard = values.memory_limit_bytes;
        let raise = if initial {
            true
        } else {
            let current = read_opt(&dir.join(hard_file)).and_then(|t| parse_limit(&t));
            match (current, hard) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(cur), Some(new)) => new as u64 > cur,
            }
        };
        if raise {
            let value = match (hard, v2) {
                (Some(b), _) => b.to_string(),
                (None, true) => "max".to_string(),
                (None, false) => "-1".to_string(),
            };
            write_file(&dir.join(hard_file), &value)?;
        } else if !initial {
            tracing::debug!(container = %spec.container_id, ?hard, "memory hard limit is only ever raised; keeping it");
        }
        if let Some(soft) = values.memory_request_bytes {
            write_file(&dir.join(soft_file), &soft.to_string())?;
        }
        Ok(())
    }

    fn apply_pids(&self, spec: &ContainerSpec) -> Result<(), ContainerizerError> {
        let value = self.options.max_pids.map(|p| p.to_string()).unwrap_or_else(|| "max".to_string());
        write_file(&self.dir("pids", spec).join("pids.max"), &value)
    }

    /// The limitation message, Mesos style, for an OOM in `dir`.
    fn oom_limitation(&self, dir: &Path) -> Limitation {
        oom_limitation(self.fs().is_v2(), dir)
    }

    /// v2: fires once `memory.events` counts an OOM kill.
    async fn watch_v2(&self, dir: PathBuf) -> Limitation {
        loop {
            match read_opt(&dir.join("memory.events")) {
                Some(events) if keyed(&events, "oom_kill").unwrap_or(0) > 0 => return self.oom_limitation(&dir),
                // The cgroup is gone: the container was destroyed.
                None if !dir.exists() => std::future::pending::<()>().await,
                _ => {}
            }
            tokio::time::sleep(OOM_POLL).await;
        }
    }

    /// v1: an eventfd registered on `memory.oom_control` through
    /// `cgroup.event_control`, with the `oom_kill` counter (kernels from
    /// 4.13 have it) checked too so that an OOM before registration counts.
    async fn watch_v1(&self, dir: PathBuf) -> Result<Limitation, ContainerizerError> {
        let oom_control = dir.join("memory.oom_control");
        let oomed = |dir: &Path| {
            read_opt(&dir.join("memory.oom_control"))
                .is_some_and(|t| keyed(&t, "oom_kill").unwrap_or(0) > 0 || keyed(&t, "under_oom") == Some(1))
        };
        let event = oom_eventfd(&dir)?;
        loop {
            if oomed(&dir) {
                return Ok(self.oom_limitation(&dir));
            }
            if !oom_control.exists() {
                std::future::pending::<()>().await;
            }
            let fired = tokio::select! {
                r = event.readable() => {
                    let mut guard = r.map_err(ContainerizerError::io("wait for oom event", &oom_control))?;
                    let mut buf = [0u8; 8];
                    // SAFETY: reads at most 8 bytes into `buf`, which is 8 bytes long.
                    let n = unsafe { libc::read(guard.get_inner().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                    if n < 0 {
                        guard.clear_ready();
                        false
                    } else {
                        true
                    }
                }
                _ = tokio::time::sleep(OOM_POLL * 10) => false,
            };
            if fired {
                // The event also fires when the cgroup is removed; the
                // kernel's OOM counters may lag the event a little.
                for _ in 0..5 {
                    if !oom_control.exists() {
                        std::future::pending::<()>().await;
                    }
                    if oomed(&dir) {
                        break;
                    }
                    tokio::time::sleep(OOM_POLL).await;
                }
                if oom_control.exists() {
                    return Ok(self.oom_limitation(&dir));
                }
            }
        }
    }
}

/// An eventfd plus the `memory.oom_control` file it is registered on (it
/// must stay open for the registration to last).
struct OomEvent(std::os::fd::OwnedFd, #[allow(dead_code)] std::fs::File);

impl AsRawFd for OomEvent {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

fn oom_eventfd(dir: &Path) -> Result<tokio::io::unix::AsyncFd<OomEvent>, ContainerizerError> {
    use std::os::fd::FromRawFd;
    let oom_control = dir.join("memory.oom_control");
    let file = std::fs::File::open(&oom_control).map_err(ContainerizerError::io("open", &oom_control))?;
    // SAFETY: eventfd takes no pointers; the result is checked below.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(ContainerizerError::io("eventfd", &oom_control)(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    write_file(&dir.join("cgroup.event_control"), &format!("{} {}", fd.as_raw_fd(), file.as_raw_fd()))?;
    // SAFETY: `OomEvent` owns the eventfd, so it stays open and is the same
    // descriptor for as long as the `AsyncFd` holds it.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(OomEvent(fd, file), tokio::io::Interest::READABLE) }
        .map_err(|e| ContainerizerError::io("register eventfd", &oom_control)(e.into()))
}

/// Seconds per clock tick of `cpuacct.stat`.
fn clock_tick_secs() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1.0 / if hz > 0 { hz as f64 } else { 100.0 }
}

#[async_trait]
impl Isolator for CgroupsIsolator {
    fn name(&self) -> &'static str {
        "cgroups"
    }

    async fn recover(&self, containers: &[ContainerSpec]) -> Result<(), ContainerizerError> {
        // Cgroups of containers no checkpoint names are orphans.
        let known: BTreeSet<String> = containers.iter().map(|s| s.cgroup_path.clone()).collect();
        let root = self.options.root.trim_matches('/');
        if root.is_empty() {
            // Without a root of our own every top-level cgroup would look
            // like an orphan; there is nothing we can tell apart.
            return Ok(());
        }
        let mut children = BTreeSet::new();
        for h in self.hierarchies() {
            children.extend(self.fs().children(h, root));
            if self.fs().is_v2() {
                break;
            }
        }
        for child in children {
            let path = cgroup_path(&self.options.root, &child);
            if !known.contains(&path) {
                tracing::info!(cgroup = %path, "destroying orphan cgroup");
                self.destroy_cgroup(path).await?;
            }
        }
        Ok(())
    }

    async fn prepare(&self, config: &ContainerConfig, spec: &mut ContainerSpec) -> Result<(), ContainerizerError> {
        let values = self.values(&config.resources, &config.limits)?;
        spec.cgroup_path = self.path_of(&config.container_id);
        let v2 = self.fs().is_v2();
        if self.has(Controller::Cpu) {
            // On v2 libcontainer would turn shares into a weight with its
            // own formula; the isolator writes Mesos's weight instead.
            spec.limits.cpu_shares = if v2 { None } else { values.cpu_shares };
            spec.limits.cpu_quota_us = values.cpu_quota_us;
            spec.limits.cpu_period_us = values.cpu_period_us();
        }
        if self.has(Controller::Mem) {
            spec.limits.memory_limit_bytes = values.memory_limit_bytes;
            spec.limits.memory_reservation_bytes = values.memory_request_bytes;
        }
        if self.has(Controller::Pids) {
            spec.limits.pids_limit = self.options.max_pids.map(|p| p as i64);
        }
        let hierarchies = self.hierarchies();
        if hierarchies.is_empty() {
            return Ok(());
        }
        let fs = self.fs().clone();
        let path = spec.cgroup_path.clone();
        tokio::task::spawn_blocking(move || fs.create(&path, &hierarchies))
            .await
            .map_err(|e| ContainerizerError::Other(format!("create cgroup task: {e}")))??;
        if self.has(Controller::Cpu) {
            self.apply_cpu(spec, &values)?;
        }
        if self.has(Controller::Mem) {
            self.apply_mem(spec, &values, true)?;
        }
        if self.has(Controller::Pids) {
            self.apply_pids(spec)?;
        }
        Ok(())
    }

    async fn isolate(&self, spec: &ContainerSpec, pid: i32) -> Result<(), ContainerizerError> {
        // libcontainer has usually placed the init already; writing it
        // again is harmless and covers a backend that did not.
        for h in self.hierarchies() {
            let procs = self.dir(h, spec).join("cgroup.procs");
            let listed = read_opt(&procs).is_some_and(|t| t.lines().any(|l| l.trim() == pid.to_string()));
            if !listed {
                write_file(&procs, &pid.to_string())?;
            }
            if self.fs().is_v2() {
                break;
            }
        }
        Ok(())
    }

    async fn watch(&self, spec: &ContainerSpec) -> Result<Limitation, ContainerizerError> {
        if !self.has(Controller::Mem) || spec.cgroup_path.is_empty() {
            return std::future::pending().await;
        }
        let dir = self.dir("memory", spec);
        if self.fs().is_v2() {
            Ok(self.watch_v2(dir).await)
        } else {
            self.watch_v1(dir).await
        }
    }

    async fn update(&self, spec: &ContainerSpec, resources: &Resources, limits: &ResourceLimits) -> Result<(), ContainerizerError> {
        let values = self.values(resources, limits)?;
        if self.has(Controller::Cpu) {
            self.apply_cpu(spec, &values)?;
        }
        if self.has(Controller::Mem) {
            self.apply_mem(spec, &values, false)?;
        }
        Ok(())
    }

    async fn usage(&self, spec: &ContainerSpec, usage: &mut Usage) -> Result<(), ContainerizerError> {
        let v2 = self.fs().is_v2();
        if self.has(Controller::Cpu) || self.has(Controller::CpuAccounting) {
            let cpu = self.dir("cpu", spec);
            if v2 {
                let stat = read_file(&cpu.join("cpu.stat"))?;
                usage.cpus_user_time_secs = keyed(&stat, "user_usec").map(|u| u as f64 / 1e6);
                usage.cpus_system_time_secs = keyed(&stat, "system_usec").map(|u| u as f64 / 1e6);
                usage.cpus_nr_periods = keyed(&stat, "nr_periods").map(|v| v as u32);
                usage.cpus_nr_throttled = keyed(&stat, "nr_throttled").map(|v| v as u32);
                usage.cpus_throttled_time_secs = keyed(&stat, "throttled_usec").map(|u| u as f64 / 1e6);
                if let Some(max) = read_opt(&cpu.join("cpu.max")) {
                    let mut it = max.split_whitespace();
                    if let (Some(Ok(q)), Some(Ok(p))) = (it.next().map(str::parse::<f64>), it.next().map(str::parse::<f64>)) {
                        usage.cpus_limit = Some(q / p);
                    }
                }
            } else {
                let tick = clock_tick_secs();
                let acct = read_file(&self.dir("cpuacct", spec).join("cpuacct.stat"))?;
                usage.cpus_user_time_secs = keyed(&acct, "user").map(|t| t as f64 * tick);
                usage.cpus_system_time_secs = keyed(&acct, "system").map(|t| t as f64 * tick);
                if let Some(stat) = read_opt(&cpu.join("cpu.stat")) {
                    usage.cpus_nr_periods = keyed(&stat, "nr_periods").map(|v| v as u32);
                    usage.cpus_nr_throttled = keyed(&stat, "nr_throttled").map(|v| v as u32);
                    usage.cpus_throttled_time_secs = keyed(&stat, "throttled_time").map(|ns| ns as f64 / 1e9);
                }
                let quota = read_opt(&cpu.join("cpu.cfs_quota_us")).and_then(|t| t.trim().parse::<i64>().ok());
                let period = read_opt(&cpu.join("cpu.cfs_period_us")).and_then(|t| t.trim().parse::<i64>().ok());
                if let (Some(q), Some(p)) = (quota, period) {
                    if q > 0 && p > 0 {
                        usage.cpus_limit = Some(q as f64 / p as f64);
                    }
                }
            }
            self.count_processes(spec, "cpu", usage);
        }
        if self.has(Controller::Mem) || self.has(Controller::MemAccounting) {
            let mem = self.dir("memory", spec);
            let stat = read_file(&mem.join("memory.stat"))?;
            if v2 {
                usage.mem_rss_bytes = keyed(&stat, "anon");
                usage.mem_cache_bytes = keyed(&stat, "file");
                usage.mem_total_bytes = read_opt(&mem.join("memory.current")).and_then(|t| t.trim().parse().ok());
                usage.mem_limit_bytes = read_opt(&mem.join("memory.max")).and_then(|t| parse_limit(&t));
                usage.mem_soft_limit_bytes = read_opt(&mem.join("memory.low")).and_then(|t| parse_limit(&t)).filter(|v| *v > 0);
            } else {
                usage.mem_rss_bytes = keyed(&stat, "total_rss").or_else(|| keyed(&stat, "rss"));
                usage.mem_cache_bytes = keyed(&stat, "total_cache").or_else(|| keyed(&stat, "cache"));
                usage.mem_total_bytes = read_opt(&mem.join("memory.usage_in_bytes")).and_then(|t| t.trim().parse().ok());
                usage.mem_limit_bytes = read_opt(&mem.join("memory.limit_in_bytes")).and_then(|t| parse_limit(&t));
                usage.mem_soft_limit_bytes = read_opt(&mem.join("memory.soft_limit_in_bytes")).and_then(|t| parse_limit(&t));
            }
        }
        if self.has(Controller::Pids) {
            self.count_processes(spec, "pids", usage);
        }
        Ok(())
    }

    async fn cleanup(&self, container_id: &str) -> Result<(), ContainerizerError> {
        if crate::validate_id(container_id).is_err() {
            return Ok(());
        }
        self.destroy_cgroup(self.path_of(container_id)).await
    }
}

impl CgroupsIsolator {
    /// processes and threads from `hierarchy`'s `cgroup.procs` and `tasks`
    /// (v2: `cgroup.threads`).
    fn count_processes(&self, spec: &ContainerSpec, hierarchy: &str, usage: &mut Usage) {
        let dir = self.dir(hierarchy, spec);
        if let Some(n) = count_lines(&dir.join("cgroup.procs")) {
            usage.processes = Some(n);
        }
        let threads = if self.fs().is_v2() { "cgroup.threads" } else { "tasks" };
        if let Some(n) = count_lines(&dir.join(threads)) {
            usage.threads = Some(n);
        }
    }

    /// Kills whatever runs in cgroup `path` and removes it everywhere.
    async fn destroy_cgroup(&self, path: String) -> Result<(), ContainerizerError> {
        let fs = self.fs().clone();
        tokio::task::spawn_blocking(move || fs.destroy(&path, CLEANUP_TIMEOUT))
        .await
        .map_err(|e| ContainerizerError::Other(format!("destroy cgroup task: {e}")))?
    }
}

/// The limitation message, Mesos style, for an OOM in the memory cgroup `dir` (v1 or v2 files).
pub fn oom_limitation(v2: bool, dir: &Path) -> Limitation {
    let mb = |b: Option<u64>| b.map(|b| format!("{}MB", b >> 20)).unwrap_or_else(|| "unknown".into());
    let limit = read_opt(&dir.join(if v2 { "memory.max" } else { "memory.limit_in_bytes" })).and_then(|t| parse_limit(&t));
    let peak = if v2 {
        read_opt(&dir.join("memory.peak")).or_else(|| read_opt(&dir.join("memory.current")))
    } else {
        read_opt(&dir.join("memory.max_usage_in_bytes"))
    }
    .and_then(|t| t.trim().parse::<u64>().ok());
    let stats = read_opt(&dir.join("memory.stat")).unwrap_or_default();
    Limitation {
        reason: LimitationReason::Memory,
        resources: vec!["mem".to_string()],
        message: format!(
            "Memory limit exceeded: Requested: {} Maximum Used: {}\n\nMEMORY STATISTICS: \n{}",
            mb(limit),
            mb(peak),
            stats
        ),
    }
}


/// The memory limitation of the container in `cgroup_path` when the kernel
/// counted an OOM kill in its memory cgroup (`oom_kill` in
/// `memory.oom_control` on v1, `memory.events` on v2); `None` otherwise.
/// Read by the supervisor right after the container's init ended, before
/// the cgroup goes, so an OOM that killed the init is never missed.
pub fn oom_killed(fs: &CgroupFs, cgroup_path: &str) -> Option<Limitation> {
    let dir = fs.dir("memory", cgroup_path);
    let file = if fs.is_v2() { "memory.events" } else { "memory.oom_control" };
    let text = read_opt(&dir.join(file))?;
    (keyed(&text, "oom_kill").unwrap_or(0) > 0).then(|| oom_limitation(fs.is_v2(), &dir))
}
