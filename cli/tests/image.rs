//! The real `mezzo` binary on an image store directory: import, ls, rm, gc and pull
//! from a local archive directory, with an image made from Debian's busybox-static.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use mezzo_images::build::{build_image, layer_tar_from_dir, ArchiveFormat, ImageSpec};
use mezzo_images::ImageStore;

const BUSYBOX: &str = "/bin/busybox";

/// A root filesystem with busybox as `/bin/busybox` and `/bin/sh`.
fn busybox_rootfs(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::create_dir_all(rootfs.join("tmp")).unwrap();
    assert!(
        Path::new(BUSYBOX).is_file(),
        "{BUSYBOX} is missing: install busybox-static (scripts/setup-host.sh)"
    );
    fs::copy(BUSYBOX, rootfs.join("bin/busybox")).unwrap();
    fs::set_permissions(
        rootfs.join("bin/busybox"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    rootfs
}

/// The rootfs as a tarball, as `docker export` would give it.
fn rootfs_tarball(dir: &Path) -> PathBuf {
    let rootfs = busybox_rootfs(dir);
    let tar = dir.join("rootfs.tar");
    fs::write(&tar, layer_tar_from_dir(&rootfs, 1_700_000_000).unwrap()).unwrap();
    tar
}

/// Runs `mezzo image --store <store> <args>`, bounded in time.
fn mezzo_image(store: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mezzo"))
        .arg("image")
        .arg("--store")
        .arg(store)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("mezzo image {args:?} did not finish in 60s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn ok(output: Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "mezzo failed: {}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn failed(output: Output) -> String {
    assert!(
        !output.status.success(),
        "mezzo succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn import_ls_rm() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = rootfs_tarball(tmp.path());
    let store = tmp.path().join("store");

    let out = ok(mezzo_image(
        &store,
        &["import", tar.to_str().unwrap(), "mybox:1.0"],
    ));
    assert_eq!(out.trim(), "docker.io/library/mybox:1.0");

    let out = ok(mezzo_image(&store, &["ls"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let header: Vec<&str> = lines[0]
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(header, ["REFERENCE", "LAYERS", "SIZE", "LAST USED"]);
    let row: Vec<&str> = lines[1]
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(row[0], "mybox:1.0");
    assert_eq!(row[1], "1");
    // busybox-static is a megabyte or two.
    assert!(row[2].ends_with("MB"), "{out}");
    assert!(row[3].ends_with("ago"), "{out}");

    // The agent finds the imported image in the same store.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let image = rt
        .block_on(
            ImageStore::open(store.clone(), None)
                .unwrap()
                .get("mybox:1.0"),
        )
        .unwrap();
    assert!(image.layers[0].join("bin/busybox").is_file());

    let out = ok(mezzo_image(&store, &["rm", "mybox:1.0"]));
    assert!(out.starts_with("Deleted: mybox:1.0 (1 layer, "), "{out}");
    assert_eq!(
        ok(mezzo_image(&store, &["ls"])).trim(),
        "REFERENCE   LAYERS   SIZE   LAST USED"
    );
    assert!(fs::read_dir(store.join("layers")).unwrap().next().is_none());

    let err = failed(mezzo_image(&store, &["rm", "mybox:1.0"]));
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn gc_spares_leased_and_recent_images() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = rootfs_tarball(tmp.path());
    let store = tmp.path().join("store");
    for name in ["one:1", "two:1"] {
        ok(mezzo_image(
            &store,
            &["import", tar.to_str().unwrap(), name],
        ));
    }

    // Both were used a moment ago.
    let out = ok(mezzo_image(&store, &["gc", "--keep-recent", "10mins"]));
    assert!(out.starts_with("Deleted images: 0\n"), "{out}");
    assert!(out.contains("Total reclaimed space: 0B"), "{out}");

    // A container (as the agent records it) uses `one`: rm refuses it and gc keeps it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let handle = ImageStore::open(store.clone(), None).unwrap();
    let one = rt.block_on(handle.get("one:1")).unwrap();
    handle.acquire("container-7", &one).unwrap();
    let err = failed(mezzo_image(&store, &["rm", "one:1"]));
    assert!(err.contains("container-7"), "{err}");

    let out = ok(mezzo_image(&store, &["gc"]));
    assert!(
        out.starts_with("Deleted images: 1\nDeleted layers: 0\n"),
        "{out}"
    );
    let ls = ok(mezzo_image(&store, &["ls"]));
    assert!(ls.contains("one:1") && !ls.contains("two:1"), "{ls}");

    handle.release("container-7").unwrap();
    let out = ok(mezzo_image(&store, &["gc"]));
    assert!(
        out.starts_with("Deleted images: 1\nDeleted layers: 1\n"),
        "{out}"
    );
    // The unpacked busybox and its layer blob: a few megabytes.
    assert!(out.trim_end().ends_with("MB"), "{out}");
    assert!(!ok(mezzo_image(&store, &["ls"])).contains("one:1"));
}

#[test]
fn pull_from_an_archive_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = busybox_rootfs(tmp.path());
    let archives = tmp.path().join("archives");
    fs::create_dir_all(&archives).unwrap();
    let image = build_image(
        &ImageSpec::new("busybox:latest"),
        vec![layer_tar_from_dir(&rootfs, 0).unwrap()],
    )
    .unwrap();
    image
        .write_archive(&archives.join("busybox.tar"), ArchiveFormat::Docker)
        .unwrap();
    let store = tmp.path().join("store");

    let out = ok(mezzo_image(
        &store,
        &["pull", "busybox", "--registry", archives.to_str().unwrap()],
    ));
    assert_eq!(
        out,
        "Pulled busybox:latest (1 layer)\ndocker.io/library/busybox:latest\n"
    );
    assert!(ok(mezzo_image(&store, &["ls"])).contains("busybox:latest"));

    let err = failed(mezzo_image(
        &store,
        &[
            "pull",
            "nothere:1",
            "--registry",
            archives.to_str().unwrap(),
        ],
    ));
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn commands_on_a_missing_store_say_so() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("no-such-store");
    let err = failed(mezzo_image(&store, &["ls"]));
    assert!(err.contains("no image store at"), "{err}");
    assert!(!store.exists(), "ls must not create a store");
    let err = failed(mezzo_image(&store, &["gc", "--keep-recent", "10parsecs"]));
    assert!(err.contains("10parsecs"), "{err}");
}

/// A real `docker-registry` on a free loopback port, killed (and waited for) on drop.
struct Registry {
    child: std::process::Child,
    port: u16,
}

impl Registry {
    fn start(dir: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.join("registry.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("registry-data").display()
            ),
        )
        .unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start /usr/bin/docker-registry (Debian's docker-registry package)");
        let registry = Self { child, port };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "registry did not listen in 20s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn pull_from_a_registry() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = busybox_rootfs(tmp.path());
    let layout = tmp.path().join("oci");
    let mut spec = ImageSpec::new("busybox:1.0");
    spec.gzip = true;
    build_image(&spec, vec![layer_tar_from_dir(&rootfs, 0).unwrap()])
        .unwrap()
        .write_oci_layout(&layout)
        .unwrap();
    let registry = Registry::start(tmp.path());
    let dest = format!("docker://127.0.0.1:{}/tools/busybox:1.0", registry.port);
    let push = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:1.0", layout.display()))
        .arg(&dest)
        .output()
        .expect("run skopeo");
    assert!(
        push.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&push.stderr)
    );

    let store = tmp.path().join("store");
    let url = format!("http://127.0.0.1:{}", registry.port);
    let out = ok(mezzo_image(
        &store,
        &["pull", "tools/busybox:1.0", "--registry", &url],
    ));
    assert_eq!(
        out,
        "Pulled tools/busybox:1.0 (1 layer)\ndocker.io/tools/busybox:1.0\n"
    );
    let ls = ok(mezzo_image(&store, &["ls"]));
    assert!(ls.contains("tools/busybox:1.0"), "{ls}");
    let err = failed(mezzo_image(
        &store,
        &["pull", "tools/absent:1", "--registry", &url],
    ));
    assert!(err.contains("tools/absent"), "{err}");
}
