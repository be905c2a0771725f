//! Volumes (host paths, sandbox paths, image volumes) and `disk/du`, in
//! real containers.

mod isolation_support;

use isolation_support::{host_mounts_under, shell, Harness, IMAGE, IMAGE2, WAIT};
use mezzo_containerizer::{LimitationReason, Volume, VolumeSource};
use std::path::PathBuf;
use std::time::Duration;

fn host(path: impl Into<PathBuf>, container_path: &str, read_only: bool) -> Volume {
    Volume { container_path: container_path.into(), source: VolumeSource::HostPath(path.into()), read_only }
}

fn sandbox_path(rel: &str, container_path: &str, read_only: bool) -> Volume {
    Volume { container_path: container_path.into(), source: VolumeSource::SandboxPath(rel.into()), read_only }
}

#[tokio::test(flavor = "multi_thread")]
async fn host_path_read_write_shows_on_the_host() {
    mezzo_testkit::require_root!();
    let h = Harness::new("vol-rw");
    let dir = h.tmp.path().join("hostdir");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("in"), "from-host\n").unwrap();
    let mut c = h.config("hostrw", Some(IMAGE), shell("cat /data/in; echo from-task > /data/out"));
    c.volumes.push(host(&dir, "/data", false));
    assert_eq!(h.run_ok(&c).await, "from-host\n");
    assert_eq!(std::fs::read_to_string(dir.join("out")).unwrap(), "from-task\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn host_path_read_only_refuses_writes() {
    mezzo_testkit::require_root!();
    let h = Harness::new("vol-ro");
    let dir = h.tmp.path().join("hostdir");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("in"), "from-host\n").unwrap();
    let mut c = h.config("hostro", Some(IMAGE), shell("cat /data/in; echo x > /data/out"));
    c.volumes.push(host(&dir, "/data", true));
    let (status, out, err) = h.run(&c).await;
    assert_eq!(out, "from-host\n");
    assert!(!status.success() && err.contains("Read-only file system"), "{status}: {err}");
    assert!(!dir.join("out").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn host_file_volume_and_relative_container_path() {
    mezzo_testkit::require_root!();
    let h = Harness::new("vol-file");
    let confdir = h.tmp.path().join("confdir");
    std::fs::create_dir_all(&confdir).unwrap();
    let file = confdir.join("config.txt");
    std::fs::write(&file, "setting=1\n").unwrap();
    let mut c = h.config("hostfile", Some(IMAGE), shell("cat /etc/app.conf; cat $MESOS_SANDBOX/conf/config.txt"));
    c.volumes.push(host(&file, "/etc/app.conf", true));
    // Relative: under the sandbox as the task sees it.
    c.volumes.push(host(&confdir, "conf", true));
    assert_eq!(h.run_ok(&c).await, "setting=1\nsetting=1\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn host_rootfs_mounts_only_onto_existing_paths_and_leaks_nothing() {
    mezzo_testkit::require_root!();
    let h = Harness::new("vol-hostroot");
    let src = h.tmp.path().join("src");
    let target = h.tmp.path().join("target");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(src.join("f"), "mounted\n").unwrap();

    let missing = h.tmp.path().join("no/such/dir");
    let mut c = h.config("hostroot-missing", None, shell("true"));
    c.volumes.push(host(&src, missing.to_str().unwrap(), false));
    let err = h.containerizer.prepare(&c).await.unwrap_err().to_string();
    assert!(err.contains("does not exist on the host"), "{err}");
    assert!(!missing.exists(), "the mount point was made on the host");

    let mut c = h.config("hostroot", None, shell(&format!("cat {}/f", target.display())));
    c.volumes.push(host(&src, target.to_str().unwrap(), true));
    assert_eq!(h.run_ok(&c).await, "mounted\n");
    assert!(std::fs::read_dir(&target).unwrap().next().is_none(), "the bind showed on the host");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_or_relative_host_paths_are_refused() {
    mezzo_testkit::require_root!();
    let h = Harness::new("vol-badhost");
    let mut c = h.config("badhost", Some(IMAGE), shell("true"));
    c.volumes.push(host("/no/such/host/path", "/data", false));
    let err = h.containerizer.prepare(&c).await.unwrap_err().to_string();
    assert!(err.contains("/no/such/host/path") && err.contains("does not exist"), "{err}");
    let mut c = h.config("relhost", Some(IMAGE), shell("true"));
    c.volumes.push(host("relative/dir", "/data", false));
    let err = h.containerizer.prepare(&c).await.unwrap_err().to_string();
    assert!(err.contains("must be absolute"), "{err}");
    assert!(!h.runtime_root().join("relhost").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_path_volume_lands_in_the_sandbox() {
    mezzo_testkit::require_root!();
    let h = Harness::new("vol-sandbox");
    let mut c = h.config("sbpath", Some(IMAGE), shell("echo abc > /tmp/file"));
    c.volumes.push(sandbox_path("tmp", "/tmp", false));
    h.run_ok(&c).await;
    assert_eq!(std::fs::read_to_string(c.sandbox.join("tmp/file")).unwrap(), "abc\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_path_read_only_refuses_writes() {
    mezzo_testkit::require_root!();
    let h = Harness::new("vol-sandboxro");
    let mut c = h.config("sbro", Some(IMAGE), shell("cat /shared/seed; echo abc > /shared/file"));
    std::fs::create_dir_all(c.sandbox.join("shared")).unwrap();
    std::fs::write(c.sandbox.join("shared/seed"), "seed\n").unwrap();
    c.volumes.push(sandbox_path("shared", "/shared", true));
    let (status, out, err) = h.run(&c).await;
    assert_eq!(out, "seed\n");
    assert!(!status.success() && err.contains("Read-only file system"), "{status}: {err}");
    assert!(!c.sandbox.join("shared/file").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_path_escapes_are_refused_at_prepare() {
    mezzo_testkit::require_root!();
    let h = Harness::new("vol-escape");
    let outside = h.tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    for (i, rel) in ["../outside", "a/../../outside", "/etc", "link", "link/deeper"].iter().enumerate() {
        let id = format!("escape{i}");
        let mut c = h.config(&id, Some(IMAGE), shell("true"));
        std::os::unix::fs::symlink(&outside, c.sandbox.join("link")).unwrap();
        c.volumes.push(sandbox_path(rel, "/data", false));
        let err = h.containerizer.prepare(&c).await.unwrap_err().to_string();
        assert!(
            err.contains("escapes the sandbox") || err.contains("must not contain '..'") || err.contains("must be relative"),
            "{rel}: {err}"
        );
        assert!(!h.runtime_root().join(&id).exists(), "{rel}: a failed prepare left its runtime directory");
    }
    assert!(std::fs::read_dir(&outside).unwrap().next().is_none(), "something was made outside the sandbox");
    // A relative container path cannot escape through the sandbox either.
    let mut c = h.config("escape-target", Some(IMAGE), shell("true"));
    c.volumes.push(host(h.tmp.path(), "../../etc", true));
    let err = h.containerizer.prepare(&c).await.unwrap_err().to_string();
    assert!(err.contains("must not contain '..'"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn image_volumes_are_mounted_read_only() {
    mezzo_testkit::require_root!();
    let h = Harness::new("vol-image");
    let image_volume = |reference: &str, path: &str| Volume {
        container_path: path.into(),
        source: VolumeSource::Image(reference.into()),
        read_only: true,
    };
    // One layer is bound, two are stacked as an overlay.
    let script = "cat /one/etc/marker; cat /two/etc/marker /two/etc/marker2; \
                  touch /one/x 2>/dev/null || echo one-ro; touch /two/x 2>/dev/null || echo two-ro";
    let mut c = h.config("imgvol", Some(IMAGE), shell(script));
    c.volumes.push(image_volume(IMAGE, "/one"));
    c.volumes.push(image_volume(IMAGE2, "/two"));
    assert_eq!(h.run_ok(&c).await, "from-image\nfrom-image\nsecond-layer\none-ro\ntwo-ro\n");
    for reference in [IMAGE, IMAGE2] {
        for layer in h.store.get(reference).await.unwrap().layers {
            assert!(!layer.join("x").exists(), "a task wrote into layer {}", layer.display());
        }
    }

    let mut c = h.config("imgvol-rw", Some(IMAGE), shell("true"));
    c.volumes.push(Volume { read_only: false, ..image_volume(IMAGE, "/one") });
    let err = h.containerizer.prepare(&c).await.unwrap_err().to_string();
    assert!(err.contains("read-only"), "{err}");
    let mut c = h.config("imgvol-missing", Some(IMAGE), shell("true"));
    c.volumes.push(image_volume("no-such-volume-image:1", "/one"));
    let err = h.containerizer.prepare(&c).await.unwrap_err().to_string();
    assert!(err.contains("no-such-volume-image"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn disk_quota_exceeded_ends_with_a_disk_limitation() {
    mezzo_testkit::require_root!();
    let h = Harness::with("vol-du", |c| {
        c.isolation.push("disk/du".into());
        c.container_disk_watch_interval = Duration::from_millis(200);
        c.enforce_container_disk_quota = true;
    });
    let mut c = h.config("du", Some(IMAGE), shell("dd if=/dev/zero of=$MESOS_SANDBOX/big bs=1M count=2 && sync && sleep 1000"));
    c.resources.disk_mb = Some(1.0);
    let mut launcher = h.start(&c).await;
    let limitation = tokio::time::timeout(WAIT, h.containerizer.watch("du")).await.expect("limitation in time").unwrap();
    assert_eq!(limitation.reason, LimitationReason::Disk);
    assert_eq!(limitation.resources, vec!["disk".to_string()]);
    assert!(limitation.message.starts_with("Disk usage (") && limitation.message.ends_with("exceeds quota (1MB)"), "{}", limitation.message);
    h.containerizer.destroy("du").await.unwrap();
    let status = tokio::time::timeout(WAIT, launcher.wait()).await.expect("end in time").expect("wait");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(host_mounts_under(h.tmp.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn disk_usage_is_reported_without_enforcement() {
    mezzo_testkit::require_root!();
    let h = Harness::with("vol-dunoenf", |c| {
        c.isolation.push("disk/du".into());
        c.container_disk_watch_interval = Duration::from_millis(200);
    });
    // Writes into the image rootfs count too (its upper directory).
    let mut c = h.config(
        "dunoenf",
        Some(IMAGE),
        shell("dd if=/dev/zero of=$MESOS_SANDBOX/big bs=1M count=2 && dd if=/dev/zero of=/root/big bs=1M count=1 && sync && touch $MESOS_SANDBOX/done && sleep 1000"),
    );
    c.resources.disk_mb = Some(1.0);
    let _launcher = h.start(&c).await;
    let deadline = std::time::Instant::now() + WAIT;
    while !c.sandbox.join("done").exists() {
        assert!(std::time::Instant::now() < deadline, "task never finished writing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Past the interval, so the next usage measures afresh.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let usage = h.containerizer.usage("dunoenf").await.unwrap();
    assert_eq!(usage.disk_limit_bytes, Some(1 << 20));
    let used = usage.disk_used_bytes.unwrap();
    assert!(used >= 3 << 20, "sandbox and rootfs writes count: {used}");
    // Without enforcement the quota never ends it.
    assert!(tokio::time::timeout(Duration::from_secs(1), h.containerizer.watch("dunoenf")).await.is_err());
    h.containerizer.destroy("dunoenf").await.unwrap();
}
