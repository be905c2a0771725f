//! Layer tar streams (plain, gzip or zstd) unpacked by the image store into a
//! directory. Property: nothing is created, written, linked, chmod'ed or
//! chown'ed outside the destination. The destination sits in a fixed
//! directory, `/tmp/mezzo-fuzz-layer`, next to `outside/` (a file, a
//! directory and a symlink a hostile layer would aim at), so seeds can name
//! those paths absolutely (`/tmp/mezzo-fuzz-layer/outside`) or relatively
//! (`../outside`). Run one fuzzing process at a time (no `-jobs`/`-fork`).
#![no_main]

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use mezzo_images::layer::{decompressed, unpack_layer_stream};
use mezzo_images::Digest;

const ROOT: &str = "/tmp/mezzo-fuzz-layer";
/// Bound on the uncompressed stream, so a compression bomb costs seconds, not the disk.
const MAX_UNPACKED: u64 = 64 << 20;

/// What a change outside the destination would alter: the ctime moves on
/// every write, chmod, chown, link count or xattr change.
type Snapshot = BTreeMap<PathBuf, (u64, u32, u32, u32, u64, u64, i64, i64, Option<PathBuf>)>;

fn snapshot(dir: &Path, skip: &Path, out: &mut Snapshot) {
    for entry in fs::read_dir(dir).expect("read the fuzz root") {
        let path = entry.expect("read the fuzz root").path();
        if path == skip {
            continue;
        }
        let m = fs::symlink_metadata(&path).expect("stat in the fuzz root");
        let link = m.file_type().is_symlink().then(|| fs::read_link(&path).unwrap());
        out.insert(
            path.clone(),
            (m.ino(), m.mode(), m.uid(), m.gid(), m.nlink(), m.size(), m.mtime(), m.ctime(), link),
        );
        if m.is_dir() {
            snapshot(&path, skip, out);
        }
    }
}

fn setup() {
    let root = Path::new(ROOT);
    let _ = fs::remove_dir_all(root);
    fs::create_dir_all(root.join("outside/dir")).unwrap();
    fs::write(root.join("outside/file"), b"outside\n").unwrap();
    std::os::unix::fs::symlink("/tmp/mezzo-fuzz-layer/outside", root.join("outside/link")).unwrap();
}

fuzz_target!(|data: &[u8]| {
    static SETUP: Once = Once::new();
    SETUP.call_once(setup);
    let root = Path::new(ROOT);
    let dest = root.join("dest");
    let _ = fs::remove_dir_all(&dest);
    let mut before = Snapshot::new();
    snapshot(root, &dest, &mut before);

    // The diff id never matches: everything is unpacked, then refused.
    let diff_id = Digest::parse(&format!("sha256:{}", "0".repeat(64))).unwrap();
    if let Ok(stream) = decompressed(BufReader::new(data)) {
        let _ = unpack_layer_stream(stream.take(MAX_UNPACKED), &dest, &diff_id);
    }

    let mut after = Snapshot::new();
    snapshot(root, &dest, &mut after);
    assert_eq!(before, after, "unpacking changed something outside the destination");
    // Nothing inside is a hard link to an inode outside it.
    let outside: std::collections::BTreeSet<u64> = after.values().map(|v| v.0).collect();
    let mut inside = Snapshot::new();
    if dest.is_dir() {
        snapshot(&dest, Path::new(""), &mut inside);
    }
    for (path, v) in &inside {
        assert!(!outside.contains(&v.0), "{} is a hard link to an inode outside", path.display());
    }
    let _ = fs::remove_dir_all(&dest);
});
