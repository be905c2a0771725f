//! The store lock (`store.lock`, flock(2)): held shared by `get` and lease taking, and
//! exclusively by `gc` and `remove` while they decide and unlink, so collection never
//! removes what an image being provisioned needs, even across processes (the CLI beside
//! an agent).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::{ImageError, IoContext};
use crate::store::blocking;

const LOCK_FILE: &str = "store.lock";

/// The store lock, held while the guard lives (flock on `<store>/store.lock`).
pub(crate) struct StoreLock {
    _lock: Flock<File>,
}

impl StoreLock {
    /// Takes the lock shared, waiting off the async runtime when a collection holds it.
    pub(crate) async fn shared(root: &Path) -> Result<Self, ImageError> {
        let file = open_lock_file(root)?;
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(lock) => Ok(Self { _lock: lock }),
            Err((file, Errno::EWOULDBLOCK)) => {
                let root = root.to_path_buf();
                blocking(move || flock_retrying(file, FlockArg::LockShared, &root)).await
            }
            Err((_, e)) => Err(lock_error(root, e)),
        }
    }

    /// Takes the lock shared, blocking the thread.
    pub(crate) fn shared_blocking(root: &Path) -> Result<Self, ImageError> {
        flock_retrying(open_lock_file(root)?, FlockArg::LockShared, root)
    }

    /// Takes the lock exclusively, blocking the thread.
    pub(crate) fn exclusive(root: &Path) -> Result<Self, ImageError> {
        flock_retrying(open_lock_file(root)?, FlockArg::LockExclusive, root)
    }
}

fn open_lock_file(root: &Path) -> Result<File, ImageError> {
    let path = root.join(LOCK_FILE);
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)
        .ctx(|| format!("open {}", path.display()))
}

fn flock_retrying(mut file: File, arg: FlockArg, root: &Path) -> Result<StoreLock, ImageError> {
    loop {
        match Flock::lock(file, arg) {
            Ok(lock) => return Ok(StoreLock { _lock: lock }),
            Err((f, Errno::EINTR)) => file = f,
            Err((_, e)) => return Err(lock_error(root, e)),
        }
    }
}

fn lock_error(root: &Path, e: Errno) -> ImageError {
    ImageError::Io {
        context: format!("lock {}", root.join(LOCK_FILE).display()),
        source: io::Error::from(e),
    }
}
