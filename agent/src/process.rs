//! Executor processes: a child this agent spawned, or one adopted from an
//! earlier run of the agent after a restart (no longer our child).

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

/// How often an adopted process is polled when pidfds are unavailable.
const POLL: Duration = Duration::from_millis(100);

/// An executor process the agent supervises.
pub enum ExecutorProcess {
    /// Spawned by this agent: its exit status is known.
    Child(tokio::process::Child),
    /// Started by an earlier run of the agent (session leader `pid`).
    Adopted(i32),
}

impl ExecutorProcess {
    /// Its pid.
    pub fn pid(&self) -> Option<i32> {
        match self {
            ExecutorProcess::Child(c) => c.id().map(|p| p as i32),
            ExecutorProcess::Adopted(pid) => Some(*pid),
        }
    }

    /// Waits for the process to end; its wait status when it was our child.
    pub async fn wait(&mut self) -> Option<String> {
        match self {
            ExecutorProcess::Child(c) => c.wait().await.ok().map(|s| s.to_string()),
            ExecutorProcess::Adopted(pid) => {
                wait_for_exit(*pid).await;
                None
            }
        }
    }
}

/// Waits until `pid` (not our child) is gone: through a pidfd, which becomes
/// readable when the process exits, or by polling where the kernel has none.
pub async fn wait_for_exit(pid: i32) {
    // SAFETY: pidfd_open takes two integers and has no memory effects; it
    // returns a new file descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd >= 0 {
        // SAFETY: `fd` is a pidfd that was just opened and is owned by no one else.
        let owned = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: `owned` is a valid open pidfd, owned by the AsyncFd from here
        // on and closed only when it is dropped.
        let registered = unsafe { tokio::io::unix::AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) };
        if let Ok(afd) = registered {
            let _ = afd.readable().await;
            return;
        }
    } else if std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        return;
    }
    while alive(pid) {
        tokio::time::sleep(POLL).await;
    }
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat.rsplit_once(')').map(|(_, rest)| !rest.trim_start().starts_with('Z')).unwrap_or(false),
        Err(_) => false,
    }
}

/// Whether `pid` leads its own session, as the agent starts executors
/// (their helpers inherit the environment but not the session leadership).
fn session_leader(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(3).map(str::to_string)))
        .and_then(|sid| sid.parse::<i32>().ok())
        == Some(pid)
}

/// Whether `pid` lives in the agent's own pid namespace, as executors do
/// (a container's init, a session leader in a namespace of its own, is not
/// an executor whatever its environment says).
fn same_pid_namespace(pid: i32) -> bool {
    match (std::fs::read_link("/proc/self/ns/pid"), std::fs::read_link(format!("/proc/{pid}/ns/pid"))) {
        (Ok(ours), Ok(theirs)) => ours == theirs,
        _ => false,
    }
}

/// The environment of a process, as `KEY=VALUE` strings.
fn environ(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|data| data.split(|b| *b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).to_string()).collect())
        .unwrap_or_default()
}

/// The container id of a live `mezzo-executor` started for a container
/// under `runtime_root`, read from its environment; `None` for any other process.
pub fn executor_container(pid: i32, runtime_root: &Path) -> Option<String> {
    if !alive(pid) || !session_leader(pid) || !same_pid_namespace(pid) {
        return None;
    }
    let env = environ(pid);
    let get = |k: &str| env.iter().find_map(|e| e.strip_prefix(k).and_then(|v| v.strip_prefix('=')).map(str::to_string));
    let runtime = get("MEZZO_RUNTIME_DIR")?;
    if !Path::new(&runtime).starts_with(runtime_root) {
        return None;
    }
    get("MEZZO_CONTAINER_ID")
}

/// Live executors started for containers under `runtime_root`: (pid, container id).
pub fn executors_under(runtime_root: &Path) -> Vec<(i32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|pid| *pid != std::process::id() as i32)
        .filter_map(|pid| executor_container(pid, runtime_root).map(|cid| (pid, cid)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn adopted_process_exit_is_seen() {
        let mut child = std::process::Command::new("sleep").arg("0.2").spawn().unwrap();
        let pid = child.id() as i32;
        assert!(alive(pid));
        // Reap it from another thread, as init would reap an orphan.
        let reaper = std::thread::spawn(move || child.wait());
        tokio::time::timeout(Duration::from_secs(5), wait_for_exit(pid)).await.expect("exit seen in time");
        reaper.join().unwrap().unwrap();
        assert!(!alive(pid));
        // A pid that does not exist is gone at once.
        tokio::time::timeout(Duration::from_secs(1), wait_for_exit(i32::MAX - 1)).await.unwrap();
    }

    #[test]
    fn session_leaders_are_told_apart() {
        use std::os::unix::process::CommandExt;
        let mut command = std::process::Command::new("sleep");
        command.arg("5");
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(std::io::Error::from));
        }
        let mut leader = command.spawn().unwrap();
        let mut follower = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        assert!(session_leader(leader.id() as i32));
        assert!(!session_leader(follower.id() as i32));
        leader.kill().unwrap();
        follower.kill().unwrap();
        leader.wait().unwrap();
        follower.wait().unwrap();
    }

    #[test]
    fn other_processes_are_not_executors() {
        assert_eq!(executor_container(std::process::id() as i32, Path::new("/nonexistent")), None);
        assert_eq!(executor_container(1, Path::new("/")), None);
    }
}
