//! Skips that `make test` counts as skips.
//!
//! libtest has no run-time skip: a test that returns early is reported as
//! passed. A test that cannot run where it is calls [`skip`] (or one of the
//! `require_*` macros) before returning; that records a marker file in
//! `$MEZZO_SKIP_DIR` (set by `scripts/test.sh`), and the summary line moves the
//! test from "passed" to "skipped" and names it with its reason.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Records that the calling test is skipped, with the reason.
pub fn skip(reason: &str) {
    let test = std::thread::current().name().unwrap_or("main").to_string();
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    // Test binaries are named `<target>-<hash>`: keep the target's name.
    let binary = exe.rsplit_once('-').map(|(name, _)| name.to_string()).unwrap_or(exe);
    eprintln!("SKIPPED {binary}::{test}: {reason}");
    let Some(dir) = std::env::var_os("MEZZO_SKIP_DIR").map(PathBuf::from) else { return };
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let file = dir.join(format!("{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
    let line = format!("{binary}::{test}\t{reason}\n");
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|_| std::fs::File::create(&file)?.write_all(line.as_bytes())) {
        eprintln!("could not record the skip in {}: {e}", dir.display());
    }
}

/// True when running as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { geteuid() == 0 }
}

extern "C" {
    fn geteuid() -> u32;
}

/// True when a Docker engine answers on its default socket (or `$DOCKER_HOST`'s unix path).
pub fn docker_available() -> bool {
    let sock = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_string))
        .unwrap_or_else(|| "/var/run/docker.sock".to_string());
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(Path::new(&sock)) else { return false };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let _ = s.set_write_timeout(Some(std::time::Duration::from_secs(5)));
    if s.write_all(b"GET /_ping HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    use std::io::Read;
    matches!(s.read(&mut buf), Ok(n) if n >= 12 && &buf[9..12] == b"200")
}

/// Returns from the calling test, recorded as skipped, unless running as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            $crate::skip("needs root");
            return;
        }
    };
}

/// Returns from the calling test, recorded as skipped, unless root and a Docker engine answers.
#[macro_export]
macro_rules! require_docker {
    () => {
        $crate::require_root!();
        if !$crate::docker_available() {
            $crate::skip("needs a running Docker engine");
            return;
        }
    };
}

pub mod zookeeper;

/// Returns from the calling test, recorded as skipped, unless Debian's `zookeeper` package and java are installed.
#[macro_export]
macro_rules! require_zookeeper {
    () => {
        if let Err(reason) = $crate::zookeeper::available() {
            $crate::skip(&reason);
            return;
        }
    };
}
