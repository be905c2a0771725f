//! One agent per work dir and per cgroup root.
//!
//! Two agents on one `--cgroups_root` take each other's containers for
//! orphans and destroy them; two on one `--work_dir` recover (and fight
//! over) the same checkpoints. An agent therefore holds, for its lifetime,
//! an exclusive flock(2) on `<work_dir>/agent.lock` (and on
//! `<runtime_dir>/agent.lock` when `--runtime_dir` is elsewhere) and, when a
//! containerizer with cgroups under `--cgroups_root` (rust) is enabled, on
//! `/run/mezzo/cgroups/<root>.lock`.
//! A nested root (`a/b`) also holds the lock of each ancestor (`a`) shared,
//! so `a` and `a/b` exclude each other while `a/b` and `a/c` coexist. The
//! kernel drops the locks of an agent that crashes; the descriptors are
//! close-on-exec, so executors never inherit them.

use crate::flags::Flags;
use anyhow::{bail, Context};
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Name of the lock file in the work dir (and the runtime dir).
pub const LOCK_FILE: &str = "agent.lock";
/// Host-wide directory of the cgroup roots' lock files.
pub const CGROUPS_LOCK_DIR: &str = "/run/mezzo/cgroups";

/// The locks an agent holds while it runs; dropping them releases them.
pub struct Ownership {
    _locks: Vec<Flock<File>>,
}

/// Takes the work dir's and the cgroup root's locks for `flags`, or fails
/// with a message naming the flag and the agent that holds it.
pub fn acquire(flags: &Flags) -> anyhow::Result<Ownership> {
    acquire_in(flags, Path::new(CGROUPS_LOCK_DIR))
}

/// `acquire`, with the cgroup roots' locks under `cgroups_lock_dir`.
pub fn acquire_in(flags: &Flags, cgroups_lock_dir: &Path) -> anyhow::Result<Ownership> {
    let owner = format!("mezzo-agent pid {} at {}:{}", std::process::id(), flags.ip, flags.port);
    let mut locks = Vec::new();
    std::fs::create_dir_all(&flags.work_dir).with_context(|| format!("create --work_dir {}", flags.work_dir.display()))?;
    let work_dir = flags.work_dir.canonicalize().with_context(|| format!("--work_dir {}", flags.work_dir.display()))?;
    locks.push(lock_exclusive(&work_dir.join(LOCK_FILE), "--work_dir", &work_dir.display().to_string(), &owner)?);
    if let Some(runtime_dir) = &flags.runtime_dir {
        std::fs::create_dir_all(runtime_dir).with_context(|| format!("create --runtime_dir {}", runtime_dir.display()))?;
        let runtime_dir = runtime_dir.canonicalize()?;
        if runtime_dir != work_dir {
            locks.push(lock_exclusive(&runtime_dir.join(LOCK_FILE), "--runtime_dir", &runtime_dir.display().to_string(), &owner)?);
        }
    }
    let kinds = flags.containerizers.0.clone();
    if kinds.iter().any(|k| k.uses_cgroups_root()) {
        let parts = cgroups_root_components(&flags.cgroups_root)?;
        let root = parts.join("/");
        std::fs::create_dir_all(cgroups_lock_dir)
            .with_context(|| format!("create {} (the host-wide locks of cgroup roots)", cgroups_lock_dir.display()))?;
        // Ancestors shared, outermost first, then the root itself exclusive.
        let mut dir = cgroups_lock_dir.to_path_buf();
        for (i, part) in parts.iter().enumerate() {
            let file = dir.join(format!("{part}.lock"));
            if i + 1 == parts.len() {
                locks.push(lock_exclusive(&file, "--cgroups_root", &root, &owner)?);
            } else {
                locks.push(lock_shared_ancestor(&file, &parts[..=i].join("/"), &root)?);
                dir = dir.join(part);
                std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
            }
        }
    }
    Ok(Ownership { _locks: locks })
}

/// The components of `--cgroups_root` (`/a/b/` is `a`, `b`); `.`, `..` and
/// an empty root are refused.
fn cgroups_root_components(root: &str) -> anyhow::Result<Vec<String>> {
    let parts: Vec<String> = root.split('/').filter(|p| !p.is_empty()).map(str::to_string).collect();
    if parts.is_empty() || parts.iter().any(|p| p == "." || p == ".." || p.contains('\0')) {
        bail!("invalid --cgroups_root '{root}': a relative cgroup path without '.' or '..' components");
    }
    Ok(parts)
}

fn open_lock_file(path: &Path) -> anyhow::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("open lock file {}", path.display()))
}

/// Who wrote the lock file last (the holder of an exclusive lock).
fn recorded_owner(path: &Path) -> String {
    let mut text = String::new();
    let read = File::open(path).and_then(|f| f.take(512).read_to_string(&mut text));
    match read {
        Ok(_) if !text.trim().is_empty() => text.trim().to_string(),
        _ => "another mezzo-agent".to_string(),
    }
}

fn lock_exclusive(path: &Path, flag: &str, value: &str, owner: &str) -> anyhow::Result<Flock<File>> {
    let file = open_lock_file(path)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            lock.set_len(0).and_then(|()| lock.rewind()).and_then(|()| writeln!(lock, "{owner}")).with_context(|| format!("write {}", path.display()))?;
            Ok(lock)
        }
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => {
            // Held shared: by agents on cgroup roots nested inside this one.
            let holder = match Flock::lock(file, FlockArg::LockSharedNonblock) {
                Ok(_) => "agents with cgroup roots nested inside it".to_string(),
                Err(_) => recorded_owner(path),
            };
            bail!(
                "{flag}={value} is in use by {holder} (lock {}): one agent per {}; stop that agent or give this one another {flag}",
                path.display(),
                &flag[2..],
            )
        }
        Err((_, e)) => Err(e).with_context(|| format!("lock {}", path.display())),
    }
}

fn lock_shared_ancestor(path: &Path, ancestor: &str, root: &str) -> anyhow::Result<Flock<File>> {
    let file = open_lock_file(path)?;
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(lock) => Ok(lock),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => bail!(
            "--cgroups_root={root} is inside --cgroups_root={ancestor} of {} (lock {}): one agent per cgroup root; stop that agent or give this one another --cgroups_root",
            recorded_owner(path),
            path.display(),
        ),
        Err((_, e)) => Err(e).with_context(|| format!("lock {}", path.display())),
    }
}

/// Where the lock of the cgroup root `root` is (for messages and tests).
pub fn cgroups_lock_path(cgroups_lock_dir: &Path, root: &str) -> PathBuf {
    let parts: Vec<&str> = root.split('/').filter(|p| !p.is_empty()).collect();
    let mut path = cgroups_lock_dir.to_path_buf();
    for p in &parts[..parts.len().saturating_sub(1)] {
        path = path.join(p);
    }
    path.join(format!("{}.lock", parts.last().copied().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn flags(work_dir: &Path, cgroups_root: &str, port: u16) -> Flags {
        Flags::try_parse_from([
            "mezzo-agent".to_string(),
            "--master=m:1".to_string(),
            format!("--work_dir={}", work_dir.display()),
            format!("--cgroups_root={cgroups_root}"),
            format!("--port={port}"),
        ])
        .unwrap()
    }

    #[test]
    fn one_owner_per_work_dir_and_cgroup_root() {
        let tmp = tempfile::tempdir().unwrap();
        let locks = tmp.path().join("cgroups");
        let (w1, w2) = (tmp.path().join("w1"), tmp.path().join("w2"));
        let first = acquire_in(&flags(&w1, "mezzo-a", 5051), &locks).unwrap();
        // The same work dir, another root.
        let e = acquire_in(&flags(&w1, "mezzo-b", 5052), &locks).err().unwrap().to_string();
        assert!(e.contains("--work_dir=") && e.contains(&format!("pid {}", std::process::id())) && e.contains(":5051"), "{e}");
        // The same root (spelt differently), another work dir.
        let e = acquire_in(&flags(&w2, "/mezzo-a/", 5052), &locks).err().unwrap().to_string();
        assert!(e.contains("--cgroups_root=mezzo-a is in use by mezzo-agent pid") && e.contains(":5051"), "{e}");
        // A root nested in the first one's.
        let e = acquire_in(&flags(&w2, "mezzo-a/x", 5052), &locks).err().unwrap().to_string();
        assert!(e.contains("inside --cgroups_root=mezzo-a"), "{e}");
        assert!(acquire_in(&flags(&w2, "../etc", 5052), &locks).is_err());
        drop(first);
        // Released with its holder (as the kernel does for a crashed agent).
        let nested = acquire_in(&flags(&w1, "mezzo-a/x", 5051), &locks).unwrap();
        let sibling = acquire_in(&flags(&w2, "mezzo-a/y", 5052), &locks).unwrap();
        let e = acquire_in(&flags(&tmp.path().join("w3"), "mezzo-a", 5053), &locks).err().unwrap().to_string();
        assert!(e.contains("--cgroups_root=mezzo-a is in use by agents with cgroup roots nested inside it"), "{e}");
        assert_eq!(cgroups_lock_path(&locks, "mezzo-a/x"), locks.join("mezzo-a").join("x.lock"));
        drop((nested, sibling));
    }
}
