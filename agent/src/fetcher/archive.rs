//! Extracting fetched archives into the sandbox, as Mesos's fetcher decides
//! them (by the file name's extension), refusing whatever could escape it.
//!
//! Members are regular files and directories only: symlinks, hard links,
//! devices and FIFOs are refused, and so are absolute names, `..` and NUL.
//! Every member is created beneath the sandbox's descriptor one component at
//! a time, never through a symlink (see `safe_fs`), and belongs to the
//! sandbox's owner. Everything streams: no member is held in memory.

use super::safe_fs::{components, set_mode, Dir};
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufReader, Read, Seek, Write};

/// What a file name says about its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tar(Compression),
    Zip,
    /// One compressed file: it is decompressed to the name without the extension.
    Single(Compression),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

/// The archive kind of `name`, by extension, as Mesos's fetcher decides it
/// (plus zstd); `None` is not an archive (it stays as fetched).
pub fn kind_of(name: &str) -> Option<(Kind, usize)> {
    const KINDS: &[(&str, Kind)] = &[
        (".tar.gz", Kind::Tar(Compression::Gzip)),
        (".tgz", Kind::Tar(Compression::Gzip)),
        (".tar.bz2", Kind::Tar(Compression::Bzip2)),
        (".tbz2", Kind::Tar(Compression::Bzip2)),
        (".tar.xz", Kind::Tar(Compression::Xz)),
        (".txz", Kind::Tar(Compression::Xz)),
        (".tar.zst", Kind::Tar(Compression::Zstd)),
        (".tzst", Kind::Tar(Compression::Zstd)),
        (".tar", Kind::Tar(Compression::None)),
        (".zip", Kind::Zip),
        (".gz", Kind::Single(Compression::Gzip)),
        (".bz2", Kind::Single(Compression::Bzip2)),
        (".xz", Kind::Single(Compression::Xz)),
        (".zst", Kind::Single(Compression::Zstd)),
    ];
    KINDS.iter().find(|(ext, _)| name.len() > ext.len() && name.ends_with(ext)).map(|(ext, kind)| (*kind, ext.len()))
}

/// Bytes a fetch may still write (the task's `disk`, shared by all its
/// URIs; or the cache's size for a download into the cache).
#[derive(Debug)]
pub struct Budget {
    pub limit: Option<u64>,
    pub used: u64,
    what: &'static str,
}

impl Budget {
    /// A budget of `limit` bytes (none: unlimited), `what` naming the limit in messages.
    pub fn new(limit: Option<u64>, what: &'static str) -> Budget {
        Budget { limit, used: 0, what }
    }

    /// The message for a write beyond the limit.
    pub fn exceeded(&self) -> String {
        format!("exceeds {} of {}", self.what, super::show_bytes(self.limit.unwrap_or(0)))
    }

    /// Takes `n` more bytes, or says the limit is reached.
    pub fn take(&mut self, n: u64) -> Result<(), String> {
        self.used += n;
        match self.limit {
            Some(limit) if self.used > limit => Err(format!("the download {}", self.exceeded())),
            _ => Ok(()),
        }
    }
}

fn decoder<'a>(compression: Compression, input: impl Read + Send + 'a) -> Result<Box<dyn Read + Send + 'a>, String> {
    let input = BufReader::with_capacity(1 << 16, input);
    Ok(match compression {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(input)),
        Compression::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(input)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(input).map_err(|e| format!("zstd: {e}"))?),
    })
}

/// Copies `from` into `to`, taking every chunk from `budget`.
fn copy_counted(from: &mut dyn Read, to: &mut File, budget: &mut Budget) -> Result<u64, String> {
    let mut buf = vec![0u8; 1 << 17];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read error: {e}")),
        };
        budget.take(n as u64)?;
        to.write_all(&buf[..n]).map_err(|e| format!("write error: {e}"))?;
        total += n as u64;
    }
}

/// Extracts `archive` (named `name`, of kind `kind`) into `dest`. Returns
/// how many members were written.
pub fn extract(kind: Kind, name: &str, strip: usize, archive: File, dest: &Dir, budget: &mut Budget) -> Result<u64, String> {
    match kind {
        Kind::Tar(c) => extract_tar(decoder(c, archive)?, dest, budget),
        Kind::Zip => extract_zip(archive, dest, budget),
        Kind::Single(c) => {
            let out_name = &name[..name.len() - strip];
            let parts = components(out_name.as_bytes())?;
            let mut out = dest.create_at(&parts)?;
            copy_counted(&mut decoder(c, archive)?, &mut out, budget)?;
            Ok(1)
        }
    }
}

fn refuse(name: &[u8], what: &str) -> String {
    format!("refusing archive member '{}': {what}", String::from_utf8_lossy(name))
}

/// Member name components, or the refusal.
fn member(name: &[u8]) -> Result<Vec<OsString>, String> {
    components(name).map_err(|why| format!("refusing archive member: {why}"))
}

fn extract_tar(stream: impl Read, dest: &Dir, budget: &mut Budget) -> Result<u64, String> {
    use tar::EntryType;
    let mut archive = tar::Archive::new(stream);
    let mut count = 0;
    for entry in archive.entries().map_err(|e| format!("bad tar archive: {e}"))? {
        let mut entry = entry.map_err(|e| format!("bad tar archive: {e}"))?;
        let kind = entry.header().entry_type();
        let raw = entry.path_bytes().into_owned();
        match kind {
            EntryType::XGlobalHeader | EntryType::XHeader => continue,
            EntryType::Directory => {
                let parts = member(&raw)?;
                let dir = dest.descend(&parts)?;
                if !parts.is_empty() {
                    let mode = entry.header().mode().unwrap_or(0o755) & 0o777;
                    // The agent must still be able to write beneath it.
                    dir.chmod(mode | 0o700).map_err(|e| format!("cannot chmod '{}': {e}", String::from_utf8_lossy(&raw)))?;
                }
            }
            EntryType::Regular | EntryType::Continuous => {
                let parts = member(&raw)?;
                if parts.is_empty() {
                    return Err(refuse(&raw, "names the archive's root as a file"));
                }
                let mode = entry.header().mode().unwrap_or(0o644);
                let mut out = dest.create_at(&parts)?;
                copy_counted(&mut entry, &mut out, budget)?;
                set_mode(&out, mode)?;
            }
            EntryType::Symlink => return Err(refuse(&raw, "symbolic links are not extracted")),
            EntryType::Link => return Err(refuse(&raw, "hard links are not extracted")),
            EntryType::Char | EntryType::Block => return Err(refuse(&raw, "device nodes are not extracted")),
            EntryType::Fifo => return Err(refuse(&raw, "FIFOs are not extracted")),
            other => return Err(refuse(&raw, &format!("unsupported tar entry type {other:?}"))),
        }
        count += 1;
    }
    Ok(count)
}

fn extract_zip(archive: impl Read + Seek, dest: &Dir, budget: &mut Budget) -> Result<u64, String> {
    let mut zip = zip::ZipArchive::new(archive).map_err(|e| format!("bad zip archive: {e}"))?;
    let mut count = 0;
    for i in 0..zip.len() {
        let mut file = zip.by_index(i).map_err(|e| format!("bad zip archive: {e}"))?;
        let raw = file.name_raw().to_vec();
        let mode = file.unix_mode();
        let kind = mode.map(|m| m & 0o170000);
        if file.is_symlink() || kind == Some(0o120000) {
            return Err(refuse(&raw, "symbolic links are not extracted"));
        }
        if matches!(kind, Some(0o020000) | Some(0o060000)) {
            return Err(refuse(&raw, "device nodes are not extracted"));
        }
        if matches!(kind, Some(0o010000) | Some(0o140000)) {
            return Err(refuse(&raw, "FIFOs and sockets are not extracted"));
        }
        let parts = member(&raw)?;
        if file.is_dir() {
            dest.descend(&parts)?;
        } else {
            if parts.is_empty() {
                return Err(refuse(&raw, "names the archive's root as a file"));
            }
            let mut out = dest.create_at(&parts)?;
            copy_counted(&mut file, &mut out, budget)?;
            set_mode(&out, mode.unwrap_or(0o644))?;
        }
        count += 1;
    }
    Ok(count)
}
