//! Building images: small images from directories, written as an OCI layout or a
//! `docker save` archive (used by `mezzo-build-image` for the project's test images and
//! by tests; blobs are held in memory, so it is meant for small images), and the import
//! of a root filesystem tarball into the store as a one-layer image
//! ([`ImageStore::import_rootfs`]).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::info;

use crate::digest::{verify, Digest, HashingReader};
use crate::error::{ImageError, IoContext};
use crate::fsutil::{self, with_temp_file, write_atomic};
use crate::manifest::{
    host_architecture, ConfigFile, Descriptor, DockerArchiveEntry, History, Index, Manifest,
    RootFs, RunConfig, ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME, MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_LAYER, MEDIA_TYPE_OCI_LAYER_GZIP, MEDIA_TYPE_OCI_MANIFEST,
};
use crate::reference::ImageReference;
use crate::store::{blocking, Image, ImageStore};

/// The `PATH` every image gets unless told otherwise.
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to put in an image's config.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// The image's name and tag, e.g. `busybox:latest`.
    pub name: String,
    /// `KEY=value` environment.
    pub env: Vec<String>,
    /// Entrypoint argv.
    pub entrypoint: Option<Vec<String>>,
    /// Command argv.
    pub cmd: Option<Vec<String>>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// `user[:group]`.
    pub user: Option<String>,
    /// Creation time (seconds since the epoch), also every file's mtime: fixed, so builds are reproducible.
    pub created: u64,
    /// Gzip the layer blobs.
    pub gzip: bool,
}

impl ImageSpec {
    /// A spec with PATH set, `Cmd ["sh"]`, created at the epoch, uncompressed layers.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            env: vec![DEFAULT_PATH_ENV.to_string()],
            entrypoint: None,
            cmd: Some(vec!["sh".to_string()]),
            working_dir: None,
            user: None,
            created: 0,
            gzip: false,
        }
    }
}

/// One blob of a built image.
#[derive(Debug, Clone)]
pub struct Blob {
    /// Its digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Its bytes.
    pub data: Vec<u8>,
}

impl Blob {
    fn new(media_type: &str, data: Vec<u8>) -> Self {
        Self {
            digest: Digest::of(&data),
            media_type: media_type.to_string(),
            data,
        }
    }

    fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.to_string(),
            size: self.data.len() as u64,
            annotations: None,
            platform: None,
        }
    }
}

/// How an image is laid out in a tar file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// What current `docker save` writes: an OCI layout plus `manifest.json`; `docker load` reads it.
    Docker,
    /// What `docker save` wrote before version 25: `<id>/layer.tar`, `<config hex>.json`, `manifest.json`, `repositories`.
    DockerLegacy,
    /// An OCI layout in a tar with no `manifest.json` (`skopeo copy ... oci-archive:`).
    OciArchive,
}

/// A built image: config, manifest and layers, ready to be written out.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// The image's name.
    pub reference: ImageReference,
    /// The config blob.
    pub config: Blob,
    /// The OCI manifest blob.
    pub manifest: Blob,
    /// Layer blobs, bottom first.
    pub layers: Vec<Blob>,
    /// Uncompressed digests of the layers.
    pub diff_ids: Vec<Digest>,
}

/// Packs `dir` as a layer tar: entries sorted, owners and modes kept, every mtime set to
/// `mtime`, hardlinks preserved. Files named `.wh.*` go in as is, which is how a layer
/// says "delete" (and `.wh..wh..opq` "opaque directory").
pub fn layer_tar_from_dir(dir: &Path, mtime: u64) -> Result<Vec<u8>, ImageError> {
    let mut paths = Vec::new();
    walk_sorted(dir, Path::new(""), &mut paths)?;
    let mut builder = tar::Builder::new(Vec::new());
    let mut inodes: HashMap<(u64, u64), PathBuf> = HashMap::new();
    for rel in paths {
        let full = dir.join(&rel);
        let meta = fs::symlink_metadata(&full).ctx(|| format!("inspect {}", full.display()))?;
        let ft = meta.file_type();
        let mut header = tar::Header::new_gnu();
        header.set_mode(meta.mode() & 0o7777);
        header.set_uid(meta.uid().into());
        header.set_gid(meta.gid().into());
        header.set_mtime(mtime);
        header.set_size(0);
        let fail = |e: io::Error| ImageError::Io {
            context: format!("add {} to layer", full.display()),
            source: e,
        };
        if ft.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            builder
                .append_data(&mut header, &rel, io::empty())
                .map_err(fail)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&full).ctx(|| format!("read link {}", full.display()))?;
            header.set_entry_type(tar::EntryType::Symlink);
            builder
                .append_link(&mut header, &rel, &target)
                .map_err(fail)?;
        } else if ft.is_file() {
            let key = (meta.dev(), meta.ino());
            if meta.nlink() > 1 {
                if let Some(first) = inodes.get(&key) {
                    header.set_entry_type(tar::EntryType::Link);
                    builder
                        .append_link(&mut header, &rel, first)
                        .map_err(fail)?;
                    continue;
                }
                inodes.insert(key, rel.clone());
            }
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.len());
            let file = File::open(&full).ctx(|| format!("open {}", full.display()))?;
            builder.append_data(&mut header, &rel, file).map_err(fail)?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            header.set_entry_type(if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else {
                tar::EntryType::Fifo
            });
            let rdev = meta.rdev();
            header.set_device_major(libc::major(rdev)).map_err(fail)?;
            header.set_device_minor(libc::minor(rdev)).map_err(fail)?;
            builder
                .append_data(&mut header, &rel, io::empty())
                .map_err(fail)?;
        }
        // sockets cannot be archived and are skipped
    }
    builder
        .into_inner()
        .ctx(|| format!("finish layer tar of {}", dir.display()))
}

fn walk_sorted(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<(), ImageError> {
    let dir = root.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .ctx(|| format!("read directory {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .ctx(|| format!("read directory {}", dir.display()))?;
    names.sort();
    for name in names {
        let child = rel.join(&name);
        let is_dir = fs::symlink_metadata(root.join(&child))
            .ctx(|| format!("inspect {}", root.join(&child).display()))?
            .is_dir();
        out.push(child.clone());
        if is_dir {
            walk_sorted(root, &child, out)?;
        }
    }
    Ok(())
}

/// Formats seconds since the epoch as RFC 3339 UTC.
pub(crate) fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Assembles an image from uncompressed layer tars (bottom first).
pub fn build_image(spec: &ImageSpec, layer_tars: Vec<Vec<u8>>) -> Result<BuiltImage, ImageError> {
    let reference = ImageReference::parse(&spec.name)?;
    if reference.tag.is_none() {
        return Err(ImageError::InvalidReference {
            reference: spec.name.clone(),
            reason: "an image to build needs a tag".to_string(),
        });
    }
    let created = rfc3339(spec.created);
    let mut diff_ids = Vec::new();
    let mut layers = Vec::new();
    for tar in layer_tars {
        diff_ids.push(Digest::of(&tar));
        layers.push(if spec.gzip {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(&tar).ctx(|| "compress layer".to_string())?;
            Blob::new(
                MEDIA_TYPE_OCI_LAYER_GZIP,
                enc.finish().ctx(|| "compress layer".to_string())?,
            )
        } else {
            Blob::new(MEDIA_TYPE_OCI_LAYER, tar)
        });
    }
    let config = ConfigFile {
        architecture: host_architecture().to_string(),
        os: "linux".to_string(),
        created: Some(created.clone()),
        config: Some(RunConfig {
            env: Some(spec.env.clone()),
            entrypoint: spec.entrypoint.clone(),
            cmd: spec.cmd.clone(),
            working_dir: spec.working_dir.clone(),
            user: spec.user.clone(),
        }),
        rootfs: RootFs {
            kind: "layers".to_string(),
            diff_ids: diff_ids.iter().map(ToString::to_string).collect(),
        },
        history: (0..layers.len())
            .map(|i| History {
                created: Some(created.clone()),
                created_by: Some(format!("mezzo-build-image (layer {})", i + 1)),
                comment: None,
                empty_layer: false,
            })
            .collect(),
    };
    let config = Blob::new(MEDIA_TYPE_OCI_CONFIG, to_json(&config)?);
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_OCI_MANIFEST.to_string()),
        config: config.descriptor(),
        layers: layers.iter().map(Blob::descriptor).collect(),
    };
    let manifest = Blob::new(MEDIA_TYPE_OCI_MANIFEST, to_json(&manifest)?);
    Ok(BuiltImage {
        reference,
        config,
        manifest,
        layers,
        diff_ids,
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ImageError> {
    serde_json::to_vec(value).map_err(|source| ImageError::Json {
        context: "serialize image document".to_string(),
        source,
    })
}

impl BuiltImage {
    /// The tag, e.g. `latest`.
    pub fn tag(&self) -> &str {
        self.reference.tag.as_deref().unwrap_or("latest")
    }

    fn index_descriptor(&self) -> Descriptor {
        let mut d = self.manifest.descriptor();
        d.annotations = Some(BTreeMap::from([
            (ANNOTATION_REF_NAME.to_string(), self.tag().to_string()),
            (
                ANNOTATION_CONTAINERD_NAME.to_string(),
                self.reference.to_string(),
            ),
        ]));
        d
    }

    fn all_blobs(&self) -> impl Iterator<Item = &Blob> {
        [&self.config, &self.manifest]
            .into_iter()
            .chain(self.layers.iter())
    }

    /// Writes (or adds to) an OCI image layout at `dir`; the index entry carries the tag
    /// as `org.opencontainers.image.ref.name` and replaces an older entry with that tag.
    pub fn write_oci_layout(&self, dir: &Path) -> Result<(), ImageError> {
        let blobs = dir.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).ctx(|| format!("create {}", blobs.display()))?;
        for blob in self.all_blobs() {
            let path = blobs.join(blob.digest.hex());
            if !path.is_file() {
                write_atomic(&path, &blob.data)?;
            }
        }
        write_atomic(
            &dir.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        let index_path = dir.join("index.json");
        let mut index = match fs::read(&index_path) {
            Ok(bytes) => {
                serde_json::from_slice::<Index>(&bytes).map_err(|source| ImageError::Json {
                    context: format!("parse {}", index_path.display()),
                    source,
                })?
            }
            Err(_) => Index {
                schema_version: 2,
                media_type: Some(MEDIA_TYPE_OCI_INDEX.to_string()),
                manifests: Vec::new(),
            },
        };
        index
            .manifests
            .retain(|d| d.annotation(ANNOTATION_REF_NAME) != Some(self.tag()));
        index.manifests.push(self.index_descriptor());
        write_atomic(&index_path, &to_json(&index)?)
    }

    /// Writes the image as a tar archive at `path` (atomically: temp file and rename).
    pub fn write_archive(&self, path: &Path, format: ArchiveFormat) -> Result<(), ImageError> {
        let mtime = 0;
        let repo_tags = vec![format!("{}:{}", self.reference.familiar_name(), self.tag())];
        match format {
            ArchiveFormat::Docker | ArchiveFormat::OciArchive => {
                let blobs: Vec<ArchiveBlob<'_>> = self
                    .all_blobs()
                    .map(|b| ArchiveBlob {
                        digest: b.digest.clone(),
                        size: b.data.len() as u64,
                        reader: Box::new(&b.data[..]),
                    })
                    .collect();
                let index = Index {
                    schema_version: 2,
                    media_type: Some(MEDIA_TYPE_OCI_INDEX.to_string()),
                    manifests: vec![self.index_descriptor()],
                };
                let manifest_json = (format == ArchiveFormat::Docker).then(|| {
                    vec![DockerArchiveEntry {
                        config: format!("blobs/sha256/{}", self.config.digest.hex()),
                        repo_tags: Some(repo_tags.clone()),
                        layers: self
                            .layers
                            .iter()
                            .map(|l| format!("blobs/sha256/{}", l.digest.hex()))
                            .collect(),
                    }]
                });
                write_layout_archive(path, &index, manifest_json.as_deref(), blobs, mtime)
            }
            ArchiveFormat::DockerLegacy => with_temp_file(path, |file| {
                let mut tar = tar::Builder::new(file);
                let mut parent: Option<String> = None;
                let mut layer_paths = Vec::new();
                for (blob, diff_id) in self.layers.iter().zip(&self.diff_ids) {
                    // v1 layer ids chain the parent's id, as docker's were.
                    let id = Digest::of(
                        format!("{}{}", parent.as_deref().unwrap_or(""), diff_id).as_bytes(),
                    );
                    let id = id.hex().to_string();
                    let v1 = serde_json::json!({"id": id, "parent": parent, "created": rfc3339(0)});
                    append_bytes(&mut tar, &format!("{id}/VERSION"), b"1.0", mtime)?;
                    append_bytes(&mut tar, &format!("{id}/json"), &to_json(&v1)?, mtime)?;
                    append_bytes(&mut tar, &format!("{id}/layer.tar"), &blob.data, mtime)?;
                    layer_paths.push(format!("{id}/layer.tar"));
                    parent = Some(id);
                }
                let config_name = format!("{}.json", self.config.digest.hex());
                append_bytes(&mut tar, &config_name, &self.config.data, mtime)?;
                let manifest = vec![DockerArchiveEntry {
                    config: config_name,
                    repo_tags: Some(repo_tags.clone()),
                    layers: layer_paths,
                }];
                append_bytes(&mut tar, "manifest.json", &to_json(&manifest)?, mtime)?;
                let repositories = serde_json::json!({
                    self.reference.familiar_name(): { self.tag(): parent.unwrap_or_default() }
                });
                append_bytes(&mut tar, "repositories", &to_json(&repositories)?, mtime)?;
                tar.into_inner()
                    .ctx(|| format!("finish {}", path.display()))
            }),
        }
    }
}

/// A blob to put in an archive, streamed and checked on the way.
pub(crate) struct ArchiveBlob<'a> {
    pub digest: Digest,
    pub size: u64,
    pub reader: Box<dyn Read + 'a>,
}

/// Writes an OCI layout as a tar (with `manifest.json` for docker when given), atomically.
pub(crate) fn write_layout_archive(
    path: &Path,
    index: &Index,
    manifest_json: Option<&[DockerArchiveEntry]>,
    blobs: Vec<ArchiveBlob<'_>>,
    mtime: u64,
) -> Result<(), ImageError> {
    with_temp_file(path, |file| {
        let mut tar = tar::Builder::new(file);
        append_dir(&mut tar, "blobs", mtime)?;
        append_dir(&mut tar, "blobs/sha256", mtime)?;
        let mut seen = Vec::new();
        for blob in blobs {
            if seen.contains(&blob.digest) {
                continue;
            }
            let name = format!("blobs/sha256/{}", blob.digest.hex());
            let mut reader = HashingReader::new(blob.reader);
            let mut header = file_header(blob.size, mtime);
            tar.append_data(&mut header, &name, &mut reader)
                .ctx(|| format!("write {name} into {}", path.display()))?;
            let (actual, _) = reader.finish().ctx(|| format!("read {name}"))?;
            verify(&format!("blob {}", blob.digest), &blob.digest, &actual)?;
            seen.push(blob.digest);
        }
        append_bytes(
            &mut tar,
            "oci-layout",
            br#"{"imageLayoutVersion":"1.0.0"}"#,
            mtime,
        )?;
        append_bytes(&mut tar, "index.json", &to_json(index)?, mtime)?;
        if let Some(entries) = manifest_json {
            append_bytes(&mut tar, "manifest.json", &to_json(&entries)?, mtime)?;
        }
        tar.into_inner()
            .ctx(|| format!("finish {}", path.display()))
    })
}

fn file_header(size: u64, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(mtime);
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    data: &[u8],
    mtime: u64,
) -> Result<(), ImageError> {
    let mut header = file_header(data.len() as u64, mtime);
    tar.append_data(&mut header, name, data)
        .ctx(|| format!("write {name} into archive"))
}

fn append_dir<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    mtime: u64,
) -> Result<(), ImageError> {
    let mut header = file_header(0, mtime);
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    tar.append_data(&mut header, format!("{name}/"), io::empty())
        .ctx(|| format!("write {name} into archive"))
}

/// Distinguishes the staging dirs of concurrent imports in one process.
static IMPORT_SEQ: AtomicU64 = AtomicU64::new(0);

impl ImageStore {
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
            IMPORT_SEQ.fetch_add(1, Ordering::Relaxed)
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
    let config_bytes = to_json(&config)?;
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
    let manifest_bytes = to_json(&manifest)?;
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
    write_atomic(&layout.join("index.json"), &to_json(&index)?)
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

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
