//! Health checks (`TaskInfo.health_check`, Mesos's `HealthCheck`) and general
//! checks (`TaskInfo.check`, Mesos's `CheckInfo`), as Mesos's command
//! executor runs them (`src/checks/health_checker.cpp`, `checker_process.cpp`).
//!
//! A check runs in a task of its own: it waits `delay_seconds`, then probes
//! the task, reports the outcome to the executor's loop, waits
//! `interval_seconds` after the probe ended, and so on until it is stopped
//! (dropped). A probe that takes longer than `timeout_seconds` (zero: no
//! limit) is a failure. The executor turns outcomes into updates:
//! [`HealthState`] decides the health transitions Mesos reports, and
//! [`check_status`] the `CheckStatusInfo` a general check reports.
//!
//! Probes reach the task where it is:
//! * HTTP and TCP connect to `127.0.0.1` (`::1` for IPv6) on the check's
//!   port from inside the task's network namespace when it has one: the
//!   socket is made by a short-lived thread that entered that namespace
//!   (`setns(CLONE_NEWNET)` changes only the calling thread, and a socket
//!   stays in the namespace it was made in), then connected here. HTTP is
//!   healthy for a status in [200, 400), as Mesos; HTTPS is done by `curl -k`
//!   (as Mesos does every HTTP check), started inside that namespace.
//! * COMMAND runs inside the task's container through its launcher
//!   (`mezzo-launcher exec` for the rust containerizer, an engine exec for
//!   docker): its namespaces, cgroups, root filesystem, user and environment
//!   plus the check's own variables.

use mezzo_containerizer::{CommandOutcome, ContainerCommand, ExitStatus, Launcher};
use mezzo_proto::mesos::v1::{check_info, check_status_info, health_check, network_info, CheckInfo, CheckStatusInfo, CommandInfo, HealthCheck};
use std::fs::File;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Longest a command probe's helper may outlive its timeout before it is
/// abandoned (it kills the command itself at the timeout).
const COMMAND_TIMEOUT_MARGIN: Duration = Duration::from_secs(5);

/// What a check probes.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// `GET <scheme>://<domain>:<port><path>`.
    Http { https: bool, port: u16, path: String, ipv6: bool },
    /// A TCP connection to `<domain>:<port>`.
    Tcp { port: u16, ipv6: bool },
    /// A command run inside the task's container.
    Command(ContainerCommand),
}

impl Probe {
    /// Mesos's name of the check's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Probe::Http { .. } => "HTTP",
            Probe::Tcp { .. } => "TCP",
            Probe::Command(_) => "COMMAND",
        }
    }
}

/// When a check probes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub delay: Duration,
    pub interval: Duration,
    /// `None`: no limit (Mesos's `timeout_seconds` of 0).
    pub timeout: Option<Duration>,
}

/// A health check: its probe, timing and what counts as failing.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckSpec {
    pub probe: Probe,
    pub timing: Timing,
    pub grace_period: Duration,
    pub consecutive_failures: u32,
}

/// How one probe went.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeOutcome {
    /// The HTTP server answered with this status.
    Http(u16),
    /// The TCP connection was made (true) or refused (false).
    Tcp(bool),
    /// The command ended with this status.
    Command(ExitStatus),
    /// The probe could not be done or did not end in time.
    Failed(String),
}

impl ProbeOutcome {
    /// `None` when the outcome is healthy, else why not (Mesos's messages).
    pub fn health_failure(&self, probe: &Probe) -> Option<String> {
        let what = probe.type_name();
        match self {
            ProbeOutcome::Http(code) if (200..400).contains(code) => None,
            ProbeOutcome::Http(code) => Some(format!("{what} health check failed: Unexpected HTTP response code: {code}")),
            ProbeOutcome::Tcp(true) => None,
            ProbeOutcome::Tcp(false) => Some(format!("{what} health check failed: connection refused")),
            ProbeOutcome::Command(status) if status.success() => None,
            ProbeOutcome::Command(status) => Some(format!("{what} health check failed: Command {status}")),
            ProbeOutcome::Failed(why) => Some(format!("{what} health check failed: {why}")),
        }
    }
}

fn seconds(field: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|_| format!("'{field}' must be a non-negative number of seconds, got {value}"))
}

fn port(field: &str, value: u32) -> Result<u16, String> {
    u16::try_from(value).ok().filter(|p| *p > 0).ok_or_else(|| format!("'{field}' must be a port in 1..65535, got {value}"))
}

/// The argv and environment of a check's CommandInfo (`sh -c value` for a
/// shell command, else `value` run with `arguments`).
fn command(field: &str, info: Option<&CommandInfo>) -> Result<ContainerCommand, String> {
    let info = info.ok_or_else(|| format!("'{field}' must be set for a COMMAND check"))?;
    let value = info.value.clone().filter(|v| !v.is_empty()).ok_or_else(|| format!("'{field}.value' must be set"))?;
    let argv = if info.shell.unwrap_or(true) {
        vec!["/bin/sh".to_string(), "-c".to_string(), value]
    } else {
        let mut argv = vec![value];
        argv.extend(info.arguments.iter().skip(1).cloned());
        argv
    };
    let env = info
        .environment
        .iter()
        .flat_map(|e| e.variables.iter())
        .filter_map(|v| v.value.clone().map(|value| (v.name.clone(), value)))
        .collect();
    Ok(ContainerCommand { argv, env })
}

fn timing(delay: f64, interval: f64, timeout: f64) -> Result<Timing, String> {
    let timeout = seconds("timeout_seconds", timeout)?;
    Ok(Timing {
        delay: seconds("delay_seconds", delay)?,
        interval: seconds("interval_seconds", interval)?,
        timeout: (!timeout.is_zero()).then_some(timeout),
    })
}

impl HealthCheckSpec {
    /// The health check a task asks for, with Mesos's defaults; an error
    /// names the field that is wrong.
    pub fn from_proto(check: &HealthCheck) -> Result<HealthCheckSpec, String> {
        let probe = match check.r#type() {
            health_check::Type::Http => {
                let http = check.http.as_ref().ok_or("'http' must be set for an HTTP health check")?;
                let https = match http.scheme.as_deref() {
                    None | Some("http") => false,
                    Some("https") => true,
                    Some(other) => return Err(format!("'http.scheme' must be 'http' or 'https', got '{other}'")),
                };
                let path = http.path.clone().unwrap_or_default();
                if !path.is_empty() && !path.starts_with('/') {
                    return Err(format!("'http.path' must start with '/', got '{path}'"));
                }
                Probe::Http { https, port: port("http.port", http.port)?, path, ipv6: http.protocol() == network_info::Protocol::IPv6 }
            }
            health_check::Type::Tcp => {
                let tcp = check.tcp.as_ref().ok_or("'tcp' must be set for a TCP health check")?;
                Probe::Tcp { port: port("tcp.port", tcp.port)?, ipv6: tcp.protocol() == network_info::Protocol::IPv6 }
            }
            health_check::Type::Command => Probe::Command(command("command", check.command.as_ref())?),
            health_check::Type::Unknown => return Err("'type' must be COMMAND, HTTP or TCP".to_string()),
        };
        Ok(HealthCheckSpec {
            probe,
            timing: timing(check.delay_seconds(), check.interval_seconds(), check.timeout_seconds())?,
            grace_period: seconds("grace_period_seconds", check.grace_period_seconds())?,
            consecutive_failures: check.consecutive_failures(),
        })
    }
}

/// A general check (`CheckInfo`): its probe and timing; an error names the
/// field that is wrong.
pub fn check_from_proto(check: &CheckInfo) -> Result<(Probe, Timing), String> {
    let probe = match check.r#type() {
        check_info::Type::Http => {
            let http = check.http.as_ref().ok_or("'http' must be set for an HTTP check")?;
            let path = http.path.clone().unwrap_or_default();
            if !path.is_empty() && !path.starts_with('/') {
                return Err(format!("'http.path' must start with '/', got '{path}'"));
            }
            Probe::Http { https: false, port: port("http.port", http.port)?, path, ipv6: false }
        }
        check_info::Type::Tcp => Probe::Tcp { port: port("tcp.port", check.tcp.as_ref().ok_or("'tcp' must be set for a TCP check")?.port)?, ipv6: false },
        check_info::Type::Command => Probe::Command(command("command.command", check.command.as_ref().map(|c| &c.command))?),
        check_info::Type::Unknown => return Err("'type' must be COMMAND, HTTP or TCP".to_string()),
    };
    Ok((probe, timing(check.delay_seconds(), check.interval_seconds(), check.timeout_seconds())?))
}

/// The empty `CheckStatusInfo` of a check's type, which every update of a
/// task with a check carries until there is a result (as Mesos).
pub fn empty_check_status(check: &CheckInfo) -> CheckStatusInfo {
    let mut status = CheckStatusInfo { r#type: check.r#type, ..Default::default() };
    match check.r#type() {
        check_info::Type::Command => status.command = Some(Default::default()),
        check_info::Type::Http => status.http = Some(Default::default()),
        check_info::Type::Tcp => status.tcp = Some(Default::default()),
        check_info::Type::Unknown => {}
    }
    status
}

/// The `CheckStatusInfo` of one outcome of `check`: the exit code, the HTTP
/// status or whether the TCP connection was made; a probe that could not be
/// done (or a command killed by a signal) leaves the result empty.
pub fn check_status(check: &CheckInfo, outcome: &ProbeOutcome) -> CheckStatusInfo {
    let mut status = empty_check_status(check);
    match outcome {
        ProbeOutcome::Command(exit) => {
            if let Some(code) = exit.code() {
                status.command = Some(check_status_info::Command { exit_code: Some(code) });
            }
        }
        ProbeOutcome::Http(code) => status.http = Some(check_status_info::Http { status_code: Some(u32::from(*code)) }),
        ProbeOutcome::Tcp(succeeded) => status.tcp = Some(check_status_info::Tcp { succeeded: Some(*succeeded) }),
        ProbeOutcome::Failed(_) => {}
    }
    status
}

/// A health transition to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthUpdate {
    /// The first success, or the first after failures: `healthy=true`.
    Healthy,
    /// A counted failure: `healthy=false`; `kill` once `consecutive`
    /// reached the check's `consecutive_failures`.
    Unhealthy { consecutive: u32, kill: bool, message: String },
}

/// Mesos's health checker's bookkeeping: failures within the grace period
/// (from the task's start) are ignored until the first success; after it
/// every failure counts.
#[derive(Debug, Clone)]
pub struct HealthState {
    started: Instant,
    grace_period: Duration,
    max_failures: u32,
    initializing: bool,
    consecutive: u32,
}

impl HealthState {
    /// The state of a check that started (with its task) at `started`.
    pub fn new(spec: &HealthCheckSpec, started: Instant) -> Self {
        HealthState { started, grace_period: spec.grace_period, max_failures: spec.consecutive_failures, initializing: true, consecutive: 0 }
    }

    /// Takes one result (`Err` with why it failed) at `now`; returns the
    /// update to send, if any.
    pub fn on_result(&mut self, result: Result<(), String>, now: Instant) -> Option<HealthUpdate> {
        match result {
            Ok(()) => {
                let report = self.initializing || self.consecutive > 0;
                self.initializing = false;
                self.consecutive = 0;
                report.then_some(HealthUpdate::Healthy)
            }
            Err(_) if self.initializing && !self.grace_period.is_zero() && now.duration_since(self.started) <= self.grace_period => None,
            Err(message) => {
                self.consecutive += 1;
                Some(HealthUpdate::Unhealthy { consecutive: self.consecutive, kill: self.consecutive >= self.max_failures, message })
            }
        }
    }
}

/// A check running in its own task; dropping it stops the check.
pub struct RunningCheck {
    handle: JoinHandle<()>,
    outcomes: mpsc::UnboundedReceiver<ProbeOutcome>,
}

impl RunningCheck {
    /// Starts probing with `probe` on `timing`.
    pub fn start<F, Fut>(timing: Timing, probe: F) -> RunningCheck
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ProbeOutcome> + Send + 'static,
    {
        let (tx, outcomes) = mpsc::unbounded_channel();
        let handle = tokio::spawn(run_check(timing, probe, tx));
        RunningCheck { handle, outcomes }
    }

    /// The next outcome (never `None` while the check runs).
    pub async fn next(&mut self) -> Option<ProbeOutcome> {
        self.outcomes.recv().await
    }
}

impl Drop for RunningCheck {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// The probing loop: `delay`, then probe and `interval` after each probe's end.
async fn run_check<F, Fut>(timing: Timing, mut probe: F, tx: mpsc::UnboundedSender<ProbeOutcome>)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ProbeOutcome>,
{
    tokio::time::sleep(timing.delay).await;
    loop {
        let outcome = match timing.timeout {
            Some(limit) => match tokio::time::timeout(limit, probe()).await {
                Ok(outcome) => outcome,
                Err(_) => ProbeOutcome::Failed(format!("check has not returned after {}; aborting", mezzo_proto::duration::format(limit))),
            },
            None => probe().await,
        };
        if tx.send(outcome).is_err() {
            return;
        }
        tokio::time::sleep(timing.interval).await;
    }
}

/// Starts `probe` against the task whose container `launcher` runs (a
/// launcher of its own, made for the checks from the runtime directory).
pub fn start_probing(probe: Probe, timing: Timing, launcher: Box<dyn Launcher>) -> RunningCheck {
    let launcher: std::sync::Arc<dyn Launcher> = std::sync::Arc::from(launcher);
    let netns: std::sync::Arc<tokio::sync::OnceCell<Option<std::sync::Arc<File>>>> = Default::default();
    RunningCheck::start(timing, move || {
        let (probe, launcher, netns) = (probe.clone(), launcher.clone(), netns.clone());
        async move {
            let ns = netns.get_or_init(|| async { launcher.network_namespace().await.map(std::sync::Arc::new) }).await.clone();
            run_probe(&probe, timing.timeout, ns.as_deref(), launcher.as_ref()).await
        }
    })
}

/// One probe of the task.
pub async fn run_probe(probe: &Probe, timeout: Option<Duration>, netns: Option<&File>, launcher: &dyn Launcher) -> ProbeOutcome {
    match probe {
        Probe::Tcp { port, ipv6 } => match connect(netns, address(*ipv6, *port)).await {
            Ok(_) => ProbeOutcome::Tcp(true),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => ProbeOutcome::Tcp(false),
            Err(e) => ProbeOutcome::Failed(format!("connect to {}: {e}", address(*ipv6, *port))),
        },
        Probe::Http { https: false, port, path, ipv6 } => match http_get(netns, address(*ipv6, *port), path).await {
            Ok(code) => ProbeOutcome::Http(code),
            Err(e) => ProbeOutcome::Failed(e),
        },
        Probe::Http { https: true, port, path, ipv6 } => https_get(netns, address(*ipv6, *port), path, timeout).await,
        Probe::Command(command) => {
            // The helper kills the command at the timeout; this bound only
            // covers a helper that hangs.
            let limit = timeout.unwrap_or(Duration::from_secs(365 * 86400));
            match tokio::time::timeout(limit + COMMAND_TIMEOUT_MARGIN, launcher.run_in_container(command, limit)).await {
                Ok(Ok(CommandOutcome::Exited(status))) => ProbeOutcome::Command(status),
                Ok(Ok(CommandOutcome::TimedOut)) => {
                    ProbeOutcome::Failed(format!("Command has not returned after {}; aborting", mezzo_proto::duration::format(limit)))
                }
                Ok(Err(e)) => ProbeOutcome::Failed(e.to_string()),
                Err(_) => ProbeOutcome::Failed("the command's helper did not end".to_string()),
            }
        }
    }
}

/// Mesos's `DEFAULT_DOMAIN` (or its IPv6 loopback) and `port`.
fn address(ipv6: bool, port: u16) -> SocketAddr {
    let ip = if ipv6 { IpAddr::V6(Ipv6Addr::LOCALHOST) } else { IpAddr::V4(Ipv4Addr::LOCALHOST) };
    SocketAddr::new(ip, port)
}

/// Connects to `addr` from network namespace `netns` (this process's own when `None`).
async fn connect(netns: Option<&File>, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = match netns {
        None if addr.is_ipv4() => tokio::net::TcpSocket::new_v4()?,
        None => tokio::net::TcpSocket::new_v6()?,
        Some(ns) => {
            let ns = ns.try_clone()?;
            let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
            let made = std::thread::Builder::new()
                .name("netns-socket".into())
                .stack_size(64 * 1024)
                .spawn(move || -> std::io::Result<std::os::fd::OwnedFd> {
                    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
                    // SAFETY: socket takes plain integers and returns a new
                    // descriptor (or -1), owned below.
                    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // SAFETY: fd is a fresh descriptor nobody else owns.
                    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
                })?
                .join()
                .map_err(|_| std::io::Error::other("the thread entering the task's network namespace panicked"))??;
            tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(made))
        }
    };
    socket.connect(addr).await
}

/// `GET path` on `addr`; the response's status code.
async fn http_get(netns: Option<&File>, addr: SocketAddr, path: &str) -> Result<u16, String> {
    use hyper::header::{HeaderValue, CONNECTION, HOST};
    let url = format!("http://{addr}{path}");
    let stream = connect(netns, addr).await.map_err(|e| format!("connect to {url}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let request = hyper::Request::get(if path.is_empty() { "/" } else { path })
        .header(HOST, HeaderValue::from_str(&addr.to_string()).map_err(|e| e.to_string())?)
        .header(CONNECTION, "close")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| format!("{url}: {e}"))?;
    let mut connection = std::pin::pin!(connection);
    let mut send = std::pin::pin!(sender.send_request(request));
    // The connection may end (`Connection: close`) in the same poll that
    // hands the response over: then the response is there to take.
    let response = tokio::select! {
        response = &mut send => response,
        ended = &mut connection => match ended {
            Ok(()) => send.await,
            Err(e) => return Err(format!("{url}: {e}")),
        },
    }
    .map_err(|e| format!("{url}: {e}"))?;
    Ok(response.status().as_u16())
}

/// HTTPS as Mesos does every HTTP check: `curl -k`, started inside the
/// task's network namespace; the status code it prints.
async fn https_get(netns: Option<&File>, addr: SocketAddr, path: &str, timeout: Option<Duration>) -> ProbeOutcome {
    let host = match addr.ip() {
        IpAddr::V6(ip) => format!("[{ip}]"),
        IpAddr::V4(ip) => ip.to_string(),
    };
    let url = format!("https://{host}:{}{path}", addr.port());
    let mut curl = tokio::process::Command::new("curl");
    curl.args(["-s", "-S", "-L", "-k", "-w", "%{http_code}", "-o", "/dev/null"]);
    if let Some(t) = timeout {
        curl.arg("--max-time").arg(format!("{:.3}", t.as_secs_f64()));
    }
    curl.arg(&url).stdin(std::process::Stdio::null()).kill_on_drop(true);
    if let Some(ns) = netns {
        let fd = std::os::fd::AsRawFd::as_raw_fd(ns);
        // SAFETY: the closure runs in the forked child before exec and only
        // calls setns, which is async-signal-safe; `fd` stays open (the
        // caller holds the file) until the spawn returns.
        unsafe {
            curl.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    match curl.output().await {
        Err(e) => ProbeOutcome::Failed(format!("run curl for {url}: {e}")),
        Ok(out) if !out.status.success() => {
            ProbeOutcome::Failed(format!("curl returned {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
        }
        Ok(out) => match String::from_utf8_lossy(&out.stdout).trim().parse::<u16>() {
            Ok(code) => ProbeOutcome::Http(code),
            Err(_) => ProbeOutcome::Failed(format!("Unexpected output from curl: {}", String::from_utf8_lossy(&out.stdout))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mezzo_proto::mesos::v1::health_check::{HttpCheckInfo, TcpCheckInfo};
    use std::sync::{Arc, Mutex};

    fn spec(grace: f64, failures: u32) -> HealthCheckSpec {
        HealthCheckSpec::from_proto(&HealthCheck {
            r#type: Some(health_check::Type::Tcp as i32),
            tcp: Some(TcpCheckInfo { port: 80, ..Default::default() }),
            grace_period_seconds: Some(grace),
            consecutive_failures: Some(failures),
            ..Default::default()
        })
        .unwrap()
    }

    fn fail() -> Result<(), String> {
        Err("TCP health check failed: connection refused".into())
    }

    #[test]
    fn mesos_defaults_apply() {
        let s = HealthCheckSpec::from_proto(&HealthCheck {
            r#type: Some(health_check::Type::Http as i32),
            http: Some(HttpCheckInfo { port: 8080, path: Some("/health".into()), ..Default::default() }),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.probe, Probe::Http { https: false, port: 8080, path: "/health".into(), ipv6: false });
        assert_eq!(s.timing, Timing { delay: Duration::from_secs(15), interval: Duration::from_secs(10), timeout: Some(Duration::from_secs(20)) });
        assert_eq!((s.grace_period, s.consecutive_failures), (Duration::from_secs(10), 3));
    }

    #[test]
    fn bad_checks_name_the_field() {
        let bad = |c: HealthCheck| HealthCheckSpec::from_proto(&c).unwrap_err();
        let tcp = |port| Some(TcpCheckInfo { port, ..Default::default() });
        let t = Some(health_check::Type::Tcp as i32);
        assert!(bad(HealthCheck { r#type: t, tcp: tcp(0), ..Default::default() }).contains("'tcp.port'"));
        assert!(bad(HealthCheck { r#type: t, tcp: tcp(70000), ..Default::default() }).contains("'tcp.port'"));
        assert!(bad(HealthCheck { r#type: t, ..Default::default() }).contains("'tcp'"));
        assert!(bad(HealthCheck { r#type: t, tcp: tcp(1), interval_seconds: Some(-1.0), ..Default::default() }).contains("'interval_seconds'"));
        assert!(bad(HealthCheck { r#type: t, tcp: tcp(1), delay_seconds: Some(f64::NAN), ..Default::default() }).contains("'delay_seconds'"));
        assert!(bad(HealthCheck { ..Default::default() }).contains("'type'"));
        let http = |scheme: &str, path: &str| HealthCheck {
            r#type: Some(health_check::Type::Http as i32),
            http: Some(HttpCheckInfo { port: 80, scheme: Some(scheme.into()), path: Some(path.into()), ..Default::default() }),
            ..Default::default()
        };
        assert!(bad(http("ftp", "/")).contains("'http.scheme'"));
        assert!(bad(http("http", "health")).contains("'http.path'"));
        assert!(matches!(HealthCheckSpec::from_proto(&http("https", "/")).unwrap().probe, Probe::Http { https: true, .. }));
        let cmd = HealthCheck { r#type: Some(health_check::Type::Command as i32), ..Default::default() };
        assert!(bad(cmd).contains("'command'"));
    }

    #[test]
    fn commands_become_argv() {
        let shell = command("command", Some(&CommandInfo { value: Some("test -f x".into()), ..Default::default() })).unwrap();
        assert_eq!(shell.argv, ["/bin/sh", "-c", "test -f x"]);
        let direct = CommandInfo { value: Some("/bin/test".into()), shell: Some(false), arguments: vec!["test".into(), "-f".into(), "x".into()], ..Default::default() };
        assert_eq!(command("command", Some(&direct)).unwrap().argv, ["/bin/test", "-f", "x"]);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_in_the_grace_period_before_a_success_are_ignored() {
        let start = Instant::now();
        let mut state = HealthState::new(&spec(10.0, 3), start);
        for s in [1, 5, 10] {
            assert_eq!(state.on_result(fail(), start + Duration::from_secs(s)), None, "at {s}s, within the grace period");
        }
        assert_eq!(state.on_result(Ok(()), start + Duration::from_secs(11)), Some(HealthUpdate::Healthy), "the first success");
        assert_eq!(state.on_result(Ok(()), start + Duration::from_secs(12)), None, "no news");
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_success_failures_count_even_within_the_grace_period() {
        let start = Instant::now();
        let mut state = HealthState::new(&spec(60.0, 2), start);
        assert_eq!(state.on_result(Ok(()), start + Duration::from_secs(1)), Some(HealthUpdate::Healthy));
        let first = state.on_result(fail(), start + Duration::from_secs(2));
        assert!(matches!(first, Some(HealthUpdate::Unhealthy { consecutive: 1, kill: false, .. })), "{first:?}");
        assert_eq!(state.on_result(Ok(()), start + Duration::from_secs(3)), Some(HealthUpdate::Healthy), "healthy again after failures");
        assert!(matches!(state.on_result(fail(), start + Duration::from_secs(4)), Some(HealthUpdate::Unhealthy { consecutive: 1, kill: false, .. })));
        assert!(matches!(state.on_result(fail(), start + Duration::from_secs(5)), Some(HealthUpdate::Unhealthy { consecutive: 2, kill: true, .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_after_the_grace_period_count_without_a_success() {
        let start = Instant::now();
        let mut state = HealthState::new(&spec(5.0, 3), start);
        assert_eq!(state.on_result(fail(), start + Duration::from_secs(5)), None);
        for (n, kill) in [(1, false), (2, false), (3, true), (4, true)] {
            match state.on_result(fail(), start + Duration::from_secs(5 + n as u64)) {
                Some(HealthUpdate::Unhealthy { consecutive, kill: k, message }) => {
                    assert_eq!((consecutive, k), (n, kill));
                    assert!(message.contains("connection refused"));
                }
                other => panic!("failure {n}: {other:?}"),
            }
        }
        // No grace period at all: the first failure counts.
        let mut state = HealthState::new(&spec(0.0, 1), start);
        assert!(matches!(state.on_result(fail(), start), Some(HealthUpdate::Unhealthy { consecutive: 1, kill: true, .. })));
    }

    /// The loop's timing on a paused clock: the first probe after `delay`,
    /// each next one `interval` after the previous one ended, a probe past
    /// `timeout` a failure, nothing after the check is dropped.
    #[tokio::test(start_paused = true)]
    async fn probes_follow_delay_interval_and_timeout() {
        let start = Instant::now();
        let calls: Arc<Mutex<Vec<Duration>>> = Default::default();
        let timing = Timing { delay: Duration::from_secs(15), interval: Duration::from_secs(10), timeout: Some(Duration::from_secs(2)) };
        let seen = calls.clone();
        let mut check = RunningCheck::start(timing, move || {
            let seen = seen.clone();
            async move {
                let n = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(Instant::now() - start);
                    seen.len()
                };
                // The second probe hangs past the timeout; the others take 1 s.
                tokio::time::sleep(Duration::from_secs(if n == 2 { 100 } else { 1 })).await;
                ProbeOutcome::Tcp(true)
            }
        });
        assert_eq!(check.next().await, Some(ProbeOutcome::Tcp(true)));
        assert_eq!(Instant::now() - start, Duration::from_secs(16));
        match check.next().await {
            Some(ProbeOutcome::Failed(why)) => assert!(why.contains("has not returned after 2secs"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(Instant::now() - start, Duration::from_secs(28));
        assert_eq!(check.next().await, Some(ProbeOutcome::Tcp(true)));
        assert_eq!(*calls.lock().unwrap(), [Duration::from_secs(15), Duration::from_secs(26), Duration::from_secs(38)]);
        drop(check);
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert_eq!(calls.lock().unwrap().len(), 3, "no probe after the check stopped");
    }

    #[test]
    fn check_statuses_as_mesos() {
        let cmd = CheckInfo { r#type: Some(check_info::Type::Command as i32), ..Default::default() };
        assert_eq!(check_status(&cmd, &ProbeOutcome::Command(ExitStatus::from_code(3))).command.unwrap().exit_code, Some(3));
        assert_eq!(check_status(&cmd, &ProbeOutcome::Failed("x".into())), empty_check_status(&cmd));
        assert_eq!(empty_check_status(&cmd).command, Some(Default::default()));
        let tcp = CheckInfo { r#type: Some(check_info::Type::Tcp as i32), ..Default::default() };
        assert_eq!(check_status(&tcp, &ProbeOutcome::Tcp(false)).tcp.unwrap().succeeded, Some(false));
        let http = CheckInfo { r#type: Some(check_info::Type::Http as i32), ..Default::default() };
        assert_eq!(check_status(&http, &ProbeOutcome::Http(503)).http.unwrap().status_code, Some(503));
    }

    #[test]
    fn http_health_is_2xx_and_3xx() {
        let p = Probe::Http { https: false, port: 1, path: String::new(), ipv6: false };
        for (code, healthy) in [(200, true), (302, true), (399, true), (400, false), (503, false), (199, false)] {
            assert_eq!(ProbeOutcome::Http(code).health_failure(&p).is_none(), healthy, "{code}");
        }
    }

    /// HTTPS through `curl -k` against `openssl s_server` with a
    /// self-signed certificate: the status code comes back; a plain HTTP
    /// port is a failure.
    #[tokio::test]
    async fn https_probes_use_curl_and_accept_any_certificate() {
        for tool in ["openssl", "curl"] {
            if std::process::Command::new(tool).arg("--version").output().is_err() {
                return mezzo_testkit::skip(&format!("needs {tool}"));
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let made = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = tokio::process::Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "openssl s_server did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let outcome = https_get(None, address(false, port), "/", Some(Duration::from_secs(10))).await;
        assert_eq!(outcome, ProbeOutcome::Http(200));
        server.kill().await.unwrap();
        let outcome = https_get(None, address(false, port), "/", Some(Duration::from_secs(10))).await;
        assert!(matches!(&outcome, ProbeOutcome::Failed(why) if why.starts_with("curl returned")), "{outcome:?}");
    }

    /// Real probes against loopback servers in this network namespace.
    #[tokio::test]
    async fn tcp_and_http_probes_reach_loopback_servers() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let code = if String::from_utf8_lossy(&buf[..n]).starts_with("GET /bad ") { "503 Service Unavailable" } else { "200 OK" };
                let _ = s.write_all(format!("HTTP/1.1 {code}\r\ncontent-length: 0\r\n\r\n").as_bytes()).await;
            }
        });
        assert_eq!(connect(None, address(false, port)).await.map(|_| ()).map_err(|e| e.kind()), Ok(()));
        assert_eq!(http_get(None, address(false, port), "/health").await, Ok(200));
        assert_eq!(http_get(None, address(false, port), "/bad").await, Ok(503));
        // The namespace path: this process's own namespace, entered by a thread.
        let own = File::open("/proc/self/ns/net").unwrap();
        if nix::unistd::geteuid().is_root() {
            assert_eq!(http_get(Some(&own), address(false, port), "").await, Ok(200));
        }
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        assert!(http_get(None, address(false, closed_port), "/").await.is_err());
        assert_eq!(connect(None, address(false, closed_port)).await.map(|_| ()).map_err(|e| e.kind()), Err(std::io::ErrorKind::ConnectionRefused));
    }
}
