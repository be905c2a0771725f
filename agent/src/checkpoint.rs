//! Checkpoints under `<work_dir>/meta`, in Mesos's layout, and reading
//! them back after a restart.
//!
//! ```text
//! meta/boot_id                                   host boot id (reboot detection)
//! meta/slaves/latest -> <agent id>
//! meta/slaves/<aid>/slave.info                   AgentInfo
//! meta/slaves/<aid>/frameworks/<fid>/framework.info
//! meta/slaves/<aid>/frameworks/<fid>/executors/<eid>/executor.info
//! meta/slaves/<aid>/frameworks/<fid>/executors/<eid>/runs/latest -> <cid>
//! meta/slaves/<aid>/frameworks/<fid>/executors/<eid>/runs/<cid>/pids/forked.pid
//! meta/slaves/<aid>/frameworks/<fid>/executors/<eid>/runs/<cid>/executor.sentinel
//! meta/slaves/<aid>/frameworks/<fid>/executors/<eid>/runs/<cid>/tasks/<tid>/task.info
//! meta/slaves/<aid>/frameworks/<fid>/executors/<eid>/runs/<cid>/tasks/<tid>/task.updates
//! ```
//!
//! Protobuf files hold one length-prefixed message (u32 little endian, then
//! the bytes) written through a temp file, fsync and rename; `task.updates`
//! is a sequence of such `StatusUpdateRecord`s, appended and fsynced one by
//! one. A record cut short by a crash is ignored on recovery.

use mezzo_proto::mesos::v1::{AgentInfo, ExecutorInfo, FrameworkInfo, TaskInfo, TaskStatus};
use mezzo_proto::mezzo::agent::{status_update_record, StatusUpdate, StatusUpdateRecord};
use prost::Message;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A checkpoint that could not be written or read back.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// reading or writing a file failed
    #[error("checkpoint {path}: {source}")]
    Io { path: PathBuf, #[source] source: std::io::Error },
    /// a file does not hold what it should
    #[error("checkpoint {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io { path: path.to_path_buf(), source }
}

/// Writes `data` to `path` atomically (temp file, fsync, rename, fsync of the directory).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), CheckpointError> {
    let dir = path.parent().ok_or_else(|| CheckpointError::Corrupt { path: path.to_path_buf(), reason: "no parent directory".into() })?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(data).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    // The rename itself is durable only once the directory is synced.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn framed<M: Message>(msg: &M) -> Vec<u8> {
    let body = msg.encode_to_vec();
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Writes one length-prefixed message atomically.
pub fn write_message<M: Message>(path: &Path, msg: &M) -> Result<(), CheckpointError> {
    write_atomic(path, &framed(msg))
}

/// Reads one length-prefixed message.
pub fn read_message<M: Message + Default>(path: &Path) -> Result<M, CheckpointError> {
    let data = std::fs::read(path).map_err(io(path))?;
    let mut records = read_records::<M>(path, &data)?;
    match (records.len(), data.len()) {
        (1, _) => Ok(records.remove(0)),
        _ => Err(CheckpointError::Corrupt { path: path.to_path_buf(), reason: "expected exactly one message".into() }),
    }
}

/// Decodes a sequence of length-prefixed messages; a truncated last record
/// (a crash during an append) is dropped, anything else undecodable is corrupt.
fn read_records<M: Message + Default>(path: &Path, mut data: &[u8]) -> Result<Vec<M>, CheckpointError> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.len() < 4 {
            tracing::warn!(path = %path.display(), "ignoring a truncated record at the end of a checkpoint");
            break;
        }
        let len = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if data.len() - 4 < len {
            tracing::warn!(path = %path.display(), "ignoring a truncated record at the end of a checkpoint");
            break;
        }
        let msg = M::decode(&data[4..4 + len])
            .map_err(|e| CheckpointError::Corrupt { path: path.to_path_buf(), reason: e.to_string() })?;
        out.push(msg);
        data = &data[4 + len..];
    }
    Ok(out)
}

/// Appends one record to a `task.updates` file and fsyncs it.
pub fn append_record(path: &Path, record: &StatusUpdateRecord) -> Result<(), CheckpointError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(io(path))?;
    f.write_all(&framed(record)).map_err(io(path))?;
    f.sync_data().map_err(io(path))
}

/// An UPDATE record.
pub fn update_record(framework_id: &str, status: &TaskStatus) -> StatusUpdateRecord {
    StatusUpdateRecord {
        r#type: status_update_record::Type::Update as i32,
        update: Some(StatusUpdate {
            framework_id: mezzo_proto::mesos::v1::FrameworkId { value: framework_id.to_string() },
            status: status.clone(),
        }),
        uuid: None,
    }
}

/// An ACK record.
pub fn ack_record(uuid: &[u8]) -> StatusUpdateRecord {
    StatusUpdateRecord { r#type: status_update_record::Type::Ack as i32, update: None, uuid: Some(uuid.to_vec()) }
}

/// Points the symlink `link` at `target` atomically.
fn symlink_atomic(target: &str, link: &Path) -> Result<(), CheckpointError> {
    let dir = link.parent().expect("links live in a directory");
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = dir.join(".latest.tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(io(&tmp))?;
    std::fs::rename(&tmp, link).map_err(io(link))
}

/// This host's boot id; a different one at recovery means the host rebooted.
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|s| s.trim().to_string())
}

/// The `meta` directory of one agent work dir.
#[derive(Debug, Clone)]
pub struct Meta {
    root: PathBuf,
}

impl Meta {
    /// The checkpoints under `<work_dir>/meta`.
    pub fn new(work_dir: &Path) -> Self {
        Meta { root: work_dir.join("meta") }
    }

    /// `meta/slaves/<aid>`.
    pub fn agent_dir(&self, aid: &str) -> PathBuf {
        self.root.join("slaves").join(aid)
    }

    /// `meta/slaves/<aid>/frameworks/<fid>`.
    pub fn framework_dir(&self, aid: &str, fid: &str) -> PathBuf {
        self.agent_dir(aid).join("frameworks").join(fid)
    }

    /// `.../frameworks/<fid>/executors/<eid>`.
    pub fn executor_dir(&self, aid: &str, fid: &str, eid: &str) -> PathBuf {
        self.framework_dir(aid, fid).join("executors").join(eid)
    }

    /// `.../executors/<eid>/runs/<cid>`.
    pub fn run_dir(&self, aid: &str, fid: &str, eid: &str, cid: &str) -> PathBuf {
        self.executor_dir(aid, fid, eid).join("runs").join(cid)
    }

    /// `.../runs/<cid>/tasks/<tid>/task.updates`.
    pub fn task_updates_path(&self, aid: &str, fid: &str, eid: &str, cid: &str, tid: &str) -> PathBuf {
        self.run_dir(aid, fid, eid, cid).join("tasks").join(tid).join("task.updates")
    }

    /// Checkpoints the agent's info (its id) and the boot id, and points `slaves/latest` at it.
    pub fn checkpoint_agent(&self, info: &AgentInfo) -> Result<(), CheckpointError> {
        let aid = info.id.as_ref().map(|i| i.value.clone()).unwrap_or_default();
        write_message(&self.agent_dir(&aid).join("slave.info"), info)?;
        if let Some(boot) = boot_id() {
            write_atomic(&self.root.join("boot_id"), boot.as_bytes())?;
        }
        symlink_atomic(&aid, &self.root.join("slaves").join("latest"))
    }

    /// Checkpoints a framework's info.
    pub fn checkpoint_framework(&self, aid: &str, info: &FrameworkInfo) -> Result<(), CheckpointError> {
        let fid = info.id.as_ref().map(|i| i.value.as_str()).unwrap_or_default();
        write_message(&self.framework_dir(aid, fid).join("framework.info"), info)
    }

    /// Checkpoints an executor, its new run (container id) and its first task.
    pub fn checkpoint_executor(&self, aid: &str, info: &ExecutorInfo, cid: &str, task: &TaskInfo) -> Result<(), CheckpointError> {
        let fid = info.framework_id.as_ref().map(|i| i.value.as_str()).unwrap_or_default();
        let eid = info.executor_id.value.as_str();
        let exec_dir = self.executor_dir(aid, fid, eid);
        write_message(&exec_dir.join("executor.info"), info)?;
        self.checkpoint_task(aid, fid, eid, cid, task)?;
        symlink_atomic(cid, &exec_dir.join("runs").join("latest"))
    }

    /// Checkpoints one more task of an executor's run.
    pub fn checkpoint_task(&self, aid: &str, fid: &str, eid: &str, cid: &str, task: &TaskInfo) -> Result<(), CheckpointError> {
        write_message(&self.run_dir(aid, fid, eid, cid).join("tasks").join(&task.task_id.value).join("task.info"), task)
    }

    /// Checkpoints the pid of a run's executor.
    pub fn checkpoint_pid(&self, aid: &str, fid: &str, eid: &str, cid: &str, pid: i32) -> Result<(), CheckpointError> {
        write_atomic(&self.run_dir(aid, fid, eid, cid).join("pids").join("forked.pid"), pid.to_string().as_bytes())
    }

    /// Marks a run as completed (its executor is gone and its container destroyed).
    pub fn mark_completed(&self, aid: &str, fid: &str, eid: &str, cid: &str) -> Result<(), CheckpointError> {
        write_atomic(&self.run_dir(aid, fid, eid, cid).join("executor.sentinel"), b"")
    }

    /// Removes what is checkpointed of a framework.
    pub fn remove_framework(&self, aid: &str, fid: &str) {
        let _ = std::fs::remove_dir_all(self.framework_dir(aid, fid));
    }

    /// Reads back everything checkpointed by the latest agent; `None` when
    /// there is nothing (first start). With `strict` any unreadable
    /// checkpoint is an error; otherwise it is skipped with a warning.
    pub fn recover(&self, strict: bool) -> Result<Option<RecoveredAgent>, CheckpointError> {
        let latest = self.root.join("slaves").join("latest");
        let aid = match std::fs::read_link(&latest) {
            Ok(target) => target.to_string_lossy().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CheckpointError::Io { path: latest, source: e }),
        };
        let info: AgentInfo = read_message(&self.agent_dir(&aid).join("slave.info"))?;
        let previous_boot = std::fs::read_to_string(self.root.join("boot_id")).ok().map(|s| s.trim().to_string());
        let rebooted = previous_boot.is_some() && previous_boot != boot_id();
        let mut frameworks = Vec::new();
        for fid in list_dirs(&self.agent_dir(&aid).join("frameworks"))? {
            match self.recover_framework(&aid, &fid, strict) {
                Ok(Some(f)) => frameworks.push(f),
                Ok(None) => {}
                Err(e) if !strict => tracing::warn!(framework = %fid, error = %e, "skipping a framework whose checkpoint is unreadable"),
                Err(e) => return Err(e),
            }
        }
        Ok(Some(RecoveredAgent { info, rebooted, frameworks }))
    }

    fn recover_framework(&self, aid: &str, fid: &str, strict: bool) -> Result<Option<RecoveredFramework>, CheckpointError> {
        let dir = self.framework_dir(aid, fid);
        let info_path = dir.join("framework.info");
        if !info_path.exists() {
            // Created by a run that crashed before its first checkpoint.
            return Ok(None);
        }
        let info: FrameworkInfo = read_message(&info_path)?;
        let mut executors = Vec::new();
        for eid in list_dirs(&dir.join("executors"))? {
            match self.recover_executor(aid, fid, &eid) {
                Ok(Some(e)) => executors.push(e),
                Ok(None) => {}
                Err(e) if !strict => tracing::warn!(executor = %eid, error = %e, "skipping an executor whose checkpoint is unreadable"),
                Err(e) => return Err(e),
            }
        }
        Ok(Some(RecoveredFramework { info, executors }))
    }

    fn recover_executor(&self, aid: &str, fid: &str, eid: &str) -> Result<Option<RecoveredExecutor>, CheckpointError> {
        let dir = self.executor_dir(aid, fid, eid);
        let info_path = dir.join("executor.info");
        if !info_path.exists() {
            return Ok(None);
        }
        let info: ExecutorInfo = read_message(&info_path)?;
        let latest = dir.join("runs").join("latest");
        let cid = match std::fs::read_link(&latest) {
            Ok(t) => t.to_string_lossy().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CheckpointError::Io { path: latest, source: e }),
        };
        let run = self.run_dir(aid, fid, eid, &cid);
        let pid_path = run.join("pids").join("forked.pid");
        let pid = match std::fs::read_to_string(&pid_path) {
            Ok(s) => Some(s.trim().parse::<i32>().map_err(|e| CheckpointError::Corrupt { path: pid_path.clone(), reason: e.to_string() })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(CheckpointError::Io { path: pid_path, source: e }),
        };
        let completed = run.join("executor.sentinel").exists();
        let mut tasks = Vec::new();
        for tid in list_dirs(&run.join("tasks"))? {
            let tdir = run.join("tasks").join(&tid);
            let info_path = tdir.join("task.info");
            if !info_path.exists() {
                continue;
            }
            let task = read_message::<TaskInfo>(&info_path)?;
            let mut updates = Vec::new();
            let mut acked: Vec<Vec<u8>> = Vec::new();
            let path = tdir.join("task.updates");
            match std::fs::read(&path) {
                Ok(data) => {
                    for record in read_records::<StatusUpdateRecord>(&path, &data)? {
                        match record.r#type() {
                            status_update_record::Type::Update => {
                                if let Some(u) = record.update {
                                    updates.push(u.status);
                                }
                            }
                            status_update_record::Type::Ack => acked.extend(record.uuid),
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(CheckpointError::Io { path, source: e }),
            }
            let unacknowledged =
                updates.iter().filter(|u| !u.uuid.as_ref().is_some_and(|id| acked.contains(id))).cloned().collect();
            tasks.push(RecoveredTask { info: task, updates, unacknowledged, updates_path: path });
        }
        Ok(Some(RecoveredExecutor { info, container_id: cid, pid, completed, tasks, run_dir: run }))
    }
}

fn list_dirs(dir: &Path) -> Result<Vec<String>, CheckpointError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CheckpointError::Io { path: dir.to_path_buf(), source: e }),
    };
    let mut out: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| !n.starts_with('.'))
        .collect();
    out.sort();
    Ok(out)
}

/// What the latest agent on this work dir checkpointed.
#[derive(Debug)]
pub struct RecoveredAgent {
    pub info: AgentInfo,
    /// The host rebooted since: no checkpointed process can still run.
    pub rebooted: bool,
    pub frameworks: Vec<RecoveredFramework>,
}

/// A checkpointed framework and its executors.
#[derive(Debug)]
pub struct RecoveredFramework {
    pub info: FrameworkInfo,
    pub executors: Vec<RecoveredExecutor>,
}

/// The latest run of a checkpointed executor.
#[derive(Debug)]
pub struct RecoveredExecutor {
    pub info: ExecutorInfo,
    pub container_id: String,
    /// pid of the executor process, once it was started.
    pub pid: Option<i32>,
    /// The run ended before the agent stopped.
    pub completed: bool,
    /// Its tasks, by task id.
    pub tasks: Vec<RecoveredTask>,
    /// The run's meta directory.
    pub run_dir: PathBuf,
}

/// A checkpointed task of an executor's run.
#[derive(Debug)]
pub struct RecoveredTask {
    pub info: TaskInfo,
    /// Every update of the task, oldest first.
    pub updates: Vec<TaskStatus>,
    /// Updates the scheduler has not acknowledged, oldest first.
    pub unacknowledged: Vec<TaskStatus>,
    /// The task's `task.updates` file.
    pub updates_path: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use mezzo_proto::mesos::v1::{AgentId, ExecutorId, FrameworkId, TaskId, TaskState};

    fn status(state: TaskState) -> TaskStatus {
        let mut s = TaskStatus { task_id: TaskId { value: "t1".into() }, uuid: Some(mezzo_proto::new_uuid()), ..Default::default() };
        s.set_state(state);
        s
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("mezzo-checkpoint-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn round_trip_of_agent_framework_executor_task_and_updates() {
        let dir = tempdir();
        let meta = Meta::new(&dir);
        assert!(meta.recover(true).unwrap().is_none(), "nothing checkpointed yet");
        let info = AgentInfo { hostname: "h".into(), id: Some(AgentId { value: "A-S0".into() }), ..Default::default() };
        meta.checkpoint_agent(&info).unwrap();
        let fw = FrameworkInfo { user: "root".into(), name: "f".into(), id: Some(FrameworkId { value: "F1".into() }), checkpoint: Some(true), ..Default::default() };
        meta.checkpoint_framework("A-S0", &fw).unwrap();
        let ex = ExecutorInfo { executor_id: ExecutorId { value: "t1".into() }, framework_id: fw.id.clone(), ..Default::default() };
        let task = TaskInfo { name: "t1".into(), task_id: TaskId { value: "t1".into() }, ..Default::default() };
        meta.checkpoint_executor("A-S0", &ex, "cid-1", &task).unwrap();
        meta.checkpoint_pid("A-S0", "F1", "t1", "cid-1", 4242).unwrap();
        let path = meta.task_updates_path("A-S0", "F1", "t1", "cid-1", "t1");
        let (starting, running) = (status(TaskState::TaskStarting), status(TaskState::TaskRunning));
        append_record(&path, &update_record("F1", &starting)).unwrap();
        append_record(&path, &ack_record(starting.uuid.as_ref().unwrap())).unwrap();
        append_record(&path, &update_record("F1", &running)).unwrap();
        // A crash in the middle of an append leaves a partial record behind.
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(&[9, 0, 0, 0, 1]).unwrap();

        let rec = meta.recover(true).unwrap().unwrap();
        assert_eq!(rec.info.id.unwrap().value, "A-S0");
        assert!(!rec.rebooted);
        assert_eq!(rec.frameworks.len(), 1);
        assert_eq!(rec.frameworks[0].info.name, "f");
        let e = &rec.frameworks[0].executors[0];
        assert_eq!(e.container_id, "cid-1");
        assert_eq!(e.pid, Some(4242));
        assert!(!e.completed);
        assert_eq!(e.tasks.len(), 1);
        assert_eq!(e.tasks[0].info.task_id.value, "t1");
        assert_eq!(e.tasks[0].updates.len(), 2);
        assert_eq!(e.tasks[0].unacknowledged.len(), 1);
        assert_eq!(e.tasks[0].unacknowledged[0].state(), TaskState::TaskRunning);
        meta.mark_completed("A-S0", "F1", "t1", "cid-1").unwrap();
        assert!(meta.recover(true).unwrap().unwrap().frameworks[0].executors[0].completed);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_checkpoints_fail_strict_recovery_only() {
        let dir = tempdir();
        let meta = Meta::new(&dir);
        let info = AgentInfo { hostname: "h".into(), id: Some(AgentId { value: "A-S1".into() }), ..Default::default() };
        meta.checkpoint_agent(&info).unwrap();
        let fdir = meta.framework_dir("A-S1", "F1");
        std::fs::create_dir_all(&fdir).unwrap();
        std::fs::write(fdir.join("framework.info"), [3, 0, 0, 0, 0xff, 0xff, 0xff]).unwrap();
        assert!(matches!(meta.recover(true), Err(CheckpointError::Corrupt { .. })));
        let rec = meta.recover(false).unwrap().unwrap();
        assert!(rec.frameworks.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
