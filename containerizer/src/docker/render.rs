//! Renders a `ContainerSpec` and the docker-only part of a launch
//! (`DockerRun`: `DockerInfo` and the command in docker's terms) into a
//! Docker Engine create request (`POST /containers/create`), refusing what
//! the engine cannot honour.
//!
//! How it maps:
//! * `entrypoint`/`cmd` of the `DockerRun` become `Entrypoint`/`Cmd`; `None`
//!   keeps the image's (Mesos's non-shell rule keeps the image's
//!   Entrypoint and replaces its Cmd).
//! * `rootfs` must be `Host`: the image provides the root filesystem.
//! * The network comes from `DockerInfo.network` (HOST by default, as in
//!   Mesos); port mappings become `PortBindings` and `ExposedPorts`; a USER
//!   network is also named in `NetworkingConfig`.
//! * `cgroup_path` is not used: the engine places the container in its own
//!   cgroups; `limits` become `HostConfig` resource settings.
//! * `DockerInfo.parameters` are docker-run flags applied last, so they win
//!   over what Mesos derives; an unknown key fails the launch.

use crate::spec::Rootfs;
use crate::{ContainerSpec, ContainerizerError, DockerNetwork, DockerOptions};
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, Mount, MountTypeEnum, NetworkingConfig, PortBinding,
    ResourcesUlimits,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

use super::image::ImageRef;
use super::CONTAINER_ID_LABEL;

/// The docker-only part of a launch, worked out by `docker/runtime`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DockerRun {
    /// `ContainerInfo.docker` (network, ports, privileged, parameters).
    pub options: DockerOptions,
    /// `Entrypoint`; `None` keeps the image's.
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`; `None` keeps the image's.
    pub cmd: Option<Vec<String>>,
}

/// `DockerInfo.parameters` keys that are translated (docker-run flags without `--`).
pub const SUPPORTED_PARAMETERS: &[&str] = &[
    "label", "env", "volume", "user", "workdir", "cap-add", "cap-drop", "ulimit", "memory-swap", "dns",
    "dns-search", "dns-opt", "add-host", "hostname", "entrypoint", "shm-size", "init", "network", "net",
    "privileged", "read-only",
];

/// Checks every parameter without applying it: an unknown key or a value
/// that does not parse fails the launch with a message naming it.
pub fn validate_parameters(parameters: &[(String, String)]) -> Result<(), ContainerizerError> {
    let mut body = ContainerCreateBody { host_config: Some(HostConfig::default()), ..Default::default() };
    for (key, value) in parameters {
        apply_parameter(&mut body, key, value)?;
    }
    Ok(())
}

/// Builds the create request for `spec` and `run`.
pub fn render(spec: &ContainerSpec, run: &DockerRun) -> Result<ContainerCreateBody, ContainerizerError> {
    let invalid = |msg: String| ContainerizerError::InvalidSpec(format!("docker: {msg}"));
    let image = spec.image.as_deref().ok_or_else(|| invalid("a docker container needs an image".into()))?;
    let image = ImageRef::parse(image)?;
    if spec.rootfs != Rootfs::Host {
        return Err(invalid("the root filesystem comes from the image; a prepared rootfs cannot be used".into()));
    }
    for m in &spec.mounts {
        if !m.target.starts_with('/') {
            return Err(invalid(format!("mount target '{}' is not absolute", m.target)));
        }
    }
    let options = &run.options;
    let network_mode = match &options.network {
        DockerNetwork::Host => "host".to_string(),
        DockerNetwork::Bridge => "bridge".to_string(),
        DockerNetwork::None => "none".to_string(),
        DockerNetwork::User(name) => name.clone(),
    };
    let mut exposed_ports: HashMap<String, HashMap<(), ()>> = HashMap::new();
    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for m in &options.port_mappings {
        let protocol = if m.protocol.is_empty() { "tcp" } else { m.protocol.as_str() };
        let key = format!("{}/{protocol}", m.container_port);
        exposed_ports.insert(key.clone(), HashMap::new());
        port_bindings.entry(key).or_insert_with(|| Some(Vec::new())).get_or_insert_with(Vec::new).push(PortBinding {
            host_ip: None,
            host_port: Some(m.host_port.to_string()),
        });
    }
    let networking_config = match &options.network {
        DockerNetwork::User(name) => Some(NetworkingConfig {
            endpoints_config: Some([(name.clone(), EndpointSettings::default())].into()),
        }),
        _ => None,
    };

    let mut labels: HashMap<String, String> = spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    labels.insert(CONTAINER_ID_LABEL.to_string(), spec.container_id.clone());
    let limits = &spec.limits;
    let host_config = HostConfig {
        memory: limits.memory_limit_bytes,
        memory_reservation: limits.memory_reservation_bytes,
        cpu_shares: limits.cpu_shares.map(|s| s as i64),
        cpu_quota: limits.cpu_quota_us,
        cpu_period: limits.cpu_period_us.map(|p| p as i64),
        pids_limit: limits.pids_limit,
        privileged: Some(options.privileged),
        // The Mounts API, unlike `Binds`, has no trouble with ':' in paths.
        mounts: Some(
            spec.mounts
                .iter()
                .map(|m| Mount {
                    source: Some(m.source.display().to_string()),
                    target: Some(m.target.clone()),
                    typ: Some(MountTypeEnum::BIND),
                    read_only: Some(m.read_only),
                    ..Default::default()
                })
                .collect(),
        ),
        network_mode: Some(network_mode),
        port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
        // The executor reads the exit code after the container ended, and
        // destroy removes the container (after --docker_remove_delay).
        auto_remove: Some(false),
        // The engine's init (docker-init, Debian's tini) as PID 1: it
        // forwards `docker stop`'s signal to the task, which is then never
        // PID 1 (whose SIGTERM the kernel drops), and reaps orphans.
        init: Some(true),
        ..Default::default()
    };
    let mut body = ContainerCreateBody {
        image: Some(image.reference),
        entrypoint: run.entrypoint.clone(),
        cmd: run.cmd.clone(),
        env: Some(docker_env(&spec.env)),
        working_dir: Some(spec.working_dir.clone()).filter(|w| !w.is_empty()),
        user: spec.user.clone(),
        hostname: spec.hostname.clone(),
        labels: Some(labels),
        exposed_ports: (!exposed_ports.is_empty()).then_some(exposed_ports),
        attach_stdin: Some(false),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        tty: Some(false),
        open_stdin: Some(false),
        host_config: Some(host_config),
        networking_config,
        ..Default::default()
    };
    for (key, value) in &options.parameters {
        apply_parameter(&mut body, key, value)?;
    }
    let host_config = body.host_config.as_ref().expect("set above");
    if body.hostname.is_some() && host_config.network_mode.as_deref() == Some("host") {
        return Err(invalid("a hostname cannot be set on a container that shares the host's network".into()));
    }
    Ok(body)
}

/// Applies one `--key=value` docker-run flag to the request.
fn apply_parameter(body: &mut ContainerCreateBody, key: &str, value: &str) -> Result<(), ContainerizerError> {
    let bad = |why: String| ContainerizerError::InvalidSpec(format!("docker: parameter '{key}={value}': {why}"));
    let hc = body.host_config.get_or_insert_with(HostConfig::default);
    let push = |list: &mut Option<Vec<String>>, v: &str| list.get_or_insert_with(Vec::new).push(v.to_string());
    match key {
        "label" => {
            let (k, v) = value.split_once('=').unwrap_or((value, ""));
            if k.is_empty() {
                return Err(bad("a label needs a key".into()));
            }
            body.labels.get_or_insert_with(HashMap::new).insert(k.to_string(), v.to_string());
        }
        "env" => {
            let name = value.split('=').next().unwrap_or_default();
            if name.is_empty() {
                return Err(bad("an environment variable needs a name".into()));
            }
            let env = body.env.get_or_insert_with(Vec::new);
            env.retain(|e| e.split('=').next() != Some(name));
            env.push(value.to_string());
        }
        "volume" => {
            let parts: Vec<&str> = value.split(':').collect();
            if !(2..=3).contains(&parts.len()) || parts[..2].iter().any(|p| p.is_empty()) || !parts[1].starts_with('/') {
                return Err(bad("expected SOURCE:/TARGET[:MODE]".into()));
            }
            push(&mut hc.binds, value);
        }
        "user" => body.user = Some(value.to_string()),
        "workdir" => {
            if !value.starts_with('/') {
                return Err(bad("the working directory must be absolute".into()));
            }
            body.working_dir = Some(value.to_string());
        }
        "cap-add" => push(&mut hc.cap_add, value),
        "cap-drop" => push(&mut hc.cap_drop, value),
        "ulimit" => {
            let (name, limits) = value.split_once('=').ok_or_else(|| bad("expected NAME=SOFT[:HARD]".into()))?;
            let (soft, hard) = limits.split_once(':').unwrap_or((limits, limits));
            let num = |s: &str| s.parse::<i64>().map_err(|_| bad(format!("'{s}' is not a number")));
            hc.ulimits.get_or_insert_with(Vec::new).push(ResourcesUlimits {
                name: Some(name.to_string()),
                soft: Some(num(soft)?),
                hard: Some(num(hard)?),
            });
        }
        "memory-swap" => hc.memory_swap = Some(if value == "-1" { -1 } else { parse_size(value).map_err(bad)? }),
        "shm-size" => hc.shm_size = Some(parse_size(value).map_err(bad)?),
        "dns" => push(&mut hc.dns, value),
        "dns-search" => push(&mut hc.dns_search, value),
        "dns-opt" => push(&mut hc.dns_options, value),
        "add-host" => {
            if !value.contains(':') {
                return Err(bad("expected HOST:IP".into()));
            }
            push(&mut hc.extra_hosts, value);
        }
        "hostname" => body.hostname = Some(value.to_string()),
        "entrypoint" => body.entrypoint = Some(if value.is_empty() { Vec::new() } else { vec![value.to_string()] }),
        "init" => hc.init = Some(parse_bool(value).map_err(bad)?),
        "privileged" => hc.privileged = Some(parse_bool(value).map_err(bad)?),
        "read-only" => hc.readonly_rootfs = Some(parse_bool(value).map_err(bad)?),
        // Mesos: a `net`/`network` parameter overrides DockerInfo.network.
        "network" | "net" => {
            if value.is_empty() {
                return Err(bad("a network needs a name".into()));
            }
            hc.network_mode = Some(value.to_string());
            body.networking_config = match value {
                "host" | "bridge" | "none" => None,
                name => Some(NetworkingConfig { endpoints_config: Some([(name.to_string(), EndpointSettings::default())].into()) }),
            };
        }
        other => {
            return Err(ContainerizerError::InvalidSpec(format!(
                "docker: unsupported docker parameter '{other}' (supported: {})",
                SUPPORTED_PARAMETERS.join(", ")
            )))
        }
    }
    Ok(())
}

/// docker's `RAMInBytes`: `1024`, `512k`, `64m`, `1g`, `1gb` (binary units).
pub fn parse_size(value: &str) -> Result<i64, String> {
    let v = value.trim().to_ascii_lowercase();
    let v = v.strip_suffix('b').unwrap_or(&v);
    let (digits, unit) = match v.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&v[..i], &v[i..]),
        None => (v, ""),
    };
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(format!("'{value}' is not a size (like 64m or 1g)")),
    };
    let n: f64 = digits.parse().map_err(|_| format!("'{value}' is not a size (like 64m or 1g)"))?;
    Ok((n * (1u64 << shift) as f64) as i64)
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value {
        "" | "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("'{value}' is not true or false")),
    }
}

/// `KEY=VALUE` strings with later entries winning, each key once, in the
/// order of their first appearance.
fn docker_env(env: &[(String, String)]) -> Vec<String> {
    let mut order: Vec<&str> = Vec::new();
    let mut values: HashMap<&str, &str> = HashMap::new();
    for (k, v) in env {
        if values.insert(k, v).is_none() {
            order.push(k);
        }
    }
    order.into_iter().map(|k| format!("{k}={}", values[k])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Command, ContainerConfig, ContainerType, Limits, Mount as SpecMount, Namespace, PortMapping, Resources};
    use std::path::PathBuf;

    fn spec() -> ContainerSpec {
        let config = ContainerConfig {
            container_id: "c1".into(),
            container_type: ContainerType::Docker,
            image: Some("busybox".into()),
            command: Command::default(),
            resources: Resources::default(),
            sandbox: PathBuf::from("/sb"),
            hostname: None,
            labels: [("mezzo.task_id".to_string(), "t1".to_string())].into(),
            ..Default::default()
        };
        let mut spec = ContainerSpec::new(&config);
        spec.working_dir = String::new();
        spec
    }

    fn shell_run(cmd: &str) -> DockerRun {
        DockerRun {
            entrypoint: Some(vec!["/bin/sh".into()]),
            cmd: Some(vec!["-c".into(), cmd.into()]),
            ..Default::default()
        }
    }

    #[test]
    fn entrypoint_and_cmd_come_from_the_run() {
        let s = spec();
        let body = render(&s, &shell_run("echo hi")).unwrap();
        assert_eq!(body.entrypoint, Some(vec!["/bin/sh".to_string()]));
        assert_eq!(body.cmd, Some(vec!["-c".to_string(), "echo hi".to_string()]));
        assert_eq!(body.image.as_deref(), Some("busybox:latest"));
        assert_eq!(body.working_dir, None);
        let body = render(&s, &DockerRun::default()).unwrap();
        assert_eq!((body.entrypoint, body.cmd), (None, None));
    }

    #[test]
    fn limits_mounts_labels_and_network() {
        let mut s = spec();
        s.limits = Limits {
            cpu_shares: Some(512),
            memory_limit_bytes: Some(64 << 20),
            memory_reservation_bytes: Some(64 << 20),
            ..Default::default()
        };
        s.mounts.push(SpecMount { source: "/sb:colon".into(), target: "/mnt/mesos/sandbox".into(), read_only: false });
        let body = render(&s, &DockerRun::default()).unwrap();
        let hc = body.host_config.unwrap();
        assert_eq!((hc.memory, hc.memory_reservation, hc.cpu_shares), (Some(64 << 20), Some(64 << 20), Some(512)));
        assert_eq!(hc.network_mode.as_deref(), Some("host"));
        assert_eq!(hc.auto_remove, Some(false));
        let m = &hc.mounts.unwrap()[0];
        assert_eq!(
            (m.source.as_deref(), m.target.as_deref(), m.read_only),
            (Some("/sb:colon"), Some("/mnt/mesos/sandbox"), Some(false))
        );
        let labels = body.labels.unwrap();
        assert_eq!(labels.get("mezzo.task_id").map(String::as_str), Some("t1"));
        assert_eq!(labels.get(CONTAINER_ID_LABEL).map(String::as_str), Some("c1"));
    }

    #[test]
    fn bridge_ports_and_user_networks() {
        let mut run = DockerRun::default();
        run.options.network = DockerNetwork::Bridge;
        run.options.port_mappings = vec![
            PortMapping { host_port: 31000, container_port: 80, protocol: "tcp".into() },
            PortMapping { host_port: 31001, container_port: 53, protocol: "udp".into() },
        ];
        let body = render(&spec(), &run).unwrap();
        let hc = body.host_config.unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("bridge"));
        let bindings = hc.port_bindings.unwrap();
        assert_eq!(bindings["80/tcp"].as_ref().unwrap()[0].host_port.as_deref(), Some("31000"));
        assert_eq!(bindings["53/udp"].as_ref().unwrap()[0].host_port.as_deref(), Some("31001"));
        assert!(body.exposed_ports.unwrap().contains_key("80/tcp"));
        run.options.network = DockerNetwork::User("mynet".into());
        let body = render(&spec(), &run).unwrap();
        assert_eq!(body.host_config.unwrap().network_mode.as_deref(), Some("mynet"));
        assert!(body.networking_config.unwrap().endpoints_config.unwrap().contains_key("mynet"));
    }

    #[test]
    fn parameters_are_translated_and_unknown_keys_refused() {
        let mut run = shell_run("true");
        run.options.network = DockerNetwork::Bridge;
        run.options.parameters = [
            ("label", "team=infra"),
            ("env", "A=2"),
            ("volume", "/srv:/data:ro"),
            ("user", "nobody"),
            ("workdir", "/tmp"),
            ("cap-add", "NET_ADMIN"),
            ("cap-drop", "CHOWN"),
            ("ulimit", "nofile=1024:2048"),
            ("memory-swap", "128m"),
            ("dns", "10.0.0.2"),
            ("hostname", "box"),
            ("entrypoint", "/bin/echo"),
            ("shm-size", "1g"),
            ("init", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut s = spec();
        s.env = vec![("A".into(), "1".into()), ("B".into(), "1".into())];
        let body = render(&s, &run).unwrap();
        assert_eq!(body.labels.as_ref().unwrap()["team"], "infra");
        assert_eq!(body.env.unwrap(), vec!["B=1".to_string(), "A=2".to_string()]);
        assert_eq!((body.user.as_deref(), body.working_dir.as_deref()), (Some("nobody"), Some("/tmp")));
        assert_eq!(body.hostname.as_deref(), Some("box"));
        assert_eq!(body.entrypoint, Some(vec!["/bin/echo".to_string()]));
        let hc = body.host_config.unwrap();
        assert_eq!(hc.binds, Some(vec!["/srv:/data:ro".to_string()]));
        assert_eq!((hc.cap_add.unwrap(), hc.cap_drop.unwrap()), (vec!["NET_ADMIN".to_string()], vec!["CHOWN".to_string()]));
        let u = &hc.ulimits.unwrap()[0];
        assert_eq!((u.name.as_deref(), u.soft, u.hard), (Some("nofile"), Some(1024), Some(2048)));
        assert_eq!((hc.memory_swap, hc.shm_size, hc.init), (Some(128 << 20), Some(1 << 30), Some(true)));
        assert_eq!(hc.dns, Some(vec!["10.0.0.2".to_string()]));

        let err = validate_parameters(&[("frobnicate".into(), "yes".into())]).unwrap_err().to_string();
        assert!(err.contains("unsupported docker parameter 'frobnicate'"), "{err}");
        assert!(validate_parameters(&[("ulimit".into(), "nofile".into())]).is_err());
        assert!(validate_parameters(&[("shm-size".into(), "lots".into())]).is_err());
    }

    #[test]
    fn sizes_parse_like_docker() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("64m").unwrap(), 64 << 20);
        assert_eq!(parse_size("1GB").unwrap(), 1 << 30);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert!(parse_size("12x").is_err());
    }

    #[test]
    fn refuses_what_docker_cannot_honour() {
        let mut s = spec();
        s.image = None;
        assert!(render(&s, &DockerRun::default()).unwrap_err().to_string().contains("needs an image"));
        let mut s = spec();
        s.rootfs = Rootfs::Directory("/r".into());
        assert!(render(&s, &DockerRun::default()).is_err());
        let mut s = spec();
        s.hostname = Some("h".into());
        assert!(render(&s, &DockerRun::default()).unwrap_err().to_string().contains("hostname"));
        s.namespaces.push(Namespace::Network);
        let mut run = DockerRun::default();
        run.options.network = DockerNetwork::None;
        let body = render(&s, &run).unwrap();
        assert_eq!(body.host_config.unwrap().network_mode.as_deref(), Some("none"));
        assert_eq!(body.hostname.as_deref(), Some("h"));
    }

    #[test]
    fn env_later_entries_win_in_first_order() {
        let env = vec![("A".into(), "1".into()), ("B".into(), "2".into()), ("A".into(), "3".into())];
        assert_eq!(docker_env(&env), vec!["A=3".to_string(), "B=2".to_string()]);
    }
}
