//! Making sure the engine has a task's image: inspect it, and when it is
//! missing load it from a local `docker save` archive (no registry can be
//! assumed reachable from an agent node).

use crate::ContainerizerError;
use bollard::errors::Error as BollardError;
use bollard::models::ImageInspect;
use bollard::query_parameters::ImportImageOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;
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

/// Returns the engine's view of `image`, loading it from `archive_dir` first
/// when the engine does not have it. Every failure names the image.
pub async fn ensure_image(
    docker: &Docker,
    image: &ImageRef,
    archive_dir: Option<&Path>,
) -> Result<ImageInspect, ContainerizerError> {
    let fail = |reason: String| ContainerizerError::Image { image: image.reference.clone(), reason };
    match docker.inspect_image(&image.reference).await {
        Ok(found) => return Ok(found),
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(fail(format!("docker engine: {e}"))),
    }
    let Some(dir) = archive_dir else {
        return Err(fail("not found in the docker engine and no image archive directory is configured".into()));
    };
    let candidates = image.archive_candidates(dir);
    let Some(archive) = candidates.iter().find(|p| p.is_file()) else {
        let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        return Err(fail(format!("not found in the docker engine nor as an archive ({})", tried.join(", "))));
    };
    tracing::info!(image = %image.reference, archive = %archive.display(), "loading image into the docker engine");
    load_archive(docker, archive).await.map_err(|e| fail(format!("load {}: {e}", archive.display())))?;
    match docker.inspect_image(&image.reference).await {
        Ok(found) => Ok(found),
        Err(e) if is_not_found(&e) => {
            Err(fail(format!("not found in the docker engine after loading {}", archive.display())))
        }
        Err(e) => Err(fail(format!("docker engine: {e}"))),
    }
}

/// Streams a `docker save` archive into `POST /images/load`.
async fn load_archive(docker: &Docker, archive: &Path) -> Result<(), String> {
    let file = tokio::fs::File::open(archive).await.map_err(|e| e.to_string())?;
    let body = bollard::body_try_stream(tokio_util::io::ReaderStream::new(file));
    let options = ImportImageOptionsBuilder::new().quiet(true).build();
    let mut progress = docker.import_image(options, body, None);
    while let Some(item) = progress.next().await {
        let info = item.map_err(|e| e.to_string())?;
        if let Some(line) = info.stream.as_deref().map(str::trim).filter(|l| !l.is_empty()) {
            tracing::debug!(archive = %archive.display(), "{line}");
        }
    }
    Ok(())
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
