//! `disk/du`: measures what a container writes to its sandbox (and to its
//! image rootfs's upper directory) every so often, reports it as
//! `disk_used_bytes`, and with enforcement on ends a container that uses
//! more than its `disk` resource.

use crate::sandbox_fs::{self, SandboxFsError, WalkEnd};
use crate::spec::{DiskQuota, Rootfs};
use crate::{ContainerConfig, ContainerSpec, ContainerizerError, Isolator, Limitation, LimitationReason, Usage};
use async_trait::async_trait;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Mesos's `--container_disk_watch_interval` default.
pub const DEFAULT_DISK_WATCH_INTERVAL: Duration = Duration::from_secs(15);

/// Most directory entries one measurement looks at; a tree larger than
/// this is reported as at least what was counted so far.
pub const MAX_DU_ENTRIES: usize = 2_000_000;

/// Bytes allocated on disk under `paths` (st_blocks × 512), as `du -x`
/// counts: symlinks are never followed (not even a directory swapped for
/// one while walking), hard links are counted once, other filesystems and
/// mount points below are not entered, missing paths count zero. Stops
/// after `max_entries` entries (see [`sandbox_fs::walk`]).
pub fn disk_usage(paths: &[PathBuf], max_entries: usize) -> u64 {
    let mut total = 0u64;
    let mut seen_links: HashSet<(u64, u64)> = HashSet::new();
    let mut left = max_entries;
    for root in paths {
        let mut visited = 0usize;
        let walked = sandbox_fs::walk::<SandboxFsError>(root, left, |entry| {
            visited += 1;
            let st = entry.stat;
            let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
            if st.st_nlink > 1 && !is_dir && !seen_links.insert((st.st_dev, st.st_ino)) {
                return Ok(());
            }
            total = total.saturating_add(u64::try_from(st.st_blocks).unwrap_or(0).saturating_mul(512));
            Ok(())
        });
        match walked {
            Ok(WalkEnd::Complete) => {}
            Ok(WalkEnd::Truncated) => {
                tracing::warn!(path = %root.display(), max_entries, "disk usage walk stopped early");
                return total;
            }
            // Missing (not prepared yet, or already cleaned up) or not a
            // directory: nothing of the container's to count there.
            Err(e) => tracing::debug!(path = %root.display(), error = %e, "disk usage: not measured"),
        }
        left = left.saturating_sub(visited);
    }
    total
}

/// A byte count as Mesos's `Bytes` prints it: the largest unit that
/// divides it exactly (`2MB`, `1536KB`, `100B`).
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(1 << 40, "TB"), (1 << 30, "GB"), (1 << 20, "MB"), (1 << 10, "KB")];
    for (size, unit) in UNITS {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}B")
}

#[derive(Debug)]
struct Tracked {
    quota: DiskQuota,
    /// Last measurement and when it was taken.
    last: Option<(Instant, u64)>,
}

/// `disk/du`.
pub struct DiskDu {
    interval: Duration,
    enforce: bool,
    containers: Mutex<HashMap<String, Arc<Mutex<Tracked>>>>,
}

impl DiskDu {
    /// Measures every `interval` (`--container_disk_watch_interval`); with
    /// `enforce` (`--enforce_container_disk_quota`) a container over its
    /// `disk` is ended with a disk limitation.
    pub fn new(interval: Duration, enforce: bool) -> Self {
        DiskDu { interval: interval.max(Duration::from_millis(1)), enforce, containers: Mutex::new(HashMap::new()) }
    }

    fn tracked(&self, spec: &ContainerSpec) -> Option<Arc<Mutex<Tracked>>> {
        let mut map = self.containers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = map.get(&spec.container_id) {
            return Some(t.clone());
        }
        // Recovered or prepared by an earlier agent: the spec says what to measure.
        let quota = spec.disk.clone()?;
        let t = Arc::new(Mutex::new(Tracked { quota, last: None }));
        map.insert(spec.container_id.clone(), t.clone());
        Some(t)
    }

    /// Measures now (off the async threads) and records the result.
    async fn measure(tracked: &Arc<Mutex<Tracked>>) -> Result<u64, ContainerizerError> {
        let paths = tracked.lock().unwrap_or_else(|e| e.into_inner()).quota.paths.clone();
        let used = tokio::task::spawn_blocking(move || disk_usage(&paths, MAX_DU_ENTRIES))
            .await
            .map_err(|e| ContainerizerError::Other(format!("disk usage task: {e}")))?;
        tracked.lock().unwrap_or_else(|e| e.into_inner()).last = Some((Instant::now(), used));
        Ok(used)
    }
}

#[async_trait]
impl Isolator for DiskDu {
    fn name(&self) -> &'static str {
        "disk/du"
    }

    async fn recover(&self, containers: &[ContainerSpec]) -> Result<(), ContainerizerError> {
        for spec in containers {
            self.tracked(spec);
        }
        Ok(())
    }

    async fn prepare(&self, config: &ContainerConfig, spec: &mut ContainerSpec) -> Result<(), ContainerizerError> {
        let mut paths = vec![config.sandbox.clone()];
        // What the task writes into its image rootfs is disk it uses too.
        if let Rootfs::Overlay { upper, .. } = &spec.rootfs {
            paths.push(upper.clone());
        }
        let limit_bytes = config.resources.disk_mb.filter(|d| d.is_finite() && *d >= 0.0).map(|d| (d * 1024.0 * 1024.0) as u64);
        let quota = DiskQuota { paths, limit_bytes };
        spec.disk = Some(quota.clone());
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(config.container_id.clone(), Arc::new(Mutex::new(Tracked { quota, last: None })));
        Ok(())
    }

    async fn watch(&self, spec: &ContainerSpec) -> Result<Limitation, ContainerizerError> {
        let Some(tracked) = self.tracked(spec) else { return std::future::pending().await };
        let limit = tracked.lock().unwrap_or_else(|e| e.into_inner()).quota.limit_bytes;
        let Some(limit) = limit.filter(|_| self.enforce) else {
            return std::future::pending().await;
        };
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let used = Self::measure(&tracked).await?;
            if used > limit {
                tracing::info!(container = %spec.container_id, used, limit, "disk quota exceeded");
                return Ok(Limitation {
                    reason: LimitationReason::Disk,
                    resources: vec!["disk".into()],
                    message: format!("Disk usage ({}) exceeds quota ({})", format_bytes(used), format_bytes(limit)),
                });
            }
        }
    }

    async fn usage(&self, spec: &ContainerSpec, usage: &mut Usage) -> Result<(), ContainerizerError> {
        let Some(tracked) = self.tracked(spec) else { return Ok(()) };
        let (limit, last) = {
            let t = tracked.lock().unwrap_or_else(|e| e.into_inner());
            (t.quota.limit_bytes, t.last)
        };
        // A measurement younger than the interval is reused: du of a big
        // sandbox is not free, and statistics are polled often.
        let used = match last {
            Some((at, used)) if at.elapsed() < self.interval => used,
            _ => Self::measure(&tracked).await?,
        };
        usage.disk_used_bytes = Some(used);
        usage.disk_limit_bytes = limit;
        Ok(())
    }

    async fn cleanup(&self, container_id: &str) -> Result<(), ContainerizerError> {
        self.containers.lock().unwrap_or_else(|e| e.into_inner()).remove(container_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn du_counts_blocks_once_and_skips_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("d");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        let empty = disk_usage(std::slice::from_ref(&d), MAX_DU_ENTRIES);
        std::fs::write(d.join("sub/f"), vec![1u8; 1 << 20]).unwrap();
        std::fs::hard_link(d.join("sub/f"), d.join("hard")).unwrap();
        let big = tmp.path().join("outside");
        std::fs::write(&big, vec![1u8; 4 << 20]).unwrap();
        std::os::unix::fs::symlink(&big, d.join("link")).unwrap();
        let used = disk_usage(&[d.clone(), tmp.path().join("missing")], MAX_DU_ENTRIES) - empty;
        assert!((1 << 20..(1 << 20) + 64 * 1024).contains(&used), "{used}");
        assert!(disk_usage(&[d], 1) < 1 << 20, "the walk is bounded");
    }

    /// A task swapping a directory of its sandbox for a symlink to a host
    /// directory, in a loop, while `disk/du` measures: the host's files are
    /// never counted (the walk entered the symlink when the swap fell
    /// between its stat and its read_dir).
    #[test]
    fn du_never_follows_a_directory_swapped_for_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let (sandbox, host) = (tmp.path().join("sandbox"), tmp.path().join("host"));
        std::fs::create_dir_all(sandbox.join("dir")).unwrap();
        std::fs::create_dir_all(&host).unwrap();
        // Siblings listed before `dir` is entered widen the window.
        for i in 0..200 {
            std::fs::write(sandbox.join(format!("f{i}")), b"").unwrap();
        }
        std::fs::write(host.join("big"), vec![1u8; 16 << 20]).unwrap();
        std::os::unix::fs::symlink(&host, sandbox.join("swap")).unwrap();
        let honest = disk_usage(std::slice::from_ref(&sandbox), MAX_DU_ENTRIES);
        let racer = crate::sandbox_fs::racing::SymlinkSwapper::start(&sandbox);
        let deadline = Instant::now() + Duration::from_secs(4);
        let mut most = 0;
        while Instant::now() < deadline {
            most = most.max(disk_usage(std::slice::from_ref(&sandbox), MAX_DU_ENTRIES));
        }
        drop(racer);
        assert!(most < honest + (8 << 20), "counted the host's files: {most} bytes, {honest} in the sandbox");
    }

    #[test]
    fn bytes_print_as_mesos() {
        assert_eq!(format_bytes(2 << 20), "2MB");
        assert_eq!(format_bytes(1536 << 10), "1536KB");
        assert_eq!(format_bytes(100), "100B");
        assert_eq!(format_bytes(3 << 30), "3GB");
    }
}
