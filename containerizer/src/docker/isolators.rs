//! The docker backend's isolators: what a docker container needs from the
//! spec, with the Mesos docker containerizer's rules (`docker run` option
//! mapping). Cgroups and namespaces are the engine's job: `docker/resources`
//! turns the task's resources into engine limits (and applies updates and
//! reads usage through the engine), `docker/runtime` provisions the image and
//! fills in the command, environment, sandbox, volumes and `DockerInfo`.

use crate::limits::{CgroupValues, CPU_CFS_PERIOD_US, CPU_SHARES_PER_CPU};
use crate::{
    ContainerConfig, ContainerSpec, ContainerizerError, DockerNetwork, DockerOptions, Isolator, Limits, Mount,
    ResourceLimits, Resources, Usage, VolumeSource, SANDBOX_MOUNT_POINT,
};
use async_trait::async_trait;
use bollard::models::ContainerUpdateBody;
use bollard::query_parameters::StatsOptionsBuilder;
use futures::StreamExt;
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::container_name;
use super::engine::Engine;
use super::image::{ImageProvider, ImageRef};
use super::render::{validate_parameters, DockerRun};

/// The engine limits for a task's resources and limits: Mesos's values
/// ([`CgroupValues`]), the reservation being the memory request. The docker
/// backend has no `--cgroups_enable_cfs`: its CFS quota comes from a cpu
/// limit only.
pub fn docker_limits(resources: &Resources, limits: &ResourceLimits) -> Result<Limits, ContainerizerError> {
    Ok(CgroupValues::new(resources, limits, false)?.spec_limits())
}

/// `docker/resources`: cpu and memory limits from the task's resources;
/// resource updates through the engine's update call and usage from its
/// stats.
pub struct DockerResourcesIsolator {
    engine: Arc<Engine>,
}

impl DockerResourcesIsolator {
    /// An isolator applying updates and reading usage through `engine`.
    pub fn new(engine: Arc<Engine>) -> Self {
        DockerResourcesIsolator { engine }
    }
}

#[async_trait]
impl Isolator for DockerResourcesIsolator {
    fn name(&self) -> &'static str {
        "docker/resources"
    }

    async fn prepare(&self, config: &ContainerConfig, spec: &mut ContainerSpec) -> Result<(), ContainerizerError> {
        spec.limits = docker_limits(&config.resources, &config.limits)?;
        Ok(())
    }

    async fn update(
        &self,
        spec: &ContainerSpec,
        resources: &Resources,
        limits: &ResourceLimits,
    ) -> Result<(), ContainerizerError> {
        let name = container_name(&spec.container_id);
        let new = docker_limits(resources, limits)?;
        let current = self
            .engine
            .call("inspect container", |d| d.inspect_container(&name, None::<bollard::query_parameters::InspectContainerOptions>))
            .await
            .map_err(|e| e.into_error(&format!("update container {name}")))?
            .host_config
            .unwrap_or_default();
        let mut body = ContainerUpdateBody {
            cpu_shares: new.cpu_shares.map(|s| s as i64),
            // 0 removes a quota the container had.
            cpu_quota: Some(new.cpu_quota_us.unwrap_or(0)),
            cpu_period: Some(new.cpu_period_us.unwrap_or(CPU_CFS_PERIOD_US) as i64),
            memory_reservation: new.memory_reservation_bytes,
            ..Default::default()
        };
        // As Mesos (and the rust backend): the hard memory limit is only ever
        // raised; lowering it under a running container could OOM-kill it.
        // The reservation (soft limit) follows the new resources both ways.
        let raise = new.memory_limit_bytes.filter(|m| current.memory.unwrap_or(0) <= 0 || *m > current.memory.unwrap_or(0));
        if let (Some(keep), None) = (new.memory_limit_bytes, raise) {
            tracing::debug!(container = %name, hard = keep, current = ?current.memory, "memory hard limit is only ever raised; keeping it");
            body.memory_reservation = body.memory_reservation.map(|r| r.min(current.memory.unwrap_or(r)));
        }
        if let Some(memory) = raise {
            body.memory = Some(memory);
            // The engine refuses a memory limit above the swap limit: keep
            // the container's swap allowance (docker's default is as much
            // swap as memory) on top of the new limit.
            let (old_mem, old_swap) = (current.memory.unwrap_or(0), current.memory_swap.unwrap_or(0));
            body.memory_swap = Some(match old_swap {
                -1 => -1,
                swap if swap > 0 && old_mem > 0 => memory + (swap - old_mem).max(0),
                _ => 2 * memory,
            });
        }
        tracing::info!(container = %name, ?new, "updating docker container resources");
        self.engine
            .call("update container", |d| d.update_container(&name, body))
            .await
            .map_err(|e| e.into_error(&format!("update container {name}")))
    }

    async fn usage(&self, spec: &ContainerSpec, usage: &mut Usage) -> Result<(), ContainerizerError> {
        let name = container_name(&spec.container_id);
        let what = format!("stats of container {name}");
        let options = StatsOptionsBuilder::new().stream(false).one_shot(true).build();
        let stats = self
            .engine
            .call("stats", |d| async { d.stats(&name, Some(options)).next().await.transpose() })
            .await
            .map_err(|e| e.into_error(&what))?
            .ok_or_else(|| ContainerizerError::Docker(format!("{what}: no answer")))?;
        let host_config = self
            .engine
            .call("inspect container", |d| d.inspect_container(&name, None::<bollard::query_parameters::InspectContainerOptions>))
            .await
            .map_err(|e| e.into_error(&what))?
            .host_config
            .unwrap_or_default();
        usage.timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let ns = |v: u64| v as f64 / 1e9;
        if let Some(cpu) = stats.cpu_stats {
            if let Some(u) = cpu.cpu_usage {
                usage.cpus_user_time_secs = u.usage_in_usermode.map(ns);
                usage.cpus_system_time_secs = u.usage_in_kernelmode.map(ns);
            }
            if let Some(t) = cpu.throttling_data {
                usage.cpus_nr_periods = t.periods.map(|v| v as u32);
                usage.cpus_nr_throttled = t.throttled_periods.map(|v| v as u32);
                usage.cpus_throttled_time_secs = t.throttled_time.map(ns);
            }
        }
        usage.cpus_limit = match (host_config.cpu_quota, host_config.cpu_period, host_config.cpu_shares) {
            (Some(q), period, _) if q > 0 => Some(q as f64 / period.filter(|p| *p > 0).unwrap_or(CPU_CFS_PERIOD_US as i64) as f64),
            (_, _, Some(shares)) if shares > 0 => Some(shares as f64 / CPU_SHARES_PER_CPU),
            _ => None,
        };
        if let Some(mem) = stats.memory_stats {
            let detail = mem.stats.unwrap_or_default();
            // cgroups v1 names first, v2 second.
            let pick = |keys: &[&str]| keys.iter().find_map(|k| detail.get(*k).copied());
            usage.mem_total_bytes = mem.usage;
            usage.mem_rss_bytes = pick(&["total_rss", "rss", "anon"]);
            usage.mem_cache_bytes = pick(&["total_cache", "cache", "file"]);
            usage.mem_limit_bytes = host_config.memory.filter(|m| *m > 0).map(|m| m as u64).or(mem.limit);
        }
        usage.mem_soft_limit_bytes = host_config.memory_reservation.filter(|m| *m > 0).map(|m| m as u64);
        if let Some(pids) = stats.pids_stats {
            usage.processes = pids.current.map(|v| v as u32);
        }
        if let Some(networks) = stats.networks.filter(|n| !n.is_empty()) {
            let sum = |f: fn(&bollard::models::ContainerNetworkStats) -> Option<u64>| {
                Some(networks.values().filter_map(f).sum::<u64>())
            };
            usage.net_rx_bytes = sum(|n| n.rx_bytes);
            usage.net_tx_bytes = sum(|n| n.tx_bytes);
            usage.net_rx_packets = sum(|n| n.rx_packets);
            usage.net_tx_packets = sum(|n| n.tx_packets);
        }
        Ok(())
    }
}

/// What `docker/runtime` worked out for each container, until the backend
/// renders it: `DockerInfo` and the command in docker's own terms.
#[derive(Default)]
pub(crate) struct PendingRuns {
    runs: Mutex<HashMap<String, DockerRun>>,
}

impl PendingRuns {
    pub(crate) fn insert(&self, container_id: &str, run: DockerRun) {
        self.runs.lock().unwrap_or_else(|p| p.into_inner()).insert(container_id.to_string(), run);
    }

    pub(crate) fn take(&self, container_id: &str) -> Option<DockerRun> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner()).remove(container_id)
    }
}

/// `docker/runtime`: provisions the image and fills in the command,
/// environment, sandbox mount, volumes and `DockerInfo` options of a docker
/// task. Resolving a non-shell command needs the image's entrypoint, so this
/// is where the image is provisioned.
pub struct DockerRuntimeIsolator {
    engine: Arc<Engine>,
    images: ImageProvider,
    pending: Arc<PendingRuns>,
}

impl DockerRuntimeIsolator {
    /// An isolator getting images into `engine` through `images`.
    pub(crate) fn new(engine: Arc<Engine>, images: ImageProvider, pending: Arc<PendingRuns>) -> Self {
        DockerRuntimeIsolator { engine, images, pending }
    }
}

#[async_trait]
impl Isolator for DockerRuntimeIsolator {
    fn name(&self) -> &'static str {
        "docker/runtime"
    }

    async fn prepare(&self, config: &ContainerConfig, spec: &mut ContainerSpec) -> Result<(), ContainerizerError> {
        let invalid = |msg: String| ContainerizerError::InvalidSpec(format!("docker: {msg}"));
        let image = config.image.as_deref().ok_or_else(|| invalid("a docker container needs an image".into()))?;
        let image = ImageRef::parse(image)?;
        let options = config.docker.clone().unwrap_or_default();
        // Everything that can be checked without the engine is checked
        // before a pull.
        validate_options(&options, &config.resources.ports)?;
        validate_parameters(&options.parameters)?;
        let command = &config.command;
        if command.shell && command.value.as_deref().is_none_or(str::is_empty) {
            return Err(invalid("a shell command needs a value".into()));
        }
        let mounts = volume_mounts(config)?;
        if let Some(user) = &command.user {
            // As Mesos: the sandbox belongs to the task's user (a host user);
            // one that does not exist fails the launch before any pull.
            let resolved = crate::user::resolve_user(user, &[PathBuf::from("/")])
                .map_err(|_| invalid(format!("the task's user '{user}' (the sandbox's owner) does not exist on this host")))?;
            let (sandbox, stdout, stderr) = (config.sandbox.clone(), spec.stdout.clone(), spec.stderr.clone());
            tokio::task::spawn_blocking(move || crate::user::chown_sandbox(&sandbox, &[&stdout, &stderr], resolved.uid, resolved.gid))
                .await
                .map_err(|e| ContainerizerError::Other(format!("chown sandbox task: {e}")))??;
        }

        let inspect = self.images.ensure(&self.engine, &image, options.force_pull_image).await?;
        let image_config = inspect.config.unwrap_or_default();
        let (entrypoint, cmd) = if command.shell {
            // Mesos: `--entrypoint /bin/sh` and `-c <value>`; arguments are ignored.
            (Some(vec!["/bin/sh".to_string()]), Some(vec!["-c".to_string(), command.value.clone().unwrap_or_default()]))
        } else {
            // Mesos: `[value] + arguments` replace the image's Cmd and keep
            // its Entrypoint; with neither, the image's defaults run.
            let task: Vec<String> = command.value.iter().cloned().chain(command.arguments.iter().cloned()).collect();
            (None, (!task.is_empty()).then_some(task))
        };
        let argv: Vec<String> = entrypoint
            .clone()
            .or(image_config.entrypoint.clone())
            .unwrap_or_default()
            .into_iter()
            .chain(cmd.clone().or(image_config.cmd.clone()).unwrap_or_default())
            .collect();
        let entrypoint_param = options.parameters.iter().any(|(k, _)| k == "entrypoint");
        if argv.is_empty() && !entrypoint_param {
            return Err(invalid(format!(
                "image '{}' has no entrypoint or cmd and the task gave no command",
                image.reference
            )));
        }
        spec.args = argv;
        spec.image = Some(image.reference.clone());
        spec.env.extend(command.env.iter().cloned());
        spec.env.push(("MESOS_SANDBOX".into(), SANDBOX_MOUNT_POINT.into()));
        spec.env.push(("MESOS_CONTAINER_NAME".into(), container_name(&config.container_id)));
        spec.mounts.push(Mount { source: config.sandbox.clone(), target: SANDBOX_MOUNT_POINT.into(), read_only: false });
        spec.mounts.extend(mounts);
        // Empty: the image's WorkingDir, as `docker run` without `-w`.
        spec.working_dir = String::new();
        // Mesos's docker containerizer runs the image's user: `CommandInfo.user`
        // only decides who owns the sandbox, and a host user name need not
        // exist inside the image.
        spec.user = None;
        self.pending.insert(&config.container_id, DockerRun { options, entrypoint, cmd });
        Ok(())
    }

    async fn cleanup(&self, container_id: &str) -> Result<(), ContainerizerError> {
        self.pending.take(container_id);
        Ok(())
    }
}

/// Mesos's checks of `DockerInfo` (reference D17): port mappings only on
/// bridge and user networks, each host port inside the task's `ports`.
fn validate_options(options: &DockerOptions, ports: &[u16]) -> Result<(), ContainerizerError> {
    let invalid = |msg: String| ContainerizerError::InvalidSpec(format!("docker: {msg}"));
    if !options.port_mappings.is_empty() && !matches!(options.network, DockerNetwork::Bridge | DockerNetwork::User(_)) {
        return Err(invalid("port mappings are only supported for bridge and user-defined networks".into()));
    }
    for m in &options.port_mappings {
        if !ports.contains(&m.host_port) {
            return Err(invalid(format!("port [{}] not included in resources", m.host_port)));
        }
        if !matches!(m.protocol.as_str(), "" | "tcp" | "udp" | "sctp") {
            return Err(invalid(format!("unknown port mapping protocol '{}'", m.protocol)));
        }
    }
    if let DockerNetwork::User(name) = &options.network {
        if name.is_empty() {
            return Err(invalid("a USER network needs a name".into()));
        }
    }
    Ok(())
}

/// Bind mounts for `ContainerInfo.volumes`, with Mesos's rules: a relative
/// container path is under the sandbox mount point, a relative host path
/// (or a `SANDBOX_PATH`) is under the sandbox and may not leave it.
fn volume_mounts(config: &ContainerConfig) -> Result<Vec<Mount>, ContainerizerError> {
    let invalid = |msg: String| ContainerizerError::InvalidSpec(format!("docker: {msg}"));
    let mut out = Vec::new();
    for v in &config.volumes {
        if v.container_path.is_empty() {
            return Err(invalid("a volume needs a container path".into()));
        }
        let target = if v.container_path.starts_with('/') {
            v.container_path.clone()
        } else {
            within(Path::new(SANDBOX_MOUNT_POINT), &v.container_path)
                .map_err(|e| invalid(format!("volume container path: {e}")))?
                .display()
                .to_string()
        };
        let source = match &v.source {
            VolumeSource::HostPath(p) if p.is_absolute() => p.clone(),
            VolumeSource::HostPath(p) => within(&config.sandbox, &p.display().to_string())
                .map_err(|e| invalid(format!("volume host path: {e}")))?,
            VolumeSource::SandboxPath(p) => {
                let path = within(&config.sandbox, p).map_err(|e| invalid(format!("volume sandbox path: {e}")))?;
                // Mesos creates a SANDBOX_PATH source that is not there yet.
                std::fs::create_dir_all(&path).map_err(ContainerizerError::io("create sandbox volume", &path))?;
                path
            }
            VolumeSource::Image(image) => {
                return Err(invalid(format!(
                    "image volumes ('{image}') are not supported by the docker containerizer"
                )))
            }
        };
        out.push(Mount { source, target, read_only: v.read_only });
    }
    Ok(out)
}

/// `base/relative`, refusing absolute paths and `..`.
fn within(base: &Path, relative: &str) -> Result<PathBuf, String> {
    let rel = Path::new(relative);
    if rel.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(format!("'{relative}' must be relative and stay inside"));
    }
    Ok(base.join(rel))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PortMapping, Volume};

    #[test]
    fn limits_follow_requests_and_limits() {
        let r = Resources { cpus: Some(0.5), mem_mb: Some(64.0), ..Default::default() };
        let l = docker_limits(&r, &ResourceLimits::default()).unwrap();
        assert_eq!((l.cpu_shares, l.cpu_quota_us), (Some(512), None));
        assert_eq!((l.memory_limit_bytes, l.memory_reservation_bytes), (Some(64 << 20), Some(64 << 20)));
        let l = docker_limits(&r, &ResourceLimits { cpus: Some(1.5), mem_mb: Some(128.0) }).unwrap();
        assert_eq!((l.cpu_quota_us, l.cpu_period_us), (Some(150_000), Some(100_000)));
        assert_eq!((l.memory_limit_bytes, l.memory_reservation_bytes), (Some(128 << 20), Some(64 << 20)));
        let l = docker_limits(&r, &ResourceLimits { cpus: Some(f64::INFINITY), mem_mb: Some(f64::INFINITY) }).unwrap();
        assert_eq!((l.cpu_quota_us, l.memory_limit_bytes, l.memory_reservation_bytes), (None, None, Some(64 << 20)));
        let l = docker_limits(&r, &ResourceLimits { cpus: Some(0.001), mem_mb: None }).unwrap();
        assert_eq!(l.cpu_quota_us, Some(1_000));
        assert!(docker_limits(&Resources { cpus: Some(f64::NAN), ..Default::default() }, &ResourceLimits::default()).is_err());
    }

    #[test]
    fn port_mappings_need_a_bridge_and_a_resource() {
        let mapping = PortMapping { host_port: 31000, container_port: 80, protocol: "tcp".into() };
        let mut o = DockerOptions { port_mappings: vec![mapping], ..Default::default() };
        assert!(validate_options(&o, &[31000]).unwrap_err().to_string().contains("bridge"));
        o.network = DockerNetwork::Bridge;
        assert!(validate_options(&o, &[31000]).is_ok());
        assert!(validate_options(&o, &[31001]).unwrap_err().to_string().contains("port [31000] not included in resources"));
    }

    #[test]
    fn volumes_resolve_against_the_sandbox() {
        let sandbox = tempfile::tempdir().unwrap();
        let config = ContainerConfig {
            sandbox: sandbox.path().to_path_buf(),
            volumes: vec![
                Volume { container_path: "/data".into(), source: VolumeSource::HostPath("/srv".into()), read_only: true },
                Volume { container_path: "cache".into(), source: VolumeSource::SandboxPath("c".into()), read_only: false },
                Volume { container_path: "/rel".into(), source: VolumeSource::HostPath("sub".into()), read_only: false },
            ],
            ..Default::default()
        };
        let m = volume_mounts(&config).unwrap();
        assert_eq!((m[0].source.as_path(), m[0].target.as_str(), m[0].read_only), (Path::new("/srv"), "/data", true));
        assert_eq!(m[1].source, sandbox.path().join("c"));
        assert_eq!(m[1].target, "/mnt/mesos/sandbox/cache");
        assert!(sandbox.path().join("c").is_dir());
        assert_eq!(m[2].source, sandbox.path().join("sub"));
        let escape = ContainerConfig {
            volumes: vec![Volume { container_path: "/x".into(), source: VolumeSource::SandboxPath("../x".into()), read_only: false }],
            ..config
        };
        assert!(volume_mounts(&escape).is_err());
    }
}
