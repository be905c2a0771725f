//! Leases, garbage collection and image management (list, remove, import) of the store.
//!
//! - **Leases** (`leases/<sha256 of container id>.json`) record which container uses which
//!   image and layers. They are files, so they survive an agent restart; the agent
//!   releases the leases of containers it no longer knows after recovery.
//! - **Last use** of an image is the modification time of its record (`images/<hex>.json`),
//!   touched by every `get`.
//! - **The store lock** (`store.lock`, flock(2)) is held shared by `get` and `acquire`, and
//!   exclusively by `gc` and `remove` while they decide and unlink, so collection never
//!   removes what an image being provisioned needs, even across processes (the CLI beside
//!   an agent).
//! - **Crash safety**: a layer to delete is first renamed into `trash/` (one rename, so its
//!   directory under `layers/` is either whole or gone), then removed after the lock is
//!   released. `open` finishes removing trash left by a process that died.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::build::DEFAULT_PATH_ENV;
use crate::digest::{Digest, HashingReader};
use crate::error::{ImageError, IoContext};
use crate::fsutil::{self, write_atomic};
use crate::manifest::{
    host_architecture, ConfigFile, Descriptor, History, Index, Manifest, RootFs, RunConfig,
    ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME, MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_LAYER, MEDIA_TYPE_OCI_LAYER_GZIP, MEDIA_TYPE_OCI_MANIFEST,
};
use crate::reference::ImageReference;
use crate::store::{blocking, Image, ImageStore};

const LOCK_FILE: &str = "store.lock";
const LEASES: &str = "leases";
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

/// A container's claim on an image's layers, persisted under `leases/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The container holding the lease.
    pub container_id: String,
    /// The image's canonical reference.
    pub reference: String,
    /// The diff ids (`sha256:<hex>`) of the layers the container uses.
    pub layers: Vec<String>,
    /// When the lease was taken, seconds since the epoch.
    pub acquired_unix: u64,
}

impl ImageStore {
    /// Records that `container_id` uses `image`'s layers, so GC keeps them until
    /// [`ImageStore::release`]. Fails when a layer has left the store since the image was
    /// returned (get it again); [`ImageStore::get_leased`] does both in one step.
    /// Blocking (it may wait for a running collection); call it from `spawn_blocking`.
    pub fn acquire(&self, container_id: &str, image: &Image) -> Result<(), ImageError> {
        let _lock = StoreLock::shared_blocking(self.root())?;
        self.write_lease(container_id, image)
    }

    /// Gets `reference` and leases it to `container_id` under one hold of the store lock,
    /// so no collection can come between the two.
    pub async fn get_leased(
        &self,
        container_id: &str,
        reference: &str,
    ) -> Result<Image, ImageError> {
        // `get` takes the shared lock again on its own descriptor; shared flocks never
        // wait for each other, even with a collection queued for the exclusive lock.
        let _lock = StoreLock::shared(self.root()).await?;
        let image = self.get(reference).await?;
        let store = self.clone();
        let id = container_id.to_string();
        let leased = image.clone();
        blocking(move || store.write_lease(&id, &leased)).await?;
        Ok(image)
    }

    /// Drops `container_id`'s lease; an unknown id is not an error.
    pub fn release(&self, container_id: &str) -> Result<(), ImageError> {
        let path = lease_path(self.root(), container_id);
        match fs::remove_file(&path) {
            Ok(()) => {
                debug!(container = container_id, "released image lease");
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ImageError::Io {
                context: format!("remove {}", path.display()),
                source: e,
            }),
        }
    }

    /// Every lease in the store, by container id.
    pub fn leases(&self) -> Result<Vec<Lease>, ImageError> {
        let dir = self.root().join(LEASES);
        let mut out = Vec::new();
        for path in json_files(&dir)? {
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                // Released between listing and reading.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(ImageError::Io {
                        context: format!("read {}", path.display()),
                        source: e,
                    })
                }
            };
            // A lease that cannot be read must fail the caller: ignoring it could let GC
            // take layers a container runs on. Leases are written atomically, so this
            // means someone else wrote the file.
            let lease: Lease =
                serde_json::from_slice(&bytes).map_err(|source| ImageError::Json {
                    context: format!("parse lease {}", path.display()),
                    source,
                })?;
            out.push(lease);
        }
        out.sort_by(|a, b| a.container_id.cmp(&b.container_id));
        Ok(out)
    }

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

    /// Imports a root filesystem tarball (plain or gzip, e.g. from `docker export`) as a
    /// one-layer image named `name_tag`, so that `get(name_tag)` finds it in the store.
    pub async fn import_rootfs(
        &self,
        tar_path: &Path,
        name_tag: &str,
    ) -> Result<Image, ImageError> {
        let r = ImageReference::parse(name_tag)?;
        if r.tag.is_none() || r.digest.is_some() {
            return Err(ImageError::InvalidReference {
                reference: name_tag.to_string(),
                reason: "an imported image needs a NAME:TAG".to_string(),
            });
        }
        // Staged as an OCI layout under `archives/.tmp-<pid>-*`, which `open` sweeps if we
        // die here; the store imports it like any local layout and keeps its record
        // after the layout is gone.
        let staging = self.root().join("archives").join(format!(
            ".tmp-{}-import-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _cleanup = RemoveOnDrop(staging.clone());
        let layout = staging.join("oci").join(r.familiar_name());
        let (src, reference) = (tar_path.to_path_buf(), r.clone());
        blocking(move || write_rootfs_layout(&src, &layout, &reference)).await?;
        let importer = ImageStore::open(self.root().to_path_buf(), Some(staging.clone()))?;
        let image = importer.get(&r.to_string()).await?;
        info!(image = %r, tarball = %tar_path.display(), "imported root filesystem");
        Ok(image)
    }

    /// Writes the lease file; the caller holds the store lock shared.
    fn write_lease(&self, container_id: &str, image: &Image) -> Result<(), ImageError> {
        let mut layers = Vec::with_capacity(image.layers.len());
        for dir in &image.layers {
            let hex = layer_hex(dir).ok_or_else(|| ImageError::InvalidImage {
                image: image.reference.clone(),
                reason: format!("{} is not a layer of an image store", dir.display()),
            })?;
            if !dir.is_dir() {
                return Err(ImageError::InvalidImage {
                    image: image.reference.clone(),
                    reason: format!("layer sha256:{hex} left the store; get the image again"),
                });
            }
            layers.push(format!("sha256:{hex}"));
        }
        let lease = Lease {
            container_id: container_id.to_string(),
            reference: image.reference.clone(),
            layers,
            acquired_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let bytes = serde_json::to_vec_pretty(&lease).map_err(|source| ImageError::Json {
            context: "serialize lease".to_string(),
            source,
        })?;
        let path = lease_path(self.root(), container_id);
        // Atomic but not fsynced: a lease must outlive an agent restart, and a
        // host crash ends every container that could hold one.
        crate::fsutil::write_replace(&path, &bytes)?;
        debug!(container = container_id, image = %image.reference, "acquired image lease");
        Ok(())
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

/// The store lock, held while the guard lives (flock on `<store>/store.lock`).
pub(crate) struct StoreLock {
    _lock: Flock<File>,
}

impl StoreLock {
    /// Takes the lock shared, waiting off the async runtime when a collection holds it.
    pub(crate) async fn shared(root: &Path) -> Result<Self, ImageError> {
        let file = open_lock_file(root)?;
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(lock) => Ok(Self { _lock: lock }),
            Err((file, Errno::EWOULDBLOCK)) => {
                let root = root.to_path_buf();
                blocking(move || flock_retrying(file, FlockArg::LockShared, &root)).await
            }
            Err((_, e)) => Err(lock_error(root, e)),
        }
    }

    /// Takes the lock shared, blocking the thread.
    pub(crate) fn shared_blocking(root: &Path) -> Result<Self, ImageError> {
        flock_retrying(open_lock_file(root)?, FlockArg::LockShared, root)
    }

    /// Takes the lock exclusively, blocking the thread.
    pub(crate) fn exclusive(root: &Path) -> Result<Self, ImageError> {
        flock_retrying(open_lock_file(root)?, FlockArg::LockExclusive, root)
    }
}

fn open_lock_file(root: &Path) -> Result<File, ImageError> {
    let path = root.join(LOCK_FILE);
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)
        .ctx(|| format!("open {}", path.display()))
}

fn flock_retrying(mut file: File, arg: FlockArg, root: &Path) -> Result<StoreLock, ImageError> {
    loop {
        match Flock::lock(file, arg) {
            Ok(lock) => return Ok(StoreLock { _lock: lock }),
            Err((f, Errno::EINTR)) => file = f,
            Err((_, e)) => return Err(lock_error(root, e)),
        }
    }
}

fn lock_error(root: &Path, e: Errno) -> ImageError {
    ImageError::Io {
        context: format!("lock {}", root.join(LOCK_FILE).display()),
        source: io::Error::from(e),
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
                    .filter_map(|d| d.as_str().and_then(digest_hex))
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

fn digest_hex(s: &str) -> Option<String> {
    s.strip_prefix("sha256:")
        .filter(|h| is_hex64(h))
        .map(str::to_string)
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `<hex>` of a layer directory `<store>/layers/<hex>/rootfs`.
fn layer_hex(dir: &Path) -> Option<String> {
    let hex = dir.parent()?.file_name()?.to_str()?;
    is_hex64(hex).then(|| hex.to_string())
}

/// The entries of `dir`; `None` when it does not exist.
fn read_dir_if_present(dir: &Path) -> Result<Option<fs::ReadDir>, ImageError> {
    match fs::read_dir(dir) {
        Ok(e) => Ok(Some(e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ImageError::Io { context: format!("list {}", dir.display()), source: e }),
    }
}

/// `*.json` files of `dir`, without temp files; none when `dir` does not exist.
fn json_files(dir: &Path) -> Result<Vec<PathBuf>, ImageError> {
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

fn lease_path(root: &Path, container_id: &str) -> PathBuf {
    // Hashed, so any container id makes a safe file name; the id itself is inside.
    root.join(LEASES).join(format!(
        "{}.json",
        Digest::of(container_id.as_bytes()).hex()
    ))
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
        needed.extend(lease.layers.iter().filter_map(|d| digest_hex(d)));
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
                if let Some(b) = digest_hex(blob.trim()) {
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

/// Removes a path when dropped (the import's staging dir, on every exit path).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fsutil::remove_any(&self.0);
    }
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Writes an OCI layout at `layout` holding one image: `tarball` as its only layer.
fn write_rootfs_layout(
    tarball: &Path,
    layout: &Path,
    r: &ImageReference,
) -> Result<(), ImageError> {
    let what = || tarball.display().to_string();
    let mut head = [0u8; 512];
    let n = read_up_to(
        &mut File::open(tarball).ctx(|| format!("open {}", what()))?,
        &mut head,
    )
    .ctx(|| format!("read {}", what()))?;
    let gzip = head[..n].starts_with(&GZIP_MAGIC);
    if head[..n].starts_with(&ZSTD_MAGIC) {
        return Err(ImageError::Unsupported(format!(
            "{} is zstd-compressed; give a plain or gzip tar",
            what()
        )));
    }
    // POSIX and GNU tars say `ustar` at offset 257 of their first header.
    if !gzip && (n < 262 || &head[257..262] != b"ustar") {
        return Err(ImageError::InvalidImage {
            image: what(),
            reason: "not a tar archive (nor gzip)".to_string(),
        });
    }
    let hash = |reader: &mut dyn Read| -> Result<(Digest, u64), ImageError> {
        HashingReader::new(reader)
            .finish()
            .ctx(|| format!("read {}", what()))
    };
    let open = || File::open(tarball).ctx(|| format!("open {}", what()));
    let (blob_digest, blob_size) = hash(&mut BufReader::new(open()?))?;
    let diff_id = if gzip {
        hash(&mut flate2::read::GzDecoder::new(BufReader::new(open()?)))?.0
    } else {
        blob_digest.clone()
    };

    let blobs = layout.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).ctx(|| format!("create {}", blobs.display()))?;
    let blob_path = blobs.join(blob_digest.hex());
    // A link saves a copy when the tarball is on the store's filesystem.
    if fs::hard_link(tarball, &blob_path).is_err() {
        fs::copy(tarball, &blob_path)
            .ctx(|| format!("copy {} to {}", what(), blob_path.display()))?;
    }

    let config = ConfigFile {
        architecture: host_architecture().to_string(),
        os: "linux".to_string(),
        created: None,
        config: Some(RunConfig {
            env: Some(vec![DEFAULT_PATH_ENV.to_string()]),
            ..RunConfig::default()
        }),
        rootfs: RootFs {
            kind: "layers".to_string(),
            diff_ids: vec![diff_id.to_string()],
        },
        history: vec![History {
            created_by: Some(format!("mezzo image import {}", what())),
            ..History::default()
        }],
    };
    let config_bytes = json(&config)?;
    let config_digest = Digest::of(&config_bytes);
    write_atomic(&blobs.join(config_digest.hex()), &config_bytes)?;
    let descriptor = |media_type: &str, digest: &Digest, size: u64| Descriptor {
        media_type: media_type.to_string(),
        digest: digest.to_string(),
        size,
        annotations: None,
        platform: None,
    };
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_OCI_MANIFEST.to_string()),
        config: descriptor(
            MEDIA_TYPE_OCI_CONFIG,
            &config_digest,
            config_bytes.len() as u64,
        ),
        layers: vec![descriptor(
            if gzip {
                MEDIA_TYPE_OCI_LAYER_GZIP
            } else {
                MEDIA_TYPE_OCI_LAYER
            },
            &blob_digest,
            blob_size,
        )],
    };
    let manifest_bytes = json(&manifest)?;
    let manifest_digest = Digest::of(&manifest_bytes);
    write_atomic(&blobs.join(manifest_digest.hex()), &manifest_bytes)?;
    let mut entry = descriptor(
        MEDIA_TYPE_OCI_MANIFEST,
        &manifest_digest,
        manifest_bytes.len() as u64,
    );
    entry.annotations = Some(
        [
            (
                ANNOTATION_REF_NAME.to_string(),
                r.tag.clone().unwrap_or_default(),
            ),
            (ANNOTATION_CONTAINERD_NAME.to_string(), r.to_string()),
        ]
        .into(),
    );
    let index = Index {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_OCI_INDEX.to_string()),
        manifests: vec![entry],
    };
    write_atomic(
        &layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    write_atomic(&layout.join("index.json"), &json(&index)?)
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_up_to(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A layout document as JSON.
fn json<T: Serialize>(value: &T) -> Result<Vec<u8>, ImageError> {
    serde_json::to_vec(value).map_err(|source| ImageError::Json {
        context: "serialize image document".to_string(),
        source,
    })
}
