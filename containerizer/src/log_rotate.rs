//! Size-based rotation of a container's `stdout` and `stderr` (the agent's `--container_logger=logrotate`,
//! Mesos's `org_apache_mesos_LogrotateContainerLogger`).
//!
//! Files are named as logrotate names them: `stdout` is the newest, then `stdout.1`, `stdout.2`... up to
//! `stdout.<keep>`; an older one is dropped. Whoever copies the container's output (the rust backend's
//! supervisor, the docker launcher's log follower) writes through a [`RotatingWriter`]: there is no process
//! per container for the logs, and nothing is lost between a write and a rotation (the writer owns the file).
//!
//! Rotation happens at line boundaries when it can: a write that would take the file past its size ends the
//! file at the last newline that fits; a line that began before the limit may finish past it, by at most
//! `max_size / 4` (a longer line is cut there). A file therefore holds at most `max_size + max_size / 4` bytes
//! and, unless a line is that long, only whole lines.
//!
//! The sandbox belongs to the task: the rotated names are renamed and unlinked through the sandbox
//! directory's descriptor (never following a symlink), and a new `stdout` is created exclusively, beneath the
//! sandbox, a regular file only (`sandbox_fs::open_output`). Should a task block a rotation (a directory named
//! `stdout.1`), the current file is emptied instead, so the disk use stays bounded.

use crate::sandbox_fs::{self, SandboxFsError};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The rotation of one container's output, as the agent's flags set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRotation {
    /// `--logrotate_max_stdout_size`, bytes.
    pub max_stdout_size: u64,
    /// `--logrotate_max_stderr_size`, bytes.
    pub max_stderr_size: u64,
    /// Rotated `stdout.N` files kept (`rotate N` of `--logrotate_stdout_options`).
    pub stdout_keep: u32,
    /// Rotated `stderr.N` files kept (`rotate N` of `--logrotate_stderr_options`).
    pub stderr_keep: u32,
}

impl LogRotation {
    /// Mesos's defaults: 10 MB, and 9 rotated files (`rotate 9`).
    pub const DEFAULT: LogRotation = LogRotation { max_stdout_size: 10 << 20, max_stderr_size: 10 << 20, stdout_keep: 9, stderr_keep: 9 };

    /// Writers for a container's `stdout` and `stderr`.
    pub fn writers(&self, stdout: &Path, stderr: &Path) -> Result<(RotatingWriter, RotatingWriter), SandboxFsError> {
        Ok((RotatingWriter::open(stdout, self.max_stdout_size, self.stdout_keep)?, RotatingWriter::open(stderr, self.max_stderr_size, self.stderr_keep)?))
    }
}

/// Parses logrotate options as Mesos's `--logrotate_stdout_options` passes them to logrotate; only `rotate N`
/// (the number of rotated files kept) is understood, anything else is refused. Empty: `rotate 9`.
pub fn parse_logrotate_options(options: &str) -> Result<u32, String> {
    let mut keep = None;
    for line in options.split(['\n', ';']).map(str::trim).filter(|l| !l.is_empty()) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("rotate"), Some(n), None) => {
                keep = Some(n.parse::<u32>().map_err(|_| format!("'rotate {n}': the count must be a number"))?.min(1000));
            }
            _ => return Err(format!("unsupported logrotate option '{line}' (only 'rotate N' is supported)")),
        }
    }
    Ok(keep.unwrap_or(9))
}

/// Appends to a sandbox output file and rotates it by size (see the module's notes).
#[derive(Debug)]
pub struct RotatingWriter {
    path: PathBuf,
    name: String,
    /// The sandbox directory (an `O_PATH` descriptor), for the renames.
    dir: OwnedFd,
    file: File,
    size: u64,
    max: u64,
    keep: u32,
    /// The file ends with a newline (or is empty).
    at_line_start: bool,
}

impl RotatingWriter {
    /// Opens `path` for appending (created when missing), rotating at `max` bytes and keeping `keep` rotated files.
    pub fn open(path: &Path, max: u64, keep: u32) -> Result<RotatingWriter, SandboxFsError> {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
            return Err(SandboxFsError::NotFound { path: path.display().to_string() });
        };
        let raw = nix::fcntl::open(parent, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| SandboxFsError::Io { path: parent.display().to_string(), source: e.into() })?;
        // SAFETY: open returned a new descriptor that nothing else owns.
        let dir = unsafe { OwnedFd::from_raw_fd(raw) };
        let file = sandbox_fs::open_output(path, 0o644)?;
        let size = file.metadata().map_err(|e| SandboxFsError::Io { path: path.display().to_string(), source: e })?.len();
        let mut last = [0u8; 1];
        let at_line_start = size == 0 || (sandbox_fs::read_at(&file, &mut last, size - 1).is_ok_and(|n| n == 1) && last[0] == b'\n');
        Ok(RotatingWriter { path: path.to_path_buf(), name: name.to_string(), dir, file, size, max: max.max(1), keep, at_line_start })
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the current file.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn append(&mut self, data: &[u8]) -> std::io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.file.write_all(data)?;
        self.size += data.len() as u64;
        self.at_line_start = data.last() == Some(&b'\n');
        Ok(())
    }

    /// Writes `data`, rotating as often as needed.
    pub fn write(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        let slack = self.max / 4;
        while !data.is_empty() {
            let room = self.max.saturating_sub(self.size) as usize;
            if data.len() <= room {
                return self.append(data);
            }
            // The last newline that fits ends this file.
            if let Some(p) = data[..room].iter().rposition(|b| *b == b'\n') {
                self.append(&data[..=p])?;
                data = &data[p + 1..];
                self.rotate()?;
                continue;
            }
            if self.at_line_start && self.size > 0 {
                self.rotate()?;
                continue;
            }
            // A line under way: it may end within the slack; a longer one is cut there.
            let hard = (self.max + slack).saturating_sub(self.size) as usize;
            let window = &data[..data.len().min(hard)];
            if let Some(p) = window.iter().position(|b| *b == b'\n') {
                self.append(&data[..=p])?;
                data = &data[p + 1..];
                self.rotate()?;
            } else if data.len() <= hard {
                return self.append(data);
            } else {
                self.append(window)?;
                data = &data[window.len()..];
                self.rotate()?;
            }
        }
        Ok(())
    }

    fn rotated(&self, n: u32) -> String {
        format!("{}.{n}", self.name)
    }

    /// `stdout.<keep-1>` -> `stdout.<keep>`, ..., `stdout` -> `stdout.1`, and a new `stdout`.
    pub fn rotate(&mut self) -> std::io::Result<()> {
        let dir = Some(self.dir.as_raw_fd());
        let moved = if self.keep == 0 {
            nix::unistd::unlinkat(dir, self.name.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir)
        } else {
            for n in (1..self.keep).rev() {
                match nix::fcntl::renameat(dir, self.rotated(n).as_str(), dir, self.rotated(n + 1).as_str()) {
                    Ok(()) | Err(Errno::ENOENT) => {}
                    Err(e) => tracing::warn!(file = %self.path.display(), error = %e, "cannot shift a rotated log file"),
                }
            }
            nix::fcntl::renameat(dir, self.name.as_str(), dir, self.rotated(1).as_str())
        };
        let fresh = match moved {
            Ok(()) | Err(Errno::ENOENT) => sandbox_fs::open_output(&self.path, 0o644).map_err(std::io::Error::from),
            Err(e) => Err(std::io::Error::from(e)),
        };
        match fresh {
            Ok(file) => self.file = file,
            Err(e) => {
                // Keep the disk bounded: the current file starts again.
                tracing::warn!(file = %self.path.display(), error = %e, "cannot rotate a log file; emptying it instead");
                self.file.set_len(0)?;
            }
        }
        self.size = 0;
        self.at_line_start = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(range: std::ops::Range<usize>) -> String {
        range.map(|i| format!("line {i:06}\n")).collect()
    }

    /// The lines of `stdout`, `stdout.1`..., oldest first.
    fn kept(dir: &Path, keep: u32) -> Vec<String> {
        let mut files: Vec<PathBuf> = (1..=keep).rev().map(|n| dir.join(format!("stdout.{n}"))).collect();
        files.push(dir.join("stdout"));
        files.iter().filter_map(|f| std::fs::read_to_string(f).ok()).flat_map(|s| s.lines().map(String::from).collect::<Vec<_>>()).collect()
    }

    #[test]
    fn rotates_at_line_boundaries_and_keeps_the_newest_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("stdout");
        let mut w = RotatingWriter::open(&path, 1000, 3).unwrap();
        // 12-byte lines in writes of odd sizes that cut lines anywhere.
        let text = lines(0..1000);
        for chunk in text.as_bytes().chunks(37) {
            w.write(chunk).unwrap();
        }
        for name in ["stdout", "stdout.1", "stdout.2", "stdout.3"] {
            let s = std::fs::read_to_string(tmp.path().join(name)).unwrap();
            assert!(s.len() <= 1000 + 250, "{name}: {} bytes", s.len());
            assert!(s.ends_with('\n') && s.starts_with("line "), "{name} holds whole lines");
            if name != "stdout" {
                assert!(s.len() > 900, "{name} was filled before it was rotated: {} bytes", s.len());
            }
        }
        assert!(!tmp.path().join("stdout.4").exists(), "only 3 rotated files are kept");
        // Consecutive, newest last, none lost or duplicated within what is kept.
        let got = kept(tmp.path(), 3);
        let first: usize = got[0][5..].parse().unwrap();
        let want: Vec<String> = lines(first..1000).lines().map(String::from).collect();
        assert_eq!(got, want);
        assert!(got.len() >= 3 * 82, "three full rotated files: {} lines", got.len());
    }

    #[test]
    fn a_reopened_writer_continues_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("stdout");
        RotatingWriter::open(&path, 100, 2).unwrap().write(lines(0..5).as_bytes()).unwrap();
        let mut w = RotatingWriter::open(&path, 100, 2).unwrap();
        assert_eq!(w.size(), 60);
        w.write(lines(5..20).as_bytes()).unwrap();
        assert_eq!(kept(tmp.path(), 2), lines(0..20).lines().map(String::from).collect::<Vec<_>>()[20 - kept(tmp.path(), 2).len()..]);
        assert!(tmp.path().join("stdout.1").exists());
    }

    #[test]
    fn long_lines_are_cut_and_keep_zero_drops_the_old_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("stdout");
        let mut w = RotatingWriter::open(&path, 100, 0).unwrap();
        w.write(&[b'x'; 1000]).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() <= 125);
        assert!(!tmp.path().join("stdout.1").exists());
    }

    #[test]
    fn a_hostile_sandbox_cannot_redirect_a_rotation() {
        let tmp = tempfile::tempdir().unwrap();
        let (sandbox, outside) = (tmp.path().join("sandbox"), tmp.path().join("outside"));
        std::fs::create_dir_all(&sandbox).unwrap();
        std::fs::write(&outside, "HOST").unwrap();
        let path = sandbox.join("stdout");
        let mut w = RotatingWriter::open(&path, 50, 2).unwrap();
        // The task plants a symlink where a rotated file goes and a directory that blocks `stdout.1`.
        std::os::unix::fs::symlink(&outside, sandbox.join("stdout.2")).unwrap();
        w.write(lines(0..10).as_bytes()).unwrap();
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "HOST", "a planted symlink is renamed over, never written through");
        std::fs::remove_file(sandbox.join("stdout.1")).unwrap();
        std::fs::create_dir_all(sandbox.join("stdout.1/full")).unwrap();
        w.write(lines(10..40).as_bytes()).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() <= 62, "a blocked rotation empties the file instead");
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "HOST");
    }

    #[test]
    fn logrotate_options_give_the_number_of_kept_files() {
        assert_eq!(parse_logrotate_options("rotate 9"), Ok(9));
        assert_eq!(parse_logrotate_options(" rotate 3 \n"), Ok(3));
        assert_eq!(parse_logrotate_options(""), Ok(9));
        assert!(parse_logrotate_options("rotate x").is_err());
        assert!(parse_logrotate_options("compress").unwrap_err().contains("only 'rotate N'"));
    }
}
