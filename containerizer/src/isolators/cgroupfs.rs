//! The cgroup filesystem as the cgroups isolators see it: v1 (one hierarchy
//! per controller under `<root>/<controller>`) or v2 (one unified hierarchy
//! at `<root>`). The root is injectable so that the v2 code paths run against
//! a fake tree of plain files in a temp directory.

use crate::ContainerizerError;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where cgroupfs is mounted on a normal host.
pub const DEFAULT_CGROUPFS_ROOT: &str = "/sys/fs/cgroup";

/// Which cgroup interface the host offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Legacy or hybrid: a hierarchy per controller.
    V1,
    /// Unified (`cgroup.controllers` at the root).
    V2,
}

/// A mounted cgroup filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupFs {
    /// `/sys/fs/cgroup` on a real host.
    pub root: PathBuf,
    pub version: CgroupVersion,
}

/// Values the kernel uses for "no limit" in v1 byte counters are just below
/// `i64::MAX`; anything this large means unlimited.
const V1_UNLIMITED_BYTES: u64 = 1 << 62;

impl CgroupFs {
    /// The host's cgroupfs at `/sys/fs/cgroup`, version detected.
    pub fn detect() -> Self {
        Self::detect_at(DEFAULT_CGROUPFS_ROOT)
    }

    /// The cgroupfs at `root`: unified when `root/cgroup.controllers` exists.
    pub fn detect_at(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let version = if root.join("cgroup.controllers").exists() { CgroupVersion::V2 } else { CgroupVersion::V1 };
        CgroupFs { root, version }
    }

    /// A v1 cgroupfs with controller hierarchies under `root`.
    pub fn v1(root: impl Into<PathBuf>) -> Self {
        CgroupFs { root: root.into(), version: CgroupVersion::V1 }
    }

    /// A v2 (unified) cgroupfs at `root`.
    pub fn v2(root: impl Into<PathBuf>) -> Self {
        CgroupFs { root: root.into(), version: CgroupVersion::V2 }
    }

    /// Whether this is the unified hierarchy.
    pub fn is_v2(&self) -> bool {
        self.version == CgroupVersion::V2
    }

    /// Directory of cgroup `path` (e.g. `/mezzo/c1`) for `controller` (a v1
    /// hierarchy name such as `memory`; ignored on v2).
    pub fn dir(&self, controller: &str, path: &str) -> PathBuf {
        let rel = path.trim_matches('/');
        match self.version {
            CgroupVersion::V1 => self.root.join(controller).join(rel),
            CgroupVersion::V2 => self.root.join(rel),
        }
    }

    /// Every directory of cgroup `path` that exists (one per v1 hierarchy,
    /// or the single v2 one).
    pub fn existing_dirs(&self, path: &str) -> Vec<PathBuf> {
        let rel = path.trim_matches('/');
        if rel.is_empty() {
            return Vec::new();
        }
        match self.version {
            CgroupVersion::V2 => [self.root.join(rel)].into_iter().filter(|d| d.is_dir()).collect(),
            CgroupVersion::V1 => {
                use std::os::unix::fs::MetadataExt;
                let mut entries: Vec<std::fs::DirEntry> =
                    std::fs::read_dir(&self.root).into_iter().flatten().flatten().collect();
                // `cpu` may be a symlink to `cpu,cpuacct`: the real hierarchy
                // names come first and a symlink to one is dropped by its
                // (device, inode), one stat per hierarchy instead of a realpath.
                entries.sort_by_key(|e| (e.file_type().is_ok_and(|t| t.is_symlink()), e.file_name()));
                let mut seen = std::collections::HashSet::new();
                let mut dirs: Vec<PathBuf> = entries
                    .iter()
                    .map(|e| e.path().join(rel))
                    .filter(|d| std::fs::metadata(d).is_ok_and(|m| m.is_dir() && seen.insert((m.dev(), m.ino()))))
                    .collect();
                dirs.sort();
                dirs
            }
        }
    }

    /// Creates cgroup `path` for `controllers` (v1 hierarchy names; on v2
    /// the matching v2 controllers are enabled in every ancestor's
    /// `cgroup.subtree_control`). Returns the v1 directories, or the one v2
    /// directory.
    pub fn create(&self, path: &str, controllers: &[&str]) -> Result<Vec<PathBuf>, ContainerizerError> {
        match self.version {
            CgroupVersion::V1 => controllers
                .iter()
                .map(|c| {
                    let dir = self.dir(c, path);
                    std::fs::create_dir_all(&dir).map_err(ContainerizerError::io("create cgroup", &dir))?;
                    Ok(dir)
                })
                .collect(),
            CgroupVersion::V2 => {
                let mut wanted: Vec<&str> = controllers.iter().filter_map(|c| v2_controller(c)).collect();
                wanted.dedup();
                let mut dir = self.root.clone();
                let parts: Vec<&str> = path.trim_matches('/').split('/').filter(|p| !p.is_empty()).collect();
                for part in parts {
                    self.enable_controllers(&dir, &wanted)?;
                    dir = dir.join(part);
                    match std::fs::create_dir(&dir) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(ContainerizerError::io("create cgroup", &dir)(e)),
                    }
                }
                Ok(vec![dir])
            }
        }
    }

    /// v2: enables `wanted` controllers for the children of `dir`, those
    /// that `dir` itself has (all of them when it does not say).
    fn enable_controllers(&self, dir: &Path, wanted: &[&str]) -> Result<(), ContainerizerError> {
        let available = read_opt(&dir.join("cgroup.controllers"));
        let enabled = read_opt(&dir.join("cgroup.subtree_control")).unwrap_or_default();
        let enabled: Vec<&str> = enabled.split_whitespace().map(|c| c.trim_start_matches('+')).collect();
        let missing: Vec<String> = wanted
            .iter()
            .filter(|c| available.as_ref().is_none_or(|a| a.split_whitespace().any(|x| x == **c)))
            .filter(|c| !enabled.contains(c))
            .map(|c| format!("+{c}"))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        // One write for all: the kernel takes a space separated list.
        write_file(&dir.join("cgroup.subtree_control"), &missing.join(" "))
    }

    /// Names of the child cgroups of `path` in `controller`'s hierarchy.
    pub fn children(&self, controller: &str, path: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir(controller, path))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }

    /// Kills every process of cgroup `path` and waits until none is left:
    /// v2 writes `cgroup.kill`; v1 freezes the cgroup (so a forking task
    /// cannot outrun us), SIGKILLs its processes and thaws it again.
    pub fn kill(&self, path: &str, timeout: Duration) -> Result<(), ContainerizerError> {
        let dirs = self.existing_dirs(path);
        self.kill_in(&dirs, path, timeout)
    }

    /// `kill` on the directories of `path` already looked up.
    fn kill_in(&self, dirs: &[PathBuf], path: &str, timeout: Duration) -> Result<(), ContainerizerError> {
        if dirs.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        if self.is_v2() {
            for d in dirs {
                let kill_file = d.join("cgroup.kill");
                if kill_file.exists() {
                    write_file(&kill_file, "1")?;
                }
            }
        }
        let freezer = match self.version {
            CgroupVersion::V1 => Some(self.dir("freezer", path)).filter(|d| d.join("freezer.state").exists()),
            CgroupVersion::V2 => None,
        };
        loop {
            let left = procs_of(dirs);
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ContainerizerError::Other(format!("processes {left:?} of cgroup {path} survive SIGKILL")));
            }
            if self.is_v2() {
                // The kernel empties the cgroup asynchronously after
                // cgroup.kill; only where that is missing (before 5.14)
                // kill one by one.
                if !dirs.iter().any(|d| d.join("cgroup.kill").exists()) {
                    for pid in &left {
                        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
                    }
                }
            } else {
                if let Some(f) = &freezer {
                    let _ = write_file(&f.join("freezer.state"), "FROZEN");
                }
                for pid in procs_of(dirs) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                if let Some(f) = &freezer {
                    // Killed processes only die once thawed.
                    let _ = write_file(&f.join("freezer.state"), "THAWED");
                }
            }
            // Dying takes a moment: look again soon, then less often.
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }

    /// Removes cgroup `path` (its sub-cgroups first) from every hierarchy;
    /// a cgroup still busy with dying processes is retried until `timeout`.
    pub fn remove(&self, path: &str, timeout: Duration) -> Result<(), ContainerizerError> {
        self.remove_in(&self.existing_dirs(path), timeout)
    }

    /// `remove` on the directories of `path` already looked up.
    fn remove_in(&self, dirs: &[PathBuf], timeout: Duration) -> Result<(), ContainerizerError> {
        let deadline = Instant::now() + timeout;
        for dir in dirs {
            rmdir_tree(dir, deadline)?;
        }
        Ok(())
    }

    /// Kills every process of cgroup `path` and removes it, looking its
    /// directories up once; a cgroup that is already gone costs one stat
    /// per hierarchy.
    pub fn destroy(&self, path: &str, timeout: Duration) -> Result<(), ContainerizerError> {
        let dirs = self.existing_dirs(path);
        self.kill_in(&dirs, path, timeout)?;
        self.remove_in(&dirs, timeout)
    }
}

/// The v2 controller behind a v1 hierarchy name.
fn v2_controller(v1: &str) -> Option<&'static str> {
    match v1 {
        "cpu" | "cpuacct" => Some("cpu"),
        "memory" => Some("memory"),
        "pids" => Some("pids"),
        "blkio" => Some("io"),
        _ => None,
    }
}

/// Removes `dir` and every cgroup below it, deepest first.
pub(crate) fn rmdir_tree(dir: &Path, deadline: Instant) -> Result<(), ContainerizerError> {
    let mut pause = Duration::from_millis(1);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&e.path(), deadline)?;
            }
        }
    }
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() < deadline && e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(10));
            }
            Err(e) => return Err(ContainerizerError::io("remove cgroup", dir)(e)),
        }
    }
}

/// Pids in `cgroup.procs` of `dirs` and their sub-cgroups.
pub fn procs_of(dirs: &[PathBuf]) -> Vec<i32> {
    fn collect(dir: &Path, out: &mut Vec<i32>) {
        if let Some(text) = read_opt(&dir.join("cgroup.procs")) {
            out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect(&e.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    for d in dirs {
        collect(d, &mut out);
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Number of non-empty lines in a cgroup list file (`cgroup.procs`, `tasks`).
pub fn count_lines(path: &Path) -> Option<u32> {
    read_opt(path).map(|t| t.lines().filter(|l| !l.trim().is_empty()).count() as u32)
}

/// A file's content, `None` when it cannot be read (absent, cgroup gone).
pub fn read_opt(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Reads a cgroup file.
pub fn read_file(path: &Path) -> Result<String, ContainerizerError> {
    std::fs::read_to_string(path).map_err(ContainerizerError::io("read cgroup file", path))
}

/// Writes a cgroup file (one write, as the kernel wants it).
pub fn write_file(path: &Path, value: &str) -> Result<(), ContainerizerError> {
    std::fs::write(path, value).map_err(ContainerizerError::io("write cgroup file", path))
}

/// A flat-keyed file (`memory.stat`, `cpu.stat`, `memory.events`,
/// `cpuacct.stat`, `memory.oom_control`): the value of `key`.
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key)).then(|| it.next()?.parse().ok()).flatten()
    })
}

/// A single number in a file; `max` (v2) and v1's near-`i64::MAX` both
/// mean no limit (`None`).
pub fn parse_limit(text: &str) -> Option<u64> {
    let t = text.trim();
    if t == "max" || t == "-1" {
        return None;
    }
    t.parse::<u64>().ok().filter(|v| *v < V1_UNLIMITED_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_files_and_limits_parse() {
        let stat = "cache 4096\nrss 8192\ntotal_rss 12288\n";
        assert_eq!(keyed(stat, "rss"), Some(8192));
        assert_eq!(keyed(stat, "total_rss"), Some(12288));
        assert_eq!(keyed(stat, "swap"), None);
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit("67108864\n"), Some(64 << 20));
    }

    #[test]
    fn v2_create_enables_controllers_in_ancestors_only() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
        std::fs::write(tmp.path().join("cgroup.subtree_control"), "").unwrap();
        let fs = CgroupFs::detect_at(tmp.path());
        assert!(fs.is_v2());
        let dirs = fs.create("/mezzo/c1", &["cpu", "memory"]).unwrap();
        assert_eq!(dirs, vec![tmp.path().join("mezzo/c1")]);
        let root_ctl = std::fs::read_to_string(tmp.path().join("cgroup.subtree_control")).unwrap();
        assert_eq!(root_ctl, "+cpu +memory");
        let mid_ctl = std::fs::read_to_string(tmp.path().join("mezzo/cgroup.subtree_control")).unwrap();
        assert_eq!(mid_ctl, "+cpu +memory");
        assert!(!tmp.path().join("mezzo/c1/cgroup.subtree_control").exists(), "the leaf keeps its processes");
    }
}
