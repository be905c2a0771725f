//! Reliable delivery of status updates to the master: one ordered stream per
//! task, the head of each stream resent with backoff until the master relays
//! the scheduler's acknowledgement (Mesos's `TaskStatusUpdateManager`).

use mezzo_proto::mesos::v1::{FrameworkId, TaskStatus};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// First resend interval; doubles up to `MAX_RETRY` (Mesos: 10 s to 10 min).
pub const MIN_RETRY: Duration = Duration::from_secs(10);
/// Longest resend interval.
pub const MAX_RETRY: Duration = Duration::from_secs(600);

/// Sends one update to the master; errors are retried by the manager.
pub type Forward =
    Arc<dyn Fn(FrameworkId, TaskStatus) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

type Key = (String, String);

struct Stream {
    framework_id: FrameworkId,
    pending: VecDeque<TaskStatus>,
    /// The task's `task.updates` checkpoint (checkpointing frameworks only).
    checkpoint: Option<PathBuf>,
    notify: Arc<Notify>,
    running: bool,
}

/// Queues updates per task and forwards them in order, one unacknowledged at a time.
pub struct StatusUpdateManager {
    streams: Mutex<HashMap<Key, Stream>>,
    /// uuids the scheduler acknowledged, per task, until its terminal update
    /// is acknowledged: an executor that sends one of them again (it missed
    /// the agent's acknowledgement, e.g. across an agent restart) is not
    /// forwarded again (Mesos: "duplicate status update").
    acknowledged: Mutex<HashMap<Key, Vec<Vec<u8>>>>,
    forward: Forward,
    min_retry: Duration,
}

impl StatusUpdateManager {
    /// A manager that forwards with `forward`, resending after `min_retry` at first.
    pub fn new(forward: Forward, min_retry: Duration) -> Arc<Self> {
        Arc::new(StatusUpdateManager { streams: Mutex::new(HashMap::new()), acknowledged: Mutex::default(), forward, min_retry })
    }

    /// Queues `status` (which must carry a uuid) for its task.
    pub fn update(self: &Arc<Self>, framework_id: FrameworkId, status: TaskStatus) {
        self.update_checkpointed(framework_id, status, None);
    }

    /// Queues `status`, first appending it to the task's `checkpoint` file
    /// when there is one, so that it survives an agent restart.
    pub fn update_checkpointed(self: &Arc<Self>, framework_id: FrameworkId, status: TaskStatus, checkpoint: Option<PathBuf>) {
        self.enqueue(framework_id, vec![status], checkpoint, true);
    }

    /// After an agent restart: queues a task's unacknowledged updates again
    /// (they are already in `checkpoint`) and remembers the uuids of its
    /// `acknowledged` ones (from the same checkpoint).
    pub fn recover(
        self: &Arc<Self>,
        framework_id: FrameworkId,
        task_id: &str,
        unacknowledged: Vec<TaskStatus>,
        acknowledged: Vec<Vec<u8>>,
        checkpoint: Option<PathBuf>,
    ) {
        if !acknowledged.is_empty() {
            self.acknowledged.lock().unwrap().insert((framework_id.value.clone(), task_id.to_string()), acknowledged);
        }
        self.enqueue(framework_id, unacknowledged, checkpoint, false);
    }

    fn enqueue(self: &Arc<Self>, framework_id: FrameworkId, statuses: Vec<TaskStatus>, checkpoint: Option<PathBuf>, write: bool) {
        let Some(first) = statuses.first() else { return };
        let key = (framework_id.value.clone(), first.task_id.value.clone());
        let statuses: Vec<TaskStatus> = match self.acknowledged.lock().unwrap().get(&key) {
            Some(acked) => statuses
                .into_iter()
                .filter(|s| {
                    let duplicate = s.uuid.as_ref().is_some_and(|u| acked.contains(u));
                    if duplicate {
                        tracing::info!(task = %key.1, state = s.state().as_str_name(), "ignoring a duplicate of an acknowledged status update");
                    }
                    !duplicate
                })
                .collect(),
            None => statuses,
        };
        if statuses.is_empty() {
            return;
        }
        let mut streams = self.streams.lock().unwrap();
        let stream = streams.entry(key.clone()).or_insert_with(|| Stream {
            framework_id: framework_id.clone(),
            pending: VecDeque::new(),
            checkpoint: None,
            notify: Arc::new(Notify::new()),
            running: false,
        });
        if checkpoint.is_some() {
            stream.checkpoint = checkpoint;
        }
        for status in statuses {
            if stream.pending.iter().any(|s| s.uuid == status.uuid) {
                continue; // duplicate delivery from the executor
            }
            if let (true, Some(path)) = (write, &stream.checkpoint) {
                if let Err(e) = crate::checkpoint::append_record(path, &crate::checkpoint::update_record(&framework_id.value, &status)) {
                    tracing::error!(task = %key.1, error = %e, "failed to checkpoint a status update");
                }
            }
            stream.pending.push_back(status);
        }
        if !stream.running {
            stream.running = true;
            let this = self.clone();
            tokio::spawn(async move { this.forward_loop(key).await });
        }
    }

    /// Handles the scheduler's acknowledgement; true when it matched the head.
    pub fn acknowledge(&self, framework_id: &str, task_id: &str, uuid: &[u8]) -> bool {
        let mut streams = self.streams.lock().unwrap();
        let Some(stream) = streams.get_mut(&(framework_id.to_string(), task_id.to_string())) else {
            return false;
        };
        if stream.pending.front().and_then(|s| s.uuid.as_deref()) != Some(uuid) {
            return false;
        }
        let acked = stream.pending.pop_front();
        {
            let mut acknowledged = self.acknowledged.lock().unwrap();
            let key = (framework_id.to_string(), task_id.to_string());
            if acked.as_ref().is_some_and(|s| s.state().is_terminal()) {
                // The task's stream is over: nothing more will come.
                acknowledged.remove(&key);
            } else {
                acknowledged.entry(key).or_default().push(uuid.to_vec());
            }
        }
        if let Some(path) = &stream.checkpoint {
            if let Err(e) = crate::checkpoint::append_record(path, &crate::checkpoint::ack_record(uuid)) {
                tracing::error!(task = %task_id, error = %e, "failed to checkpoint an acknowledgement");
            }
        }
        stream.notify.notify_one();
        true
    }

    /// Whether the task has updates the scheduler has not acknowledged.
    pub fn has_pending(&self, framework_id: &str, task_id: &str) -> bool {
        self.streams
            .lock()
            .unwrap()
            .get(&(framework_id.to_string(), task_id.to_string()))
            .is_some_and(|s| !s.pending.is_empty())
    }

    /// The task's updates not yet acknowledged, oldest first.
    pub fn pending_of(&self, framework_id: &str, task_id: &str) -> Vec<TaskStatus> {
        self.streams
            .lock()
            .unwrap()
            .get(&(framework_id.to_string(), task_id.to_string()))
            .map(|s| s.pending.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Number of updates not yet acknowledged, over all tasks.
    pub fn pending(&self) -> usize {
        self.streams.lock().unwrap().values().map(|s| s.pending.len()).sum()
    }

    /// Drops the queued updates of a framework (it was torn down).
    pub fn remove_framework(&self, framework_id: &str) {
        self.acknowledged.lock().unwrap().retain(|key, _| key.0 != framework_id);
        let mut streams = self.streams.lock().unwrap();
        for (key, stream) in streams.iter_mut() {
            if key.0 == framework_id {
                stream.pending.clear();
                stream.notify.notify_one();
            }
        }
    }

    async fn forward_loop(self: Arc<Self>, key: Key) {
        let mut interval = self.min_retry;
        let mut last_uuid: Option<Vec<u8>> = None;
        loop {
            let (head, fid, notify) = {
                let mut streams = self.streams.lock().unwrap();
                let stream = streams.get_mut(&key).expect("stream exists while its loop runs");
                match stream.pending.front() {
                    Some(head) => (head.clone(), stream.framework_id.clone(), stream.notify.clone()),
                    None => {
                        stream.running = false;
                        streams.remove(&key);
                        return;
                    }
                }
            };
            if last_uuid.as_ref() != head.uuid.as_ref() {
                interval = self.min_retry;
                last_uuid = head.uuid.clone();
            }
            if let Err(e) = (self.forward)(fid, head).await {
                tracing::warn!(task = %key.1, error = %e, "failed to forward status update; will retry");
            }
            tokio::select! {
                _ = notify.notified() => {}
                _ = tokio::time::sleep(interval) => {
                    interval = (interval * 2).min(MAX_RETRY);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mezzo_proto::mesos::v1::{TaskId, TaskState};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn status(task: &str, state: TaskState) -> TaskStatus {
        let mut s = TaskStatus {
            task_id: TaskId { value: task.to_string() },
            uuid: Some(mezzo_proto::new_uuid()),
            ..Default::default()
        };
        s.set_state(state);
        s
    }

    #[tokio::test(start_paused = true)]
    async fn resends_until_acknowledged_and_keeps_order() {
        let sent: Arc<Mutex<Vec<TaskStatus>>> = Arc::default();
        let count = Arc::new(AtomicUsize::new(0));
        let (s2, c2) = (sent.clone(), count.clone());
        let forward: Forward = Arc::new(move |_fid, st| {
            s2.lock().unwrap().push(st);
            c2.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(()) })
        });
        let sum = StatusUpdateManager::new(forward, Duration::from_secs(10));
        let fid = FrameworkId { value: "f".into() };
        let running = status("t", TaskState::TaskRunning);
        let finished = status("t", TaskState::TaskFinished);
        sum.update(fid.clone(), running.clone());
        sum.update(fid.clone(), finished.clone());
        tokio::time::sleep(Duration::from_millis(1)).await;
        // Only the head is in flight.
        assert_eq!(count.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(count.load(Ordering::SeqCst), 2, "head resent after the retry interval");
        assert!(sent.lock().unwrap().iter().all(|s| s.uuid == running.uuid));
        // A wrong uuid does not advance the stream.
        assert!(!sum.acknowledge("f", "t", finished.uuid.as_ref().unwrap()));
        assert!(sum.acknowledge("f", "t", running.uuid.as_ref().unwrap()));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(sent.lock().unwrap().last().unwrap().uuid, finished.uuid);
        assert!(sum.acknowledge("f", "t", finished.uuid.as_ref().unwrap()));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(sum.pending(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_acknowledged_update_sent_again_is_not_forwarded_again_even_after_a_restart() {
        let sent: Arc<Mutex<Vec<TaskStatus>>> = Arc::default();
        let s2 = sent.clone();
        let forward: Forward = Arc::new(move |_fid, st| {
            s2.lock().unwrap().push(st);
            Box::pin(async { Ok(()) })
        });
        let sum = StatusUpdateManager::new(forward.clone(), Duration::from_secs(10));
        let fid = FrameworkId { value: "f".into() };
        let starting = status("t", TaskState::TaskStarting);
        sum.update(fid.clone(), starting.clone());
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(sum.acknowledge("f", "t", starting.uuid.as_ref().unwrap()));
        tokio::time::sleep(Duration::from_millis(1)).await;
        // The executor missed the agent's acknowledgement and sends it again.
        sum.update(fid.clone(), starting.clone());
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(sent.lock().unwrap().len(), 1, "STARTING reached the scheduler once");
        // A restarted agent knows the acknowledged uuids from the checkpoint.
        let sum2 = StatusUpdateManager::new(forward, Duration::from_secs(10));
        let running = status("t", TaskState::TaskRunning);
        sum2.recover(fid.clone(), "t", vec![running.clone()], vec![starting.uuid.clone().unwrap()], None);
        sum2.update(fid.clone(), starting.clone());
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(sum2.acknowledge("f", "t", running.uuid.as_ref().unwrap()));
        tokio::time::sleep(Duration::from_secs(30)).await;
        let uuids: Vec<_> = sent.lock().unwrap().iter().map(|s| s.state()).collect();
        assert_eq!(uuids, vec![TaskState::TaskStarting, TaskState::TaskRunning]);
        assert_eq!(sum2.pending(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn checkpointed_updates_and_acks_survive_and_are_recovered() {
        let dir = std::env::temp_dir().join(format!("mezzo-sum-test-{}", uuid::Uuid::new_v4()));
        let meta = crate::checkpoint::Meta::new(&dir);
        let path = meta.task_updates_path("A", "f", "t", "c", "t");
        let sent: Arc<Mutex<Vec<TaskStatus>>> = Arc::default();
        let s2 = sent.clone();
        let forward: Forward = Arc::new(move |_fid, st| {
            s2.lock().unwrap().push(st);
            Box::pin(async { Ok(()) })
        });
        let sum = StatusUpdateManager::new(forward, Duration::from_secs(10));
        let fid = FrameworkId { value: "f".into() };
        let (running, finished) = (status("t", TaskState::TaskRunning), status("t", TaskState::TaskFinished));
        sum.update_checkpointed(fid.clone(), running.clone(), Some(path.clone()));
        sum.update_checkpointed(fid.clone(), finished.clone(), Some(path.clone()));
        assert!(sum.acknowledge("f", "t", running.uuid.as_ref().unwrap()));
        // The agent "restarts": a new manager recovers from the checkpoint.
        let data = std::fs::read(&path).unwrap();
        assert!(!data.is_empty());
        let mut written = Vec::new();
        let mut rest = &data[..];
        while rest.len() >= 4 {
            let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            written.push(<mezzo_proto::mezzo::agent::StatusUpdateRecord as prost::Message>::decode(&rest[4..4 + len]).unwrap());
            rest = &rest[4 + len..];
        }
        let kinds: Vec<i32> = written.iter().map(|r| r.r#type).collect();
        assert_eq!(kinds, vec![0, 0, 1], "UPDATE, UPDATE, ACK");
        let resent: Arc<Mutex<Vec<TaskStatus>>> = Arc::default();
        let r2 = resent.clone();
        let forward2: Forward = Arc::new(move |_fid, st| {
            r2.lock().unwrap().push(st);
            Box::pin(async { Ok(()) })
        });
        let sum2 = StatusUpdateManager::new(forward2, Duration::from_secs(10));
        sum2.recover(fid, "t", vec![finished.clone()], vec![running.uuid.clone().unwrap()], Some(path.clone()));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(resent.lock().unwrap().iter().map(|s| s.uuid.clone()).collect::<Vec<_>>(), vec![finished.uuid.clone()]);
        assert!(sum2.acknowledge("f", "t", finished.uuid.as_ref().unwrap()));
        // Recovery does not write the update again; the ack is appended.
        let after = std::fs::read(&path).unwrap();
        assert!(after.len() > data.len() && after.starts_with(&data));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
