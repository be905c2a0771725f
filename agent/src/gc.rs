//! Sandbox garbage collection, as Mesos's agent does it (`slave/gc.cpp`, and `Slave::checkDiskUsage`):
//!
//! - when an executor's run ends (its container destroyed), the run's sandbox
//!   (`<work_dir>/slaves/<aid>/frameworks/<fid>/executors/<eid>/runs/<cid>`) and its meta directory
//!   (the same path under `<work_dir>/meta`) are scheduled for removal `--gc_delay` later; the run directory's
//!   mtime is set to its end, so that an agent restarted meanwhile schedules it from that time again;
//! - every `--disk_watch_interval` the usage of the work dir's filesystem is read and the age a completed run
//!   may reach shrinks to `gc_delay * max(0, 1 - gc_disk_headroom - usage)`: older runs are removed at once
//!   (Mesos's `prune`);
//! - with a run go the `runs/latest` link that names it, its executor's directory once it has no run left and
//!   its framework's directory once it has no executor left (sandbox and meta sides), unless the agent runs an
//!   executor of theirs: nothing of a running executor is ever collected;
//! - after a restart, every run found on disk that no recovered executor owns is scheduled from its mtime;
//! - trees are removed by `mezzo_containerizer::tree::remove_tree`: no symlink is followed and no mount point
//!   entered (what a task left mounted stays, reported as a failed removal).
//!
//! Metrics (Mesos's names): `gc/path_removals_succeeded`, `gc/path_removals_failed`,
//! `gc/path_removals_pending`, `slave/executor_directory_max_allowed_age_secs`.

use crate::agent::Agent;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use tokio::time::Instant;

/// One run of an executor, as its directories name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Run {
    pub agent_id: String,
    pub framework_id: String,
    pub executor_id: String,
    pub container_id: String,
}

impl Run {
    /// `<work_dir>/slaves/<aid>/frameworks/<fid>/executors/<eid>/runs/<cid>`.
    pub fn sandbox(&self, work_dir: &Path) -> PathBuf {
        crate::paths::sandbox_dir(work_dir, &self.agent_id, &self.framework_id, &self.executor_id, &self.container_id)
    }

    /// The same under `<work_dir>/meta`.
    pub fn meta(&self, work_dir: &Path) -> PathBuf {
        crate::paths::sandbox_dir(&work_dir.join("meta"), &self.agent_id, &self.framework_id, &self.executor_id, &self.container_id)
    }
}

/// The age a completed run may reach at `usage` (the fraction of the disk in use): Mesos's `Slave::age`.
pub fn max_allowed_age(gc_delay: Duration, headroom: f64, usage: f64) -> Duration {
    let factor = (1.0 - headroom - usage).clamp(0.0, 1.0);
    gc_delay.mul_f64(if factor.is_finite() { factor } else { 0.0 })
}

/// The fraction of the filesystem holding `path` in use, as Mesos's `fs::usage`.
pub fn disk_usage(path: &Path) -> std::io::Result<f64> {
    let st = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    let blocks = st.blocks() as f64;
    if blocks <= 0.0 {
        return Ok(0.0);
    }
    Ok((blocks - st.blocks_free() as f64) / blocks)
}

/// The schedule: runs by removal time. Pure bookkeeping, driven by [`Gc::run`] (and unit tests).
#[derive(Debug, Default)]
pub struct Schedule {
    entries: BTreeMap<(Instant, u64), Run>,
    scheduled: HashSet<Run>,
    seq: u64,
}

impl Schedule {
    /// Schedules `run` for removal at `at` (a run already scheduled keeps its time).
    pub fn schedule(&mut self, run: Run, at: Instant) -> bool {
        if !self.scheduled.insert(run.clone()) {
            return false;
        }
        self.seq += 1;
        self.entries.insert((at, self.seq), run);
        true
    }

    /// The earliest removal time.
    pub fn next(&self) -> Option<Instant> {
        self.entries.keys().next().map(|(at, _)| *at)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Takes the runs due at or before `deadline`.
    pub fn take_until(&mut self, deadline: Instant) -> Vec<Run> {
        let later = self.entries.split_off(&(deadline, u64::MAX));
        let due = std::mem::replace(&mut self.entries, later);
        due.into_values().inspect(|r| {
            self.scheduled.remove(r);
        }).collect()
    }

    /// Mesos's `prune(gc_delay - max_age)`: takes the runs whose removal is due within `gc_delay - max_age`
    /// of `now`, i.e. those completed at least `max_age` ago.
    pub fn prune(&mut self, now: Instant, gc_delay: Duration, max_age: Duration) -> Vec<Run> {
        self.take_until(now + gc_delay.saturating_sub(max_age))
    }
}

/// The garbage collector of one agent.
pub struct Gc {
    pub delay: Duration,
    pub headroom: f64,
    pub disk_watch_interval: Duration,
    schedule: Mutex<Schedule>,
    wake: Notify,
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    /// `slave/executor_directory_max_allowed_age_secs`, as f64 bits.
    max_age_secs: AtomicU64,
}

impl Gc {
    pub fn new(delay: Duration, headroom: f64, disk_watch_interval: Duration) -> Gc {
        Gc {
            delay,
            headroom,
            disk_watch_interval,
            schedule: Mutex::new(Schedule::default()),
            wake: Notify::new(),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            max_age_secs: AtomicU64::new(max_allowed_age(delay, headroom, 0.0).as_secs_f64().to_bits()),
        }
    }

    /// Schedules `run` for removal `age` after its end, `age` ago (zero: it just ended).
    pub fn schedule(&self, run: Run, age: Duration) {
        let at = Instant::now() + self.delay.saturating_sub(age);
        tracing::info!(framework = %run.framework_id, executor = %run.executor_id, container = %run.container_id,
            in_secs = self.delay.saturating_sub(age).as_secs_f64(), "scheduling the run's sandbox and meta directories for garbage collection");
        let earlier = {
            let mut s = self.schedule.lock().unwrap();
            let next = s.next();
            s.schedule(run, at) && next.is_none_or(|n| at < n)
        };
        if earlier {
            self.wake.notify_one();
        }
    }

    /// Runs scheduled and not yet removed.
    pub fn pending(&self) -> usize {
        self.schedule.lock().unwrap().len()
    }

    /// The age a completed run may reach at the latest disk check, in seconds.
    pub fn max_allowed_age_secs(&self) -> f64 {
        f64::from_bits(self.max_age_secs.load(Ordering::Relaxed))
    }

    /// Removes what is due, and prunes at each disk check, until the agent goes.
    pub async fn run(agent: Arc<Agent>) {
        let gc = &agent.gc;
        let mut disk = tokio::time::interval(gc.disk_watch_interval);
        disk.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = gc.schedule.lock().unwrap().next();
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let runs = tokio::select! {
                () = sleep => gc.schedule.lock().unwrap().take_until(Instant::now()),
                () = gc.wake.notified() => continue,
                _ = disk.tick() => {
                    let usage = match disk_usage(&agent.work_dir) {
                        Ok(u) => u,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read the work dir's disk usage");
                            continue;
                        }
                    };
                    let age = max_allowed_age(gc.delay, gc.headroom, usage);
                    gc.max_age_secs.store(age.as_secs_f64().to_bits(), Ordering::Relaxed);
                    let pruned = gc.schedule.lock().unwrap().prune(Instant::now(), gc.delay, age);
                    if !pruned.is_empty() {
                        tracing::info!(usage, max_age_secs = age.as_secs_f64(), runs = pruned.len(), "pruning the runs older than the allowed age at this disk usage");
                    }
                    pruned
                }
            };
            if !runs.is_empty() {
                agent.collect(runs).await;
            }
        }
    }
}

impl Agent {
    /// Schedules the sandbox and meta directories of an ended run: their mtime becomes now (the run's end, for
    /// an agent restarted before they go).
    pub fn schedule_gc(&self, framework_id: &str, executor_id: &str, container_id: &str) {
        let run = Run {
            agent_id: self.id(),
            framework_id: framework_id.to_string(),
            executor_id: executor_id.to_string(),
            container_id: container_id.to_string(),
        };
        for dir in [run.sandbox(&self.work_dir), run.meta(&self.work_dir)] {
            touch(&dir);
        }
        self.gc.schedule(run, Duration::ZERO);
    }

    /// After recovery: schedules every run on disk (sandbox or meta) that no executor of this agent owns, from
    /// the newest mtime of its directories.
    pub fn schedule_gc_on_disk(&self) {
        let live: HashSet<String> = self.state.lock().unwrap().executors.values().map(|e| e.container_id.clone()).collect();
        let mut found: BTreeMap<Run, SystemTime> = BTreeMap::new();
        for root in [self.work_dir.join("slaves"), self.work_dir.join("meta").join("slaves")] {
            for (run, mtime) in runs_under(&root) {
                if live.contains(&run.container_id) {
                    continue;
                }
                let newest = found.entry(run).or_insert(mtime);
                *newest = (*newest).max(mtime);
            }
        }
        let now = SystemTime::now();
        for (run, mtime) in found {
            self.gc.schedule(run, now.duration_since(mtime).unwrap_or_default());
        }
    }

    /// Removes `runs` (off the async threads) and then what they leave empty.
    pub async fn collect(&self, runs: Vec<Run>) {
        // Never a run the agent still runs (a container id is never reused; this is a guard).
        let runs: Vec<Run> = {
            let state = self.state.lock().unwrap();
            runs.into_iter().filter(|r| !state.executors.values().any(|e| e.container_id == r.container_id)).collect()
        };
        let work_dir = self.work_dir.clone();
        let removed = tokio::task::spawn_blocking(move || {
            runs.into_iter()
                .map(|run| {
                    let mut failed = 0u64;
                    for dir in [run.sandbox(&work_dir), run.meta(&work_dir)] {
                        match mezzo_containerizer::tree::remove_tree(&dir) {
                            Ok(r) => tracing::info!(path = %dir.display(), entries = r.entries, "garbage collected"),
                            Err(e) => {
                                tracing::warn!(path = %dir.display(), error = %e, "garbage collection failed");
                                failed += 1;
                            }
                        }
                    }
                    (run, failed)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        // Paths are counted as Mesos counts them: each run has two. A failed removal (a mount point left in the
        // sandbox) is tried again by the next agent that finds the run on disk.
        for (run, failed) in &removed {
            self.gc.succeeded.fetch_add(2 - failed, Ordering::Relaxed);
            self.gc.failed.fetch_add(*failed, Ordering::Relaxed);
            self.remove_emptied(run);
        }
    }

    /// The `runs/latest` links naming `run`, and its executor's and framework's directories once empty, unless
    /// an executor of theirs runs. Under the state lock: an executor is in the state from before its sandbox and
    /// checkpoints are made.
    fn remove_emptied(&self, run: &Run) {
        let state = self.state.lock().unwrap();
        let executor_live = state.executors.keys().any(|(f, e)| *f == run.framework_id && *e == run.executor_id);
        let framework_live = state.executors.keys().any(|(f, _)| *f == run.framework_id);
        for (root, meta) in [(self.work_dir.clone(), false), (self.work_dir.join("meta"), true)] {
            let executor = crate::paths::executor_dir(&root, &run.agent_id, &run.framework_id, &run.executor_id);
            let runs = executor.join("runs");
            let latest = runs.join("latest");
            if std::fs::read_link(&latest).is_ok_and(|t| t == Path::new(&run.container_id)) {
                let _ = std::fs::remove_file(&latest);
            }
            if executor_live {
                continue;
            }
            let _ = std::fs::remove_dir(&runs);
            if meta && !runs.exists() {
                let _ = std::fs::remove_file(executor.join("executor.info"));
            }
            let _ = std::fs::remove_dir(&executor);
            let Some(executors) = executor.parent() else { continue };
            if framework_live {
                continue;
            }
            let _ = std::fs::remove_dir(executors);
            let Some(framework) = executors.parent() else { continue };
            // Its checkpointed info goes with its last executor: the next executor of the framework writes it
            // again (under the state lock, before the executor is in the state).
            if meta && !executors.exists() {
                let _ = std::fs::remove_file(framework.join("framework.info"));
            }
            let _ = std::fs::remove_dir(framework);
        }
    }
}

/// Sets a directory's mtime to now (never through a symlink).
pub fn touch(dir: &Path) {
    let now = nix::sys::time::TimeSpec::UTIME_NOW;
    if let Err(e) = nix::sys::stat::utimensat(None, dir, &now, &now, nix::sys::stat::UtimensatFlags::NoFollowSymlink) {
        if e != nix::errno::Errno::ENOENT {
            tracing::debug!(path = %dir.display(), error = %e, "cannot touch a run directory");
        }
    }
}

/// The runs under `<root>` (`<root>/<aid>/frameworks/<fid>/executors/<eid>/runs/<cid>`), with their mtimes.
fn runs_under(root: &Path) -> Vec<(Run, SystemTime)> {
    fn dirs(path: &Path) -> Vec<(String, std::fs::Metadata)> {
        let Ok(entries) = std::fs::read_dir(path) else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                // symlink_metadata: `latest` and anything else that is a link is no run.
                let meta = std::fs::symlink_metadata(e.path()).ok()?;
                (meta.is_dir() && crate::paths::safe_component(&name) && !name.starts_with('.')).then_some((name, meta))
            })
            .collect()
    }
    let mut out = Vec::new();
    for (aid, _) in dirs(root) {
        let frameworks = root.join(&aid).join("frameworks");
        for (fid, _) in dirs(&frameworks) {
            let executors = frameworks.join(&fid).join("executors");
            for (eid, _) in dirs(&executors) {
                let runs = executors.join(&eid).join("runs");
                for (cid, meta) in dirs(&runs) {
                    let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    let run = Run { agent_id: aid.clone(), framework_id: fid.clone(), executor_id: eid.clone(), container_id: cid };
                    out.push((run, mtime));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cid: &str) -> Run {
        Run { agent_id: "A".into(), framework_id: "F".into(), executor_id: "E".into(), container_id: cid.into() }
    }

    #[test]
    fn the_allowed_age_shrinks_as_the_disk_fills() {
        let week = Duration::from_secs(7 * 86400);
        assert_eq!(max_allowed_age(week, 0.1, 0.0), week.mul_f64(0.9));
        assert_eq!(max_allowed_age(week, 0.1, 0.5), week.mul_f64(0.4));
        assert_eq!(max_allowed_age(week, 0.1, 0.9), Duration::ZERO);
        assert_eq!(max_allowed_age(week, 0.1, 0.99), Duration::ZERO, "never negative");
        assert_eq!(max_allowed_age(week, 0.0, 0.0), week);
        assert_eq!(max_allowed_age(week, 0.1, f64::NAN), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn runs_are_due_after_the_delay_and_pruned_by_age() {
        let delay = Duration::from_secs(100);
        let gc = Gc::new(delay, 0.1, Duration::from_secs(60));
        gc.schedule(run("old"), Duration::from_secs(80)); // ended 80 s ago (found on disk after a restart)
        gc.schedule(run("new"), Duration::ZERO);
        gc.schedule(run("new"), Duration::from_secs(99)); // scheduled once: the first time stands
        gc.schedule(run("ancient"), Duration::from_secs(1000));
        assert_eq!(gc.pending(), 3);
        {
            let mut s = gc.schedule.lock().unwrap();
            assert_eq!(s.take_until(Instant::now()), [run("ancient")], "older than the delay: due at once");
            assert!(s.take_until(Instant::now() + Duration::from_secs(19)).is_empty());
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        // 50% of the disk used: runs older than 100 * (1 - 0.1 - 0.5) = 40 s go: "old" (90 s), not "new" (10 s).
        let age = max_allowed_age(delay, 0.1, 0.5);
        let mut s = gc.schedule.lock().unwrap();
        assert_eq!(s.prune(Instant::now(), delay, age), [run("old")]);
        assert!(s.prune(Instant::now(), delay, max_allowed_age(delay, 0.1, 0.0)).is_empty(), "an empty disk prunes nothing young");
        assert_eq!(s.next(), Some(Instant::now() + Duration::from_secs(90)));
        // A full disk: everything completed goes.
        assert_eq!(s.prune(Instant::now(), delay, max_allowed_age(delay, 0.1, 0.95)), [run("new")]);
        assert!(s.is_empty());
        drop(s);
        // Removed runs may be scheduled again (a second removal after a failed one).
        gc.schedule(run("new"), Duration::ZERO);
        assert_eq!(gc.pending(), 1);
    }

    #[test]
    fn runs_on_disk_are_found_with_their_mtimes() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("slaves");
        let run_dir = root.join("A/frameworks/F/executors/E/runs/c1");
        std::fs::create_dir_all(&run_dir).unwrap();
        std::fs::create_dir_all(root.join("A/frameworks/F/executors/E/runs/c2")).unwrap();
        std::os::unix::fs::symlink("c1", root.join("A/frameworks/F/executors/E/runs/latest")).unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::open(&run_dir).unwrap().set_modified(old).unwrap();
        let mut found = runs_under(&root);
        found.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(found.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>(), [run("c1"), run("c2")]);
        assert_eq!(found[0].1, old);
        assert_eq!(run("c1").sandbox(tmp.path()), run_dir);
        assert_eq!(run("c1").meta(tmp.path()), tmp.path().join("meta/slaves/A/frameworks/F/executors/E/runs/c1"));
    }
}
