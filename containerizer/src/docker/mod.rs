//! The docker backend: runs a task's container on the local Docker Engine
//! through its HTTP API (bollard), following Mesos's docker containerizer.
//!
//! * The `docker/runtime` isolator makes sure the engine has the image
//!   (pulled with the `--docker_config` credentials, or loaded from mezzo's
//!   image store) and works out the command and `DockerInfo` options;
//!   `DockerBackend::prepare` renders everything into the create request,
//!   saved in the container's `RuntimeDir`, next to the engine settings the
//!   executor needs (`LaunchSettings`).
//! * `DockerLauncher` (in the executor) creates and starts the container
//!   `mesos-<container id>`, streams its output into the sandbox files,
//!   stops it, waits for its exit code and reports an OOM kill.
//! * `DockerBackend::destroy` stops the container and removes it, at once or
//!   after `--docker_remove_delay`.
//! * `DockerBackend::recover` removes `mesos-*` containers of ours that no
//!   checkpoint names (`--docker_kill_orphans`).
//!
//! Every engine call is bounded (`engine_timeout`), and the engine is only
//! contacted when a docker container needs it: an engine that is down or
//! hung fails docker launches with a clear message and nothing else.

mod auth;
mod engine;
mod image;
mod isolators;
mod launcher;
mod render;

pub use auth::{registry_host, RegistryAuth};
pub use engine::{Engine, EngineError, EngineSettings, DEFAULT_DOCKER_HOST, DEFAULT_ENGINE_TIMEOUT};
pub use image::{ImageProvider, ImageRef, ImageSource};
pub use isolators::{docker_limits, DockerResourcesIsolator, DockerRuntimeIsolator};
pub use launcher::DockerLauncher;
pub use render::{parse_size, render, validate_parameters, DockerRun, SUPPORTED_PARAMETERS};

use crate::{Backend, BackendKind, ContainerSpec, ContainerType, ContainerizerError, Isolator, RuntimeDir};
use async_trait::async_trait;
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder};
use isolators::PendingRuns;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Prefix of the engine's container names (Mesos's `DOCKER_NAME_PREFIX`).
pub const CONTAINER_NAME_PREFIX: &str = "mesos-";
/// Label carrying the mezzo container id on every container we create.
pub const CONTAINER_ID_LABEL: &str = "mezzo.container_id";
/// Label naming the agent that owns a container (`DockerBackendConfig::owner`).
pub const OWNER_LABEL: &str = "mezzo.owner";
/// Mesos's `--docker_remove_delay` default.
pub const DEFAULT_REMOVE_DELAY: Duration = Duration::from_secs(6 * 60 * 60);

/// The engine's name for a mezzo container: `mesos-<container id>`.
pub fn container_name(container_id: &str) -> String {
    format!("{CONTAINER_NAME_PREFIX}{container_id}")
}

/// Settings of the docker backend (the agent's `--docker*` flags).
#[derive(Clone)]
pub struct DockerBackendConfig {
    /// Directory of `docker save` archives (`<name>:<tag>.tar`, or
    /// `<name>.tar` for `latest`): images for `ImageSource::Store` without a
    /// store, and the fallback when a pull fails.
    pub image_archive_dir: Option<PathBuf>,
    /// The engine's address (`--docker_socket`): `unix:///path`, a socket
    /// path or `tcp://host:port`; `None` is `DOCKER_HOST` or the default socket.
    pub docker_host: Option<String>,
    /// Registry credentials (`--docker_config`), a docker `config.json`.
    pub docker_config: Option<PathBuf>,
    /// How long an ended container is kept before it is removed
    /// (`--docker_remove_delay`, 6 hours by default as in Mesos).
    pub remove_delay: Duration,
    /// The shortest grace period of a stop (`--docker_stop_timeout`).
    pub stop_timeout: Duration,
    /// Whether `recover` removes `mesos-*` containers no checkpoint names
    /// (`--docker_kill_orphans`).
    pub kill_orphans: bool,
    /// Where missing images come from (`--docker_image_source`).
    pub image_source: ImageSource,
    /// mezzo's image store, for `ImageSource::Store`.
    pub image_store: Option<mezzo_images::ImageStore>,
    /// Bound on each engine call.
    pub engine_timeout: Duration,
    /// Labels every container with `mezzo.owner=<owner>`, and makes
    /// `recover` treat only containers with this owner as its own: set it
    /// (to something stable, like the work dir) when several agents share an
    /// engine. `None` is Mesos's behaviour: every mezzo container is ours.
    pub owner: Option<String>,
}

impl Default for DockerBackendConfig {
    fn default() -> Self {
        DockerBackendConfig {
            image_archive_dir: None,
            docker_host: None,
            docker_config: None,
            remove_delay: DEFAULT_REMOVE_DELAY,
            stop_timeout: Duration::ZERO,
            kill_orphans: true,
            image_source: ImageSource::Engine,
            image_store: None,
            engine_timeout: DEFAULT_ENGINE_TIMEOUT,
            owner: None,
        }
    }
}

impl std::fmt::Debug for DockerBackendConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerBackendConfig")
            .field("image_archive_dir", &self.image_archive_dir)
            .field("docker_host", &self.docker_host)
            .field("docker_config", &self.docker_config)
            .field("remove_delay", &self.remove_delay)
            .field("stop_timeout", &self.stop_timeout)
            .field("kill_orphans", &self.kill_orphans)
            .field("image_source", &self.image_source)
            .field("image_store", &self.image_store.as_ref().map(|s| s.root().to_path_buf()))
            .field("engine_timeout", &self.engine_timeout)
            .field("owner", &self.owner)
            .finish()
    }
}

impl std::fmt::Debug for ImageProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageProvider").field("source", &self.source).field("archive_dir", &self.archive_dir).finish()
    }
}

/// What the launcher reads from the runtime directory besides the request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchSettings {
    /// How to reach the engine the backend used.
    pub engine: EngineSettings,
    /// `--docker_stop_timeout`, in milliseconds.
    pub stop_timeout_ms: u64,
}

/// The `docker` containerizer backend, for `ContainerInfo.type = DOCKER`.
pub struct DockerBackend {
    engine: Arc<Engine>,
    config: DockerBackendConfig,
    isolators: Vec<Arc<dyn Isolator>>,
    pending: Arc<PendingRuns>,
}

impl DockerBackend {
    /// A backend for `config`. The engine is not contacted here (an engine
    /// that is down fails only docker launches, with a clear message); this
    /// fails only on invalid configuration, like an unreadable `docker_config`.
    pub async fn new(config: DockerBackendConfig) -> Result<Self, ContainerizerError> {
        if config.engine_timeout.is_zero() {
            return Err(ContainerizerError::InvalidSpec("docker: the engine timeout must be positive".into()));
        }
        let auth = match &config.docker_config {
            Some(path) => RegistryAuth::load(path)?,
            None => RegistryAuth::default(),
        };
        if config.image_source == ImageSource::Store && config.image_store.is_none() && config.image_archive_dir.is_none() {
            return Err(ContainerizerError::InvalidSpec(
                "docker: --docker_image_source=store needs an image store or an image archive directory".into(),
            ));
        }
        let engine = Arc::new(Engine::new(EngineSettings {
            host: config.docker_host.clone(),
            timeout_ms: config.engine_timeout.as_millis() as u64,
        }));
        let images = ImageProvider {
            source: config.image_source,
            archive_dir: config.image_archive_dir.clone(),
            store: config.image_store.clone(),
            auth,
        };
        let pending = Arc::new(PendingRuns::default());
        let isolators: Vec<Arc<dyn Isolator>> = vec![
            Arc::new(DockerResourcesIsolator::new(engine.clone())),
            Arc::new(DockerRuntimeIsolator::new(engine.clone(), images, pending.clone())),
        ];
        tracing::info!(engine = %engine.settings().address(), source = ?config.image_source, "docker backend ready");
        Ok(DockerBackend { engine, config, isolators, pending })
    }

    /// The engine this backend talks to.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Stops and removes `mesos-<container_id>` now.
    async fn remove_now(&self, container_id: &str) -> Result<(), ContainerizerError> {
        remove_container(&self.engine, container_id).await
    }
}

#[async_trait]
impl Backend for DockerBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Docker
    }

    fn accepts(&self, kind: ContainerType) -> bool {
        kind == ContainerType::Docker
    }

    fn isolators(&self) -> Vec<Arc<dyn Isolator>> {
        self.isolators.clone()
    }

    async fn prepare(&self, spec: &ContainerSpec, runtime_dir: &RuntimeDir) -> Result<(), ContainerizerError> {
        let run = self.pending.take(&spec.container_id).ok_or_else(|| {
            ContainerizerError::InvalidSpec(format!(
                "docker: container {} was not prepared by the docker/runtime isolator",
                spec.container_id
            ))
        })?;
        let mut request = render(spec, &run)?;
        if let Some(owner) = &self.config.owner {
            request.labels.get_or_insert_with(HashMap::new).insert(OWNER_LABEL.to_string(), owner.clone());
        }
        runtime_dir.write_docker_request(&request)?;
        let settings = LaunchSettings {
            engine: self.engine.settings().clone(),
            stop_timeout_ms: self.config.stop_timeout.as_millis() as u64,
        };
        runtime_dir.write_docker_settings(&settings)
    }

    /// Stops the container (SIGTERM, SIGKILL after `--docker_stop_timeout`)
    /// and removes it, at once or, with a remove delay, from a timer: the
    /// ended container stays for operators to inspect until then. An engine
    /// that is down (or fails the call) does not fail the destroy: the stop
    /// and the removal are retried, with a bounded backoff, until the engine
    /// does them.
    async fn destroy(&self, container_id: &str, runtime_dir: &RuntimeDir) -> Result<(), ContainerizerError> {
        self.pending.take(container_id);
        // Without a create request `prepare` never finished, so no executor
        // can have created the container: the engine is not asked, and a
        // hung or down engine does not hold up the failed launch's status.
        if !runtime_dir.has_docker_request() {
            return Ok(());
        }
        let delay = self.config.remove_delay;
        if delay.is_zero() {
            if let Err(e) = self.remove_now(container_id).await {
                tracing::warn!(container = %container_name(container_id), error = %e, "cannot remove the docker container now; retrying until the engine removes it");
                retire(self.engine.clone(), container_id.to_string(), None, Duration::ZERO);
            }
            return Ok(());
        }
        let stop = match stop_container(&self.engine, container_id, self.config.stop_timeout).await {
            Ok(()) => None,
            Err(e) => {
                tracing::warn!(container = %container_name(container_id), error = %e, "cannot stop the docker container now; retrying until the engine stops it");
                Some(self.config.stop_timeout)
            }
        };
        tracing::info!(container = %container_name(container_id), ?delay, "docker container will be removed after the remove delay");
        retire(self.engine.clone(), container_id.to_string(), stop, delay);
        Ok(())
    }

    /// Removes our `mesos-*` containers that no known spec names, when
    /// `kill_orphans`; the known ones are left to their executors. An engine
    /// that is down must not keep the agent (and its other containerizers)
    /// from starting: the sweep is then done in the background once the
    /// engine is back, of the containers created before this recovery.
    async fn recover(&self, known: &[ContainerSpec]) -> Result<(), ContainerizerError> {
        let known: HashSet<String> = known.iter().map(|s| s.container_id.clone()).collect();
        match sweep_orphans(&self.engine, &self.config, &known, None).await {
            Ok(()) => Ok(()),
            Err(EngineError::Unavailable(e)) => {
                tracing::warn!(error = %e, "docker engine unavailable; orphan docker containers will be swept once it is back");
                let before = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(i64::MAX);
                let (engine, config) = (self.engine.clone(), self.config.clone());
                tokio::spawn(async move {
                    let mut backoff = RETRY_MIN;
                    loop {
                        tokio::time::sleep(backoff).await;
                        match sweep_orphans(&engine, &config, &known, Some(before)).await {
                            Ok(()) => return,
                            Err(EngineError::Unavailable(_)) => backoff = (backoff * 2).min(RETRY_MAX),
                            Err(e) => {
                                tracing::warn!(error = %e.message(), "sweeping orphan docker containers");
                                return;
                            }
                        }
                    }
                });
                Ok(())
            }
            Err(e) => Err(e.into_error("list docker containers")),
        }
    }
}

/// Backoff between attempts of an engine call that must eventually succeed.
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(15);

/// Removes the `mesos-*` containers of ours (`config.owner`) that `known`
/// does not name (only those created before `created_before`, in seconds
/// since the epoch, when given), with `--docker_kill_orphans`.
async fn sweep_orphans(
    engine: &Arc<Engine>,
    config: &DockerBackendConfig,
    known: &HashSet<String>,
    created_before: Option<i64>,
) -> Result<(), EngineError> {
    let mut labels = vec![CONTAINER_ID_LABEL.to_string()];
    if let Some(owner) = &config.owner {
        labels.push(format!("{OWNER_LABEL}={owner}"));
    }
    let filters: HashMap<&str, Vec<String>> = [("label", labels)].into();
    let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
    let containers = engine.call("list containers", |d| d.list_containers(Some(options))).await?;
    for c in containers {
        let Some(id) = c.labels.as_ref().and_then(|l| l.get(CONTAINER_ID_LABEL)).cloned() else { continue };
        let ours = c.names.iter().flatten().any(|n| n.trim_start_matches('/') == container_name(&id));
        let old_enough = created_before.is_none_or(|t| c.created.is_some_and(|created| created < t));
        if !ours || known.contains(&id) || !old_enough {
            continue;
        }
        if !config.kill_orphans {
            tracing::info!(container = %container_name(&id), "orphan docker container left running (--docker_kill_orphans=false)");
            continue;
        }
        tracing::info!(container = %container_name(&id), "removing orphan docker container");
        if let Err(e) = stop_container(engine, &id, config.stop_timeout).await {
            tracing::warn!(container = %container_name(&id), error = %e, "stopping orphan docker container");
        }
        if let Err(e) = remove_container(engine, &id).await {
            tracing::warn!(container = %container_name(&id), error = %e, "cannot remove the orphan docker container now; retrying");
            retire(engine.clone(), id, None, Duration::ZERO);
        }
    }
    Ok(())
}

/// In the background: stops `mesos-<container_id>` (when `stop` gives the
/// grace), waits `delay`, then removes it; each step is retried, with a
/// bounded backoff, until the engine does it.
fn retire(engine: Arc<Engine>, container_id: String, stop: Option<Duration>, delay: Duration) {
    tokio::spawn(async move {
        if let Some(grace) = stop {
            retry_until_done("stop", &container_id, || stop_container(&engine, &container_id, grace)).await;
        }
        tokio::time::sleep(delay).await;
        retry_until_done("remove", &container_id, || remove_container(&engine, &container_id)).await;
    });
}

/// Runs `step` until it succeeds, logging the first failure and every tenth.
async fn retry_until_done<F, Fut>(what: &str, container_id: &str, step: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), ContainerizerError>>,
{
    let mut backoff = RETRY_MIN;
    let mut failures = 0u64;
    loop {
        match step().await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(container = %container_name(container_id), failures, "docker {what} done after retries");
                }
                return;
            }
            Err(e) => {
                if failures % 10 == 0 {
                    tracing::warn!(container = %container_name(container_id), error = %e, failures, "docker {what} failed; retrying");
                }
                failures += 1;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
    }
}

/// `docker stop -t <grace>` of `mesos-<container_id>`: SIGTERM, SIGKILL
/// after `grace`. A container that is not running, or not known, is fine.
pub async fn stop_container(engine: &Engine, container_id: &str, grace: Duration) -> Result<(), ContainerizerError> {
    let name = container_name(container_id);
    let secs = grace.as_secs_f64().ceil() as i32;
    let options = StopContainerOptionsBuilder::new().t(secs).build();
    // The engine answers once the container stopped: allow the grace on top.
    let bound = grace + engine.timeout();
    let address = engine.settings().address();
    let docker = engine.client().await?;
    match engine::bounded(bound, "stop container", &address, docker.stop_container(&name, Some(options))).await? {
        Ok(()) => Ok(()),
        Err(e) if image::is_not_found(&e) => Ok(()),
        Err(e) => Err(EngineError::Api(e).into_error(&format!("stop container {name}"))),
    }
}

/// Force-removes `mesos-<container_id>` (killing it if it runs) with its
/// anonymous volumes; a container the engine does not know is not an error.
pub async fn remove_container(engine: &Engine, container_id: &str) -> Result<(), ContainerizerError> {
    let name = container_name(container_id);
    let options = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
    match engine.call("remove container", |d| d.remove_container(&name, Some(options))).await {
        Ok(()) => {
            tracing::info!(container = %name, "removed docker container");
            Ok(())
        }
        Err(e) if e.is_not_found() => Ok(()),
        // 409 "removal already in progress": someone else is removing it.
        Err(e) if e.status() == Some(409) && e.message().contains("already in progress") => Ok(()),
        Err(e) => Err(e.into_error(&format!("remove container {name}"))),
    }
}
