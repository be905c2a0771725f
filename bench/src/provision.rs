//! `image_warm_provision_{1,5,20}`: the rootfs of an image whose layers are
//! cached: `ImageStore::get` on a warm store + overlay mount + unmount.

use crate::report::{Entry, Samples};
use anyhow::{Context, Result};
use mezzo_images::build::{build_image, layer_tar_from_dir, ImageSpec};
use mezzo_images::rootfs::{mount_overlay, unmount};
use mezzo_images::ImageStore;
use std::path::Path;
use std::time::Instant;

/// Writes an image of `layers` small layers as an OCI layout named
/// `bench-layers-<layers>` under `archives/oci/`. Layer 1 holds a small
/// tree; layer k adds `/etc/layer-k` and `/opt/layerk/data`.
fn build_layered_image(work: &Path, archives: &Path, layers: usize) -> Result<String> {
    let name = format!("bench-layers-{layers}");
    let src = work.join(format!("{name}-src"));
    let mut tars = Vec::new();
    for k in 1..=layers {
        let dir = src.join(format!("l{k}"));
        if k == 1 {
            for d in ["bin", "etc", "opt", "tmp", "usr/bin", "var/lib"] {
                std::fs::create_dir_all(dir.join(d))?;
            }
            std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
        }
        std::fs::create_dir_all(dir.join("etc"))?;
        std::fs::create_dir_all(dir.join(format!("opt/layer{k}")))?;
        std::fs::write(dir.join(format!("etc/layer-{k}")), format!("{k}\n"))?;
        std::fs::write(dir.join(format!("opt/layer{k}/data")), vec![b'x'; 4096])?;
        tars.push(layer_tar_from_dir(&dir, 0).with_context(|| format!("pack {}", dir.display()))?);
    }
    let image = build_image(&ImageSpec::new(&format!("{name}:latest")), tars)?;
    image.write_oci_layout(&archives.join("oci").join(&name))?;
    std::fs::remove_dir_all(&src)?;
    Ok(name)
}

/// Builds the three images, warms a store with them, and times `runs`
/// warm provisionings of each after `warmup` untimed ones.
pub async fn warm_provision(work: &Path, runs: usize, warmup: usize) -> Result<Vec<Entry>> {
    let archives = work.join("provision-archives");
    let store = ImageStore::open(work.join("provision-store"), Some(archives.clone()))?;
    let mut entries = Vec::new();
    for layers in [1usize, 5, 20] {
        let name = build_layered_image(work, &archives, layers)?;
        let cold = Instant::now();
        let image = store.get(&name).await.with_context(|| format!("import {name}"))?;
        let cold = cold.elapsed();
        anyhow::ensure!(image.layers.len() == layers, "{name} has {} layers, expected {layers}", image.layers.len());
        let base = work.join(format!("provision-{layers}"));
        let (mut total, mut get, mut mount) = (Samples::default(), Samples::default(), Samples::default());
        for i in 0..warmup + runs {
            // Fresh upper/work/target each time, as every container gets:
            // made and removed outside the timed part.
            let dir = base.join(i.to_string());
            let (upper, wdir, target) = (dir.join("upper"), dir.join("work"), dir.join("merged"));
            for d in [&upper, &wdir, &target] {
                std::fs::create_dir_all(d)?;
            }
            let t0 = Instant::now();
            let image = store.get(&name).await?;
            let t1 = Instant::now();
            mount_overlay(&image.layers, &upper, &wdir, &target)?;
            let mounted = unmount(&target);
            let t2 = Instant::now();
            mounted?;
            std::fs::remove_dir_all(&dir)?;
            if i >= warmup {
                total.push(t2 - t0);
                get.push(t1 - t0);
                mount.push(t2 - t1);
            }
        }
        let _ = std::fs::remove_dir_all(&base);
        let mut e = Entry::new(&format!("image_warm_provision_{layers}"), total.median_ms(), "ms")
            .target("value <= 1 ms")
            .with("get_median", get.median_ms())
            .with("get_min", get.min_ms())
            .with("mount_unmount_min", mount.min_ms())
            .with("mount_unmount_median", mount.median_ms())
            .with("min", total.min_ms())
            .with("p95", total.p95_ms())
            .with("cold_import", cold.as_secs_f64() * 1e3)
            .note("ImageStore::get on a warm store + rootfs::mount_overlay + rootfs::unmount");
        e.runs = Some(total.len());
        eprintln!(
            "  {layers:>2} layers: total {:.3} ms (get {:.3}, mount+unmount {:.3})",
            total.median_ms(),
            get.median_ms(),
            mount.median_ms()
        );
        entries.push(e);
    }
    Ok(entries)
}
