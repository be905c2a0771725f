//! Renders a `ContainerSpec` into an OCI runtime config for libcontainer,
//! starting from runc's default spec (standard mounts, masked and read-only
//! paths) and Docker's default capability set.

use super::rootfs_path;
use super::user::resolve_user;
use crate::spec::Rootfs;
use crate::{ContainerSpec, ContainerizerError, Namespace};
use libcontainer::oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxMemoryBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder,
    ProcessBuilder, RootBuilder, Spec, UserBuilder,
};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// PATH a process gets when neither the image nor the task set one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn oci_err(what: &str) -> impl FnOnce(libcontainer::oci_spec::OciSpecError) -> ContainerizerError + '_ {
    move |e| ContainerizerError::InvalidSpec(format!("{what}: {e}"))
}

/// Docker's default capabilities: what a root task may do without being
/// able to administer the host.
fn default_capabilities() -> HashSet<Capability> {
    use Capability::*;
    [Chown, DacOverride, Fsetid, Fowner, Mknod, NetRaw, Setgid, Setuid, Setfcap, Setpcap, NetBindService, SysChroot, Kill, AuditWrite]
        .into_iter()
        .collect()
}

/// `KEY=VALUE` list with later entries replacing earlier ones in place.
fn merge_env(env: &[(String, String)]) -> Vec<String> {
    let mut merged: Vec<(String, String)> = Vec::new();
    for (k, v) in env {
        match merged.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v.clone(),
            None => merged.push((k.clone(), v.clone())),
        }
    }
    if !merged.iter().any(|(k, _)| k == "PATH") {
        merged.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
    }
    merged.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Directories whose `/etc/passwd` describes the container's users, top first.
fn user_db_roots(spec: &ContainerSpec) -> Vec<PathBuf> {
    match &spec.rootfs {
        Rootfs::Host => vec![PathBuf::from("/")],
        Rootfs::Directory(dir) => vec![dir.clone()],
        Rootfs::Overlay { lowers, upper, .. } => std::iter::once(upper.clone()).chain(lowers.iter().rev().cloned()).collect(),
    }
}

/// The OCI config for `spec`, whose container lives in `runtime_dir`.
pub fn render(spec: &ContainerSpec, runtime_dir: &Path) -> Result<Spec, ContainerizerError> {
    if spec.args.is_empty() {
        return Err(ContainerizerError::InvalidSpec("the container has no command".into()));
    }
    if spec.cgroup_path.is_empty() || !spec.cgroup_path.starts_with('/') {
        return Err(ContainerizerError::InvalidSpec(format!("cgroup path '{}' is not absolute", spec.cgroup_path)));
    }
    let user = match &spec.user {
        Some(u) => {
            let r = resolve_user(u, &user_db_roots(spec))?;
            let mut b = UserBuilder::default().uid(r.uid).gid(r.gid);
            if !r.additional_gids.is_empty() {
                b = b.additional_gids(r.additional_gids);
            }
            b.build().map_err(oci_err("user"))?
        }
        None => UserBuilder::default().uid(0u32).gid(0u32).build().map_err(oci_err("user"))?,
    };
    let caps = default_capabilities();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()
        .map_err(oci_err("capabilities"))?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(spec.args.clone())
        .env(merge_env(&spec.env))
        .cwd(if spec.working_dir.is_empty() { "/".to_string() } else { spec.working_dir.clone() })
        .user(user)
        .capabilities(capabilities)
        // As Mesos and Docker by default: setuid programs keep working.
        .no_new_privileges(false)
        .build()
        .map_err(oci_err("process"))?;

    let mut mounts: Vec<Mount> = libcontainer::oci_spec::runtime::get_default_mounts();
    for m in &spec.mounts {
        if !m.target.starts_with('/') {
            return Err(ContainerizerError::InvalidSpec(format!("mount target '{}' is not absolute", m.target)));
        }
        mounts.push(
            MountBuilder::default()
                .destination(PathBuf::from(&m.target))
                .typ("bind")
                .source(m.source.clone())
                .options(vec!["rbind".to_string(), if m.read_only { "ro" } else { "rw" }.to_string()])
                .build()
                .map_err(oci_err("mount"))?,
        );
    }

    let mut namespaces = Vec::new();
    for ns in &spec.namespaces {
        let typ = match ns {
            Namespace::Pid => LinuxNamespaceType::Pid,
            Namespace::Mount => LinuxNamespaceType::Mount,
            Namespace::Ipc => LinuxNamespaceType::Ipc,
            Namespace::Uts => LinuxNamespaceType::Uts,
            Namespace::Network => LinuxNamespaceType::Network,
        };
        namespaces.push(LinuxNamespaceBuilder::default().typ(typ).build().map_err(oci_err("namespace"))?);
    }
    if !spec.namespaces.contains(&Namespace::Mount) {
        // pivot_root and the standard mounts need a mount namespace.
        namespaces.push(LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Mount).build().map_err(oci_err("namespace"))?);
    }

    let l = &spec.limits;
    let mut resources = LinuxResourcesBuilder::default().devices(vec![LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()
        .map_err(oci_err("devices"))?]);
    if l.cpu_shares.is_some() || l.cpu_quota_us.is_some() {
        let mut cpu = LinuxCpuBuilder::default();
        if let Some(s) = l.cpu_shares {
            cpu = cpu.shares(s);
        }
        if let Some(q) = l.cpu_quota_us {
            cpu = cpu.quota(q).period(l.cpu_period_us.unwrap_or(100_000));
        }
        resources = resources.cpu(cpu.build().map_err(oci_err("cpu"))?);
    }
    if l.memory_limit_bytes.is_some() || l.memory_reservation_bytes.is_some() {
        let mut mem = LinuxMemoryBuilder::default();
        if let Some(b) = l.memory_limit_bytes {
            mem = mem.limit(b);
        }
        if let Some(b) = l.memory_reservation_bytes {
            mem = mem.reservation(b);
        }
        resources = resources.memory(mem.build().map_err(oci_err("memory"))?);
    }
    if let Some(p) = l.pids_limit {
        resources = resources.pids(LinuxPidsBuilder::default().limit(p).build().map_err(oci_err("pids"))?);
    }
    let defaults = libcontainer::oci_spec::runtime::Linux::default();
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources.build().map_err(oci_err("resources"))?)
        .cgroups_path(PathBuf::from(&spec.cgroup_path))
        .masked_paths(defaults.masked_paths().clone().unwrap_or_default())
        .readonly_paths(defaults.readonly_paths().clone().unwrap_or_default())
        .build()
        .map_err(oci_err("linux"))?;

    let root = RootBuilder::default()
        .path(rootfs_path(spec, runtime_dir))
        .readonly(false)
        .build()
        .map_err(oci_err("root"))?;
    let mut oci = Spec::default();
    oci.set_process(Some(process)).set_root(Some(root)).set_mounts(Some(mounts)).set_linux(Some(linux));
    oci.set_annotations(Some(spec.labels.clone().into_iter().collect()));
    let hostname = if spec.namespaces.contains(&Namespace::Uts) {
        // Without a hostname of its own the task keeps the host's name, as in Mesos.
        Some(match &spec.hostname {
            Some(h) => h.clone(),
            None => nix::unistd::gethostname()
                .map_err(|e| ContainerizerError::Other(format!("gethostname: {e}")))?
                .to_string_lossy()
                .into_owned(),
        })
    } else {
        None
    };
    oci.set_hostname(hostname);
    Ok(oci)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_env_entries_win_and_path_defaults() {
        let env = vec![("A".into(), "1".into()), ("B".into(), "2".into()), ("A".into(), "3".into())];
        assert_eq!(merge_env(&env), vec![format!("PATH={DEFAULT_PATH}"), "A=3".into(), "B=2".into()]);
        let env = vec![("PATH".into(), "/x".into())];
        assert_eq!(merge_env(&env), vec!["PATH=/x".to_string()]);
    }
}
