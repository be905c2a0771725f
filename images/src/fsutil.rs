//! Small filesystem helpers shared by layer unpacking and the copy backend.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{self, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use crate::error::{ImageError, IoContext};

/// The xattr overlayfs reads to treat a directory as opaque.
pub(crate) const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Extended attributes copied from layer tars and between layers; all others are
/// dropped, because `trusted.overlay.*` from a tar could redirect overlay lookups.
pub(crate) fn xattr_allowed(name: &str) -> bool {
    name == "security.capability" || name.starts_with("user.")
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn cname(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "xattr name contains a NUL byte",
        )
    })
}

/// Sets an extended attribute on `path` itself (never on a symlink's target).
pub(crate) fn lsetxattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let p = cpath(path)?;
    let n = cname(name)?;
    // SAFETY: both strings are NUL-terminated and live across the call; value
    // points to value.len() readable bytes.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads an extended attribute of `path` itself; `None` when it is not set.
pub(crate) fn lgetxattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let p = cpath(path)?;
    let n = cname(name)?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: strings are NUL-terminated; buf has buf.len() writable bytes.
        let rc =
            unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if rc >= 0 {
            buf.truncate(rc as usize);
            return Ok(Some(buf));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => return Ok(None),
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            _ => return Err(err),
        }
    }
}

/// Lists the extended attribute names of `path` itself.
pub(crate) fn llistxattr(path: &Path) -> io::Result<Vec<String>> {
    let p = cpath(path)?;
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: p is NUL-terminated; buf has buf.len() writable bytes.
        let rc = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if rc >= 0 {
            buf.truncate(rc as usize);
            return Ok(buf
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            _ => return Err(err),
        }
    }
}

/// Sets atime and mtime of `path` itself.
pub(crate) fn set_times(path: &Path, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    stat::utimensat(
        None,
        path,
        &TimeSpec::new(atime.0, atime.1),
        &TimeSpec::new(mtime.0, mtime.1),
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

/// Creates a device node or fifo with exactly `mode` (umask does not apply).
pub(crate) fn mknod(path: &Path, kind: SFlag, mode: u32, dev: u64) -> io::Result<()> {
    stat::mknod(path, kind, Mode::from_bits_truncate(mode), dev).map_err(io::Error::from)?;
    // mknod applies the umask; set the mode the layer asked for.
    fs::set_permissions(
        path,
        std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777),
    )
}

/// Creates the overlay whiteout for `path`: a character device 0/0.
pub(crate) fn make_whiteout(path: &Path) -> io::Result<()> {
    stat::mknod(path, SFlag::S_IFCHR, Mode::empty(), 0).map_err(io::Error::from)
}

/// Whether metadata describes an overlay whiteout.
pub(crate) fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Removes whatever is at `path` (a directory with its contents), never following symlinks.
pub(crate) fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes the contents of directory `dir`, keeping `dir`.
pub(crate) fn clear_dir(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        remove_any(&entry?.path())?;
    }
    Ok(())
}

/// Turns a tar member name into a relative path of plain components.
///
/// `Ok(None)` is the root itself (`.`, `./`). Absolute names and `..` are refused
/// rather than cleaned, because no honest layer contains them.
pub(crate) fn sanitize_member(raw: &[u8]) -> Result<Option<PathBuf>, String> {
    let name = Path::new(std::ffi::OsStr::from_bytes(raw));
    if raw.is_empty() {
        return Err("empty entry name".to_string());
    }
    if raw.contains(&0) {
        return Err("entry name contains a NUL byte".to_string());
    }
    let mut out = PathBuf::new();
    for component in name.components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("entry '{}' has an absolute path", name.display()))
            }
            Component::ParentDir => {
                return Err(format!("entry '{}' contains '..'", name.display()))
            }
        }
    }
    Ok(if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    })
}

/// Makes sure every parent of `rel` under `root` is a real directory, creating missing ones.
///
/// A symlink among the parents is refused: writing through it could land outside
/// `root`. Only this process writes into `root` while it is being built (a private
/// temp dir), so checking before acting is not racy.
pub(crate) fn ensure_parents(root: &Path, rel: &Path, layer: &str) -> Result<(), ImageError> {
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    let mut cur = root.to_path_buf();
    for component in parent.components() {
        cur.push(component);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) => {
                let what = if m.file_type().is_symlink() {
                    "would write through symlink"
                } else {
                    "has a non-directory parent"
                };
                return Err(ImageError::HostileLayer {
                    layer: layer.to_string(),
                    reason: format!(
                        "entry '{}' {what} '{}'",
                        rel.display(),
                        cur.strip_prefix(root).unwrap_or(&cur).display()
                    ),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&cur).ctx(|| format!("create directory {}", cur.display()))?;
            }
            Err(e) => {
                return Err(ImageError::Io {
                    context: format!("inspect {}", cur.display()),
                    source: e,
                })
            }
        }
    }
    Ok(())
}

/// `syncfs(2)` on the filesystem holding `path`, so a following rename publishes durable data.
pub(crate) fn syncfs(path: &Path) -> io::Result<()> {
    let dir = fs::File::open(path)?;
    // SAFETY: the fd is valid for the lifetime of `dir`.
    let rc = unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Runs `write` on a temp file next to `path`, then syncs and renames it into place.
pub(crate) fn with_temp_file<F>(path: &Path, write: F) -> Result<(), ImageError>
where
    F: FnOnce(fs::File) -> Result<fs::File, ImageError>,
{
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).ctx(|| format!("create {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let result = fs::File::create(&tmp)
        .ctx(|| format!("create {}", tmp.display()))
        .and_then(write)
        .and_then(|file| file.sync_all().ctx(|| format!("sync {}", tmp.display())))
        .and_then(|()| {
            fs::rename(&tmp, path).ctx(|| format!("rename {} to {}", tmp.display(), path.display()))
        });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes `data` to `path` atomically: temp file in the same directory, fsync, rename.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), ImageError> {
    use std::io::Write;
    with_temp_file(path, |mut f| {
        f.write_all(data).ctx(|| format!("write {}", path.display()))?;
        Ok(f)
    })
}

/// Like `write_atomic` but without fsync: atomic against a process crash
/// (readers see the old or the new file), not durable across a power loss.
/// For state that a host crash makes moot anyway (the leases of containers
/// that a reboot ends).
pub(crate) fn write_replace(path: &Path, data: &[u8]) -> Result<(), ImageError> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir).ctx(|| format!("create {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
    ));
    if let Err(e) = fs::write(&tmp, data).ctx(|| format!("write {}", tmp.display())) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path).ctx(|| format!("rename {} to {}", tmp.display(), path.display())).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// Whether process `pid` is alive (used to recognize temp files of crashed processes).
pub(crate) fn pid_alive(pid: i32) -> bool {
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::ESRCH) => false,
        Err(_) => true,
    }
}

/// The entries of `dir`; `None` when it does not exist.
pub(crate) fn read_dir_if_present(dir: &Path) -> Result<Option<fs::ReadDir>, ImageError> {
    match fs::read_dir(dir) {
        Ok(e) => Ok(Some(e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ImageError::Io { context: format!("list {}", dir.display()), source: e }),
    }
}

/// `*.json` files of `dir`, without temp files; none when `dir` does not exist.
pub(crate) fn json_files(dir: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let Some(entries) = read_dir_if_present(dir)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.ctx(|| format!("list {}", dir.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".json") && !name.starts_with('.') {
            out.push(entry.path());
        }
    }
    Ok(out)
}
