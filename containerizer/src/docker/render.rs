//! Renders a `ContainerSpec` into a Docker Engine create request
//! (`POST /containers/create`), refusing what the engine cannot honour.
//!
//! How the spec maps:
//! * `args` is the container's complete argv (the runtime isolator already
//!   merged the image's entrypoint and cmd with the task's command), so it is
//!   sent as `Entrypoint = [args[0]]`, `Cmd = args[1..]`; an empty `args`
//!   keeps the image's own entrypoint and cmd.
//! * `rootfs` must be `Host`: the image provides the root filesystem.
//! * Docker always gives a container its own pid, mount, ipc and uts
//!   namespaces; `namespaces` only decides the network: without `Network`
//!   the container shares the host's network (Mesos's default `HOST`), with
//!   it the container gets a network namespace of its own with loopback only.
//! * `cgroup_path` is not used: the engine places the container in its own
//!   cgroups; `limits` become `HostConfig` resource settings.

use crate::spec::Rootfs;
use crate::{ContainerSpec, ContainerizerError, Namespace};
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountTypeEnum};
use std::collections::HashMap;

use super::image::ImageRef;
use super::CONTAINER_ID_LABEL;

/// Builds the create request for `spec`.
pub fn render(spec: &ContainerSpec) -> Result<ContainerCreateBody, ContainerizerError> {
    let invalid = |msg: String| ContainerizerError::InvalidSpec(format!("docker: {msg}"));
    let image = spec.image.as_deref().ok_or_else(|| invalid("a docker container needs an image".into()))?;
    let image = ImageRef::parse(image)?;
    if spec.rootfs != Rootfs::Host {
        return Err(invalid("the root filesystem comes from the image; a prepared rootfs cannot be used".into()));
    }
    let own_network = spec.namespaces.contains(&Namespace::Network);
    if spec.hostname.is_some() && !own_network {
        return Err(invalid("a hostname cannot be set on a container that shares the host's network".into()));
    }
    for m in &spec.mounts {
        if !m.target.starts_with('/') {
            return Err(invalid(format!("mount target '{}' is not absolute", m.target)));
        }
    }

    let (entrypoint, cmd) = match spec.args.split_first() {
        Some((program, rest)) => (Some(vec![program.clone()]), Some(rest.to_vec())),
        None => (None, None),
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
        network_mode: Some(if own_network { "none" } else { "host" }.to_string()),
        // The executor reads the exit code after the container ended, and
        // destroy removes the container.
        auto_remove: Some(false),
        ..Default::default()
    };
    Ok(ContainerCreateBody {
        image: Some(image.reference),
        entrypoint,
        cmd,
        env: Some(docker_env(&spec.env)),
        working_dir: Some(spec.working_dir.clone()).filter(|w| !w.is_empty()),
        user: spec.user.clone(),
        hostname: spec.hostname.clone(),
        labels: Some(labels),
        attach_stdin: Some(false),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        tty: Some(false),
        open_stdin: Some(false),
        host_config: Some(host_config),
        ..Default::default()
    })
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
    use crate::{Command, ContainerConfig, ContainerType, Limits, Mount as SpecMount, Resources};
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

    #[test]
    fn args_become_entrypoint_and_cmd() {
        let mut s = spec();
        s.args = vec!["/bin/sh".into(), "-c".into(), "echo hi".into()];
        let body = render(&s).unwrap();
        assert_eq!(body.entrypoint, Some(vec!["/bin/sh".to_string()]));
        assert_eq!(body.cmd, Some(vec!["-c".to_string(), "echo hi".to_string()]));
        assert_eq!(body.image.as_deref(), Some("busybox:latest"));
        assert_eq!(body.working_dir, None);
        s.args.clear();
        let body = render(&s).unwrap();
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
        let body = render(&s).unwrap();
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
    fn refuses_what_docker_cannot_honour() {
        let mut s = spec();
        s.image = None;
        assert!(render(&s).unwrap_err().to_string().contains("needs an image"));
        let mut s = spec();
        s.rootfs = Rootfs::Directory("/r".into());
        assert!(render(&s).is_err());
        let mut s = spec();
        s.hostname = Some("h".into());
        assert!(render(&s).unwrap_err().to_string().contains("hostname"));
        s.namespaces.push(Namespace::Network);
        let body = render(&s).unwrap();
        assert_eq!(body.host_config.unwrap().network_mode.as_deref(), Some("none"));
        assert_eq!(body.hostname.as_deref(), Some("h"));
    }

    #[test]
    fn env_later_entries_win_in_first_order() {
        let env = vec![("A".into(), "1".into()), ("B".into(), "2".into()), ("A".into(), "3".into())];
        assert_eq!(docker_env(&env), vec!["A=3".to_string(), "B=2".to_string()]);
    }
}
