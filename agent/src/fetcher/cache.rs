//! The fetcher's agent-wide cache (`--fetcher_cache_dir`,
//! `--fetcher_cache_size`), as Mesos's: an entry per (user, URI), least
//! recently used entries evicted when the cache is over its size, entries in
//! use never evicted, and concurrent requests for one entry downloaded once
//! (the later ones wait for the first). The cache starts empty, as Mesos's.

use sha2::Digest;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug)]
struct Slot {
    /// Held while the entry is being downloaded: waiters queue on it.
    lock: Arc<tokio::sync::Mutex<()>>,
    /// Size once downloaded.
    size: Option<u64>,
    last_used: u64,
    users: usize,
}

#[derive(Debug, Default)]
struct State {
    slots: HashMap<String, Slot>,
    tick: u64,
}

/// The cache.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
    capacity: u64,
    state: Arc<Mutex<State>>,
}

/// An entry in use: not evicted until dropped.
#[derive(Debug)]
pub struct Entry {
    key: String,
    pub path: PathBuf,
    /// The entry was already there (no download).
    pub hit: bool,
    state: Arc<Mutex<State>>,
    dir: PathBuf,
    capacity: u64,
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut st = self.state.lock().unwrap();
        if let Some(slot) = st.slots.get_mut(&self.key) {
            slot.users -= 1;
        }
        evict(&mut st, &self.dir, self.capacity);
    }
}

/// Removes least recently used entries nobody uses until the cache fits.
fn evict(st: &mut State, dir: &Path, capacity: u64) {
    loop {
        let total: u64 = st.slots.values().filter_map(|s| s.size).sum();
        if total <= capacity {
            return;
        }
        let victim = st.slots.iter().filter(|(_, s)| s.size.is_some() && s.users == 0).min_by_key(|(_, s)| s.last_used).map(|(k, _)| k.clone());
        let Some(key) = victim else { return };
        tracing::info!(entry = %key, "evicting fetcher cache entry");
        let _ = std::fs::remove_file(dir.join(&key));
        st.slots.remove(&key);
    }
}

impl Cache {
    /// Opens the cache in `dir` (created when missing), removing what an
    /// earlier agent left there.
    pub fn new(dir: &Path, capacity: u64) -> std::io::Result<Cache> {
        std::fs::create_dir_all(dir)?;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = name.trim_end_matches(".tmp");
            if ours.len() == 64 && ours.bytes().all(|b| b.is_ascii_hexdigit()) && entry.file_type()?.is_file() {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(Cache { dir: dir.to_path_buf(), capacity, state: Arc::default() })
    }

    /// The cache's size limit in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The entry's key: the user's and the URI's digest (Mesos keys the
    /// cache by user and URI).
    pub fn key(uid: u32, uri: &str) -> String {
        let mut h = sha2::Sha256::new();
        h.update(uid.to_string().as_bytes());
        h.update([0u8]);
        h.update(uri.as_bytes());
        format!("{:x}", h.finalize())
    }

    /// Bytes held by downloaded entries.
    pub fn size(&self) -> u64 {
        self.state.lock().unwrap().slots.values().filter_map(|s| s.size).sum()
    }

    /// The entry `key`, downloaded by `download(temporary path)` unless it is
    /// there already (or being downloaded by another request, which this one
    /// waits for). `download` returns the entry's size.
    pub async fn get<F, Fut>(&self, key: &str, download: F) -> Result<Entry, String>
    where
        F: FnOnce(PathBuf) -> Fut,
        Fut: std::future::Future<Output = Result<u64, String>>,
    {
        let lock = {
            let mut st = self.state.lock().unwrap();
            st.tick += 1;
            let tick = st.tick;
            let slot = st.slots.entry(key.to_string()).or_insert_with(|| Slot { lock: Arc::default(), size: None, last_used: tick, users: 0 });
            slot.users += 1;
            slot.last_used = tick;
            slot.lock.clone()
        };
        // Made now, so that the slot is released (users - 1) however this
        // ends, a cancelled download included.
        let mut held = Entry {
            key: key.to_string(),
            path: self.dir.join(key),
            hit: false,
            state: self.state.clone(),
            dir: self.dir.clone(),
            capacity: self.capacity,
        };
        let _downloading = lock.lock().await;
        let ready = self.state.lock().unwrap().slots.get(key).is_some_and(|s| s.size.is_some());
        if ready {
            held.hit = true;
            return Ok(held);
        }
        let tmp = self.dir.join(format!("{key}.tmp"));
        let result = download(tmp.clone()).await.and_then(|size| {
            std::fs::rename(&tmp, self.dir.join(key)).map_err(|e| format!("cannot store the download in the cache: {e}"))?;
            Ok(size)
        });
        match result {
            Ok(size) => {
                let mut st = self.state.lock().unwrap();
                if let Some(slot) = st.slots.get_mut(key) {
                    slot.size = Some(size);
                }
                evict(&mut st, &self.dir, self.capacity);
                Ok(held)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                drop(held);
                let mut st = self.state.lock().unwrap();
                if st.slots.get(key).is_some_and(|s| s.users == 0 && s.size.is_none()) {
                    st.slots.remove(key);
                }
                Err(e)
            }
        }
    }

    /// Whether `key` is in the cache (downloaded).
    pub fn contains(&self, key: &str) -> bool {
        self.state.lock().unwrap().slots.get(key).is_some_and(|s| s.size.is_some())
    }
}
