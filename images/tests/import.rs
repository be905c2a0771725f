//! Importing images from docker archives (both forms), OCI archives and OCI layout
//! directories into the store: layers, config, lookup names, caching and errors.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;
use mezzo_images::build::ArchiveFormat;
use mezzo_images::{Image, ImageConfig, ImageError, ImageStore};

struct Dirs {
    _tmp: tempfile::TempDir,
    work: PathBuf,
    archives: PathBuf,
    store: PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let archives = tmp.path().join("archives");
    let store = tmp.path().join("store");
    fs::create_dir_all(&work).unwrap();
    fs::create_dir_all(&archives).unwrap();
    Dirs {
        work,
        archives,
        store,
        _tmp: tmp,
    }
}

fn open(d: &Dirs) -> ImageStore {
    ImageStore::open(d.store.clone(), Some(d.archives.clone())).unwrap()
}

/// The base layer came through whole: content, set-uid mode, symlink, hardlink, sticky tmp.
fn assert_base_layer(rootfs: &Path) {
    assert_eq!(
        fs::read_to_string(rootfs.join("etc/hello")).unwrap(),
        "hello from layer 1\n"
    );
    let tool = fs::metadata(rootfs.join("bin/tool")).unwrap();
    assert_eq!(tool.permissions().mode() & 0o7777, 0o4755);
    assert_eq!(tool.mtime(), 1_700_000_000);
    assert_eq!(
        fs::read_link(rootfs.join("etc/hello-link")).unwrap(),
        Path::new("hello")
    );
    let hello = fs::metadata(rootfs.join("etc/hello")).unwrap();
    let hard = fs::metadata(rootfs.join("etc/hello-hard")).unwrap();
    assert_eq!(hello.ino(), hard.ino(), "hardlink kept");
    assert_eq!(
        fs::metadata(rootfs.join("tmp"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o1777
    );
}

fn expected_config() -> ImageConfig {
    ImageConfig {
        env: vec!["PATH=/bin".into(), "GREETING=hi".into()],
        entrypoint: Some(vec!["/bin/tool".into()]),
        cmd: Some(vec!["arg1".into()]),
        working_dir: Some("/etc".into()),
        user: Some("65534:65534".into()),
    }
}

fn assert_image(image: &Image, d: &Dirs) {
    assert_eq!(image.layers.len(), 1);
    assert!(image.layers[0].starts_with(d.store.join("layers")));
    assert!(image.layers[0].ends_with("rootfs"));
    assert_base_layer(&image.layers[0]);
    assert_eq!(image.config, expected_config());
}

async fn import_as(format: ArchiveFormat, gzip: bool) {
    let d = dirs();
    let built = base_image(&d.work, "busybox:latest", gzip);
    write_archive(&built, &d.archives, "busybox:latest.tar", format);
    let store = open(&d);
    let image = store.get("busybox").await.unwrap();
    assert_eq!(image.reference, "docker.io/library/busybox:latest");
    assert_image(&image, &d);
    // The layer dir is named by diff id, and the blobs are in the content store.
    let diff_hex = built.diff_ids[0].hex();
    assert_eq!(
        image.layers[0],
        d.store.join("layers").join(diff_hex).join("rootfs")
    );
    assert!(d
        .store
        .join("blobs/sha256")
        .join(built.config.digest.hex())
        .is_file());
    assert!(d
        .store
        .join("blobs/sha256")
        .join(built.layers[0].digest.hex())
        .is_file());
}

#[tokio::test]
async fn imports_docker_archive() {
    import_as(ArchiveFormat::Docker, false).await;
}

#[tokio::test]
async fn imports_legacy_docker_archive() {
    import_as(ArchiveFormat::DockerLegacy, false).await;
}

#[tokio::test]
async fn imports_oci_archive_without_manifest_json() {
    import_as(ArchiveFormat::OciArchive, false).await;
}

#[tokio::test]
async fn imports_gzip_layers() {
    import_as(ArchiveFormat::Docker, true).await;
    import_as(ArchiveFormat::DockerLegacy, true).await;
}

#[tokio::test]
async fn imports_oci_layout_dir_picking_the_tag() {
    let d = dirs();
    let layout = d.archives.join("oci/app");
    let v1 = base_image(&d.work, "app:v1", true);
    v1.write_oci_layout(&layout).unwrap();
    // A second tag in the same layout with a different layer.
    let other = d.work.join("other");
    write(&other, "etc/hello", "version two\n");
    let v2 = build_from_dirs(&spec("app:v2"), &[&other]);
    v2.write_oci_layout(&layout).unwrap();

    let store = open(&d);
    let image = store.get("app:v1").await.unwrap();
    assert_image(&image, &d);
    let image = store.get("app:v2").await.unwrap();
    assert_eq!(
        fs::read_to_string(image.layers[0].join("etc/hello")).unwrap(),
        "version two\n"
    );
    // No tag "latest" in a layout with two tags.
    let err = store.get("app").await.unwrap_err();
    assert!(matches!(err, ImageError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn finds_archives_by_every_documented_name() {
    let names = [
        ("busybox:latest.tar", "busybox"),
        ("busybox.tar", "busybox:latest"),
        ("library/busybox:latest.tar", "busybox"),
        ("myorg/app:1.0.tar", "myorg/app:1.0"),
    ];
    for (file, reference) in names {
        let d = dirs();
        let name = if reference.starts_with("myorg") {
            "myorg/app:1.0"
        } else {
            "busybox:latest"
        };
        write_archive(
            &base_image(&d.work, name, false),
            &d.archives,
            file,
            ArchiveFormat::Docker,
        );
        let image = open(&d)
            .get(reference)
            .await
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_image(&image, &d);
    }
    // OCI layout directly under the archive dir.
    let d = dirs();
    base_image(&d.work, "busybox:latest", false)
        .write_oci_layout(&d.archives.join("busybox"))
        .unwrap();
    assert_image(&open(&d).get("busybox:latest").await.unwrap(), &d);
}

#[tokio::test]
async fn untagged_file_name_does_not_give_another_tag() {
    let d = dirs();
    // busybox.tar holds busybox:1.36 only: asking for busybox:latest must not get it.
    write_archive(
        &base_image(&d.work, "busybox:1.36", false),
        &d.archives,
        "busybox.tar",
        ArchiveFormat::Docker,
    );
    let store = open(&d);
    assert!(matches!(
        store.get("busybox:latest").await,
        Err(ImageError::NotFound { .. })
    ));
    // But a file named for the tag is trusted.
    write_archive(
        &base_image(&d.work, "busybox:1.36", false),
        &d.archives,
        "other:2.tar",
        ArchiveFormat::Docker,
    );
    assert_image(&store.get("other:2").await.unwrap(), &d);
}

#[tokio::test]
async fn missing_image_error_names_the_image_and_dir() {
    let d = dirs();
    let store = open(&d);
    let err = store.get("nosuchimage").await.unwrap_err();
    assert!(matches!(err, ImageError::NotFound { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "image 'nosuchimage:latest' not found in {}",
            d.archives.display()
        )
    );
    let no_dir = ImageStore::open(d.store.clone(), None).unwrap();
    let err = no_dir.get("busybox").await.unwrap_err();
    assert!(
        err.to_string().contains("'busybox:latest' not found"),
        "{err}"
    );
    assert!(matches!(
        store.get("Bad!").await,
        Err(ImageError::InvalidReference { .. })
    ));
}

#[tokio::test]
async fn corrupt_layer_blob_is_refused() {
    let d = dirs();
    let built = base_image(&d.work, "busybox:latest", false);
    let layout = d.archives.join("oci/busybox");
    built.write_oci_layout(&layout).unwrap();
    // Flip one byte of the layer's file data.
    let blob = layout
        .join("blobs/sha256")
        .join(built.layers[0].digest.hex());
    let mut bytes = fs::read(&blob).unwrap();
    let at = bytes.windows(5).position(|w| w == b"hello").unwrap();
    bytes[at] = b'j';
    fs::write(&blob, bytes).unwrap();

    let store = open(&d);
    let err = store.get("busybox").await.unwrap_err();
    match &err {
        ImageError::DigestMismatch { expected, .. } => {
            assert_eq!(expected, built.layers[0].digest.as_str())
        }
        other => panic!("expected a digest mismatch, got {other}"),
    }
    // Nothing of it was kept.
    assert!(!d
        .store
        .join("blobs/sha256")
        .join(built.layers[0].digest.hex())
        .exists());
    assert_eq!(list(&d.store.join("layers")), Vec::<String>::new());
}

#[tokio::test]
async fn wrong_diff_id_is_refused() {
    let d = dirs();
    let built = base_image(&d.work, "busybox:latest", false);
    // A legacy archive names layers by path only, so the diff id check is what catches this.
    let mut bad = built.clone();
    let other = d.work.join("other");
    write(&other, "x", "y");
    let other_tar = mezzo_images::build::layer_tar_from_dir(&other, 0).unwrap();
    bad.layers[0].data = other_tar;
    write_archive(
        &bad,
        &d.archives,
        "busybox:latest.tar",
        ArchiveFormat::DockerLegacy,
    );
    let err = open(&d).get("busybox").await.unwrap_err();
    match &err {
        ImageError::DigestMismatch { expected, what, .. } => {
            assert_eq!(expected, built.diff_ids[0].as_str());
            assert!(what.contains("uncompressed"), "{what}");
        }
        other => panic!("expected a digest mismatch, got {other}"),
    }
    assert_eq!(list(&d.store.join("layers")), Vec::<String>::new());
}

#[tokio::test]
async fn second_get_uses_the_cache_and_a_rebuilt_archive_is_reimported() {
    let d = dirs();
    write_archive(
        &base_image(&d.work, "busybox:latest", false),
        &d.archives,
        "busybox.tar",
        ArchiveFormat::Docker,
    );
    let store = open(&d);
    let first = store.get("busybox").await.unwrap();
    let after_first = store.stats();
    assert_eq!(
        (after_first.blobs_imported, after_first.layers_unpacked),
        (1, 1)
    );
    let second = store.get("docker.io/library/busybox:latest").await.unwrap();
    assert_eq!(first.layers, second.layers);
    assert_eq!(store.stats(), after_first);

    // A reopened store (agent restart) still has it, even with the archive gone.
    fs::remove_file(d.archives.join("busybox.tar")).unwrap();
    let reopened = open(&d);
    let third = reopened.get("busybox").await.unwrap();
    assert_eq!(third.layers, first.layers);
    assert_eq!(third.config, first.config);
    assert_eq!(reopened.stats().layers_unpacked, 0);

    // A new archive under the same name brings the new content.
    let changed = d.work.join("changed");
    write(&changed, "etc/hello", "rebuilt\n");
    write_archive(
        &build_from_dirs(&spec("busybox:latest"), &[&changed]),
        &d.archives,
        "busybox.tar",
        ArchiveFormat::Docker,
    );
    let fourth = reopened.get("busybox").await.unwrap();
    assert_ne!(fourth.layers, first.layers);
    assert_eq!(
        fs::read_to_string(fourth.layers[0].join("etc/hello")).unwrap(),
        "rebuilt\n"
    );
}

#[tokio::test]
async fn images_sharing_a_layer_unpack_it_once() {
    let d = dirs();
    let a = base_image(&d.work, "a:1", false);
    let b = base_image(&d.work, "b:1", false);
    assert_eq!(a.diff_ids, b.diff_ids);
    write_archive(&a, &d.archives, "a:1.tar", ArchiveFormat::Docker);
    write_archive(&b, &d.archives, "b:1.tar", ArchiveFormat::DockerLegacy);
    let store = open(&d);
    let (ia, ib) = tokio::join!(store.get("a:1"), store.get("b:1"));
    assert_eq!(ia.unwrap().layers, ib.unwrap().layers);
    assert_eq!(store.stats().layers_unpacked, 1);
}

#[tokio::test]
async fn archive_path_gives_a_tar_for_docker_load() {
    let d = dirs();
    write_archive(
        &base_image(&d.work, "busybox:latest", false),
        &d.archives,
        "busybox.tar",
        ArchiveFormat::Docker,
    );
    base_image(&d.work, "app:v1", false)
        .write_oci_layout(&d.archives.join("oci/app"))
        .unwrap();
    let store = open(&d);
    assert_eq!(
        store.archive_path("busybox").unwrap(),
        d.archives.join("busybox.tar")
    );
    // An OCI layout is exported as a docker archive in the store, once.
    let exported = store.archive_path("app:v1").unwrap();
    assert!(exported.starts_with(d.store.join("archives")));
    let mtime = fs::metadata(&exported).unwrap().modified().unwrap();
    assert_eq!(store.archive_path("app:v1").unwrap(), exported);
    assert_eq!(fs::metadata(&exported).unwrap().modified().unwrap(), mtime);
    // The export is a docker archive that the store itself reads back.
    let d2 = dirs();
    fs::copy(&exported, d2.archives.join("app:v1.tar")).unwrap();
    let manifest = read_member(&exported, "manifest.json");
    assert!(manifest.contains("\"RepoTags\":[\"app:v1\"]"), "{manifest}");
    assert_image(&open(&d2).get("app:v1").await.unwrap(), &d2);

    let err = store.archive_path("nosuch:1").unwrap_err();
    assert!(err.to_string().contains("'nosuch:1' not found"), "{err}");
}

fn read_member(tar_path: &Path, member: &str) -> String {
    let mut archive = tar::Archive::new(fs::File::open(tar_path).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap() == Path::new(member) {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut entry, &mut s).unwrap();
            return s;
        }
    }
    panic!("{member} not in {}", tar_path.display());
}
