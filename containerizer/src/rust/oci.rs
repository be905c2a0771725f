//! Renders a `ContainerSpec` into an OCI runtime config for libcontainer,
//! starting from runc's default spec (standard mounts, masked and read-only
//! paths) and Docker's default capability set.

use super::placement::Placement;
use super::rootfs_path;
use crate::user::{resolve_user, user_db_roots};
use crate::{ContainerSpec, ContainerizerError, Namespace, RuntimeDir};
use crate::isolators::{CLONE_NAMESPACE_FLAGS, DEFAULT_CAPABILITIES, MASKED_PATHS, READONLY_PATHS, SECCOMP_BLOCKED, SECCOMP_ENOSYS};
use crate::spec::{CapabilitySets, Hardening};
use libcontainer::oci_spec::runtime::{
    Arch, Capability, LinuxBuilder, LinuxCapabilities, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, LinuxSeccomp,
    LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscall,
    LinuxSyscallBuilder, Mount, MountBuilder, PosixRlimit, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder,
    RootBuilder, Spec, UserBuilder,
};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// PATH a process gets when neither the image nor the task set one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn oci_err(what: &str) -> impl FnOnce(libcontainer::oci_spec::OciSpecError) -> ContainerizerError + '_ {
    move |e| ContainerizerError::InvalidSpec(format!("{what}: {e}"))
}

fn capability_set(names: &[String]) -> Result<HashSet<Capability>, ContainerizerError> {
    names
        .iter()
        .map(|n| {
            serde_json::from_value::<Capability>(serde_json::Value::String(n.clone()))
                .map_err(|_| ContainerizerError::InvalidSpec(format!("unknown capability '{n}'")))
        })
        .collect()
}

/// The process's capability sets: the spec's, or Docker's default set.
/// Without ambient capabilities a non-root user ends with none after exec,
/// as with Docker.
fn capabilities(sets: Option<&CapabilitySets>) -> Result<LinuxCapabilities, ContainerizerError> {
    let default;
    let sets = match sets {
        Some(s) => s,
        None => {
            let names: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect();
            default = CapabilitySets { effective: names.clone(), bounding: names, ambient: false };
            &default
        }
    };
    let effective = capability_set(&sets.effective)?;
    let bounding = capability_set(&sets.bounding)?;
    let granted = if sets.ambient { effective.clone() } else { HashSet::new() };
    LinuxCapabilitiesBuilder::default()
        .bounding(bounding)
        .effective(effective.clone())
        .permitted(effective)
        .inheritable(granted.clone())
        .ambient(granted)
        .build()
        .map_err(oci_err("capabilities"))
}

fn rlimit_type(kind: &str) -> Result<PosixRlimitType, ContainerizerError> {
    use PosixRlimitType::*;
    Ok(match kind {
        "AS" => RlimitAs,
        "CORE" => RlimitCore,
        "CPU" => RlimitCpu,
        "DATA" => RlimitData,
        "FSIZE" => RlimitFsize,
        "LOCKS" => RlimitLocks,
        "MEMLOCK" => RlimitMemlock,
        "MSGQUEUE" => RlimitMsgqueue,
        "NICE" => RlimitNice,
        "NOFILE" => RlimitNofile,
        "NPROC" => RlimitNproc,
        "RSS" => RlimitRss,
        "RTPRIO" => RlimitRtprio,
        "RTTIME" => RlimitRttime,
        "SIGPENDING" => RlimitSigpending,
        "STACK" => RlimitStack,
        other => return Err(ContainerizerError::InvalidSpec(format!("unknown rlimit '{other}'"))),
    })
}

/// rlimits as OCI wants them; an unset limit is `RLIM_INFINITY`.
fn rlimits(h: &Hardening) -> Result<Vec<PosixRlimit>, ContainerizerError> {
    h.rlimits
        .iter()
        .map(|r| {
            PosixRlimitBuilder::default()
                .typ(rlimit_type(&r.kind)?)
                .soft(r.soft.unwrap_or(libc::RLIM_INFINITY))
                .hard(r.hard.unwrap_or(libc::RLIM_INFINITY))
                .build()
                .map_err(oci_err("rlimit"))
        })
        .collect()
}

/// The default seccomp profile: everything allowed except the blocked
/// calls (`EPERM`), `clone3` (`ENOSYS`, so libc falls back to `clone`) and
/// `clone` with namespace flags (`EPERM`), on x86-64 and its 32-bit ABIs
/// so that no ABI bypasses the filter.
pub fn default_seccomp() -> Result<LinuxSeccomp, ContainerizerError> {
    let errno = |names: Vec<String>, errno: i32| -> Result<LinuxSyscall, ContainerizerError> {
        LinuxSyscallBuilder::default()
            .names(names)
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(errno as u32)
            .build()
            .map_err(oci_err("seccomp syscall"))
    };
    let mut syscalls = vec![
        errno(SECCOMP_BLOCKED.iter().map(|s| s.to_string()).collect(), libc::EPERM)?,
        errno(SECCOMP_ENOSYS.iter().map(|s| s.to_string()).collect(), libc::ENOSYS)?,
    ];
    for flag in CLONE_NAMESPACE_FLAGS {
        // (flags & flag) == flag; mask and value are equal, so it reads the
        // same whichever of value/valueTwo a runtime takes as the mask.
        let arg = LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(*flag)
            .value_two(*flag)
            .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
            .build()
            .map_err(oci_err("seccomp arg"))?;
        syscalls.push(
            LinuxSyscallBuilder::default()
                .names(vec!["clone".to_string()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(libc::EPERM as u32)
                .args(vec![arg])
                .build()
                .map_err(oci_err("seccomp syscall"))?,
        );
    }
    let architectures = if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
    } else {
        Vec::new()
    };
    let mut b = LinuxSeccompBuilder::default().default_action(LinuxSeccompAction::ScmpActAllow).syscalls(syscalls);
    if !architectures.is_empty() {
        b = b.architectures(architectures);
    }
    b.build().map_err(oci_err("seccomp"))
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

/// Longest hostname the kernel takes.
const HOST_NAME_MAX: usize = 64;

/// Bind mount options; read-only applies to submounts too.
fn bind_options(read_only: bool) -> Vec<String> {
    let mut o = vec!["rbind".to_string(), if read_only { "ro" } else { "rw" }.to_string()];
    if read_only {
        o.push("rro".into());
    }
    o
}

/// A read-only image volume: one layer is bound as it is; several are
/// stacked as an overlay without an upper directory (so read-only by
/// construction). Layers are passed one by one (`lowerdir+`, top first),
/// which keeps each option short whatever the number of layers.
fn image_mount(m: &crate::spec::ImageMount) -> Result<Mount, ContainerizerError> {
    if !m.target.starts_with('/') {
        return Err(ContainerizerError::InvalidSpec(format!("image volume target '{}' is not absolute", m.target)));
    }
    let b = MountBuilder::default().destination(PathBuf::from(&m.target));
    let mount = match m.layers.as_slice() {
        [] => return Err(ContainerizerError::InvalidSpec(format!("image volume '{}' has no layers", m.image))),
        [layer] => b.typ("bind").source(layer.clone()).options(bind_options(true)),
        layers => {
            let mut options = vec!["ro".to_string()];
            for l in layers.iter().rev() {
                let l = l.to_str().filter(|p| !p.contains([',', ':'])).ok_or_else(|| {
                    ContainerizerError::InvalidSpec(format!("layer path {} cannot be an overlay lower", l.display()))
                })?;
                options.push(format!("lowerdir+={l}"));
            }
            b.typ("overlay").source(PathBuf::from("overlay")).options(options)
        }
    };
    mount.build().map_err(oci_err("image volume mount"))
}

/// Where the container sees cgroups.
const CGROUP_MOUNT_POINT: &str = "/sys/fs/cgroup";

/// The container's `/sys/fs/cgroup` when its supervisor places it: the
/// tree of views the supervisor mounts (its own cgroup in each hierarchy,
/// what libcontainer and runc show on v1 without a cgroup namespace), bound
/// recursively and read-only.
fn placed_cgroup_mount(runtime_dir: &RuntimeDir) -> Result<Mount, ContainerizerError> {
    MountBuilder::default()
        .destination(PathBuf::from(CGROUP_MOUNT_POINT))
        .typ("bind")
        .source(runtime_dir.views_dir())
        .options(["rbind", "ro", "rro", "nosuid", "nodev", "noexec"].map(String::from).to_vec())
        .build()
        .map_err(oci_err("cgroup mount"))
}

/// The OCI config for `spec`, whose container lives in `runtime_dir`.
///
/// With a `placement` (cgroup v1) the supervisor puts the container in its
/// cgroups, which the isolators and the backend prepared: libcontainer gets
/// no resources to apply, and the container's `/sys/fs/cgroup` is made of
/// bind mounts instead of libcontainer's cgroup mount. Without one,
/// libcontainer creates, configures and joins the cgroups itself.
pub fn render(spec: &ContainerSpec, runtime_dir: &RuntimeDir, placement: Option<&Placement>) -> Result<Spec, ContainerizerError> {
    if spec.args.is_empty() {
        return Err(ContainerizerError::InvalidSpec("the container has no command".into()));
    }
    if spec.cgroup_path.is_empty() || !spec.cgroup_path.starts_with('/') {
        return Err(ContainerizerError::InvalidSpec(format!("cgroup path '{}' is not absolute", spec.cgroup_path)));
    }
    let user = match &spec.user {
        Some(u) => {
            let r = resolve_user(u, &user_db_roots(&spec.rootfs))?;
            let mut b = UserBuilder::default().uid(r.uid).gid(r.gid);
            if !r.additional_gids.is_empty() {
                b = b.additional_gids(r.additional_gids);
            }
            b.build().map_err(oci_err("user"))?
        }
        None => UserBuilder::default().uid(0u32).gid(0u32).build().map_err(oci_err("user"))?,
    };
    let hardening = &spec.hardening;
    let mut process = ProcessBuilder::default()
        .terminal(false)
        .args(spec.args.clone())
        .env(merge_env(&spec.env))
        .cwd(if spec.working_dir.is_empty() { "/".to_string() } else { spec.working_dir.clone() })
        .user(user)
        .capabilities(capabilities(hardening.capabilities.as_ref())?)
        // Off unless `linux/nnp` asks: setuid programs keep working, as in Docker.
        .no_new_privileges(hardening.no_new_privileges);
    if !hardening.rlimits.is_empty() {
        process = process.rlimits(rlimits(hardening)?);
    }
    let process = process.build().map_err(oci_err("process"))?;

    let mut mounts: Vec<Mount> = libcontainer::oci_spec::runtime::get_default_mounts();
    if placement.is_some() {
        let mount = placed_cgroup_mount(runtime_dir)?;
        match mounts.iter_mut().find(|m| m.destination() == Path::new(CGROUP_MOUNT_POINT)) {
            Some(m) => *m = mount,
            None => mounts.push(mount),
        }
    }
    for m in &spec.mounts {
        if !m.target.starts_with('/') {
            return Err(ContainerizerError::InvalidSpec(format!("mount target '{}' is not absolute", m.target)));
        }
        mounts.push(
            MountBuilder::default()
                .destination(PathBuf::from(&m.target))
                .typ("bind")
                .source(m.source.clone())
                .options(bind_options(m.read_only))
                .build()
                .map_err(oci_err("mount"))?,
        );
    }
    for m in &spec.image_mounts {
        mounts.push(image_mount(m)?);
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
            cpu = cpu.quota(q).period(l.cpu_period_us.unwrap_or(crate::limits::CPU_CFS_PERIOD_US));
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
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources.build().map_err(oci_err("resources"))?)
        .cgroups_path(PathBuf::from(&spec.cgroup_path))
        .masked_paths(MASKED_PATHS.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .readonly_paths(READONLY_PATHS.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    if hardening.seccomp {
        linux = linux.seccomp(default_seccomp()?);
    }
    let mut linux = linux.build().map_err(oci_err("linux"))?;
    if placement.is_some() {
        // Limits and the device list are in place already (isolators and
        // `Placement::prepare`); libcontainer must not touch cgroups.
        linux.set_resources(None);
    }

    let root = RootBuilder::default()
        .path(rootfs_path(spec, runtime_dir))
        .readonly(false)
        .build()
        .map_err(oci_err("root"))?;
    let mut oci = Spec::default();
    oci.set_process(Some(process)).set_root(Some(root)).set_mounts(Some(mounts)).set_linux(Some(linux));
    oci.set_annotations(Some(spec.labels.clone().into_iter().collect()));
    let hostname = if spec.namespaces.contains(&Namespace::Uts) {
        Some(match &spec.hostname {
            Some(h) if !h.is_empty() => h.clone(),
            // With a network of its own the task is named after its
            // container, as Mesos's network/cni does ...
            _ if spec.namespaces.contains(&Namespace::Network) => {
                spec.container_id.chars().take(HOST_NAME_MAX).collect()
            }
            // ... on the host's network it keeps the host's name.
            _ => nix::unistd::gethostname()
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
    use crate::rust::placement::PlacedHierarchy;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            container_id: "c1".into(),
            args: vec!["/bin/true".into()],
            cgroup_path: "/mezzo/c1".into(),
            limits: crate::spec::Limits { memory_limit_bytes: Some(64 << 20), ..Default::default() },
            ..Default::default()
        }
    }

    #[test]
    fn libcontainer_manages_cgroups_without_a_placement() {
        let oci = render(&spec(), &RuntimeDir::new("/run/c1"), None).unwrap();
        let linux = oci.linux().as_ref().unwrap();
        let mem = linux.resources().as_ref().unwrap().memory().as_ref().unwrap();
        assert_eq!(mem.limit(), Some(64 << 20));
        let cg: Vec<&Mount> = oci.mounts().as_ref().unwrap().iter().filter(|m| m.destination().starts_with(CGROUP_MOUNT_POINT)).collect();
        assert_eq!(cg.len(), 1);
        assert_eq!(cg[0].typ().as_deref(), Some("cgroup"));
    }

    #[test]
    fn a_placed_container_gets_no_resources_and_its_cgroup_views() {
        let placement = Placement {
            hierarchies: ["freezer", "memory"]
                .map(|n| PlacedHierarchy {
                    name: n.into(),
                    mount: Path::new("/sys/fs/cgroup").join(n),
                    dir: Path::new("/sys/fs/cgroup").join(n).join("mezzo/c1"),
                })
                .to_vec(),
        };
        let oci = render(&spec(), &RuntimeDir::new("/run/c1"), Some(&placement)).unwrap();
        let linux = oci.linux().as_ref().unwrap();
        assert!(linux.resources().is_none());
        assert_eq!(linux.cgroups_path().as_deref(), Some(Path::new("/mezzo/c1")));
        let mounts = oci.mounts().as_ref().unwrap();
        let sys = mounts.iter().position(|m| m.destination() == Path::new("/sys")).unwrap();
        let cg: Vec<(usize, &Mount)> =
            mounts.iter().enumerate().filter(|(_, m)| m.destination().starts_with(CGROUP_MOUNT_POINT)).collect();
        assert_eq!(cg.len(), 1);
        let (at, m) = cg[0];
        assert!(at > sys, "the views go over /sys");
        assert_eq!(m.typ().as_deref(), Some("bind"));
        assert_eq!(m.source().as_deref(), Some(Path::new("/run/c1/cgroups")));
        let options = m.options().as_ref().unwrap();
        for o in ["rbind", "ro", "rro"] {
            assert!(options.iter().any(|x| x == o), "{o} in {options:?}");
        }
    }

    #[test]
    fn later_env_entries_win_and_path_defaults() {
        let env = vec![("A".into(), "1".into()), ("B".into(), "2".into()), ("A".into(), "3".into())];
        assert_eq!(merge_env(&env), vec![format!("PATH={DEFAULT_PATH}"), "A=3".into(), "B=2".into()]);
        let env = vec![("PATH".into(), "/x".into())];
        assert_eq!(merge_env(&env), vec!["PATH=/x".to_string()]);
    }
}
