//! Writing inside a sandbox from the (root) agent without ever leaving it.
//!
//! Every name is resolved one component at a time from a directory
//! descriptor: directories are opened `O_NOFOLLOW | O_DIRECTORY`, files are
//! created `O_CREAT | O_EXCL | O_NOFOLLOW`, so a symlink (planted by a task,
//! or by an archive) is never followed, and a name with `..`, a leading `/`
//! or a NUL never reaches the kernel. What is created belongs to the
//! sandbox's owner.

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};
use nix::unistd::UnlinkatFlags;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The components of a relative member name (of an archive, or an
/// `output_file`): empty and `.` components are dropped; `..`, an absolute
/// name and NUL are refused with the reason.
pub fn components(name: &[u8]) -> Result<Vec<OsString>, String> {
    let shown = String::from_utf8_lossy(name);
    if name.contains(&0) {
        return Err(format!("'{shown}' contains a NUL byte"));
    }
    if name.first() == Some(&b'/') {
        return Err(format!("'{shown}' is an absolute path"));
    }
    let mut out = Vec::new();
    for part in name.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(format!("'{shown}' escapes the sandbox ('..')")),
            p => out.push(OsStr::from_bytes(p).to_os_string()),
        }
    }
    Ok(out)
}

/// A directory inside the sandbox (or the sandbox itself), held open.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    /// Uid and gid that everything created here gets.
    pub owner: (u32, u32),
}

fn io(e: Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(e as i32)
}

impl Dir {
    /// Opens the sandbox `path` (made by the agent); what is created in it
    /// belongs to the sandbox directory's owner.
    pub fn open_sandbox(path: &Path) -> std::io::Result<Dir> {
        let raw = nix::fcntl::open(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).map_err(io)?;
        // SAFETY: open returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(io)?;
        Ok(Dir { fd, owner: (st.st_uid, st.st_gid) })
    }

    /// Another descriptor of this directory.
    pub fn try_clone(&self) -> Result<Dir, String> {
        Ok(Dir { fd: self.fd.try_clone().map_err(|e| e.to_string())?, owner: self.owner })
    }

    /// Opens (creating when missing, mode 0755) the directory `name`, one
    /// component, in this one; a symlink or a non-directory there is refused.
    pub fn child_dir(&self, name: &OsStr) -> Result<Dir, String> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        for _ in 0..8 {
            match nix::fcntl::openat(Some(self.fd.as_raw_fd()), name, flags, Mode::empty()) {
                // SAFETY: openat returned a new descriptor that nothing else owns.
                Ok(raw) => return Ok(Dir { fd: unsafe { OwnedFd::from_raw_fd(raw) }, owner: self.owner }),
                Err(Errno::ENOENT) => match nix::sys::stat::mkdirat(Some(self.fd.as_raw_fd()), name, Mode::from_bits_truncate(0o755)) {
                    Ok(()) => {
                        nix::unistd::fchownat(
                            Some(self.fd.as_raw_fd()),
                            name,
                            Some(self.owner.0.into()),
                            Some(self.owner.1.into()),
                            AtFlags::AT_SYMLINK_NOFOLLOW,
                        )
                        .map_err(|e| format!("cannot chown directory '{}': {e}", name.to_string_lossy()))?;
                    }
                    Err(Errno::EEXIST) => {}
                    Err(e) => return Err(format!("cannot create directory '{}': {e}", name.to_string_lossy())),
                },
                Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
                    return Err(format!("'{}' is a symlink or not a directory; refusing to write through it", name.to_string_lossy()))
                }
                Err(e) => return Err(format!("cannot open directory '{}': {e}", name.to_string_lossy())),
            }
        }
        Err(format!("directory '{}' kept changing while being opened", name.to_string_lossy()))
    }

    /// Opens the directory at `parts` beneath this one, creating what is missing.
    pub fn descend(&self, parts: &[OsString]) -> Result<Dir, String> {
        let mut dir = self.try_clone()?;
        for part in parts {
            dir = dir.child_dir(part)?;
        }
        Ok(dir)
    }

    /// Creates the regular file `name` (one component) here, replacing a
    /// regular file or symlink of that name (never writing through it); a
    /// directory of that name is refused. The file belongs to the owner and
    /// has mode 0644 until the caller changes it.
    pub fn create_file(&self, name: &OsStr) -> Result<File, String> {
        let shown = name.to_string_lossy();
        let dir = self.fd.as_raw_fd();
        match fstatat(Some(dir), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR => {
                return Err(format!("'{shown}' is a directory"));
            }
            Ok(_) => nix::unistd::unlinkat(Some(dir), name, UnlinkatFlags::NoRemoveDir).map_err(|e| format!("cannot replace '{shown}': {e}"))?,
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(format!("cannot inspect '{shown}': {e}")),
        }
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
        let raw = nix::fcntl::openat(Some(dir), name, flags, Mode::from_bits_truncate(0o644)).map_err(|e| format!("cannot create '{shown}': {e}"))?;
        // SAFETY: openat returned a new descriptor that nothing else owns.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(raw) });
        std::os::unix::fs::fchown(&file, Some(self.owner.0), Some(self.owner.1)).map_err(|e| format!("cannot chown '{shown}': {e}"))?;
        Ok(file)
    }

    /// Replaces the file `name` (one component, just made by
    /// [`Dir::create_file`]) with a hard link to `target`, a file outside
    /// the sandbox (a cache entry). Fails, leaving `name` absent, when the
    /// two are on different filesystems.
    pub fn replace_with_link(&self, target: &Path, name: &OsStr) -> Result<(), String> {
        let shown = name.to_string_lossy();
        let dir = self.fd.as_raw_fd();
        nix::unistd::unlinkat(Some(dir), name, UnlinkatFlags::NoRemoveDir).map_err(|e| format!("cannot replace '{shown}': {e}"))?;
        nix::unistd::linkat(None, target, Some(dir), Path::new(name), AtFlags::empty()).map_err(|e| format!("cannot link '{shown}': {e}"))
    }

    /// Sets this directory's permission bits.
    pub fn chmod(&self, mode: u32) -> nix::Result<()> {
        nix::sys::stat::fchmod(self.fd.as_raw_fd(), Mode::from_bits_truncate(mode & 0o777))
    }

    /// Creates the file at the relative `parts` (its directories too).
    pub fn create_at(&self, parts: &[OsString]) -> Result<File, String> {
        let (name, dirs) = parts.split_last().ok_or_else(|| "empty file name".to_string())?;
        self.descend(dirs)?.create_file(name)
    }

    /// Opens the regular file `name` (one component) here for reading, never
    /// through a symlink.
    pub fn open_regular(&self, name: &OsStr) -> Result<File, String> {
        let shown = name.to_string_lossy();
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        let raw = nix::fcntl::openat(Some(self.fd.as_raw_fd()), name, flags, Mode::empty()).map_err(|e| format!("cannot open '{shown}': {e}"))?;
        // SAFETY: openat returned a new descriptor that nothing else owns.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(raw) });
        let meta = file.metadata().map_err(|e| format!("cannot inspect '{shown}': {e}"))?;
        if !meta.is_file() {
            return Err(format!("'{shown}' is not a regular file"));
        }
        Ok(file)
    }
}

/// Sets a file's permission bits (never set-id or sticky: an archive does not
/// make set-uid programs in a sandbox).
pub fn set_mode(file: &File, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(mode & 0o777)).map_err(|e| format!("cannot chmod: {e}"))
}
