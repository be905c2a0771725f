//! Mesos's `/files/read` and `/files/download` on the agent's sandboxes.
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
use mezzo_containerizer::sandbox_fs::{read_at, SandboxDir, SandboxFsError};
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
    if path.contains('\0') {
        return Err(error(StatusCode::BAD_REQUEST, "'path' must not contain NUL bytes"));
    }
    if path.split('/').any(|c| c == "." || c == "..") {
        return Err(error(StatusCode::BAD_REQUEST, "'path' must not contain '.' or '..' components"));
    }
    Ok(path)
}

/// Splits a `/files` path into the sandbox part and the part inside it.
/// `path` is Mesos's virtual `/frameworks/<f>/executors/<e>/runs/<latest|cid>/...`
/// or the same below this agent's sandboxes' root as a host path.
fn split_path(root: &Path, path: &str) -> Result<(PathBuf, PathBuf), Response> {
    let mut rel: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if rel.first() != Some(&"frameworks") {
        let host = PathBuf::from(format!("/{}", rel.join("/")));
        let roots = [Some(root.to_path_buf()), root.canonicalize().ok()];
        let inside = roots.iter().flatten().find_map(|r| host.strip_prefix(r).ok().map(Path::to_path_buf));
        let Some(inside) = inside.filter(|p| p.starts_with("frameworks")) else {
            return Err(error(StatusCode::FORBIDDEN, format!("'{path}' is outside the sandboxes")));
        };
        let skip = rel.len() - inside.components().count();
        rel.drain(..skip);
    }
    let split = rel.len().min(SANDBOX_DEPTH);
    let sandbox: PathBuf = rel[..split].iter().collect();
    let inside: PathBuf = rel[split..].iter().collect();
    Ok((sandbox, inside))
}

/// The HTTP reply for a file that could not be opened.
fn open_error(path: &str, e: SandboxFsError) -> Response {
    match e {
        SandboxFsError::NotFound { .. } => error(StatusCode::NOT_FOUND, format!("'{path}' not found")),
        SandboxFsError::Escapes { .. } => {
            error(StatusCode::FORBIDDEN, format!("'{path}' leads outside its sandbox (a symlink or mount point on the way)"))
        }
        SandboxFsError::NotRegular { kind: "directory", .. } => {
            error(StatusCode::BAD_REQUEST, format!("Cannot read a directory: '{path}'"))
        }
        SandboxFsError::NotRegular { kind, .. } => {
            error(StatusCode::BAD_REQUEST, format!("'{path}' is a {kind}, not a regular file: refused"))
        }
        SandboxFsError::Io { source, .. } => {
            tracing::warn!(path, error = %source, "cannot open a sandbox file");
            error(StatusCode::INTERNAL_SERVER_ERROR, format!("Failed to open '{path}': {source}"))
        }
    }
}

/// Opens the regular file that `path` names, beneath its sandbox; returns
/// it with its size. Runs on the blocking pool.
async fn open(agent: &Agent, path: &str) -> Result<(File, u64), Response> {
    let root = agent.work_dir.join("slaves").join(agent.id());
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
    .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, format!("file task: {e}")))?;
    opened.map_err(|e| open_error(&owned, e))
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
    let (file, size) = match open(&agent, path).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    // Both are >= -1 here; -1 means "the size" and "to the end".
    let offset = u64::try_from(offset).unwrap_or(size);
    if offset >= size {
        return axum::Json(serde_json::json!({"data": "", "offset": size})).into_response();
    }
    let length = u64::try_from(length).unwrap_or(size - offset).min(MAX_READ_LENGTH).min(size - offset);
    let read = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; length as usize];
        let n = read_at(&file, &mut buf, offset)?;
        buf.truncate(n);
        Ok::<_, std::io::Error>(buf)
    })
    .await;
    match read {
        Ok(Ok(data)) => {
            axum::Json(serde_json::json!({"data": String::from_utf8_lossy(&data), "offset": offset})).into_response()
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("Failed to read '{path}': {e}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("file task: {e}")),
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
        Err(r) => return r,
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
