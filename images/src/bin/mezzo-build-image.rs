//! mezzo-build-image: packs directories (one per layer, bottom first) into an image and
//! writes it as an OCI image layout and/or a `docker save` archive that `docker load` reads.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;
use mezzo_images::build::{build_image, layer_tar_from_dir, ArchiveFormat, ImageSpec};

/// Build a container image from root filesystem directories, without a registry or docker.
#[derive(Parser, Debug)]
#[command(name = "mezzo-build-image", version)]
struct Args {
    /// Directory to pack as a layer; repeat for more layers, bottom first.
    #[arg(long = "rootfs", required = true)]
    rootfs: Vec<PathBuf>,
    /// Image name and tag, e.g. busybox:latest.
    #[arg(long)]
    name: String,
    /// Write (or add the tag to) an OCI image layout at this directory.
    #[arg(long)]
    oci_out: Option<PathBuf>,
    /// Write a docker-archive tar (docker save format) at this path.
    #[arg(long)]
    docker_archive_out: Option<PathBuf>,
    /// Environment variable KEY=value; repeatable. Default: a standard PATH.
    #[arg(long = "env")]
    env: Vec<String>,
    /// Command as a JSON array. Default: ["sh"].
    #[arg(long)]
    cmd: Option<String>,
    /// Entrypoint as a JSON array.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Working directory.
    #[arg(long)]
    workdir: Option<String>,
    /// User, user:group or uid:gid.
    #[arg(long)]
    user: Option<String>,
    /// Gzip the layers.
    #[arg(long)]
    gzip: bool,
    /// Creation time and file mtimes, seconds since the epoch (fixed for reproducible output).
    #[arg(long, env = "SOURCE_DATE_EPOCH", default_value_t = 0)]
    created: u64,
}

fn json_argv(flag: &str, value: &str) -> Result<Vec<String>> {
    serde_json::from_str(value)
        .with_context(|| format!("--{flag} must be a JSON array of strings, got {value:?}"))
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.oci_out.is_none() && args.docker_archive_out.is_none() {
        bail!("nothing to write: give --oci-out and/or --docker-archive-out");
    }
    let mut spec = ImageSpec::new(&args.name);
    if !args.env.is_empty() {
        spec.env = args.env.clone();
    }
    if let Some(cmd) = &args.cmd {
        spec.cmd = Some(json_argv("cmd", cmd)?);
    }
    if let Some(entrypoint) = &args.entrypoint {
        spec.entrypoint = Some(json_argv("entrypoint", entrypoint)?);
    }
    spec.working_dir = args.workdir.clone();
    spec.user = args.user.clone();
    spec.gzip = args.gzip;
    spec.created = args.created;

    let layers = args
        .rootfs
        .iter()
        .map(|dir| {
            layer_tar_from_dir(dir, args.created).with_context(|| format!("pack {}", dir.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let image = build_image(&spec, layers)?;
    if let Some(dir) = &args.oci_out {
        image
            .write_oci_layout(dir)
            .with_context(|| format!("write OCI layout {}", dir.display()))?;
        println!(
            "{}: OCI layout {} (manifest {})",
            image.reference.short_name(),
            dir.display(),
            image.manifest.digest
        );
    }
    if let Some(path) = &args.docker_archive_out {
        image
            .write_archive(path, ArchiveFormat::Docker)
            .with_context(|| format!("write docker archive {}", path.display()))?;
        println!(
            "{}: docker archive {} (id {})",
            image.reference.short_name(),
            path.display(),
            image.config.digest
        );
    }
    Ok(())
}
