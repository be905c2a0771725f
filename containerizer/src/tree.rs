//! Removing a directory tree a task wrote (a completed sandbox), from the host, as root.
//!
//! A sandbox may hold symlinks to host files, directories swapped for symlinks, and mounts left behind (a bind
//! mount whose container did not clean up). `std::fs::remove_dir_all` never follows a symlink (it works with
//! `openat`/`unlinkat` and `O_NOFOLLOW` since Rust 1.58.1), but it does descend into mount points and would empty
//! whatever is mounted there. [`remove_tree`] works on descriptors too, and:
//!
//! - enters every directory from its parent's descriptor with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//!   RESOLVE_NO_XDEV)`: a symlink is never followed (it is unlinked as a link), and a mount point (any mount,
//!   bind mounts of the same filesystem included) is never entered: it is left in place, with its ancestors,
//!   and reported;
//! - holds at most [`MAX_OPEN_LEVELS`] directories open: a deeper directory is first moved (`renameat`, same
//!   filesystem) to the top of the tree being removed, so a hostile depth neither exhausts descriptors nor
//!   makes the tree impossible to remove;
//! - carries on after an error (as Mesos's `os::rmdir(.., continueOnError)`): as much as can go goes, and the
//!   first error is returned.

use nix::errno::Errno;
use nix::fcntl::{openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::UnlinkatFlags;
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Directories held open at once while removing a tree.
pub const MAX_OPEN_LEVELS: usize = 64;

/// Why (part of) a tree was left in place.
#[derive(Debug, thiserror::Error)]
pub enum RemoveTreeError {
    /// A mount point inside the tree (or the tree itself): not entered, not removed.
    #[error("'{path}' is a mount point: left in place")]
    MountPoint { path: PathBuf },
    #[error("remove '{path}': {source}")]
    Io { path: PathBuf, #[source] source: std::io::Error },
}

/// What a removal did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// Entries unlinked (files, links, directories; the root included).
    pub entries: u64,
}

fn open_beneath(dir: RawFd, name: &CStr) -> Result<OwnedFd, Errno> {
    let resolve = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_XDEV;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
        .mode(Mode::empty())
        .resolve(resolve);
    let mut tries = 0;
    loop {
        match openat2(dir, name, how) {
            // SAFETY: openat2 returned a new descriptor that nothing else owns.
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
            Err(Errno::EAGAIN | Errno::EINTR) if tries < 64 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

/// The names in a directory (not `.` and `..`).
fn names(fd: &OwnedFd) -> Result<Vec<CString>, Errno> {
    // Dir takes the descriptor it reads: a duplicate, so `fd` stays usable for the *at calls.
    let dup = nix::unistd::dup(fd.as_raw_fd())?;
    let mut dir = nix::dir::Dir::from_fd(dup).inspect_err(|_| {
        let _ = nix::unistd::close(dup);
    })?;
    let mut out = Vec::new();
    for entry in dir.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            out.push(name.to_owned());
        }
    }
    Ok(out)
}

fn is_dir(fd: RawFd, name: &CStr) -> Result<bool, Errno> {
    let stat = nix::sys::stat::fstatat(Some(fd), name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    Ok(stat.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits())
}

struct Level {
    fd: OwnedFd,
    /// Entries still to remove.
    pending: Vec<CString>,
    /// This directory's name in the level above (none for the root).
    name: Option<CString>,
}

/// Removes `path` and everything beneath it (see the module's notes). A missing `path` is already removed.
/// The directories above `path` are trusted (the agent made them); nothing beneath it is.
pub fn remove_tree(path: &Path) -> Result<Removed, RemoveTreeError> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(RemoveTreeError::Io { path: path.into(), source: std::io::Error::from(std::io::ErrorKind::InvalidInput) });
    };
    let io = |p: &Path, e: Errno| RemoveTreeError::Io { path: p.to_path_buf(), source: e.into() };
    let parent_fd = match nix::fcntl::open(parent, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()) {
        // SAFETY: open returned a new descriptor that nothing else owns.
        Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
        Err(Errno::ENOENT) => return Ok(Removed::default()),
        Err(e) => return Err(io(parent, e)),
    };
    let name = CString::new(name.as_bytes()).map_err(|_| io(path, Errno::EINVAL))?;
    let mut removed = Removed::default();
    match is_dir(parent_fd.as_raw_fd(), &name) {
        Err(Errno::ENOENT) => return Ok(removed),
        Err(e) => return Err(io(path, e)),
        Ok(false) => {
            return match nix::unistd::unlinkat(Some(parent_fd.as_raw_fd()), name.as_c_str(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) => Ok(Removed { entries: 1 }),
                Err(Errno::ENOENT) => Ok(removed),
                Err(e) => Err(io(path, e)),
            };
        }
        Ok(true) => {}
    }
    let root = match open_beneath(parent_fd.as_raw_fd(), &name) {
        Ok(fd) => fd,
        Err(Errno::EXDEV) => return Err(RemoveTreeError::MountPoint { path: path.into() }),
        Err(Errno::ENOENT) => return Ok(removed),
        Err(e) => return Err(io(path, e)),
    };
    let pending = names(&root).map_err(|e| io(path, e))?;
    let mut stack = vec![Level { fd: root, pending, name: None }];
    let mut first_error: Option<RemoveTreeError> = None;
    let mut moved = 0u64;
    // The path of `name` in the level on top of the stack, for messages.
    let where_ = |stack: &[Level], name: &CStr| -> PathBuf {
        let mut p = path.to_path_buf();
        for level in stack.iter().skip(1) {
            if let Some(n) = &level.name {
                p.push(std::ffi::OsStr::from_bytes(n.to_bytes()));
            }
        }
        p.join(std::ffi::OsStr::from_bytes(name.to_bytes()))
    };
    while let Some(top) = stack.last_mut() {
        let Some(entry) = top.pending.pop() else {
            let done = stack.pop().expect("the loop saw a top");
            let (dir, name) = match (&done.name, stack.last()) {
                (Some(name), Some(up)) => (up.fd.as_raw_fd(), name.as_c_str()),
                _ => (parent_fd.as_raw_fd(), name.as_c_str()),
            };
            drop(done.fd);
            match nix::unistd::unlinkat(Some(dir), name, UnlinkatFlags::RemoveDir) {
                Ok(()) => removed.entries += 1,
                Err(Errno::ENOENT) => {}
                // Something inside was kept: its error is the one reported.
                Err(Errno::ENOTEMPTY) if first_error.is_some() => {}
                Err(e) => {
                    let at = where_(&stack, name);
                    first_error.get_or_insert(io(&at, e));
                }
            }
            continue;
        };
        let fd = top.fd.as_raw_fd();
        match is_dir(fd, &entry) {
            Err(Errno::ENOENT) => {}
            Err(e) => {
                let at = where_(&stack, &entry);
                first_error.get_or_insert(io(&at, e));
            }
            Ok(false) => match nix::unistd::unlinkat(Some(fd), entry.as_c_str(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) => removed.entries += 1,
                Err(Errno::ENOENT) => {}
                Err(e) => {
                    let at = where_(&stack, &entry);
                    first_error.get_or_insert(io(&at, e));
                }
            },
            Ok(true) if stack.len() >= MAX_OPEN_LEVELS => {
                // Too deep to hold open: moved to the root's level, removed from there.
                moved += 1;
                let to = CString::new(format!(".mezzo-gc-deep-{moved}")).expect("no NUL");
                let root_fd = stack[0].fd.as_raw_fd();
                match nix::fcntl::renameat2(Some(fd), entry.as_c_str(), Some(root_fd), to.as_c_str(), nix::fcntl::RenameFlags::RENAME_NOREPLACE) {
                    Ok(()) => stack[0].pending.push(to),
                    Err(e) => {
                        let at = where_(&stack, &entry);
                        first_error.get_or_insert(io(&at, e));
                    }
                }
            }
            Ok(true) => match open_beneath(fd, &entry) {
                Ok(sub) => match names(&sub) {
                    Ok(pending) => stack.push(Level { fd: sub, pending, name: Some(entry) }),
                    Err(e) => {
                        let at = where_(&stack, &entry);
                        first_error.get_or_insert(io(&at, e));
                    }
                },
                Err(Errno::ENOENT) => {}
                Err(Errno::EXDEV) => {
                    let at = where_(&stack, &entry);
                    tracing::warn!(path = %at.display(), "a mount point inside a tree being removed: left in place");
                    first_error.get_or_insert(RemoveTreeError::MountPoint { path: at });
                }
                Err(e) => {
                    let at = where_(&stack, &entry);
                    first_error.get_or_insert(io(&at, e));
                }
            },
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(removed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn removes_a_tree_without_following_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let (tree, outside) = (tmp.path().join("run"), tmp.path().join("outside"));
        std::fs::create_dir_all(tree.join("a/b/c")).unwrap();
        std::fs::create_dir_all(outside.join("keep")).unwrap();
        std::fs::write(outside.join("keep/secret"), "HOST").unwrap();
        std::fs::write(tree.join("a/b/c/file"), "x").unwrap();
        symlink(&outside, tree.join("dirlink")).unwrap();
        symlink(outside.join("keep/secret"), tree.join("a/filelink")).unwrap();
        symlink("/", tree.join("a/b/root")).unwrap();
        nix::unistd::mkfifo(&tree.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        let removed = remove_tree(&tree).unwrap();
        assert_eq!(removed.entries, 9);
        assert!(!tree.exists());
        assert_eq!(std::fs::read_to_string(outside.join("keep/secret")).unwrap(), "HOST", "nothing outside was touched");
        assert_eq!(remove_tree(&tree).unwrap(), Removed::default(), "a missing tree is removed already");
    }

    #[test]
    fn a_symlinked_root_is_unlinked_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("target/sub")).unwrap();
        symlink(tmp.path().join("target"), tmp.path().join("run")).unwrap();
        assert_eq!(remove_tree(&tmp.path().join("run")).unwrap().entries, 1);
        assert!(tmp.path().join("target/sub").is_dir());
    }

    #[test]
    fn deep_trees_are_removed_with_a_bounded_number_of_open_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("run");
        // Deeper than PATH_MAX allows naming at once: built relative to a moving current directory.
        let depth = 3 * MAX_OPEN_LEVELS + 5;
        let mut dir = tree.clone();
        std::fs::create_dir(&dir).unwrap();
        for i in 0..depth {
            dir.push(format!("d{i}"));
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("f"), "x").unwrap();
        }
        assert_eq!(remove_tree(&tree).unwrap().entries, 1 + 2 * depth as u64);
        assert!(!tree.exists());
    }

    #[test]
    fn mount_points_inside_are_left_in_place() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let (tree, outside) = (tmp.path().join("run"), tmp.path().join("outside"));
        std::fs::create_dir_all(tree.join("vol")).unwrap();
        std::fs::create_dir_all(tree.join("other")).unwrap();
        std::fs::write(tree.join("other/f"), "x").unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("data"), "HOST").unwrap();
        nix::mount::mount(Some(&outside), &tree.join("vol"), None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>).unwrap();
        let result = remove_tree(&tree);
        let still_mounted = std::fs::read_to_string(tree.join("vol/data")).ok();
        nix::mount::umount2(&tree.join("vol"), nix::mount::MntFlags::MNT_DETACH).unwrap();
        assert!(matches!(result, Err(RemoveTreeError::MountPoint { ref path }) if path.ends_with("run/vol")), "{result:?}");
        assert_eq!(still_mounted.as_deref(), Some("HOST"), "the mount was not entered");
        assert_eq!(std::fs::read_to_string(outside.join("data")).unwrap(), "HOST");
        assert!(!tree.join("other").exists(), "the rest went");
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
    }
}
