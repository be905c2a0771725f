//! Mesos's files API on the agent's sandboxes: `/files/browse`,
//! `/files/read`, `/files/download`, `/files/debug`, and the `browse` and
//! `read` behind the operator API's `LIST_FILES` and `READ_FILE`.
//!
//! Paths are Mesos's: the virtual `/frameworks/<f>/executors/<e>/runs/latest`
//! (or `runs/<container id>`) and the host paths of sandboxes under
//! `<work_dir>/slaves/<agent id>`. A custom executor's tasks share its
//! sandbox, as in Mesos, so they have no paths of their own.
//!
//! Sandboxes are written by their tasks, so every file is opened beneath its
//! sandbox with [`mezzo_containerizer::sandbox_fs`]: no symlink leads out of
//! it, only regular files are opened (a device node or FIFO is refused
//! before anything opens it), only the requested range is read, and the
//! file IO runs on the blocking pool where nothing can block for ever.

use crate::http::error;
use crate::agent::Agent;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use mezzo_containerizer::sandbox_fs::{read_at, Listing, SandboxDir, SandboxFsError};
use mezzo_proto::mesos::v1::{FileInfo, TimeInfo};
use nix::sys::stat::FileStat;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Most bytes one `/files/read` returns: Mesos caps a read at 16 pages.
pub const MAX_READ_LENGTH: u64 = 16 * 4096;

/// Bytes `/files/download` reads per chunk.
const DOWNLOAD_CHUNK: usize = 64 * 1024;

/// Components of a sandbox's own path below the sandboxes' root:
/// `frameworks/<f>/executors/<e>/runs/<container id | latest>`.
const SANDBOX_DEPTH: usize = 6;

/// The `path` parameter, checked: present, no NUL, no `.` or `..`.
fn path_param(q: &HashMap<String, String>) -> Result<&str, Response> {
    let path = match q.get("path") {
        Some(p) if !p.is_empty() => p.as_str(),
        _ => return Err(error(StatusCode::BAD_REQUEST, "Expecting 'path=value' in query")),
    };
    check_path(path).map_err(FilesError::response)?;
    Ok(path)
}

/// Splits a `/files` path into the sandbox part and the part inside it.
/// `path` is Mesos's virtual `/frameworks/<f>/executors/<e>/runs/<latest|cid>/...`
/// or the same below this agent's sandboxes' root as a host path.
fn split_path(root: &Path, path: &str) -> Result<(PathBuf, PathBuf), FilesError> {
    let mut rel: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if rel.first() != Some(&"frameworks") {
        let host = PathBuf::from(format!("/{}", rel.join("/")));
        let roots = [Some(root.to_path_buf()), root.canonicalize().ok()];
        let inside = roots.iter().flatten().find_map(|r| host.strip_prefix(r).ok().map(Path::to_path_buf));
        let Some(inside) = inside.filter(|p| p.starts_with("frameworks")) else {
            return Err(FilesError::Forbidden(format!("'{path}' is outside the sandboxes")));
        };
        let skip = rel.len() - inside.components().count();
        rel.drain(..skip);
    }
    let split = rel.len().min(SANDBOX_DEPTH);
    let sandbox: PathBuf = rel[..split].iter().collect();
    let inside: PathBuf = rel[split..].iter().collect();
    Ok((sandbox, inside))
}

/// Why a files call failed, as Mesos's `FilesError`: each is an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Internal(String),
}

impl FilesError {
    /// The HTTP reply.
    pub fn response(self) -> Response {
        match self {
            FilesError::Invalid(m) => error(StatusCode::BAD_REQUEST, m),
            FilesError::Forbidden(m) => error(StatusCode::FORBIDDEN, m),
            FilesError::NotFound(m) => error(StatusCode::NOT_FOUND, m),
            FilesError::Internal(m) => error(StatusCode::INTERNAL_SERVER_ERROR, m),
        }
    }
}

/// A path that cannot name a sandbox file: NUL bytes, `.` or `..` components.
fn check_path(path: &str) -> Result<(), FilesError> {
    if path.is_empty() {
        return Err(FilesError::Invalid("Expecting 'path' to be present".into()));
    }
    if path.contains('\0') {
        return Err(FilesError::Invalid("'path' must not contain NUL bytes".into()));
    }
    if path.split('/').any(|c| c == "." || c == "..") {
        return Err(FilesError::Invalid("'path' must not contain '.' or '..' components".into()));
    }
    Ok(())
}

/// What a file that could not be opened (or listed) answers.
fn open_error(path: &str, e: SandboxFsError) -> FilesError {
    match e {
        SandboxFsError::NotFound { .. } => FilesError::NotFound(format!("'{path}' not found")),
        SandboxFsError::Escapes { .. } => {
            FilesError::Forbidden(format!("'{path}' leads outside its sandbox (a symlink or mount point on the way)"))
        }
        SandboxFsError::NotRegular { kind: "directory", .. } => FilesError::Invalid(format!("Cannot read a directory: '{path}'")),
        SandboxFsError::NotRegular { kind, .. } => FilesError::Invalid(format!("'{path}' is a {kind}, not a regular file: refused")),
        SandboxFsError::Io { source, .. } => {
            tracing::warn!(path, error = %source, "cannot open a sandbox file");
            FilesError::Internal(format!("Failed to open '{path}': {source}"))
        }
    }
}

fn join_error(e: tokio::task::JoinError) -> FilesError {
    FilesError::Internal(format!("file task: {e}"))
}

/// The root of this agent's sandboxes: `<work_dir>/slaves/<agent id>`.
fn sandboxes_root(agent: &Agent) -> PathBuf {
    agent.work_dir.join("slaves").join(agent.id())
}

/// Opens the regular file that `path` names, beneath its sandbox; returns
/// it with its size. Runs on the blocking pool.
async fn open(agent: &Agent, path: &str) -> Result<(File, u64), FilesError> {
    check_path(path)?;
    let root = sandboxes_root(agent);
    let (sandbox, inside) = split_path(&root, path)?;
    let owned = path.to_string();
    let opened = tokio::task::spawn_blocking(move || -> Result<(File, u64), SandboxFsError> {
        // The sandboxes' root and the sandbox's own path are the agent's
        // directories (`runs/latest` is its symlink); inside the sandbox
        // the task's symlinks are followed only while they stay inside.
        let sandbox = SandboxDir::open(&root)?.open_dir(&sandbox)?;
        let (file, stat) = sandbox.open_regular(if inside.as_os_str().is_empty() { Path::new(".") } else { &inside })?;
        Ok((file, u64::try_from(stat.st_size).unwrap_or(0)))
    })
    .await
    .map_err(join_error)?;
    opened.map_err(|e| open_error(&owned, e))
}

/// Mesos's `Files::read`: the file's size and at most `length` bytes
/// (capped at 16 pages) from `offset`; `length` 0 gives the size alone,
/// an offset at or past the end no data.
pub async fn read(agent: &Agent, path: &str, offset: u64, length: Option<u64>) -> Result<(u64, Vec<u8>), FilesError> {
    let (file, size) = open(agent, path).await?;
    if offset >= size {
        return Ok((size, Vec::new()));
    }
    let length = length.unwrap_or(size - offset).min(MAX_READ_LENGTH).min(size - offset);
    if length == 0 {
        return Ok((size, Vec::new()));
    }
    let read = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; length as usize];
        let n = read_at(&file, &mut buf, offset)?;
        buf.truncate(n);
        Ok::<_, std::io::Error>(buf)
    })
    .await
    .map_err(join_error)?;
    read.map(|data| (size, data)).map_err(|e| FilesError::Internal(format!("Failed to read '{path}': {e}")))
}

/// Most entries one listing returns. Mesos lists a directory whole; a task
/// can make millions of files, so the listing stops here (the HTTP answer
/// then carries [`TRUNCATED_HEADER`], and the agent logs it).
pub const MAX_BROWSE_ENTRIES: usize = 10_000;

/// Header of a `/files/browse` answer that holds only [`MAX_BROWSE_ENTRIES`]
/// entries of a larger directory (the first the directory gave, then sorted).
pub const TRUNCATED_HEADER: &str = "x-mezzo-listing-truncated";

/// Mesos's `Files::browse`: the entries of the directory `path`, sorted by
/// path, each with its `lstat` (a symlink is listed as itself, never
/// followed); a path that is not a directory lists nothing, as Mesos's.
/// Only a sandbox or a directory inside one can be listed. The flag says
/// the directory held more than [`MAX_BROWSE_ENTRIES`].
pub async fn browse(agent: &Agent, path: &str) -> Result<(Vec<FileInfo>, bool), FilesError> {
    check_path(path)?;
    let root = sandboxes_root(agent);
    let (sandbox, inside) = split_path(&root, path)?;
    if sandbox.components().count() < SANDBOX_DEPTH {
        return Err(FilesError::NotFound(format!("'{path}' is not a sandbox or a directory in one")));
    }
    let owned = path.to_string();
    let listed = tokio::task::spawn_blocking(move || -> Result<(Vec<FileInfo>, bool), SandboxFsError> {
        let sandbox = SandboxDir::open(&root)?.open_dir(&sandbox)?;
        let listing = sandbox.list(if inside.as_os_str().is_empty() { Path::new(".") } else { &inside }, MAX_BROWSE_ENTRIES)?;
        let Listing::Directory { entries, truncated } = listing else { return Ok((Vec::new(), false)) };
        let base = owned.trim_end_matches('/');
        let mut names = Names::default();
        let mut files: Vec<FileInfo> = entries
            .iter()
            .map(|e| file_info(&format!("{base}/{}", e.name.to_string_lossy()), &e.stat, &mut names))
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok((files, truncated))
    })
    .await
    .map_err(join_error)?;
    let (files, truncated) = listed.map_err(|e| open_error(path, e))?;
    if truncated {
        tracing::warn!(path, entries = MAX_BROWSE_ENTRIES, "a sandbox directory has more entries than a listing returns");
    }
    Ok((files, truncated))
}

/// User and group names by id, looked up once per listing.
#[derive(Default)]
struct Names {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Names {
    /// The user's name, or the number when it has none (as Mesos).
    fn user(&mut self, uid: u32) -> String {
        self.users
            .entry(uid)
            .or_insert_with(|| match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
                Ok(Some(u)) => u.name,
                _ => uid.to_string(),
            })
            .clone()
    }

    fn group(&mut self, gid: u32) -> String {
        self.groups
            .entry(gid)
            .or_insert_with(|| match nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)) {
                Ok(Some(g)) => g.name,
                _ => gid.to_string(),
            })
            .clone()
    }
}

/// Mesos's `createFileInfo`: the modification time in whole seconds.
fn file_info(path: &str, stat: &FileStat, names: &mut Names) -> FileInfo {
    FileInfo {
        path: path.to_string(),
        nlink: Some(i32::try_from(stat.st_nlink).unwrap_or(i32::MAX)),
        size: Some(u64::try_from(stat.st_size).unwrap_or(0)),
        mtime: Some(TimeInfo { nanoseconds: stat.st_mtime.saturating_mul(1_000_000_000) }),
        mode: Some(stat.st_mode),
        uid: Some(names.user(stat.st_uid)),
        gid: Some(names.group(stat.st_gid)),
    }
}

/// `ls -l`'s mode string, as Mesos's `model(FileInfo)` writes it ("drwxr-xr-x").
pub fn mode_string(mode: u32) -> String {
    let kind = match mode & libc_mode::S_IFMT {
        libc_mode::S_IFDIR => 'd',
        libc_mode::S_IFCHR => 'c',
        libc_mode::S_IFBLK => 'b',
        libc_mode::S_IFIFO => 'p',
        libc_mode::S_IFLNK => 'l',
        libc_mode::S_IFSOCK => 's',
        _ => '-',
    };
    let mut out = String::with_capacity(10);
    out.push(kind);
    for (bit, c) in [(0o400, 'r'), (0o200, 'w'), (0o100, 'x'), (0o040, 'r'), (0o020, 'w'), (0o010, 'x'), (0o004, 'r'), (0o002, 'w'), (0o001, 'x')] {
        out.push(if mode & bit != 0 { c } else { '-' });
    }
    out
}

/// File type bits of `st_mode` (the same on every Linux).
mod libc_mode {
    pub const S_IFMT: u32 = 0o170000;
    pub const S_IFSOCK: u32 = 0o140000;
    pub const S_IFLNK: u32 = 0o120000;
    pub const S_IFBLK: u32 = 0o060000;
    pub const S_IFDIR: u32 = 0o040000;
    pub const S_IFCHR: u32 = 0o020000;
    pub const S_IFIFO: u32 = 0o010000;
}

/// One entry of `/files/browse`, as Mesos's `model(FileInfo)`: `mtime` in
/// seconds (a float), `mode` as `ls -l` shows it, `uid`/`gid` as names.
pub fn file_json(f: &FileInfo) -> serde_json::Value {
    let mtime = f.mtime.as_ref().map(|t| t.nanoseconds as f64 / 1e9).unwrap_or(0.0);
    serde_json::json!({
        "path": f.path,
        "nlink": f.nlink.unwrap_or(0),
        "size": f.size.unwrap_or(0),
        "mtime": mtime,
        "mode": mode_string(f.mode.unwrap_or(0)),
        "uid": f.uid.clone().unwrap_or_default(),
        "gid": f.gid.clone().unwrap_or_default(),
    })
}

/// A JSON answer, or with `jsonp=<callback>` (what Mesos's web UI sends)
/// `<callback>(<json>);` as `text/javascript`, as Mesos answers. The
/// callback is reflected into a script, so only a JavaScript name (dotted
/// path) is taken; anything else is a 400.
fn json_reply(q: &HashMap<String, String>, value: serde_json::Value) -> Response {
    let Some(callback) = q.get("jsonp") else { return axum::Json(value).into_response() };
    let valid = !callback.is_empty()
        && callback.len() <= 128
        && callback.split('.').all(|part| {
            part.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        });
    if !valid {
        return error(StatusCode::BAD_REQUEST, "'jsonp' must be a JavaScript function name");
    }
    ([(header::CONTENT_TYPE, "text/javascript")], format!("{callback}({value});")).into_response()
}

/// Mesos's `/files/browse?path=..`: a JSON array of the directory's entries.
pub async fn files_browse(State(agent): State<Arc<Agent>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let path = match path_param(&q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    match browse(&agent, path).await {
        Ok((files, truncated)) => {
            let listing: Vec<serde_json::Value> = files.iter().map(file_json).collect();
            let mut resp = json_reply(&q, serde_json::Value::Array(listing));
            if truncated {
                resp.headers_mut().insert(TRUNCATED_HEADER, axum::http::HeaderValue::from(MAX_BROWSE_ENTRIES));
            }
            resp
        }
        Err(e) => e.response(),
    }
}

/// The paths Mesos's agent attaches for one executor run, each with the
/// sandbox it names: the sandbox's own host path, its executor's
/// `runs/latest` host path and the virtual `/frameworks/<f>/executors/<e>/runs/latest`.
pub fn attached_paths(root: &Path, framework_id: &str, executor_id: &str, sandbox: &Path) -> [(String, PathBuf); 3] {
    let latest = format!("frameworks/{framework_id}/executors/{executor_id}/runs/latest");
    [
        (sandbox.display().to_string(), sandbox.to_path_buf()),
        (root.join(&latest).display().to_string(), sandbox.to_path_buf()),
        (format!("/{latest}"), sandbox.to_path_buf()),
    ]
}

/// Mesos's `/files/debug`: the attached paths and the host paths they name,
/// for the running executors and the completed ones whose sandboxes are
/// still there (a collected sandbox is detached, as in Mesos).
pub async fn files_debug(State(agent): State<Arc<Agent>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let root = sandboxes_root(&agent);
    let runs: Vec<(String, String, PathBuf, bool)> = {
        let state = agent.state.lock().unwrap();
        // Completed runs first, oldest first: a newer run of the same executor takes `latest`.
        let completed = state.completed.iter().map(|e| (e.framework_id.clone(), e.executor_id.clone(), e.sandbox.clone(), true));
        let running = state.executors.values().map(|e| (e.framework_id.clone(), e.executor_id.clone(), e.sandbox.clone(), false));
        completed.chain(running).collect()
    };
    let attached = tokio::task::spawn_blocking(move || {
        let mut out = serde_json::Map::new();
        for (fid, eid, sandbox, completed) in runs {
            if completed && std::fs::symlink_metadata(&sandbox).is_err() {
                continue;
            }
            for (virt, host) in attached_paths(&root, &fid, &eid, &sandbox) {
                out.insert(virt, serde_json::Value::String(host.display().to_string()));
            }
        }
        out
    })
    .await;
    match attached {
        Ok(map) => json_reply(&q, serde_json::Value::Object(map)),
        Err(e) => join_error(e).response(),
    }
}

/// An integer query parameter as Mesos reads it (`off_t`/`ssize_t`): absent
/// is -1, anything below -1 or that does not parse is a 400 naming it.
fn int_param(q: &HashMap<String, String>, name: &str) -> Result<i64, Response> {
    let Some(value) = q.get(name) else { return Ok(-1) };
    match value.trim().parse::<i64>() {
        Ok(v) if v >= -1 => Ok(v),
        Ok(v) => Err(error(StatusCode::BAD_REQUEST, format!("Negative {name} provided: {v}"))),
        Err(e) => Err(error(StatusCode::BAD_REQUEST, format!("Failed to parse {name}: '{value}': {e}"))),
    }
}

/// Mesos's `/files/read?path=..&offset=..&length=..`: `{"data": ..., "offset": ...}`.
/// `offset` absent or -1 gives the file's size (and no data); `length`
/// absent or -1 reads to the end; a read returns at most 16 pages.
pub async fn files_read(State(agent): State<Arc<Agent>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let path = match path_param(&q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let (offset, length) = match (int_param(&q, "offset"), int_param(&q, "length")) {
        (Ok(o), Ok(l)) => (o, l),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    // Both are >= -1 here; -1 means "the size" and "to the end".
    let (offset, length) = match u64::try_from(offset) {
        Ok(o) => (Some(o), u64::try_from(length).ok()),
        Err(_) => (None, Some(0)),
    };
    match read(&agent, path, offset.unwrap_or(0), length).await {
        // Past the end, the offset answered is the size (as Mesos before 1.0 and as the pailer expects).
        Ok((size, data)) => {
            let at = offset.filter(|o| *o < size).unwrap_or(size);
            json_reply(&q, serde_json::json!({"data": String::from_utf8_lossy(&data), "offset": at}))
        }
        Err(e) => e.response(),
    }
}

/// Mesos's `/files/download?path=..`: the file's bytes, streamed from the
/// opened file in bounded chunks, up to the size it had when opened.
pub async fn files_download(State(agent): State<Arc<Agent>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let path = match path_param(&q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let (file, size) = match open(&agent, path).await {
        Ok(f) => f,
        Err(e) => return e.response(),
    };
    let name = path.rsplit('/').find(|c| !c.is_empty()).unwrap_or("file").replace(['"', '\\', '\r', '\n'], "_");
    let file = Arc::new(file);
    let chunks = futures::stream::try_unfold(0u64, move |pos| {
        let file = file.clone();
        async move {
            if pos >= size {
                return Ok(None);
            }
            let want = (size - pos).min(DOWNLOAD_CHUNK as u64) as usize;
            let data = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; want];
                let n = read_at(&file, &mut buf, pos)?;
                buf.truncate(n);
                Ok::<_, std::io::Error>(buf)
            })
            .await
            .map_err(std::io::Error::other)??;
            if data.is_empty() {
                // Shrunk while being sent: end the response short (the
                // client sees fewer bytes than Content-Length).
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "file shrank while being sent"));
            }
            let next = pos + data.len() as u64;
            Ok(Some((Bytes::from(data), next)))
        }
    });
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
        ],
        Body::from_stream(chunks),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_at_the_sandbox() {
        let root = Path::new("/w/slaves/A");
        let (s, i) = split_path(root, "/frameworks/f/executors/e/runs/latest/dir/stdout").unwrap();
        assert_eq!((s.as_path(), i.as_path()), (Path::new("frameworks/f/executors/e/runs/latest"), Path::new("dir/stdout")));
        let (s, i) = split_path(root, "/w/slaves/A/frameworks/f/executors/e/runs/c1/stdout").unwrap();
        assert_eq!((s.as_path(), i.as_path()), (Path::new("frameworks/f/executors/e/runs/c1"), Path::new("stdout")));
        let (s, i) = split_path(root, "frameworks/f").unwrap();
        assert_eq!((s.as_path(), i.as_path()), (Path::new("frameworks/f"), Path::new("")));
        assert!(split_path(root, "/etc/shadow").is_err());
        assert!(split_path(root, "/w/slaves/B/frameworks/x").is_err());
        assert!(split_path(root, "/w/slaves/A/meta").is_err());
    }

    #[test]
    fn modes_are_formatted_as_ls_and_mesos_do() {
        assert_eq!(mode_string(0o100644), "-rw-r--r--");
        assert_eq!(mode_string(0o040755), "drwxr-xr-x");
        assert_eq!(mode_string(0o120777), "lrwxrwxrwx");
        assert_eq!(mode_string(0o010600), "prw-------");
        assert_eq!(mode_string(0o060660), "brw-rw----");
        assert_eq!(mode_string(0o020666), "crw-rw-rw-");
        assert_eq!(mode_string(0o140700), "srwx------");
        // Set-id and sticky bits are not shown, as in Mesos's model.
        assert_eq!(mode_string(0o104755), "-rwxr-xr-x");
    }

    #[test]
    fn a_file_info_is_modelled_as_mesos_does() {
        let mut names = Names::default();
        let stat = nix::sys::stat::stat("/").unwrap();
        let info = file_info("/frameworks/f/executors/e/runs/latest/dir", &stat, &mut names);
        assert_eq!(info.uid.as_deref(), Some("root"));
        assert_eq!(info.gid.as_deref(), Some("root"));
        let mut unnamed = stat;
        unnamed.st_uid = 4_000_000_123;
        unnamed.st_gid = 4_000_000_124;
        unnamed.st_mtime = 1_764_945_000;
        unnamed.st_mode = 0o040750;
        unnamed.st_nlink = 3;
        unnamed.st_size = 4096;
        let info = file_info("/x/dir", &unnamed, &mut names);
        assert_eq!(info.mtime.as_ref().unwrap().nanoseconds, 1_764_945_000_000_000_000);
        // Mesos's JSON: mtime a float of whole seconds, numbers for unnamed ids.
        assert_eq!(
            serde_json::to_string(&file_json(&info)).unwrap(),
            r#"{"gid":"4000000124","mode":"drwxr-x---","mtime":1764945000.0,"nlink":3,"path":"/x/dir","size":4096,"uid":"4000000123"}"#
        );
    }

    #[test]
    fn each_run_attaches_its_sandbox_as_mesos_does() {
        let root = Path::new("/w/slaves/A");
        let sandbox = root.join("frameworks/f/executors/e/runs/c1");
        let paths = attached_paths(root, "f", "e", &sandbox);
        let keys: Vec<&str> = paths.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["/w/slaves/A/frameworks/f/executors/e/runs/c1", "/w/slaves/A/frameworks/f/executors/e/runs/latest", "/frameworks/f/executors/e/runs/latest"]
        );
        assert!(paths.iter().all(|(_, v)| v == &sandbox));
    }

    #[tokio::test]
    async fn jsonp_wraps_the_answer_for_a_javascript_name_only() {
        let q = |v: &str| HashMap::from([("jsonp".to_string(), v.to_string())]);
        let body = |r: Response| async move { String::from_utf8(axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap() };
        let r = json_reply(&q("jQuery.cb_12$"), serde_json::json!({"offset": 3}));
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/javascript");
        assert_eq!(body(r).await, r#"jQuery.cb_12$({"offset":3});"#);
        for bad in ["", "alert(1)//", "a..b", "1a", "a-b", "a b", "a;b"] {
            assert_eq!(json_reply(&q(bad), serde_json::json!([])).status(), StatusCode::BAD_REQUEST, "{bad}");
        }
        let r = json_reply(&HashMap::new(), serde_json::json!([]));
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(body(r).await, "[]");
    }

    #[test]
    fn bad_paths_are_refused_before_any_lookup() {
        assert!(matches!(check_path(""), Err(FilesError::Invalid(_))));
        assert!(matches!(check_path("/frameworks/f/../x"), Err(FilesError::Invalid(_))));
        assert!(matches!(check_path("/frameworks/f/./x"), Err(FilesError::Invalid(_))));
        assert!(matches!(check_path("/a\0b"), Err(FilesError::Invalid(_))));
        assert!(check_path("/frameworks/f/executors/e/runs/latest/..x").is_ok());
    }

    #[test]
    fn integer_parameters_are_checked_and_named() {
        let q = |k: &str, v: &str| HashMap::from([(k.to_string(), v.to_string())]);
        assert_eq!(int_param(&HashMap::new(), "offset").ok(), Some(-1));
        assert_eq!(int_param(&q("offset", "12"), "offset").ok(), Some(12));
        for bad in ["18446744073709551615", "-2", "x", ""] {
            let r = int_param(&q("length", bad), "length").err().expect(bad);
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
