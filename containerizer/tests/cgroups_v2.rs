//! The cgroups isolator on cgroups v2, against a fake unified cgroupfs tree
//! of plain files in a temp directory (this host is v1), and the
//! `--isolation` registry. None of these need root.

use mezzo_containerizer::isolators::{
    isolators_from_names, parse_isolation, CgroupFs, CgroupsIsolator, CgroupsOptions, Controller, IsolatorContext,
    DEFAULT_ISOLATION, KNOWN_ISOLATORS,
};
use mezzo_containerizer::{
    ContainerConfig, ContainerSpec, ContainerizerError, Isolator, LimitationReason, ResourceLimits, Resources, Usage,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A fake unified hierarchy: what the kernel shows at the root.
fn fake_v2() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("cgroup.controllers"), "cpuset cpu io memory hugetlb pids rdma misc\n").unwrap();
    std::fs::write(tmp.path().join("cgroup.subtree_control"), "").unwrap();
    tmp
}

fn options(root: &Path, enable_cfs: bool) -> CgroupsOptions {
    CgroupsOptions { fs: CgroupFs::detect_at(root), root: "mezzo".into(), enable_cfs, max_pids: Some(100) }
}

fn isolator(root: &Path, enable_cfs: bool) -> CgroupsIsolator {
    CgroupsIsolator::new(options(root, enable_cfs), [Controller::Cpu, Controller::Mem, Controller::Pids])
}

fn config(id: &str, cpus: f64, mem_mb: f64, limits: ResourceLimits) -> ContainerConfig {
    ContainerConfig {
        container_id: id.into(),
        resources: Resources { cpus: Some(cpus), mem_mb: Some(mem_mb), ..Default::default() },
        limits,
        sandbox: PathBuf::from("/tmp/none"),
        ..Default::default()
    }
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}")).trim().to_string()
}

async fn prepared(iso: &CgroupsIsolator, c: &ContainerConfig) -> ContainerSpec {
    let mut spec = ContainerSpec::new(c);
    iso.prepare(c, &mut spec).await.expect("prepare");
    spec
}

#[tokio::test]
async fn v2_prepare_writes_weight_cpu_max_memory_and_pids() {
    let tmp = fake_v2();
    let iso = isolator(tmp.path(), true);
    let c = config("c1", 0.6, 64.0, ResourceLimits::default());
    let spec = prepared(&iso, &c).await;
    let dir = tmp.path().join("mezzo/c1");
    assert_eq!(spec.cgroup_path, "/mezzo/c1");
    // Mesos B1 on v2: weight 60, cpu.max "60000 100000", 64 MB low and max.
    assert_eq!(read(&dir, "cpu.weight"), "60");
    assert_eq!(read(&dir, "cpu.max"), "60000 100000");
    assert_eq!(read(&dir, "memory.max"), (64u64 << 20).to_string());
    assert_eq!(read(&dir, "memory.low"), (64u64 << 20).to_string());
    assert_eq!(read(&dir, "pids.max"), "100");
    let enabled = read(tmp.path(), "cgroup.subtree_control");
    for c in ["+cpu", "+memory", "+pids"] {
        assert!(enabled.contains(c), "{c} not enabled at the root: {enabled}");
    }
    // libcontainer would convert shares with its own formula; the weight
    // stays ours, the rest travels in the spec too.
    assert_eq!(spec.limits.cpu_shares, None);
    assert_eq!(spec.limits.cpu_quota_us, Some(60_000));
    assert_eq!(spec.limits.memory_limit_bytes, Some(64 << 20));
    assert_eq!(spec.limits.pids_limit, Some(100));
}

#[tokio::test]
async fn v2_cpu_max_follows_cfs_flag_and_limits() {
    let tmp = fake_v2();
    let no_cfs = isolator(tmp.path(), false);
    let spec = prepared(&no_cfs, &config("nocfs", 1.0, 64.0, ResourceLimits::default())).await;
    assert_eq!(read(&tmp.path().join("mezzo/nocfs"), "cpu.max"), "max 100000");
    assert_eq!(spec.limits.cpu_quota_us, None);
    // A cpu limit gives a quota even without CFS for requests; memory limit is the hard limit.
    let limited = config("limited", 0.2, 64.0, ResourceLimits { cpus: Some(0.5), mem_mb: Some(128.0) });
    prepared(&no_cfs, &limited).await;
    let dir = tmp.path().join("mezzo/limited");
    assert_eq!(read(&dir, "cpu.max"), "50000 100000");
    assert_eq!(read(&dir, "cpu.weight"), "20");
    assert_eq!(read(&dir, "memory.max"), (128u64 << 20).to_string());
    assert_eq!(read(&dir, "memory.low"), (64u64 << 20).to_string());
    // Infinite limits: no quota, no hard limit.
    let cfs = isolator(tmp.path(), true);
    let inf = config("inf", 1.0, 64.0, ResourceLimits { cpus: Some(f64::INFINITY), mem_mb: Some(f64::INFINITY) });
    prepared(&cfs, &inf).await;
    let dir = tmp.path().join("mezzo/inf");
    assert_eq!(read(&dir, "cpu.max"), "max 100000");
    assert_eq!(read(&dir, "memory.max"), "max");
}

#[tokio::test]
async fn v2_update_changes_cpu_and_only_raises_memory_max() {
    let tmp = fake_v2();
    let iso = isolator(tmp.path(), true);
    let spec = prepared(&iso, &config("up", 1.0, 128.0, ResourceLimits::default())).await;
    let dir = tmp.path().join("mezzo/up");
    let lower = Resources { cpus: Some(0.5), mem_mb: Some(64.0), ..Default::default() };
    iso.update(&spec, &lower, &ResourceLimits::default()).await.unwrap();
    assert_eq!(read(&dir, "cpu.weight"), "50");
    assert_eq!(read(&dir, "cpu.max"), "50000 100000");
    assert_eq!(read(&dir, "memory.low"), (64u64 << 20).to_string(), "soft limit follows down");
    assert_eq!(read(&dir, "memory.max"), (128u64 << 20).to_string(), "hard limit is never lowered");
    let raise = Resources { cpus: Some(2.0), mem_mb: Some(256.0), ..Default::default() };
    iso.update(&spec, &raise, &ResourceLimits::default()).await.unwrap();
    assert_eq!(read(&dir, "cpu.weight"), "200");
    assert_eq!(read(&dir, "memory.max"), (256u64 << 20).to_string());
    assert_eq!(read(&dir, "memory.low"), (256u64 << 20).to_string());
}

#[tokio::test]
async fn v2_usage_parses_cpu_memory_and_process_files() {
    let tmp = fake_v2();
    let iso = isolator(tmp.path(), true);
    let spec = prepared(&iso, &config("use", 1.0, 64.0, ResourceLimits::default())).await;
    let dir = tmp.path().join("mezzo/use");
    std::fs::write(
        dir.join("cpu.stat"),
        "usage_usec 3500000\nuser_usec 2500000\nsystem_usec 1000000\nnr_periods 40\nnr_throttled 7\nthrottled_usec 250000\n",
    )
    .unwrap();
    std::fs::write(dir.join("memory.stat"), "anon 8388608\nfile 4194304\nkernel 65536\n").unwrap();
    std::fs::write(dir.join("memory.current"), "12648448\n").unwrap();
    std::fs::write(dir.join("cgroup.procs"), "101\n102\n").unwrap();
    std::fs::write(dir.join("cgroup.threads"), "101\n102\n103\n").unwrap();
    let mut usage = Usage::default();
    iso.usage(&spec, &mut usage).await.unwrap();
    assert_eq!(usage.cpus_user_time_secs, Some(2.5));
    assert_eq!(usage.cpus_system_time_secs, Some(1.0));
    assert_eq!(usage.cpus_nr_periods, Some(40));
    assert_eq!(usage.cpus_nr_throttled, Some(7));
    assert_eq!(usage.cpus_throttled_time_secs, Some(0.25));
    assert_eq!(usage.cpus_limit, Some(1.0));
    assert_eq!(usage.mem_rss_bytes, Some(8 << 20));
    assert_eq!(usage.mem_cache_bytes, Some(4 << 20));
    assert_eq!(usage.mem_total_bytes, Some(12648448));
    assert_eq!(usage.mem_limit_bytes, Some(64 << 20));
    assert_eq!(usage.mem_soft_limit_bytes, Some(64 << 20));
    assert_eq!(usage.processes, Some(2));
    assert_eq!(usage.threads, Some(3));
}

#[tokio::test]
async fn v2_oom_kill_counter_fires_the_watch() {
    let tmp = fake_v2();
    let iso = isolator(tmp.path(), true);
    let spec = prepared(&iso, &config("oom", 1.0, 64.0, ResourceLimits::default())).await;
    let dir = tmp.path().join("mezzo/oom");
    std::fs::write(dir.join("memory.events"), "low 0\nhigh 0\nmax 3\noom 0\noom_kill 0\n").unwrap();
    std::fs::write(dir.join("memory.peak"), (64u64 << 20).to_string()).unwrap();
    let watch = iso.watch(&spec);
    tokio::pin!(watch);
    // Reaching memory.max without an OOM kill is no limitation.
    assert!(tokio::time::timeout(Duration::from_millis(400), &mut watch).await.is_err(), "fired without an oom kill");
    std::fs::write(dir.join("memory.events"), "low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n").unwrap();
    let limitation = tokio::time::timeout(Duration::from_secs(5), watch).await.expect("watch fires").unwrap();
    assert_eq!(limitation.reason, LimitationReason::Memory);
    assert_eq!(limitation.resources, vec!["mem".to_string()]);
    assert!(limitation.message.starts_with("Memory limit exceeded: Requested: 64MB Maximum Used: 64MB"), "{}", limitation.message);
}

#[tokio::test]
async fn v2_kill_writes_cgroup_kill_and_waits_for_the_kernel() {
    let tmp = fake_v2();
    let fs = CgroupFs::detect_at(tmp.path());
    let dir = fs.create("/mezzo/k1", &["cpu"]).unwrap().remove(0);
    std::fs::write(dir.join("cgroup.kill"), "").unwrap();
    std::fs::write(dir.join("cgroup.procs"), "4242\n").unwrap();
    // The "kernel" empties the cgroup a moment after the kill.
    let procs = dir.join("cgroup.procs");
    let kernel = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        std::fs::write(procs, "").unwrap();
    });
    let started = std::time::Instant::now();
    fs.kill("/mezzo/k1", Duration::from_secs(5)).expect("kill");
    assert!(started.elapsed() >= Duration::from_millis(150), "kill returned before the cgroup was empty");
    assert_eq!(read(&dir, "cgroup.kill"), "1");
    kernel.join().unwrap();
    // A cgroup that never empties is an error, not a hang.
    std::fs::write(dir.join("cgroup.procs"), "4242\n").unwrap();
    let err = fs.kill("/mezzo/k1", Duration::from_millis(200)).unwrap_err();
    assert!(err.to_string().contains("4242"), "{err}");
}

#[tokio::test]
async fn v2_recover_removes_cgroups_no_container_names() {
    let tmp = fake_v2();
    let iso = isolator(tmp.path(), true);
    let kept = prepared(&iso, &config("kept", 1.0, 64.0, ResourceLimits::default())).await;
    // An orphan as a crashed agent leaves it: empty (its processes gone).
    std::fs::create_dir_all(tmp.path().join("mezzo/orphan")).unwrap();
    iso.recover(std::slice::from_ref(&kept)).await.unwrap();
    assert!(!tmp.path().join("mezzo/orphan").exists(), "orphan cgroup survived recovery");
    assert!(tmp.path().join("mezzo/kept").is_dir());
}

fn context(root: &Path) -> IsolatorContext {
    IsolatorContext::new(root.join("runtime"), None, options(root, false))
}

fn names(list: &str) -> Vec<String> {
    parse_isolation(list)
}

#[test]
fn isolation_unknown_name_is_an_error_listing_the_known() {
    let tmp = fake_v2();
    let err = isolators_from_names(&names("cgroups/cpu,cgroups/gpu"), &context(tmp.path())).err().expect("unknown name");
    assert!(matches!(&err, ContainerizerError::UnknownIsolator { name, .. } if name == "cgroups/gpu"), "{err}");
    let text = err.to_string();
    assert!(text.contains("cgroups/gpu") && text.contains("namespaces/pid") && text.contains("cgroups/mem"), "{text}");
    let dup = isolators_from_names(&names("cgroups/cpu,cgroups/cpu"), &context(tmp.path())).err().expect("duplicate");
    assert!(dup.to_string().contains("more than once"), "{dup}");
}

#[test]
fn isolation_prepare_order_is_fixed_whatever_the_flag_order() {
    let tmp = fake_v2();
    let ctx = context(tmp.path());
    let order = |list: &str| -> Vec<&'static str> {
        isolators_from_names(&names(list), &ctx).unwrap().iter().map(|i| i.name()).collect()
    };
    let a = order("namespaces/uts,cgroups/mem,namespaces/pid,filesystem/linux,cgroups/cpu");
    let b = order("filesystem/linux,cgroups/cpu,cgroups/mem,namespaces/pid,namespaces/uts");
    assert_eq!(a, b);
    // One cgroups isolator for all cgroups/* names, after the filesystem.
    assert_eq!(a, vec!["filesystem/linux", "cgroups", "namespaces/pid", "namespaces/uts"]);
    // Every container gets a cgroup even when no cgroups/* is named.
    assert_eq!(order("namespaces/pid"), vec!["cgroups", "namespaces/pid"]);
    // Mesos aliases expand.
    assert_eq!(order("cgroups/all,filesystem/linux"), vec!["filesystem/linux", "cgroups"]);
    // The default builds, and every known name has an isolator.
    assert!(!order(DEFAULT_ISOLATION).is_empty());
    assert!(isolators_from_names(&KNOWN_ISOLATORS.iter().map(|s| s.to_string()).collect::<Vec<_>>(), &ctx).is_ok());
}
