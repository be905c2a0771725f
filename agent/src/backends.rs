//! The containerizer backends the agent runs, built from its flags
//! (`--containerizers`, the image store, the rust and docker options).

use crate::flags::{DockerImageSource, Flags, ProvisionerBackend};
use anyhow::Context;
use mezzo_containerizer::Backend;
use std::path::PathBuf;
use std::sync::Arc;

pub async fn build_backends(flags: &Flags, work_dir: &std::path::Path, runtime_root: &std::path::Path, store_dir: &std::path::Path, launcher_dir: &std::path::Path) -> anyhow::Result<Vec<Arc<dyn Backend>>> {
    use mezzo_containerizer::docker::{DockerBackendConfig, ImageSource};
    use mezzo_containerizer::rust::RustBackendConfig;
    use mezzo_containerizer::BackendOptions;
    let kinds = flags.containerizers.0.clone();
    let registry = flags
        .docker_registry
        .as_deref()
        .map(mezzo_images::RegistrySource::parse)
        .transpose()
        .context("invalid --docker_registry")?;
    let archive_dir = match &registry {
        Some(mezzo_images::RegistrySource::Directory(dir)) => Some(dir.clone()),
        _ => None,
    };
    let docker_config = docker_config_path(flags, work_dir)?;
    let image_source = match flags.docker_image_source {
        DockerImageSource::Store => ImageSource::Store,
        DockerImageSource::Engine => ImageSource::Engine,
    };
    // The image store is opened (and collected) only when a backend uses it.
    let store = if kinds.iter().any(|k| k.uses_image_store(image_source)) {
        let options = mezzo_images::StoreOptions {
            registry: registry.clone(),
            docker_config: docker_config.clone(),
            ..Default::default()
        };
        let s = mezzo_images::ImageStore::open_with(store_dir.to_path_buf(), options)
            .with_context(|| format!("open the image store at {}", store_dir.display()))?;
        if let Some(interval) = flags.image_gc_interval {
            let policy = mezzo_images::gc::GcPolicy {
                keep_recent: flags.image_gc_keep_recent,
                max_store_bytes: flags.image_gc_max_store_bytes,
                ..Default::default()
            };
            mezzo_images::gc::spawn_gc_loop(s.clone(), policy, interval);
        }
        Some(s)
    } else {
        None
    };
    let defaults = RustBackendConfig::default();
    let options = BackendOptions {
        rust: RustBackendConfig {
            runtime_root: runtime_root.to_path_buf(),
            provisioner: store.clone().map(|s| Arc::new(s) as Arc<dyn mezzo_containerizer::isolators::Provisioner>),
            cgroups_root: flags.cgroups_root.clone(),
            launcher_dir: launcher_dir.to_path_buf(),
            isolation: match &flags.isolation {
                Some(names) => names.0.clone(),
                None => defaults.isolation.clone(),
            },
            cgroups_enable_cfs: flags.cgroups_enable_cfs,
            container_disk_watch_interval: flags.container_disk_watch_interval,
            enforce_container_disk_quota: flags.enforce_container_disk_quota,
            copy_rootfs: flags.image_provisioner_backend == Some(ProvisionerBackend::Copy),
            ..defaults
        },
        docker: DockerBackendConfig {
            image_archive_dir: archive_dir,
            docker_config,
            remove_delay: flags.docker_remove_delay,
            stop_timeout: flags.docker_stop_timeout,
            kill_orphans: flags.docker_kill_orphans,
            docker_host: flags.docker_socket.clone().filter(|s| !s.is_empty()),
            engine_timeout: flags.docker_engine_timeout,
            // Agents sharing an engine (tests, several agents on a
            // host) must not take each other's containers for orphans;
            // the work dir is stable across restarts.
            owner: Some(work_dir.display().to_string()),
            image_store: if image_source == ImageSource::Store { store } else { None },
            image_source,
        },
    };
    let mut backends = Vec::new();
    for kind in kinds {
        backends.push(kind.create(&options).await.with_context(|| format!("cannot set up the {kind} containerizer"))?);
    }
    Ok(backends)
}

/// `--docker_config` as a file: a path is used as is; inline JSON is
/// written (mode 0600) under the work dir.
fn docker_config_path(flags: &Flags, work_dir: &std::path::Path) -> anyhow::Result<Option<PathBuf>> {
    let Some(value) = flags.docker_config.as_deref().map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if value.starts_with('{') {
        serde_json::from_str::<serde_json::Value>(value).context("--docker_config is not valid JSON")?;
        let path = work_dir.join("docker_config.json");
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(&path)?;
        f.write_all(value.as_bytes())?;
        return Ok(Some(path));
    }
    let path = PathBuf::from(value.strip_prefix("file://").unwrap_or(value));
    anyhow::ensure!(path.is_file(), "--docker_config '{}' is not a file", path.display());
    Ok(Some(path))
}

