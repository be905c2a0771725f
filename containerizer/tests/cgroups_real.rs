//! The cgroups isolator on the kernel's real cgroups, with real
//! rust-backend containers: the values in the cgroup files, a fork bomb,
//! an OOM, usage and update. Each test asserts on the files of the version
//! it runs on: v1's here, v2's (memory.max, cpu.max, cpu.weight, pids.max,
//! cgroup.procs) in the guest of scripts/v2-guest.sh, where `make test` runs
//! this binary again. Run as root; each test has its own roots.

mod cgroups_support;

use cgroups_support::{Harness, Options, WAIT};
use mezzo_containerizer::{LimitationReason, ResourceLimits, Resources};
use std::time::Duration;

fn mib(n: u64) -> String {
    (n << 20).to_string()
}

/// The soft and hard memory limit files of the kernel's cgroup version.
fn memory_files(h: &Harness) -> (&'static str, &'static str) {
    if h.v2() {
        ("memory.low", "memory.max")
    } else {
        ("memory.soft_limit_in_bytes", "memory.limit_in_bytes")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cpu_shares_from_cpus_and_no_quota_without_cfs() {
    mezzo_testkit::require_root!();
    let h = Harness::new("shares", Options::default());
    let c = h.config("shares", "sleep 1000", 0.5, 64.0);
    let _l = h.start(&c).await;
    if h.v2() {
        assert_eq!(h.read("cpu", "shares", "cpu.weight"), "50");
        assert_eq!(h.read("cpu", "shares", "cpu.max"), "max 100000");
    } else {
        assert_eq!(h.read("cpu", "shares", "cpu.shares"), "512");
        assert_eq!(h.read("cpu", "shares", "cpu.cfs_quota_us"), "-1");
    }
    h.containerizer.destroy("shares").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn cfs_quota_from_request_when_enabled() {
    mezzo_testkit::require_root!();
    let h = Harness::new("cfs", Options { enable_cfs: true, ..Default::default() });
    let c = h.config("cfs", "sleep 1000", 0.6, 64.0);
    let _l = h.start(&c).await;
    if h.v2() {
        assert_eq!(h.read("cpu", "cfs", "cpu.weight"), "60");
        assert_eq!(h.read("cpu", "cfs", "cpu.max"), "60000 100000");
    } else {
        assert_eq!(h.read("cpu", "cfs", "cpu.shares"), "614");
        assert_eq!(h.read("cpu", "cfs", "cpu.cfs_period_us"), "100000");
        assert_eq!(h.read("cpu", "cfs", "cpu.cfs_quota_us"), "60000");
    }
    h.containerizer.destroy("cfs").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn cpu_limit_gives_quota_and_infinite_limit_none() {
    mezzo_testkit::require_root!();
    let h = Harness::new("cpulim", Options { enable_cfs: true, ..Default::default() });
    let mut c = h.config("lim", "sleep 1000", 0.2, 64.0);
    c.limits = ResourceLimits { cpus: Some(1.5), mem_mb: None };
    let _a = h.start(&c).await;
    if h.v2() {
        assert_eq!(h.read("cpu", "lim", "cpu.weight"), "20");
        assert_eq!(h.read("cpu", "lim", "cpu.max"), "150000 100000");
    } else {
        assert_eq!(h.read("cpu", "lim", "cpu.shares"), "204");
        assert_eq!(h.read("cpu", "lim", "cpu.cfs_quota_us"), "150000");
    }
    let mut c = h.config("inf", "sleep 1000", 0.2, 64.0);
    c.limits = ResourceLimits { cpus: Some(f64::INFINITY), mem_mb: None };
    let _b = h.start(&c).await;
    let (file, none) = if h.v2() { ("cpu.max", "max 100000") } else { ("cpu.cfs_quota_us", "-1") };
    assert_eq!(h.read("cpu", "inf", file), none, "an infinite limit is no quota even with CFS on");
    h.containerizer.destroy("lim").await.unwrap();
    h.containerizer.destroy("inf").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_soft_limit_is_the_request_and_hard_limit_the_limit() {
    mezzo_testkit::require_root!();
    let h = Harness::new("memlim", Options::default());
    let mut c = h.config("lim", "sleep 1000", 0.1, 64.0);
    c.limits = ResourceLimits { cpus: None, mem_mb: Some(96.0) };
    let _a = h.start(&c).await;
    let (soft, hard) = memory_files(&h);
    assert_eq!(h.read("memory", "lim", soft), mib(64));
    assert_eq!(h.read("memory", "lim", hard), mib(96));
    let mut c = h.config("inf", "sleep 1000", 0.1, 16.0);
    c.limits = ResourceLimits { cpus: None, mem_mb: Some(f64::INFINITY) };
    let _b = h.start(&c).await;
    // Mesos's 32 MB floor for the soft limit; no hard limit at all.
    assert_eq!(h.read("memory", "inf", soft), mib(32));
    let unlimited = h.read("memory", "inf", hard);
    assert!(unlimited == "max" || unlimited.parse::<u64>().unwrap() >= 1 << 62, "hard limit {unlimited} should be unlimited");
    h.containerizer.destroy("lim").await.unwrap();
    h.containerizer.destroy("inf").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn fork_bomb_stops_at_pids_max_and_the_host_is_unharmed() {
    mezzo_testkit::require_root!();
    let h = Harness::new("forkbomb", Options { max_pids: Some(32), ..Default::default() });
    // Bounded, so that a broken limit fails the test instead of the host.
    // The forking shell dies on its first refused fork; the init, an exec'd
    // sleep, keeps the container (and its cgroup) alive meanwhile.
    let c = h.config("bomb", "(i=0; while [ $i -lt 300 ]; do sleep 100 & i=$((i+1)); done) & exec sleep 100", 0.5, 256.0);
    let _l = h.start(&c).await;
    assert_eq!(h.read("pids", "bomb", "pids.max"), "32");
    let events = |h: &Harness| h.read("pids", "bomb", "pids.events");
    h.until("a fork refused by pids.max", || {
        std::fs::read_to_string(h.cgroup("pids", "bomb").join("pids.events"))
            .map(|t| t.split_whitespace().nth(1).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0) > 0)
            .unwrap_or(false)
    })
    .await;
    let current: u64 = h.read("pids", "bomb", "pids.current").parse().unwrap();
    assert!(current <= 32, "pids.current {current} above pids.max; events: {}", events(&h));
    // The host still forks.
    let out = std::process::Command::new("true").status().expect("host fork");
    assert!(out.success());
    tokio::time::timeout(WAIT, h.containerizer.destroy("bomb")).await.expect("destroy in time").expect("destroy");
    assert!(!h.cgroup("pids", "bomb").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn oom_is_reported_as_a_memory_limitation() {
    mezzo_testkit::require_root!();
    let h = Harness::new("oom", Options::default());
    // tail buffers an endless line: it grows until the 32 MB limit.
    let c = h.config("oom", "tail /dev/zero", 0.5, 32.0);
    let dir = h.containerizer.prepare(&c).await.expect("prepare");
    let mut launcher = mezzo_containerizer::launcher(&dir, &cgroups_support::launcher_dir()).expect("launcher");
    // As the agent does: watch from before the start, so that an OOM in
    // the first milliseconds is not missed.
    let watch = tokio::time::timeout(WAIT, h.containerizer.watch("oom"));
    let start = async { tokio::time::timeout(WAIT, launcher.start()).await.expect("start in time").expect("start") };
    let (limitation, ()) = tokio::join!(watch, start);
    let limitation = limitation.expect("oom in time").expect("watch");
    assert_eq!(limitation.reason, LimitationReason::Memory);
    assert_eq!(limitation.resources, vec!["mem".to_string()]);
    assert!(limitation.message.starts_with("Memory limit exceeded: Requested: 32MB Maximum Used: "), "{}", limitation.message);
    tokio::time::timeout(WAIT, h.containerizer.destroy("oom")).await.expect("destroy in time").expect("destroy");
    let status = tokio::time::timeout(WAIT, launcher.wait()).await.expect("end in time").expect("wait");
    assert!(!status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_stays_quiet_for_a_task_within_its_limit() {
    mezzo_testkit::require_root!();
    let h = Harness::new("nooom", Options::default());
    let c = h.config("calm", "sleep 1000", 0.5, 64.0);
    let _l = h.start(&c).await;
    let quiet = tokio::time::timeout(Duration::from_millis(1500), h.containerizer.watch("calm")).await;
    assert!(quiet.is_err(), "watch fired without an oom: {quiet:?}");
    h.containerizer.destroy("calm").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_reports_growing_cpu_time_and_memory() {
    mezzo_testkit::require_root!();
    let h = Harness::new("usage", Options { enable_cfs: true, ..Default::default() });
    let c = h.config("busy", "while :; do :; done", 1.0, 64.0);
    let _l = h.start(&c).await;
    let first = h.containerizer.usage("busy").await.expect("usage");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let second = h.containerizer.usage("busy").await.expect("usage");
    let (u1, u2) = (first.cpus_user_time_secs.unwrap(), second.cpus_user_time_secs.unwrap());
    assert!(u2 - u1 >= 0.3, "user time {u1} -> {u2} for a busy loop");
    assert!(second.cpus_system_time_secs.is_some());
    assert!(second.timestamp > first.timestamp);
    assert!(second.mem_rss_bytes.unwrap() > 0, "{second:?}");
    assert!(second.mem_total_bytes.unwrap() >= second.mem_rss_bytes.unwrap());
    assert_eq!(second.mem_limit_bytes, Some(64 << 20));
    assert_eq!(second.mem_soft_limit_bytes, Some(64 << 20));
    assert_eq!(second.cpus_limit, Some(1.0));
    assert!(second.cpus_nr_periods.unwrap() > 0);
    assert!(second.processes.unwrap() >= 1 && second.threads.unwrap() >= 1, "{second:?}");
    h.containerizer.destroy("busy").await.unwrap();
    assert!(h.containerizer.usage("busy").await.is_err(), "usage after destroy");
}

#[tokio::test(flavor = "multi_thread")]
async fn update_changes_cpu_both_ways_and_only_raises_the_memory_hard_limit() {
    mezzo_testkit::require_root!();
    let h = Harness::new("update", Options { enable_cfs: true, ..Default::default() });
    let c = h.config("up", "sleep 1000", 0.5, 64.0);
    let _l = h.start(&c).await;
    let res = |cpus: f64, mem: f64| Resources { cpus: Some(cpus), mem_mb: Some(mem), ..Default::default() };
    let none = ResourceLimits::default();
    // (weight or shares, quota) as the kernel's version spells them.
    let cpu = |h: &Harness| {
        if h.v2() {
            (h.read("cpu", "up", "cpu.weight"), h.read("cpu", "up", "cpu.max"))
        } else {
            (h.read("cpu", "up", "cpu.shares"), h.read("cpu", "up", "cpu.cfs_quota_us"))
        }
    };
    let (soft, hard) = memory_files(&h);
    h.containerizer.update("up", &res(2.0, 128.0), &none).await.unwrap();
    let want = if h.v2() { ("200", "200000 100000") } else { ("2048", "200000") };
    assert_eq!(cpu(&h), (want.0.to_string(), want.1.to_string()));
    assert_eq!(h.read("memory", "up", hard), mib(128));
    assert_eq!(h.read("memory", "up", soft), mib(128));
    h.containerizer.update("up", &res(0.25, 48.0), &none).await.unwrap();
    let want = if h.v2() { ("25", "25000 100000") } else { ("256", "25000") };
    assert_eq!(cpu(&h), (want.0.to_string(), want.1.to_string()));
    assert_eq!(h.read("memory", "up", soft), mib(48));
    assert_eq!(h.read("memory", "up", hard), mib(128), "hard limit must not be lowered");
    // An unknown container is ignored, as in Mesos.
    h.containerizer.update("nobody", &res(1.0, 64.0), &none).await.expect("unknown is ignored");
    h.containerizer.destroy("up").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn container_is_placed_in_every_controller_and_isolate_is_idempotent() {
    mezzo_testkit::require_root!();
    let h = Harness::new("place", Options::default());
    let c = h.config("place", "sleep 1000", 0.5, 64.0);
    let _l = h.start(&c).await;
    let init = h.init_pid("place");
    h.containerizer.isolate("place", init).await.expect("isolate");
    // On v2 every name is the one unified cgroup, whose controllers must
    // all be enabled.
    for controller in ["cpu", "cpuacct", "memory", "pids", "blkio"] {
        let procs = h.read(controller, "place", "cgroup.procs");
        assert!(procs.lines().any(|l| l == init.to_string()), "{controller}: {procs}");
    }
    if h.v2() {
        let parent = h.cgroup("", "place").parent().unwrap().join("cgroup.subtree_control");
        let enabled = std::fs::read_to_string(&parent).unwrap();
        for c in ["cpu", "memory", "pids", "io"] {
            assert!(enabled.split_whitespace().any(|e| e == c), "{c} not enabled for the container: {enabled}");
        }
    }
    h.containerizer.destroy("place").await.unwrap();
    for controller in ["cpu", "memory", "pids", "blkio", "freezer"] {
        assert!(!h.cgroup(controller, "place").exists(), "{controller} cgroup left");
    }
}
