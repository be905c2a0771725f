//! One handle on the Docker Engine with a bound on every call.
//!
//! The client connects lazily (an engine that is down when the agent starts
//! only fails the docker launches that need it) and negotiates the API
//! version on first use. Every call goes through `Engine::call`, so a hung
//! engine gives a clear error after `timeout` instead of holding up a launch.

use crate::ContainerizerError;
use bollard::Docker;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::time::Duration;
use tokio::sync::OnceCell;

/// The engine's address when neither the config nor `DOCKER_HOST` names one.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";
/// Default bound on one engine call.
pub const DEFAULT_ENGINE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the engine is and how long to wait for it: what the executor's
/// launcher needs to reach the same engine as the agent's backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineSettings {
    /// `unix:///path`, a bare socket path, or `tcp://host:port`; `None`
    /// means `DOCKER_HOST`, else the default socket.
    pub host: Option<String>,
    /// Bound on one engine call, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings { host: None, timeout_ms: DEFAULT_ENGINE_TIMEOUT.as_millis() as u64 }
    }
}

impl EngineSettings {
    /// The bound on one engine call.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }

    /// The address this resolves to now.
    pub fn address(&self) -> String {
        self.host
            .clone()
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_string())
    }
}

/// A lazily connected, version-negotiated engine client with bounded calls.
pub struct Engine {
    settings: EngineSettings,
    client: OnceCell<Docker>,
}

impl Engine {
    /// An engine handle; nothing is contacted until the first call.
    pub fn new(settings: EngineSettings) -> Self {
        Engine { settings, client: OnceCell::new() }
    }

    /// The settings this handle was made with.
    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// The bound on one call.
    pub fn timeout(&self) -> Duration {
        self.settings.timeout()
    }

    /// The connected client; connects and negotiates on first use. A failure
    /// is not remembered, so an engine that comes up later is found.
    pub async fn client(&self) -> Result<&Docker, ContainerizerError> {
        self.client.get_or_try_init(|| self.connect()).await
    }

    async fn connect(&self) -> Result<Docker, ContainerizerError> {
        let address = self.settings.address();
        let secs = self.timeout().as_secs().max(1);
        let version = bollard::API_DEFAULT_VERSION;
        let docker = if let Some(rest) = address.strip_prefix("tcp://").or_else(|| address.strip_prefix("http://")) {
            Docker::connect_with_http(&format!("http://{rest}"), secs, version)
        } else {
            Docker::connect_with_unix(address.trim_start_matches("unix://"), secs, version)
        }
        .map_err(|e| ContainerizerError::Docker(format!("docker engine at {address} is not reachable: {e}")))?
        // bollard's own bound (on the response headers) is a backstop: ours
        // comes first and names the call.
        .with_timeout(self.timeout() + Duration::from_secs(1));
        bounded(self.timeout(), "negotiate the api version", &address, docker.negotiate_version())
            .await?
            .map_err(|e| self.unavailable("negotiate the api version", &address, e))
    }

    /// The error for an engine that could not be reached or timed out.
    fn unavailable(&self, what: &str, address: &str, e: bollard::errors::Error) -> ContainerizerError {
        match e {
            bollard::errors::Error::RequestTimeoutError => ContainerizerError::Docker(format!(
                "docker engine at {address} did not answer within {} ({what})",
                human(self.timeout())
            )),
            e => ContainerizerError::Docker(format!("docker engine at {address} is not reachable: {e}")),
        }
    }

    /// Runs one engine call made from the client, bounded by the timeout;
    /// `what` says what was asked ("inspect image busybox:latest").
    pub async fn call<'a, T, F, Fut>(&'a self, what: &str, f: F) -> Result<T, EngineError>
    where
        F: FnOnce(&'a Docker) -> Fut,
        Fut: Future<Output = Result<T, bollard::errors::Error>> + 'a,
    {
        let docker = self.client().await.map_err(EngineError::Unavailable)?;
        let address = self.settings.address();
        match bounded(self.timeout(), what, &address, f(docker)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if is_connection_error(&e) => Err(EngineError::Unavailable(self.unavailable(what, &address, e))),
            Ok(Err(e)) => Err(EngineError::Api(e)),
            Err(e) => Err(EngineError::Unavailable(e)),
        }
    }
}

/// How an engine call failed: the engine could not be reached in time, or it
/// answered with an error.
#[derive(Debug)]
pub enum EngineError {
    /// Down, hung, or not answering in time; the message says which.
    Unavailable(ContainerizerError),
    /// The engine's own answer.
    Api(bollard::errors::Error),
}

impl EngineError {
    /// Whether the engine answered 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, EngineError::Api(e) if super::image::is_not_found(e))
    }

    /// The engine's status code, when it answered with an error status.
    pub fn status(&self) -> Option<u16> {
        match self {
            EngineError::Api(bollard::errors::Error::DockerResponseServerError { status_code, .. }) => {
                Some(*status_code)
            }
            _ => None,
        }
    }

    /// The engine's message (without bollard's decoration where it has one).
    pub fn message(&self) -> String {
        match self {
            EngineError::Unavailable(e) => e.to_string(),
            EngineError::Api(bollard::errors::Error::DockerResponseServerError { message, .. }) => message.clone(),
            EngineError::Api(bollard::errors::Error::DockerStreamError { error }) => error.clone(),
            EngineError::Api(e) => e.to_string(),
        }
    }

    /// A containerizer error: "<what>: <message>".
    pub fn into_error(self, what: &str) -> ContainerizerError {
        match self {
            EngineError::Unavailable(e) => e,
            other => ContainerizerError::Docker(format!("{what}: {}", other.message())),
        }
    }
}

/// Whether bollard failed to talk to the engine at all (as opposed to the
/// engine answering with an error).
pub(crate) fn is_connection_error(e: &bollard::errors::Error) -> bool {
    use bollard::errors::Error::*;
    matches!(e, RequestTimeoutError | HyperResponseError { .. } | IOError { .. } | SocketNotFoundError(_) | HyperLegacyError { .. })
}

/// Bounds `fut` by `timeout`, naming the engine and the call when it runs out.
pub async fn bounded<T>(
    timeout: Duration,
    what: &str,
    address: &str,
    fut: impl Future<Output = T>,
) -> Result<T, ContainerizerError> {
    tokio::time::timeout(timeout, fut).await.map_err(|_| {
        ContainerizerError::Docker(format!(
            "docker engine at {address} did not answer within {} ({what})",
            human(timeout)
        ))
    })
}

/// `30s`, `1.5s`, `250ms`.
pub fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
