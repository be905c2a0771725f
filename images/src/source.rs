//! Finding an image in a local directory of archives and reading its manifest, config and layers.
//!
//! Two containers are read: a `docker save` tar (the old `manifest.json` form, the
//! newer OCI-layout-inside-a-tar form, or an OCI archive with only `index.json`) and an
//! OCI image layout directory.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use tar::EntryType;

use crate::digest::{verify, Digest};
use crate::error::{ImageError, IoContext};
use crate::manifest::{
    host_architecture, Descriptor, DockerArchiveEntry, Index, Manifest, ManifestOrIndex,
    ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME, MEDIA_TYPE_DOCKER_LIST, MEDIA_TYPE_OCI_INDEX,
};
use crate::reference::{ImageReference, DEFAULT_TAG};

/// JSON documents (manifests, indexes, configs) larger than this are refused.
const MAX_JSON: u64 = 16 << 20;

/// A blob inside a source: where it is and, when the source says, its digest.
#[derive(Debug, Clone)]
pub(crate) struct BlobRef {
    /// Path inside the archive or layout.
    pub member: String,
    /// The digest the source promises for it (unknown for old `<id>/layer.tar` layers).
    pub digest: Option<Digest>,
}

/// What a source says the image is made of.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    /// The manifest's digest, when the image came through an OCI index.
    pub manifest_digest: Option<Digest>,
    /// The config blob.
    pub config: BlobRef,
    /// Layer blobs, bottom first.
    pub layers: Vec<BlobRef>,
}

/// Where a tar member's data lies in the archive file.
#[derive(Debug, Clone)]
enum TarMember {
    File { offset: u64, size: u64 },
    Link(String),
}

#[derive(Debug)]
enum Kind {
    Dir,
    Tar(HashMap<String, TarMember>),
}

/// An opened archive file or layout directory.
#[derive(Debug)]
pub(crate) struct Source {
    /// The archive file or layout directory.
    pub path: PathBuf,
    kind: Kind,
}

/// A place where an image may be, and whether its name already states the tag.
pub(crate) struct Candidate {
    pub path: PathBuf,
    pub names_tag: bool,
}

/// The paths that may hold `r` under `dir`, in the order they are tried.
pub(crate) fn candidates(dir: &Path, r: &ImageReference) -> Vec<Candidate> {
    let mut names = vec![r.familiar_name()];
    if !names.contains(&r.repository) {
        names.push(r.repository.clone());
    }
    let mut out: Vec<Candidate> = Vec::new();
    let mut push = |path: PathBuf, names_tag: bool| {
        if !out.iter().any(|c| c.path == path) {
            out.push(Candidate { path, names_tag });
        }
    };
    for name in &names {
        if let Some(tag) = &r.tag {
            push(dir.join(format!("{name}:{tag}.tar")), true);
        }
        if let Some(digest) = &r.digest {
            push(dir.join(format!("{name}@{digest}.tar")), true);
        }
        if r.tag.as_deref() == Some(DEFAULT_TAG) && r.digest.is_none() {
            push(dir.join(format!("{name}.tar")), false);
        }
    }
    for name in &names {
        push(dir.join("oci").join(name), false);
        push(dir.join(name), false);
    }
    out
}

/// Finds `r` in `dir`: the first candidate that exists and holds it.
pub(crate) fn find(
    dir: &Path,
    r: &ImageReference,
) -> Result<Option<(Source, Resolved)>, ImageError> {
    for candidate in candidates(dir, r) {
        let Some(source) = Source::open(&candidate.path)? else {
            continue;
        };
        if let Some(resolved) = source.resolve(r, candidate.names_tag)? {
            return Ok(Some((source, resolved)));
        }
    }
    Ok(None)
}

/// Normalizes an archive member name (`./a//b` -> `a/b`), resolving `..` lexically.
fn normalize_member(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// The digest a member's name states: `blobs/sha256/<hex>` or `<hex>.json`.
fn digest_from_member(member: &str) -> Option<Digest> {
    let (dir, file) = member.rsplit_once('/').unwrap_or(("", member));
    let hex = if dir.ends_with("sha256") {
        file
    } else if dir.is_empty() {
        file.strip_suffix(".json")?
    } else {
        return None;
    };
    Digest::parse(&format!("sha256:{hex}")).ok()
}

fn blob_member(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

impl Source {
    /// Opens `path` if it is a tar file or a directory with `index.json`; `None` otherwise.
    pub(crate) fn open(path: &Path) -> Result<Option<Self>, ImageError> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(ImageError::Io {
                    context: format!("inspect {}", path.display()),
                    source: e,
                })
            }
        };
        if meta.is_dir() {
            if !path.join("index.json").is_file() {
                return Ok(None);
            }
            return Ok(Some(Self {
                path: path.to_path_buf(),
                kind: Kind::Dir,
            }));
        }
        if !meta.is_file() {
            return Ok(None);
        }
        Ok(Some(Self {
            path: path.to_path_buf(),
            kind: Kind::Tar(index_tar(path)?),
        }))
    }

    /// Whether the archive is a tar file (as `docker load` wants).
    pub(crate) fn is_tar(&self) -> bool {
        matches!(self.kind, Kind::Tar(_))
    }

    fn display(&self) -> String {
        self.path.display().to_string()
    }

    fn exists(&self, member: &str) -> bool {
        match &self.kind {
            Kind::Dir => self.path.join(member).is_file(),
            Kind::Tar(members) => members.contains_key(member),
        }
    }

    /// Opens a member for reading, with its size.
    pub(crate) fn open_member(
        &self,
        member: &str,
    ) -> Result<(Box<dyn Read + Send>, u64), ImageError> {
        let missing = || ImageError::InvalidImage {
            image: self.display(),
            reason: format!("missing member '{member}'"),
        };
        match &self.kind {
            Kind::Dir => {
                let normalized = normalize_member(member).ok_or_else(missing)?;
                let path = self.path.join(normalized);
                let file = File::open(&path).map_err(|_| missing())?;
                let size = file
                    .metadata()
                    .ctx(|| format!("inspect {}", path.display()))?
                    .len();
                Ok((Box::new(file), size))
            }
            Kind::Tar(members) => {
                let mut name = normalize_member(member).ok_or_else(missing)?;
                // Follow links between members (docker save links repeated layers), bounded.
                for _ in 0..16 {
                    match members.get(&name).ok_or_else(missing)? {
                        TarMember::Link(target) => name = target.clone(),
                        TarMember::File { offset, size } => {
                            let mut file = File::open(&self.path)
                                .ctx(|| format!("open {}", self.path.display()))?;
                            file.seek(SeekFrom::Start(*offset))
                                .ctx(|| format!("seek in {}", self.path.display()))?;
                            return Ok((Box::new(file.take(*size)), *size));
                        }
                    }
                }
                Err(ImageError::InvalidImage {
                    image: self.display(),
                    reason: format!("too many links resolving '{member}'"),
                })
            }
        }
    }

    /// Reads a small member (a JSON document) whole.
    pub(crate) fn read_member(&self, member: &str) -> Result<Vec<u8>, ImageError> {
        let (reader, size) = self.open_member(member)?;
        if size > MAX_JSON {
            return Err(ImageError::InvalidImage {
                image: self.display(),
                reason: format!(
                    "'{member}' is {size} bytes, more than a manifest or config may be"
                ),
            });
        }
        let mut buf = Vec::with_capacity(size as usize);
        reader
            .take(MAX_JSON)
            .read_to_end(&mut buf)
            .ctx(|| format!("read '{member}' from {}", self.display()))?;
        Ok(buf)
    }

    /// Reads a blob by digest and checks it.
    fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, ImageError> {
        let bytes = self.read_member(&blob_member(digest))?;
        verify(
            &format!("blob {digest} in {}", self.display()),
            digest,
            &Digest::of(&bytes),
        )?;
        Ok(bytes)
    }

    fn parse_json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        bytes: &[u8],
    ) -> Result<T, ImageError> {
        serde_json::from_slice(bytes).map_err(|source| ImageError::Json {
            context: format!("parse {what} in {}", self.display()),
            source,
        })
    }

    /// Picks `r` out of this source. `names_tag`: the file's name already says the tag,
    /// so a lone untagged or differently tagged image in it is taken.
    pub(crate) fn resolve(
        &self,
        r: &ImageReference,
        names_tag: bool,
    ) -> Result<Option<Resolved>, ImageError> {
        let has_manifest = self.is_tar() && self.exists("manifest.json");
        let has_index = self.exists("index.json");
        if has_manifest && !(r.digest.is_some() && has_index) {
            if let Some(resolved) = self.resolve_docker(r, names_tag)? {
                return Ok(Some(resolved));
            }
        }
        if has_index {
            return self.resolve_oci(r, names_tag);
        }
        if !has_manifest {
            return Err(ImageError::InvalidImage {
                image: self.display(),
                reason: "neither manifest.json nor index.json in archive".to_string(),
            });
        }
        Ok(None)
    }

    fn resolve_docker(
        &self,
        r: &ImageReference,
        names_tag: bool,
    ) -> Result<Option<Resolved>, ImageError> {
        let entries: Vec<DockerArchiveEntry> =
            self.parse_json("manifest.json", &self.read_member("manifest.json")?)?;
        let tagged = entries.iter().find(|e| {
            e.repo_tags
                .iter()
                .flatten()
                .any(|t| ImageReference::parse(t).is_ok_and(|t| t.same_name_and_tag(r)))
        });
        let entry = match tagged {
            Some(e) => e,
            None if entries.len() == 1
                && r.digest.is_none()
                && (names_tag || entries[0].repo_tags.as_ref().is_none_or(Vec::is_empty)) =>
            {
                &entries[0]
            }
            None => return Ok(None),
        };
        let blob = |member: &str| -> Result<BlobRef, ImageError> {
            Ok(BlobRef {
                member: normalize_member(member).ok_or_else(|| ImageError::InvalidImage {
                    image: self.display(),
                    reason: format!("bad member name '{member}' in manifest.json"),
                })?,
                digest: digest_from_member(member),
            })
        };
        Ok(Some(Resolved {
            manifest_digest: None,
            config: blob(&entry.config)?,
            layers: entry
                .layers
                .iter()
                .map(|l| blob(l))
                .collect::<Result<_, _>>()?,
        }))
    }

    fn resolve_oci(
        &self,
        r: &ImageReference,
        names_tag: bool,
    ) -> Result<Option<Resolved>, ImageError> {
        let index: Index = self.parse_json("index.json", &self.read_member("index.json")?)?;
        let matches = |d: &Descriptor| -> bool {
            if let Some(digest) = &r.digest {
                return &d.digest == digest;
            }
            let names = |value: &str| {
                ImageReference::parse(value).is_ok_and(|other| other.same_name_and_tag(r))
            };
            let by_ref_name = d.annotation(ANNOTATION_REF_NAME).is_some_and(|name| {
                // A bare tag (`latest`) or a full reference (`docker.io/library/busybox:latest`).
                Some(name) == r.tag.as_deref()
                    || ((name.contains(':') || name.contains('/')) && names(name))
            });
            by_ref_name || d.annotation(ANNOTATION_CONTAINERD_NAME).is_some_and(names)
        };
        let chosen = match index.manifests.iter().find(|d| matches(d)) {
            Some(d) => d,
            None if index.manifests.len() == 1
                && r.digest.is_none()
                && (names_tag || index.manifests[0].annotation(ANNOTATION_REF_NAME).is_none()) =>
            {
                &index.manifests[0]
            }
            None => return Ok(None),
        };
        self.resolve_descriptor(chosen, 0).map(Some)
    }

    /// Follows a descriptor through nested indexes (picking this machine's platform) to a manifest.
    fn resolve_descriptor(&self, desc: &Descriptor, depth: u32) -> Result<Resolved, ImageError> {
        if depth > 4 {
            return Err(ImageError::InvalidImage {
                image: self.display(),
                reason: "image indexes nested too deeply".to_string(),
            });
        }
        let digest = Digest::parse(&desc.digest)?;
        let bytes = self.read_blob(&digest)?;
        let sniff: ManifestOrIndex = self.parse_json("manifest", &bytes)?;
        let media_type = sniff.media_type.as_deref().unwrap_or(&desc.media_type);
        let is_index = media_type == MEDIA_TYPE_OCI_INDEX
            || media_type == MEDIA_TYPE_DOCKER_LIST
            || sniff.manifests.is_some();
        if is_index {
            let index: Index = self.parse_json("image index", &bytes)?;
            let arch = host_architecture();
            let chosen = index
                .manifests
                .iter()
                .find(|m| {
                    m.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == arch)
                })
                .or_else(|| (index.manifests.len() == 1).then(|| &index.manifests[0]))
                .ok_or_else(|| ImageError::InvalidImage {
                    image: self.display(),
                    reason: format!("no manifest for linux/{arch} in image index {digest}"),
                })?;
            return self.resolve_descriptor(chosen, depth + 1);
        }
        let manifest: Manifest = self.parse_json("manifest", &bytes)?;
        let blob = |d: &Descriptor| -> Result<BlobRef, ImageError> {
            let digest = Digest::parse(&d.digest)?;
            Ok(BlobRef {
                member: blob_member(&digest),
                digest: Some(digest),
            })
        };
        Ok(Resolved {
            manifest_digest: Some(digest.clone()),
            config: blob(&manifest.config)?,
            layers: manifest.layers.iter().map(blob).collect::<Result<_, _>>()?,
        })
    }
}

/// Lists a tar's members with where their data lies, seeking over the data.
fn index_tar(path: &Path) -> Result<HashMap<String, TarMember>, ImageError> {
    let bad = |e: std::io::Error| ImageError::InvalidImage {
        image: path.display().to_string(),
        reason: format!("not a readable tar archive: {e}"),
    };
    let file = File::open(path).ctx(|| format!("open {}", path.display()))?;
    let mut archive = tar::Archive::new(file);
    let mut members = HashMap::new();
    for entry in archive.entries_with_seek().map_err(bad)? {
        let entry = entry.map_err(bad)?;
        let raw = entry.path_bytes();
        let Some(name) = normalize_member(&String::from_utf8_lossy(&raw)) else {
            continue;
        };
        let kind = entry.header().entry_type();
        let member = match kind {
            EntryType::Regular | EntryType::Continuous => TarMember::File {
                offset: entry.raw_file_position(),
                size: entry.size(),
            },
            EntryType::Symlink | EntryType::Link => {
                let Some(target) = entry.link_name_bytes() else {
                    continue;
                };
                let target = String::from_utf8_lossy(&target).into_owned();
                // Symlinks are relative to their directory, hardlinks to the archive root.
                let joined = match (kind, name.rsplit_once('/')) {
                    (EntryType::Symlink, Some((dir, _))) if !target.starts_with('/') => {
                        format!("{dir}/{target}")
                    }
                    _ => target,
                };
                let Some(target) = normalize_member(&joined) else {
                    continue;
                };
                TarMember::Link(target)
            }
            _ => continue,
        };
        members.insert(name, member);
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names() {
        assert_eq!(normalize_member("./a//b/").as_deref(), Some("a/b"));
        assert_eq!(normalize_member("a/../b").as_deref(), Some("b"));
        assert_eq!(normalize_member("../b"), None);
        let hex = "a".repeat(64);
        assert!(digest_from_member(&format!("blobs/sha256/{hex}")).is_some());
        assert!(digest_from_member(&format!("{hex}.json")).is_some());
        assert!(digest_from_member(&format!("{hex}/layer.tar")).is_none());
    }
}
