//! The composing containerizer's lifecycle with real rust-backend
//! containers: destroy from every state, and recovery by a new containerizer
//! over the same runtime root (an agent restart). Run as root.

mod cgroups_support;

use async_trait::async_trait;
use cgroups_support::{cgroup_mounts, Harness, Options, WAIT};
use mezzo_containerizer::isolators::{ProvisionedImage, Provisioner};
use mezzo_containerizer::ContainerizerError;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

fn alive(pid: i32) -> bool {
    // A zombie has been killed already; only a live process counts.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).is_some_and(|st| st != "Z"))
        .unwrap_or(false)
}

fn no_cgroup_left(h: &Harness, id: &str) {
    for m in cgroup_mounts() {
        let d = m.join(&h.cgroups_root).join(id);
        assert!(!d.exists(), "cgroup {} left", d.display());
    }
}

/// An image store whose pull never finishes until it is dropped: the
/// container stays in provisioning.
struct StuckPull {
    entered: Arc<Notify>,
}

#[async_trait]
impl Provisioner for StuckPull {
    async fn provision(&self, _lease: &str, _reference: &str) -> Result<ProvisionedImage, String> {
        self.entered.notify_one();
        std::future::pending().await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn destroy_while_provisioning_cancels_prepare_and_removes_its_leftovers() {
    mezzo_testkit::require_root!();
    let entered = Arc::new(Notify::new());
    let provisioner = Arc::new(StuckPull { entered: entered.clone() });
    let h = Harness::new("destroy-prep", Options { provisioner: Some(provisioner), ..Default::default() });
    let mut c = h.config("prep", "true", 0.5, 64.0);
    c.image = Some("busybox:stuck".into());
    let prepare = h.containerizer.prepare(&c);
    let destroy = async {
        tokio::time::timeout(WAIT, entered.notified()).await.expect("pull started");
        assert_eq!(h.containerizer.containers(), vec!["prep".to_string()]);
        tokio::time::timeout(WAIT, h.containerizer.destroy("prep")).await.expect("destroy does not hang")
    };
    let (prepared, destroyed) = tokio::join!(prepare, destroy);
    destroyed.expect("destroy");
    assert!(matches!(prepared, Err(ContainerizerError::DestroyedWhilePreparing(ref id)) if id == "prep"), "{prepared:?}");
    assert!(!h.runtime_root().join("prep").exists(), "runtime directory left");
    assert!(h.containerizer.containers().is_empty());
    no_cgroup_left(&h, "prep");
    // The id is free again.
    let c = h.config("prep", "true", 0.5, 64.0);
    h.containerizer.prepare(&c).await.expect("prepare again");
    h.containerizer.destroy("prep").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn destroy_while_running_kills_everything_and_twice_is_fine() {
    mezzo_testkit::require_root!();
    let h = Harness::new("destroy-run", Options::default());
    let c = h.config("run", "sleep 1000 & sleep 1000", 0.5, 64.0);
    let mut launcher = h.start(&c).await;
    let init = h.init_pid("run");
    assert!(alive(init));
    // Two destroys at once, then a third: all succeed, none hangs.
    let (a, b) = tokio::join!(h.containerizer.destroy("run"), h.containerizer.destroy("run"));
    a.expect("first destroy");
    b.expect("concurrent destroy");
    h.containerizer.destroy("run").await.expect("destroy again");
    let status = tokio::time::timeout(WAIT, launcher.wait()).await.expect("end in time").expect("wait");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert!(!alive(init), "init survived destroy");
    no_cgroup_left(&h, "run");
    assert!(!h.runtime_root().join("run").exists());
    assert!(h.containerizer.containers().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn destroy_of_a_prepared_never_started_container_and_of_an_unknown_one() {
    mezzo_testkit::require_root!();
    let h = Harness::new("destroy-prepared", Options::default());
    let c = h.config("idle", "true", 0.5, 64.0);
    h.containerizer.prepare(&c).await.expect("prepare");
    assert!(h.cgroup("memory", "idle").is_dir(), "prepare creates the cgroup");
    h.containerizer.destroy("idle").await.expect("destroy prepared");
    no_cgroup_left(&h, "idle");
    h.containerizer.destroy("never-existed").await.expect("destroy unknown");
    assert!(h.containerizer.containers().is_empty());
    assert!(matches!(h.containerizer.usage("never-existed").await, Err(ContainerizerError::UnknownContainer(_))));
}

#[tokio::test(flavor = "multi_thread")]
async fn recover_keeps_named_containers_and_destroys_orphans() {
    mezzo_testkit::require_root!();
    let h = Harness::new("recover", Options::default());
    let kept = h.config("kept", "sleep 1000", 0.5, 64.0);
    let gone = h.config("gone", "sleep 1000", 0.5, 64.0);
    let mut kept_launcher = h.start(&kept).await;
    let mut gone_launcher = h.start(&gone).await;
    let (kept_pid, gone_pid) = (h.init_pid("kept"), h.init_pid("gone"));
    // A cgroup of ours that no runtime directory names, with a process in it.
    let orphan = h.cgroup("memory", "orphan");
    std::fs::create_dir_all(&orphan).unwrap();
    let mut stray = std::process::Command::new("sleep").arg("1000").spawn().unwrap();
    std::fs::write(orphan.join("cgroup.procs"), stray.id().to_string()).unwrap();

    // The agent restarts: a new containerizer over the same roots.
    let restarted = h.new_containerizer();
    let checkpointed: HashSet<String> = ["kept".to_string()].into();
    let recovered = tokio::time::timeout(WAIT, restarted.recover(&checkpointed)).await.expect("recover in time").unwrap();
    assert_eq!(recovered, vec!["kept".to_string()]);
    assert_eq!(restarted.containers(), vec!["kept".to_string()]);

    assert!(alive(kept_pid), "a recovered container keeps running");
    let usage = restarted.usage("kept").await.expect("usage of a recovered container");
    assert_eq!(usage.mem_limit_bytes, Some(64 << 20));

    let status = tokio::time::timeout(WAIT, gone_launcher.wait()).await.expect("end in time").expect("wait");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert!(!alive(gone_pid));
    assert!(!h.runtime_root().join("gone").exists());
    no_cgroup_left(&h, "gone");

    let reaped = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(st) = stray.try_wait().unwrap() {
                return st;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("orphan cgroup's process killed");
    assert!(!reaped.success());
    no_cgroup_left(&h, "orphan");

    restarted.destroy("kept").await.unwrap();
    let status = tokio::time::timeout(WAIT, kept_launcher.wait()).await.expect("end in time").expect("wait");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert!(Path::new(&h.runtime_root()).read_dir().unwrap().next().is_none(), "runtime root not empty");
}
