//! The content store: blobs named by their sha256, written once and verified.

use std::fs::{self, File};
use std::io::{self, Read, Write};
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

    /// Starts writing a blob that arrives in pieces (a download); see [`BlobWriter`].
    pub(crate) fn writer(&self) -> Result<BlobWriter, ImageError> {
        let tmp = self.root.join("sha256").join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        ));
        let file = File::create(&tmp).ctx(|| format!("create {}", tmp.display()))?;
        Ok(BlobWriter {
            dir: self.root.join("sha256"),
            tmp,
            writer: Some(HashingWriter::new(io::BufWriter::with_capacity(1 << 17, file))),
            written: 0,
        })
    }

    /// Removes temp files left by processes that died mid-write.
    pub(crate) fn remove_stale_temps(&self) {
        remove_stale_temps(&self.root.join("sha256"));
    }
}

/// A blob being written into the store: hashed on the way, kept in a temp file that is
/// removed when the writer is dropped, and renamed into place only by
/// [`BlobWriter::commit`] once its digest is the expected one.
pub(crate) struct BlobWriter {
    dir: PathBuf,
    tmp: PathBuf,
    writer: Option<HashingWriter<io::BufWriter<File>>>,
    written: u64,
}

impl BlobWriter {
    /// Appends `data`.
    pub(crate) fn write(&mut self, data: &[u8]) -> Result<(), ImageError> {
        let tmp = &self.tmp;
        self.writer
            .as_mut()
            .expect("writer is present until commit")
            .write_all(data)
            .ctx(|| format!("write {}", tmp.display()))?;
        self.written += data.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Checks the digest, syncs and renames the blob into place. Blocks on fsync: call
    /// from a blocking context.
    pub(crate) fn commit(mut self, expected: &Digest, what: &str) -> Result<(), ImageError> {
        let writer = self.writer.take().expect("writer is present until commit");
        let (buffered, actual, _) = writer.finish();
        verify(what, expected, &actual)?;
        let file = buffered
            .into_inner()
            .map_err(|e| e.into_error())
            .ctx(|| format!("write {}", self.tmp.display()))?;
        file.sync_all()
            .ctx(|| format!("sync {}", self.tmp.display()))?;
        let dest = self.dir.join(actual.hex());
        fs::rename(&self.tmp, &dest)
            .ctx(|| format!("rename {} to {}", self.tmp.display(), dest.display()))?;
        // Renamed: nothing left for Drop to remove.
        self.tmp = PathBuf::new();
        Ok(())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            drop(self.writer.take());
            let _ = fs::remove_file(&self.tmp);
        }
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
