//! Making sure the engine has a task's image: inspect it, and when it is
//! missing (or the task forces a pull) pull it through the engine with the
//! configured credentials, or load it from mezzo's image store.

use super::auth::RegistryAuth;
use super::engine::Engine;
use crate::ContainerizerError;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::models::ImageInspect;
use bollard::query_parameters::{CreateImageOptionsBuilder, ImportImageOptionsBuilder};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A normalized image reference: `name:tag` (`:latest` appended when the last
/// path component has no tag, as `docker pull` does) or `name@digest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Repository name, e.g. `busybox` or `registry:5000/team/app`.
    pub name: String,
    /// Tag, e.g. `latest`; `None` when the reference is by digest.
    pub tag: Option<String>,
    /// The full reference as the engine is asked for it.
    pub reference: String,
}

impl ImageRef {
    /// Parses `reference`, appending `:latest` when it names no tag or digest.
    pub fn parse(reference: &str) -> Result<Self, ContainerizerError> {
        let reference = reference.trim();
        if reference.is_empty() {
            return Err(ContainerizerError::InvalidSpec("empty image reference".into()));
        }
        if reference.contains('@') {
            let name = reference.split('@').next().unwrap_or_default().to_string();
            return Ok(ImageRef { name, tag: None, reference: reference.to_string() });
        }
        // A ':' before the last '/' is a registry port, not a tag.
        let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
        match reference[last_slash..].rfind(':') {
            Some(i) => {
                let split = last_slash + i;
                let (name, tag) = (&reference[..split], &reference[split + 1..]);
                if name.is_empty() || tag.is_empty() {
                    return Err(ContainerizerError::InvalidSpec(format!("invalid image reference '{reference}'")));
                }
                Ok(ImageRef { name: name.into(), tag: Some(tag.into()), reference: reference.into() })
            }
            None => Ok(ImageRef {
                name: reference.into(),
                tag: Some("latest".into()),
                reference: format!("{reference}:latest"),
            }),
        }
    }

    /// Archive files that may hold this image under `dir`, most specific
    /// first: `<name>:<tag>.tar`, and `<name>.tar` for the tag `latest`.
    pub fn archive_candidates(&self, dir: &Path) -> Vec<PathBuf> {
        let Some(tag) = &self.tag else { return Vec::new() };
        let mut out = vec![dir.join(format!("{}:{tag}.tar", self.name))];
        if tag == "latest" {
            out.push(dir.join(format!("{}.tar", self.name)));
        }
        out
    }
}

/// Whether a bollard error is the engine's 404.
pub(crate) fn is_not_found(e: &BollardError) -> bool {
    matches!(e, BollardError::DockerResponseServerError { status_code: 404, .. })
}

/// Where images the engine lacks come from (`--docker_image_source`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageSource {
    /// Pulled through the engine from their registry (Mesos's behaviour);
    /// when the pull fails and the archive directory holds the image, it
    /// is loaded from there instead.
    #[default]
    Engine,
    /// Loaded into the engine from mezzo's image store (or the archive
    /// directory), never pulled: both backends share one image cache.
    Store,
}

impl std::str::FromStr for ImageSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "engine" | "docker" => Ok(ImageSource::Engine),
            "store" => Ok(ImageSource::Store),
            other => Err(format!("unknown docker image source '{other}' (known: engine, store)")),
        }
    }
}

/// How the docker backend gets images into the engine.
#[derive(Clone, Default)]
pub struct ImageProvider {
    /// Where missing images come from.
    pub source: ImageSource,
    /// Directory of `docker save` archives (`<name>:<tag>.tar`, `<name>.tar`).
    pub archive_dir: Option<PathBuf>,
    /// mezzo's image store, for `ImageSource::Store`.
    pub store: Option<mezzo_images::ImageStore>,
    /// Registry credentials (`--docker_config`).
    pub auth: RegistryAuth,
}

impl ImageProvider {
    /// Returns the engine's view of `image` after making sure the engine has
    /// it: an image already present is used as it is unless `force_pull`.
    /// Every failure names the image and carries the engine's message.
    pub async fn ensure(
        &self,
        engine: &Engine,
        image: &ImageRef,
        force_pull: bool,
    ) -> Result<ImageInspect, ContainerizerError> {
        let fail = |reason: String| ContainerizerError::Image { image: image.reference.clone(), reason };
        if !force_pull {
            match inspect(engine, image).await {
                Ok(Some(found)) => return Ok(found),
                Ok(None) => {}
                Err(e) => return Err(fail(e)),
            }
        }
        match self.source {
            ImageSource::Engine => match pull(engine, image, self.auth.for_image(&image.name)).await {
                Ok(()) => {}
                Err(pull_error) => match self.archive(image) {
                    Some(archive) => {
                        tracing::warn!(image = %image.reference, error = %pull_error, archive = %archive.display(),
                            "pull failed; loading the image from its archive");
                        load_archive(engine, &archive).await.map_err(|e| fail(format!("load {}: {e}", archive.display())))?;
                    }
                    None => return Err(fail(pull_error)),
                },
            },
            ImageSource::Store => {
                let archive = match &self.store {
                    Some(store) => {
                        let store = store.clone();
                        let reference = image.reference.clone();
                        tokio::task::spawn_blocking(move || store.archive_path(&reference))
                            .await
                            .map_err(|e| fail(format!("image store: {e}")))?
                            .map_err(|e| fail(format!("image store: {e}")))?
                    }
                    None => self.archive(image).ok_or_else(|| {
                        let tried: Vec<String> = self
                            .archive_dir
                            .as_deref()
                            .map(|d| image.archive_candidates(d).iter().map(|p| p.display().to_string()).collect())
                            .unwrap_or_default();
                        fail(format!("not in the docker engine nor in the image store (tried: {})", tried.join(", ")))
                    })?,
                };
                tracing::info!(image = %image.reference, archive = %archive.display(), "loading image into the docker engine");
                load_archive(engine, &archive).await.map_err(|e| fail(format!("load {}: {e}", archive.display())))?;
            }
        }
        match inspect(engine, image).await {
            Ok(Some(found)) => Ok(found),
            Ok(None) => Err(fail("not in the docker engine after it was fetched".into())),
            Err(e) => Err(fail(e)),
        }
    }

    fn archive(&self, image: &ImageRef) -> Option<PathBuf> {
        let dir = self.archive_dir.as_deref()?;
        image.archive_candidates(dir).into_iter().find(|p| p.is_file())
    }
}

/// The engine's view of `image`, `None` when it does not have it.
async fn inspect(engine: &Engine, image: &ImageRef) -> Result<Option<ImageInspect>, String> {
    match engine.call("inspect image", |d| d.inspect_image(&image.reference)).await {
        Ok(found) => Ok(Some(found)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.message()),
    }
}

/// `POST /images/create?fromImage=..&tag=..` with the credentials as
/// `X-Registry-Auth`. The engine reports a failed pull inside the progress
/// stream; its message is returned as it is. Each progress message must
/// come within the engine timeout, so a slow pull that progresses goes on
/// and a hung one ends.
async fn pull(engine: &Engine, image: &ImageRef, credentials: Option<DockerCredentials>) -> Result<(), String> {
    let docker = engine.client().await.map_err(|e| e.to_string())?;
    let mut options = CreateImageOptionsBuilder::new().from_image(&image.name);
    if let Some(tag) = &image.tag {
        options = options.tag(tag);
    } else if let Some((_, digest)) = image.reference.split_once('@') {
        options = options.tag(digest);
    }
    tracing::info!(image = %image.reference, authenticated = credentials.is_some(), "pulling image through the docker engine");
    let mut progress = docker.create_image(Some(options.build()), None, credentials);
    let address = engine.settings().address();
    loop {
        let next = super::engine::bounded(engine.timeout(), "pull", &address, progress.next())
            .await
            .map_err(|e| e.to_string())?;
        match next {
            None => return Ok(()),
            Some(Ok(info)) => {
                let error = info.error_detail.and_then(|d| d.message).or(info.error);
                if let Some(error) = error {
                    return Err(error);
                }
                if let Some(status) = info.status {
                    tracing::debug!(image = %image.reference, "{status}");
                }
            }
            Some(Err(BollardError::DockerStreamError { error })) => return Err(error),
            Some(Err(BollardError::DockerResponseServerError { message, .. })) => return Err(message),
            Some(Err(e)) => return Err(e.to_string()),
        }
    }
}

/// Streams a `docker save` archive into `POST /images/load`.
async fn load_archive(engine: &Engine, archive: &Path) -> Result<(), String> {
    let docker = engine.client().await.map_err(|e| e.to_string())?;
    let file = tokio::fs::File::open(archive).await.map_err(|e| e.to_string())?;
    let body = bollard::body_try_stream(tokio_util::io::ReaderStream::new(file));
    let options = ImportImageOptionsBuilder::new().quiet(true).build();
    let mut progress = docker.import_image(options, body, None);
    let address = engine.settings().address();
    loop {
        let next = super::engine::bounded(engine.timeout(), "load image", &address, progress.next())
            .await
            .map_err(|e| e.to_string())?;
        let Some(item) = next else { return Ok(()) };
        let info = item.map_err(|e| e.to_string())?;
        if let Some(error) = info.error_detail.and_then(|d| d.message).or(info.error) {
            return Err(error);
        }
        if let Some(line) = info.stream.as_deref().map(str::trim).filter(|l| !l.is_empty()) {
            tracing::debug!(archive = %archive.display(), "{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_appends_latest_and_keeps_registry_port() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(
            (r.name.as_str(), r.tag.as_deref(), r.reference.as_str()),
            ("busybox", Some("latest"), "busybox:latest")
        );
        let r = ImageRef::parse("localhost:5000/team/app").unwrap();
        assert_eq!(r.reference, "localhost:5000/team/app:latest");
        assert_eq!(r.name, "localhost:5000/team/app");
        let r = ImageRef::parse("localhost:5000/app:v2").unwrap();
        assert_eq!((r.name.as_str(), r.tag.as_deref()), ("localhost:5000/app", Some("v2")));
        let r = ImageRef::parse("app@sha256:abcd").unwrap();
        assert_eq!((r.name.as_str(), r.tag, r.reference.as_str()), ("app", None, "app@sha256:abcd"));
        assert!(ImageRef::parse("").is_err());
        assert!(ImageRef::parse("app:").is_err());
    }

    #[test]
    fn archive_candidates_follow_the_naming_rule() {
        let dir = Path::new("/images");
        let latest = ImageRef::parse("busybox").unwrap().archive_candidates(dir);
        assert_eq!(latest, vec![PathBuf::from("/images/busybox:latest.tar"), PathBuf::from("/images/busybox.tar")]);
        let tagged = ImageRef::parse("busybox:1.36").unwrap().archive_candidates(dir);
        assert_eq!(tagged, vec![PathBuf::from("/images/busybox:1.36.tar")]);
        assert!(ImageRef::parse("app@sha256:abcd").unwrap().archive_candidates(dir).is_empty());
    }
}
