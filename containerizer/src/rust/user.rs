//! Resolves a task's user (`name`, `uid`, `name:group`, `uid:gid`) against
//! the container's own `/etc/passwd` and `/etc/group`.

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
/// everything in it (never following symlinks), and the `stdout` and
/// `stderr` files, created empty when missing, so that the task can write
/// its sandbox and its output files belong to it.
pub fn chown_sandbox(sandbox: &Path, outputs: &[&Path], uid: u32, gid: u32) -> Result<(), ContainerizerError> {
    use std::os::unix::fs::OpenOptionsExt;
    for out in outputs {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(out)
            .map_err(ContainerizerError::io("create output file", *out))?;
    }
    let (uid, gid) = (Some(nix::unistd::Uid::from_raw(uid)), Some(nix::unistd::Gid::from_raw(gid)));
    let chown = |p: &Path| {
        nix::unistd::fchownat(None, p, uid, gid, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| ContainerizerError::io("chown to the task user", p)(std::io::Error::from(e)))
    };
    // Depth-first without recursion; directories are only entered, never
    // followed through symlinks (symlink_metadata).
    let mut stack = vec![sandbox.to_path_buf()];
    while let Some(dir) = stack.pop() {
        chown(&dir)?;
        for entry in std::fs::read_dir(&dir).map_err(ContainerizerError::io("read sandbox", &dir))? {
            let entry = entry.map_err(ContainerizerError::io("read sandbox", &dir))?;
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).map_err(ContainerizerError::io("stat", &path))?;
            if meta.is_dir() {
                stack.push(path);
            } else {
                chown(&path)?;
            }
        }
    }
    for out in outputs {
        chown(out)?;
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
