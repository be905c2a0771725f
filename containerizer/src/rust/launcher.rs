//! The executor's side of the rust backend: starts the `mezzo-launcher`
//! supervisor (fork+exec, so libcontainer never runs in this process),
//! signals the container through it, and reads the exit status it records.

use super::LAUNCHER_BIN;
use crate::Limitation;
use crate::{CommandOutcome, ContainerCommand, ContainerSpec, ContainerizerError, ExitStatus, Launcher, RuntimeDir};
use async_trait::async_trait;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Longest a container may take from spawn of the supervisor to running.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a `mezzo-launcher kill` may take.
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest to wait for a supervisor that already failed to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

fn launcher_err(msg: impl Into<String>) -> ContainerizerError {
    ContainerizerError::Launcher(msg.into())
}

/// The last few lines of the supervisor's log, for error messages.
fn log_tail(runtime_dir: &RuntimeDir) -> String {
    runtime_dir.launcher_log_tail(5)
}

/// Pid of the supervisor of the container in `runtime_dir`, while it runs.
/// The pid is checked against its command line so that a reused pid is not
/// mistaken for it.
pub fn live_supervisor(runtime_dir: &RuntimeDir) -> Option<i32> {
    let pid = runtime_dir.launcher_pid().ok()??;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the parenthesised command name, which may hold spaces.
    let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let dir_arg = args.windows(2).find(|w| w[0] == b"--runtime-dir").map(|w| w[1])?;
    let dir_arg = Path::new(std::ffi::OsStr::from_bytes(dir_arg));
    // The executor and the agent may spell the same directory differently.
    let same = dir_arg == runtime_dir.path()
        || matches!((dir_arg.canonicalize(), runtime_dir.path().canonicalize()), (Ok(a), Ok(b)) if a == b);
    same.then_some(pid)
}

/// The exit status the supervisor recorded, if readable.
fn read_exit_status(runtime_dir: &RuntimeDir) -> Option<ExitStatus> {
    runtime_dir.exit_status().ok().flatten()
}

/// Starts, signals and waits for one rust-backend container.
pub struct RustLauncher {
    spec: ContainerSpec,
    runtime_dir: RuntimeDir,
    helper: PathBuf,
    child: Option<tokio::process::Child>,
    /// The supervisor's stdout, which says `exited <status>` at the end.
    reports: Option<tokio::io::Lines<BufReader<tokio::process::ChildStdout>>>,
}

impl RustLauncher {
    /// A launcher for the container prepared in `runtime_dir`, using the
    /// `mezzo-launcher` binary found in `launcher_dir`.
    pub fn new(spec: ContainerSpec, runtime_dir: RuntimeDir, launcher_dir: &Path) -> Result<Self, ContainerizerError> {
        let helper = launcher_dir.join(LAUNCHER_BIN);
        if !helper.is_file() {
            return Err(launcher_err(format!("{} not found", helper.display())));
        }
        Ok(RustLauncher { spec, runtime_dir, helper, child: None, reports: None })
    }

    /// The container's spec.
    pub fn spec(&self) -> &ContainerSpec {
        &self.spec
    }

    /// Waits (bounded) for a supervisor that reported a failure, for its status.
    async fn reap_failed(&self, mut child: tokio::process::Child) -> String {
        match tokio::time::timeout(EXIT_TIMEOUT, child.wait()).await {
            Ok(Ok(st)) => st.to_string(),
            Ok(Err(e)) => format!("wait failed: {e}"),
            Err(_) => {
                let _ = child.start_kill();
                let _ = tokio::time::timeout(EXIT_TIMEOUT, child.wait()).await;
                "killed after it hung".to_string()
            }
        }
    }
}

#[async_trait]
impl Launcher for RustLauncher {
    async fn start(&mut self) -> Result<(), ContainerizerError> {
        if self.child.is_some() || read_exit_status(&self.runtime_dir).is_some() {
            return Err(launcher_err(format!("container {} was already started", self.spec.container_id)));
        }
        let log_path = self.runtime_dir.launcher_log();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(ContainerizerError::io("open launcher log", &log_path))?;
        let mut child = tokio::process::Command::new(&self.helper)
            .arg("run")
            .arg("--runtime-dir")
            .arg(self.runtime_dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            // The container's init is a copy of the supervisor: nothing of
            // the executor's environment goes with it (its token, nor the
            // variables that mark the executor's process for the agent's
            // recovery). The task's environment comes from the spec.
            .env_clear()
            .envs(std::env::vars_os().filter(|(k, _)| k == "PATH" || k == "RUST_LOG" || k == "MEZZO_LOG"))
            // Its own process group: a terminal's ^C must reach the task
            // through `signal`, not kill the supervisor behind its back.
            .process_group(0)
            .spawn()
            .map_err(ContainerizerError::io("spawn mezzo-launcher", &self.helper))?;
        let stdout = child.stdout.take().ok_or_else(|| launcher_err("supervisor has no stdout pipe"))?;
        let mut lines = BufReader::new(stdout).lines();
        match tokio::time::timeout(START_TIMEOUT, lines.next_line()).await {
            Ok(Ok(Some(line))) if line.starts_with("started ") => {
                tracing::debug!(container = %self.spec.container_id, %line, "container started");
                self.child = Some(child);
                self.reports = Some(lines);
                Ok(())
            }
            Ok(Ok(Some(line))) if line.starts_with("error ") => {
                let status = self.reap_failed(child).await;
                tracing::debug!(container = %self.spec.container_id, %status, "supervisor failed");
                Err(launcher_err(format!("failed to start container {}: {}", self.spec.container_id, &line[6..])))
            }
            Ok(Ok(other)) => {
                let status = self.reap_failed(child).await;
                Err(launcher_err(format!(
                    "supervisor of container {} ended before it started ({status}){}: {}",
                    self.spec.container_id,
                    other.map(|l| format!(", said '{l}'")).unwrap_or_default(),
                    log_tail(&self.runtime_dir)
                )))
            }
            Ok(Err(e)) => {
                let status = self.reap_failed(child).await;
                Err(launcher_err(format!("read from supervisor: {e} ({status})")))
            }
            Err(_) => {
                let _ = child.start_kill();
                let _ = tokio::time::timeout(EXIT_TIMEOUT, child.wait()).await;
                Err(launcher_err(format!(
                    "container {} did not start within {}s: {}",
                    self.spec.container_id,
                    START_TIMEOUT.as_secs(),
                    log_tail(&self.runtime_dir)
                )))
            }
        }
    }

    async fn signal(&self, signal: i32) -> Result<(), ContainerizerError> {
        // A forwarded signal goes straight to the supervisor when it is our
        // child (not reaped, so its pid is its own): it passes the signal to
        // the container's init, which passes it to the task.
        if super::FORWARDED_SIGNALS.contains(&signal) {
            if let Some(pid) = self.child.as_ref().and_then(|c| c.id()) {
                // SAFETY: kill takes plain integers.
                return match unsafe { libc::kill(pid as i32, signal) } {
                    0 => Ok(()),
                    _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) => Ok(()),
                    _ => Err(launcher_err(format!(
                        "signal {signal} to the supervisor of container {}: {}",
                        self.spec.container_id,
                        std::io::Error::last_os_error()
                    ))),
                };
            }
        }
        let run = tokio::process::Command::new(&self.helper)
            .arg("kill")
            .arg("--runtime-dir")
            .arg(self.runtime_dir.path())
            .arg("--signal")
            .arg(signal.to_string())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(SIGNAL_TIMEOUT, run)
            .await
            .map_err(|_| launcher_err(format!("signalling container {} timed out", self.spec.container_id)))?
            .map_err(ContainerizerError::io("run mezzo-launcher kill", &self.helper))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(launcher_err(format!(
                "signal {signal} to container {}: {}",
                self.spec.container_id,
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    fn limitation(&self) -> Option<Limitation> {
        self.runtime_dir.limitation().ok().flatten()
    }

    async fn network_namespace(&self) -> Option<std::fs::File> {
        if !self.spec.namespaces.contains(&crate::Namespace::Network) {
            return None;
        }
        let pid = self.runtime_dir.pid().ok()??;
        crate::launcher::foreign_network_namespace(pid)
    }

    /// `mezzo-launcher exec` (a single-threaded helper: it joins the
    /// container's namespaces, which a multi-threaded process cannot do
    /// for its mount namespace) runs the command and enforces the timeout.
    async fn run_in_container(&self, command: &ContainerCommand, timeout: Duration) -> Result<CommandOutcome, ContainerizerError> {
        if command.argv.is_empty() {
            return Err(launcher_err("empty command"));
        }
        let mut run = tokio::process::Command::new(&self.helper);
        run.arg("exec").arg("--runtime-dir").arg(self.runtime_dir.path());
        run.arg("--timeout-ms").arg(timeout.as_millis().min(u64::MAX as u128).to_string());
        for (k, v) in &command.env {
            run.arg("--env").arg(format!("{k}={v}"));
        }
        run.arg("--").args(&command.argv);
        // The command's output goes to the executor's stderr (the sandbox's),
        // as Mesos's checks write it; only the helper's report is read.
        run.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .env_clear()
            .envs(std::env::vars_os().filter(|(k, _)| k == "PATH" || k == "RUST_LOG" || k == "MEZZO_LOG"))
            .kill_on_drop(true);
        let out = tokio::time::timeout(timeout + EXIT_TIMEOUT, run.output())
            .await
            .map_err(|_| launcher_err(format!("mezzo-launcher exec in container {} did not end", self.spec.container_id)))?
            .map_err(ContainerizerError::io("run mezzo-launcher exec", &self.helper))?;
        let report = String::from_utf8_lossy(&out.stdout);
        let line = report.lines().next().unwrap_or_default();
        if line == "timeout" {
            return Ok(CommandOutcome::TimedOut);
        }
        if let Some(status) = line.strip_prefix("exited ").and_then(|s| s.trim().parse().ok()) {
            return Ok(CommandOutcome::Exited(ExitStatus(status)));
        }
        Err(launcher_err(format!(
            "run a command in container {}: {}",
            self.spec.container_id,
            line.strip_prefix("error ").unwrap_or(if line.is_empty() { "no report from mezzo-launcher exec" } else { line })
        )))
    }

    async fn wait(&mut self) -> Result<ExitStatus, ContainerizerError> {
        // The supervisor's own report, when we are still its parent: it
        // survives a destroy that removed the runtime directory.
        if let Some(mut reports) = self.reports.take() {
            while let Ok(Some(line)) = reports.next_line().await {
                if let Some(status) = line.strip_prefix("exited ").and_then(|s| s.trim().parse().ok()) {
                    if let Some(child) = self.child.as_mut() {
                        let _ = tokio::time::timeout(EXIT_TIMEOUT, child.wait()).await;
                    }
                    return Ok(ExitStatus(status));
                }
            }
        }
        let supervisor = match self.child.as_mut() {
            Some(child) => child.wait().await.map_err(ContainerizerError::io("wait for mezzo-launcher", &self.helper))?.to_string(),
            None => {
                // A launcher made anew (e.g. by a restarted executor): the
                // supervisor is not our child, so watch its pid instead.
                if live_supervisor(&self.runtime_dir).is_none() && read_exit_status(&self.runtime_dir).is_none() {
                    return Err(launcher_err(format!("container {} was not started", self.spec.container_id)));
                }
                // Soon at first (it may be ending already), then less often.
                let mut pause = Duration::from_millis(1);
                while live_supervisor(&self.runtime_dir).is_some() {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                "no longer running".to_string()
            }
        };
        read_exit_status(&self.runtime_dir).ok_or_else(|| {
            launcher_err(format!(
                "supervisor of container {} ended ({supervisor}) without recording an exit status: {}",
                self.spec.container_id,
                log_tail(&self.runtime_dir)
            ))
        })
    }
}
