//! The docker backend: runs a task's container on the local Docker Engine
//! through its HTTP API (bollard), following Mesos's docker containerizer.
//!
//! * `DockerBackend::prepare` makes sure the engine has the image (loading a
//!   local `docker save` archive when it is missing: no registry is assumed)
//!   and renders the spec into the create request, saved as
//!   `<runtime_dir>/docker-create.json`.
//! * `DockerLauncher` (in the executor) creates and starts the container
//!   `mesos-<container id>`, copies its output into the sandbox files,
//!   signals it and waits for its exit code.
//! * `DockerBackend::destroy` force-removes the container.
//!
//! The engine here speaks API 1.41 only, so every client negotiates the
//! version before its first request.

mod image;
mod isolators;
mod launcher;
mod render;

pub use image::{ensure_image, ImageRef};
pub use isolators::{cpu_shares, memory_bytes, DockerResourcesIsolator, DockerRuntimeIsolator, MIN_MEMORY_BYTES};
pub use launcher::DockerLauncher;
pub use render::render;

use crate::containerizer::write_atomic;
use crate::{Backend, ContainerSpec, ContainerType, ContainerizerError, Isolator};
use async_trait::async_trait;
use bollard::query_parameters::RemoveContainerOptionsBuilder;
use bollard::Docker;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Prefix of the engine's container names (Mesos's `DOCKER_NAME_PREFIX`).
pub const CONTAINER_NAME_PREFIX: &str = "mesos-";
/// Label carrying the mezzo container id on every container we create.
pub const CONTAINER_ID_LABEL: &str = "mezzo.container_id";
/// File in the runtime directory holding the rendered create request.
pub const CREATE_REQUEST_FILE: &str = "docker-create.json";
/// Bound on removing a container in `destroy`.
const DESTROY_TIMEOUT: Duration = Duration::from_secs(60);

/// The engine's name for a mezzo container: `mesos-<container id>`.
pub fn container_name(container_id: &str) -> String {
    format!("{CONTAINER_NAME_PREFIX}{container_id}")
}

/// Connects to the local engine (`DOCKER_HOST` or `/var/run/docker.sock`)
/// and negotiates the API version down to what it speaks.
pub async fn connect() -> Result<Docker, ContainerizerError> {
    let docker = Docker::connect_with_local_defaults()
        .map_err(|e| ContainerizerError::Docker(format!("connect to the docker engine: {e}")))?;
    docker
        .negotiate_version()
        .await
        .map_err(|e| ContainerizerError::Docker(format!("negotiate the docker engine api version: {e}")))
}

/// Settings of the docker backend.
#[derive(Debug, Clone, Default)]
pub struct DockerBackendConfig {
    /// Directory of `docker save` archives (`<name>:<tag>.tar`, or
    /// `<name>.tar` for `latest`) to load images the engine lacks.
    pub image_archive_dir: Option<PathBuf>,
}

/// The `docker` containerizer backend, for `ContainerInfo.type = DOCKER`.
pub struct DockerBackend {
    docker: Docker,
    config: DockerBackendConfig,
    isolators: Vec<Arc<dyn Isolator>>,
}

impl DockerBackend {
    /// Connects to the local engine; fails when it cannot be reached, as
    /// Mesos's docker containerizer refuses to start without docker.
    pub async fn new(config: DockerBackendConfig) -> Result<Self, ContainerizerError> {
        let docker = connect().await?;
        let version = docker
            .version()
            .await
            .map_err(|e| ContainerizerError::Docker(format!("query the docker engine version: {e}")))?;
        tracing::info!(
            engine = version.version.as_deref().unwrap_or("?"),
            api = %docker.client_version(),
            "docker backend connected"
        );
        let isolators: Vec<Arc<dyn Isolator>> = vec![
            Arc::new(DockerResourcesIsolator),
            Arc::new(DockerRuntimeIsolator::new(docker.clone(), config.image_archive_dir.clone())),
        ];
        Ok(DockerBackend { docker, config, isolators })
    }

    /// The engine client this backend uses.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }
}

#[async_trait]
impl Backend for DockerBackend {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn accepts(&self, kind: ContainerType) -> bool {
        kind == ContainerType::Docker
    }

    fn isolators(&self) -> Vec<Arc<dyn Isolator>> {
        self.isolators.clone()
    }

    async fn prepare(&self, spec: &ContainerSpec, runtime_dir: &Path) -> Result<(), ContainerizerError> {
        let request = render(spec)?;
        let image = ImageRef::parse(request.image.as_deref().unwrap_or_default())?;
        ensure_image(&self.docker, &image, self.config.image_archive_dir.as_deref()).await?;
        let json = serde_json::to_vec_pretty(&request)
            .map_err(|e| ContainerizerError::Other(format!("serialize docker create request: {e}")))?;
        write_atomic(&runtime_dir.join(CREATE_REQUEST_FILE), &json)
    }

    async fn destroy(&self, container_id: &str, _runtime_dir: &Path) -> Result<(), ContainerizerError> {
        remove_container(&self.docker, container_id).await
    }
}

/// Force-removes `mesos-<container_id>` (killing it if it runs) with its
/// anonymous volumes; a container the engine does not know is not an error.
pub async fn remove_container(docker: &Docker, container_id: &str) -> Result<(), ContainerizerError> {
    let name = container_name(container_id);
    let options = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
    match tokio::time::timeout(DESTROY_TIMEOUT, docker.remove_container(&name, Some(options))).await {
        Ok(Ok(())) => {
            tracing::info!(container = %name, "removed docker container");
            Ok(())
        }
        Ok(Err(e)) if image::is_not_found(&e) => Ok(()),
        // 409 "removal already in progress": someone else is removing it.
        Ok(Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, message }))
            if message.contains("already in progress") =>
        {
            Ok(())
        }
        Ok(Err(e)) => Err(ContainerizerError::Docker(format!("remove container {name}: {e}"))),
        Err(_) => Err(ContainerizerError::Docker(format!(
            "remove container {name}: no answer within {}s",
            DESTROY_TIMEOUT.as_secs()
        ))),
    }
}
