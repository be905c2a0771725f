//! The content store: blobs named by their sha256, written once and verified.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::digest::{verify, Digest, HashingWriter};
use crate::error::{ImageError, IoContext};

/// Blobs under `<root>/sha256/<hex>`.
#[derive(Debug)]
pub(crate) struct ContentStore {
    root: PathBuf,
    seq: AtomicU64,
}

impl ContentStore {
    /// Opens (creating) the store at `root`.
    pub(crate) fn open(root: PathBuf) -> Result<Self, ImageError> {
        let dir = root.join("sha256");
        fs::create_dir_all(&dir).ctx(|| format!("create {}", dir.display()))?;
        Ok(Self {
            root,
            seq: AtomicU64::new(0),
        })
    }

    /// Where the blob with `digest` lives.
    pub(crate) fn path(&self, digest: &Digest) -> PathBuf {
        self.root.join("sha256").join(digest.hex())
    }

    /// Whether the blob is stored.
    pub(crate) fn has(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Copies `reader` into the store and returns its digest. With `expected`, content
    /// that hashes otherwise is discarded and refused. Written to a temp file and
    /// renamed, so a reader never sees a partial blob.
    pub(crate) fn ingest(
        &self,
        reader: &mut dyn Read,
        expected: Option<&Digest>,
        what: &str,
    ) -> Result<Digest, ImageError> {
        let tmp = self.root.join("sha256").join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        ));
        let result = self.ingest_to(&tmp, reader, expected, what);
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn ingest_to(
        &self,
        tmp: &Path,
        reader: &mut dyn Read,
        expected: Option<&Digest>,
        what: &str,
    ) -> Result<Digest, ImageError> {
        let file = File::create(tmp).ctx(|| format!("create {}", tmp.display()))?;
        let mut writer = HashingWriter::new(file);
        io::copy(reader, &mut writer).ctx(|| format!("copy {what} into the content store"))?;
        let (file, actual, _) = writer.finish();
        if let Some(expected) = expected {
            verify(what, expected, &actual)?;
        }
        file.sync_all().ctx(|| format!("sync {}", tmp.display()))?;
        let dest = self.path(&actual);
        fs::rename(tmp, &dest).ctx(|| format!("rename {} to {}", tmp.display(), dest.display()))?;
        Ok(actual)
    }

    /// Stores `bytes` (a small document) and returns its digest.
    pub(crate) fn ingest_bytes(
        &self,
        bytes: &[u8],
        expected: Option<&Digest>,
        what: &str,
    ) -> Result<Digest, ImageError> {
        let digest = Digest::of(bytes);
        if let Some(expected) = expected {
            verify(what, expected, &digest)?;
        }
        if self.has(&digest) {
            return Ok(digest);
        }
        self.ingest(&mut &bytes[..], Some(&digest), what)
    }

    /// Removes temp files left by processes that died mid-write.
    pub(crate) fn remove_stale_temps(&self) {
        remove_stale_temps(&self.root.join("sha256"));
    }
}

/// Removes `.tmp-<pid>-*` entries of `dir` whose process is gone.
pub(crate) fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Some(rest) = name.strip_prefix(".tmp-") else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| p != std::process::id() as i32 && !crate::fsutil::pid_alive(p)) {
            tracing::info!(path = %entry.path().display(), "removing temp file of a dead process");
            let _ = crate::fsutil::remove_any(&entry.path());
        }
    }
}
