//! `docker load` accepts the archives we write. Needs a running docker engine
//! (skipped, and reported as such, without one).

mod common;

use std::fs;
use std::process::Command;

use mezzo_images::build::{build_image, layer_tar_from_dir, ArchiveFormat, ImageSpec};

fn docker(args: &[&str]) -> std::process::Output {
    // `timeout` bounds every docker call.
    Command::new("timeout")
        .arg("60")
        .arg("docker")
        .args(args)
        .output()
        .expect("run docker")
}

#[test]
fn docker_load_accepts_both_archive_forms() {
    mezzo_testkit::require_docker!();
    let busybox = std::path::Path::new("/bin/busybox");
    assert!(busybox.exists(), "install busybox-static");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("rootfs");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::copy(busybox, root.join("bin/busybox")).unwrap();
    for applet in ["sh", "echo"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    let tar = layer_tar_from_dir(&root, 0).unwrap();
    for (i, format) in [ArchiveFormat::Docker, ArchiveFormat::DockerLegacy]
        .into_iter()
        .enumerate()
    {
        // A name of our own, so nobody else's busybox:latest is touched.
        let name = format!("mezzo-images-test:{}-{i}", std::process::id());
        let image = build_image(&ImageSpec::new(&name), vec![tar.clone()]).unwrap();
        let path = tmp.path().join(format!("{i}.tar"));
        image.write_archive(&path, format).unwrap();
        let load = docker(&["load", "-i", path.to_str().unwrap()]);
        assert!(
            load.status.success(),
            "{}",
            String::from_utf8_lossy(&load.stderr)
        );
        let run = docker(&["run", "--rm", &name, "echo", "hi"]);
        let rmi = docker(&["rmi", &name]);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&run.stdout), "hi\n");
        assert!(
            rmi.status.success(),
            "{}",
            String::from_utf8_lossy(&rmi.stderr)
        );
    }
}
