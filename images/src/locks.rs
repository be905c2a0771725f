//! Per-key async mutexes, so that concurrent requests for one image or layer do the work once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

type Map = Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>;

/// A set of named async mutexes; an entry lives only while someone holds or awaits it.
#[derive(Default, Clone)]
pub(crate) struct KeyedLocks {
    map: Map,
}

/// Holds one key's mutex; dropping it releases the key.
pub(crate) struct KeyGuard {
    guard: Option<OwnedMutexGuard<()>>,
    key: String,
    map: Map,
}

impl KeyedLocks {
    /// Waits for and takes the mutex of `key`.
    pub(crate) async fn lock(&self, key: &str) -> KeyGuard {
        let mutex = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key.to_string()).or_default().clone()
        };
        let guard = mutex.lock_owned().await;
        KeyGuard {
            guard: Some(guard),
            key: key.to_string(),
            map: self.map.clone(),
        }
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        // Release first, then forget the entry if nobody else holds a handle to it.
        drop(self.guard.take());
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.key);
        }
    }
}
