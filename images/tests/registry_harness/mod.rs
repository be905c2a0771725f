//! A real registry (Debian's `docker-registry`) on loopback for tests, a pusher that
//! speaks the registry API, a counting and fault-injecting proxy, and a token server.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use mezzo_images::build::{BuiltImage, Blob};
use mezzo_images::Digest;
use serde_json::json;

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Token auth settings for the registry.
pub struct TokenAuth {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    pub root_cert_bundle: PathBuf,
}

/// A running `docker-registry`; killed on drop.
pub struct Registry {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
    pub scheme: &'static str,
}

impl Registry {
    /// Starts a registry storing under `dir`, optionally with token auth and TLS (cert, key).
    pub fn start(dir: &Path, token: Option<&TokenAuth>, tls: Option<(&Path, &Path)>) -> Self {
        fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        );
        if let Some((cert, key)) = tls {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        if let Some(t) = token {
            config.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                t.realm,
                t.service,
                t.issuer,
                t.root_cert_bundle.display()
            ));
        }
        let config_path = dir.join("config.yml");
        fs::write(&config_path, config).unwrap();
        let log = fs::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start /usr/bin/docker-registry (Debian's docker-registry package)");
        let registry = Self {
            child,
            port,
            dir: dir.to_path_buf(),
            scheme: if tls.is_some() { "https" } else { "http" },
        };
        // Ready once the port accepts connections.
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not start: {}",
                fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        registry
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    /// `127.0.0.1:<port>`, as references name it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pushes blobs and manifests over the registry API.
pub struct Pusher {
    pub http: reqwest::Client,
    pub base: String,
    /// `Authorization` header to send, if the registry wants one.
    pub auth: Option<String>,
}

impl Pusher {
    pub fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.to_string(),
            auth: None,
        }
    }

    fn req(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, url);
        match &self.auth {
            Some(a) => r.header("authorization", a),
            None => r,
        }
    }

    /// Monolithic upload: POST an upload session, PUT the bytes with `?digest=`.
    pub async fn blob(&self, repo: &str, data: &[u8]) -> Digest {
        let digest = Digest::of(data);
        let resp = self
            .req(reqwest::Method::POST, &format!("{}/v2/{repo}/blobs/uploads/", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202, "start upload: {:?}", resp.text().await);
        let location = resp.headers()["location"].to_str().unwrap().to_string();
        let location = if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let resp = self
            .req(reqwest::Method::PUT, &format!("{location}{sep}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "finish upload: {:?}", resp.text().await);
        digest
    }

    /// PUTs a manifest or index under `reference` (a tag or digest); returns its digest.
    pub async fn manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> Digest {
        let resp = self
            .req(reqwest::Method::PUT, &format!("{}/v2/{repo}/manifests/{reference}", self.base))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "put manifest: {:?}", resp.text().await);
        Digest::of(body)
    }

    /// Pushes a built image as an OCI manifest under `tag`; returns the manifest digest.
    pub async fn oci_image(&self, repo: &str, tag: &str, image: &BuiltImage) -> Digest {
        self.blob(repo, &image.config.data).await;
        for layer in &image.layers {
            self.blob(repo, &layer.data).await;
        }
        self.manifest(repo, tag, OCI_MANIFEST, &image.manifest.data).await
    }

    /// Pushes a built image under a Docker schema 2 manifest (gzip layer types).
    pub async fn docker_image(&self, repo: &str, tag: &str, image: &BuiltImage) -> Digest {
        let layers: Vec<(&Blob, &str)> = image.layers.iter().map(|l| (l, DOCKER_LAYER_GZIP)).collect();
        let body = manifest_json(DOCKER_MANIFEST, (&image.config, DOCKER_CONFIG), &layers);
        self.blob(repo, &image.config.data).await;
        for layer in &image.layers {
            self.blob(repo, &layer.data).await;
        }
        self.manifest(repo, tag, DOCKER_MANIFEST, &body).await
    }
}

/// A manifest document naming `config` and `layers` with the given media types.
pub fn manifest_json(media_type: &str, config: (&Blob, &str), layers: &[(&Blob, &str)]) -> Vec<u8> {
    let d = |b: &Blob, t: &str| json!({"mediaType": t, "digest": b.digest.to_string(), "size": b.data.len()});
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": d(config.0, config.1),
        "layers": layers.iter().map(|(b, t)| d(b, t)).collect::<Vec<_>>(),
    }))
    .unwrap()
}

/// What the proxy does to blob responses.
#[derive(Default)]
pub struct Faults {
    /// Flip a byte in the body of the blob whose digest is this.
    pub corrupt: Mutex<Option<String>>,
    /// Cut the body of this blob halfway, this many more times.
    pub truncate: Mutex<Option<(String, usize)>>,
    /// Answer blob GETs with a 307 to the registry itself.
    pub redirect_blobs: AtomicBool,
}

struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    gets: Mutex<HashMap<String, usize>>,
    faults: Arc<Faults>,
}

/// A loopback HTTP proxy in front of a registry that counts GETs by path and injects faults.
pub struct Proxy {
    pub url: String,
    state: Arc<ProxyState>,
    pub faults: Arc<Faults>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: &str) -> Self {
        let faults = Arc::new(Faults::default());
        let state = Arc::new(ProxyState {
            upstream: upstream.to_string(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            gets: Mutex::new(HashMap::new()),
            faults: faults.clone(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(proxy).with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, state, faults, task }
    }

    /// GETs of the blob `digest` seen so far.
    pub fn blob_gets(&self, digest: &Digest) -> usize {
        let suffix = format!("/blobs/{digest}");
        self.state
            .gets
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p.ends_with(&suffix))
            .map(|(_, n)| *n)
            .sum()
    }

    /// GETs of manifests seen so far.
    pub fn manifest_gets(&self) -> usize {
        self.state
            .gets
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p.contains("/manifests/"))
            .map(|(_, n)| *n)
            .sum()
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn proxy(State(st): State<Arc<ProxyState>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let path_q = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| path.clone());
    let method = req.method().clone();
    if method == axum::http::Method::GET {
        *st.gets.lock().unwrap().entry(path.clone()).or_default() += 1;
    }
    let blob = path.contains("/blobs/sha256:") && method == axum::http::Method::GET;
    if blob && st.faults.redirect_blobs.load(Ordering::SeqCst) {
        return (
            StatusCode::TEMPORARY_REDIRECT,
            [("location", format!("{}{path_q}", st.upstream))],
        )
            .into_response();
    }
    let mut headers = req.headers().clone();
    headers.remove("host");
    let body = axum::body::to_bytes(req.into_body(), usize::MAX).await.unwrap();
    let resp = match st
        .client
        .request(method, format!("{}{path_q}", st.upstream))
        .headers(headers)
        .body(body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = resp.status();
    let mut out_headers = resp.headers().clone();
    out_headers.remove("transfer-encoding");
    out_headers.remove("connection");
    let digest = path.rsplit('/').next().unwrap_or("").to_string();
    let corrupt = blob && st.faults.corrupt.lock().unwrap().as_deref() == Some(digest.as_str());
    let truncate = blob && {
        let mut t = st.faults.truncate.lock().unwrap();
        match t.as_mut() {
            Some((d, n)) if *d == digest && *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    };
    let mut builder = Response::builder().status(status);
    *builder.headers_mut().unwrap() = out_headers;
    if corrupt || truncate {
        let mut bytes = resp.bytes().await.unwrap().to_vec();
        if corrupt {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
            return builder.body(Body::from(bytes)).unwrap();
        }
        let half = Bytes::from(bytes[..bytes.len() / 2].to_vec());
        // The cut comes after the first half has gone out, so the client sees a broken body.
        let stream = futures::StreamExt::chain(
            futures::stream::iter(vec![Ok::<Bytes, std::io::Error>(half)]),
            futures::stream::once(async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(std::io::Error::other("connection cut by the test proxy"))
            }),
        );
        return builder.body(Body::from_stream(stream)).unwrap();
    }
    builder.body(Body::from_stream(resp.bytes_stream())).unwrap()
}

/// Signs registry tokens (JWT, ES256, with the signing certificate in `x5c`).
pub struct TokenSigner {
    key: ring::signature::EcdsaKeyPair,
    cert_b64: String,
    pub cert_pem: String,
    pub issuer: String,
    pub service: String,
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

impl TokenSigner {
    pub fn new(issuer: &str, service: &str) -> Self {
        let key_pair = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["mezzo-token-signer".to_string()])
            .unwrap()
            .self_signed(&key_pair)
            .unwrap();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key_pair.serialize_der(),
            &ring::rand::SystemRandom::new(),
        )
        .unwrap();
        Self {
            key,
            cert_b64: base64::engine::general_purpose::STANDARD.encode(cert.der()),
            cert_pem: cert.pem(),
            issuer: issuer.to_string(),
            service: service.to_string(),
        }
    }

    /// A token granting `actions` on each repository of `access`.
    pub fn mint(&self, access: &[(String, Vec<String>)]) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let header = json!({"typ": "JWT", "alg": "ES256", "x5c": [self.cert_b64]});
        let claims = json!({
            "iss": self.issuer,
            "sub": "alice",
            "aud": self.service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now - 10,
            "jti": format!("{now}-{}", rand_id()),
            "access": access.iter().map(|(name, actions)| json!({
                "type": "repository", "name": name, "actions": actions,
            })).collect::<Vec<_>>(),
        });
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let sig = self
            .key
            .sign(&ring::rand::SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", b64url(sig.as_ref()))
    }
}

fn rand_id() -> u64 {
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::Relaxed) as u64 ^ std::process::id() as u64
}

struct TokenState {
    signer: Arc<TokenSigner>,
    user: String,
    password: String,
    scopes: Mutex<Vec<String>>,
}

/// A token server on loopback: hands tokens for the requested scopes to `user:password`.
pub struct TokenServer {
    pub realm: String,
    state: Arc<TokenState>,
    task: tokio::task::JoinHandle<()>,
}

impl TokenServer {
    pub async fn start(signer: Arc<TokenSigner>, user: &str, password: &str) -> Self {
        let state = Arc::new(TokenState {
            signer,
            user: user.to_string(),
            password: password.to_string(),
            scopes: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/token", axum::routing::get(token))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { realm, state, task }
    }

    /// The scopes asked for so far (by holders of the right credentials).
    pub fn scopes(&self) -> Vec<String> {
        self.state.scopes.lock().unwrap().clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn token(
    State(st): State<Arc<TokenState>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", st.user, st.password))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return (StatusCode::UNAUTHORIZED, "bad credentials").into_response();
    }
    if q.get("service") != Some(&st.signer.service) {
        return (StatusCode::BAD_REQUEST, "unknown service").into_response();
    }
    let scope = q.get("scope").cloned().unwrap_or_default();
    st.scopes.lock().unwrap().push(scope.clone());
    let mut access = Vec::new();
    for s in scope.split(' ').filter(|s| !s.is_empty()) {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() >= 3 && parts[0] == "repository" {
            let name = parts[1..parts.len() - 1].join(":");
            let actions = parts[parts.len() - 1].split(',').map(str::to_string).collect();
            access.push((name, actions));
        }
    }
    // The OAuth2 spelling, which clients must take as well as docker's `token`.
    axum::Json(json!({"access_token": st.signer.mint(&access), "expires_in": 300})).into_response()
}

/// A CA and a server certificate for 127.0.0.1 signed by it, as PEM files in `dir`:
/// returns (ca.pem, cert.pem, key.pem).
pub fn tls_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "mezzo test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let paths = (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"));
    fs::write(&paths.0, ca.pem()).unwrap();
    fs::write(&paths.1, cert.pem()).unwrap();
    fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}
