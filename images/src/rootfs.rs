//! Rootfs backends: an overlay mount of cached layers, or a copy of them into a directory.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::SFlag;
use tracing::debug;

use crate::error::{ImageError, IoContext};
use crate::fsutil;

/// The most bytes mount(2) copies from its data argument (one page, with the NUL).
const MOUNT_DATA_MAX: usize = 4096;

/// overlayfs's option that skips syncing the upper filesystem (Linux 5.10+).
const VOLATILE: &str = ",volatile";

/// Cleared once the kernel refused `volatile` where the same mount without it
/// worked: later mounts then skip the refused attempt.
static VOLATILE_SUPPORTED: AtomicBool = AtomicBool::new(true);

/// Mounts an overlay of `lowers_bottom_first` with `upper`/`work` on `target`.
///
/// overlayfs wants `lowerdir` top layer first; this takes the image order (bottom first)
/// and reverses it. A layer listed more than once keeps only its topmost place, which
/// gives the same merged view. When the option string would pass the one-page limit of
/// mount(2), the lower layers are named through `/proc/self/fd/N` handles opened for the
/// call instead of their paths: unlike a `chdir` to a common parent, this changes no
/// process-wide state and so is safe in a multi-threaded caller.
///
/// The mount is `volatile` where the kernel has it: without it, unmounting
/// (also implicitly, when the last process of a mount namespace ends) syncs the
/// whole upper filesystem, milliseconds on a busy disk. A container's upper
/// layer is thrown away with it and never outlives a crash of the node, so
/// skipping the sync loses nothing. `upper` and `work` must be fresh: overlayfs
/// refuses to mount a work directory a volatile mount used before.
pub fn mount_overlay(
    lowers_bottom_first: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), ImageError> {
    if lowers_bottom_first.is_empty() {
        return Err(ImageError::Unsupported(
            "an overlay needs at least one lower layer".to_string(),
        ));
    }
    let mut lowers: Vec<&Path> = Vec::new();
    for layer in lowers_bottom_first.iter().rev() {
        if !lowers.contains(&layer.as_path()) {
            lowers.push(layer);
        }
    }
    for path in lowers.iter().copied().chain([upper, work]) {
        check_overlay_path(path)?;
    }
    let tail = format!(",upperdir={},workdir={}", upper.display(), work.display());
    // Room for `volatile`, so that the choice between paths and fd handles
    // holds whether or not the kernel takes it.
    let reserve = VOLATILE.len();
    let joined = |names: &[String]| format!("lowerdir={}{tail}", names.join(":"));

    let by_path: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    let data = joined(&by_path);
    if data.len() + reserve < MOUNT_DATA_MAX {
        return mount_volatile(target, &data);
    }
    // Too long: keep O_PATH handles open across the mount and name the layers by fd.
    let handles: Vec<File> = lowers
        .iter()
        .map(|p| {
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
                .open(p)
                .ctx(|| format!("open lower layer {}", p.display()))
        })
        .collect::<Result<_, _>>()?;
    let by_fd: Vec<String> = handles
        .iter()
        .map(|f| format!("/proc/self/fd/{}", f.as_raw_fd()))
        .collect();
    let data = joined(&by_fd);
    if data.len() + reserve >= MOUNT_DATA_MAX {
        return Err(ImageError::Unsupported(format!(
            "{} layers do not fit in one overlay mount",
            lowers.len()
        )));
    }
    debug!(
        layers = lowers.len(),
        "overlay options too long for paths, using fd handles"
    );
    let result = mount_volatile(target, &data);
    drop(handles);
    result
}

fn check_overlay_path(path: &Path) -> Result<(), ImageError> {
    let s = path.to_string_lossy();
    if !path.is_absolute() || s.contains([',', ':', '\\']) {
        return Err(ImageError::Unsupported(format!(
            "overlay path '{s}' must be absolute and free of ',', ':' and '\\'"
        )));
    }
    Ok(())
}

/// Mounts with `volatile` added; where the kernel refuses it (EINVAL before
/// 5.10) and the mount without it works, remembers that and mounts without.
fn mount_volatile(target: &Path, data: &str) -> Result<(), ImageError> {
    if !VOLATILE_SUPPORTED.load(Ordering::Relaxed) {
        return do_mount(target, data);
    }
    match do_mount(target, &format!("{data}{VOLATILE}")) {
        Err(ImageError::Mount { source: nix::errno::Errno::EINVAL, .. }) => {
            do_mount(target, data)?;
            debug!("overlayfs refused the volatile option; mounting without it");
            VOLATILE_SUPPORTED.store(false, Ordering::Relaxed);
            Ok(())
        }
        other => other,
    }
}

fn do_mount(target: &Path, data: &str) -> Result<(), ImageError> {
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data),
    )
    .map_err(|source| ImageError::Mount {
        op: "mount overlay on",
        target: target.to_path_buf(),
        source,
    })
}

/// Unmounts `target`; a busy mount is detached lazily, and a path that is not a mount point is fine.
pub fn unmount(target: &Path) -> Result<(), ImageError> {
    let result = match umount2(target, MntFlags::empty()) {
        Err(nix::errno::Errno::EBUSY) => umount2(target, MntFlags::MNT_DETACH),
        other => other,
    };
    match result {
        // EINVAL: not a mount point (already unmounted); cleanup may run twice.
        Ok(()) | Err(nix::errno::Errno::EINVAL) => Ok(()),
        Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(source) => Err(ImageError::Mount {
            op: "unmount",
            target: target.to_path_buf(),
            source,
        }),
    }
}

/// Copies layers (bottom first) into `target`, applying each layer's whiteouts and opaque
/// directories to what the layers below put there: the copy backend for hosts without overlayfs.
pub fn copy_layers(lowers: &[PathBuf], target: &Path) -> Result<(), ImageError> {
    fs::create_dir_all(target).ctx(|| format!("create {}", target.display()))?;
    for layer in lowers {
        let mut links = HashMap::new();
        copy_dir(layer, target, &mut links)?;
        copy_dir_meta(layer, target)?;
    }
    Ok(())
}

fn is_opaque(dir: &Path) -> Result<bool, ImageError> {
    Ok(fsutil::lgetxattr(dir, fsutil::OVERLAY_OPAQUE_XATTR)
        .ctx(|| format!("read xattrs of {}", dir.display()))?
        .is_some_and(|v| v == b"y"))
}

/// Merges directory `src` of a layer into `dst`, which is a real directory.
fn copy_dir(
    src: &Path,
    dst: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<(), ImageError> {
    if is_opaque(src)? {
        fsutil::clear_dir(dst).ctx(|| format!("clear opaque directory {}", dst.display()))?;
    }
    let mut entries: Vec<_> = fs::read_dir(src)
        .ctx(|| format!("read directory {}", src.display()))?
        .collect::<Result<_, _>>()
        .ctx(|| format!("read directory {}", src.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let s = entry.path();
        let d = dst.join(entry.file_name());
        let meta = fs::symlink_metadata(&s).ctx(|| format!("inspect {}", s.display()))?;
        if fsutil::is_whiteout(&meta) {
            fsutil::remove_any(&d).ctx(|| format!("remove whited-out {}", d.display()))?;
            continue;
        }
        let existing = fs::symlink_metadata(&d).ok();
        if meta.is_dir() {
            if !existing.as_ref().is_some_and(|m| m.is_dir()) {
                fsutil::remove_any(&d).ctx(|| format!("replace {}", d.display()))?;
                fs::create_dir(&d).ctx(|| format!("create {}", d.display()))?;
            }
            copy_dir(&s, &d, links)?;
            copy_dir_meta(&s, &d)?;
            continue;
        }
        if existing.is_some() {
            fsutil::remove_any(&d).ctx(|| format!("replace {}", d.display()))?;
        }
        copy_node(&s, &d, &meta, links)?;
    }
    Ok(())
}

fn copy_node(
    s: &Path,
    d: &Path,
    meta: &fs::Metadata,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<(), ImageError> {
    let ft = meta.file_type();
    let key = (meta.dev(), meta.ino());
    if meta.nlink() > 1 && !ft.is_dir() {
        if let Some(first) = links.get(&key) {
            return fs::hard_link(first, d)
                .ctx(|| format!("link {} to {}", d.display(), first.display()));
        }
        links.insert(key, d.to_path_buf());
    }
    if ft.is_file() {
        let mut from = File::open(s).ctx(|| format!("open {}", s.display()))?;
        let mut to = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(d)
            .ctx(|| format!("create {}", d.display()))?;
        io::copy(&mut from, &mut to).ctx(|| format!("copy {} to {}", s.display(), d.display()))?;
        std::os::unix::fs::fchown(&to, Some(meta.uid()), Some(meta.gid()))
            .ctx(|| format!("chown {}", d.display()))?;
        to.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))
            .ctx(|| format!("chmod {}", d.display()))?;
    } else if ft.is_symlink() {
        let target = fs::read_link(s).ctx(|| format!("read link {}", s.display()))?;
        std::os::unix::fs::symlink(&target, d).ctx(|| format!("create symlink {}", d.display()))?;
        std::os::unix::fs::lchown(d, Some(meta.uid()), Some(meta.gid()))
            .ctx(|| format!("chown {}", d.display()))?;
    } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
        let kind = if ft.is_char_device() {
            SFlag::S_IFCHR
        } else if ft.is_block_device() {
            SFlag::S_IFBLK
        } else {
            SFlag::S_IFIFO
        };
        fsutil::mknod(d, kind, meta.mode() & 0o7777, meta.rdev())
            .ctx(|| format!("create device node {}", d.display()))?;
        std::os::unix::fs::lchown(d, Some(meta.uid()), Some(meta.gid()))
            .ctx(|| format!("chown {}", d.display()))?;
    } else {
        return Ok(()); // sockets are not copied
    }
    copy_xattrs(s, d)?;
    fsutil::set_times(
        d,
        (meta.atime(), meta.atime_nsec()),
        (meta.mtime(), meta.mtime_nsec()),
    )
    .ctx(|| format!("set times of {}", d.display()))
}

fn copy_dir_meta(s: &Path, d: &Path) -> Result<(), ImageError> {
    let meta = fs::symlink_metadata(s).ctx(|| format!("inspect {}", s.display()))?;
    std::os::unix::fs::lchown(d, Some(meta.uid()), Some(meta.gid()))
        .ctx(|| format!("chown {}", d.display()))?;
    fs::set_permissions(d, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .ctx(|| format!("chmod {}", d.display()))?;
    copy_xattrs(s, d)?;
    fsutil::set_times(
        d,
        (meta.atime(), meta.atime_nsec()),
        (meta.mtime(), meta.mtime_nsec()),
    )
    .ctx(|| format!("set times of {}", d.display()))
}

fn copy_xattrs(s: &Path, d: &Path) -> Result<(), ImageError> {
    for name in fsutil::llistxattr(s).ctx(|| format!("list xattrs of {}", s.display()))? {
        if !fsutil::xattr_allowed(&name) {
            continue;
        }
        if let Some(value) =
            fsutil::lgetxattr(s, &name).ctx(|| format!("read xattr {name} of {}", s.display()))?
        {
            fsutil::lsetxattr(d, &name, &value)
                .ctx(|| format!("set xattr {name} on {}", d.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unmounts on drop, so a failed assertion leaves no mount behind.
    struct Mounted(PathBuf);

    impl Drop for Mounted {
        fn drop(&mut self) {
            let _ = unmount(&self.0);
        }
    }

    /// The super options of the mount at `target` in this process's namespace.
    fn super_options(target: &Path) -> Option<String> {
        let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
        let want = target.to_string_lossy();
        text.lines().rev().find_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            (fields.get(4)? == &want).then(|| fields.get(sep + 3).map(|s| s.to_string()))?
        })
    }

    #[test]
    fn overlay_is_volatile_where_the_kernel_allows_it() {
        mezzo_testkit::require_root!();
        let tmp = tempfile::tempdir().unwrap();
        let (lower, upper, work, merged) = (
            tmp.path().join("lower"),
            tmp.path().join("upper"),
            tmp.path().join("work"),
            tmp.path().join("merged"),
        );
        for d in [&lower, &upper, &work, &merged] {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(lower.join("f"), "lower\n").unwrap();
        mount_overlay(std::slice::from_ref(&lower), &upper, &work, &merged).unwrap();
        let guard = Mounted(merged.clone());
        fs::write(merged.join("g"), "upper\n").unwrap();
        assert_eq!(fs::read_to_string(merged.join("f")).unwrap(), "lower\n");
        let options = super_options(&merged).expect("the overlay is in mountinfo");
        assert_eq!(
            // Shown as `volatile` before 6.6, as `fsync=volatile` since.
            options.split(',').any(|o| o == "volatile" || o == "fsync=volatile"),
            VOLATILE_SUPPORTED.load(Ordering::Relaxed),
            "{options}"
        );
        drop(guard);
        assert_eq!(fs::read_to_string(upper.join("g")).unwrap(), "upper\n");
    }
}
