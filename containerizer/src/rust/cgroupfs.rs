//! Host-side cgroup and mount cleanup for a container, done straight on
//! cgroupfs so that it works for a container in any state, even one whose
//! libcontainer state never got written.

use crate::isolators::{procs_of, rmdir_tree};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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

/// The container's directory in every mounted cgroup hierarchy (v1
/// controllers and v2) where it exists.
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

fn set_frozen(dirs: &[PathBuf], frozen: bool) {
    for d in dirs {
        let v1 = d.join("freezer.state");
        if v1.exists() {
            let _ = std::fs::write(&v1, if frozen { "FROZEN" } else { "THAWED" });
        }
        let v2 = d.join("cgroup.freeze");
        if v2.exists() {
            let _ = std::fs::write(&v2, if frozen { "1" } else { "0" });
        }
    }
}

/// SIGKILLs every process in the container's cgroups until none is left.
/// The freezer keeps a forking task from outrunning the kill loop.
pub fn kill_all(cgroup_path: &str, timeout: Duration) -> Result<(), String> {
    kill_in(&container_dirs(cgroup_path), cgroup_path, timeout)
}

/// `kill_all` on directories already looked up; an empty cgroup costs one
/// read of `cgroup.procs` per hierarchy, and none costs nothing.
pub fn kill_in(dirs: &[PathBuf], cgroup_path: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        let left = procs_of(dirs);
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("processes {left:?} of cgroup {cgroup_path} survive SIGKILL"));
        }
        // v2 (5.14+) kills the whole cgroup in one write.
        for d in dirs {
            let kill_file = d.join("cgroup.kill");
            if kill_file.exists() {
                let _ = std::fs::write(&kill_file, "1");
            }
        }
        set_frozen(dirs, true);
        for pid in procs_of(dirs) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        // Killed processes only die once thawed.
        set_frozen(dirs, false);
        // Dying takes a moment: look again soon, then less often.
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Removes the container's cgroup directories (deepest first) in every
/// hierarchy; a cgroup busy with dying processes is retried until `timeout`.
pub fn remove_dirs(cgroup_path: &str, timeout: Duration) -> Result<(), String> {
    remove_in(&container_dirs(cgroup_path), timeout)
}

/// `remove_dirs` on directories already looked up.
pub fn remove_in(dirs: &[PathBuf], timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    for dir in dirs {
        rmdir_tree(dir, deadline).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Mount points at or below `prefix` in this process's mount namespace,
/// deepest first.
pub fn mounts_under(prefix: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mounts().into_iter().map(|m| m.mount_point).filter(|p| p.starts_with(prefix)).collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
