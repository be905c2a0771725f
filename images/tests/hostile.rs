//! Layers that try to write outside their directory are refused, and nothing lands outside.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use mezzo_images::build::{build_image, ArchiveFormat, ImageSpec};
use mezzo_images::{ImageError, ImageStore};
use tar::EntryType::{Directory, Link, Regular, Symlink};

/// Builds an image of one raw layer, gets it, and returns the error.
async fn get_layer(tmp: &Path, layer: Vec<u8>) -> ImageError {
    let image = build_image(&ImageSpec::new("evil:1"), vec![layer]).unwrap();
    let archives = tmp.join("archives");
    write_archive(&image, &archives, "evil:1.tar", ArchiveFormat::Docker);
    let store = ImageStore::open(tmp.join("store"), Some(archives)).unwrap();
    let err = store
        .get("evil:1")
        .await
        .expect_err("hostile layer must be refused");
    // No layer (whole or partial) stays in the cache.
    assert_eq!(list(&tmp.join("store/layers")), Vec::<String>::new());
    err
}

fn assert_hostile(err: &ImageError, words: &str) {
    match err {
        ImageError::HostileLayer { reason, .. } => assert!(reason.contains(words), "{reason}"),
        other => panic!("expected a hostile layer error, got {other}"),
    }
}

#[tokio::test]
async fn parent_dir_escape_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    // The store's layers dir is store/layers/<tmp>/rootfs: `../../../escape` would land in store/.
    let layer = raw_tar(&[
        ("ok", Regular, "", b"fine"),
        ("../escape", Regular, "", b"pwned"),
        ("../../../escape", Regular, "", b"pwned"),
    ]);
    let err = get_layer(tmp.path(), layer).await;
    assert_hostile(&err, "'..'");
    assert!(!tmp.path().join("store/escape").exists() && !tmp.path().join("escape").exists());
}

#[tokio::test]
async fn absolute_path_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("abs-target");
    let name = target.to_str().unwrap().to_string();
    let layer = raw_tar(&[(&name, Regular, "", b"pwned")]);
    let err = get_layer(tmp.path(), layer).await;
    assert_hostile(&err, "absolute");
    assert!(!target.exists());
}

#[tokio::test]
async fn writing_through_a_symlink_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let layer = raw_tar(&[
        ("link", Symlink, outside.to_str().unwrap(), b""),
        ("link/evil", Regular, "", b"pwned"),
    ]);
    let err = get_layer(tmp.path(), layer).await;
    assert_hostile(&err, "through symlink 'link'");
    assert_eq!(list(&outside), Vec::<String>::new());

    // The same through a relative link and a nested directory.
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let layer = raw_tar(&[
        ("dir", Directory, "", b""),
        ("dir/up", Symlink, "../../../../outside", b""),
        ("dir/up/evil", Regular, "", b"pwned"),
    ]);
    let err = get_layer(tmp.path(), layer).await;
    assert_hostile(&err, "through symlink");
    assert_eq!(list(&outside), Vec::<String>::new());
}

#[tokio::test]
async fn hardlinks_out_of_the_layer_are_refused() {
    for target in ["/etc/passwd", "../../../../../../etc/passwd"] {
        let tmp = tempfile::tempdir().unwrap();
        let before = fs::metadata("/etc/passwd").unwrap();
        let layer = raw_tar(&[("passwd", Link, target, b"")]);
        let err = get_layer(tmp.path(), layer).await;
        assert_hostile(&err, "hardlink 'passwd'");
        let after = fs::metadata("/etc/passwd").unwrap();
        assert_eq!(
            std::os::unix::fs::MetadataExt::nlink(&before),
            std::os::unix::fs::MetadataExt::nlink(&after)
        );
    }
    // A hardlink through a symlink to a file outside is refused too.
    let tmp = tempfile::tempdir().unwrap();
    let layer = raw_tar(&[
        ("etc", Symlink, "/etc", b""),
        ("passwd", Link, "etc/passwd", b""),
    ]);
    let err = get_layer(tmp.path(), layer).await;
    assert_hostile(&err, "through symlink 'etc'");
}

#[tokio::test]
async fn honest_links_inside_the_layer_are_fine() {
    let tmp = tempfile::tempdir().unwrap();
    let layer = raw_tar(&[
        ("dir", Directory, "", b""),
        ("dir/file", Regular, "", b"data"),
        ("dir/hard", Link, "dir/file", b""),
        ("abs-link", Symlink, "/etc/passwd", b""),
        ("./dot/./file", Regular, "", b"dot"),
    ]);
    let image = build_image(&ImageSpec::new("ok:1"), vec![layer]).unwrap();
    let archives = tmp.path().join("archives");
    write_archive(&image, &archives, "ok:1.tar", ArchiveFormat::Docker);
    let store = ImageStore::open(tmp.path().join("store"), Some(archives)).unwrap();
    let got = store.get("ok:1").await.unwrap();
    let root = &got.layers[0];
    assert_eq!(fs::read(root.join("dir/hard")).unwrap(), b"data");
    assert_eq!(
        fs::read_link(root.join("abs-link")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(fs::read(root.join("dot/file")).unwrap(), b"dot");
}
