//! Translation of a Mesos `TaskInfo` into the containerizer's
//! `ContainerConfig`: resources and limits, volumes, Linux options
//! (capabilities, rlimits, seccomp, pid sharing) and Docker options.
//!
//! Everything here is pure so that it can be tested without containers. A
//! task asking for something the containerizer cannot honour is refused
//! here with a message naming the offending field, never silently dropped.

use mezzo_containerizer::{
    Command, ContainerConfig, ContainerType, DockerNetwork, DockerOptions, LinuxOptions, PortMapping, RLimit,
    ResourceLimits, Resources, Volume, VolumeSource,
};
use mezzo_proto::mesos::v1::{
    capability_info, container_info, r_limit_info, volume, CapabilityInfo, ContainerInfo, FrameworkInfo, Resource,
    TaskInfo,
};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// Most host ports one task may hold (guards against a huge `ports` range).
const MAX_TASK_PORTS: usize = 65536;

/// Why a task cannot be turned into a container.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TranslateError(pub String);

fn bad(msg: impl Into<String>) -> TranslateError {
    TranslateError(msg.into())
}

/// Refuses a NUL byte in a string that reaches an exec or a runtime: it
/// cannot cross `execve` and once crashed the container's init. The master
/// refuses these too; this is the agent's own check, before anything runs.
fn no_nul(field: &str, value: &str) -> Result<(), TranslateError> {
    if value.contains('\0') {
        return Err(bad(format!("'{field}' must not contain NUL")));
    }
    Ok(())
}

/// Checks every string of the task that reaches the container for NUL.
fn check_strings(task: &TaskInfo) -> Result<(), TranslateError> {
    if let Some(cmd) = &task.command {
        if let Some(v) = &cmd.value {
            no_nul("command.value", v)?;
        }
        for (i, a) in cmd.arguments.iter().enumerate() {
            no_nul(&format!("command.arguments[{i}]"), a)?;
        }
        if let Some(u) = &cmd.user {
            no_nul("command.user", u)?;
        }
        for (i, v) in cmd.environment.iter().flat_map(|e| e.variables.iter()).enumerate() {
            no_nul(&format!("command.environment.variables[{i}].name"), &v.name)?;
            if let Some(value) = &v.value {
                no_nul(&format!("command.environment.variables[{i}].value"), value)?;
            }
        }
        for (i, u) in cmd.uris.iter().enumerate() {
            no_nul(&format!("command.uris[{i}].value"), &u.value)?;
        }
    }
    if let Some(ci) = &task.container {
        if let Some(h) = &ci.hostname {
            no_nul("container.hostname", h)?;
        }
        if let Some(d) = &ci.docker {
            no_nul("container.docker.image", &d.image)?;
            for (i, p) in d.parameters.iter().enumerate() {
                no_nul(&format!("container.docker.parameters[{i}].key"), &p.key)?;
                no_nul(&format!("container.docker.parameters[{i}].value"), &p.value)?;
            }
        }
        for (i, v) in ci.volumes.iter().enumerate() {
            no_nul(&format!("container.volumes[{i}].container_path"), &v.container_path)?;
            if let Some(h) = &v.host_path {
                no_nul(&format!("container.volumes[{i}].host_path"), h)?;
            }
        }
    }
    Ok(())
}

/// Sets each of `over`'s variables in `env`: a name already there takes
/// the new value in its place (a name twice in an environment would leave
/// which one a program sees to its libc), a new one goes at the end.
pub fn merge_env(env: &mut Vec<(String, String)>, over: Vec<(String, String)>) {
    for (name, value) in over {
        match env.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => env.push((name, value)),
        }
    }
}

/// The user a task runs as, as Mesos's `--switch_user` decides:
/// `CommandInfo.user`, else `FrameworkInfo.user`; `None` (the agent's own
/// user) when `switch_user` is off. A framework user of `root` is the
/// agent's own user already (the agent runs as root), so it stays `None`.
pub fn task_user(task: &TaskInfo, framework: &FrameworkInfo, switch_user: bool) -> Option<String> {
    if !switch_user {
        return None;
    }
    if let Some(user) = task.command.as_ref().and_then(|c| c.user.clone()) {
        return Some(user);
    }
    Some(framework.user.clone()).filter(|u| !u.is_empty() && u != "root")
}

/// Builds the `ContainerConfig` for a command task.
pub fn container_config(
    task: &TaskInfo,
    container_id: &str,
    sandbox: &Path,
    labels: BTreeMap<String, String>,
) -> Result<ContainerConfig, TranslateError> {
    check_strings(task)?;
    let command = task.command.as_ref().ok_or_else(|| bad("task has no command"))?;
    let env = command
        .environment
        .as_ref()
        .map(|e| e.variables.iter().map(|v| (v.name.clone(), v.value.clone().unwrap_or_default())).collect())
        .unwrap_or_default();
    let resources = resources(&task.resources)?;
    let limits = limits(task, &resources)?;
    let (container_type, image, hostname, volumes, linux, docker) = match &task.container {
        None => (ContainerType::Mesos, None, None, Vec::new(), LinuxOptions::default(), None),
        Some(ci) => {
            let (container_type, image, docker) = match ci.r#type() {
                container_info::Type::Mesos => (ContainerType::Mesos, mesos_image(ci)?, None),
                container_info::Type::Docker => {
                    let info = ci.docker.as_ref().ok_or_else(|| bad("DOCKER container requires ContainerInfo.docker"))?;
                    if info.image.is_empty() {
                        return Err(bad("DOCKER container requires ContainerInfo.docker.image"));
                    }
                    (ContainerType::Docker, Some(info.image.clone()), Some(docker_options(ci, info, &resources)?))
                }
            };
            (container_type, image, ci.hostname.clone(), volumes(&ci.volumes)?, linux_options(ci)?, docker)
        }
    };
    Ok(ContainerConfig {
        container_id: container_id.to_string(),
        container_type,
        image,
        command: Command {
            shell: command.shell.unwrap_or(true),
            value: command.value.clone(),
            arguments: command.arguments.clone(),
            env,
            user: command.user.clone(),
        },
        resources,
        sandbox: sandbox.to_path_buf(),
        hostname,
        labels,
        limits,
        volumes,
        linux,
        docker,
    })
}

fn mesos_image(ci: &ContainerInfo) -> Result<Option<String>, TranslateError> {
    let Some(image) = ci.mesos.as_ref().and_then(|m| m.image.as_ref()) else { return Ok(None) };
    match &image.docker {
        Some(d) if !d.name.is_empty() => Ok(Some(d.name.clone())),
        Some(_) => Err(bad("ContainerInfo.mesos.image.docker.name must not be empty")),
        None if image.appc.is_some() => Err(bad("APPC images are not supported; use a DOCKER image")),
        None => Err(bad("ContainerInfo.mesos.image has no docker image")),
    }
}

/// The task's scalar resources and its host ports (ranges expanded, in offer order).
pub fn resources(task_resources: &[Resource]) -> Result<Resources, TranslateError> {
    let scalar = |name: &str| crate::resources::scalar_of(task_resources, name);
    let mut ports: Vec<u16> = Vec::new();
    for r in task_resources.iter().filter(|r| r.name == "ports") {
        let Some(ranges) = &r.ranges else {
            return Err(bad("the 'ports' resource must be of type RANGES"));
        };
        for range in &ranges.range {
            if range.begin > range.end || range.end > u16::MAX as u64 {
                return Err(bad(format!("invalid port range [{}-{}]", range.begin, range.end)));
            }
            if ports.len() + (range.end - range.begin + 1) as usize > MAX_TASK_PORTS {
                return Err(bad("too many ports in the task's 'ports' resource"));
            }
            ports.extend((range.begin..=range.end).map(|p| p as u16));
        }
    }
    Ok(Resources { cpus: scalar("cpus"), mem_mb: scalar("mem"), disk_mb: scalar("disk"), ports })
}

/// `TaskInfo.limits`: only `cpus` and `mem`, each at least the request;
/// an infinite value means no limit.
pub fn limits(task: &TaskInfo, requested: &Resources) -> Result<ResourceLimits, TranslateError> {
    let mut out = ResourceLimits::default();
    for (name, value) in &task.limits {
        let v = value.value;
        if v.is_nan() || v < 0.0 {
            return Err(bad(format!("resource limit of '{name}' must be a non-negative number")));
        }
        let (slot, request) = match name.as_str() {
            "cpus" => (&mut out.cpus, requested.cpus),
            "mem" => (&mut out.mem_mb, requested.mem_mb),
            other => return Err(bad(format!("resource limits are only supported for 'cpus' and 'mem', not '{other}'"))),
        };
        if let Some(request) = request {
            if v < request {
                return Err(bad(format!("resource limit of '{name}' ({v}) is below its request ({request})")));
            }
        }
        *slot = Some(if v.is_infinite() { f64::INFINITY } else { v });
    }
    Ok(out)
}

/// A relative path that stays inside the directory it is relative to.
fn stays_inside(path: &str) -> bool {
    let p = Path::new(path);
    !path.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// `ContainerInfo.volumes`.
pub fn volumes(vols: &[mezzo_proto::mesos::v1::Volume]) -> Result<Vec<Volume>, TranslateError> {
    let mut out = Vec::with_capacity(vols.len());
    for v in vols {
        if v.container_path.is_empty() {
            return Err(bad("volume has an empty container_path"));
        }
        if Path::new(&v.container_path).components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(bad(format!("volume container_path '{}' must not contain '..'", v.container_path)));
        }
        let read_only = v.mode() == volume::Mode::Ro;
        let source = if let Some(src) = &v.source {
            match src.r#type() {
                volume::source::Type::HostPath => {
                    let hp = src.host_path.as_ref().ok_or_else(|| bad("HOST_PATH volume source without 'host_path'"))?;
                    host_path(&hp.path)?
                }
                volume::source::Type::SandboxPath => {
                    let sp = src
                        .sandbox_path
                        .as_ref()
                        .ok_or_else(|| bad("SANDBOX_PATH volume source without 'sandbox_path'"))?;
                    if sp.r#type() == volume::source::sandbox_path::Type::Parent {
                        return Err(bad("SANDBOX_PATH volumes of type PARENT need a parent container (task groups are not supported)"));
                    }
                    if !stays_inside(&sp.path) {
                        return Err(bad(format!("sandbox path '{}' must be relative and stay inside the sandbox", sp.path)));
                    }
                    VolumeSource::SandboxPath(sp.path.clone())
                }
                other => {
                    return Err(bad(format!("volume source type {} is not supported", other.as_str_name())));
                }
            }
        } else if let Some(image) = &v.image {
            match image.docker.as_ref().map(|d| d.name.clone()).filter(|n| !n.is_empty()) {
                Some(name) => VolumeSource::Image(name),
                None => return Err(bad("image volumes need a DOCKER image with a name")),
            }
        } else if let Some(hp) = &v.host_path {
            // Mesos's legacy field: absolute is a host path, relative is in the sandbox.
            if Path::new(hp).is_absolute() {
                host_path(hp)?
            } else if stays_inside(hp) {
                VolumeSource::SandboxPath(hp.clone())
            } else {
                return Err(bad(format!("volume host_path '{hp}' must be absolute or stay inside the sandbox")));
            }
        } else {
            return Err(bad(format!("volume '{}' has no host_path, image or source", v.container_path)));
        };
        out.push(Volume { container_path: v.container_path.clone(), source, read_only });
    }
    Ok(out)
}

fn host_path(path: &str) -> Result<VolumeSource, TranslateError> {
    if !Path::new(path).is_absolute() {
        return Err(bad(format!("host path '{path}' must be absolute")));
    }
    Ok(VolumeSource::HostPath(PathBuf::from(path)))
}

/// `CAP_*` names of a `CapabilityInfo`.
fn capability_names(info: &CapabilityInfo) -> Result<Vec<String>, TranslateError> {
    let mut out = Vec::with_capacity(info.capabilities.len());
    for &c in &info.capabilities {
        match capability_info::Capability::try_from(c) {
            Ok(capability_info::Capability::Unknown) | Err(_) => {
                return Err(bad(format!("unknown capability {c} in CapabilityInfo")));
            }
            Ok(cap) => out.push(format!("CAP_{}", cap.as_str_name())),
        }
    }
    Ok(out)
}

/// `LinuxInfo` and `RLimitInfo`.
pub fn linux_options(ci: &ContainerInfo) -> Result<LinuxOptions, TranslateError> {
    let mut out = LinuxOptions::default();
    if let Some(li) = &ci.linux_info {
        #[allow(deprecated)] // capability_info is Mesos's legacy name for the effective set
        let legacy = li.capability_info.as_ref();
        if legacy.is_some() && li.effective_capabilities.is_some() {
            return Err(bad("LinuxInfo must not set both capability_info and effective_capabilities"));
        }
        if let Some(effective) = li.effective_capabilities.as_ref().or(legacy) {
            out.effective_capabilities = Some(capability_names(effective)?);
        }
        if let Some(bounding) = &li.bounding_capabilities {
            out.bounding_capabilities = Some(capability_names(bounding)?);
        }
        out.share_pid_namespace = li.share_pid_namespace.unwrap_or(false);
        if let Some(seccomp) = &li.seccomp {
            let unconfined = seccomp.unconfined.unwrap_or(false);
            if unconfined && seccomp.profile_name.is_some() {
                return Err(bad("SeccompInfo must not set both 'unconfined' and 'profile_name'"));
            }
            out.seccomp_unconfined = unconfined;
        }
    }
    if let Some(rl) = &ci.rlimit_info {
        for limit in &rl.rlimits {
            let kind = match r_limit_info::r_limit::Type::try_from(limit.r#type.unwrap_or(0)) {
                Ok(r_limit_info::r_limit::Type::Unknown) | Err(_) => {
                    return Err(bad(format!("unknown rlimit type {}", limit.r#type.unwrap_or(0))));
                }
                Ok(t) => t.as_str_name().trim_start_matches("RLMT_").to_string(),
            };
            match (limit.soft, limit.hard) {
                (Some(soft), Some(hard)) if soft > hard => {
                    return Err(bad(format!("rlimit {kind}: soft limit {soft} is above the hard limit {hard}")));
                }
                (Some(_), None) | (None, Some(_)) => {
                    return Err(bad(format!("rlimit {kind}: set both soft and hard, or neither for unlimited")));
                }
                _ => {}
            }
            if out.rlimits.iter().any(|r: &RLimit| r.kind == kind) {
                return Err(bad(format!("rlimit {kind} is given more than once")));
            }
            out.rlimits.push(RLimit { kind, soft: limit.soft, hard: limit.hard });
        }
    }
    Ok(out)
}

/// `ContainerInfo.docker` (and the USER network's name from `network_infos`).
pub fn docker_options(
    ci: &ContainerInfo,
    info: &container_info::DockerInfo,
    resources: &Resources,
) -> Result<DockerOptions, TranslateError> {
    use container_info::docker_info::Network;
    let network = match info.network() {
        Network::Host => DockerNetwork::Host,
        Network::Bridge => DockerNetwork::Bridge,
        Network::None => DockerNetwork::None,
        Network::User => {
            let name = ci.network_infos.first().and_then(|n| n.name.clone()).filter(|n| !n.is_empty());
            DockerNetwork::User(name.ok_or_else(|| bad("USER network requires ContainerInfo.network_infos[0].name"))?)
        }
    };
    let mut port_mappings = Vec::with_capacity(info.port_mappings.len());
    for pm in &info.port_mappings {
        if matches!(network, DockerNetwork::Host | DockerNetwork::None) {
            return Err(bad("port mappings are only supported for BRIDGE and USER networks"));
        }
        let host_port = u16::try_from(pm.host_port).map_err(|_| bad(format!("host port {} is out of range", pm.host_port)))?;
        let container_port = u16::try_from(pm.container_port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad(format!("container port {} is out of range", pm.container_port)))?;
        if !resources.ports.contains(&host_port) {
            return Err(bad(format!("host port {host_port} of a port mapping is not in the task's 'ports' resources")));
        }
        let protocol = pm.protocol.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "tcp".to_string()).to_lowercase();
        if protocol != "tcp" && protocol != "udp" {
            return Err(bad(format!("port mapping protocol '{protocol}' is not tcp or udp")));
        }
        port_mappings.push(PortMapping { host_port, container_port, protocol });
    }
    Ok(DockerOptions {
        network,
        port_mappings,
        privileged: info.privileged.unwrap_or(false),
        parameters: info.parameters.iter().map(|p| (p.key.clone(), p.value.clone())).collect(),
        force_pull_image: info.force_pull_image.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{ranges, scalar};
    use mezzo_proto::mesos::v1::{
        image, value, CommandInfo, Image, LinuxInfo, NetworkInfo, Parameter, RLimitInfo, SeccompInfo, TaskId,
    };

    fn task(container: Option<ContainerInfo>) -> TaskInfo {
        TaskInfo {
            name: "t".into(),
            task_id: TaskId { value: "t".into() },
            resources: vec![scalar("cpus", 0.5), scalar("mem", 64.0), ranges("ports", &[(31000, 31002), (31010, 31010)])],
            command: Some(CommandInfo { value: Some("true".into()), ..Default::default() }),
            container,
            ..Default::default()
        }
    }

    fn translate(t: &TaskInfo) -> Result<ContainerConfig, TranslateError> {
        container_config(t, "cid", Path::new("/sandbox"), BTreeMap::new())
    }

    fn mesos(f: impl FnOnce(&mut ContainerInfo)) -> ContainerInfo {
        let mut ci = ContainerInfo { r#type: container_info::Type::Mesos as i32, ..Default::default() };
        f(&mut ci);
        ci
    }

    fn vol(container_path: &str, mode: volume::Mode) -> mezzo_proto::mesos::v1::Volume {
        mezzo_proto::mesos::v1::Volume { container_path: container_path.into(), mode: mode as i32, ..Default::default() }
    }

    #[test]
    fn merge_env_overrides_in_place_and_appends_new_names() {
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        let mut env = vec![pair("PATH", "/bin"), pair("A", "1")];
        merge_env(&mut env, vec![pair("A", "2"), pair("B", "3"), pair("B", "4")]);
        assert_eq!(env, vec![pair("PATH", "/bin"), pair("A", "2"), pair("B", "4")]);
    }

    #[test]
    fn switch_user_picks_the_command_user_then_the_framework_user() {
        let fw = |user: &str| FrameworkInfo { user: user.into(), name: "f".into(), ..Default::default() };
        let mut t = task(None);
        assert_eq!(task_user(&t, &fw("nobody"), true).as_deref(), Some("nobody"));
        assert_eq!(task_user(&t, &fw("root"), true), None);
        assert_eq!(task_user(&t, &fw(""), true), None);
        t.command.as_mut().unwrap().user = Some("daemon".into());
        assert_eq!(task_user(&t, &fw("nobody"), true).as_deref(), Some("daemon"));
        // --switch_user=false: the agent's own user, whatever the task asks.
        assert_eq!(task_user(&t, &fw("nobody"), false), None);
    }

    #[test]
    fn nul_in_exec_bound_strings_is_refused_naming_the_field() {
        use mezzo_proto::mesos::v1::{environment, Environment};
        let mut t = task(None);
        t.command.as_mut().unwrap().environment = Some(Environment {
            variables: vec![environment::Variable { name: "X".into(), value: Some("a\0b".into()), ..Default::default() }],
        });
        let e = translate(&t).unwrap_err();
        assert!(e.0.contains("'command.environment.variables[0].value'"), "{e}");
        let mut t = task(None);
        t.command.as_mut().unwrap().arguments = vec!["a".into(), "\0".into()];
        assert!(translate(&t).unwrap_err().0.contains("'command.arguments[1]'"));
        let mut t = task(None);
        t.command.as_mut().unwrap().value = Some("true\0".into());
        assert!(translate(&t).unwrap_err().0.contains("'command.value'"));
        let mut t = task(None);
        t.command.as_mut().unwrap().user = Some("root\0".into());
        assert!(translate(&t).unwrap_err().0.contains("'command.user'"));
        let t = task(Some(mesos(|ci| ci.hostname = Some("h\0".into()))));
        assert!(translate(&t).unwrap_err().0.contains("'container.hostname'"));
    }

    #[test]
    fn ports_are_expanded_in_offer_order() {
        let c = translate(&task(None)).unwrap();
        assert_eq!(c.resources.ports, vec![31000, 31001, 31002, 31010]);
        assert_eq!(c.resources.cpus, Some(0.5));
        assert_eq!(c.resources.mem_mb, Some(64.0));
        assert_eq!(c.container_type, ContainerType::Mesos);
    }

    #[test]
    fn ports_out_of_range_are_refused() {
        let mut t = task(None);
        t.resources.push(ranges("ports", &[(70000, 70001)]));
        assert!(translate(&t).unwrap_err().0.contains("invalid port range"));
    }

    #[test]
    fn limits_map_cpus_and_mem_and_infinity() {
        let mut t = task(None);
        t.limits.insert("cpus".into(), value::Scalar { value: 2.0 });
        t.limits.insert("mem".into(), value::Scalar { value: f64::INFINITY });
        let c = translate(&t).unwrap();
        assert_eq!(c.limits.cpus, Some(2.0));
        assert_eq!(c.limits.mem_mb, Some(f64::INFINITY));
    }

    #[test]
    fn limits_below_request_or_unknown_are_refused() {
        let mut t = task(None);
        t.limits.insert("mem".into(), value::Scalar { value: 32.0 });
        assert!(translate(&t).unwrap_err().0.contains("below its request"));
        let mut t = task(None);
        t.limits.insert("disk".into(), value::Scalar { value: 32.0 });
        assert!(translate(&t).unwrap_err().0.contains("'disk'"));
    }

    #[test]
    fn volumes_host_sandbox_image_and_legacy() {
        let mut host = vol("/data", volume::Mode::Ro);
        host.source = Some(volume::Source {
            r#type: Some(volume::source::Type::HostPath as i32),
            host_path: Some(volume::source::HostPath { path: "/srv/data".into(), mount_propagation: None }),
            ..Default::default()
        });
        let mut sandbox = vol("scratch", volume::Mode::Rw);
        sandbox.source = Some(volume::Source {
            r#type: Some(volume::source::Type::SandboxPath as i32),
            sandbox_path: Some(volume::source::SandboxPath { r#type: Some(1), path: "work/dir".into() }),
            ..Default::default()
        });
        let mut img = vol("/opt/tools", volume::Mode::Ro);
        img.image = Some(Image {
            r#type: image::Type::Docker as i32,
            docker: Some(image::Docker { name: "busybox".into(), ..Default::default() }),
            ..Default::default()
        });
        let mut legacy_abs = vol("/etc/hostconf", volume::Mode::Rw);
        legacy_abs.host_path = Some("/etc".into());
        let mut legacy_rel = vol("/cache", volume::Mode::Rw);
        legacy_rel.host_path = Some("cache".into());
        let ci = mesos(|ci| ci.volumes = vec![host, sandbox, img, legacy_abs, legacy_rel]);
        let c = translate(&task(Some(ci))).unwrap();
        assert_eq!(
            c.volumes,
            vec![
                Volume { container_path: "/data".into(), source: VolumeSource::HostPath("/srv/data".into()), read_only: true },
                Volume { container_path: "scratch".into(), source: VolumeSource::SandboxPath("work/dir".into()), read_only: false },
                Volume { container_path: "/opt/tools".into(), source: VolumeSource::Image("busybox".into()), read_only: true },
                Volume { container_path: "/etc/hostconf".into(), source: VolumeSource::HostPath("/etc".into()), read_only: false },
                Volume { container_path: "/cache".into(), source: VolumeSource::SandboxPath("cache".into()), read_only: false },
            ]
        );
    }

    #[test]
    fn volumes_escaping_the_sandbox_are_refused() {
        let mut sandbox = vol("x", volume::Mode::Rw);
        sandbox.source = Some(volume::Source {
            r#type: Some(volume::source::Type::SandboxPath as i32),
            sandbox_path: Some(volume::source::SandboxPath { r#type: Some(1), path: "../../etc".into() }),
            ..Default::default()
        });
        let err = translate(&task(Some(mesos(|ci| ci.volumes = vec![sandbox])))).unwrap_err();
        assert!(err.0.contains("stay inside the sandbox"), "{err}");
        let mut legacy = vol("/x", volume::Mode::Rw);
        legacy.host_path = Some("../up".into());
        assert!(translate(&task(Some(mesos(|ci| ci.volumes = vec![legacy])))).is_err());
        let mut relative_host = vol("/x", volume::Mode::Rw);
        relative_host.source = Some(volume::Source {
            r#type: Some(volume::source::Type::HostPath as i32),
            host_path: Some(volume::source::HostPath { path: "relative".into(), mount_propagation: None }),
            ..Default::default()
        });
        assert!(translate(&task(Some(mesos(|ci| ci.volumes = vec![relative_host])))).unwrap_err().0.contains("absolute"));
        let empty = vol("/x", volume::Mode::Rw);
        assert!(translate(&task(Some(mesos(|ci| ci.volumes = vec![empty])))).is_err());
    }

    #[test]
    fn linux_info_capabilities_pid_and_seccomp() {
        use capability_info::Capability;
        let caps = |c: &[Capability]| CapabilityInfo { capabilities: c.iter().map(|c| *c as i32).collect() };
        let ci = mesos(|ci| {
            ci.linux_info = Some(LinuxInfo {
                effective_capabilities: Some(caps(&[Capability::NetBindService, Capability::Chown])),
                bounding_capabilities: Some(caps(&[Capability::NetBindService, Capability::Chown, Capability::Kill])),
                share_pid_namespace: Some(true),
                seccomp: Some(SeccompInfo { profile_name: None, unconfined: Some(true) }),
                ..Default::default()
            })
        });
        let c = translate(&task(Some(ci))).unwrap();
        assert_eq!(c.linux.effective_capabilities, Some(vec!["CAP_NET_BIND_SERVICE".to_string(), "CAP_CHOWN".to_string()]));
        assert_eq!(c.linux.bounding_capabilities.as_ref().map(Vec::len), Some(3));
        assert!(c.linux.share_pid_namespace);
        assert!(c.linux.seccomp_unconfined);
        // The legacy field is the effective set.
        #[allow(deprecated)]
        let ci = mesos(|ci| ci.linux_info = Some(LinuxInfo { capability_info: Some(caps(&[Capability::SysAdmin])), ..Default::default() }));
        let c = translate(&task(Some(ci))).unwrap();
        assert_eq!(c.linux.effective_capabilities, Some(vec!["CAP_SYS_ADMIN".to_string()]));
        assert!(!c.linux.seccomp_unconfined);
    }

    #[test]
    fn rlimits_are_translated_and_validated() {
        use r_limit_info::r_limit::Type;
        let rl = |t: Type, soft: Option<u64>, hard: Option<u64>| r_limit_info::RLimit { r#type: Some(t as i32), soft, hard };
        let ci = mesos(|ci| {
            ci.rlimit_info = Some(RLimitInfo { rlimits: vec![rl(Type::RlmtNofile, Some(64), Some(128)), rl(Type::RlmtCore, None, None)] })
        });
        let c = translate(&task(Some(ci))).unwrap();
        assert_eq!(
            c.linux.rlimits,
            vec![
                RLimit { kind: "NOFILE".into(), soft: Some(64), hard: Some(128) },
                RLimit { kind: "CORE".into(), soft: None, hard: None },
            ]
        );
        let ci = mesos(|ci| ci.rlimit_info = Some(RLimitInfo { rlimits: vec![rl(Type::RlmtNofile, Some(256), Some(128))] }));
        assert!(translate(&task(Some(ci))).unwrap_err().0.contains("above the hard limit"));
        let ci = mesos(|ci| ci.rlimit_info = Some(RLimitInfo { rlimits: vec![rl(Type::RlmtNofile, Some(1), None)] }));
        assert!(translate(&task(Some(ci))).is_err());
    }

    fn docker(f: impl FnOnce(&mut container_info::DockerInfo, &mut ContainerInfo)) -> ContainerInfo {
        let mut info = container_info::DockerInfo { image: "busybox".into(), ..Default::default() };
        let mut ci = ContainerInfo { r#type: container_info::Type::Docker as i32, ..Default::default() };
        f(&mut info, &mut ci);
        ci.docker = Some(info);
        ci
    }

    #[test]
    fn docker_bridge_with_port_mappings_and_parameters() {
        use container_info::docker_info::{Network, PortMapping as Pm};
        let ci = docker(|d, ci| {
            d.network = Some(Network::Bridge as i32);
            d.port_mappings = vec![Pm { host_port: 31001, container_port: 80, protocol: None }, Pm { host_port: 31010, container_port: 53, protocol: Some("UDP".into()) }];
            d.privileged = Some(true);
            d.force_pull_image = Some(true);
            d.parameters = vec![Parameter { key: "label".into(), value: "a=b".into() }, Parameter { key: "env".into(), value: "X=1".into() }];
            ci.hostname = Some("web".into());
        });
        let c = translate(&task(Some(ci))).unwrap();
        assert_eq!(c.container_type, ContainerType::Docker);
        assert_eq!(c.image.as_deref(), Some("busybox"));
        assert_eq!(c.hostname.as_deref(), Some("web"));
        let d = c.docker.unwrap();
        assert_eq!(d.network, DockerNetwork::Bridge);
        assert_eq!(
            d.port_mappings,
            vec![
                PortMapping { host_port: 31001, container_port: 80, protocol: "tcp".into() },
                PortMapping { host_port: 31010, container_port: 53, protocol: "udp".into() },
            ]
        );
        assert!(d.privileged && d.force_pull_image);
        assert_eq!(d.parameters, vec![("label".to_string(), "a=b".to_string()), ("env".to_string(), "X=1".to_string())]);
    }

    #[test]
    fn docker_port_mapping_outside_the_tasks_ports_is_refused() {
        use container_info::docker_info::{Network, PortMapping as Pm};
        let ci = docker(|d, _| {
            d.network = Some(Network::Bridge as i32);
            d.port_mappings = vec![Pm { host_port: 8080, container_port: 80, protocol: None }];
        });
        assert!(translate(&task(Some(ci))).unwrap_err().0.contains("8080"));
        let ci = docker(|d, _| d.port_mappings = vec![Pm { host_port: 31000, container_port: 80, protocol: None }]);
        assert!(translate(&task(Some(ci))).unwrap_err().0.contains("BRIDGE"), "HOST network refuses mappings");
    }

    #[test]
    fn docker_user_network_takes_its_name_from_network_infos() {
        use container_info::docker_info::Network;
        let ci = docker(|d, ci| {
            d.network = Some(Network::User as i32);
            ci.network_infos = vec![NetworkInfo { name: Some("mynet".into()), ..Default::default() }];
        });
        assert_eq!(translate(&task(Some(ci))).unwrap().docker.unwrap().network, DockerNetwork::User("mynet".into()));
        let ci = docker(|d, _| d.network = Some(Network::User as i32));
        assert!(translate(&task(Some(ci))).unwrap_err().0.contains("network_infos"));
        // Default network is HOST.
        let ci = docker(|_, _| {});
        assert_eq!(translate(&task(Some(ci))).unwrap().docker.unwrap().network, DockerNetwork::Host);
    }

    #[test]
    fn docker_without_image_is_refused() {
        let ci = docker(|d, _| d.image.clear());
        assert!(translate(&task(Some(ci))).unwrap_err().0.contains("docker.image"));
    }
}
