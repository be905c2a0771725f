//! cgroup v1 placement by the supervisor itself.
//!
//! libcontainer moves a container into its cgroups by writing the pid of its
//! intermediate process to `cgroup.procs`. On cgroup v1 the first such write
//! after a quiet spell waits for an RCU grace period (the kernel's
//! `cgroup_threadgroup_rwsem` leaving its fast mode), 5 to 20 ms, once per
//! launch when launches are sparse, and writes from concurrent launches
//! queue behind each other. A process that moves only its own thread
//! (`0` written to the v1 `tasks` file) skips that lock and takes a few
//! microseconds; for the single-threaded supervisor that is the whole
//! process.
//!
//! So on v1 the backend prepares the container's cgroups completely (the
//! cgroups isolator's controllers with their limits, plus `freezer` and a
//! `devices` allow-list, as Mesos's launcher and Docker do), and records them
//! in the runtime directory (`RuntimeDir::write_placement`). The supervisor then moves
//! itself into them, lets libcontainer clone the container's processes (they
//! inherit the cgroups), and moves itself back out: libcontainer is given no
//! cgroup to manage (see `mezzo-launcher`). The container still sees its own
//! cgroups at `/sys/fs/cgroup/<hierarchy>`, read-only: the supervisor builds
//! a tree of them at `RuntimeDir::views_dir` (a tmpfs holding a bind mount of the
//! container's cgroup per hierarchy, at [`view_dir`], and a symlink named
//! after the hierarchy to it), which the container gets as one recursive,
//! read-only bind mount.
//!
//! On v2 there is no such per-thread move for a domain cgroup, and
//! libcontainer places the container as before.

use crate::isolators::CgroupFs;
use crate::{ContainerizerError, RuntimeDir};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Hierarchies every placed container gets besides the cgroups isolator's:
/// `freezer` (kill without a fork race) and `devices` (the allow-list).
pub const LAUNCHER_HIERARCHIES: [&str; 2] = ["freezer", "devices"];

/// The device cgroup rules of every container, written to `devices.allow`
/// after `a` to `devices.deny`: the standard devices (null, zero, full,
/// tty, random, urandom, console, ptmx, pts, tun) and mknod of any device,
/// as Docker, runc and libcontainer allow by default.
pub const DEVICE_ALLOW_RULES: [&str; 12] = [
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
    "c 10:200 rwm",
];

/// One v1 hierarchy the container is placed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedHierarchy {
    /// The hierarchy's directory name under the cgroupfs root (`memory`,
    /// `cpu,cpuacct`, ...), also its name in the container's `/sys/fs/cgroup`.
    pub name: String,
    /// The mount point of the hierarchy (`/sys/fs/cgroup/memory`).
    pub mount: PathBuf,
    /// The container's cgroup in it.
    pub dir: PathBuf,
}

/// The cgroups a supervisor places its container in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub hierarchies: Vec<PlacedHierarchy>,
}

/// Where the view of `hierarchy` is mounted in `RuntimeDir::views_dir`: `.<name>`,
/// behind the symlink `<name>`. The mount point never ends in a
/// controller's name: libcgroups finds hierarchies by that suffix in the
/// mount table, and must find none.
pub fn view_dir(runtime_dir: &RuntimeDir, hierarchy: &str) -> PathBuf {
    runtime_dir.views_dir().join(format!(".{hierarchy}"))
}

impl Placement {
    /// Completes cgroup `path` for a placed container on the v1 `fs`: the
    /// launcher's hierarchies are created (the isolators made theirs), the
    /// device allow-list written, and every hierarchy holding the cgroup
    /// listed. Also creates the mount point of the views under `runtime_dir`.
    pub fn prepare(fs: &CgroupFs, path: &str, runtime_dir: &RuntimeDir) -> Result<Placement, ContainerizerError> {
        if fs.is_v2() {
            return Err(ContainerizerError::Other("cgroup placement by the supervisor needs cgroup v1".into()));
        }
        for h in LAUNCHER_HIERARCHIES {
            if fs.root.join(h).is_dir() {
                fs.create(path, &[h])?;
            }
        }
        let devices = fs.dir("devices", path);
        if devices.join("devices.deny").exists() {
            crate::isolators::write_file(&devices.join("devices.deny"), "a")?;
            for rule in DEVICE_ALLOW_RULES {
                crate::isolators::write_file(&devices.join("devices.allow"), rule)?;
            }
        }
        let mut hierarchies = Vec::new();
        for dir in fs.existing_dirs(path) {
            let name = dir
                .strip_prefix(&fs.root)
                .ok()
                .and_then(|rel| rel.components().next())
                .and_then(|c| c.as_os_str().to_str())
                .ok_or_else(|| ContainerizerError::Other(format!("cgroup {} is outside {}", dir.display(), fs.root.display())))?
                .to_string();
            hierarchies.push(PlacedHierarchy { mount: fs.root.join(&name), name, dir });
        }
        let views = runtime_dir.views_dir();
        std::fs::create_dir_all(&views).map_err(ContainerizerError::io("create cgroup views mount point", &views))?;
        Ok(Placement { hierarchies })
    }

    /// Writes the placement into `runtime_dir`.
    pub fn save(&self, runtime_dir: &RuntimeDir) -> Result<(), ContainerizerError> {
        runtime_dir.write_placement(self)
    }

    /// The placement recorded in `runtime_dir`, if the supervisor places
    /// the container itself.
    pub fn load(runtime_dir: &RuntimeDir) -> Result<Option<Placement>, ContainerizerError> {
        runtime_dir.placement()
    }

    /// Moves the calling thread (the whole process, when single-threaded)
    /// into the container's cgroups. Returns the way back: the `tasks`
    /// files of the cgroups it left, opened now, so that [`Placement::leave`]
    /// works even where the hierarchies are no longer mounted. On failure
    /// the thread is back where it was.
    pub fn enter(&self) -> Result<Vec<File>, ContainerizerError> {
        let own = std::fs::read_to_string("/proc/thread-self/cgroup")
            .map_err(ContainerizerError::io("read own cgroups", Path::new("/proc/thread-self/cgroup")))?;
        let mut back = Vec::with_capacity(self.hierarchies.len());
        for h in &self.hierarchies {
            let current = own_cgroup(&own, &h.name).ok_or_else(|| {
                ContainerizerError::Other(format!("this process is in no cgroup of hierarchy {}", h.name))
            })?;
            let tasks = h.mount.join(current.trim_start_matches('/')).join("tasks");
            back.push(OpenOptions::new().write(true).open(&tasks).map_err(ContainerizerError::io("open", &tasks))?);
        }
        for (i, h) in self.hierarchies.iter().enumerate() {
            let tasks = h.dir.join("tasks");
            if let Err(e) = std::fs::write(&tasks, "0") {
                Self::leave(&mut back[..i]);
                return Err(ContainerizerError::io("move into cgroup", &tasks)(e));
            }
        }
        Ok(back)
    }

    /// Moves the calling thread back to the cgroups [`Placement::enter`] left.
    pub fn leave(back: &mut [File]) -> Vec<std::io::Error> {
        back.iter_mut().filter_map(|f| f.write_all(b"0").err()).collect()
    }
}

/// The calling process's cgroup in v1 hierarchy `name` (a directory name
/// under the cgroupfs root), from `/proc/<pid>/cgroup` text.
pub fn own_cgroup<'a>(proc_cgroup: &'a str, name: &str) -> Option<&'a str> {
    proc_cgroup.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let matches = controllers == name
            || controllers.strip_prefix("name=") == Some(name)
            || (!controllers.is_empty() && name.split(',').all(|n| controllers.split(',').any(|c| c == n)));
        matches.then_some(path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC_CGROUP: &str = "12:pids:/user.slice\n11:cpu,cpuacct:/a/b\n10:memory:/\n9:name=systemd:/init.scope\n0::/x\n";

    #[test]
    fn own_cgroup_by_hierarchy_name() {
        assert_eq!(own_cgroup(PROC_CGROUP, "pids"), Some("/user.slice"));
        assert_eq!(own_cgroup(PROC_CGROUP, "cpu,cpuacct"), Some("/a/b"));
        assert_eq!(own_cgroup(PROC_CGROUP, "cpu"), Some("/a/b"));
        assert_eq!(own_cgroup(PROC_CGROUP, "memory"), Some("/"));
        assert_eq!(own_cgroup(PROC_CGROUP, "systemd"), Some("/init.scope"));
        assert_eq!(own_cgroup(PROC_CGROUP, "freezer"), None);
    }

    #[test]
    fn view_names_never_end_in_a_controller() {
        let v = view_dir(&RuntimeDir::new("/run/c1"), "memory");
        assert!(!v.ends_with("memory"));
        assert_eq!(v, PathBuf::from("/run/c1/cgroups/.memory"));
        assert_eq!(RuntimeDir::new("/run/c1").views_dir(), PathBuf::from("/run/c1/cgroups"));
    }

    #[test]
    fn prepare_on_a_v1_tree_creates_launcher_hierarchies_and_devices_rules() {
        let root = tempfile::tempdir().unwrap();
        let run = tempfile::tempdir().unwrap();
        for h in ["memory", "freezer", "devices", "cpuset"] {
            std::fs::create_dir_all(root.path().join(h)).unwrap();
        }
        // The isolator made its cgroup; the launcher adds freezer and devices.
        std::fs::create_dir_all(root.path().join("memory/mezzo/c1")).unwrap();
        // A plain directory stands in for the kernel's devices files.
        std::fs::create_dir_all(root.path().join("devices/mezzo/c1")).unwrap();
        std::fs::write(root.path().join("devices/mezzo/c1/devices.deny"), "").unwrap();
        let fs = CgroupFs::v1(root.path());
        let run = RuntimeDir::new(run.path());
        let p = Placement::prepare(&fs, "/mezzo/c1", &run).unwrap();
        let names: Vec<&str> = p.hierarchies.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["devices", "freezer", "memory"]);
        assert_eq!(p.hierarchies[2].dir, root.path().join("memory/mezzo/c1"));
        assert_eq!(p.hierarchies[2].mount, root.path().join("memory"));
        // Plain files keep the last write: the last allow rule.
        assert_eq!(std::fs::read_to_string(root.path().join("devices/mezzo/c1/devices.deny")).unwrap(), "a");
        assert_eq!(std::fs::read_to_string(root.path().join("devices/mezzo/c1/devices.allow")).unwrap(), "c 10:200 rwm");
        assert!(run.views_dir().is_dir());
        p.save(&run).unwrap();
        assert_eq!(Placement::load(&run).unwrap(), Some(p));
        assert_eq!(Placement::load(&RuntimeDir::new(root.path())).unwrap(), None);
    }

    #[test]
    fn prepare_refuses_v2() {
        let root = tempfile::tempdir().unwrap();
        assert!(Placement::prepare(&CgroupFs::v2(root.path()), "/mezzo/c1", &RuntimeDir::new(root.path())).is_err());
    }
}
