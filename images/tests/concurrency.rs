//! Concurrent gets of one image do the import and unpack once.

mod common;

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;

use common::*;
use mezzo_images::build::ArchiveFormat;
use mezzo_images::ImageStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_gets_unpack_each_layer_once() {
    let tmp = tempfile::tempdir().unwrap();
    let archives = tmp.path().join("archives");
    let (l1, l2) = (tmp.path().join("l1"), tmp.path().join("l2"));
    base_layer(&l1);
    // A bigger second layer, so the unpack takes long enough for the gets to overlap.
    for i in 0..300 {
        write(&l2, &format!("data/{}/{i}", i % 10), &"x".repeat(4096));
    }
    let image = build_from_dirs(&spec("busybox:latest"), &[&l1, &l2]);
    write_archive(&image, &archives, "busybox.tar", ArchiveFormat::Docker);
    let store = ImageStore::open(tmp.path().join("store"), Some(archives)).unwrap();

    let gets: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            // Different spellings of the same image share the work too.
            let name = if i % 2 == 0 {
                "busybox"
            } else {
                "docker.io/library/busybox:latest"
            };
            tokio::spawn(async move { store.get(name).await })
        })
        .collect();
    let mut results = Vec::new();
    for get in gets {
        results.push(get.await.unwrap().unwrap());
    }
    let layer_sets: HashSet<_> = results.iter().map(|i| i.layers.clone()).collect();
    assert_eq!(layer_sets.len(), 1, "every get returns the same layers");
    let stats = store.stats();
    assert_eq!(stats.layers_unpacked, 2, "{stats:?}");
    assert_eq!(stats.blobs_imported, 2, "{stats:?}");

    // Exactly the two layer dirs, no temp leftovers, and their content whole.
    let layers_dir = tmp.path().join("store/layers");
    let mut expected: Vec<String> = image.diff_ids.iter().map(|d| d.hex().to_string()).collect();
    expected.sort();
    assert_eq!(list(&layers_dir), expected);
    let top = &results[0].layers[1];
    assert_eq!(fs::read_dir(top.join("data/3")).unwrap().count(), 30);
    // Still the same directories (same inodes) after another round of gets.
    let inode = fs::metadata(top).unwrap().ino();
    let again = store.get("busybox").await.unwrap();
    assert_eq!(fs::metadata(&again.layers[1]).unwrap().ino(), inode);
    assert_eq!(store.stats(), stats);
}
