//! `--registry=replicated_log` without `--zk`: the registry in a directory
//! under the master's `--work_dir`.
//!
//! One file per entry, `<work_dir>/registry/<kind>/<id>`. A write goes to a
//! temporary file (`.<id>.tmp`) that is fsynced, renamed over the entry and
//! followed by an fsync of the directory, so an entry is either the old or
//! the new record, never a torn one, and a write that returned is durable.
//! `<work_dir>/registry/LOCK` is held with an exclusive lock (`flock`) for the
//! life of the store: two masters cannot share a work_dir.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;

use crate::registry::{Entry, Kind, RegistryError, RegistryStore};

/// The registry's directory under a `--work_dir`.
pub fn registry_dir(work_dir: &Path) -> PathBuf {
    work_dir.join("registry")
}

/// A registry kept in files under `<work_dir>/registry`.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    /// Holds the exclusive lock while the store lives.
    _lock: File,
}

fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RegistryError + 'a {
    move |source| RegistryError::Io { op, path: path.display().to_string(), source }
}

/// An id is one plain file name: not empty, no `/` or NUL, not `.` or `..`,
/// not starting with `.` (temporary files do), at most 255 bytes.
pub fn validate_id(kind: Kind, id: &str) -> Result<(), RegistryError> {
    let why = if id.is_empty() {
        Some("it is empty")
    } else if id.len() > 255 {
        Some("it is longer than 255 bytes")
    } else if id.contains('/') || id.contains('\0') {
        Some("it contains '/' or NUL")
    } else if id.starts_with('.') {
        Some("it starts with '.'")
    } else {
        None
    };
    match why {
        Some(why) => Err(RegistryError::Io {
            op: "name",
            path: format!("{}/{}", kind.name(), id.escape_debug()),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("invalid registry id: {why}")),
        }),
        None => Ok(()),
    }
}

/// fsyncs a directory, so that a rename or removal in it is durable.
fn sync_dir(dir: &Path) -> Result<(), RegistryError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error("fsync", dir))
}

impl FileStore {
    /// Opens (creating it if needed) the registry under `work_dir`, and
    /// takes its lock; fails when another master holds it.
    pub fn open(work_dir: &Path) -> Result<FileStore, RegistryError> {
        let dir = registry_dir(work_dir);
        for kind in Kind::ALL {
            let sub = dir.join(kind.name());
            std::fs::create_dir_all(&sub).map_err(io_error("create", &sub))?;
        }
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error("open", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(RegistryError::Io {
                    op: "lock",
                    path: lock_path.display().to_string(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::WouldBlock,
                        "another master holds this registry (two masters cannot share a --work_dir)",
                    ),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_error("lock", &lock_path)(e)),
        }
        sync_dir(&dir)?;
        Ok(FileStore { dir, _lock: lock })
    }

    fn kind_dir(&self, kind: Kind) -> PathBuf {
        self.dir.join(kind.name())
    }

    fn load_blocking(dir: &Path) -> Result<Vec<Entry>, RegistryError> {
        let mut entries = Vec::new();
        for item in std::fs::read_dir(dir).map_err(io_error("list", dir))? {
            let item = item.map_err(io_error("list", dir))?;
            let name = item.file_name();
            let Some(id) = name.to_str() else {
                tracing::warn!(dir = %dir.display(), name = ?name, "ignoring a registry file whose name is not UTF-8");
                continue;
            };
            if id.starts_with('.') {
                // A temporary file of a write that did not complete: the entry is the old one.
                continue;
            }
            let path = item.path();
            let bytes = std::fs::read(&path).map_err(io_error("read", &path))?;
            entries.push(Entry { id: id.to_string(), bytes });
        }
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(entries)
    }

    fn put_blocking(dir: &Path, id: &str, bytes: &[u8]) -> Result<(), RegistryError> {
        let tmp = dir.join(format!(".{id}.tmp"));
        let path = dir.join(id);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&tmp)
            .map_err(io_error("create", &tmp))?;
        file.write_all(bytes).map_err(io_error("write", &tmp))?;
        file.sync_all().map_err(io_error("fsync", &tmp))?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(io_error("rename", &path))?;
        sync_dir(dir)
    }

    fn delete_blocking(dir: &Path, id: &str) -> Result<(), RegistryError> {
        let path = dir.join(id);
        match std::fs::remove_file(&path) {
            Ok(()) => sync_dir(dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("remove", &path)(e)),
        }
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    path: &Path,
    f: impl FnOnce() -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, RegistryError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| RegistryError::Io {
        op: what,
        path: path.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    })?
}

impl RegistryStore for FileStore {
    fn load(&self, kind: Kind) -> BoxFuture<'_, Result<Vec<Entry>, RegistryError>> {
        let dir = self.kind_dir(kind);
        Box::pin(async move { blocking("list", &dir.clone(), move || FileStore::load_blocking(&dir)).await })
    }

    fn put(&self, kind: Kind, id: &str, bytes: Vec<u8>) -> BoxFuture<'_, Result<(), RegistryError>> {
        let dir = self.kind_dir(kind);
        let id = id.to_string();
        Box::pin(async move {
            validate_id(kind, &id)?;
            blocking("write", &dir.clone(), move || FileStore::put_blocking(&dir, &id, &bytes)).await
        })
    }

    fn delete(&self, kind: Kind, id: &str) -> BoxFuture<'_, Result<(), RegistryError>> {
        let dir = self.kind_dir(kind);
        let id = id.to_string();
        Box::pin(async move {
            validate_id(kind, &id)?;
            blocking("remove", &dir.clone(), move || FileStore::delete_blocking(&dir, &id)).await
        })
    }

    fn describe(&self) -> String {
        self.dir.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_survive_reopening_and_replace_atomically() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = FileStore::open(dir.path()).unwrap();
            store.put(Kind::Agent, "a1", b"one".to_vec()).await.unwrap();
            store.put(Kind::Agent, "a1", b"two".to_vec()).await.unwrap();
            store.put(Kind::Agent, "a2", b"x".to_vec()).await.unwrap();
            store.put(Kind::Framework, "f1", b"fw".to_vec()).await.unwrap();
            store.delete(Kind::Agent, "a2").await.unwrap();
            store.delete(Kind::Agent, "never").await.unwrap();
        }
        // A write that crashed before its rename leaves only a temporary file: ignored.
        std::fs::write(dir.path().join("registry/agents/.a1.tmp"), b"torn").unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        assert_eq!(store.load(Kind::Agent).await.unwrap(), vec![Entry { id: "a1".into(), bytes: b"two".to_vec() }]);
        assert_eq!(store.load(Kind::Framework).await.unwrap(), vec![Entry { id: "f1".into(), bytes: b"fw".to_vec() }]);
        // Only the entry itself and no leftover temporary file of a completed write.
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join("registry/frameworks"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec!["f1".to_string()]);
    }

    #[tokio::test]
    async fn ids_that_are_not_plain_file_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        for id in ["", "a/b", "..", ".", ".hidden", "../escape", "x\0y"] {
            let err = store.put(Kind::Agent, id, b"x".to_vec()).await.unwrap_err();
            assert!(err.to_string().contains("invalid registry id"), "{id:?}: {err}");
            assert!(store.delete(Kind::Agent, id).await.is_err(), "{id:?}");
        }
        let long = "a".repeat(256);
        assert!(store.put(Kind::Agent, &long, b"x".to_vec()).await.is_err());
        assert!(store.load(Kind::Agent).await.unwrap().is_empty());
        assert!(!dir.path().join("registry/escape").exists());
    }

    #[tokio::test]
    async fn two_stores_cannot_share_a_work_dir() {
        let dir = tempfile::tempdir().unwrap();
        let first = FileStore::open(dir.path()).unwrap();
        let err = FileStore::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("another master holds this registry"), "{err}");
        drop(first);
        FileStore::open(dir.path()).unwrap();
    }
}
