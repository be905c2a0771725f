//! Whiteouts and opaque directories in overlay form, checked through a real overlay mount
//! and through the copy backend.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use common::*;
use mezzo_images::build::ArchiveFormat;
use mezzo_images::{rootfs, ImageStore};

/// Unmounts on drop, so a failing assertion does not leave a mount behind.
struct Mounted(PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        rootfs::unmount(&self.0).unwrap();
    }
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = [0u8; 64];
    // SAFETY: NUL-terminated strings and a buffer of buf.len() writable bytes.
    let rc = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (rc >= 0).then(|| buf[..rc as usize].to_vec())
}

/// The merged view of the two-layer image: the whited-out file and the opaque dir's old content are gone.
fn assert_merged(root: &Path) {
    assert_eq!(fs::read_to_string(root.join("a/keep")).unwrap(), "keep\n");
    assert!(
        fs::symlink_metadata(root.join("a/file1")).is_err(),
        "whited-out file is gone"
    );
    assert!(
        fs::symlink_metadata(root.join("gone-dir")).is_err(),
        "whited-out dir is gone"
    );
    assert!(
        !root.join("d/x").exists() && !root.join("d/sub").exists(),
        "opaque dir hides lower content"
    );
    assert_eq!(fs::read_to_string(root.join("d/z")).unwrap(), "new z\n");
    assert_eq!(
        fs::read_to_string(root.join("etc/hello")).unwrap(),
        "hello from layer 1\n"
    );
    assert_eq!(
        fs::read_to_string(root.join("replaced")).unwrap(),
        "layer 2\n"
    );
}

async fn two_layer_image(tmp: &Path) -> (ImageStore, mezzo_images::Image) {
    let (l1, l2) = (tmp.join("l1"), tmp.join("l2"));
    base_layer(&l1);
    write(&l1, "a/file1", "one\n");
    write(&l1, "a/keep", "keep\n");
    write(&l1, "gone-dir/inner", "x\n");
    write(&l1, "d/x", "old x\n");
    write(&l1, "d/sub/y", "old y\n");
    write(&l1, "replaced", "layer 1\n");
    write(&l2, "a/.wh.file1", "");
    write(&l2, ".wh.gone-dir", "");
    write(&l2, "d/.wh..wh..opq", "");
    write(&l2, "d/z", "new z\n");
    write(&l2, "replaced", "layer 2\n");
    let image = build_from_dirs(&spec("wh:1"), &[&l1, &l2]);
    let archives = tmp.join("archives");
    write_archive(&image, &archives, "wh:1.tar", ArchiveFormat::Docker);
    let store = ImageStore::open(tmp.join("store"), Some(archives)).unwrap();
    let image = store.get("wh:1").await.unwrap();
    (store, image)
}

#[tokio::test]
async fn whiteouts_become_overlay_whiteouts_and_hide_lower_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (_store, image) = two_layer_image(tmp.path()).await;
    let top = &image.layers[1];

    // Layer 2 on disk: char device 0/0 for the deleted file, xattr on the opaque dir, no .wh. files.
    let wh = fs::symlink_metadata(top.join("a/file1")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert!(fs::symlink_metadata(top.join("gone-dir"))
        .unwrap()
        .file_type()
        .is_char_device());
    assert!(!top.join("a/.wh.file1").exists() && !top.join("d/.wh..wh..opq").exists());
    assert_eq!(
        xattr(&top.join("d"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(xattr(&top.join("a"), "trusted.overlay.opaque"), None);

    let (upper, work, merged) = (
        tmp.path().join("upper"),
        tmp.path().join("work"),
        tmp.path().join("merged"),
    );
    for dir in [&upper, &work, &merged] {
        fs::create_dir_all(dir).unwrap();
    }
    rootfs::mount_overlay(&image.layers, &upper, &work, &merged).unwrap();
    let guard = Mounted(merged.clone());
    assert_merged(&merged);
    // Writes land in the upper dir, never in the cached layers.
    fs::write(merged.join("a/keep"), "changed\n").unwrap();
    assert_eq!(
        fs::read_to_string(upper.join("a/keep")).unwrap(),
        "changed\n"
    );
    assert_eq!(
        fs::read_to_string(image.layers[0].join("a/keep")).unwrap(),
        "keep\n"
    );
    drop(guard);
    assert!(fs::read_dir(&merged).unwrap().next().is_none(), "unmounted");
}

#[tokio::test]
async fn copy_backend_applies_whiteouts_the_same_way() {
    let tmp = tempfile::tempdir().unwrap();
    let (_store, image) = two_layer_image(tmp.path()).await;
    let target = tmp.path().join("copy");
    rootfs::copy_layers(&image.layers, &target).unwrap();
    assert_merged(&target);
    // No whiteout devices or overlay xattrs leak into a copied rootfs.
    assert!(fs::symlink_metadata(target.join("a/file1")).is_err());
    assert_eq!(xattr(&target.join("d"), "trusted.overlay.opaque"), None);
    let tool = fs::metadata(target.join("bin/tool")).unwrap();
    assert_eq!(tool.mode() & 0o7777, 0o4755);
    let hello = fs::metadata(target.join("etc/hello")).unwrap();
    assert_eq!(
        hello.ino(),
        fs::metadata(target.join("etc/hello-hard")).unwrap().ino()
    );
}

#[test]
fn overlay_with_options_longer_than_a_page() {
    let tmp = tempfile::tempdir().unwrap();
    // 40 layers with 120-byte names: over 4 KiB of lowerdir paths.
    let base = tmp.path().join("l".repeat(100));
    let mut lowers = Vec::new();
    for i in 0..40 {
        let layer = base.join(format!("{i:03}-{}", "n".repeat(116)));
        write(&layer, &format!("file{i}"), &format!("{i}\n"));
        write(&layer, "shared", &format!("{i}\n"));
        lowers.push(layer);
    }
    let total: usize = lowers.iter().map(|p| p.as_os_str().len() + 1).sum();
    assert!(total > 4096, "{total}");
    let (upper, work, merged) = (
        tmp.path().join("u"),
        tmp.path().join("w"),
        tmp.path().join("m"),
    );
    for dir in [&upper, &work, &merged] {
        fs::create_dir_all(dir).unwrap();
    }
    rootfs::mount_overlay(&lowers, &upper, &work, &merged).unwrap();
    let _guard = Mounted(merged.clone());
    for i in 0..40 {
        assert_eq!(
            fs::read_to_string(merged.join(format!("file{i}"))).unwrap(),
            format!("{i}\n")
        );
    }
    assert_eq!(
        fs::read_to_string(merged.join("shared")).unwrap(),
        "39\n",
        "last layer is on top"
    );
}

#[test]
fn unmount_is_idempotent_and_mount_errors_name_the_target() {
    let tmp = tempfile::tempdir().unwrap();
    rootfs::unmount(tmp.path()).unwrap();
    let missing = tmp.path().join("nope");
    let err = rootfs::mount_overlay(
        std::slice::from_ref(&missing),
        tmp.path(),
        tmp.path(),
        tmp.path(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains(&tmp.path().display().to_string()),
        "{err}"
    );
    assert!(rootfs::mount_overlay(&[], tmp.path(), tmp.path(), tmp.path()).is_err());
}

#[tokio::test]
async fn busybox_image_runs_from_an_overlay_rootfs() {
    let busybox = Path::new("/bin/busybox");
    assert!(busybox.exists(), "needs Debian's busybox-static (apt-get install -y busybox-static)");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("rootfs");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::copy(busybox, root.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    let image = build_from_dirs(&mezzo_images::build::ImageSpec::new("busybox:latest"), &[&root]);
    let archives = tmp.path().join("archives");
    image.write_oci_layout(&archives.join("oci/busybox")).unwrap();
    let store = ImageStore::open(tmp.path().join("store"), Some(archives)).unwrap();
    let got = store.get("busybox").await.unwrap();
    assert_eq!(got.config.cmd, Some(vec!["sh".to_string()]));

    let (upper, work, merged) = (tmp.path().join("u"), tmp.path().join("w"), tmp.path().join("m"));
    for dir in [&upper, &work, &merged] {
        fs::create_dir_all(dir).unwrap();
    }
    rootfs::mount_overlay(&got.layers, &upper, &work, &merged).unwrap();
    let _guard = Mounted(merged.clone());
    let out = std::process::Command::new("timeout")
        .args(["10", "chroot"])
        .arg(&merged)
        .args(["/bin/sh", "-c", "echo hi > /out; cat /out"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n", "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(fs::read_to_string(upper.join("out")).unwrap(), "hi\n");
}
