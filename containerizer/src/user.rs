//! The task's user, for every backend: resolves it (`name`, `uid`,
//! `name:group`, `uid:gid`) against the container's own `/etc/passwd` and
//! `/etc/group`, and gives it the sandbox.

use crate::{ContainerizerError, Rootfs};
use std::path::{Path, PathBuf};

/// A resolved user: uid, primary gid and supplementary gids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Resolves `user` with the passwd and group files found first (top first)
/// among `roots`, e.g. an overlay's layers from the top down.
pub fn resolve_user(user: &str, roots: &[PathBuf]) -> Result<ResolvedUser, ContainerizerError> {
    let passwd = first_existing(roots, "etc/passwd").map(|p| read_db(&p)).transpose()?.unwrap_or_default();
    let group = first_existing(roots, "etc/group").map(|p| read_db(&p)).transpose()?.unwrap_or_default();
    let (name, grp) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let entry = passwd.iter().find(|f| f.first().map(String::as_str) == Some(name));
    let uid = match (entry, name.parse::<u32>()) {
        (Some(f), _) => field_u32(f, 2, user)?,
        (None, Ok(uid)) => uid,
        (None, Err(_)) => {
            return Err(ContainerizerError::InvalidSpec(format!("user '{name}' not found in the container's /etc/passwd")))
        }
    };
    let entry = entry.or_else(|| passwd.iter().find(|f| f.get(2).and_then(|s| s.parse::<u32>().ok()) == Some(uid)));
    let gid = match grp {
        Some(g) => match group.iter().find(|f| f.first().map(String::as_str) == Some(g)) {
            Some(f) => field_u32(f, 2, g)?,
            None => g.parse::<u32>().map_err(|_| {
                ContainerizerError::InvalidSpec(format!("group '{g}' not found in the container's /etc/group"))
            })?,
        },
        None => entry.map(|f| field_u32(f, 3, user)).transpose()?.unwrap_or(0),
    };
    // Supplementary groups list the user by name in /etc/group.
    let additional_gids = match entry.and_then(|f| f.first()) {
        Some(login) => group
            .iter()
            .filter(|f| f.get(3).is_some_and(|m| m.split(',').any(|m| m == login)))
            .filter_map(|f| f.get(2).and_then(|s| s.parse::<u32>().ok()))
            .filter(|g| *g != gid)
            .collect(),
        None => Vec::new(),
    };
    Ok(ResolvedUser { uid, gid, additional_gids })
}

/// Directories whose `/etc/passwd` describes a container's users, top first.
pub fn user_db_roots(rootfs: &Rootfs) -> Vec<PathBuf> {
    match rootfs {
        Rootfs::Host => vec![PathBuf::from("/")],
        Rootfs::Directory(dir) => vec![dir.clone()],
        Rootfs::Overlay { lowers, upper, .. } => std::iter::once(upper.clone()).chain(lowers.iter().rev().cloned()).collect(),
    }
}

/// Gives the sandbox to the task's user, as Mesos does: the directory and
/// everything in it, and the `stdout` and `stderr` files, created empty when
/// missing, so that the task can write its sandbox and its output files
/// belong to it. Never through a symlink: each entry is chowned itself
/// (`fchownat` with `AT_SYMLINK_NOFOLLOW` on its directory's descriptor), and
/// directories are walked with `sandbox_fs::walk`, which never enters a
/// symlink or another mount, even one swapped in while walking.
pub fn chown_sandbox(sandbox: &Path, outputs: &[&Path], uid: u32, gid: u32) -> Result<(), ContainerizerError> {
    use nix::fcntl::AtFlags;
    let (uid, gid) = (Some(nix::unistd::Uid::from_raw(uid)), Some(nix::unistd::Gid::from_raw(gid)));
    crate::sandbox_fs::walk::<ContainerizerError>(sandbox, usize::MAX, |entry| {
        nix::unistd::fchownat(Some(entry.dir), entry.name, uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW | AtFlags::AT_EMPTY_PATH).map_err(|e| {
            ContainerizerError::io("chown to the task user", sandbox.join(entry.name.to_string_lossy().as_ref()))(e.into())
        })
    })?;
    for out in outputs {
        use std::os::fd::AsRawFd;
        let file = crate::sandbox_fs::open_output(out, 0o644)?;
        nix::unistd::fchown(file.as_raw_fd(), uid, gid).map_err(|e| ContainerizerError::io("chown to the task user", *out)(e.into()))?;
    }
    Ok(())
}

fn first_existing(roots: &[PathBuf], rel: &str) -> Option<PathBuf> {
    roots.iter().map(|r| r.join(rel)).find(|p| p.is_file())
}

fn read_db(path: &Path) -> Result<Vec<Vec<String>>, ContainerizerError> {
    let text = std::fs::read_to_string(path).map_err(ContainerizerError::io("read user database", path))?;
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').map(String::from).collect())
        .collect())
}

fn field_u32(fields: &[String], i: usize, what: &str) -> Result<u32, ContainerizerError> {
    fields
        .get(i)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ContainerizerError::InvalidSpec(format!("malformed user database entry for '{what}'")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of the sandbox swapped for a symlink to a host directory,
    /// in a loop, while the sandbox is given to the task's user: no host
    /// file ever changes owner.
    #[test]
    fn chown_sandbox_never_chowns_through_a_symlink() {
        use std::os::unix::fs::MetadataExt;
        if !nix::unistd::geteuid().is_root() {
            mezzo_testkit::skip("needs root (chown)");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let (sandbox, host) = (tmp.path().join("sandbox"), tmp.path().join("host"));
        std::fs::create_dir_all(sandbox.join("dir")).unwrap();
        std::fs::write(sandbox.join("dir/mine"), b"").unwrap();
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(host.join("victim"), b"").unwrap();
        std::os::unix::fs::symlink(&host, sandbox.join("swap")).unwrap();
        std::os::unix::fs::symlink(host.join("victim"), sandbox.join("link")).unwrap();
        let stdout = sandbox.join("stdout");
        chown_sandbox(&sandbox, &[&stdout], 4321, 4321).unwrap();
        assert_eq!(std::fs::metadata(sandbox.join("stdout")).unwrap().uid(), 4321);
        assert_eq!(std::fs::metadata(sandbox.join("dir/mine")).unwrap().uid(), 4321);
        assert_eq!(std::fs::symlink_metadata(sandbox.join("link")).unwrap().uid(), 4321, "the link itself");
        let racer = crate::sandbox_fs::racing::SymlinkSwapper::start(&sandbox);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let mut runs = 0;
        while std::time::Instant::now() < deadline && std::fs::metadata(host.join("victim")).unwrap().uid() == 0 {
            let _ = chown_sandbox(&sandbox, &[&stdout], 4321, 4321);
            runs += 1;
        }
        drop(racer);
        let (file, dir) = (std::fs::metadata(host.join("victim")).unwrap(), std::fs::metadata(&host).unwrap());
        assert_eq!((file.uid(), dir.uid()), (0, 0), "a host file was given to the task's user after {runs} runs");
    }

    #[test]
    fn resolves_names_numbers_and_groups() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n").unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nnogroup:x:65534:\nwheel:x:10:nobody\n").unwrap();
        let roots = vec![dir.path().to_path_buf()];
        let r = |u: &str| resolve_user(u, &roots);
        assert_eq!(r("nobody").unwrap(), ResolvedUser { uid: 65534, gid: 65534, additional_gids: vec![10] });
        assert_eq!(r("1000").unwrap(), ResolvedUser { uid: 1000, gid: 0, additional_gids: vec![] });
        assert_eq!(r("1000:7").unwrap().gid, 7);
        assert_eq!(r("nobody:wheel").unwrap().gid, 10);
        assert!(r("nosuchuser").is_err());
        assert!(r("root:nosuchgroup").is_err());
    }
}
