//! Helpers shared by the integration tests: tiny images built in temp dirs.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use mezzo_images::build::{build_image, layer_tar_from_dir, ArchiveFormat, BuiltImage, ImageSpec};

/// Writes `content` at `root/rel`, creating parents.
pub fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// A small first layer: a file, an executable, a symlink and a hardlink.
pub fn base_layer(dir: &Path) {
    write(dir, "etc/hello", "hello from layer 1\n");
    write(dir, "bin/tool", "#!/bin/sh\necho tool\n");
    fs::set_permissions(dir.join("bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    std::os::unix::fs::symlink("hello", dir.join("etc/hello-link")).unwrap();
    fs::hard_link(dir.join("etc/hello"), dir.join("etc/hello-hard")).unwrap();
    fs::create_dir_all(dir.join("tmp")).unwrap();
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
}

/// A spec with a full run config, so tests can check every field comes through.
pub fn spec(name: &str) -> ImageSpec {
    let mut spec = ImageSpec::new(name);
    spec.env = vec!["PATH=/bin".to_string(), "GREETING=hi".to_string()];
    spec.entrypoint = Some(vec!["/bin/tool".to_string()]);
    spec.cmd = Some(vec!["arg1".to_string()]);
    spec.working_dir = Some("/etc".to_string());
    spec.user = Some("65534:65534".to_string());
    spec
}

/// Builds an image from layer directories (bottom first).
pub fn build_from_dirs(spec: &ImageSpec, dirs: &[&Path]) -> BuiltImage {
    let tars = dirs
        .iter()
        .map(|d| layer_tar_from_dir(d, 1_700_000_000).unwrap())
        .collect();
    build_image(spec, tars).unwrap()
}

/// Builds a one-layer image from `base_layer` named `name`.
pub fn base_image(tmp: &Path, name: &str, gzip: bool) -> BuiltImage {
    let layer = tmp.join(format!("layer-{}", name.replace([':', '/'], "_")));
    if !layer.exists() {
        base_layer(&layer);
    }
    let mut spec = spec(name);
    spec.gzip = gzip;
    build_from_dirs(&spec, &[&layer])
}

/// Writes `image` into `archive_dir` at `rel` in `format`, making parents.
pub fn write_archive(image: &BuiltImage, archive_dir: &Path, rel: &str, format: ArchiveFormat) {
    let path = archive_dir.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    image.write_archive(&path, format).unwrap();
}

/// A tar of raw entries `(name, type, link name, data)`, names written byte for byte, so
/// tests can make entries that tar builders refuse (`..`, absolute paths).
pub fn raw_tar(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, link, data) in entries {
        let mut header = tar::Header::new_old();
        {
            let old = header.as_old_mut();
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_entry_type(*kind);
        header.set_size(data.len() as u64);
        header.set_mode(if *kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

/// Names in `dir`, sorted.
pub fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}
