//! Opening and walking files inside sandboxes from the host.
//!
//! The agent, its executors and the launcher run as root on the host, and a
//! sandbox is written by the task it belongs to: anything in it may be a
//! symlink to a host file, a device node, a FIFO, or a directory that is
//! swapped for a symlink while it is being used. Everything here therefore
//! works on file descriptors, never on path names resolved twice:
//!
//! - paths are resolved beneath a directory with `openat2(2)` and
//!   `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV` (Linux 5.6+):
//!   a symlink may point elsewhere inside the sandbox, never out of it, and no
//!   mount point is crossed;
//! - a file is first opened `O_PATH` (which opens nothing: no device driver
//!   runs, a FIFO cannot block), checked with `fstat` to be a regular file,
//!   and only then reopened for reading or appending through its descriptor;
//! - walks (`disk/du`, chown of a sandbox) stat entries with
//!   `AT_SYMLINK_NOFOLLOW` and enter directories with `RESOLVE_NO_SYMLINKS`,
//!   so that neither a symlink nor another mount is ever entered.

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use std::ffi::CStr;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// Why a file inside a sandbox was not opened.
#[derive(Debug, thiserror::Error)]
pub enum SandboxFsError {
    #[error("'{path}' not found")]
    NotFound { path: String },
    /// A symlink or `..` leading out of the directory, a magic link, a mount
    /// point, or a symlink where none is allowed.
    #[error("'{path}' leads outside the sandbox (through a symlink, a mount point or a link that is not allowed)")]
    Escapes { path: String },
    #[error("'{path}' is a {kind}, not a regular file")]
    NotRegular { path: String, kind: &'static str },
    #[error("'{path}': {source}")]
    Io { path: String, #[source] source: std::io::Error },
}

impl SandboxFsError {
    fn from_errno(path: &Path, errno: Errno) -> Self {
        let path = path.display().to_string();
        match errno {
            Errno::ENOENT | Errno::ENOTDIR => SandboxFsError::NotFound { path },
            Errno::EXDEV | Errno::ELOOP => SandboxFsError::Escapes { path },
            e => SandboxFsError::Io { path, source: std::io::Error::from(e) },
        }
    }
}

impl SandboxFsError {
    /// The path the error is about.
    pub fn path(&self) -> &str {
        match self {
            SandboxFsError::NotFound { path }
            | SandboxFsError::Escapes { path }
            | SandboxFsError::NotRegular { path, .. }
            | SandboxFsError::Io { path, .. } => path,
        }
    }
}

impl From<SandboxFsError> for crate::ContainerizerError {
    fn from(e: SandboxFsError) -> Self {
        crate::ContainerizerError::Io { context: "open in the sandbox", path: PathBuf::from(e.path()), source: e.into() }
    }
}

impl From<SandboxFsError> for std::io::Error {
    fn from(e: SandboxFsError) -> Self {
        let kind = match &e {
            SandboxFsError::NotFound { .. } => std::io::ErrorKind::NotFound,
            SandboxFsError::Escapes { .. } | SandboxFsError::NotRegular { .. } => std::io::ErrorKind::PermissionDenied,
            SandboxFsError::Io { source, .. } => source.kind(),
        };
        std::io::Error::new(kind, e)
    }
}

/// What a file is, in words (`block device`, `FIFO`, ...).
pub fn file_kind(stat: &FileStat) -> &'static str {
    match SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => "regular file",
        SFlag::S_IFDIR => "directory",
        SFlag::S_IFLNK => "symlink",
        SFlag::S_IFBLK => "block device",
        SFlag::S_IFCHR => "character device",
        SFlag::S_IFIFO => "FIFO",
        SFlag::S_IFSOCK => "socket",
        _ => "file of unknown type",
    }
}

fn is_type(stat: &FileStat, t: SFlag) -> bool {
    stat.st_mode & SFlag::S_IFMT.bits() == t.bits()
}

/// Resolution rules for paths inside a sandbox.
const BENEATH: ResolveFlag = ResolveFlag::RESOLVE_BENEATH
    .union(ResolveFlag::RESOLVE_NO_MAGICLINKS)
    .union(ResolveFlag::RESOLVE_NO_XDEV);

/// `openat2` with `resolve`, retried on `EAGAIN` (the kernel could not rule
/// out a `..` race and asks the caller to try again).
fn open_at(dir: RawFd, rel: &Path, flags: OFlag, mode: Mode, resolve: ResolveFlag) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new().flags(flags | OFlag::O_CLOEXEC).mode(mode).resolve(resolve);
    let mut tries = 0;
    loop {
        match openat2(dir, rel, how) {
            // SAFETY: openat2 returned a new descriptor that nothing else owns.
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
            Err(Errno::EAGAIN | Errno::EINTR) if tries < 64 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

fn fstat(fd: RawFd, path: &Path) -> Result<FileStat, SandboxFsError> {
    nix::sys::stat::fstat(fd).map_err(|e| SandboxFsError::from_errno(path, e))
}

/// Reopens the file behind an `O_PATH` descriptor with `flags`, through
/// `/proc/self/fd`: the same inode, never a path name resolved again.
fn reopen(fd: &OwnedFd, flags: OFlag, path: &Path) -> Result<File, SandboxFsError> {
    let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let flags = flags | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK;
    let raw = nix::fcntl::open(proc_path.as_str(), flags, Mode::empty()).map_err(|e| SandboxFsError::from_errno(path, e))?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(raw) }))
}

/// One entry of a directory listing: its name and its `lstat`.
#[derive(Debug)]
pub struct DirEntry {
    pub name: std::ffi::OsString,
    pub stat: FileStat,
}

/// What [`SandboxDir::list`] found.
#[derive(Debug)]
pub enum Listing {
    Directory { entries: Vec<DirEntry>, truncated: bool },
    /// Not a directory: what `fstat` says of it (it was not opened).
    NotDirectory(FileStat),
}

/// A directory (a sandbox, or the root of the sandboxes) that paths are
/// resolved beneath.
#[derive(Debug)]
pub struct SandboxDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl SandboxDir {
    /// Opens `path`, a directory the agent made (its own path may go through
    /// symlinks the host's administrator made, so they are followed).
    pub fn open(path: &Path) -> Result<SandboxDir, SandboxFsError> {
        let raw = nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| SandboxFsError::from_errno(path, e))?;
        // SAFETY: open returned a new descriptor that nothing else owns.
        Ok(SandboxDir { fd: unsafe { OwnedFd::from_raw_fd(raw) }, path: path.to_path_buf() })
    }

    /// The host path this directory was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the directory `rel` beneath this one.
    pub fn open_dir(&self, rel: &Path) -> Result<SandboxDir, SandboxFsError> {
        let fd = open_at(self.fd.as_raw_fd(), rel, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty(), BENEATH)
            .map_err(|e| SandboxFsError::from_errno(rel, e))?;
        Ok(SandboxDir { fd, path: self.path.join(rel) })
    }

    /// Opens `rel` (resolved beneath this directory) without opening it yet:
    /// an `O_PATH` descriptor and what `fstat` says of it.
    pub fn lookup(&self, rel: &Path) -> Result<(OwnedFd, FileStat), SandboxFsError> {
        let fd = open_at(self.fd.as_raw_fd(), rel, OFlag::O_PATH, Mode::empty(), BENEATH)
            .map_err(|e| SandboxFsError::from_errno(rel, e))?;
        let stat = fstat(fd.as_raw_fd(), rel)?;
        Ok((fd, stat))
    }

    /// Opens the regular file `rel` for reading. Nothing else is opened: a
    /// device node, FIFO, socket or directory is refused before any open
    /// that could block or reach a driver.
    pub fn open_regular(&self, rel: &Path) -> Result<(File, FileStat), SandboxFsError> {
        let (fd, stat) = self.lookup(rel)?;
        if !is_type(&stat, SFlag::S_IFREG) {
            return Err(SandboxFsError::NotRegular { path: rel.display().to_string(), kind: file_kind(&stat) });
        }
        Ok((reopen(&fd, OFlag::O_RDONLY, rel)?, stat))
    }

    /// Lists the directory `rel` (resolved beneath this directory, so a
    /// symlink on the way may point elsewhere inside, never out): each
    /// entry with its `lstat`, so a symlink is an entry of its own and is
    /// never followed. Entries that vanish while listing are left out; at
    /// most `max_entries` are returned (`truncated` says more were there).
    /// Anything but a directory is [`Listing::NotDirectory`], never opened.
    pub fn list(&self, rel: &Path, max_entries: usize) -> Result<Listing, SandboxFsError> {
        let (fd, stat) = self.lookup(rel)?;
        if !is_type(&stat, SFlag::S_IFDIR) {
            return Ok(Listing::NotDirectory(stat));
        }
        let dir = OwnedFd::from(reopen(&fd, OFlag::O_RDONLY | OFlag::O_DIRECTORY, rel)?);
        let mut dir = nix::dir::Dir::from(dir).map_err(|e| SandboxFsError::from_errno(rel, e))?;
        let dir_fd = dir.as_raw_fd();
        let (mut entries, mut truncated) = (Vec::new(), false);
        for entry in dir.iter() {
            let entry = entry.map_err(|e| SandboxFsError::from_errno(rel, e))?;
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            if entries.len() == max_entries {
                truncated = true;
                break;
            }
            match nix::sys::stat::fstatat(Some(dir_fd), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(stat) => {
                    use std::os::unix::ffi::OsStrExt;
                    entries.push(DirEntry { name: std::ffi::OsStr::from_bytes(name.to_bytes()).to_os_string(), stat });
                }
                Err(e) => tracing::debug!(dir = %rel.display(), error = %e, "an entry vanished while listing"),
            }
        }
        Ok(Listing::Directory { entries, truncated })
    }

    /// Opens the file `name` directly in this directory for appending,
    /// creating it (with `mode`) when missing. Symlinks are never followed
    /// and an existing entry must be a regular file.
    pub fn open_append(&self, name: &Path, mode: u32) -> Result<File, SandboxFsError> {
        let strict = BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS;
        let dir = self.fd.as_raw_fd();
        let append = OFlag::O_WRONLY | OFlag::O_APPEND;
        for _ in 0..64 {
            match open_at(dir, name, OFlag::O_PATH | OFlag::O_NOFOLLOW, Mode::empty(), strict) {
                Ok(fd) => {
                    let stat = fstat(fd.as_raw_fd(), name)?;
                    if !is_type(&stat, SFlag::S_IFREG) {
                        return Err(SandboxFsError::NotRegular { path: name.display().to_string(), kind: file_kind(&stat) });
                    }
                    return reopen(&fd, append, name);
                }
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(SandboxFsError::from_errno(name, e)),
            }
            // Missing: create it, exclusively (so that nothing planted in
            // between is opened); lost a race with a creator: look again.
            let flags = append | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY | OFlag::O_NONBLOCK;
            match open_at(dir, name, flags, Mode::from_bits_truncate(mode), strict) {
                Ok(fd) => return Ok(File::from(fd)),
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(SandboxFsError::from_errno(name, e)),
            }
        }
        Err(SandboxFsError::Io { path: name.display().to_string(), source: std::io::Error::other("kept changing while being opened") })
    }
}

/// Opens the output file `path` (a sandbox's `stdout` or `stderr`) for
/// appending, creating it with `mode` when missing: beneath its directory,
/// never through a symlink, a regular file only.
pub fn open_output(path: &Path, mode: u32) -> Result<File, SandboxFsError> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(SandboxFsError::NotFound { path: path.display().to_string() });
    };
    SandboxDir::open(dir)?.open_append(Path::new(name), mode).map_err(|e| match e {
        SandboxFsError::NotFound { .. } => SandboxFsError::NotFound { path: path.display().to_string() },
        SandboxFsError::Escapes { .. } => SandboxFsError::Escapes { path: path.display().to_string() },
        SandboxFsError::NotRegular { kind, .. } => SandboxFsError::NotRegular { path: path.display().to_string(), kind },
        SandboxFsError::Io { source, .. } => SandboxFsError::Io { path: path.display().to_string(), source },
    })
}

/// Reads up to `buf.len()` bytes at `offset`, fewer only at the end of the file.
pub fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        let at = offset.checked_add(done as u64).ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        match file.read_at(&mut buf[done..], at) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// One entry a walk visits: `name` in the directory `dir` (the walk's root
/// itself is visited as `dir` with an empty name, so `*at` calls with
/// `AT_EMPTY_PATH` act on it), and its `lstat`.
pub struct WalkEntry<'a> {
    pub dir: RawFd,
    pub name: &'a CStr,
    pub stat: &'a FileStat,
}

/// How a walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkEnd {
    Complete,
    /// `max_entries` entries were visited before the end.
    Truncated,
}

/// Visits `root` and everything beneath it, depth first, without following
/// symlinks and without entering other mounts (`du -x`'s rule): entries are
/// stat'ed with `AT_SYMLINK_NOFOLLOW`, and each directory is opened from
/// `root` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV`, so
/// one swapped for a symlink while walking is skipped, never followed. A
/// directory that vanishes or cannot be opened while walking is skipped; a
/// root that cannot be opened is an error. Stops after `max_entries`.
/// Holds one directory open at a time, however deep the tree.
pub fn walk<E: From<SandboxFsError>>(
    root: &Path,
    max_entries: usize,
    mut visit: impl FnMut(&WalkEntry<'_>) -> Result<(), E>,
) -> Result<WalkEnd, E> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    let root_raw = nix::fcntl::open(root, flags, Mode::empty()).map_err(|e| E::from(SandboxFsError::from_errno(root, e)))?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    let root_fd = unsafe { OwnedFd::from_raw_fd(root_raw) };
    let root_stat = fstat(root_fd.as_raw_fd(), root)?;
    visit(&WalkEntry { dir: root_fd.as_raw_fd(), name: c"", stat: &root_stat })?;
    let mut entries = 1usize;
    let resolve = BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS;
    // Directories still to read, relative to the root. The root's own
    // descriptor is read last (it is the one reading "." would use).
    let mut stack: Vec<PathBuf> = vec![PathBuf::from(".")];
    while let Some(rel) = stack.pop() {
        let fd = match open_at(root_fd.as_raw_fd(), &rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NONBLOCK, Mode::empty(), resolve) {
            Ok(fd) => fd,
            Err(e) => {
                tracing::debug!(root = %root.display(), dir = %rel.display(), error = %e, "not entered while walking");
                continue;
            }
        };
        let Ok(mut dir) = nix::dir::Dir::from(fd) else { continue };
        let dir_fd = dir.as_raw_fd();
        for entry in dir.iter() {
            let Ok(entry) = entry else { break };
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            entries += 1;
            if entries > max_entries {
                return Ok(WalkEnd::Truncated);
            }
            let Ok(stat) = nix::sys::stat::fstatat(Some(dir_fd), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) else {
                continue;
            };
            visit(&WalkEntry { dir: dir_fd, name, stat: &stat })?;
            if is_type(&stat, SFlag::S_IFDIR) && stat.st_dev == root_stat.st_dev {
                use std::os::unix::ffi::OsStrExt;
                stack.push(rel.join(std::ffi::OsStr::from_bytes(name.to_bytes())));
            }
        }
    }
    Ok(WalkEnd::Complete)
}

/// Test support: a hostile task's race against code that walks its sandbox.
#[cfg(test)]
pub(crate) mod racing {
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// A thread that swaps `<sandbox>/dir` with `<sandbox>/swap` (a symlink
    /// out of the sandbox) in a loop, as a task would to send a walk of its
    /// sandbox onto the host; stopped and joined on drop.
    pub(crate) struct SymlinkSwapper {
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl SymlinkSwapper {
        pub(crate) fn start(sandbox: &Path) -> SymlinkSwapper {
            let stop = Arc::new(AtomicBool::new(false));
            let (dir, swap) = (sandbox.join("dir"), sandbox.join("swap"));
            let flag = stop.clone();
            let thread = std::thread::spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    nix::fcntl::renameat2(None, &dir, None, &swap, nix::fcntl::RenameFlags::RENAME_EXCHANGE).unwrap();
                }
            });
            SymlinkSwapper { stop, thread: Some(thread) }
        }
    }

    impl Drop for SymlinkSwapper {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::symlink;

    fn fixture() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let sandbox = tmp.path().join("sandbox");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(sandbox.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(sandbox.join("sub/file"), "inside").unwrap();
        std::fs::write(outside.join("secret"), "HOST SECRET").unwrap();
        (tmp, sandbox, outside)
    }

    fn read_all(mut f: File) -> String {
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        s
    }

    #[test]
    fn regular_files_and_symlinks_inside_are_opened() {
        let (_tmp, sandbox, _) = fixture();
        symlink("sub/file", sandbox.join("inner-link")).unwrap();
        let dir = SandboxDir::open(&sandbox).unwrap();
        assert_eq!(read_all(dir.open_regular(Path::new("sub/file")).unwrap().0), "inside");
        assert_eq!(read_all(dir.open_regular(Path::new("inner-link")).unwrap().0), "inside");
        assert!(matches!(dir.open_regular(Path::new("missing")), Err(SandboxFsError::NotFound { .. })));
        assert!(matches!(dir.open_regular(Path::new("sub")), Err(SandboxFsError::NotRegular { kind: "directory", .. })));
    }

    #[test]
    fn symlinks_and_dotdot_out_of_the_sandbox_are_refused() {
        let (_tmp, sandbox, outside) = fixture();
        symlink(outside.join("secret"), sandbox.join("abs")).unwrap();
        symlink("../outside/secret", sandbox.join("rel")).unwrap();
        symlink(&outside, sandbox.join("dirlink")).unwrap();
        symlink("/proc/self/root/etc/passwd", sandbox.join("magic")).unwrap();
        let dir = SandboxDir::open(&sandbox).unwrap();
        for p in ["abs", "rel", "dirlink/secret", "../outside/secret", "/etc/passwd", "magic"] {
            match dir.open_regular(Path::new(p)) {
                Err(SandboxFsError::Escapes { .. }) => {}
                other => panic!("{p}: {other:?}"),
            }
        }
    }

    #[test]
    fn fifos_and_devices_are_refused_without_blocking() {
        let (_tmp, sandbox, _) = fixture();
        nix::unistd::mkfifo(&sandbox.join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        let dir = SandboxDir::open(&sandbox).unwrap();
        let t = std::time::Instant::now();
        assert!(matches!(dir.open_regular(Path::new("fifo")), Err(SandboxFsError::NotRegular { kind: "FIFO", .. })));
        assert!(matches!(dir.open_append(Path::new("fifo"), 0o644), Err(SandboxFsError::NotRegular { kind: "FIFO", .. })));
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        if nix::unistd::geteuid().is_root() {
            nix::sys::stat::mknod(&sandbox.join("loop"), SFlag::S_IFBLK, Mode::from_bits_truncate(0o600), nix::sys::stat::makedev(7, 0))
                .unwrap();
            assert!(matches!(dir.open_regular(Path::new("loop")), Err(SandboxFsError::NotRegular { kind: "block device", .. })));
        }
    }

    #[test]
    fn open_append_creates_and_never_follows_a_symlink() {
        let (_tmp, sandbox, outside) = fixture();
        let dir = SandboxDir::open(&sandbox).unwrap();
        dir.open_append(Path::new("stdout"), 0o644).unwrap().write_all(b"one\n").unwrap();
        dir.open_append(Path::new("stdout"), 0o644).unwrap().write_all(b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(sandbox.join("stdout")).unwrap(), "one\ntwo\n");
        symlink(outside.join("secret"), sandbox.join("stderr")).unwrap();
        assert!(matches!(open_output(&sandbox.join("stderr"), 0o644), Err(SandboxFsError::NotRegular { kind: "symlink", .. })));
        symlink("stdout", sandbox.join("inner")).unwrap();
        assert!(open_output(&sandbox.join("inner"), 0o644).is_err(), "no symlink at all, even one inside");
        assert_eq!(std::fs::read_to_string(outside.join("secret")).unwrap(), "HOST SECRET");
    }

    #[test]
    fn read_at_reads_a_range_of_a_sparse_file() {
        let (_tmp, sandbox, _) = fixture();
        let f = File::create(sandbox.join("sparse")).unwrap();
        f.set_len(4 << 30).unwrap();
        let (f, stat) = SandboxDir::open(&sandbox).unwrap().open_regular(Path::new("sparse")).unwrap();
        assert_eq!(stat.st_size, 4 << 30);
        let mut buf = [1u8; 10];
        assert_eq!(read_at(&f, &mut buf, (4 << 30) - 4).unwrap(), 4);
        assert_eq!(&buf[..4], &[0; 4]);
    }

    #[test]
    fn list_shows_symlinks_as_entries_and_never_lists_outside() {
        let (_tmp, sandbox, outside) = fixture();
        symlink(&outside, sandbox.join("dirlink")).unwrap();
        symlink("sub", sandbox.join("inner")).unwrap();
        nix::unistd::mkfifo(&sandbox.join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        let dir = SandboxDir::open(&sandbox).unwrap();
        let Listing::Directory { mut entries, truncated } = dir.list(Path::new("."), 100).unwrap() else { panic!("a directory") };
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let names: Vec<_> = entries.iter().map(|e| e.name.to_string_lossy().into_owned()).collect();
        assert_eq!((names, truncated), (vec!["dirlink".to_string(), "fifo".into(), "inner".into(), "sub".into()], false));
        assert!(is_type(&entries[0].stat, SFlag::S_IFLNK), "lstat, not the target's stat");
        assert!(is_type(&entries[1].stat, SFlag::S_IFIFO));
        // A symlink inside is followed, one out of the sandbox is refused.
        let Listing::Directory { entries, .. } = dir.list(Path::new("inner"), 100).unwrap() else { panic!("a directory") };
        assert_eq!(entries.len(), 1);
        assert!(matches!(dir.list(Path::new("dirlink"), 100), Err(SandboxFsError::Escapes { .. })));
        assert!(matches!(dir.list(Path::new("sub/file"), 100), Ok(Listing::NotDirectory(_))));
        assert!(matches!(dir.list(Path::new("fifo"), 100), Ok(Listing::NotDirectory(_))));
        let Listing::Directory { entries, truncated } = dir.list(Path::new("."), 2).unwrap() else { panic!("a directory") };
        assert_eq!((entries.len(), truncated), (2, true));
    }

    #[test]
    fn walk_stays_on_its_side_of_symlinks() {
        let (_tmp, sandbox, outside) = fixture();
        symlink(&outside, sandbox.join("dirlink")).unwrap();
        let mut seen = Vec::new();
        let end = walk::<SandboxFsError>(&sandbox, 100, |e| {
            seen.push(e.name.to_string_lossy().into_owned());
            Ok(())
        })
        .unwrap();
        assert_eq!(end, WalkEnd::Complete);
        seen.sort();
        assert_eq!(seen, ["", "dirlink", "file", "sub"]);
        assert_eq!(walk::<SandboxFsError>(&sandbox, 2, |_| Ok(())).unwrap(), WalkEnd::Truncated);
        assert!(walk::<SandboxFsError>(&sandbox.join("dirlink"), 100, |_| Ok(())).is_err(), "a symlinked root is refused");
    }
}
