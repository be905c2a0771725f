//! Pulls from a real registry (Debian's `docker-registry`) on loopback: by tag, by
//! digest, multi-arch indexes, token auth, TLS with a custom CA, corrupt and broken
//! transfers, concurrency, whiteouts, hostile layers and recovery after a crash.
//! One-word names live under `library/` in the registry, as on Docker Hub.

mod common;
mod registry_harness;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use mezzo_images::build::{build_image, Blob, BuiltImage, ImageSpec};
use mezzo_images::{Digest, ImageError, ImageStore, RegistrySource, StoreOptions};
use registry_harness::*;
use tar::EntryType::{Link, Regular, Symlink};

fn options(url: &str) -> StoreOptions {
    StoreOptions {
        registry: Some(RegistrySource::parse(url).unwrap()),
        ..StoreOptions::default()
    }
}

/// A two-layer gzip image whose second layer says `marker`.
fn two_layer_image(tmp: &Path, name: &str, marker: &str) -> BuiltImage {
    let l1 = tmp.join(format!("l1-{marker}"));
    let l2 = tmp.join(format!("l2-{marker}"));
    base_layer(&l1);
    write(&l2, "etc/marker", marker);
    let mut spec = spec(name);
    spec.gzip = true;
    build_from_dirs(&spec, &[&l1, &l2])
}

/// Blob files and temp leftovers in the store.
fn blob_names(store: &Path) -> Vec<String> {
    list(&store.join("blobs/sha256"))
}

#[tokio::test]
async fn pull_by_tag_and_by_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(&tmp.path().join("registry"), None, None);
    let pusher = Pusher::new(&registry.url());
    let image = two_layer_image(tmp.path(), "ns/app:1", "one");
    let manifest = pusher.docker_image("ns/app", "1", &image).await;

    let store_dir = tmp.path().join("store");
    let store = ImageStore::open_with(store_dir.clone(), options(&registry.url())).unwrap();
    // No host: the configured registry.
    let got = store.get("ns/app:1").await.unwrap();
    assert_eq!(got.layers.len(), 2);
    assert_eq!(fs::read_to_string(got.layers[1].join("etc/marker")).unwrap(), "one");
    assert_eq!(
        fs::read_to_string(got.layers[0].join("etc/hello")).unwrap(),
        "hello from layer 1\n"
    );
    assert_eq!(got.config.entrypoint, Some(vec!["/bin/tool".to_string()]));
    assert_eq!(got.config.user.as_deref(), Some("65534:65534"));
    assert_eq!(store.stats().blobs_imported, 3);
    assert_eq!(store.stats().layers_unpacked, 2);

    // By digest, with the registry host spelled out: same layers, nothing new fetched.
    let by_digest = format!("{}/ns/app@{manifest}", registry.host());
    let pinned = store.get(&by_digest).await.unwrap();
    assert_eq!(pinned.layers, got.layers);
    assert_eq!(store.stats().blobs_imported, 3);

    // The tag moves: get serves the stored image, pull asks the registry again.
    let image2 = two_layer_image(tmp.path(), "ns/app:1", "two");
    pusher.docker_image("ns/app", "1", &image2).await;
    let cached = store.get("ns/app:1").await.unwrap();
    assert_eq!(fs::read_to_string(cached.layers[1].join("etc/marker")).unwrap(), "one");
    let pulled = store.pull("ns/app:1").await.unwrap();
    assert_eq!(fs::read_to_string(pulled.layers[1].join("etc/marker")).unwrap(), "two");
    assert_eq!(pulled.layers[0], got.layers[0], "the shared base layer is reused");

    let listed = store.list().unwrap();
    let refs: Vec<&str> = listed.iter().map(|i| i.reference.as_str()).collect();
    assert_eq!(refs, [by_digest.as_str(), "docker.io/ns/app:1"]);
    assert!(listed.iter().all(|i| i.layers == 2 && i.size_bytes > 0), "{listed:?}");

    // Unknown tag and unknown digest: not found; a malformed digest: invalid reference.
    let err = store.get("ns/app:nope").await.unwrap_err();
    assert!(matches!(err, ImageError::NotFound { .. }), "{err}");
    let err = store
        .get(&format!("ns/app@sha256:{}", "0".repeat(64)))
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::NotFound { .. }), "{err}");
    let err = store.get("ns/app@sha256:abc").await.unwrap_err();
    assert!(matches!(err, ImageError::InvalidReference { .. }), "{err}");

    // A fresh handle on the same directory finds the image without the registry.
    drop(registry);
    let reopened = ImageStore::open_with(store_dir, options("http://127.0.0.1:1")).unwrap();
    assert_eq!(reopened.get("ns/app:1").await.unwrap().layers, pulled.layers);
}

#[tokio::test]
async fn multi_arch_index_picks_this_host() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(&tmp.path().join("registry"), None, None);
    let pusher = Pusher::new(&registry.url());
    let host_arch = mezzo_images::manifest::host_architecture();
    let other_arch = if host_arch == "arm64" { "amd64" } else { "arm64" };
    let mut entries = Vec::new();
    for arch in [other_arch, host_arch] {
        let dir = tmp.path().join(arch);
        write(&dir, "arch", arch);
        let image = build_from_dirs(&spec(&format!("multi:{arch}")), &[&dir]);
        let digest = pusher.oci_image("library/multi", arch, &image).await;
        entries.push(serde_json::json!({
            "mediaType": OCI_MANIFEST,
            "digest": digest.to_string(),
            "size": image.manifest.data.len(),
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries,
    }))
    .unwrap();
    let index_digest = pusher.manifest("library/multi", "latest", OCI_INDEX, &index).await;

    let store = ImageStore::open_with(tmp.path().join("store"), options(&registry.url())).unwrap();
    let image = store.get("multi").await.unwrap();
    assert_eq!(fs::read_to_string(image.layers[0].join("arch")).unwrap(), host_arch);
    // Pinned to the index's digest: the same choice.
    let pinned = store.get(&format!("multi@{index_digest}")).await.unwrap();
    assert_eq!(pinned.layers, image.layers);
    assert_eq!(store.stats().layers_unpacked, 1, "only this host's image is fetched");

    // An index without this host's platform is refused, naming what it has.
    let only_other = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entries[0]],
    }))
    .unwrap();
    pusher.manifest("library/multi", "foreign", OCI_INDEX, &only_other).await;
    let err = store.get("multi:foreign").await.unwrap_err();
    assert!(
        matches!(&err, ImageError::Unsupported(m) if m.contains(&format!("linux/{other_arch}"))),
        "{err}"
    );
}

#[tokio::test]
async fn zstd_layers_are_unpacked() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(&tmp.path().join("registry"), None, None);
    let pusher = Pusher::new(&registry.url());
    let dir = tmp.path().join("layer");
    write(&dir, "data/file", "zstd content\n");
    let plain = build_from_dirs(&spec("zimg:1"), &[&dir]);
    let compressed = zstd::encode_all(&plain.layers[0].data[..], 3).unwrap();
    let layer = Blob {
        digest: Digest::of(&compressed),
        media_type: OCI_LAYER_ZSTD.to_string(),
        data: compressed,
    };
    let body = manifest_json(OCI_MANIFEST, (&plain.config, OCI_CONFIG), &[(&layer, OCI_LAYER_ZSTD)]);
    pusher.blob("library/zimg", &plain.config.data).await;
    pusher.blob("library/zimg", &layer.data).await;
    pusher.manifest("library/zimg", "1", OCI_MANIFEST, &body).await;

    let store = ImageStore::open_with(tmp.path().join("store"), options(&registry.url())).unwrap();
    let image = store.get("zimg:1").await.unwrap();
    assert_eq!(
        fs::read_to_string(image.layers[0].join("data/file")).unwrap(),
        "zstd content\n"
    );
}

#[tokio::test]
async fn token_auth_registry() {
    let tmp = tempfile::tempdir().unwrap();
    let signer = Arc::new(TokenSigner::new("mezzo-test-issuer", "mezzo-test"));
    let bundle = tmp.path().join("token-ca.pem");
    fs::write(&bundle, &signer.cert_pem).unwrap();
    let tokens = TokenServer::start(signer.clone(), "alice", "s3cret").await;
    let registry = Registry::start(
        &tmp.path().join("registry"),
        Some(&TokenAuth {
            realm: tokens.realm.clone(),
            service: "mezzo-test".to_string(),
            issuer: "mezzo-test-issuer".to_string(),
            root_cert_bundle: bundle,
        }),
        None,
    );
    let mut pusher = Pusher::new(&registry.url());
    pusher.auth = Some(format!(
        "Bearer {}",
        signer.mint(&[("ns/private".to_string(), vec!["pull".into(), "push".into()])])
    ));
    let image = two_layer_image(tmp.path(), "ns/private:1", "secret");
    pusher.oci_image("ns/private", "1", &image).await;

    // Without credentials the token server refuses, and so does the pull.
    let store_dir = tmp.path().join("store");
    let store = ImageStore::open_with(store_dir.clone(), options(&registry.url())).unwrap();
    let err = store.get("ns/private:1").await.unwrap_err();
    assert!(
        matches!(&err, ImageError::Unauthorized { reason, .. } if reason.contains("401")),
        "{err}"
    );

    // Wrong password, in the `auth` form.
    let config = tmp.path().join("config.json");
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    fs::write(
        &config,
        format!(r#"{{"auths": {{"{}": {{"auth": "{}"}}}}}}"#, registry.host(), b64("alice:wrong")),
    )
    .unwrap();
    let mut opts = options(&registry.url());
    opts.docker_config = Some(config.clone());
    let store = ImageStore::open_with(store_dir.clone(), opts.clone()).unwrap();
    assert!(matches!(
        store.get("ns/private:1").await.unwrap_err(),
        ImageError::Unauthorized { .. }
    ));

    // The right one, in the username/password form, under an http:// key.
    fs::write(
        &config,
        format!(
            r#"{{"auths": {{"http://{}": {{"username": "alice", "password": "s3cret"}}}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    let store = ImageStore::open_with(store_dir, opts).unwrap();
    let got = store.get("ns/private:1").await.unwrap();
    assert_eq!(fs::read_to_string(got.layers[1].join("etc/marker")).unwrap(), "secret");
    assert!(
        tokens.scopes().iter().all(|s| s == "repository:ns/private:pull"),
        "{:?}",
        tokens.scopes()
    );
    // One token for the manifest and all blobs of the pull.
    assert_eq!(tokens.scopes().len(), 1, "{:?}", tokens.scopes());
}

#[tokio::test]
async fn https_registry_with_custom_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca, cert, key) = tls_files(tmp.path());
    let registry = Registry::start(&tmp.path().join("registry"), None, Some((&cert, &key)));
    let mut pusher = Pusher::new(&registry.url());
    pusher.http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&fs::read(&ca).unwrap()).unwrap())
        .build()
        .unwrap();
    let image = base_image(tmp.path(), "tls/app:1", true);
    pusher.oci_image("tls/app", "1", &image).await;

    // Not trusted without the CA.
    let store = ImageStore::open_with(tmp.path().join("s1"), options(&registry.url())).unwrap();
    let err = store.get("tls/app:1").await.unwrap_err();
    assert!(
        matches!(&err, ImageError::Registry { reason, .. } if reason.to_lowercase().contains("certificate")),
        "{err}"
    );
    let mut opts = options(&registry.url());
    opts.ca_cert = Some(ca);
    let store = ImageStore::open_with(tmp.path().join("s2"), opts).unwrap();
    let got = store.get("tls/app:1").await.unwrap();
    assert!(got.layers[0].join("etc/hello").is_file());

    // A CA file that is not PEM is a configuration error at open.
    let mut bad = options(&registry.url());
    bad.ca_cert = Some(key_as_garbage(tmp.path()));
    assert!(matches!(
        ImageStore::open_with(tmp.path().join("s3"), bad),
        Err(ImageError::Config(_))
    ));
}

fn key_as_garbage(dir: &Path) -> PathBuf {
    let p = dir.join("garbage.pem");
    fs::write(&p, "not a certificate").unwrap();
    p
}

#[tokio::test]
async fn corrupted_blob_is_rejected_and_nothing_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(&tmp.path().join("registry"), None, None);
    let pusher = Pusher::new(&registry.url());
    let image = two_layer_image(tmp.path(), "bad:1", "x");
    pusher.oci_image("library/bad", "1", &image).await;
    let proxy = Proxy::start(&registry.url()).await;
    *proxy.faults.corrupt.lock().unwrap() = Some(image.layers[1].digest.to_string());

    let store_dir = tmp.path().join("store");
    let store = ImageStore::open_with(store_dir.clone(), options(&proxy.url)).unwrap();
    let err = store.get("bad:1").await.unwrap_err();
    match &err {
        ImageError::DigestMismatch { expected, .. } => {
            assert_eq!(expected, &image.layers[1].digest.to_string())
        }
        other => panic!("expected a digest mismatch, got {other}"),
    }
    // A mismatch is not retried.
    assert_eq!(proxy.blob_gets(&image.layers[1].digest), 1);
    // The bad blob is absent (no temp file either), no image record was written.
    let blobs = blob_names(&store_dir);
    assert!(!blobs.contains(&image.layers[1].digest.hex().to_string()), "{blobs:?}");
    assert!(blobs.iter().all(|b| !b.starts_with('.')), "{blobs:?}");
    assert!(!store_dir.join("layers").join(image.diff_ids[1].hex()).exists());
    assert!(list(&store_dir.join("layers")).iter().all(|l| !l.starts_with('.')));
    assert_eq!(list(&store_dir.join("images")), Vec::<String>::new());
    assert!(store.list().unwrap().is_empty());

    // Served right, through a redirect to the registry this time, it pulls.
    *proxy.faults.corrupt.lock().unwrap() = None;
    proxy
        .faults
        .redirect_blobs
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let got = store.get("bad:1").await.unwrap();
    assert_eq!(fs::read_to_string(got.layers[1].join("etc/marker")).unwrap(), "x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_concurrent_pulls_download_each_blob_once() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(&tmp.path().join("registry"), None, None);
    let pusher = Pusher::new(&registry.url());
    let dirs: Vec<PathBuf> = (0..4).map(|i| tmp.path().join(format!("c{i}"))).collect();
    for (i, dir) in dirs.iter().enumerate() {
        for j in 0..50 {
            write(dir, &format!("d{i}/f{j}"), &format!("{i}-{j}-").repeat(2000));
        }
    }
    let refs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    let mut s = spec("conc:1");
    s.gzip = true;
    let image = build_from_dirs(&s, &refs);
    pusher.oci_image("library/conc", "1", &image).await;
    let proxy = Proxy::start(&registry.url()).await;

    let store = ImageStore::open_with(tmp.path().join("store"), options(&proxy.url)).unwrap();
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                // Both entry points, and two spellings of the reference.
                match i % 3 {
                    0 => store.pull("conc:1").await,
                    1 => store.get("conc:1").await,
                    _ => store.pull("docker.io/library/conc:1").await,
                }
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap().unwrap());
    }
    assert!(results.iter().all(|r| r.layers == results[0].layers));
    for layer in &image.layers {
        assert_eq!(proxy.blob_gets(&layer.digest), 1, "layer {}", layer.digest);
    }
    assert_eq!(proxy.blob_gets(&image.config.digest), 1);
    assert_eq!(store.stats().layers_unpacked, 4);
    assert_eq!(store.stats().blobs_imported, 5);
    assert!(proxy.manifest_gets() >= 1);
}

#[tokio::test]
async fn whiteouts_are_honoured_in_the_rootfs() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(&tmp.path().join("registry"), None, None);
    let pusher = Pusher::new(&registry.url());
    let (l1, l2) = (tmp.path().join("w1"), tmp.path().join("w2"));
    write(&l1, "keep.txt", "kept");
    write(&l1, "gone.txt", "deleted by layer 2");
    write(&l1, "opq/a", "hidden by opaque");
    write(&l1, "opq/sub/b", "hidden by opaque");
    write(&l2, ".wh.gone.txt", "");
    write(&l2, "opq/.wh..wh..opq", "");
    write(&l2, "opq/c", "new");
    let image = build_from_dirs(&spec("wh:1"), &[&l1, &l2]);
    pusher.oci_image("library/wh", "1", &image).await;

    let store = ImageStore::open_with(tmp.path().join("store"), options(&registry.url())).unwrap();
    let got = store.get("wh:1").await.unwrap();
    let top = &got.layers[1];
    let meta = fs::symlink_metadata(top.join("gone.txt")).unwrap();
    assert!(meta.file_type().is_char_device() && meta.rdev() == 0);
    assert!(!top.join(".wh.gone.txt").exists());

    // The merged view: the overlay hides what the top layer deleted.
    let (upper, work, target) = (tmp.path().join("up"), tmp.path().join("work"), tmp.path().join("root"));
    for d in [&upper, &work, &target] {
        fs::create_dir_all(d).unwrap();
    }
    mezzo_images::rootfs::mount_overlay(&got.layers, &upper, &work, &target).unwrap();
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = mezzo_images::rootfs::unmount(&self.0);
        }
    }
    let _guard = Unmount(target.clone());
    assert_eq!(fs::read_to_string(target.join("keep.txt")).unwrap(), "kept");
    assert!(!target.join("gone.txt").exists());
    assert_eq!(list(&target.join("opq")), ["c"]);
}

#[tokio::test]
async fn hostile_layers_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(&tmp.path().join("registry"), None, None);
    let pusher = Pusher::new(&registry.url());
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), "mine").unwrap();
    let outside_s = outside.to_str().unwrap().to_string();
    let abs = format!("{outside_s}/abs");
    let escape_link = "../../../../../../../../..".to_string() + &outside_s;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "traversal",
            raw_tar(&[("ok", Regular, "", b"x"), ("../../../../escape", Regular, "", b"pwned")]),
            "'..'",
        ),
        ("absolute", raw_tar(&[(&abs, Regular, "", b"pwned")]), "absolute"),
        (
            "symlink",
            raw_tar(&[
                ("link", Symlink, &escape_link, b""),
                ("link/evil", Regular, "", b"pwned"),
            ]),
            "symlink",
        ),
        (
            "hardlink",
            raw_tar(&[("hl", Link, &format!("{outside_s}/secret"), b"")]),
            "hardlink",
        ),
        (
            "hardlink-up",
            raw_tar(&[("hl", Link, "../../../../../../../../outside/secret", b"")]),
            "hardlink",
        ),
    ];
    let store_dir = tmp.path().join("store");
    let store = ImageStore::open_with(store_dir.clone(), options(&registry.url())).unwrap();
    for (name, layer, words) in cases {
        let image = build_image(&ImageSpec::new(&format!("evil/{name}:1")), vec![layer]).unwrap();
        pusher.oci_image(&format!("evil/{name}"), "1", &image).await;
        let err = store.get(&format!("evil/{name}:1")).await.unwrap_err();
        match &err {
            ImageError::HostileLayer { reason, .. } => {
                assert!(reason.contains(words), "{name}: {reason}")
            }
            other => panic!("{name}: expected a hostile layer error, got {other}"),
        }
        assert_eq!(list(&store_dir.join("layers")), Vec::<String>::new(), "{name}");
    }
    assert_eq!(list(&outside), ["secret"]);
    let secret = fs::metadata(outside.join("secret")).unwrap();
    assert_eq!(secret.nlink(), 1);
    assert_eq!(fs::read_to_string(outside.join("secret")).unwrap(), "mine");
    assert!(!tmp.path().join("escape").exists() && !store_dir.join("escape").exists());
}

#[tokio::test]
async fn interrupted_pull_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(&tmp.path().join("registry"), None, None);
    let pusher = Pusher::new(&registry.url());
    let image = two_layer_image(tmp.path(), "cut:1", "whole");
    pusher.oci_image("library/cut", "1", &image).await;
    let proxy = Proxy::start(&registry.url()).await;
    let victim = image.layers[0].digest.clone();
    *proxy.faults.truncate.lock().unwrap() = Some((victim.to_string(), usize::MAX));

    let store_dir = tmp.path().join("store");
    let store = ImageStore::open_with(store_dir.clone(), options(&proxy.url)).unwrap();
    let err = store.get("cut:1").await.unwrap_err();
    assert!(
        matches!(&err, ImageError::Registry { reason, .. } if reason.contains("transfer broke")),
        "{err}"
    );
    // Retried, but a bounded number of times.
    let tries = proxy.blob_gets(&victim);
    assert_eq!(tries, 4, "bounded retries");
    assert!(!blob_names(&store_dir).contains(&victim.hex().to_string()));
    assert!(blob_names(&store_dir).iter().all(|b| !b.starts_with('.')));

    // A process that died mid-download and mid-unpack left temp entries behind.
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let stale_blob = store_dir.join(format!("blobs/sha256/.tmp-{dead_pid}-0"));
    fs::write(&stale_blob, b"partial").unwrap();
    let stale_layer = store_dir.join(format!("layers/.tmp-{dead_pid}-1"));
    fs::create_dir_all(stale_layer.join("rootfs/half")).unwrap();
    drop(store);

    let store = ImageStore::open_with(store_dir.clone(), options(&proxy.url)).unwrap();
    assert!(!stale_blob.exists() && !stale_layer.exists());
    // Two more cuts: the retries carry the pull through.
    *proxy.faults.truncate.lock().unwrap() = Some((victim.to_string(), 2));
    let got = store.get("cut:1").await.unwrap();
    assert_eq!(proxy.blob_gets(&victim), tries + 3);
    assert_eq!(fs::read_to_string(got.layers[1].join("etc/marker")).unwrap(), "whole");
    // Blobs that completed before the failure were kept, not fetched again.
    assert_eq!(proxy.blob_gets(&image.config.digest), 1);
}
