//! The cgroup filesystem, for every backend: v1 (one hierarchy per controller
//! under `<root>/<controller>`) or v2 (one unified hierarchy at `<root>`).
//! The root is injectable so that the code paths run against a fake tree of
//! plain files in a temp directory.
//!
//! A container's cgroup is found either through a [`CgroupFs`] (the
//! isolators, which made it) or in every cgroup hierarchy mounted on the host
//! ([`container_dirs`], from mountinfo: cleanup of a container in any state,
//! even one whose runtime state never got written). Both kill through the
//! one loop [`kill_in`] and remove through [`remove_in`].

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

    /// Kills every process of cgroup `path` and waits until none is left
    /// (see [`kill_in`]).
    pub fn kill(&self, path: &str, timeout: Duration) -> Result<(), ContainerizerError> {
        kill_in(&self.existing_dirs(path), path, timeout)
    }

    /// Removes cgroup `path` (its sub-cgroups first) from every hierarchy;
    /// a cgroup still busy with dying processes is retried until `timeout`.
    pub fn remove(&self, path: &str, timeout: Duration) -> Result<(), ContainerizerError> {
        remove_in(&self.existing_dirs(path), timeout)
    }

    /// Kills every process of cgroup `path` and removes it, looking its
    /// directories up once; a cgroup that is already gone costs one stat
    /// per hierarchy.
    pub fn destroy(&self, path: &str, timeout: Duration) -> Result<(), ContainerizerError> {
        let dirs = self.existing_dirs(path);
        kill_in(&dirs, path, timeout)?;
        remove_in(&dirs, timeout)
    }
}

/// One line of /proc/self/mountinfo that we care about.
#[derive(Debug, Clone)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fs_type: String,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            Some(MountEntry { mount_point: PathBuf::from(unescape(fields.get(4)?)), fs_type: fields.get(sep + 1)?.to_string() })
        })
        .collect()
}

fn mounts() -> Vec<MountEntry> {
    std::fs::read_to_string("/proc/self/mountinfo").map(|t| parse_mountinfo(&t)).unwrap_or_default()
}

/// Mount points at or below `prefix` in this process's mount namespace,
/// deepest first.
pub fn mounts_under(prefix: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mounts().into_iter().map(|m| m.mount_point).filter(|p| p.starts_with(prefix)).collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// The directory of cgroup `cgroup_path` in every cgroup hierarchy mounted
/// on the host (v1 controllers and v2) where it exists.
pub fn container_dirs(cgroup_path: &str) -> Vec<PathBuf> {
    let rel = cgroup_path.trim_start_matches('/');
    if rel.is_empty() {
        return Vec::new();
    }
    let mut dirs: Vec<PathBuf> = mounts()
        .into_iter()
        .filter(|m| m.fs_type == "cgroup" || m.fs_type == "cgroup2")
        .map(|m| m.mount_point.join(rel))
        .filter(|d| d.is_dir())
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// [`kill_in`] on cgroup `cgroup_path` in every mounted hierarchy.
pub fn kill_all(cgroup_path: &str, timeout: Duration) -> Result<(), ContainerizerError> {
    kill_in(&container_dirs(cgroup_path), cgroup_path, timeout)
}

/// [`remove_in`] on cgroup `cgroup_path` in every mounted hierarchy.
pub fn remove_dirs(cgroup_path: &str, timeout: Duration) -> Result<(), ContainerizerError> {
    remove_in(&container_dirs(cgroup_path), timeout)
}

/// The freezer of a cgroup directory: v1's `freezer.state` or v2's
/// `cgroup.freeze`, with its frozen and thawed values.
fn freezer(dir: &Path) -> Option<(PathBuf, &'static str, &'static str)> {
    let v1 = dir.join("freezer.state");
    if v1.exists() {
        return Some((v1, "FROZEN", "THAWED"));
    }
    let v2 = dir.join("cgroup.freeze");
    v2.exists().then_some((v2, "1", "0"))
}

/// Kills every process of the cgroup whose directories (one per v1 hierarchy,
/// or the v2 one) are `dirs`, sub-cgroups included, and waits until none is
/// left; `path` names the cgroup in the error. The one kill loop of every
/// backend:
/// - where a directory has `cgroup.kill` (v2, Linux 5.14+), one write kills
///   its whole subtree, forks included, and the kernel empties it;
/// - where one has not (v1, older v2), the cgroup is frozen so that a
///   forking task cannot outrun the loop, its processes are SIGKILLed, and
///   it is thawed again (v1's killed processes only die once thawed).
///
/// A cgroup that is empty, or whose directories vanish meanwhile, ends the
/// loop; one that still has processes at `timeout` is an error naming them.
/// An empty `dirs` costs nothing, an empty cgroup one read of `cgroup.procs`
/// per hierarchy.
pub fn kill_in(dirs: &[PathBuf], path: &str, timeout: Duration) -> Result<(), ContainerizerError> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    let kill_files: Vec<PathBuf> = dirs.iter().map(|d| d.join("cgroup.kill")).filter(|f| f.exists()).collect();
    let one_by_one = kill_files.len() < dirs.len();
    let freezers: Vec<_> = if one_by_one { dirs.iter().filter_map(|d| freezer(d)).collect() } else { Vec::new() };
    let mut last_error = None;
    loop {
        let left = procs_of(dirs);
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let why = last_error.map(|e: ContainerizerError| format!(" ({e})")).unwrap_or_default();
            return Err(ContainerizerError::Other(format!("processes {left:?} of cgroup {path} survive SIGKILL{why}")));
        }
        // Again on every round: a process may have joined since (a
        // supervisor still building its container). Errors are kept for the
        // message: a cgroup that vanishes meanwhile fails the write and ends
        // the loop empty.
        for f in &kill_files {
            if let Err(e) = write_file(f, "1") {
                last_error = Some(e);
            }
        }
        if one_by_one {
            for (file, frozen, _) in &freezers {
                let _ = write_file(file, frozen);
            }
            for pid in procs_of(dirs) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            for (file, _, thawed) in &freezers {
                let _ = write_file(file, thawed);
            }
        }
        // Dying takes a moment: look again soon, then less often.
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// Removes the cgroup directories `dirs` (their sub-cgroups first); a cgroup
/// still busy with dying processes is retried until `timeout`.
pub fn remove_in(dirs: &[PathBuf], timeout: Duration) -> Result<(), ContainerizerError> {
    let deadline = Instant::now() + timeout;
    for dir in dirs {
        rmdir_tree(dir, deadline)?;
    }
    Ok(())
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
fn rmdir_tree(dir: &Path, deadline: Instant) -> Result<(), ContainerizerError> {
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

    #[test]
    fn parses_mountinfo_lines() {
        let text = "30 23 0:26 / /sys/fs/cgroup/memory rw,nosuid shared:13 - cgroup cgroup rw,memory\n\
                    31 23 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
                    40 1 8:1 / /run/a\\040b rw - ext4 /dev/sda1 rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].mount_point, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(m[0].fs_type, "cgroup");
        assert_eq!(m[1].fs_type, "cgroup2");
        assert_eq!(m[2].mount_point, PathBuf::from("/run/a b"));
    }

    #[test]
    fn kill_ends_on_empty_and_vanishing_cgroups() {
        let tmp = tempfile::tempdir().unwrap();
        // No directory at all, and a cgroup without processes: done at once.
        kill_in(&[], "/mezzo/none", Duration::from_secs(5)).expect("no directories");
        let empty = tmp.path().join("mezzo/empty");
        std::fs::create_dir_all(&empty).unwrap();
        std::fs::write(empty.join("cgroup.procs"), "").unwrap();
        let started = Instant::now();
        kill_in(&[empty.clone()], "/mezzo/empty", Duration::from_secs(5)).expect("empty cgroup");
        assert!(started.elapsed() < Duration::from_secs(1));
        // A cgroup whose directory goes while the loop runs (its processes
        // reaped, the cgroup removed by someone else) ends the loop too; its
        // process is never signalled one by one, cgroup.kill does that.
        let gone = tmp.path().join("mezzo/gone");
        std::fs::create_dir_all(gone.join("sub")).unwrap();
        std::fs::write(gone.join("cgroup.kill"), "").unwrap();
        std::fs::write(gone.join("sub/cgroup.procs"), "4242\n").unwrap();
        let remover = {
            let (gone, away) = (gone.clone(), tmp.path().join("away"));
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                // One rename: the directory vanishes at once, as rmdir does it on cgroupfs.
                std::fs::rename(gone, away).unwrap();
            })
        };
        let started = Instant::now();
        kill_in(&[gone.clone()], "/mezzo/gone", Duration::from_secs(5)).expect("vanished cgroup");
        remover.join().unwrap();
        assert!(started.elapsed() >= Duration::from_millis(90), "returned before the cgroup was gone");
        assert!(started.elapsed() < Duration::from_secs(4), "waited for the timeout");
    }

    #[test]
    fn v1_kill_freezes_kills_and_thaws() {
        use std::os::unix::process::ExitStatusExt;
        let tmp = tempfile::tempdir().unwrap();
        let fs = CgroupFs::v1(tmp.path());
        for c in ["freezer", "memory"] {
            std::fs::create_dir_all(fs.dir(c, "/mezzo/v1")).unwrap();
        }
        let freezer = fs.dir("freezer", "/mezzo/v1");
        std::fs::write(freezer.join("freezer.state"), "THAWED").unwrap();
        // A real process of ours stands in for the container's, listed in
        // the memory hierarchy only; the "kernel" unlists it once it died.
        let mut child = std::process::Command::new("sleep").arg("100").spawn().unwrap();
        let procs = fs.dir("memory", "/mezzo/v1").join("cgroup.procs");
        std::fs::write(&procs, format!("{}\n", child.id())).unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        let kernel = std::thread::spawn(move || {
            use nix::sys::wait::{waitid, Id, WaitPidFlag};
            // Seen dead but not reaped until it is unlisted: its pid cannot be
            // reused while the loop may still signal it.
            waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT).unwrap();
            std::fs::write(procs, "").unwrap();
            child.wait().unwrap()
        });
        fs.kill("/mezzo/v1", Duration::from_secs(10)).expect("kill");
        let status = kernel.join().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert_eq!(std::fs::read_to_string(freezer.join("freezer.state")).unwrap(), "THAWED", "left frozen");
    }
}
