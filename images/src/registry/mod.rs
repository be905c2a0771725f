//! A Docker Registry HTTP API v2 client: manifests (Docker schema 2, OCI, manifest lists
//! and OCI indexes), blobs streamed into the content store with their digest checked,
//! bearer-token and basic auth, redirects, and bounded retries.

pub mod auth;

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use tracing::{debug, info, warn};

use crate::content::ContentStore;
use crate::digest::{verify, Digest};
use crate::error::ImageError;
use crate::manifest::{
    host_architecture, Descriptor, Index, Manifest, ManifestOrIndex, MEDIA_TYPE_DOCKER_LIST,
    MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST,
};
use crate::reference::ImageReference;
use auth::{parse_challenge, Challenge, CredentialStore, TokenReply};

/// Docker schema 2 image manifest media type.
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str =
    "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 1 manifests, which are refused.
const MEDIA_TYPES_SCHEMA1: [&str; 2] = [
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];
/// Manifests, indexes and token replies larger than this are refused.
const MAX_DOCUMENT: usize = 4 << 20;
/// Attempts per request when a registry fails with 5xx, 429 or a broken connection.
const MAX_ATTEMPTS: u32 = 4;
/// The first retry waits this long; each later one twice as long as the one before.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// How deep an index may nest indexes.
const MAX_INDEX_DEPTH: usize = 3;

/// Where images come from: a registry, or a local directory of image archives (Mesos's
/// `--docker_registry` takes both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrySource {
    /// A registry's base URL (`https://registry.example:5000`).
    Url(Url),
    /// A directory of `docker save` archives and OCI layouts.
    Directory(PathBuf),
}

impl RegistrySource {
    /// Parses `http(s)://host[:port][/path]` as a registry, `file:///dir`, `/dir` or
    /// `./dir` as a directory, and a bare `host[:port]` as an https registry.
    pub fn parse(s: &str) -> Result<Self, ImageError> {
        let bad = |reason: &str| ImageError::Config(format!("docker registry '{s}': {reason}"));
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if let Some(path) = s.strip_prefix("file://") {
            return Ok(Self::Directory(PathBuf::from(path)));
        }
        if s.starts_with('/') || s.starts_with('.') {
            return Ok(Self::Directory(PathBuf::from(s)));
        }
        let with_scheme = if s.contains("://") {
            s.to_string()
        } else {
            format!("https://{s}")
        };
        let url = Url::parse(&with_scheme).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("only http, https and file URLs are supported"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("a registry URL takes no query or fragment"));
        }
        Ok(Self::Url(url))
    }
}

impl std::str::FromStr for RegistrySource {
    type Err = ImageError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientOptions {
    /// Where references without a registry host go.
    pub default_registry: Option<Url>,
    /// `~/.docker/config.json`-style credentials.
    pub docker_config: Option<PathBuf>,
    /// Extra PEM root certificates.
    pub ca_cert: Option<PathBuf>,
    /// Use http for registries named in references.
    pub insecure_http: bool,
}

/// An image as a registry describes it, after choosing this host's platform.
#[derive(Debug, Clone)]
pub(crate) struct RemoteImage {
    /// The registry's base URL.
    pub base: Url,
    /// The repository path.
    pub repository: String,
    /// The digest of the chosen (platform) manifest.
    pub manifest_digest: Digest,
    /// The config blob.
    pub config: Descriptor,
    /// Layer blobs, bottom first.
    pub layers: Vec<Descriptor>,
}

/// A registry client shared by every pull of one store.
pub(crate) struct RegistryClient {
    http: reqwest::Client,
    options: ClientOptions,
    credentials: CredentialStore,
    /// `Authorization` header values by `<base URL> <repository>`.
    auth: Mutex<HashMap<String, HeaderValue>>,
}

impl RegistryClient {
    /// Builds the client: reads the CA file and the docker config now, so bad ones fail early.
    pub(crate) fn new(options: ClientOptions) -> Result<Self, ImageError> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(concat!("mezzo-images/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            // reqwest drops Authorization when a redirect leaves the host (blob storage URLs).
            .redirect(reqwest::redirect::Policy::limited(10));
        if let Some(ca) = &options.ca_cert {
            let pem = std::fs::read(ca).map_err(|e| {
                ImageError::Config(format!("read CA certificate {}: {e}", ca.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                ImageError::Config(format!("parse CA certificate {}: {e}", ca.display()))
            })?;
            if certs.is_empty() {
                return Err(ImageError::Config(format!(
                    "CA certificate file {} holds no certificate",
                    ca.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| ImageError::Config(format!("build HTTP client: {e}")))?;
        let credentials = match &options.docker_config {
            Some(path) => CredentialStore::load(path)?,
            None => CredentialStore::default(),
        };
        Ok(Self {
            http,
            options,
            credentials,
            auth: Mutex::new(HashMap::new()),
        })
    }

    /// The base URL of the registry that serves `r`.
    pub(crate) fn base_url(&self, r: &ImageReference) -> Result<Url, ImageError> {
        let default = self.options.default_registry.as_ref();
        let Some(host) = &r.registry else {
            return match default {
                Some(url) => Ok(url.clone()),
                None => Url::parse("https://registry-1.docker.io")
                    .map_err(|e| ImageError::Config(e.to_string())),
            };
        };
        if let Some(url) = default.filter(|u| authority(u).eq_ignore_ascii_case(host)) {
            return Ok(url.clone());
        }
        let scheme = if self.options.insecure_http {
            "http"
        } else {
            "https"
        };
        Url::parse(&format!("{scheme}://{host}")).map_err(|e| ImageError::InvalidReference {
            reference: r.to_string(),
            reason: format!("registry host: {e}"),
        })
    }

    /// Fetches the manifest of `r`, walking indexes to this host's `linux/<arch>` manifest.
    pub(crate) async fn resolve(&self, r: &ImageReference) -> Result<RemoteImage, ImageError> {
        let base = self.base_url(r)?;
        let repo = r.repository.clone();
        let (mut reference, mut expected) = match (&r.digest, &r.tag) {
            (Some(d), _) => (d.clone(), Some(Digest::parse(d)?)),
            (None, Some(t)) => (t.clone(), None),
            (None, None) => (crate::reference::DEFAULT_TAG.to_string(), None),
        };
        for _ in 0..=MAX_INDEX_DEPTH {
            let (bytes, media_type, digest) = self
                .fetch_manifest(&base, &repo, &reference, expected.as_ref(), r)
                .await?;
            let invalid = |reason: String| ImageError::InvalidImage {
                image: r.short_name(),
                reason,
            };
            if media_type == MEDIA_TYPE_OCI_INDEX || media_type == MEDIA_TYPE_DOCKER_LIST {
                let index: Index = serde_json::from_slice(&bytes)
                    .map_err(|e| invalid(format!("parse index {digest}: {e}")))?;
                let chosen = choose_platform(&index, r)?;
                debug!(image = %r, index = %digest, manifest = %chosen.digest, "chose platform manifest");
                reference = chosen.digest.clone();
                expected = Some(Digest::parse(&chosen.digest)?);
                continue;
            }
            let manifest: Manifest = serde_json::from_slice(&bytes)
                .map_err(|e| invalid(format!("parse manifest {digest}: {e}")))?;
            if manifest.schema_version != 2 {
                return Err(ImageError::Unsupported(format!(
                    "manifest schema version {} of {}",
                    manifest.schema_version,
                    r.short_name()
                )));
            }
            return Ok(RemoteImage {
                base,
                repository: repo,
                manifest_digest: digest,
                config: manifest.config,
                layers: manifest.layers,
            });
        }
        Err(ImageError::InvalidImage {
            image: r.short_name(),
            reason: format!("indexes nest deeper than {MAX_INDEX_DEPTH}"),
        })
    }

    /// GETs one manifest or index; returns its bytes, media type and digest.
    async fn fetch_manifest(
        &self,
        base: &Url,
        repo: &str,
        reference: &str,
        expected: Option<&Digest>,
        r: &ImageReference,
    ) -> Result<(Vec<u8>, String, Digest), ImageError> {
        let url = endpoint(base, repo, "manifests", reference)?;
        let accept = [
            MEDIA_TYPE_OCI_INDEX,
            MEDIA_TYPE_DOCKER_LIST,
            MEDIA_TYPE_OCI_MANIFEST,
            MEDIA_TYPE_DOCKER_MANIFEST,
        ]
        .join(", ");
        let what = format!("manifest {reference} of {repo}");
        let resp = self
            .send(base, repo, &what, || {
                self.http.get(url.clone()).header(ACCEPT, accept.as_str())
            })
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(ImageError::NotFound {
                image: r.short_name(),
                location: base.to_string(),
            });
        }
        let resp = check_status(base, &what, resp).await?;
        let header_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_string());
        let bytes = read_capped(base, &what, resp, MAX_DOCUMENT).await?;
        let digest = Digest::of(&bytes);
        if let Some(expected) = expected {
            verify(&what, expected, &digest)?;
        }
        let sniffed: ManifestOrIndex =
            serde_json::from_slice(&bytes).map_err(|source| ImageError::Json {
                context: format!("parse {what}"),
                source,
            })?;
        // The document's own mediaType is more reliable than a proxy's Content-Type.
        let media_type = match (sniffed.media_type, header_type) {
            (Some(t), _) if !t.is_empty() => t,
            (_, Some(t)) if t != "application/json" && t != "text/plain" && !t.is_empty() => t,
            _ if sniffed.manifests.is_some() => MEDIA_TYPE_OCI_INDEX.to_string(),
            _ => MEDIA_TYPE_OCI_MANIFEST.to_string(),
        };
        if MEDIA_TYPES_SCHEMA1.contains(&media_type.as_str()) {
            return Err(ImageError::Unsupported(format!(
                "docker schema 1 manifest of {}",
                r.short_name()
            )));
        }
        Ok((bytes, media_type, digest))
    }

    /// Streams blob `digest` of `image` into the content store; the blob becomes visible
    /// only when its bytes hash to `digest`. Broken transfers are retried from the start.
    pub(crate) async fn fetch_blob(
        &self,
        image: &RemoteImage,
        digest: &Digest,
        size: Option<u64>,
        content: &ContentStore,
    ) -> Result<u64, ImageError> {
        let base = &image.base;
        let repo = &image.repository;
        let url = endpoint(base, repo, "blobs", digest.as_str())?;
        let what = format!("blob {digest} of {repo}");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let resp = self
                .send(base, repo, &what, || self.http.get(url.clone()))
                .await?;
            let resp = check_status(base, &what, resp).await?;
            let mut writer = content.writer()?;
            match stream_into(resp, &mut writer, size, base, &what).await {
                Ok(()) => {}
                Err(Transfer::Fatal(e)) => return Err(e),
                Err(Transfer::Broken(e)) if attempt < MAX_ATTEMPTS => {
                    warn!(blob = %digest, attempt, error = %e, "blob transfer broke, retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
                Err(Transfer::Broken(e)) => {
                    return Err(ImageError::Registry {
                        registry: base.to_string(),
                        reason: format!("{what}: transfer broke {attempt} times, last: {e}"),
                    })
                }
            }
            let written = writer.written();
            let (expected, what2) = (digest.clone(), what.clone());
            tokio::task::spawn_blocking(move || writer.commit(&expected, &what2))
                .await
                .map_err(|e| ImageError::Task(e.to_string()))??;
            info!(blob = %digest, bytes = written, "downloaded blob");
            return Ok(written);
        }
    }

    /// Streams blob `digest` of `image` into `consume`, which runs on a blocking thread
    /// and reads the bytes as they arrive (a layer unpacks while it downloads, in one
    /// pass). Every received byte is hashed; `consume`'s value is returned only when the
    /// whole blob arrived and hashes to `digest`, else it is dropped (so whatever it
    /// staged must clean up on drop). A digest mismatch wins over `consume`'s own error,
    /// because a corrupt blob explains a failed unpack. Broken transfers are retried
    /// from the start with a fresh `consume`.
    pub(crate) async fn fetch_blob_streamed<T, F>(
        &self,
        image: &RemoteImage,
        digest: &Digest,
        size: Option<u64>,
        consume: F,
    ) -> Result<T, ImageError>
    where
        T: Send + 'static,
        F: Fn(&mut BlobStream) -> Result<T, ImageError> + Send + Sync + 'static,
    {
        let base = &image.base;
        let repo = &image.repository;
        let url = endpoint(base, repo, "blobs", digest.as_str())?;
        let what = format!("blob {digest} of {repo}");
        let consume = std::sync::Arc::new(consume);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let resp = self
                .send(base, repo, &what, || self.http.get(url.clone()))
                .await?;
            let resp = check_status(base, &what, resp).await?;
            let (tx, rx) = tokio::sync::mpsc::channel(STREAM_CHUNKS);
            let worker = {
                let consume = consume.clone();
                tokio::task::spawn_blocking(move || {
                    let mut stream = BlobStream::new(rx);
                    let value = consume(&mut stream);
                    let (actual, received) = stream.drain();
                    (value, actual, received)
                })
            };
            let transfer = pump(resp, &tx, size, base, &what).await;
            if transfer.is_ok() {
                // Tell the reader the body ended whole (a closed channel alone means abandoned).
                let _ = tx.send(Piece::End).await;
            }
            drop(tx);
            let (value, actual, received) =
                worker.await.map_err(|e| ImageError::Task(e.to_string()))?;
            match transfer {
                Ok(()) => {}
                Err(Transfer::Fatal(e)) => return Err(e),
                Err(Transfer::Broken(e)) if attempt < MAX_ATTEMPTS => {
                    warn!(blob = %digest, attempt, error = %e, "blob transfer broke, retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
                Err(Transfer::Broken(e)) => {
                    return Err(ImageError::Registry {
                        registry: base.to_string(),
                        reason: format!("{what}: transfer broke {attempt} times, last: {e}"),
                    })
                }
            }
            verify(&what, digest, &actual)?;
            let value = value?;
            info!(blob = %digest, bytes = received, "downloaded and consumed blob");
            return Ok(value);
        }
    }

    /// Sends a request made by `make`, answering auth challenges once and retrying
    /// 5xx, 429 and connection failures with backoff. Other statuses are returned.
    async fn send(
        &self,
        base: &Url,
        repo: &str,
        what: &str,
        make: impl Fn() -> RequestBuilder,
    ) -> Result<Response, ImageError> {
        let key = format!("{base} {repo}");
        let mut challenged = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = make();
            let cached = self
                .auth
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .cloned();
            if let Some(value) = cached {
                request = request.header(AUTHORIZATION, value);
            }
            let resp = match request.send().await {
                Ok(resp) => resp,
                Err(e) if retryable(&e) && attempt < MAX_ATTEMPTS => {
                    debug!(%what, attempt, error = %e, "request failed, retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
                Err(e) => {
                    return Err(ImageError::Registry {
                        registry: base.to_string(),
                        reason: format!("{what}: {}", error_chain(&e)),
                    })
                }
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                let challenge = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let value = self
                    .authenticate(base, repo, what, challenge.as_deref())
                    .await?;
                self.auth
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key.clone(), value);
                // An auth round is not a failed attempt.
                attempt -= 1;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                let body = body_excerpt(resp).await;
                return Err(ImageError::Unauthorized {
                    registry: base.to_string(),
                    reason: format!("{what}: {status}{body}"),
                });
            }
            if (status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS)
                && attempt < MAX_ATTEMPTS
            {
                debug!(%what, attempt, %status, "registry failed, retrying");
                tokio::time::sleep(backoff(attempt)).await;
                continue;
            }
            return Ok(resp);
        }
    }

    /// Answers a 401's challenge: a bearer token from the realm, or basic credentials.
    async fn authenticate(
        &self,
        base: &Url,
        repo: &str,
        what: &str,
        challenge: Option<&str>,
    ) -> Result<HeaderValue, ImageError> {
        let unauthorized = |reason: String| ImageError::Unauthorized {
            registry: base.to_string(),
            reason: format!("{what}: {reason}"),
        };
        let host = authority(base);
        let creds = self.credentials.get(&host);
        let header = match challenge.and_then(parse_challenge) {
            Some(Challenge::Basic) => creds
                .ok_or_else(|| {
                    unauthorized(format!(
                        "the registry asks for basic auth and the docker config has no credentials for {host}"
                    ))
                })?
                .basic_header(),
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let scope = scope.unwrap_or_else(|| format!("repository:{repo}:pull"));
                let mut url = Url::parse(&realm)
                    .map_err(|e| unauthorized(format!("token realm '{realm}': {e}")))?;
                {
                    let mut query = url.query_pairs_mut();
                    if let Some(service) = &service {
                        query.append_pair("service", service);
                    }
                    query.append_pair("scope", &scope);
                }
                let mut request = self.http.get(url.clone());
                if let Some(creds) = creds {
                    request = request.header(AUTHORIZATION, creds.basic_header());
                }
                let resp = request
                    .send()
                    .await
                    .map_err(|e| unauthorized(format!("token request to {realm}: {}", error_chain(&e))))?;
                let status = resp.status();
                if !status.is_success() {
                    let body = body_excerpt(resp).await;
                    return Err(unauthorized(format!(
                        "token server {realm} answered {status}{body}"
                    )));
                }
                let bytes = read_capped(base, "token reply", resp, MAX_DOCUMENT).await?;
                let reply: TokenReply = serde_json::from_slice(&bytes)
                    .map_err(|e| unauthorized(format!("token reply from {realm}: {e}")))?;
                let token = reply
                    .into_token()
                    .ok_or_else(|| unauthorized(format!("token server {realm} sent no token")))?;
                debug!(%realm, %scope, "got registry token");
                format!("Bearer {token}")
            }
            None => {
                return Err(unauthorized(format!(
                    "401 with an unusable challenge {:?}",
                    challenge.unwrap_or("(none)")
                )))
            }
        };
        HeaderValue::from_str(&header)
            .map_err(|_| unauthorized("credentials are not a valid header value".to_string()))
    }
}

/// `host[:port]` of a URL, the way references and docker configs name registries.
fn authority(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => String::new(),
    }
}

fn endpoint(base: &Url, repo: &str, kind: &str, reference: &str) -> Result<Url, ImageError> {
    let s = format!(
        "{}/v2/{repo}/{kind}/{reference}",
        base.as_str().trim_end_matches('/')
    );
    Url::parse(&s).map_err(|e| ImageError::Registry {
        registry: base.to_string(),
        reason: format!("bad URL {s}: {e}"),
    })
}

fn choose_platform<'a>(index: &'a Index, r: &ImageReference) -> Result<&'a Descriptor, ImageError> {
    let arch = host_architecture();
    let candidates: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
        .collect();
    // On arm64 prefer v8 or no variant; elsewhere take the first match.
    let preferred = candidates.iter().find(|d| {
        d.platform
            .as_ref()
            .and_then(|p| p.variant.as_deref())
            .is_none_or(|v| arch != "arm64" || v == "v8")
    });
    if let Some(d) = preferred.or(candidates.first()) {
        return Ok(d);
    }
    if index.manifests.len() == 1 && index.manifests[0].platform.is_none() {
        return Ok(&index.manifests[0]);
    }
    let offered: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .map(|p| match &p.variant {
            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        })
        .collect();
    Err(ImageError::Unsupported(format!(
        "image {} has no linux/{arch} manifest (it has: {})",
        r.short_name(),
        if offered.is_empty() {
            "no platforms".to_string()
        } else {
            offered.join(", ")
        }
    )))
}

/// Why a blob transfer stopped.
enum Transfer {
    /// Retrying cannot help (too big, disk error).
    Fatal(ImageError),
    /// The connection broke; the transfer may be retried.
    Broken(String),
}

async fn stream_into(
    mut resp: Response,
    writer: &mut crate::content::BlobWriter,
    size: Option<u64>,
    base: &Url,
    what: &str,
) -> Result<(), Transfer> {
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if size.is_some_and(|s| writer.written() + chunk.len() as u64 > s) {
                    return Err(Transfer::Fatal(ImageError::Registry {
                        registry: base.to_string(),
                        reason: format!(
                            "{what}: more bytes than the {} the manifest states",
                            size.unwrap_or(0)
                        ),
                    }));
                }
                // Small writes into a buffered file: page-cache speed, not worth a thread hop.
                writer.write(&chunk).map_err(Transfer::Fatal)?;
            }
            Ok(None) => return Ok(()),
            Err(e) => return Err(Transfer::Broken(error_chain(&e))),
        }
    }
}

/// Network chunks in flight between a download and its consumer (tens of KiB each).
const STREAM_CHUNKS: usize = 64;

/// What a download hands its consumer.
enum Piece {
    /// The next bytes of the body.
    Chunk(bytes::Bytes),
    /// The transfer stopped early, for this reason.
    Failed(String),
    /// The body ended whole.
    End,
}

/// A blob's body as it arrives, read on a blocking thread. Every byte received is
/// hashed, whether the consumer reads it or not, so the digest covers the whole body.
pub(crate) struct BlobStream {
    rx: tokio::sync::mpsc::Receiver<Piece>,
    chunk: bytes::Bytes,
    hasher: crate::digest::Hasher,
    received: u64,
    /// `Some(Ok)` once the body ended whole, `Some(Err)` once it broke.
    end: Option<Result<(), String>>,
}

impl BlobStream {
    fn new(rx: tokio::sync::mpsc::Receiver<Piece>) -> Self {
        Self {
            rx,
            chunk: bytes::Bytes::new(),
            hasher: crate::digest::Hasher::new(),
            received: 0,
            end: None,
        }
    }

    /// Takes in the next piece when the current chunk is used up; false at the end.
    fn next_piece(&mut self) -> io::Result<bool> {
        while self.chunk.is_empty() {
            match &self.end {
                Some(Ok(())) => return Ok(false),
                Some(Err(e)) => return Err(io::Error::other(format!("transfer broke: {e}"))),
                None => {}
            }
            match self.rx.blocking_recv() {
                Some(Piece::Chunk(bytes)) => {
                    self.hasher.update(&bytes);
                    self.received += bytes.len() as u64;
                    self.chunk = bytes;
                }
                Some(Piece::Failed(e)) => self.end = Some(Err(e)),
                Some(Piece::End) => self.end = Some(Ok(())),
                None => self.end = Some(Err("download abandoned".to_string())),
            }
        }
        Ok(true)
    }

    /// Receives (and hashes) whatever the consumer left unread; returns the digest and
    /// size of all that arrived.
    fn drain(mut self) -> (Digest, u64) {
        self.chunk.clear();
        while let Ok(true) = self.next_piece() {
            self.chunk.clear();
        }
        (self.hasher.finish(), self.received)
    }
}

impl io::Read for BlobStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = io::BufRead::fill_buf(self)?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        io::BufRead::consume(self, n);
        Ok(n)
    }
}

impl io::BufRead for BlobStream {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.next_piece()?;
        Ok(&self.chunk)
    }

    fn consume(&mut self, amt: usize) {
        let amt = amt.min(self.chunk.len());
        bytes::Buf::advance(&mut self.chunk, amt);
    }
}

/// Moves a response body into `tx` piece by piece, stopping at more than `size` bytes.
async fn pump(
    mut resp: Response,
    tx: &tokio::sync::mpsc::Sender<Piece>,
    size: Option<u64>,
    base: &Url,
    what: &str,
) -> Result<(), Transfer> {
    let mut sent = 0u64;
    let fail = |reason: String| async move {
        let _ = tx.send(Piece::Failed(reason)).await;
    };
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                sent += chunk.len() as u64;
                if let Some(limit) = size.filter(|s| sent > *s) {
                    let reason = format!("{what}: more bytes than the {limit} the manifest states");
                    fail(reason.clone()).await;
                    return Err(Transfer::Fatal(ImageError::Registry {
                        registry: base.to_string(),
                        reason,
                    }));
                }
                if tx.send(Piece::Chunk(chunk)).await.is_err() {
                    // The consumer is gone only when its thread died.
                    return Err(Transfer::Fatal(ImageError::Task(format!(
                        "{what}: the blob's consumer stopped"
                    ))));
                }
            }
            Ok(None) => return Ok(()),
            Err(e) => {
                let reason = error_chain(&e);
                fail(reason.clone()).await;
                return Err(Transfer::Broken(reason));
            }
        }
    }
}

async fn check_status(base: &Url, what: &str, resp: Response) -> Result<Response, ImageError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = body_excerpt(resp).await;
    Err(ImageError::Registry {
        registry: base.to_string(),
        reason: format!("{what}: {status}{body}"),
    })
}

/// `: <first 200 bytes of the body>`, for error messages.
async fn body_excerpt(resp: Response) -> String {
    match resp.bytes().await {
        Ok(b) if !b.is_empty() => {
            let text = String::from_utf8_lossy(&b[..b.len().min(200)]);
            format!(": {}", text.trim())
        }
        _ => String::new(),
    }
}

async fn read_capped(
    base: &Url,
    what: &str,
    mut resp: Response,
    cap: usize,
) -> Result<Vec<u8>, ImageError> {
    let too_big = || ImageError::Registry {
        registry: base.to_string(),
        reason: format!("{what}: larger than {cap} bytes"),
    };
    if resp.content_length().is_some_and(|l| l > cap as u64) {
        return Err(too_big());
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| ImageError::Registry {
        registry: base.to_string(),
        reason: format!("{what}: {}", error_chain(&e)),
    })? {
        if out.len() + chunk.len() > cap {
            return Err(too_big());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn retryable(e: &reqwest::Error) -> bool {
    !e.is_builder() && !e.is_redirect() && !e.is_status()
}

fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF * 2u32.saturating_pow(attempt.saturating_sub(1))
}

/// An error with its causes, which reqwest keeps out of its Display.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_stream_hashes_what_the_consumer_leaves() {
        use std::io::Read;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        for piece in [
            Piece::Chunk(bytes::Bytes::from_static(b"hello ")),
            Piece::Chunk(bytes::Bytes::from_static(b"world")),
            Piece::End,
        ] {
            tx.try_send(piece).unwrap_or_else(|_| panic!("channel full"));
        }
        let mut stream = BlobStream::new(rx);
        let mut head = [0u8; 3];
        stream.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"hel");
        let (digest, received) = stream.drain();
        assert_eq!(digest, Digest::of(b"hello world"));
        assert_eq!(received, 11);
    }

    #[test]
    fn blob_stream_reports_broken_and_abandoned_transfers() {
        use std::io::Read;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tx.try_send(Piece::Chunk(bytes::Bytes::from_static(b"part")))
            .unwrap_or_else(|_| panic!("channel full"));
        tx.try_send(Piece::Failed("reset by peer".to_string()))
            .unwrap_or_else(|_| panic!("channel full"));
        let mut out = Vec::new();
        let err = BlobStream::new(rx).read_to_end(&mut out).unwrap_err();
        assert!(err.to_string().contains("transfer broke: reset by peer"), "{err}");
        assert_eq!(out, b"part");

        // A sender gone without `End` is not a whole body, however much arrived.
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tx.try_send(Piece::Chunk(bytes::Bytes::from_static(b"all of it?")))
            .unwrap_or_else(|_| panic!("channel full"));
        drop(tx);
        let err = BlobStream::new(rx).read_to_end(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("abandoned"), "{err}");
    }

    #[test]
    fn registry_source_forms() {
        assert_eq!(
            RegistrySource::parse("/var/lib/images").unwrap(),
            RegistrySource::Directory("/var/lib/images".into())
        );
        assert_eq!(
            RegistrySource::parse("file:///x").unwrap(),
            RegistrySource::Directory("/x".into())
        );
        let RegistrySource::Url(u) = RegistrySource::parse("registry.example:5000").unwrap() else {
            panic!("a host is a registry");
        };
        assert_eq!(u.as_str(), "https://registry.example:5000/");
        let RegistrySource::Url(u) = RegistrySource::parse("http://127.0.0.1:5000").unwrap() else {
            panic!("a URL is a registry");
        };
        assert_eq!(authority(&u), "127.0.0.1:5000");
        assert!(RegistrySource::parse("ftp://x").is_err());
        assert!(RegistrySource::parse("").is_err());
        assert!(RegistrySource::parse("http://x/?a=b").is_err());
    }

    #[test]
    fn base_url_routing() {
        let client = RegistryClient::new(ClientOptions {
            default_registry: Some(Url::parse("http://127.0.0.1:5000").unwrap()),
            ..Default::default()
        })
        .unwrap();
        let base = |s: &str| {
            client
                .base_url(&ImageReference::parse(s).unwrap())
                .unwrap()
                .to_string()
        };
        assert_eq!(base("busybox"), "http://127.0.0.1:5000/");
        assert_eq!(base("127.0.0.1:5000/ns/app:1"), "http://127.0.0.1:5000/");
        assert_eq!(base("quay.io/ns/app"), "https://quay.io/");
    }

    #[test]
    fn platform_choice() {
        let arch = host_architecture();
        let other = if arch == "amd64" { "arm64" } else { "amd64" };
        let d = |digit: char, arch: &str| Descriptor {
            media_type: MEDIA_TYPE_OCI_MANIFEST.to_string(),
            digest: format!("sha256:{}", digit.to_string().repeat(64)),
            size: 1,
            annotations: None,
            platform: Some(crate::manifest::Platform {
                architecture: arch.to_string(),
                os: "linux".to_string(),
                variant: None,
            }),
        };
        let r = ImageReference::parse("x").unwrap();
        let index = Index {
            schema_version: 2,
            media_type: None,
            manifests: vec![d('1', other), d('2', arch)],
        };
        assert!(choose_platform(&index, &r).unwrap().digest.ends_with('2'));
        let index = Index {
            schema_version: 2,
            media_type: None,
            manifests: vec![d('1', other)],
        };
        let err = choose_platform(&index, &r).unwrap_err().to_string();
        assert!(err.contains(&format!("linux/{other}")), "{err}");
    }
}
