//! Unpacking one layer tar into a directory in overlay format, refusing hostile entries.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::SFlag;
use tar::EntryType;
use tracing::debug;

use crate::digest::{verify, Digest, HashingReader};
use crate::error::{ImageError, IoContext};
use crate::fsutil::{self, ensure_parents, sanitize_member};

const WHITEOUT_PREFIX: &str = ".wh.";
const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";
/// aufs bookkeeping entries (`.wh..wh.plnk`, `.wh..wh.aufs`) that carry no meaning for overlay.
const WHITEOUT_META_PREFIX: &str = ".wh..wh.";

/// Bytes of file content moved per read/write pair while unpacking: large, so a
/// 20 MB file takes tens of syscalls rather than thousands.
const COPY_BUF: usize = 1 << 20;

/// Opens a layer blob, undoing gzip or zstd when its magic bytes say so.
pub(crate) fn open_layer_stream(blob: &Path) -> Result<Box<dyn Read + Send>, ImageError> {
    let file = File::open(blob).ctx(|| format!("open layer blob {}", blob.display()))?;
    decompressed(BufReader::with_capacity(1 << 17, file))
        .ctx(|| format!("read layer blob {}", blob.display()))
}

/// Undoes gzip or zstd on a layer stream when its first bytes say so; plain tar passes
/// through. Reads straight from `reader`'s buffer (no extra copy of the compressed bytes).
pub fn decompressed<'a, R: BufRead + Send + 'a>(
    mut reader: R,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    let head = reader.fill_buf()?;
    // A reader whose first buffer is shorter than a magic number gets no sniffing; layer
    // streams come in file or network buffers of kilobytes.
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(reader)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(reader)?))
    } else {
        Ok(Box::new(reader))
    }
}

/// A directory whose metadata is applied after its children are written.
struct DirMeta {
    path: PathBuf,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
}

/// Unpacks layer `blob` into the (new, empty) directory `dest`, converting whiteouts to
/// overlay form, and checks that the uncompressed stream hashes to `diff_id`.
pub(crate) fn unpack_layer(blob: &Path, dest: &Path, diff_id: &Digest) -> Result<(), ImageError> {
    unpack_layer_stream(open_layer_stream(blob)?, dest, diff_id)
}

/// Unpacks an uncompressed layer tar read from `stream` into the (new, empty) directory
/// `dest`, as [`unpack_layer`] does; the stream is read to its end.
pub fn unpack_layer_stream(
    stream: impl Read,
    dest: &Path,
    diff_id: &Digest,
) -> Result<(), ImageError> {
    let layer = diff_id.to_string();
    let hostile = |reason: String| ImageError::HostileLayer {
        layer: layer.clone(),
        reason,
    };
    let read_err = |e: io::Error| ImageError::Io {
        context: format!("read layer {layer}"),
        source: e,
    };
    fs::create_dir(dest).ctx(|| format!("create {}", dest.display()))?;
    let stream = HashingReader::new(stream);
    let mut archive = tar::Archive::new(stream);
    let mut dirs: Vec<DirMeta> = Vec::new();
    let mut buf = vec![0u8; COPY_BUF];

    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            continue;
        }
        let raw_name = entry.path_bytes().into_owned();
        let rel = sanitize_member(&raw_name).map_err(hostile)?;
        let header = entry.header();
        let mode = header.mode().map_err(read_err)? & 0o7777;
        let uid = u32::try_from(header.uid().map_err(read_err)?)
            .map_err(|_| hostile("uid out of range".to_string()))?;
        let gid = u32::try_from(header.gid().map_err(read_err)?)
            .map_err(|_| hostile("gid out of range".to_string()))?;
        let mtime = header.mtime().map_err(read_err)? as i64;

        let Some(rel) = rel else {
            // The layer's root directory: its metadata becomes the rootfs dir's.
            if kind == EntryType::Directory {
                dirs.push(DirMeta {
                    path: dest.to_path_buf(),
                    mode,
                    uid,
                    gid,
                    mtime,
                });
            }
            continue;
        };
        let file_name = rel
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default();
        let file_name = String::from_utf8_lossy(&file_name).into_owned();

        if file_name == WHITEOUT_OPAQUE {
            ensure_parents(dest, &rel, &layer)?;
            let dir = dest.join(rel.parent().unwrap_or(Path::new("")));
            fsutil::lsetxattr(&dir, fsutil::OVERLAY_OPAQUE_XATTR, b"y")
                .ctx(|| format!("mark {} opaque", dir.display()))?;
            continue;
        }
        if file_name.starts_with(WHITEOUT_META_PREFIX) {
            debug!(entry = %rel.display(), "skipping aufs metadata entry");
            continue;
        }
        if let Some(hidden) = file_name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() {
                return Err(hostile(format!(
                    "whiteout '{}' names nothing",
                    rel.display()
                )));
            }
            ensure_parents(dest, &rel, &layer)?;
            let target = dest.join(rel.with_file_name(hidden));
            fsutil::remove_any(&target).ctx(|| format!("replace {}", target.display()))?;
            fsutil::make_whiteout(&target)
                .ctx(|| format!("create whiteout {}", target.display()))?;
            continue;
        }

        ensure_parents(dest, &rel, &layer)?;
        let full = dest.join(&rel);
        // A later entry replaces an earlier one; a directory entry merges into an existing directory.
        match fs::symlink_metadata(&full) {
            Ok(m) if m.is_dir() && kind == EntryType::Directory => {}
            Ok(_) => fsutil::remove_any(&full).ctx(|| format!("replace {}", full.display()))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ImageError::Io {
                    context: format!("inspect {}", full.display()),
                    source: e,
                })
            }
        }

        let xattrs = pax_xattrs(&mut entry).map_err(read_err)?;
        match kind {
            EntryType::Directory => {
                if !full.is_dir() {
                    fs::create_dir(&full).ctx(|| format!("create {}", full.display()))?;
                }
                dirs.push(DirMeta {
                    path: full.clone(),
                    mode,
                    uid,
                    gid,
                    mtime,
                });
            }
            EntryType::Regular | EntryType::Continuous => {
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&full)
                    .ctx(|| format!("create {}", full.display()))?;
                copy_with(&mut entry, &mut file, &mut buf)
                    .ctx(|| format!("write {}", full.display()))?;
                // chown before chmod: chown clears set-id bits.
                std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
                    .ctx(|| format!("chown {}", full.display()))?;
                file.set_permissions(fs::Permissions::from_mode(mode))
                    .ctx(|| format!("chmod {}", full.display()))?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| hostile(format!("symlink '{}' has no target", rel.display())))?;
                // The target is stored as is: it is resolved inside the container's root,
                // and nothing here ever follows it.
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &full)
                    .ctx(|| format!("create symlink {}", full.display()))?;
            }
            EntryType::Link => {
                let target_raw = entry.link_name_bytes().ok_or_else(|| {
                    hostile(format!("hardlink '{}' has no target", rel.display()))
                })?;
                let target = sanitize_member(&target_raw)
                    .map_err(|r| hostile(format!("hardlink '{}': {r}", rel.display())))?
                    .ok_or_else(|| {
                        hostile(format!("hardlink '{}' points at the root", rel.display()))
                    })?;
                ensure_parents(dest, &target, &layer)?;
                let target_full = dest.join(&target);
                match fs::symlink_metadata(&target_full) {
                    Ok(m) if !m.is_dir() => {}
                    _ => return Err(hostile(format!(
                        "hardlink '{}' points at '{}', which is not a file earlier in the layer",
                        rel.display(),
                        target.display()
                    ))),
                }
                // linkat without AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
                fs::hard_link(&target_full, &full)
                    .ctx(|| format!("link {} to {}", full.display(), target_full.display()))?;
                continue; // the inode already has its metadata
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let sflag = match kind {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let major = entry
                    .header()
                    .device_major()
                    .map_err(read_err)?
                    .unwrap_or(0);
                let minor = entry
                    .header()
                    .device_minor()
                    .map_err(read_err)?
                    .unwrap_or(0);
                let dev = nix::sys::stat::makedev(major.into(), minor.into());
                fsutil::mknod(&full, sflag, mode, dev)
                    .ctx(|| format!("create device node {}", full.display()))?;
            }
            EntryType::GNUSparse => {
                return Err(ImageError::Unsupported(format!(
                    "sparse file '{}' in layer {layer}",
                    rel.display()
                )))
            }
            other => {
                debug!(entry = %rel.display(), kind = ?other, "skipping unsupported tar entry type");
                continue;
            }
        }
        match kind {
            // Directories are finished below; regular files got owner and mode above.
            EntryType::Directory | EntryType::Regular | EntryType::Continuous => {}
            EntryType::Symlink => std::os::unix::fs::lchown(&full, Some(uid), Some(gid))
                .ctx(|| format!("chown {}", full.display()))?,
            _ => {
                std::os::unix::fs::lchown(&full, Some(uid), Some(gid))
                    .ctx(|| format!("chown {}", full.display()))?;
                fs::set_permissions(&full, fs::Permissions::from_mode(mode))
                    .ctx(|| format!("chmod {}", full.display()))?;
            }
        }
        if kind != EntryType::Directory {
            fsutil::set_times(&full, (mtime, 0), (mtime, 0))
                .ctx(|| format!("set times of {}", full.display()))?;
        }
        for (name, value) in xattrs {
            fsutil::lsetxattr(&full, &name, &value)
                .ctx(|| format!("set xattr {name} on {}", full.display()))?;
        }
    }

    // Directory metadata last and deepest first: writing children changes a directory's mtime.
    for dir in dirs.iter().rev() {
        std::os::unix::fs::lchown(&dir.path, Some(dir.uid), Some(dir.gid))
            .ctx(|| format!("chown {}", dir.path.display()))?;
        fs::set_permissions(&dir.path, fs::Permissions::from_mode(dir.mode))
            .ctx(|| format!("chmod {}", dir.path.display()))?;
        fsutil::set_times(&dir.path, (dir.mtime, 0), (dir.mtime, 0))
            .ctx(|| format!("set times of {}", dir.path.display()))?;
    }

    let (actual, _) = archive.into_inner().finish().map_err(read_err)?;
    verify(&format!("layer {layer} (uncompressed)"), diff_id, &actual)
}

/// Copies `reader` to its end into `writer` through `buf`.
fn copy_with(reader: &mut impl Read, writer: &mut impl Write, buf: &mut [u8]) -> io::Result<u64> {
    let mut total = 0;
    loop {
        let n = match reader.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        writer.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// The `SCHILY.xattr.*` PAX records of an entry that we are willing to apply.
fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                if fsutil::xattr_allowed(name) {
                    out.push((name.to_string(), ext.value_bytes().to_vec()));
                } else {
                    debug!(xattr = name, "dropping xattr from layer entry");
                }
            }
        }
    }
    Ok(out)
}
