//! Garbage collection and image management (list, remove) of the store.
//!
//! - **Last use** of an image is the modification time of its record (`images/<hex>.json`),
//!   touched by every `get`.
//! - Collection and `remove` hold the store lock ([`crate::store_lock`]) exclusively while
//!   they decide and unlink, and keep every layer a lease ([`crate::leases`]) names.
//! - **Crash safety**: a layer to delete is first renamed into `trash/` (one rename, so its
//!   directory under `layers/` is either whole or gone), then removed after the lock is
//!   released. `open` finishes removing trash left by a process that died.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};

use crate::digest::{is_hex64, sha256_hex};
use crate::error::{ImageError, IoContext};
use crate::fsutil::{self, json_files, read_dir_if_present, write_atomic};
use crate::reference::ImageReference;
use crate::store::ImageStore;
use crate::store_lock::StoreLock;

const TRASH: &str = "trash";
const TRASH_SUFFIX: &str = ".deleting";
/// Cached apparent size of a layer's rootfs, written next to `rootfs/` in the layer dir.
const LAYER_SIZE_FILE: &str = "size";

static SEQ: AtomicU64 = AtomicU64::new(0);

/// When and how much to collect.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GcPolicy {
    /// Keep images used within this long, and unreferenced layers and blobs younger than this.
    pub keep_recent: Duration,
    /// Collect only when the store (layers and blobs) holds more than this many bytes.
    pub max_store_bytes: Option<u64>,
    /// Or when the store's filesystem is fuller than this fraction (0.0 to 1.0).
    pub disk_usage_threshold: Option<f64>,
    /// Collect now, whatever the thresholds say (`keep_recent` and leases still hold).
    pub force: bool,
}

/// What a collection (or a `remove`) took out of the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Image records removed.
    pub images_removed: u64,
    /// Unpacked layer directories removed.
    pub layers_removed: u64,
    /// Content-store blobs (and exported archives) removed.
    pub blobs_removed: u64,
    /// Bytes of files removed (apparent sizes; a hardlinked file counts when its last link goes).
    pub bytes_freed: u64,
}

/// One image the store holds, with its size and last use, for `mezzo image ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredImage {
    /// The canonical reference (`docker.io/library/busybox:latest`).
    pub reference: String,
    /// Number of layers.
    pub layers: usize,
    /// Apparent size of the unpacked layers present in the store.
    pub size_bytes: u64,
    /// When a `get` last returned the image (or it was stored).
    pub last_used: SystemTime,
}

impl ImageStore {
    /// The images the store holds, by reference.
    pub fn list(&self) -> Result<Vec<StoredImage>, ImageError> {
        let root = self.root();
        let mut out: Vec<StoredImage> = read_records(root)?
            .into_iter()
            .map(|rec| StoredImage {
                layers: rec.diff_ids.len(),
                size_bytes: rec
                    .diff_ids
                    .iter()
                    .filter_map(|hex| layer_size(root, hex))
                    .sum(),
                last_used: rec.last_used,
                reference: rec.reference,
            })
            .collect();
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// Removes `reference` from the store, with the layers and blobs no other image or
    /// lease needs. Refused while a container's lease names the image.
    pub fn remove(&self, reference: &str) -> Result<GcReport, ImageError> {
        let r = ImageReference::parse(reference)?;
        let canonical = r.to_string();
        let root = self.root();
        let mut report = GcReport::default();
        let trash = {
            let _lock = StoreLock::exclusive(root)?;
            let users: Vec<String> = self
                .leases()?
                .into_iter()
                .filter(|l| l.reference == canonical)
                .map(|l| l.container_id)
                .collect();
            if !users.is_empty() {
                return Err(ImageError::Io {
                    context: format!("cannot remove image {}", r.short_name()),
                    source: io::Error::new(
                        io::ErrorKind::ResourceBusy,
                        format!("in use by container(s) {}", users.join(", ")),
                    ),
                });
            }
            let (remove, keep): (Vec<_>, Vec<_>) = read_records(root)?
                .into_iter()
                .partition(|rec| rec.reference == canonical);
            if remove.is_empty() {
                return Err(ImageError::NotFound {
                    image: r.short_name(),
                    location: format!("the image store {}", root.display()),
                });
            }
            // Unreferenced content that the removed image never named is left for `gc`.
            sweep(self, &keep, &remove, None, &mut report)?
        };
        empty_trash(root, trash, &mut report);
        info!(image = %r, ?report, "removed image");
        Ok(report)
    }

    /// Collects images nobody leases and nobody used within `policy.keep_recent`, then
    /// the layers and blobs no remaining image or lease needs. Without `force`, only when
    /// the store passes `max_store_bytes` or its disk `disk_usage_threshold` (with neither
    /// set, always). Blocking; call it from `spawn_blocking` in async code.
    pub fn gc(&self, policy: &GcPolicy) -> Result<GcReport, ImageError> {
        let root = self.root();
        let mut report = GcReport::default();
        // Trash of processes that died mid-collection; cheap when there is none.
        empty_trash(root, dead_trash(root), &mut report);
        if !policy.force && !over_threshold(root, policy)? {
            debug!("image store below its gc thresholds");
            return Ok(report);
        }
        let trash = {
            let _lock = StoreLock::exclusive(root)?;
            let leased: HashSet<String> = self.leases()?.into_iter().map(|l| l.reference).collect();
            let now = SystemTime::now();
            let (remove, keep): (Vec<_>, Vec<_>) =
                read_records(root)?.into_iter().partition(|rec| {
                    !leased.contains(&rec.reference)
                        && age(now, rec.last_used) >= policy.keep_recent
                });
            sweep(self, &keep, &remove, Some(policy.keep_recent), &mut report)?
        };
        empty_trash(root, trash, &mut report);
        if report != GcReport::default() {
            info!(?report, "image store garbage collected");
        }
        Ok(report)
    }
}

/// Runs `store.gc(&policy)` every `interval` (at least one second) until the task is aborted.
pub fn spawn_gc_loop(
    store: ImageStore,
    policy: GcPolicy,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    let interval = interval.max(Duration::from_secs(1));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let (s, p) = (store.clone(), policy.clone());
            match tokio::task::spawn_blocking(move || s.gc(&p)).await {
                Ok(Ok(report)) => debug!(?report, "periodic image gc"),
                Ok(Err(e)) => warn!(error = %e, "periodic image gc failed"),
                Err(e) => warn!(error = %e, "periodic image gc task failed"),
            }
        }
    })
}

/// Finishes deletions a process left in `trash/` when it died. Called by `ImageStore::open`.
pub(crate) fn finish_interrupted(root: &Path) {
    let mut report = GcReport::default();
    empty_trash(root, dead_trash(root), &mut report);
    if report.bytes_freed > 0 {
        info!(
            bytes = report.bytes_freed,
            "finished deletions interrupted by a crash"
        );
    }
}

/// Marks the image whose record is at `record` as used now (the record's mtime).
pub(crate) fn mark_used(record: &Path) {
    let now = nix::sys::time::TimeSpec::UTIME_NOW;
    if let Err(e) = nix::sys::stat::utimensat(
        None,
        record,
        &nix::sys::time::TimeSpec::UTIME_OMIT,
        &now,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    ) {
        // Only the record's age is lost; GC keeps leased images whatever their age.
        debug!(record = %record.display(), error = %e, "could not mark image as used");
    }
}

/// What GC needs from an image record (`images/<hex>.json`).
struct RecordInfo {
    path: PathBuf,
    reference: String,
    /// Layer diff ids as hex, bottom first.
    diff_ids: Vec<String>,
    /// Every sha256 the record names (config, layers, manifests), as hex.
    digests: HashSet<String>,
    last_used: SystemTime,
}

/// Reads every image record. Records are read as plain JSON so that fields added later
/// (manifest digests of registry pulls) still protect what they name.
fn read_records(root: &Path) -> Result<Vec<RecordInfo>, ImageError> {
    let mut out = Vec::new();
    for path in json_files(&root.join("images"))? {
        let (bytes, meta) = match fs::read(&path).and_then(|b| Ok((b, fs::metadata(&path)?))) {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(ImageError::Io {
                    context: format!("read {}", path.display()),
                    source: e,
                })
            }
        };
        let value: serde_json::Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                // The store ignores unreadable records too (it re-imports the image).
                warn!(record = %path.display(), error = %e, "ignoring unreadable image record");
                continue;
            }
        };
        let Some(reference) = value.get("reference").and_then(|v| v.as_str()) else {
            warn!(record = %path.display(), "ignoring image record without a reference");
            continue;
        };
        let diff_ids = value
            .get("diff_ids")
            .and_then(|v| v.as_array())
            .map(|ids| {
                ids.iter()
                    .filter_map(|d| d.as_str().and_then(sha256_hex))
                    .collect()
            })
            .unwrap_or_default();
        let mut digests = HashSet::new();
        collect_digests(&value, &mut digests);
        out.push(RecordInfo {
            reference: reference.to_string(),
            diff_ids,
            digests,
            last_used: meta.modified().unwrap_or(UNIX_EPOCH),
            path,
        });
    }
    Ok(out)
}

/// Adds the hex of every `sha256:<hex>` in any string of `value` to `out`.
fn collect_digests(value: &serde_json::Value, out: &mut HashSet<String>) {
    match value {
        serde_json::Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(i) = rest.find("sha256:") {
                rest = &rest[i + 7..];
                if let Some(hex) = rest.get(..64).filter(|h| is_hex64(h)) {
                    out.insert(hex.to_string());
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_digests(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| collect_digests(v, out)),
        _ => {}
    }
}

fn age(now: SystemTime, then: SystemTime) -> Duration {
    now.duration_since(then).unwrap_or(Duration::ZERO)
}

/// Names in `dir` that are content names (64 hex), with their metadata.
fn content_entries(dir: &Path) -> Result<Vec<(String, fs::Metadata)>, ImageError> {
    let Some(entries) = read_dir_if_present(dir)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.ctx(|| format!("list {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let hex = name.strip_suffix(".tar").unwrap_or(&name);
        // Temp entries (`.tmp-*`) belong to work in progress; `open` sweeps dead ones.
        if !is_hex64(hex) {
            continue;
        }
        if let Ok(meta) = fs::symlink_metadata(entry.path()) {
            out.push((name, meta));
        }
    }
    Ok(out)
}

/// Removes the records in `remove`, then every layer and blob that no record in `keep`
/// and no lease needs. With `orphan_grace`, content that no record names at all is
/// removed too once older than the grace; without, it is left alone. Layers go to the
/// trash (returned, to be emptied after the lock is released); blobs are unlinked.
/// The caller holds the store lock exclusively.
fn sweep(
    store: &ImageStore,
    keep: &[RecordInfo],
    remove: &[RecordInfo],
    orphan_grace: Option<Duration>,
    report: &mut GcReport,
) -> Result<Vec<PathBuf>, ImageError> {
    let root = store.root();
    let now = SystemTime::now();
    // Records first: after a crash here, no record names a layer that is gone.
    for rec in remove {
        match fs::remove_file(&rec.path) {
            Ok(()) => {
                report.images_removed += 1;
                info!(image = %rec.reference, "removing image");
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ImageError::Io {
                    context: format!("remove {}", rec.path.display()),
                    source: e,
                })
            }
        }
    }
    sync_dir(&root.join("images"));

    let mut needed: HashSet<String> = keep
        .iter()
        .flat_map(|r| r.digests.iter().cloned())
        .collect();
    for lease in store.leases()? {
        needed.extend(lease.layers.iter().filter_map(|d| sha256_hex(d)));
    }
    let named_by_removed: HashSet<&String> = remove.iter().flat_map(|r| r.digests.iter()).collect();
    // Whether unreferenced content is collectable: named by a removed image, or an
    // orphan past the grace period.
    let collectable = |hex: &String, meta: &fs::Metadata| {
        named_by_removed.contains(hex)
            || orphan_grace
                .is_some_and(|grace| age(now, meta.modified().unwrap_or(UNIX_EPOCH)) >= grace)
    };

    let layers_dir = root.join("layers");
    let mut trash = Vec::new();
    for (hex, meta) in content_entries(&layers_dir)? {
        if !meta.is_dir() {
            continue;
        }
        let dir = layers_dir.join(&hex);
        if needed.contains(&hex) || !collectable(&hex, &meta) {
            // A kept layer keeps the blob it was unpacked from.
            if let Ok(blob) = fs::read_to_string(dir.join("blob")) {
                if let Some(b) = sha256_hex(blob.trim()) {
                    needed.insert(b);
                }
            }
            continue;
        }
        let target = trash_path(root, &format!("layer-{hex}"))?;
        fs::rename(&dir, &target)
            .ctx(|| format!("move {} to {}", dir.display(), target.display()))?;
        report.layers_removed += 1;
        debug!(layer = %hex, "moved layer to trash");
        trash.push(target);
    }
    sync_dir(&layers_dir);

    for dir in [root.join("blobs").join("sha256"), root.join("archives")] {
        for (name, meta) in content_entries(&dir)? {
            let hex = name.strip_suffix(".tar").unwrap_or(&name).to_string();
            if !meta.is_file() || needed.contains(&hex) || !collectable(&hex, &meta) {
                continue;
            }
            let path = dir.join(&name);
            match fs::remove_file(&path) {
                Ok(()) => {
                    report.blobs_removed += 1;
                    report.bytes_freed += meta.len();
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(ImageError::Io {
                        context: format!("remove {}", path.display()),
                        source: e,
                    })
                }
            }
        }
    }
    Ok(trash)
}

/// A fresh name in `trash/` that names this process (so `open` can tell a dead one's).
fn trash_path(root: &Path, what: &str) -> Result<PathBuf, ImageError> {
    let dir = root.join(TRASH);
    fs::create_dir_all(&dir).ctx(|| format!("create {}", dir.display()))?;
    Ok(dir.join(format!(
        "{}-{}-{what}{TRASH_SUFFIX}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )))
}

/// Trash entries whose process is gone (or whose name does not say).
fn dead_trash(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(root.join(TRASH)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let pid = name.split('-').next().and_then(|p| p.parse::<i32>().ok());
            match pid {
                Some(p) => p != std::process::id() as i32 && !fsutil::pid_alive(p),
                None => true,
            }
        })
        .map(|entry| entry.path())
        .collect()
}

/// Removes trash entries, adding what they held to the report. Never fails: what is
/// left is retried by the next `open` or `gc`.
fn empty_trash(root: &Path, trash: Vec<PathBuf>, report: &mut GcReport) {
    for path in trash {
        match remove_counting(&path) {
            Ok(bytes) => report.bytes_freed += bytes,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "could not empty image store trash")
            }
        }
    }
    sync_dir(&root.join(TRASH));
}

/// Removes `path` recursively (never following symlinks) and returns the bytes freed.
/// Entries that vanish meanwhile (another process emptying the same trash) are fine.
fn remove_counting(path: &Path) -> io::Result<u64> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let gone = |r: io::Result<()>| match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    };
    if !meta.is_dir() {
        gone(fs::remove_file(path))?;
        // Bytes are freed when the last link goes.
        return Ok(if meta.is_file() && meta.nlink() == 1 {
            meta.len()
        } else {
            0
        });
    }
    let mut bytes = 0;
    match fs::read_dir(path) {
        Ok(entries) => {
            for entry in entries {
                match entry {
                    Ok(entry) => bytes += remove_counting(&entry.path())?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(bytes),
        Err(e) => return Err(e),
    }
    gone(fs::remove_dir(path))?;
    Ok(bytes)
}

/// Apparent size of a layer's rootfs, computed once and cached in the layer dir.
fn layer_size(root: &Path, hex: &str) -> Option<u64> {
    let dir = root.join("layers").join(hex);
    let cache = dir.join(LAYER_SIZE_FILE);
    if let Some(n) = fs::read_to_string(&cache)
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return Some(n);
    }
    let mut seen = HashSet::new();
    let size = tree_size(&dir.join("rootfs"), &mut seen).ok()?;
    // A layer never changes once unpacked, so its size can be kept. If the layer left
    // for the trash meanwhile the write fails, which is harmless.
    let _ = write_atomic(&cache, size.to_string().as_bytes());
    Some(size)
}

/// Sum of regular file sizes under `path`, each hardlinked inode once.
fn tree_size(path: &Path, seen: &mut HashSet<(u64, u64)>) -> io::Result<u64> {
    let meta = fs::symlink_metadata(path)?;
    if meta.is_file() {
        let first = meta.nlink() == 1 || seen.insert((meta.dev(), meta.ino()));
        return Ok(if first { meta.len() } else { 0 });
    }
    if !meta.is_dir() {
        return Ok(0);
    }
    let mut total = 0;
    for entry in fs::read_dir(path)? {
        total += tree_size(&entry?.path(), seen)?;
    }
    Ok(total)
}

/// Bytes held by unpacked layers and blobs.
fn store_bytes(root: &Path) -> Result<u64, ImageError> {
    let mut total = 0;
    for (hex, meta) in content_entries(&root.join("layers"))? {
        if meta.is_dir() {
            total += layer_size(root, &hex).unwrap_or(0);
        }
    }
    for (_, meta) in content_entries(&root.join("blobs").join("sha256"))? {
        total += meta.len();
    }
    Ok(total)
}

/// Whether the thresholds of `policy` ask for a collection now.
fn over_threshold(root: &Path, policy: &GcPolicy) -> Result<bool, ImageError> {
    if policy.max_store_bytes.is_none() && policy.disk_usage_threshold.is_none() {
        return Ok(true);
    }
    if let Some(max) = policy.max_store_bytes {
        let used = store_bytes(root)?;
        if used > max {
            info!(used, max, "image store over its size limit; collecting");
            return Ok(true);
        }
    }
    if let Some(threshold) = policy.disk_usage_threshold {
        let usage = disk_usage(root)?;
        if usage > threshold {
            info!(
                usage,
                threshold, "image store disk over its usage threshold; collecting"
            );
            return Ok(true);
        }
    }
    Ok(false)
}

/// Fraction of the filesystem holding `path` in use, as df(1) reckons it.
fn disk_usage(path: &Path) -> Result<f64, ImageError> {
    let st = nix::sys::statvfs::statvfs(path).ctx(|| format!("statvfs {}", path.display()))?;
    let used = st.blocks().saturating_sub(st.blocks_free()) as f64;
    let avail = st.blocks_available() as f64;
    Ok(if used + avail > 0.0 {
        used / (used + avail)
    } else {
        0.0
    })
}

/// fsync a directory so renames and unlinks in it are durable; best effort.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
