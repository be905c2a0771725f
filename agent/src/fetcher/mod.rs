//! Mesos's fetcher: the URIs of a task's (or custom executor's)
//! `CommandInfo` are fetched into its sandbox before anything runs in it.
//!
//! - `http://`, `https://` (rustls; `--fetcher_ca_file` adds CAs), `file://`
//!   and absolute local paths; other schemes fail the fetch.
//! - `output_file` renames the download (a relative path that stays in the
//!   sandbox); `executable` makes it mode 0755 (and it is not extracted);
//!   `extract` (Mesos's default: true) unpacks archives, decided by the
//!   name's extension as Mesos does (see `archive`), keeping the archive.
//! - `cache` goes through the agent-wide cache (`cache`).
//! - A download that receives nothing for `--fetcher_stall_timeout` fails.
//! - What is written counts against the task's `disk`, when it has one.
//! - Progress and errors go to the sandbox's `stderr`, as Mesos's fetcher
//!   writes them, and a failure names the URI and its cause.
//!
//! Nothing is written outside the sandbox (see `safe_fs`) and everything
//! written belongs to the sandbox's owner.

pub mod archive;
pub mod cache;
pub mod safe_fs;

use archive::Budget;
use futures::StreamExt;
use mezzo_proto::mesos::v1::command_info::Uri;
use safe_fs::{components, Dir};
use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How the fetcher is set up (the agent's `--fetcher_*` flags).
#[derive(Debug, Clone)]
pub struct FetcherOptions {
    pub cache_dir: PathBuf,
    pub cache_size: u64,
    pub stall_timeout: Duration,
    pub ca_file: Option<PathBuf>,
}

/// A failed fetch: the URI and why.
#[derive(Debug, thiserror::Error)]
#[error("Failed to fetch '{uri}': {cause}")]
pub struct FetchError {
    pub uri: String,
    pub cause: String,
}

/// The fetcher, one per agent.
#[derive(Debug)]
pub struct Fetcher {
    client: reqwest::Client,
    stall_timeout: Duration,
    cache: cache::Cache,
}

/// Where a URI's bytes come from.
enum Source {
    Http(reqwest::Url),
    Local(PathBuf),
}

/// Mesos's byte sizes in messages: `10MB`, `512KB`, `300B`.
pub fn show_bytes(n: u64) -> String {
    for (unit, scale) in [("GB", 1u64 << 30), ("MB", 1 << 20), ("KB", 1 << 10)] {
        if n >= scale && n % scale == 0 {
            return format!("{}{unit}", n / scale);
        }
    }
    if n >= 1 << 20 {
        return format!("{:.2}MB", n as f64 / (1u64 << 20) as f64);
    }
    format!("{n}B")
}

/// The full cause of an error (reqwest hides its sources in `Display`).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out
}

/// The sandbox's `stderr`, where the fetcher logs as Mesos's does (glog lines).
struct Log(Option<File>);

impl Log {
    fn line(&mut self, level: char, msg: &str) {
        let Some(f) = &mut self.0 else { return };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let (secs, micros) = (now.as_secs(), now.subsec_micros());
        let (days, rem) = (secs / 86400, secs % 86400);
        let (_, month, day) = civil_from_days(days as i64);
        let line = format!(
            "{level}{month:02}{day:02} {:02}:{:02}:{:02}.{micros:06} {:>5} fetcher.rs] {msg}\n",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            std::process::id()
        );
        let _ = f.write_all(line.as_bytes());
    }
    fn info(&mut self, msg: &str) {
        self.line('I', msg)
    }
    fn error(&mut self, msg: &str) {
        self.line('E', msg)
    }
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The source of `value` (leading whitespace dropped, as Mesos does).
fn source(value: &str) -> Result<Source, String> {
    if value.contains('\0') {
        return Err("the URI contains a NUL byte".to_string());
    }
    let lower = value.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return reqwest::Url::parse(value).map(Source::Http).map_err(|e| format!("invalid URL: {e}"));
    }
    if let Some(path) = value.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err("a file:// URI needs an absolute path".to_string());
        }
        return Ok(Source::Local(PathBuf::from(path)));
    }
    if value.starts_with('/') {
        return Ok(Source::Local(PathBuf::from(value)));
    }
    match value.split_once("://") {
        Some((scheme, _)) => Err(format!("unsupported URI scheme '{scheme}' (supported: http, https, file, absolute paths)")),
        None => Err("a relative path is not supported (Mesos resolves it under --frameworks_home, which mezzo does not have)".to_string()),
    }
}

/// The name the URI gets in the sandbox: `output_file`, else the URI's last
/// path component.
fn destination(uri: &Uri, source: &Source) -> Result<Vec<OsString>, String> {
    if let Some(out) = uri.output_file.as_deref().filter(|o| !o.is_empty()) {
        let parts = components(out.as_bytes()).map_err(|e| format!("invalid output_file: {e}"))?;
        if parts.is_empty() {
            return Err(format!("invalid output_file '{out}': it names no file"));
        }
        return Ok(parts);
    }
    let base = match source {
        Source::Http(url) => url.path_segments().and_then(|mut s| s.next_back()).unwrap_or("").to_string(),
        Source::Local(path) => path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
    };
    let parts = components(base.as_bytes()).map_err(|e| format!("cannot name the download: {e}"))?;
    if parts.len() != 1 {
        return Err("the URI has no file name; give it an output_file".to_string());
    }
    Ok(parts)
}

/// Whether the user `uid` (primary group `gid`) may read `meta` by its
/// permission bits: a framework fetches local files as its task's user.
fn readable_by(meta: &std::fs::Metadata, uid: u32, gid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let mode = meta.mode();
    uid == 0 || (meta.uid() == uid && mode & 0o400 != 0) || (meta.gid() == gid && mode & 0o040 != 0) || mode & 0o004 != 0
}

/// Makes a cache entry shareable by hard link: root's, read-only for
/// everyone (0444, or 0555 for an `executable` URI's entry).
fn share_read_only(entry: &File, executable: bool) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mode = if executable { 0o555 } else { 0o444 };
    let meta = entry.metadata().map_err(|e| format!("cannot inspect the cache entry: {e}"))?;
    if meta.uid() != 0 || meta.gid() != 0 {
        std::os::unix::fs::fchown(entry, Some(0), Some(0)).map_err(|e| format!("cannot chown the cache entry: {e}"))?;
    }
    if meta.mode() & 0o7777 != mode {
        entry.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(|e| format!("cannot chmod the cache entry: {e}"))?;
    }
    Ok(())
}

/// Copies `src` (a cache entry) into the new file `dst`: a reflink when the
/// filesystem has them, else an in-kernel copy.
fn clone_or_copy(src: &File, dst: &mut File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: FICLONE takes the source descriptor as its argument; both are open.
    let r = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE as _, src.as_raw_fd()) };
    if r == 0 {
        return Ok(());
    }
    let mut src = src;
    std::io::copy(&mut src, dst).map(|_| ())
}

impl Fetcher {
    /// Builds the fetcher: the HTTP client (with the CA file) and the cache.
    pub fn new(options: &FetcherOptions) -> Result<Fetcher, String> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(concat!("mezzo-fetcher/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(options.stall_timeout)
            .redirect(reqwest::redirect::Policy::limited(10));
        if let Some(ca) = &options.ca_file {
            let pem = std::fs::read(ca).map_err(|e| format!("cannot read --fetcher_ca_file {}: {e}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("cannot parse --fetcher_ca_file {}: {e}", ca.display()))?;
            if certs.is_empty() {
                return Err(format!("--fetcher_ca_file {} holds no certificate", ca.display()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| format!("cannot build the fetcher's HTTP client: {e}"))?;
        let cache = cache::Cache::new(&options.cache_dir, options.cache_size)
            .map_err(|e| format!("cannot open --fetcher_cache_dir {}: {e}", options.cache_dir.display()))?;
        Ok(Fetcher { client, stall_timeout: options.stall_timeout, cache })
    }

    /// The cache (for tests and metrics).
    pub fn cache(&self) -> &cache::Cache {
        &self.cache
    }

    /// Fetches `uris` into `sandbox`, writing at most `disk_limit` bytes.
    /// The first failure ends the fetch.
    pub async fn fetch(&self, uris: &[Uri], sandbox: &Path, disk_limit: Option<u64>) -> Result<(), FetchError> {
        let mut log = Log(mezzo_containerizer::sandbox_fs::open_output(&sandbox.join("stderr"), 0o644).ok());
        let fail = |log: &mut Log, uri: &str, cause: String| {
            let e = FetchError { uri: uri.to_string(), cause };
            log.error(&e.to_string());
            e
        };
        log.info(&format!("Fetching {} URI(s) into '{}'", uris.len(), sandbox.display()));
        let dir = match Dir::open_sandbox(sandbox) {
            Ok(d) => d,
            Err(e) => return Err(fail(&mut log, uris.first().map(|u| u.value.as_str()).unwrap_or(""), format!("cannot open the sandbox: {e}"))),
        };
        let mut budget = Budget::new(disk_limit, "the task's disk limit");
        for uri in uris {
            let value = uri.value.trim_start();
            log.info(&format!("Fetching URI '{value}'"));
            if let Err(cause) = self.fetch_one(uri, value, &dir, &mut budget, &mut log).await {
                return Err(fail(&mut log, value, cause));
            }
        }
        log.info(&format!("Successfully fetched all URIs into '{}'", sandbox.display()));
        Ok(())
    }

    async fn fetch_one(&self, uri: &Uri, value: &str, sandbox: &Dir, budget: &mut Budget, log: &mut Log) -> Result<(), String> {
        let source = source(value)?;
        let parts = destination(uri, &source)?;
        let shown: PathBuf = parts.iter().collect();
        let (name, dirs) = parts.split_last().expect("destination has a name");
        let parent = sandbox.descend(dirs)?;
        let mut file = parent.create_file(name)?;
        let cached = uri.cache.unwrap_or(false);
        let executable = uri.executable.unwrap_or(false);
        let mut linked = false;
        if cached {
            // Entries are shared read-only, so the mode is part of the key.
            let key = cache::Cache::key(sandbox.owner.0, &if executable { format!("{value}\0executable") } else { value.to_string() });
            let capacity = self.cache.capacity();
            let owner = sandbox.owner;
            let from = &source;
            let got = self
                .cache
                .get(&key, |tmp| async move {
                    let out = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).map_err(|e| format!("cannot write the cache: {e}"))?;
                    let mut limit = Budget::new(Some(capacity), "--fetcher_cache_size");
                    self.download(from, out, &mut limit, owner).await
                })
                .await;
            match got {
                Ok(entry) => {
                    log.info(&if entry.hit { format!("Using the cached copy of '{value}'") } else { format!("Downloaded '{value}' into the cache") });
                    let src = File::open(&entry.path).map_err(|e| format!("cannot read the cache entry: {e}"))?;
                    let len = src.metadata().map_err(|e| format!("cannot read the cache entry: {e}"))?.len();
                    budget.take(len)?;
                    // A task user other than root gets a hard link to the
                    // entry, made root's and read-only first: it can read
                    // (and run) the file but not change what later tasks
                    // get. Root would write through read-only bits, so a
                    // root task gets its own copy, as Mesos's fetcher makes.
                    if sandbox.owner.0 != 0 {
                        match share_read_only(&src, executable).and_then(|()| parent.replace_with_link(&entry.path, name)) {
                            Ok(()) => linked = true,
                            Err(e) => {
                                tracing::debug!(uri = %value, error = %e, "cannot link the cache entry; copying it");
                                file = parent.create_file(name)?;
                            }
                        }
                    }
                    if !linked {
                        let mut dst = file.try_clone().map_err(|e| e.to_string())?;
                        tokio::task::spawn_blocking(move || clone_or_copy(&src, &mut dst))
                            .await
                            .map_err(|e| format!("copy task failed: {e}"))?
                            .map_err(|e| format!("cannot copy from the cache: {e}"))?;
                    }
                    drop(entry);
                }
                Err(e) if e.contains("--fetcher_cache_size") => {
                    log.info(&format!("'{value}' does not fit in the cache ({e}); fetching directly into the sandbox directory"));
                    self.download(&source, file.try_clone().map_err(|e| e.to_string())?, budget, sandbox.owner).await?;
                }
                Err(e) => return Err(e),
            }
        } else {
            log.info(&format!("Downloading resource from '{value}' to '{}'", shown.display()));
            self.download(&source, file.try_clone().map_err(|e| e.to_string())?, budget, sandbox.owner).await?;
        }
        if executable && !linked {
            safe_fs::set_mode(&file, 0o755)?;
        } else if uri.extract() {
            let name_str = name.to_string_lossy().into_owned();
            if let Some((kind, strip)) = archive::kind_of(&name_str) {
                drop(file);
                let archive_file = parent.open_regular(name)?;
                let mut b = std::mem::replace(budget, Budget::new(None, "no limit"));
                let dest = sandbox.try_clone()?;
                let (result, b) = tokio::task::spawn_blocking(move || {
                    let r = archive::extract(kind, &name_str, strip, archive_file, &dest, &mut b);
                    (r, b)
                })
                .await
                .map_err(|e| format!("extraction task failed: {e}"))?;
                *budget = b;
                let members = result.map_err(|e| format!("cannot extract '{}': {e}", shown.display()))?;
                log.info(&format!("Extracted '{}' into the sandbox directory ({members} member(s))", shown.display()));
            }
        }
        log.info(&format!("Fetched '{value}' to '{}'", shown.display()));
        Ok(())
    }

    /// Streams `source` into `out`, taking every byte from `budget`.
    async fn download(&self, source: &Source, out: File, budget: &mut Budget, owner: (u32, u32)) -> Result<u64, String> {
        match source {
            Source::Http(url) => self.download_http(url, out, budget).await,
            Source::Local(path) => {
                let path = path.clone();
                let mut b = std::mem::replace(budget, Budget::new(None, "no limit"));
                let (r, b) = tokio::task::spawn_blocking(move || {
                    let r = copy_local(&path, out, &mut b, owner);
                    (r, b)
                })
                .await
                .map_err(|e| format!("copy task failed: {e}"))?;
                *budget = b;
                r
            }
        }
    }

    async fn download_http(&self, url: &reqwest::Url, out: File, budget: &mut Budget) -> Result<u64, String> {
        use tokio::io::AsyncWriteExt;
        let stall = self.stall_timeout;
        let response = match tokio::time::timeout(stall, self.client.get(url.clone()).send()).await {
            Err(_) => return Err(format!("no response within --fetcher_stall_timeout ({})", mezzo_proto::duration::format(stall))),
            Ok(Err(e)) => return Err(format!("download failed: {}", chain(&e))),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        if !status.is_success() {
            return Err(format!("HTTP status {status} (received HTTP return code {})", status.as_u16()));
        }
        if let Some(len) = response.content_length() {
            if budget.limit.is_some_and(|l| budget.used + len > l) {
                return Err(format!("its size ({}) {}", show_bytes(len), budget.exceeded()));
            }
        }
        let mut stream = response.bytes_stream();
        let mut file = tokio::fs::File::from_std(out);
        let mut total = 0u64;
        loop {
            match tokio::time::timeout(stall, stream.next()).await {
                Err(_) => {
                    return Err(format!(
                        "download stalled: no data for --fetcher_stall_timeout ({}) after {}",
                        mezzo_proto::duration::format(stall),
                        show_bytes(total)
                    ))
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(format!("download failed: {}", chain(&e))),
                Ok(Some(Ok(chunk))) => {
                    budget.take(chunk.len() as u64)?;
                    file.write_all(&chunk).await.map_err(|e| format!("write error: {e}"))?;
                    total += chunk.len() as u64;
                }
            }
        }
        file.flush().await.map_err(|e| format!("write error: {e}"))?;
        Ok(total)
    }
}

/// Copies the local file `path` (never a device, FIFO or directory) into `out`.
fn copy_local(path: &Path, mut out: File, budget: &mut Budget, owner: (u32, u32)) -> Result<u64, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let src = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot open '{}': {e}", path.display()))?;
    let meta = src.metadata().map_err(|e| format!("cannot inspect '{}': {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("'{}' is not a regular file", path.display()));
    }
    if !readable_by(&meta, owner.0, owner.1) {
        return Err(format!("'{}' is not readable by the task's user (uid {})", path.display(), owner.0));
    }
    budget.take(meta.len())?;
    let n = std::io::copy(&mut src.take(meta.len()), &mut out).map_err(|e| format!("cannot copy '{}': {e}", path.display()))?;
    Ok(n)
}

#[cfg(test)]
mod tests;
