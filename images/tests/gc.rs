//! Leases and garbage collection of the image store: what is leased or recently used
//! stays, the rest goes; thresholds; crash midway; concurrent gets; remove and import.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::*;
use mezzo_images::build::{layer_tar_from_dir, ArchiveFormat, BuiltImage};
use mezzo_images::{GcPolicy, ImageError, ImageStore};

/// A store fed from an archive dir holding three images: `a` and `b` share their base
/// layer, `c` has a layer of its own.
struct Fixture {
    _tmp: tempfile::TempDir,
    archives: PathBuf,
    store_dir: PathBuf,
    a: BuiltImage,
    b: BuiltImage,
    c: BuiltImage,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let archives = tmp.path().join("archives");
        let (base, a_top, b_top, c_only) = (
            tmp.path().join("base"),
            tmp.path().join("a-top"),
            tmp.path().join("b-top"),
            tmp.path().join("c-only"),
        );
        base_layer(&base);
        write(&a_top, "a.txt", &"a".repeat(10_000));
        write(&b_top, "b.txt", &"b".repeat(20_000));
        write(&c_only, "c.txt", &"c".repeat(30_000));
        let a = build_from_dirs(&spec("a:latest"), &[&base, &a_top]);
        let b = build_from_dirs(&spec("b:latest"), &[&base, &b_top]);
        let c = build_from_dirs(&spec("c:latest"), &[&c_only]);
        for (image, file) in [(&a, "a.tar"), (&b, "b.tar"), (&c, "c.tar")] {
            write_archive(image, &archives, file, ArchiveFormat::Docker);
        }
        let store_dir = tmp.path().join("store");
        Self {
            _tmp: tmp,
            archives,
            store_dir,
            a,
            b,
            c,
        }
    }

    fn open(&self) -> ImageStore {
        ImageStore::open(self.store_dir.clone(), Some(self.archives.clone())).unwrap()
    }

    fn layer_dir(&self, image: &BuiltImage, i: usize) -> PathBuf {
        self.store_dir.join("layers").join(image.diff_ids[i].hex())
    }

    fn blob(&self, digest: &mezzo_images::Digest) -> PathBuf {
        self.store_dir.join("blobs/sha256").join(digest.hex())
    }

    /// Makes the record of `reference` look last used `ago` in the past.
    fn set_last_used(&self, reference: &str, ago: Duration) {
        let path = record_of(&self.store_dir, reference).expect("image record");
        let file = fs::File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - ago).unwrap();
    }
}

/// The record file whose `reference` is `reference` (canonical form).
fn record_of(store: &Path, reference: &str) -> Option<PathBuf> {
    fs::read_dir(store.join("images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .find(|p| {
            let v: serde_json::Value = serde_json::from_slice(&fs::read(p).unwrap()).unwrap();
            v["reference"] == reference
        })
}

fn forced(keep_recent: Duration) -> GcPolicy {
    GcPolicy {
        keep_recent,
        force: true,
        ..GcPolicy::default()
    }
}

const A: &str = "docker.io/library/a:latest";
const B: &str = "docker.io/library/b:latest";

#[tokio::test]
async fn gc_keeps_leased_images_and_frees_the_rest() {
    let f = Fixture::new();
    let store = f.open();
    let a = store.get("a").await.unwrap();
    store.get("b").await.unwrap();
    store.get("c").await.unwrap();
    store.acquire("container-1", &a).unwrap();

    let report = store.gc(&forced(Duration::ZERO)).unwrap();
    assert_eq!(report.images_removed, 2, "{report:?}");
    // b's top and c's only layer; the base is a's too.
    assert_eq!(report.layers_removed, 2, "{report:?}");
    // b's and c's configs, b's top blob, c's blob.
    assert_eq!(report.blobs_removed, 4, "{report:?}");
    assert!(report.bytes_freed > 50_000, "{report:?}");

    assert!(a.layers.iter().all(|dir| dir.is_dir()));
    assert_eq!(
        fs::read_to_string(a.layers[0].join("etc/hello")).unwrap(),
        "hello from layer 1\n"
    );
    assert!(f.layer_dir(&f.a, 0).is_dir() && f.layer_dir(&f.a, 1).is_dir());
    assert!(!f.layer_dir(&f.b, 1).exists());
    assert!(!f.layer_dir(&f.c, 0).exists());
    assert!(f.blob(&f.a.config.digest).is_file());
    assert!(f.blob(&f.a.layers[1].digest).is_file());
    assert!(!f.blob(&f.b.config.digest).exists());
    assert!(!f.blob(&f.b.layers[1].digest).exists());
    assert!(!f.blob(&f.c.layers[0].digest).exists());
    let listed: Vec<String> = store
        .list()
        .unwrap()
        .into_iter()
        .map(|i| i.reference)
        .collect();
    assert_eq!(listed, vec![A.to_string()]);
    assert!(list(&f.store_dir.join("trash")).is_empty());

    // Nothing left to free while the lease holds; everything once it is released.
    assert_eq!(
        store.gc(&forced(Duration::ZERO)).unwrap(),
        Default::default()
    );
    store.release("container-1").unwrap();
    let report = store.gc(&forced(Duration::ZERO)).unwrap();
    assert_eq!(
        (report.images_removed, report.layers_removed),
        (1, 2),
        "{report:?}"
    );
    assert!(list(&f.store_dir.join("layers")).is_empty());
    assert!(list(&f.store_dir.join("blobs/sha256")).is_empty());
    assert!(list(&f.store_dir.join("images")).is_empty());

    // A collected image comes back on the next get.
    let again = store.get("b").await.unwrap();
    assert_eq!(
        fs::read_to_string(again.layers[1].join("b.txt"))
            .unwrap()
            .len(),
        20_000
    );
}

#[tokio::test]
async fn keep_recent_spares_images_used_lately() {
    let f = Fixture::new();
    let store = f.open();
    store.get("a").await.unwrap();
    store.get("b").await.unwrap();
    f.set_last_used(A, Duration::from_secs(3600));
    f.set_last_used(B, Duration::from_secs(3600));
    // A get marks the image used now, even when it comes from the cache.
    store.get("b").await.unwrap();

    let report = store.gc(&forced(Duration::from_secs(600))).unwrap();
    assert_eq!(report.images_removed, 1, "{report:?}");
    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].reference, B);
    assert_eq!(listed[0].layers, 2);
    assert!(listed[0].size_bytes >= 20_000, "{:?}", listed[0]);
    let since = SystemTime::now()
        .duration_since(listed[0].last_used)
        .unwrap_or_default();
    assert!(since < Duration::from_secs(60), "last used {since:?} ago");
    assert!(!f.layer_dir(&f.a, 1).exists());
    assert!(f.layer_dir(&f.b, 0).is_dir() && f.layer_dir(&f.b, 1).is_dir());
}

#[tokio::test]
async fn thresholds_decide_whether_to_collect() {
    let f = Fixture::new();
    let store = f.open();
    store.get("c").await.unwrap();
    let size = store.list().unwrap()[0].size_bytes;
    assert!(size >= 30_000);

    let above = GcPolicy {
        max_store_bytes: Some(1 << 40),
        ..GcPolicy::default()
    };
    assert_eq!(store.gc(&above).unwrap(), Default::default());
    // No filesystem is fuller than full.
    let full = GcPolicy {
        disk_usage_threshold: Some(1.0),
        ..GcPolicy::default()
    };
    assert_eq!(store.gc(&full).unwrap(), Default::default());
    assert!(f.layer_dir(&f.c, 0).is_dir());

    let below = GcPolicy {
        max_store_bytes: Some(size / 2),
        ..GcPolicy::default()
    };
    let report = store.gc(&below).unwrap();
    assert_eq!(
        (report.images_removed, report.layers_removed),
        (1, 1),
        "{report:?}"
    );
    assert!(report.bytes_freed >= size, "{report:?}");
    assert!(!f.layer_dir(&f.c, 0).exists());

    store.get("c").await.unwrap();
    let any_use = GcPolicy {
        disk_usage_threshold: Some(0.0),
        ..GcPolicy::default()
    };
    assert_eq!(store.gc(&any_use).unwrap().images_removed, 1);
}

#[tokio::test]
async fn deletion_interrupted_by_a_crash_is_finished_on_open() {
    let f = Fixture::new();
    let store = f.open();
    store.get("a").await.unwrap();
    drop(store);

    // What a collector that died after moving the layer to the trash, and while
    // emptying it, leaves behind: a trash entry named by a pid that cannot be alive
    // (above the kernel's PID_MAX_LIMIT), with part of the layer already gone.
    let layer = f.layer_dir(&f.a, 0);
    let trash = f.store_dir.join("trash");
    fs::create_dir_all(&trash).unwrap();
    let entry = trash.join(format!(
        "4194305-0-layer-{}.deleting",
        f.a.diff_ids[0].hex()
    ));
    fs::rename(&layer, &entry).unwrap();
    fs::remove_file(entry.join("rootfs/etc/hello")).unwrap();

    let store = f.open();
    assert!(
        list(&trash).is_empty(),
        "trash emptied on open: {:?}",
        list(&trash)
    );
    // The half-deleted layer is never used: the next get unpacks it again.
    let image = store.get("a").await.unwrap();
    assert_eq!(store.stats().layers_unpacked, 1);
    assert_eq!(
        fs::read_to_string(image.layers[0].join("etc/hello")).unwrap(),
        "hello from layer 1\n"
    );
    // Trash of a live process (this one) is left to it.
    let ours = trash.join(format!("{}-0-layer-x.deleting", std::process::id()));
    fs::create_dir(&ours).unwrap();
    drop(f.open());
    assert!(ours.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_gets_and_gc_never_lose_layers() {
    let f = Fixture::new();
    let store = f.open();
    // A second handle on the same directory acts like a second process (own in-process
    // locks); only the store's file lock keeps the two apart.
    let collector = f.open();
    let round = async {
        for round in 0..6 {
            let gets: Vec<_> = (0..8)
                .map(|i| {
                    let store = store.clone();
                    let name = ["a", "b", "c"][i % 3];
                    tokio::spawn(async move {
                        let id = format!("round{round}-{i}");
                        let image = store.get_leased(&id, name).await?;
                        for dir in &image.layers {
                            assert!(dir.is_dir(), "{} missing from {name}", dir.display());
                            assert!(fs::read_dir(dir).unwrap().next().is_some());
                        }
                        store.release(&id)?;
                        Ok::<_, ImageError>(image.layers.len())
                    })
                })
                .collect();
            let gcs: Vec<_> = (0..3)
                .map(|_| {
                    let collector = collector.clone();
                    tokio::task::spawn_blocking(move || collector.gc(&forced(Duration::ZERO)))
                })
                .collect();
            for get in gets {
                assert!(get.await.unwrap().unwrap() >= 1);
            }
            for gc in gcs {
                gc.await.unwrap().unwrap();
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), round)
        .await
        .expect("gets and collections finish");
    assert!(store.leases().unwrap().is_empty());
    // With no leases left, a final collection empties the store.
    collector.gc(&forced(Duration::ZERO)).unwrap();
    assert!(list(&f.store_dir.join("layers")).is_empty());
}

#[tokio::test]
async fn leases_persist_and_releasing_unknown_ids_is_fine() {
    let f = Fixture::new();
    let store = f.open();
    let a = store.get("a").await.unwrap();
    store.acquire("c-1", &a).unwrap();
    store.acquire("odd/id with spaces", &a).unwrap();
    drop(store);

    let store = f.open();
    let leases = store.leases().unwrap();
    assert_eq!(leases.len(), 2);
    assert_eq!(leases[0].container_id, "c-1");
    assert_eq!(leases[0].reference, A);
    assert_eq!(
        leases[0].layers,
        f.a.diff_ids
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    );
    store.release("never-acquired").unwrap();
    store.release("c-1").unwrap();
    store.release("c-1").unwrap();
    store.release("odd/id with spaces").unwrap();
    assert!(store.leases().unwrap().is_empty());

    // An image whose layers were collected after the get cannot be leased.
    store.gc(&forced(Duration::ZERO)).unwrap();
    let err = store.acquire("late", &a).unwrap_err();
    assert!(err.to_string().contains("left the store"), "{err}");
    assert!(store.leases().unwrap().is_empty());
}

#[tokio::test]
async fn remove_refuses_leased_images() {
    let f = Fixture::new();
    let store = f.open();
    let a = store.get("a").await.unwrap();
    store.get("b:latest").await.unwrap();
    store.acquire("c-1", &a).unwrap();

    let err = store.remove("a").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("a:latest") && msg.contains("c-1"), "{msg}");
    assert!(f.layer_dir(&f.a, 1).is_dir());

    let report = store.remove("b").unwrap();
    assert_eq!(
        (report.images_removed, report.layers_removed),
        (1, 1),
        "{report:?}"
    );
    assert!(f.layer_dir(&f.b, 0).is_dir(), "shared base layer stays");
    assert!(!f.layer_dir(&f.b, 1).exists());
    assert!(matches!(
        store.remove("b"),
        Err(ImageError::NotFound { .. })
    ));
    assert!(matches!(
        store.remove("nope:1"),
        Err(ImageError::NotFound { .. })
    ));

    store.release("c-1").unwrap();
    store.remove("docker.io/library/a:latest").unwrap();
    assert!(store.list().unwrap().is_empty());
    assert!(list(&f.store_dir.join("layers")).is_empty());
}

#[tokio::test]
async fn imported_rootfs_is_served_without_an_archive_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    base_layer(&rootfs);
    let tar = tmp.path().join("rootfs.tar");
    fs::write(&tar, layer_tar_from_dir(&rootfs, 0).unwrap()).unwrap();
    let gz = tmp.path().join("rootfs.tar.gz");
    {
        use std::io::Write;
        let mut enc =
            flate2::write::GzEncoder::new(fs::File::create(&gz).unwrap(), Default::default());
        enc.write_all(&fs::read(&tar).unwrap()).unwrap();
        enc.finish().unwrap();
    }
    let store_dir = tmp.path().join("store");
    let store = ImageStore::open(store_dir.clone(), None).unwrap();

    let image = store.import_rootfs(&tar, "my/app:1.0").await.unwrap();
    assert_eq!(image.reference, "docker.io/my/app:1.0");
    assert_eq!(image.layers.len(), 1);
    let gzipped = store
        .import_rootfs(&gz, "localhost:5000/app:gz")
        .await
        .unwrap();
    // Same content, same diff id: one layer dir serves both.
    assert_eq!(gzipped.layers, image.layers);
    assert!(
        list(&store_dir.join("archives")).is_empty(),
        "staging removed"
    );

    let fresh = ImageStore::open(store_dir.clone(), None).unwrap();
    let got = fresh.get("my/app:1.0").await.unwrap();
    assert_eq!(
        fs::read_to_string(got.layers[0].join("etc/hello")).unwrap(),
        "hello from layer 1\n"
    );
    assert!(got.config.env.iter().any(|e| e.starts_with("PATH=")));
    let listed: Vec<String> = fresh
        .list()
        .unwrap()
        .into_iter()
        .map(|i| i.reference)
        .collect();
    assert_eq!(
        listed,
        vec!["docker.io/my/app:1.0", "localhost:5000/app:gz"]
    );

    let not_tar = tmp.path().join("junk.tar");
    fs::write(&not_tar, b"definitely not a tar").unwrap();
    assert!(store.import_rootfs(&not_tar, "junk:1").await.is_err());
    let by_digest = format!("app@sha256:{}", "0".repeat(64));
    assert!(matches!(
        store.import_rootfs(&tar, &by_digest).await,
        Err(ImageError::InvalidReference { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_loop_collects_in_the_background() {
    let f = Fixture::new();
    let store = f.open();
    store.get("c").await.unwrap();
    let task = mezzo_images::spawn_gc_loop(
        store.clone(),
        forced(Duration::ZERO),
        Duration::from_secs(1),
    );
    let collected = async {
        while f.layer_dir(&f.c, 0).exists() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let result = tokio::time::timeout(Duration::from_secs(10), collected).await;
    task.abort();
    result.expect("the loop collects the unused image within a few intervals");
    assert!(store.list().unwrap().is_empty());
}
