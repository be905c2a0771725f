//! `mezzo image`: pull, list, remove, collect and import images, working directly on an
//! agent's image store directory (`<work_dir>/store/docker`), safely beside a running
//! agent (the store's file lock keeps a collection apart from the agent's pulls).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use mezzo_images::registry::RegistrySource;
use mezzo_images::store::StoreOptions;
use mezzo_images::{GcPolicy, GcReport, ImageReference, ImageStore, StoredImage};

/// The agent's default `--work_dir`.
pub const DEFAULT_WORK_DIR: &str = "/var/lib/mezzo";

/// The store directory of an agent with `work_dir` (its `--docker_store_dir` default).
pub fn store_dir_of(work_dir: &Path) -> PathBuf {
    work_dir.join("store").join("docker")
}

/// Where images are pulled from, and how.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// A registry URL or a directory of image archives (`--docker_registry`).
    pub registry: Option<String>,
    /// Registry credentials, `~/.docker/config.json` format.
    pub docker_config: Option<PathBuf>,
    /// Extra PEM root certificates for https registries.
    pub ca_cert: Option<PathBuf>,
    /// Reach registries named in references over plain http.
    pub insecure_http: bool,
}

/// Opens an existing store; listing or collecting a mistyped path should fail, not create it.
fn open_existing(store: &Path) -> Result<ImageStore> {
    if !store.join("images").is_dir() {
        bail!(
            "no image store at {} (give --store, or --work_dir of the agent)",
            store.display()
        );
    }
    ImageStore::open(store.to_path_buf(), None)
        .with_context(|| format!("open image store {}", store.display()))
}

/// `mezzo image pull`: fetches `reference` into the store; returns a report line per step.
pub async fn pull(store: &Path, reference: &str, options: PullOptions) -> Result<String> {
    let registry = options
        .registry
        .as_deref()
        .map(RegistrySource::parse)
        .transpose()?;
    let opened = ImageStore::open_with(
        store.to_path_buf(),
        StoreOptions {
            registry,
            docker_config: options.docker_config,
            ca_cert: options.ca_cert,
            insecure_http: options.insecure_http,
            ..StoreOptions::default()
        },
    )
    .with_context(|| format!("open image store {}", store.display()))?;
    let image = opened
        .pull(reference)
        .await
        .with_context(|| format!("pull {reference}"))?;
    let short = short_name(&image.reference);
    Ok(format!(
        "Pulled {short} ({} layer{})\n{}\n",
        image.layers.len(),
        plural(image.layers.len()),
        image.reference
    ))
}

/// `mezzo image ls`: the images of the store as a table.
pub async fn ls(store: &Path) -> Result<String> {
    let store = open_existing(store)?;
    let images = blocking(move || Ok(store.list()?)).await?;
    Ok(table(&images, SystemTime::now()))
}

/// `mezzo image rm`: removes each reference with what only it needed.
pub async fn rm(store: &Path, references: &[String]) -> Result<String> {
    let store = open_existing(store)?;
    let mut out = String::new();
    for reference in references {
        let (s, r) = (store.clone(), reference.clone());
        let report = blocking(move || Ok(s.remove(&r)?))
            .await
            .with_context(|| format!("remove {reference}"))?;
        out.push_str(&format!(
            "Deleted: {} ({} layer{}, {} freed)\n",
            short_name(reference),
            report.layers_removed,
            plural(report.layers_removed as usize),
            human_size(report.bytes_freed)
        ));
    }
    Ok(out)
}

/// `mezzo image gc`: collects what no container uses and nobody used lately.
pub async fn gc(store: &Path, policy: GcPolicy) -> Result<String> {
    let store = open_existing(store)?;
    let report = blocking(move || Ok(store.gc(&policy)?)).await?;
    Ok(gc_summary(&report))
}

/// `mezzo image import`: makes `name_tag` from a root filesystem tarball.
pub async fn import(store: &Path, tarball: &Path, name_tag: &str) -> Result<String> {
    let opened = ImageStore::open(store.to_path_buf(), None)
        .with_context(|| format!("open image store {}", store.display()))?;
    let image = opened
        .import_rootfs(tarball, name_tag)
        .await
        .with_context(|| format!("import {} as {name_tag}", tarball.display()))?;
    Ok(format!("{}\n", image.reference))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("image store task")?
}

/// What a collection freed, in the words of `docker image prune`.
pub fn gc_summary(report: &GcReport) -> String {
    format!(
        "Deleted images: {}\nDeleted layers: {}\nDeleted blobs: {}\nTotal reclaimed space: {}\n",
        report.images_removed,
        report.layers_removed,
        report.blobs_removed,
        human_size(report.bytes_freed)
    )
}

/// The `ls` table: REFERENCE, LAYERS, SIZE, LAST USED, columns padded to their widest cell.
pub fn table(images: &[StoredImage], now: SystemTime) -> String {
    let header = ["REFERENCE", "LAYERS", "SIZE", "LAST USED"].map(String::from);
    let rows: Vec<[String; 4]> = images
        .iter()
        .map(|image| {
            [
                short_name(&image.reference),
                image.layers.to_string(),
                human_size(image.size_bytes),
                time_ago(now.duration_since(image.last_used).unwrap_or_default()),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// `busybox:latest` for `docker.io/library/busybox:latest`; unparsable input as is.
fn short_name(reference: &str) -> String {
    ImageReference::parse(reference)
        .map(|r| r.short_name())
        .unwrap_or_else(|_| reference.to_string())
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Sizes as docker prints them: decimal units, three significant digits (`1.23MB`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes}B");
    }
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.digits$}{}", UNITS[unit])
}

/// `5 minutes ago`, as docker words it.
pub fn time_ago(d: Duration) -> String {
    let secs = d.as_secs();
    let (minute, hour, day) = (60, 3600, 86400);
    match secs {
        0 => "Less than a second ago".to_string(),
        1 => "1 second ago".to_string(),
        s if s < minute => format!("{s} seconds ago"),
        s if s < 2 * minute => "About a minute ago".to_string(),
        s if s < hour => format!("{} minutes ago", s / minute),
        s if s < 2 * hour => "About an hour ago".to_string(),
        s if s < 2 * day => format!("{} hours ago", s / hour),
        s if s < 14 * day => format!("{} days ago", s / day),
        s if s < 60 * day => format!("{} weeks ago", s / (7 * day)),
        s if s < 730 * day => format!("{} months ago", s / (30 * day)),
        s => format!("{} years ago", s / (365 * day)),
    }
}

/// Parses a byte count as Mesos flags write them: `512`, `100MB`, `10GB` (binary units).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size (e.g. 512MB, 10GB)"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "K" => 1 << 10,
        "MB" | "M" => 1 << 20,
        "GB" | "G" => 1 << 30,
        "TB" | "T" => 1 << 40,
        other => return Err(format!("unknown unit '{other}' in size '{text}'")),
    };
    Ok((value * scale as f64).round() as u64)
}

/// Parses a fraction of the disk, `0.9` or `90%`.
pub fn parse_fraction(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let value = match text.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
        None => text.parse::<f64>(),
    }
    .map_err(|_| format!("'{text}' is not a fraction (e.g. 0.9 or 90%)"))?;
    if !(0.0..=1.0).contains(&value) {
        return Err(format!("'{text}' is not between 0 and 1 (0% and 100%)"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_234), "1.23kB");
        assert_eq!(human_size(12_345_678), "12.3MB");
        assert_eq!(human_size(123_456_789_000), "123GB");
    }

    #[test]
    fn ages_read_like_docker() {
        assert_eq!(
            time_ago(Duration::from_millis(300)),
            "Less than a second ago"
        );
        assert_eq!(time_ago(Duration::from_secs(42)), "42 seconds ago");
        assert_eq!(time_ago(Duration::from_secs(90)), "About a minute ago");
        assert_eq!(time_ago(Duration::from_secs(600)), "10 minutes ago");
        assert_eq!(time_ago(Duration::from_secs(5000)), "About an hour ago");
        assert_eq!(time_ago(Duration::from_secs(3 * 86400)), "3 days ago");
    }

    #[test]
    fn byte_and_fraction_flags() {
        assert_eq!(parse_bytes("512").unwrap(), 512);
        assert_eq!(parse_bytes("100MB").unwrap(), 100 << 20);
        assert_eq!(parse_bytes("1.5GB").unwrap(), 3 << 29);
        assert!(parse_bytes("10parsecs").is_err());
        assert!(parse_bytes("MB").is_err());
        assert_eq!(parse_fraction("0.9").unwrap(), 0.9);
        assert_eq!(parse_fraction("75%").unwrap(), 0.75);
        assert!(parse_fraction("1.5").is_err());
    }

    #[test]
    fn table_pads_columns() {
        let now = SystemTime::now();
        let images = vec![StoredImage {
            reference: "docker.io/library/busybox:latest".to_string(),
            layers: 1,
            size_bytes: 2_000_000,
            last_used: now - Duration::from_secs(300),
        }];
        let out = table(&images, now);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "REFERENCE        LAYERS   SIZE     LAST USED");
        assert_eq!(lines[1], "busybox:latest   1        2.00MB   5 minutes ago");
    }
}
