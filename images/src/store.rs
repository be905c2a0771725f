//! The image store: finds images in a registry or a local archive directory, puts their
//! blobs into the content store and unpacks each layer once into the layer cache.
//!
//! Layout under the store directory:
//! - `blobs/sha256/<hex>`: content store (configs, and layer blobs of archive imports;
//!   registry layer blobs are unpacked as they download and not kept), verified
//! - `layers/<diff id hex>/rootfs`: unpacked layers in overlay format
//! - `images/<hex>.json`: which config and layers a reference resolved to, and from which archive
//! - `archives/<hex>.tar`: docker archives made from OCI layouts for `docker load`

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use crate::build::{write_layout_archive, ArchiveBlob};
use crate::content::{remove_stale_temps, ContentStore};
use crate::digest::Digest;
use crate::error::{ImageError, IoContext};
use crate::fsutil::{self, write_atomic};
use crate::layer::{decompressed, unpack_layer, unpack_layer_stream};
use crate::locks::KeyedLocks;
use crate::registry::{ClientOptions, RegistryClient, RegistrySource, RemoteImage};
use crate::manifest::{
    ConfigFile, DockerArchiveEntry, Index, ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME,
    MEDIA_TYPE_OCI_INDEX,
};
use crate::reference::ImageReference;
use crate::source::{self, BlobRef, Resolved, Source};

/// How to run a container from an image (the parts of the image config a launcher needs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `KEY=value` environment.
    pub env: Vec<String>,
    /// Entrypoint argv.
    pub entrypoint: Option<Vec<String>>,
    /// Command argv (arguments to the entrypoint when there is one).
    pub cmd: Option<Vec<String>>,
    /// Working directory, when set.
    pub working_dir: Option<String>,
    /// `user[:group]`, when set.
    pub user: Option<String>,
}

impl From<&ConfigFile> for ImageConfig {
    fn from(file: &ConfigFile) -> Self {
        let run = file.config.clone().unwrap_or_default();
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        Self {
            env: run.env.unwrap_or_default(),
            entrypoint: run.entrypoint,
            cmd: run.cmd,
            working_dir: non_empty(run.working_dir),
            user: non_empty(run.user),
        }
    }
}

/// An image ready to be mounted.
#[derive(Debug, Clone)]
pub struct Image {
    /// The canonical reference (`docker.io/library/busybox:latest`).
    pub reference: String,
    /// Unpacked layer directories, bottom layer first.
    pub layers: Vec<PathBuf>,
    /// The image's run configuration.
    pub config: ImageConfig,
}

/// Counters of work the store has done, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Blobs copied into the content store or downloaded (registry layer blobs are
    /// unpacked as they arrive and not kept).
    pub blobs_imported: u64,
    /// Layers unpacked into the layer cache.
    pub layers_unpacked: u64,
}

/// How a store finds images; `Default` is a store that serves only what it already holds.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Where images come from (`--docker_registry`): a registry URL, which references
    /// without a registry host go to, or a local directory of image archives.
    pub registry: Option<RegistrySource>,
    /// Registry credentials in the `~/.docker/config.json` format (`--docker_config`).
    pub docker_config: Option<PathBuf>,
    /// Extra PEM root certificates for https registries.
    pub ca_cert: Option<PathBuf>,
    /// Reach registries named in references over http instead of https.
    pub insecure_http: bool,
    /// How many blobs download at once.
    pub max_parallel_downloads: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            registry: None,
            docker_config: None,
            ca_cert: None,
            insecure_http: false,
            // Enough for every layer of most images at once (layers unpack as they download).
            max_parallel_downloads: 8,
        }
    }
}

/// A content-addressed image store fed from a registry or a local directory of image archives.
#[derive(Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    archive_dir: Option<PathBuf>,
    registry: Option<RegistryClient>,
    /// Bounds the blob downloads of all pulls together.
    downloads: tokio::sync::Semaphore,
    content: ContentStore,
    locks: KeyedLocks,
    seq: AtomicU64,
    blobs_imported: AtomicU64,
    layers_unpacked: AtomicU64,
}

/// What `get` recorded about a reference, so the next `get` need not read the archive.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    reference: String,
    source: Option<PathBuf>,
    stamp: Option<Stamp>,
    config: String,
    diff_ids: Vec<String>,
    /// The manifest a registry served (absent in records of archive imports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    manifest: Option<String>,
}

/// Identifies one version of an archive file (or of a layout's `index.json`).
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    ino: u64,
    size: u64,
    mtime_ns: i64,
}

struct Plan {
    reference: ImageReference,
    source: Option<Source>,
    config_digest: Digest,
    config: ConfigFile,
    layers: Vec<(Digest, Option<BlobRef>)>,
}

impl ImageStore {
    /// Opens (creating) the store at `store_dir`; `archive_dir` is where image archives are
    /// looked up. Shorthand for [`ImageStore::open_with`] with a directory source.
    pub fn open(store_dir: PathBuf, archive_dir: Option<PathBuf>) -> Result<Self, ImageError> {
        Self::open_with(
            store_dir,
            StoreOptions {
                registry: archive_dir.map(RegistrySource::Directory),
                ..StoreOptions::default()
            },
        )
    }

    /// Opens (creating) the store at `store_dir` with images coming from
    /// `options.registry`. Temp files and directories of dead processes (partial
    /// downloads and unpacks) are removed; complete blobs and layers are kept.
    pub fn open_with(store_dir: PathBuf, options: StoreOptions) -> Result<Self, ImageError> {
        let (archive_dir, default_registry) = match options.registry {
            Some(RegistrySource::Directory(dir)) => (Some(dir), None),
            Some(RegistrySource::Url(url)) => (None, Some(url)),
            None => (None, None),
        };
        let registry = match default_registry {
            Some(url) => Some(RegistryClient::new(ClientOptions {
                default_registry: Some(url),
                docker_config: options.docker_config,
                ca_cert: options.ca_cert,
                insecure_http: options.insecure_http,
            })?),
            None => None,
        };
        for sub in ["layers", "images", "archives"] {
            let dir = store_dir.join(sub);
            fs::create_dir_all(&dir).ctx(|| format!("create {}", dir.display()))?;
        }
        let content = ContentStore::open(store_dir.join("blobs"))?;
        content.remove_stale_temps();
        for sub in ["layers", "images", "archives"] {
            remove_stale_temps(&store_dir.join(sub));
        }
        crate::gc::finish_interrupted(&store_dir);
        Ok(Self {
            inner: Arc::new(Inner {
                root: store_dir,
                archive_dir,
                registry,
                downloads: tokio::sync::Semaphore::new(options.max_parallel_downloads.max(1)),
                content,
                locks: KeyedLocks::default(),
                seq: AtomicU64::new(0),
                blobs_imported: AtomicU64::new(0),
                layers_unpacked: AtomicU64::new(0),
            }),
        })
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The directory image archives are looked up in.
    pub fn archive_dir(&self) -> Option<&Path> {
        self.inner.archive_dir.as_deref()
    }

    /// Work done so far by this store handle.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            blobs_imported: self.inner.blobs_imported.load(Ordering::Relaxed),
            layers_unpacked: self.inner.layers_unpacked.load(Ordering::Relaxed),
        }
    }

    /// Finds `reference`, imports and unpacks what is not cached yet, and returns its layers
    /// and config. Concurrent calls for one image, or images sharing layers, do each piece of work once.
    ///
    /// With a registry URL, an image the store holds whole is served without asking the
    /// registry (as Mesos's store does); otherwise it is pulled.
    pub async fn get(&self, reference: &str) -> Result<Image, ImageError> {
        let r = ImageReference::parse(reference)?;
        // Held shared while provisioning, so a collection (exclusive) never removes what this needs.
        let _store_lock = crate::store_lock::StoreLock::shared(&self.inner.root).await?;
        let _image_guard = self.inner.locks.lock(&format!("image:{r}")).await;
        if self.inner.registry.is_some() {
            let inner = self.inner.clone();
            let key = r.clone();
            if let Some(image) = blocking(move || inner.cached(key)).await? {
                return Ok(image);
            }
            return self.pull_locked(r).await;
        }

        let inner = self.inner.clone();
        let plan = blocking(move || inner.plan(r)).await?;

        // Lock the layers this image still lacks, in sorted order so two images never
        // wait on each other.
        let missing: BTreeSet<String> = plan
            .layers
            .iter()
            .filter(|(diff_id, _)| !self.inner.layer_dir(diff_id).exists())
            .map(|(diff_id, _)| diff_id.hex().to_string())
            .collect();
        let mut guards = Vec::with_capacity(missing.len());
        for hex in &missing {
            guards.push(self.inner.locks.lock(&format!("layer:{hex}")).await);
        }
        let inner = self.inner.clone();
        let image = blocking(move || inner.complete(plan)).await;
        drop(guards);
        image
    }

    /// Asks the registry what `reference` names now (a tag may have moved), downloads and
    /// unpacks what the store lacks, and returns the image. A store without a registry URL
    /// re-reads its archive directory, as [`ImageStore::get`] does.
    pub async fn pull(&self, reference: &str) -> Result<Image, ImageError> {
        if self.inner.registry.is_none() {
            return self.get(reference).await;
        }
        let r = ImageReference::parse(reference)?;
        let _store_lock = crate::store_lock::StoreLock::shared(&self.inner.root).await?;
        let _image_guard = self.inner.locks.lock(&format!("image:{r}")).await;
        self.pull_locked(r).await
    }

    /// Resolves `r` at the registry and fetches what is missing; the caller holds the image lock.
    async fn pull_locked(&self, r: ImageReference) -> Result<Image, ImageError> {
        let client = self
            .inner
            .registry
            .as_ref()
            .ok_or_else(|| self.inner.not_found(&r))?;
        let remote = client.resolve(&r).await?;
        info!(image = %r, manifest = %remote.manifest_digest, layers = remote.layers.len(), "pulling image");
        let config_digest = Digest::parse(&remote.config.digest)?;
        if !self.inner.content.has(&config_digest) {
            let _blob_guard = self
                .inner
                .locks
                .lock(&format!("blob:{}", config_digest.hex()))
                .await;
            if !self.inner.content.has(&config_digest) {
                client
                    .fetch_blob(&remote, &config_digest, Some(remote.config.size), &self.inner.content)
                    .await?;
                self.inner.blobs_imported.fetch_add(1, Ordering::Relaxed);
            }
        }
        let inner = self.inner.clone();
        let (key, digest) = (r.clone(), config_digest.clone());
        let config = blocking(move || {
            let bytes = fs::read(inner.content.path(&digest))
                .ctx(|| format!("read config {digest}"))?;
            inner.parse_config(&key, &bytes)
        })
        .await?;
        check_layer_count(&r, &config, remote.layers.len())?;
        let diff_ids = config
            .rootfs
            .diff_ids
            .iter()
            .map(|d| Digest::parse(d))
            .collect::<Result<Vec<_>, _>>()?;
        // Every layer downloads (bounded by the semaphore) and unpacks as soon as its own
        // blob is in. All run to their end even when one fails: what completes is kept
        // for the next try, and no unpack outlives this call.
        let image_name = r.short_name();
        let results = futures::future::join_all(diff_ids.iter().zip(&remote.layers).map(
            |(diff_id, desc)| self.ensure_remote_layer(client, &remote, diff_id, desc, &image_name),
        ))
        .await;
        results.into_iter().collect::<Result<Vec<()>, _>>()?;

        let record = Record {
            reference: r.to_string(),
            source: None,
            stamp: None,
            config: config_digest.to_string(),
            diff_ids: diff_ids.iter().map(ToString::to_string).collect(),
            manifest: Some(remote.manifest_digest.to_string()),
        };
        let inner = self.inner.clone();
        let key = r.clone();
        blocking(move || inner.write_record(&key, &record)).await?;
        Ok(Image {
            reference: r.to_string(),
            layers: diff_ids
                .iter()
                .map(|d| self.inner.layer_dir(d).join("rootfs"))
                .collect(),
            config: ImageConfig::from(&config),
        })
    }

    /// Downloads (unless the blob is stored) and unpacks one layer, once however many pulls ask.
    async fn ensure_remote_layer(
        &self,
        client: &RegistryClient,
        remote: &RemoteImage,
        diff_id: &Digest,
        desc: &crate::manifest::Descriptor,
        image_name: &str,
    ) -> Result<(), ImageError> {
        let dir = self.inner.layer_dir(diff_id);
        if dir.exists() {
            return Ok(());
        }
        let layer_guard = self
            .inner
            .locks
            .lock(&format!("layer:{}", diff_id.hex()))
            .await;
        if dir.exists() {
            return Ok(());
        }
        let blob = Digest::parse(&desc.digest)?;
        let inner = self.inner.clone();
        let (diff_id, image_name) = (diff_id.clone(), image_name.to_string());
        if self.inner.content.has(&blob) {
            // Stored already (an archive import of the same blob): unpack from disk.
            // The lock moves into the unpack: a cancelled caller cannot let a second
            // unpack of this layer start while the first still runs.
            return blocking(move || {
                let _layer_guard = layer_guard;
                inner.install_layer(&diff_id, &blob, &image_name)
            })
            .await;
        }
        let _permit = self
            .inner
            .downloads
            .acquire()
            .await
            .map_err(|e| ImageError::Task(e.to_string()))?;
        // One pass: the body is hashed and unpacked into a private temp dir as it
        // arrives. The compressed blob itself is not kept (the layer dir is what every
        // later use reads); the temp dir becomes the layer only after the whole blob
        // hashed to its digest, and is removed otherwise.
        let staged = {
            let (inner, diff_id, digest) = (inner.clone(), diff_id.clone(), blob.clone());
            client
                .fetch_blob_streamed(remote, &blob, Some(desc.size), move |stream| {
                    let staged = inner.stage_layer()?;
                    let reader = decompressed(stream)
                        .ctx(|| format!("start reading layer blob {digest}"))?;
                    unpack_layer_stream(reader, &staged.rootfs(), &diff_id)?;
                    staged.seal(&digest)?;
                    Ok(staged)
                })
                .await?
        };
        self.inner.blobs_imported.fetch_add(1, Ordering::Relaxed);
        blocking(move || {
            let _layer_guard = layer_guard;
            inner.publish_layer(staged, &diff_id, &image_name)
        })
        .await
    }

    /// The `docker save` archive holding `reference`, for `docker load`. An image found
    /// only as an OCI layout directory is written out as an archive in the store first.
    pub fn archive_path(&self, reference: &str) -> Result<PathBuf, ImageError> {
        let r = ImageReference::parse(reference)?;
        let dir = self
            .inner
            .archive_dir
            .as_deref()
            .ok_or_else(|| self.inner.not_found(&r))?;
        for candidate in source::candidates(dir, &r) {
            let Some(src) = Source::open(&candidate.path)? else {
                continue;
            };
            let Some(resolved) = src.resolve(&r, candidate.names_tag)? else {
                continue;
            };
            if src.is_tar() {
                return Ok(candidate.path);
            }
            return self.inner.export_docker_archive(&r, &src, &resolved);
        }
        Err(self.inner.not_found(&r))
    }
}

/// A manifest and its config must name the same number of layers.
fn check_layer_count(image: &ImageReference, config: &ConfigFile, layers: usize) -> Result<(), ImageError> {
    let diff_ids = config.rootfs.diff_ids.len();
    if diff_ids == layers {
        return Ok(());
    }
    Err(ImageError::InvalidImage {
        image: image.short_name(),
        reason: format!("manifest has {layers} layers but config has {diff_ids} diff ids"),
    })
}

pub(crate) async fn blocking<T, F>(f: F) -> Result<T, ImageError>
where
    F: FnOnce() -> Result<T, ImageError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ImageError::Task(e.to_string()))?
}

impl Inner {
    fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

    fn record_path(&self, r: &ImageReference) -> PathBuf {
        self.root.join("images").join(format!(
            "{}.json",
            Digest::of(r.to_string().as_bytes()).hex()
        ))
    }

    fn not_found(&self, r: &ImageReference) -> ImageError {
        ImageError::NotFound {
            image: r.short_name(),
            location: match &self.archive_dir {
                Some(dir) => dir.display().to_string(),
                None => "the image store (no image archive directory is configured)".to_string(),
            },
        }
    }

    fn read_record(&self, r: &ImageReference) -> Option<Record> {
        let bytes = fs::read(self.record_path(r)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Whether everything a record names is still in the store.
    fn record_complete(&self, record: &Record) -> bool {
        Digest::parse(&record.config).is_ok_and(|d| self.content.has(&d))
            && record
                .diff_ids
                .iter()
                .all(|d| Digest::parse(d).is_ok_and(|d| self.layer_dir(&d).exists()))
    }

    /// Decides where the image comes from: the record when the archive it came from is
    /// unchanged, else the archive directory, else (archive gone) what the store holds.
    fn plan(&self, r: ImageReference) -> Result<Plan, ImageError> {
        let record = self.read_record(&r).filter(|rec| self.record_complete(rec));
        if let Some(dir) = &self.archive_dir {
            if let Some(rec) = &record {
                let first_present = source::candidates(dir, &r)
                    .into_iter()
                    .map(|c| c.path)
                    .find(|p| p.is_file() || p.join("index.json").is_file());
                if first_present.is_some()
                    && first_present == rec.source
                    && rec.source.as_deref().and_then(stamp) == rec.stamp
                {
                    debug!(image = %r, "archive unchanged since last import");
                    return self.plan_from_record(r, rec);
                }
            }
            if let Some((src, resolved)) = source::find(dir, &r)? {
                return self.plan_from_source(r, src, resolved);
            }
        }
        match record {
            Some(rec) => self.plan_from_record(r, &rec),
            None => Err(self.not_found(&r)),
        }
    }

    fn plan_from_record(
        &self,
        reference: ImageReference,
        rec: &Record,
    ) -> Result<Plan, ImageError> {
        let config_digest = Digest::parse(&rec.config)?;
        let config = self.parse_config(
            &reference,
            &fs::read(self.content.path(&config_digest))
                .ctx(|| format!("read config {config_digest}"))?,
        )?;
        let layers = rec
            .diff_ids
            .iter()
            .map(|d| Digest::parse(d).map(|d| (d, None)))
            .collect::<Result<_, _>>()?;
        Ok(Plan {
            reference,
            source: None,
            config_digest,
            config,
            layers,
        })
    }

    fn plan_from_source(
        &self,
        reference: ImageReference,
        src: Source,
        resolved: Resolved,
    ) -> Result<Plan, ImageError> {
        info!(image = %reference, archive = %src.path.display(), "importing image");
        let bytes = src.read_member(&resolved.config.member)?;
        let what = format!(
            "config of {} in {}",
            reference.short_name(),
            src.path.display()
        );
        let config_digest =
            self.content
                .ingest_bytes(&bytes, resolved.config.digest.as_ref(), &what)?;
        let config = self.parse_config(&reference, &bytes)?;
        check_layer_count(&reference, &config, resolved.layers.len())?;
        let layers = config
            .rootfs
            .diff_ids
            .iter()
            .zip(resolved.layers)
            .map(|(d, blob)| Digest::parse(d).map(|d| (d, Some(blob))))
            .collect::<Result<_, _>>()?;
        Ok(Plan {
            reference,
            source: Some(src),
            config_digest,
            config,
            layers,
        })
    }

    fn parse_config(&self, r: &ImageReference, bytes: &[u8]) -> Result<ConfigFile, ImageError> {
        serde_json::from_slice(bytes).map_err(|source| ImageError::Json {
            context: format!("parse image config of {}", r.short_name()),
            source,
        })
    }

    /// The image as the store holds it, when its record names only things still present.
    fn cached(&self, r: ImageReference) -> Result<Option<Image>, ImageError> {
        let Some(record) = self.read_record(&r).filter(|rec| self.record_complete(rec)) else {
            return Ok(None);
        };
        let plan = self.plan_from_record(r, &record)?;
        self.complete(plan).map(Some)
    }

    /// Writes the record of `r` atomically.
    fn write_record(&self, r: &ImageReference, record: &Record) -> Result<(), ImageError> {
        let bytes = serde_json::to_vec_pretty(record).map_err(|source| ImageError::Json {
            context: "serialize image record".to_string(),
            source,
        })?;
        write_atomic(&self.record_path(r), &bytes)
    }

    /// Unpacks missing layers (the caller holds their locks), records the image, returns it.
    fn complete(&self, plan: Plan) -> Result<Image, ImageError> {
        for (diff_id, blob) in &plan.layers {
            self.ensure_layer(&plan, diff_id, blob.as_ref())?;
        }
        let record = Record {
            reference: plan.reference.to_string(),
            source: plan.source.as_ref().map(|s| s.path.clone()),
            stamp: plan.source.as_ref().and_then(|s| stamp(&s.path)),
            config: plan.config_digest.to_string(),
            diff_ids: plan.layers.iter().map(|(d, _)| d.to_string()).collect(),
            manifest: None,
        };
        if plan.source.is_some() {
            self.write_record(&plan.reference, &record)?;
        } else {
            // The record's mtime is the image's last use, which GC's keep_recent reads.
            crate::gc::mark_used(&self.record_path(&plan.reference));
        }
        Ok(Image {
            reference: plan.reference.to_string(),
            layers: plan
                .layers
                .iter()
                .map(|(d, _)| self.layer_dir(d).join("rootfs"))
                .collect(),
            config: ImageConfig::from(&plan.config),
        })
    }

    fn ensure_layer(
        &self,
        plan: &Plan,
        diff_id: &Digest,
        blob: Option<&BlobRef>,
    ) -> Result<(), ImageError> {
        let dir = self.layer_dir(diff_id);
        if dir.exists() {
            return Ok(());
        }
        let (Some(src), Some(blob)) = (plan.source.as_ref(), blob) else {
            return Err(ImageError::InvalidImage {
                image: plan.reference.short_name(),
                reason: format!("layer {diff_id} left the store while in use"),
            });
        };
        let digest = match &blob.digest {
            Some(d) if self.content.has(d) => d.clone(),
            expected => {
                let (mut reader, _) = src.open_member(&blob.member)?;
                let what = format!("layer blob '{}' in {}", blob.member, src.path.display());
                let digest = self.content.ingest(&mut reader, expected.as_ref(), &what)?;
                self.blobs_imported.fetch_add(1, Ordering::Relaxed);
                digest
            }
        };
        self.install_layer(diff_id, &digest, &plan.reference.short_name())
    }

    /// Unpacks stored blob `digest` into the layer cache as `diff_id`: into a temp dir,
    /// synced, then renamed, so a layer dir is either whole or absent.
    fn install_layer(
        &self,
        diff_id: &Digest,
        digest: &Digest,
        image: &str,
    ) -> Result<(), ImageError> {
        let staged = self.stage_layer()?;
        unpack_layer(&self.content.path(digest), &staged.rootfs(), diff_id)?;
        staged.seal(digest)?;
        self.publish_layer(staged, diff_id, image)
    }

    /// A fresh private temp dir under `layers/` to unpack a layer into.
    fn stage_layer(&self) -> Result<StagedLayer, ImageError> {
        let tmp = self.root.join("layers").join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&tmp).ctx(|| format!("create {}", tmp.display()))?;
        Ok(StagedLayer { tmp })
    }

    /// Renames a sealed staged layer into place as `diff_id`.
    fn publish_layer(
        &self,
        mut staged: StagedLayer,
        diff_id: &Digest,
        image: &str,
    ) -> Result<(), ImageError> {
        let dir = self.layer_dir(diff_id);
        match fs::rename(&staged.tmp, &dir) {
            Ok(()) => {
                // Renamed: nothing left for Drop to remove.
                staged.tmp = PathBuf::new();
                self.layers_unpacked.fetch_add(1, Ordering::Relaxed);
                info!(layer = %diff_id, %image, "unpacked layer");
                Ok(())
            }
            // Another process finished the same layer first; keep theirs (Drop removes ours).
            Err(_) if dir.exists() => Ok(()),
            Err(e) => Err(ImageError::Io {
                context: format!("rename {} to {}", staged.tmp.display(), dir.display()),
                source: e,
            }),
        }
    }

    /// Writes an OCI layout's image as a docker archive under `archives/`, named by its
    /// manifest digest, so `docker load` can take it.
    fn export_docker_archive(
        &self,
        r: &ImageReference,
        src: &Source,
        resolved: &Resolved,
    ) -> Result<PathBuf, ImageError> {
        let name = resolved
            .manifest_digest
            .clone()
            .or_else(|| resolved.config.digest.clone())
            .ok_or_else(|| ImageError::InvalidImage {
                image: r.short_name(),
                reason: "layout image has no digest".to_string(),
            })?;
        let out = self
            .root
            .join("archives")
            .join(format!("{}.tar", name.hex()));
        if out.is_file() {
            return Ok(out);
        }
        let mut blobs = Vec::new();
        let mut add = |blob: &BlobRef| -> Result<Digest, ImageError> {
            let digest = blob
                .digest
                .clone()
                .ok_or_else(|| ImageError::InvalidImage {
                    image: r.short_name(),
                    reason: format!("blob '{}' has no digest", blob.member),
                })?;
            let (reader, size) = src.open_member(&blob.member)?;
            blobs.push(ArchiveBlob {
                digest: digest.clone(),
                size,
                reader,
            });
            Ok(digest)
        };
        let config = add(&resolved.config)?;
        let layers = resolved
            .layers
            .iter()
            .map(&mut add)
            .collect::<Result<Vec<_>, _>>()?;
        let mut manifests = Vec::new();
        if let Some(manifest) = &resolved.manifest_digest {
            let bytes = src.read_member(&format!("blobs/sha256/{}", manifest.hex()))?;
            let mut descriptor = crate::manifest::Descriptor {
                media_type: crate::manifest::MEDIA_TYPE_OCI_MANIFEST.to_string(),
                digest: manifest.to_string(),
                size: bytes.len() as u64,
                annotations: None,
                platform: None,
            };
            if let Some(tag) = &r.tag {
                descriptor.annotations = Some(
                    [
                        (ANNOTATION_REF_NAME.to_string(), tag.clone()),
                        (ANNOTATION_CONTAINERD_NAME.to_string(), r.to_string()),
                    ]
                    .into(),
                );
            }
            manifests.push(descriptor);
            add(&BlobRef {
                member: format!("blobs/sha256/{}", manifest.hex()),
                digest: Some(manifest.clone()),
            })?;
        }
        let entry = DockerArchiveEntry {
            config: format!("blobs/sha256/{}", config.hex()),
            repo_tags: r
                .tag
                .as_ref()
                .map(|t| vec![format!("{}:{t}", r.familiar_name())]),
            layers: layers
                .iter()
                .map(|d| format!("blobs/sha256/{}", d.hex()))
                .collect(),
        };
        let index = Index {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_OCI_INDEX.to_string()),
            manifests,
        };
        write_layout_archive(&out, &index, Some(&[entry]), blobs, 0)?;
        info!(image = %r, archive = %out.display(), "wrote docker archive from OCI layout");
        Ok(out)
    }
}

/// A layer being unpacked into a private temp dir under `layers/`; the dir is removed
/// when this is dropped unpublished (failed unpack, digest mismatch, cancelled pull).
struct StagedLayer {
    tmp: PathBuf,
}

impl StagedLayer {
    /// Where the layer's files go.
    fn rootfs(&self) -> PathBuf {
        self.tmp.join("rootfs")
    }

    /// Records the blob the layer came from (GC keeps that blob with the layer) and
    /// makes the whole dir durable, so after a crash a published layer is whole.
    fn seal(&self, blob: &Digest) -> Result<(), ImageError> {
        fs::write(self.tmp.join("blob"), blob.as_str())
            .ctx(|| format!("write {}", self.tmp.display()))?;
        // One syncfs for the layer, not an fsync per file: a layer of many small files
        // costs one journal commit.
        fsutil::syncfs(&self.tmp).ctx(|| format!("sync {}", self.tmp.display()))
    }
}

impl Drop for StagedLayer {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = fsutil::remove_any(&self.tmp);
        }
    }
}

/// The identity of an archive's current version; for a layout, of its `index.json`.
fn stamp(path: &Path) -> Option<Stamp> {
    let meta = fs::metadata(path).ok()?;
    let meta = if meta.is_dir() {
        fs::metadata(path.join("index.json")).ok()?
    } else {
        meta
    };
    Some(Stamp {
        ino: meta.ino(),
        size: meta.size(),
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
    })
}
