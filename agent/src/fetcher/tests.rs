//! The fetcher's unit tests: every archive kind, the refusals, output_file,
//! executable, the cache (hit, eviction, one download for concurrent
//! requests), the stall timeout and the disk limit, against a loopback HTTP
//! server that counts its requests.

use super::*;
use axum::{body::Body, extract::Path as UrlPath, routing::get, Router};
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use tempfile::TempDir;

struct Setup {
    _tmp: TempDir,
    fetcher: Fetcher,
    sandbox: PathBuf,
    /// Files the URIs come from (`file://`).
    src: PathBuf,
    /// Outside the sandbox: nothing may appear here.
    outside: PathBuf,
}

fn setup_with(cache_size: u64, stall: Duration) -> Setup {
    let tmp = TempDir::new().unwrap();
    let (sandbox, src, outside) = (tmp.path().join("sandbox"), tmp.path().join("src"), tmp.path().join("outside"));
    for d in [&sandbox, &src, &outside] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(sandbox.join("stderr"), b"").unwrap();
    let fetcher = Fetcher::new(&FetcherOptions { cache_dir: tmp.path().join("cache"), cache_size, stall_timeout: stall, ca_file: None }).unwrap();
    Setup { _tmp: tmp, fetcher, sandbox, src, outside }
}

fn setup() -> Setup {
    setup_with(1 << 30, Duration::from_secs(10))
}

fn uri(value: &str) -> Uri {
    Uri { value: value.to_string(), ..Default::default() }
}

impl Setup {
    fn file(&self, name: &str, bytes: &[u8]) -> String {
        std::fs::write(self.src.join(name), bytes).unwrap();
        format!("file://{}", self.src.join(name).display())
    }
    async fn fetch(&self, uris: &[Uri]) -> Result<(), FetchError> {
        self.fetcher.fetch(uris, &self.sandbox, None).await
    }
    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.sandbox.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }
    fn outside_is_empty(&self) {
        assert_eq!(std::fs::read_dir(&self.outside).unwrap().count(), 0, "something was written outside the sandbox");
    }
}

/// A tar of (name, contents, mode) regular files and `dir/` directories.
fn tar_of(members: &[(&str, &str, u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, body, mode) in members {
        let mut h = tar::Header::new_gnu();
        if name.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            h.set_mode(*mode);
            b.append_data(&mut h, name, std::io::empty()).unwrap();
        } else {
            h.set_size(body.len() as u64);
            h.set_mode(*mode);
            b.append_data(&mut h, name, body.as_bytes()).unwrap();
        }
    }
    b.into_inner().unwrap()
}

fn compress(kind: archive::Compression, data: &[u8]) -> Vec<u8> {
    use archive::Compression as C;
    match kind {
        C::None => data.to_vec(),
        C::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        C::Bzip2 => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        C::Xz => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        C::Zstd => zstd::encode_all(data, 1).unwrap(),
    }
}

fn zip_of(members: &[(&str, &str, u32)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, body, mode) in members {
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated).unix_permissions(*mode);
        if name.ends_with('/') {
            w.add_directory(*name, opts).unwrap();
        } else {
            w.start_file(*name, opts).unwrap();
            w.write_all(body.as_bytes()).unwrap();
        }
    }
    w.finish().unwrap().into_inner()
}

fn mode_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

#[tokio::test]
async fn every_archive_kind_is_extracted_and_kept() {
    use archive::Compression as C;
    let members = [("app/", "", 0o755), ("app/run.sh", "#!/bin/sh\necho hi\n", 0o755), ("app/conf/data.txt", "data", 0o640)];
    let tar = tar_of(&members);
    for (name, kind) in [
        ("a.tar", C::None),
        ("a.tar.gz", C::Gzip),
        ("a.tgz", C::Gzip),
        ("a.tar.bz2", C::Bzip2),
        ("a.tar.xz", C::Xz),
        ("a.tar.zst", C::Zstd),
    ] {
        let s = setup();
        let u = s.file(name, &compress(kind, &tar));
        s.fetch(&[uri(&u)]).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(s.read("app/run.sh"), "#!/bin/sh\necho hi\n", "{name}");
        assert_eq!(s.read("app/conf/data.txt"), "data", "{name}");
        assert_eq!(mode_of(&s.sandbox.join("app/run.sh")), 0o755, "{name}");
        assert_eq!(mode_of(&s.sandbox.join("app/conf/data.txt")), 0o640, "{name}");
        assert!(s.sandbox.join(name).is_file(), "{name}: the archive stays, as in Mesos");
    }
    let s = setup();
    let u = s.file("a.zip", &zip_of(&members));
    s.fetch(&[uri(&u)]).await.unwrap();
    assert_eq!(s.read("app/run.sh"), "#!/bin/sh\necho hi\n");
    assert_eq!(mode_of(&s.sandbox.join("app/run.sh")), 0o755);
    assert_eq!(s.read("app/conf/data.txt"), "data");
    for (name, kind) in [("notes.txt.gz", C::Gzip), ("notes.txt.bz2", C::Bzip2), ("notes.txt.xz", C::Xz), ("notes.txt.zst", C::Zstd)] {
        let s = setup();
        let u = s.file(name, &compress(kind, b"single file"));
        s.fetch(&[uri(&u)]).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(s.read("notes.txt"), "single file", "{name}");
    }
    // extract=false and a name that is no archive: fetched as is.
    let s = setup();
    let gz = compress(C::Gzip, &tar);
    let u = s.file("b.tar.gz", &gz);
    s.fetch(&[Uri { extract: Some(false), ..uri(&u) }, uri(&s.file("plain.txt", b"plain"))]).await.unwrap();
    assert_eq!(std::fs::read(s.sandbox.join("b.tar.gz")).unwrap(), gz);
    assert!(!s.sandbox.join("app").exists());
    assert_eq!(s.read("plain.txt"), "plain");
}

/// A tar with one member whose header is written by hand (names and types
/// the tar crate's builder refuses to write).
fn raw_tar(name: &[u8], kind: tar::EntryType, link: &[u8], body: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    h.set_entry_type(kind);
    h.set_size(body.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(body);
    out.resize(512 + body.len().div_ceil(512) * 512, 0);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[tokio::test]
async fn hostile_archives_are_refused_and_write_nothing_outside() {
    use tar::EntryType as T;
    let s = setup();
    let escape = format!("../outside/evil");
    let abs = format!("{}/evil", s.outside.display());
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("dotdot.tar", raw_tar(escape.as_bytes(), T::Regular, b"", b"x"), "escapes the sandbox"),
        ("abs.tar", raw_tar(abs.as_bytes(), T::Regular, b"", b"x"), "absolute path"),
        ("symlink.tar", raw_tar(b"link", T::Symlink, s.outside.to_string_lossy().as_bytes(), b""), "symbolic links"),
        ("hardlink.tar", raw_tar(b"hard", T::Link, b"/etc/passwd", b""), "hard links"),
        ("device.tar", raw_tar(b"dev", T::Char, b"", b""), "device nodes"),
        ("fifo.tar", raw_tar(b"fifo", T::Fifo, b"", b""), "FIFOs"),
    ];
    for (name, bytes, why) in cases {
        let u = s.file(name, &bytes);
        let err = s.fetch(&[uri(&u)]).await.unwrap_err();
        assert!(err.to_string().contains(why), "{name}: {err}");
        assert!(err.to_string().contains(&u), "{name}: the message names the URI: {err}");
        s.outside_is_empty();
    }
    // zip: a member escaping, and a symlink member.
    let u = s.file("escape.zip", &zip_of(&[("../outside/evil", "x", 0o644)]));
    let err = s.fetch(&[uri(&u)]).await.unwrap_err();
    assert!(err.to_string().contains("escapes the sandbox"), "{err}");
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.add_symlink("link", s.outside.to_string_lossy(), zip::write::SimpleFileOptions::default()).unwrap();
    let u = s.file("link.zip", &w.finish().unwrap().into_inner());
    let err = s.fetch(&[uri(&u)]).await.unwrap_err();
    assert!(err.to_string().contains("symbolic links"), "{err}");
    s.outside_is_empty();
    assert!(!s.sandbox.join("link").exists() && !s.sandbox.join("dev").exists());
}

#[tokio::test]
async fn symlinks_in_the_sandbox_are_never_followed() {
    let s = setup();
    // A symlinked directory: an archive member beneath it is refused.
    std::os::unix::fs::symlink(&s.outside, s.sandbox.join("app")).unwrap();
    let u = s.file("a.tar", &tar_of(&[("app/evil", "x", 0o644)]));
    let err = s.fetch(&[uri(&u)]).await.unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");
    // output_file through it too.
    let u = s.file("f", b"x");
    let err = s.fetch(&[Uri { output_file: Some("app/f".into()), ..uri(&u) }]).await.unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");
    // A symlink with the download's name is replaced, not written through.
    let target = s.outside.join("victim");
    std::os::unix::fs::symlink(&target, s.sandbox.join("f")).unwrap();
    s.fetch(&[uri(&u)]).await.unwrap();
    assert!(std::fs::symlink_metadata(s.sandbox.join("f")).unwrap().is_file());
    s.outside_is_empty();
}

#[tokio::test]
async fn output_file_renames_and_is_validated() {
    let s = setup();
    let u = s.file("orig.sh", b"echo renamed");
    s.fetch(&[Uri { output_file: Some("bin/job.sh".into()), ..uri(&u) }]).await.unwrap();
    assert_eq!(s.read("bin/job.sh"), "echo renamed");
    assert!(!s.sandbox.join("orig.sh").exists());
    for (bad, why) in [("../x", "escapes the sandbox"), ("a/../../x", "escapes the sandbox"), ("/etc/x", "absolute path"), ("a\0b", "NUL"), ("./", "names no file")] {
        let err = s.fetch(&[Uri { output_file: Some(bad.into()), ..uri(&u) }]).await.unwrap_err();
        assert!(err.to_string().contains("output_file") && err.to_string().contains(why), "{bad:?}: {err}");
    }
    s.outside_is_empty();
}

#[tokio::test]
async fn executable_is_mode_0755_and_not_extracted() {
    let s = setup();
    let u = s.file("run.tar.gz", &compress(archive::Compression::Gzip, &tar_of(&[("inner", "x", 0o644)])));
    s.fetch(&[Uri { executable: Some(true), ..uri(&u) }]).await.unwrap();
    assert_eq!(mode_of(&s.sandbox.join("run.tar.gz")), 0o755);
    assert!(!s.sandbox.join("inner").exists());
    let u = s.file("plain", b"x");
    s.fetch(&[uri(&u)]).await.unwrap();
    assert_eq!(mode_of(&s.sandbox.join("plain")), 0o644);
}

#[tokio::test]
async fn unsupported_and_missing_sources_fail_naming_the_uri() {
    let s = setup();
    for (value, why) in [("hdfs://nn/x", "unsupported URI scheme 'hdfs'"), ("relative/x", "relative path"), ("/nonexistent/file", "No such file")] {
        let err = s.fetch(&[uri(value)]).await.unwrap_err();
        assert_eq!(err.uri, value);
        assert!(err.to_string().contains(why), "{value}: {err}");
    }
    let err = s.fetch(&[uri("file:///dev/null")]).await.unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

/// A loopback HTTP server: `/files/<name>` serves `files[name]`, `/stall`
/// sends 3 bytes and then nothing; every request is counted by path.
struct Server {
    base: String,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start(files: HashMap<String, Vec<u8>>, delay: Duration) -> Server {
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let files = Arc::new(files);
        let (h, f) = (hits.clone(), files.clone());
        let router = Router::new()
            .route(
                "/files/{name}",
                get(move |UrlPath(name): UrlPath<String>| {
                    let (h, f) = (h.clone(), f.clone());
                    async move {
                        *h.lock().unwrap().entry(name.clone()).or_default() += 1;
                        tokio::time::sleep(delay).await;
                        match f.get(&name) {
                            Some(b) => (axum::http::StatusCode::OK, Body::from(b.clone())),
                            None => (axum::http::StatusCode::NOT_FOUND, Body::from("no such file")),
                        }
                    }
                }),
            )
            .route(
                "/stall",
                get(|| async {
                    let head = futures::stream::once(async { Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"abc")) });
                    Body::from_stream(head.chain(futures::stream::pending()))
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Server { base, hits, task }
    }
    fn url(&self, name: &str) -> String {
        format!("{}/files/{name}", self.base)
    }
    fn hits(&self, name: &str) -> usize {
        self.hits.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

#[tokio::test]
async fn http_downloads_and_reports_the_status_code() {
    let s = setup();
    let srv = Server::start(HashMap::from([("job.sh".to_string(), b"echo from http".to_vec())]), Duration::ZERO).await;
    s.fetch(&[Uri { executable: Some(true), ..uri(&srv.url("job.sh")) }]).await.unwrap();
    assert_eq!(s.read("job.sh"), "echo from http");
    assert_eq!(mode_of(&s.sandbox.join("job.sh")), 0o755);
    let missing = srv.url("missing.sh");
    let err = s.fetch(&[uri(&missing)]).await.unwrap_err();
    assert_eq!(err.uri, missing);
    assert!(err.to_string().contains("404"), "{err}");
    // A port nobody listens on: the connect error is named.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let err = s.fetch(&[uri(&format!("http://127.0.0.1:{port}/x"))]).await.unwrap_err();
    assert!(err.to_string().to_lowercase().contains("connect"), "{err}");
    // The fetcher's lines are in the sandbox's stderr, as Mesos's.
    let log = s.read("stderr");
    assert!(log.contains(&format!("Fetching URI '{}'", srv.url("job.sh"))), "{log}");
    assert!(log.contains(&format!("Failed to fetch '{missing}'")) && log.contains("404"), "{log}");
}

#[tokio::test]
async fn the_cache_downloads_once_and_evicts_the_least_recently_used() {
    let body = |c: u8| vec![c; 2000];
    let files = HashMap::from([("a".to_string(), body(b'a')), ("b".to_string(), body(b'b')), ("c".to_string(), body(b'c'))]);
    // Each response takes 200ms, so the concurrent requests overlap.
    let srv = Server::start(files, Duration::from_millis(200)).await;
    let s = setup_with(4500, Duration::from_secs(10));
    let cached = |name: &str| Uri { cache: Some(true), ..uri(&srv.url(name)) };
    let sandboxes: Vec<TempDir> = (0..4).map(|_| TempDir::new().unwrap()).collect();
    let a = [cached("a")];
    let fetches = sandboxes.iter().map(|d| s.fetcher.fetch(&a, d.path(), None));
    for r in futures::future::join_all(fetches).await {
        r.unwrap();
    }
    assert_eq!(srv.hits("a"), 1, "four concurrent requests for one URI download it once");
    for d in &sandboxes {
        assert_eq!(std::fs::read(d.path().join("a")).unwrap(), body(b'a'));
    }
    s.fetch(&[cached("a")]).await.unwrap();
    assert_eq!(srv.hits("a"), 1, "a cache hit");
    assert!(s.read("stderr").contains("Using the cached copy"));
    // b fits beside a (4000 <= 4500); c evicts the least recently used: a after b is used again.
    s.fetch(&[cached("b")]).await.unwrap();
    s.fetch(&[cached("a"), cached("b")]).await.unwrap();
    s.fetch(&[cached("c")]).await.unwrap();
    assert!(s.fetcher.cache().size() <= 4500);
    s.fetch(&[cached("b")]).await.unwrap();
    assert_eq!(srv.hits("b"), 1, "b was used more recently than a and stayed");
    s.fetch(&[cached("a")]).await.unwrap();
    assert_eq!(srv.hits("a"), 2, "a was evicted and downloaded again");
    // Uncached fetches always download.
    s.fetch(&[uri(&srv.url("c")), uri(&srv.url("c"))]).await.unwrap();
    assert_eq!(srv.hits("c"), 3);
}

#[tokio::test]
async fn a_cancelled_cached_download_leaves_the_entry_evictable() {
    let files = HashMap::from([("x".to_string(), vec![1u8; 2000]), ("y".to_string(), vec![2u8; 2000]), ("z".to_string(), vec![3u8; 2000])]);
    let srv = Server::start(files, Duration::from_millis(300)).await;
    let s = setup_with(4500, Duration::from_secs(10));
    let cached = |name: &str| Uri { cache: Some(true), ..uri(&srv.url(name)) };
    // Cancelled while the response is delayed (as a kill during the fetch does).
    assert!(tokio::time::timeout(Duration::from_millis(100), s.fetch(&[cached("x")])).await.is_err());
    s.fetch(&[cached("x")]).await.unwrap();
    s.fetch(&[cached("y")]).await.unwrap();
    s.fetch(&[cached("z")]).await.unwrap();
    assert!(s.fetcher.cache().size() <= 4500, "x, the least recently used, was evicted");
    s.fetch(&[cached("x")]).await.unwrap();
    assert_eq!(srv.hits("x"), 3, "x was downloaded again after its eviction");
}

#[tokio::test]
async fn a_stalled_download_fails_after_the_stall_timeout() {
    let s = setup_with(1 << 20, Duration::from_millis(300));
    let srv = Server::start(HashMap::new(), Duration::ZERO).await;
    let started = std::time::Instant::now();
    let err = s.fetch(&[uri(&format!("{}/stall", srv.base))]).await.unwrap_err();
    assert!(err.to_string().contains("stalled"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[tokio::test]
async fn downloads_and_extractions_beyond_the_disk_limit_fail() {
    let s = setup();
    let srv = Server::start(HashMap::from([("big".to_string(), vec![7u8; 5000])]), Duration::ZERO).await;
    let err = s.fetcher.fetch(&[uri(&srv.url("big"))], &s.sandbox, Some(4096)).await.unwrap_err();
    assert!(err.to_string().contains("the task's disk limit of 4KB") && err.to_string().contains(&srv.url("big")), "{err}");
    let u = s.file("small.txt", &[1u8; 3000]);
    let err = s.fetcher.fetch(&[uri(&u), uri(&u)], &s.sandbox, Some(4096)).await.unwrap_err();
    assert!(err.to_string().contains("disk limit"), "the limit holds for all the URIs together: {err}");
    // A small archive that expands beyond the limit.
    let bomb = compress(archive::Compression::Gzip, &tar_of(&[("zeros", &"0".repeat(100_000), 0o644)]));
    assert!(bomb.len() < 4096);
    let u = s.file("bomb.tar.gz", &bomb);
    let err = s.fetcher.fetch(&[uri(&u)], &s.sandbox, Some(4096)).await.unwrap_err();
    assert!(err.to_string().contains("cannot extract") && err.to_string().contains("disk limit"), "{err}");
    s.fetcher.fetch(&[uri(&u)], &s.sandbox, Some(1 << 20)).await.unwrap();
}

#[tokio::test]
async fn files_belong_to_the_sandbox_owner() {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        mezzo_testkit::skip("chown needs root");
        return;
    }
    let s = setup();
    std::os::unix::fs::chown(&s.sandbox, Some(4321), Some(4322)).unwrap();
    let u = s.file("a.tar", &tar_of(&[("d/", "", 0o755), ("d/f", "x", 0o644)]));
    // The source must be readable by that user: it is (mode 0644).
    s.fetch(&[uri(&u)]).await.unwrap();
    for rel in ["a.tar", "d", "d/f"] {
        let m = std::fs::symlink_metadata(s.sandbox.join(rel)).unwrap();
        assert_eq!((m.uid(), m.gid()), (4321, 4322), "{rel}");
    }
    // A local file that user may not read is refused.
    let secret = s.file("secret", b"s");
    std::fs::set_permissions(s.src.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = s.fetch(&[uri(&secret)]).await.unwrap_err();
    assert!(err.to_string().contains("not readable by the task's user"), "{err}");
}

/// A cached URI reaches a task user other than root as a hard link to
/// the cache entry, made root's and read-only (0444, 0555 when executable,
/// a separate entry); root's sandbox gets its own copy.
#[tokio::test]
async fn cached_files_are_hard_links_for_users_and_copies_for_root() {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        mezzo_testkit::skip("chown needs root");
        return;
    }
    let s = setup();
    std::os::unix::fs::chown(&s.sandbox, Some(4321), Some(4322)).unwrap();
    let u = s.file("tool", b"#!/bin/sh\necho hi\n");
    let cached = Uri { cache: Some(true), ..uri(&u) };
    let executable = Uri { cache: Some(true), executable: Some(true), output_file: Some("tool.sh".into()), ..uri(&u) };
    s.fetch(&[cached.clone(), executable]).await.unwrap();
    let (data, tool) = (std::fs::metadata(s.sandbox.join("tool")).unwrap(), std::fs::metadata(s.sandbox.join("tool.sh")).unwrap());
    assert_eq!((data.nlink(), data.uid(), data.mode() & 0o7777), (2, 0, 0o444), "linked to its cache entry, read-only");
    assert_eq!((tool.nlink(), tool.uid(), tool.mode() & 0o7777), (2, 0, 0o555), "its own entry, executable");
    assert_ne!(data.ino(), tool.ino());
    assert_eq!(s.read("tool"), "#!/bin/sh\necho hi\n");
    // Another sandbox of that user shares the same inode.
    let other = s.sandbox.parent().unwrap().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("stderr"), b"").unwrap();
    std::os::unix::fs::chown(&other, Some(4321), Some(4322)).unwrap();
    s.fetcher.fetch(std::slice::from_ref(&cached), &other, None).await.unwrap();
    assert_eq!(std::fs::metadata(other.join("tool")).unwrap().ino(), data.ino());
    // Root's sandbox: a copy of its own, writable.
    let root = s.sandbox.parent().unwrap().join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("stderr"), b"").unwrap();
    s.fetcher.fetch(&[cached], &root, None).await.unwrap();
    let copy = std::fs::metadata(root.join("tool")).unwrap();
    assert_eq!((copy.nlink(), copy.mode() & 0o200), (1, 0o200));
    assert_eq!(std::fs::read(root.join("tool")).unwrap(), b"#!/bin/sh\necho hi\n");
    s.outside_is_empty();
}

/// A loopback HTTPS server (certificate for 127.0.0.1 from a CA of the
/// test's own) answering every request with `body`; the CA's PEM path.
async fn https_server(dir: &Path, body: &'static [u8]) -> (String, PathBuf, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "mezzo fetcher test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.write_all(body).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (base, ca_file, task)
}

#[tokio::test]
async fn https_with_the_fetcher_ca_file() {
    let s = setup();
    let (base, ca_file, server) = https_server(&s.outside, b"over tls").await;
    let url = format!("{base}/secure.txt");
    // Without the CA: the certificate is not trusted, and the message says so.
    let err = s.fetch(&[uri(&url)]).await.unwrap_err();
    assert!(err.to_string().to_lowercase().contains("certificate"), "{err}");
    let trusting = Fetcher::new(&FetcherOptions {
        cache_dir: s.outside.join("cache"),
        cache_size: 1 << 20,
        stall_timeout: Duration::from_secs(10),
        ca_file: Some(ca_file.clone()),
    })
    .unwrap();
    trusting.fetch(&[uri(&url)], &s.sandbox, None).await.unwrap();
    assert_eq!(s.read("secure.txt"), "over tls");
    // A CA file that holds no certificate is refused when the agent starts.
    std::fs::write(&ca_file, "not a certificate").unwrap();
    let bad = Fetcher::new(&FetcherOptions { cache_dir: s.outside.join("cache"), cache_size: 1, stall_timeout: Duration::from_secs(1), ca_file: Some(ca_file) });
    assert!(bad.unwrap_err().contains("--fetcher_ca_file"));
    server.abort();
}
