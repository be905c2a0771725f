//! The executor's side of a docker container: create and start it from the
//! request `prepare` rendered, stream its output into the sandbox files while
//! it runs, stop or signal it, wait for its exit code and report an OOM kill.

use crate::{CommandOutcome, ContainerCommand, ContainerSpec, ContainerizerError, ExitStatus, Launcher, Limitation, LimitationReason, RuntimeDir};
use async_trait::async_trait;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, KillContainerOptionsBuilder, LogsOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

use super::engine::{Engine, EngineError};
use super::{container_name, LaunchSettings};

/// How long `wait` lets the log copy catch up after the container ended.
const LOG_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts, stops and waits for one docker container prepared by
/// `DockerBackend::prepare`.
///
/// The exit status: the engine reports only an exit code, and a process
/// killed by signal N shows as code 128+N. `wait` returns
/// `ExitStatus::from_signal(N)` for such a code when this launcher sent
/// signal N (a stop sends SIGTERM and SIGKILL) or the engine reports the
/// container was OOM-killed (N = 9); every other code is
/// `ExitStatus::from_code(code)`, as `docker run` reports it.
pub struct DockerLauncher {
    spec: ContainerSpec,
    name: String,
    request: ContainerCreateBody,
    engine: Arc<Engine>,
    stop_timeout: Duration,
    logs: Option<JoinHandle<Result<(), ContainerizerError>>>,
    started: bool,
    /// Bit N-1 set when signal N was sent.
    signals_sent: Arc<AtomicU64>,
    limitation: Mutex<Option<Limitation>>,
}

impl DockerLauncher {
    /// A launcher for the container prepared in `runtime_dir`.
    pub fn new(spec: ContainerSpec, runtime_dir: &RuntimeDir) -> Result<Self, ContainerizerError> {
        let request: ContainerCreateBody = runtime_dir.docker_request()?.ok_or_else(|| {
            ContainerizerError::InvalidSpec(format!("container {} has no docker create request", spec.container_id))
        })?;
        let settings: LaunchSettings = runtime_dir.docker_settings()?.unwrap_or_default();
        let name = container_name(&spec.container_id);
        Ok(DockerLauncher {
            spec,
            name,
            request,
            engine: Arc::new(Engine::new(settings.engine)),
            stop_timeout: Duration::from_millis(settings.stop_timeout_ms),
            logs: None,
            started: false,
            signals_sent: Arc::new(AtomicU64::new(0)),
            limitation: Mutex::new(None),
        })
    }

    /// Name of the engine's container (`mesos-<container id>`).
    pub fn container_name(&self) -> &str {
        &self.name
    }

    fn engine_error(&self, what: &str, e: EngineError) -> ContainerizerError {
        e.into_error(&format!("{what} container {}", self.name))
    }

    async fn inspect(&self) -> Result<bollard::models::ContainerInspectResponse, EngineError> {
        self.engine.call("inspect container", |d| d.inspect_container(&self.name, None::<InspectContainerOptions>)).await
    }

    /// One wait for the container to stop, then its inspect.
    async fn wait_once(&self) -> Result<bollard::models::ContainerInspectResponse, Waited> {
        // Waiting lasts as long as the task: only reaching the engine is bounded.
        let docker = self.engine.client().await.map_err(|e| Waited::EngineGone(e.to_string()))?.clone();
        let options = WaitContainerOptionsBuilder::new().condition("not-running").build();
        let mut waiting = docker.wait_container(&self.name, Some(options));
        match waiting.next().await {
            // bollard turns a non-zero exit code into this error; the code is
            // read from inspect below either way.
            Some(Ok(_)) | Some(Err(bollard::errors::Error::DockerContainerWaitError { .. })) => {}
            Some(Err(e)) if super::image::is_not_found(&e) => {
                return Err(Waited::Failed(ContainerizerError::UnknownContainer(self.name.clone())))
            }
            Some(Err(e)) if super::engine::is_connection_error(&e) => return Err(Waited::EngineGone(e.to_string())),
            Some(Err(e)) => return Err(Waited::Failed(self.engine_error("wait for", EngineError::Api(e)))),
            None => return Err(Waited::EngineGone("the engine ended the wait without an answer".into())),
        }
        match self.inspect().await {
            Ok(inspect) => Ok(inspect),
            Err(EngineError::Unavailable(e)) => Err(Waited::EngineGone(e.to_string())),
            Err(e) => Err(Waited::Failed(self.engine_error("inspect", e))),
        }
    }
}

/// How one wait for a container failed.
enum Waited {
    /// The engine could not be reached, or went away during the wait.
    EngineGone(String),
    /// The engine answered with an error.
    Failed(ContainerizerError),
}

/// Backoff between attempts to reach an engine that went away.
const ENGINE_RETRY_MIN: Duration = Duration::from_millis(100);
const ENGINE_RETRY_MAX: Duration = Duration::from_secs(2);

#[async_trait]
impl Launcher for DockerLauncher {
    async fn start(&mut self) -> Result<(), ContainerizerError> {
        if self.started {
            return Err(ContainerizerError::Launcher(format!("container {} was already started", self.name)));
        }
        // The output files are opened before the task runs, beneath the
        // sandbox and never through a symlink: a task that later replaces
        // them with symlinks only unlinks what the agent keeps writing.
        let (stdout, stderr) = match &self.spec.log_rotation {
            None => (Output::Plain(open_output(&self.spec.stdout)?, self.spec.stdout.clone()), Output::Plain(open_output(&self.spec.stderr)?, self.spec.stderr.clone())),
            Some(rotation) => {
                let (out, err) = rotation.writers(&self.spec.stdout, &self.spec.stderr).map_err(|e| ContainerizerError::io("open container output file", &self.spec.stdout)(e.into()))?;
                (Output::Rotating(out), Output::Rotating(err))
            }
        };
        let options = CreateContainerOptionsBuilder::new().name(&self.name).build();
        let request = self.request.clone();
        let created = self
            .engine
            .call("create container", |d| d.create_container(Some(options), request))
            .await
            .map_err(|e| self.engine_error("create", e))?;
        self.started = true;
        for warning in created.warnings.iter().filter(|w| !w.is_empty()) {
            tracing::warn!(container = %self.name, "docker: {warning}");
        }
        self.engine
            .call("start container", |d| d.start_container(&self.name, None::<bollard::query_parameters::StartContainerOptions>))
            .await
            .map_err(|e| self.engine_error("start", e))?;
        tracing::info!(container = %self.name, id = %created.id, "started docker container");
        // The engine keeps the whole log, so following it from the start
        // misses nothing; the stream ends when the container stops. Output
        // reaches the sandbox files as the task writes it.
        let docker = self.engine.client().await?.clone();
        self.logs = Some(tokio::spawn(copy_logs(docker, self.name.clone(), stdout, stderr)));
        Ok(())
    }

    async fn signal(&self, signal: i32) -> Result<(), ContainerizerError> {
        if !(1..=64).contains(&signal) {
            return Err(ContainerizerError::Launcher(format!("invalid signal {signal}")));
        }
        self.signals_sent.fetch_or(signal_bit(signal as u32), Ordering::SeqCst);
        let options = KillContainerOptionsBuilder::new().signal(&signal.to_string()).build();
        match self.engine.call("signal container", |d| d.kill_container(&self.name, Some(options))).await {
            Ok(()) => Ok(()),
            // 409: not running any more; the signal is moot.
            Err(e) if e.status() == Some(409) => {
                tracing::debug!(container = %self.name, message = %e.message(), "signal to a stopped container");
                Ok(())
            }
            Err(e) if e.is_not_found() => Err(ContainerizerError::UnknownContainer(self.name.clone())),
            Err(e) => Err(self.engine_error("signal", e)),
        }
    }

    /// Waits for the container's end. An engine that goes away (killed,
    /// restarting) is not the container's end: the wait is attached again,
    /// with a bounded backoff, once the engine answers, and the real exit is
    /// read then. An engine away for longer than the engine timeout
    /// (`--docker_engine_timeout`) fails the wait with
    /// `ContainerizerError::EngineGone`.
    async fn wait(&mut self) -> Result<ExitStatus, ContainerizerError> {
        let bound = self.engine.timeout();
        let mut lost_since: Option<Instant> = None;
        let mut backoff = ENGINE_RETRY_MIN;
        let inspect = loop {
            match self.wait_once().await {
                Ok(inspect) => break inspect,
                Err(Waited::Failed(e)) => return Err(e),
                Err(Waited::EngineGone(reason)) => {
                    let since = *lost_since.get_or_insert_with(|| {
                        tracing::warn!(container = %self.name, error = %reason, "lost the docker engine while waiting for the container; waiting for the engine to come back");
                        Instant::now()
                    });
                    let away = since.elapsed();
                    if away >= bound {
                        return Err(ContainerizerError::EngineGone(format!(
                            "the Docker engine at {} was unreachable for more than {} while waiting for container {} ({reason}); \
                             the container is stopped and removed once the engine is back",
                            self.engine.settings().address(),
                            super::engine::human(bound),
                            self.name
                        )));
                    }
                    tokio::time::sleep(backoff.min(bound - away)).await;
                    backoff = (backoff * 2).min(ENGINE_RETRY_MAX);
                }
            }
        };
        if let Some(since) = lost_since {
            tracing::info!(container = %self.name, away = ?since.elapsed(), "the docker engine is back");
        }
        let state = inspect.state.unwrap_or_default();
        let code = state
            .exit_code
            .ok_or_else(|| ContainerizerError::Docker(format!("container {} ended without an exit code", self.name)))?;
        let oom_killed = state.oom_killed.unwrap_or(false);
        if oom_killed {
            let limit = inspect.host_config.and_then(|h| h.memory).filter(|m| *m > 0);
            let message = match limit {
                Some(bytes) => format!("Memory limit exceeded: the container was killed by the OOM killer at its limit of {} MB", bytes >> 20),
                None => "Memory limit exceeded: the container was killed by the OOM killer".to_string(),
            };
            *self.limitation.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(Limitation { reason: LimitationReason::Memory, resources: vec!["mem".into()], message });
        }
        if let Some(mut logs) = self.logs.take() {
            match tokio::time::timeout(LOG_FLUSH_TIMEOUT, &mut logs).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::warn!(container = %self.name, error = %e, "copying container output"),
                Ok(Err(e)) => tracing::warn!(container = %self.name, error = %e, "log copy task failed"),
                Err(_) => {
                    logs.abort();
                    tracing::warn!(container = %self.name, "container output still streaming after it ended; stopped copying");
                }
            }
        }
        let status = exit_status(code, oom_killed, self.signals_sent.load(Ordering::SeqCst));
        tracing::info!(container = %self.name, code, oom_killed, %status, "docker container ended");
        Ok(status)
    }

    async fn ip_addresses(&self) -> Vec<IpAddr> {
        match self.inspect().await {
            Ok(inspect) => container_ips(&inspect),
            Err(e) => {
                tracing::warn!(container = %self.name, error = %e.message(), "cannot read the container's addresses");
                Vec::new()
            }
        }
    }

    fn limitation(&self) -> Option<Limitation> {
        self.limitation.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `docker stop` with the longer of `grace` and `--docker_stop_timeout`:
    /// the image's stop signal (SIGTERM by default), SIGKILL once the grace
    /// is over. Returns once the stop is under way; `wait` reports the end.
    async fn stop(&self, grace: Duration) -> Result<(), ContainerizerError> {
        let grace = grace.max(self.stop_timeout);
        // Make sure the engine is there before promising a stop.
        self.engine.client().await?;
        self.signals_sent
            .fetch_or(signal_bit(libc::SIGTERM as u32) | signal_bit(libc::SIGKILL as u32), Ordering::SeqCst);
        let engine = self.engine.clone();
        let id = self.spec.container_id.clone();
        tracing::info!(container = %self.name, ?grace, "stopping docker container");
        tokio::spawn(async move {
            if let Err(e) = super::stop_container(&engine, &id, grace).await {
                tracing::warn!(container = %container_name(&id), error = %e, "stopping docker container");
            }
        });
        Ok(())
    }

    fn min_stop_grace(&self) -> Duration {
        self.stop_timeout
    }

    /// The network namespace of the container's first process, unless the
    /// container is on the host's network.
    async fn network_namespace(&self) -> Option<std::fs::File> {
        let inspect = self.inspect().await.ok()?;
        if inspect.host_config.as_ref().and_then(|h| h.network_mode.as_deref()) == Some("host") {
            return None;
        }
        let pid = inspect.state.as_ref().and_then(|s| s.pid).filter(|p| *p > 0)?;
        crate::launcher::foreign_network_namespace(i32::try_from(pid).ok()?)
    }

    /// `docker exec` (create, start detached, then inspect until it ends):
    /// the engine runs it in the container as the container's user. The
    /// engine has no call to kill an exec: at the timeout its process (the
    /// engine reports its host pid) is killed.
    async fn run_in_container(&self, command: &ContainerCommand, timeout: Duration) -> Result<CommandOutcome, ContainerizerError> {
        let config = bollard::models::ExecConfig {
            cmd: Some(command.argv.clone()),
            env: (!command.env.is_empty()).then(|| command.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            attach_stdin: Some(false),
            attach_stdout: Some(false),
            attach_stderr: Some(false),
            ..Default::default()
        };
        let created = self
            .engine
            .call("create exec in", |d| d.create_exec(&self.name, config))
            .await
            .map_err(|e| self.engine_error("exec in", e))?;
        let options = bollard::exec::StartExecOptions { detach: true, tty: false, output_capacity: None };
        self.engine
            .call("start exec in", |d| d.start_exec(&created.id, Some(options)))
            .await
            .map_err(|e| self.engine_error("start exec in", e))?;
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(2);
        loop {
            let inspect = self
                .engine
                .call("inspect exec in", |d| d.inspect_exec(&created.id))
                .await
                .map_err(|e| self.engine_error("inspect exec in", e))?;
            if inspect.running == Some(false) {
                if let Some(code) = inspect.exit_code {
                    return Ok(CommandOutcome::Exited(ExitStatus::from_code(code.clamp(0, 255) as i32)));
                }
            }
            if Instant::now() >= deadline {
                if let Some(pid) = inspect.pid.filter(|p| *p > 0).and_then(|p| i32::try_from(p).ok()) {
                    // SAFETY: kill takes plain integers; the pid is the exec's
                    // process as the engine reported it a moment ago.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                return Ok(CommandOutcome::TimedOut);
            }
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}

/// Every address the container has on its networks.
fn container_ips(inspect: &bollard::models::ContainerInspectResponse) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    let networks = inspect.network_settings.as_ref().and_then(|n| n.networks.as_ref());
    let mut names: Vec<&String> = networks.map(|n| n.keys().collect()).unwrap_or_default();
    // A stable order: the engine's map has none.
    names.sort();
    for name in names {
        let endpoint = &networks.expect("names came from it")[name];
        for addr in [&endpoint.ip_address, &endpoint.global_ipv6_address].into_iter().flatten() {
            if let Ok(ip) = addr.parse::<IpAddr>() {
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
    }
    out
}

/// Maps the engine's exit code to a wait status (see `DockerLauncher`).
fn exit_status(code: i64, oom_killed: bool, signals_sent: u64) -> ExitStatus {
    if (129..=128 + 64).contains(&code) {
        let signal = (code - 128) as u32;
        if signals_sent & signal_bit(signal) != 0 || (oom_killed && signal == libc::SIGKILL as u32) {
            return ExitStatus::from_signal(signal as i32);
        }
    }
    ExitStatus::from_code(code as i32)
}

/// The bit recording that `signal` (1..=64) was sent.
fn signal_bit(signal: u32) -> u64 {
    1u64 << (signal - 1)
}

/// Where the container's output goes: a sandbox file (the `sandbox` logger), or a rotating one (`logrotate`).
enum Output {
    Plain(tokio::fs::File, PathBuf),
    Rotating(crate::log_rotate::RotatingWriter),
}

impl Output {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), ContainerizerError> {
        match self {
            Output::Plain(file, path) => file.write_all(bytes).await.map_err(ContainerizerError::io("write container output", &*path)),
            // Appends to a local file (and, rarely, a few renames): short, done in place.
            Output::Rotating(w) => {
                let path = w.path().to_path_buf();
                w.write(bytes).map_err(ContainerizerError::io("write container output", path))
            }
        }
    }

    async fn flush(&mut self) -> Result<(), ContainerizerError> {
        match self {
            Output::Plain(file, path) => file.flush().await.map_err(ContainerizerError::io("flush container output", &*path)),
            Output::Rotating(_) => Ok(()),
        }
    }
}

/// Follows the container's log into the stdout and stderr outputs until the container stops.
///
/// The follower runs in the executor (mezzo-executor), which outlives an agent restart: it keeps following,
/// and rotating, while the agent is away and after it is back; nothing is read twice or skipped.
async fn copy_logs(docker: Docker, name: String, mut out: Output, mut err: Output) -> Result<(), ContainerizerError> {
    let options = LogsOptionsBuilder::new().follow(true).stdout(true).stderr(true).build();
    let mut stream = docker.logs(&name, Some(options));
    while let Some(item) = stream.next().await {
        let (output, bytes) = match item {
            Ok(bollard::container::LogOutput::StdErr { message }) => (&mut err, message),
            Ok(bollard::container::LogOutput::StdOut { message })
            | Ok(bollard::container::LogOutput::Console { message }) => (&mut out, message),
            Ok(bollard::container::LogOutput::StdIn { .. }) => continue,
            Err(e) => return Err(ContainerizerError::Docker(format!("logs of container {name}: {e}"))),
        };
        output.write(&bytes).await?;
    }
    out.flush().await?;
    err.flush().await?;
    Ok(())
}

/// Opens a sandbox output file for appending (created when missing) with
/// `sandbox_fs`'s rules: no symlink, a regular file only.
fn open_output(path: &Path) -> Result<tokio::fs::File, ContainerizerError> {
    crate::sandbox_fs::open_output(path, 0o644)
        .map(tokio::fs::File::from_std)
        .map_err(|e| ContainerizerError::io("open container output file", path)(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_map_to_signals_only_when_explained() {
        assert_eq!(exit_status(0, false, 0).code(), Some(0));
        assert_eq!(exit_status(3, false, 0).code(), Some(3));
        // 137 from the task itself stays a code.
        assert_eq!(exit_status(137, false, 0).code(), Some(137));
        assert_eq!(exit_status(137, false, signal_bit(9)).signal(), Some(9));
        assert_eq!(exit_status(137, true, 0).signal(), Some(9));
        assert_eq!(exit_status(143, false, signal_bit(9)).code(), Some(143));
        assert_eq!(exit_status(143, false, signal_bit(15)).signal(), Some(15));
    }
}
