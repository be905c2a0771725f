//! Leases (`leases/<sha256 of container id>.json`): which container uses which image and
//! layers. They are files, so they survive an agent restart; the agent releases the leases
//! of containers it no longer knows after recovery. GC keeps every layer a lease names.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::digest::{is_hex64, Digest};
use crate::error::ImageError;
use crate::fsutil::json_files;
use crate::store::{blocking, Image, ImageStore};
use crate::store_lock::StoreLock;

const LEASES: &str = "leases";

/// A container's claim on an image's layers, persisted under `leases/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The container holding the lease.
    pub container_id: String,
    /// The image's canonical reference.
    pub reference: String,
    /// The diff ids (`sha256:<hex>`) of the layers the container uses.
    pub layers: Vec<String>,
    /// When the lease was taken, seconds since the epoch.
    pub acquired_unix: u64,
}

impl ImageStore {
    /// Records that `container_id` uses `image`'s layers, so GC keeps them until
    /// [`ImageStore::release`]. Fails when a layer has left the store since the image was
    /// returned (get it again); [`ImageStore::get_leased`] does both in one step.
    /// Blocking (it may wait for a running collection); call it from `spawn_blocking`.
    pub fn acquire(&self, container_id: &str, image: &Image) -> Result<(), ImageError> {
        let _lock = StoreLock::shared_blocking(self.root())?;
        self.write_lease(container_id, image)
    }

    /// Gets `reference` and leases it to `container_id` under one hold of the store lock,
    /// so no collection can come between the two.
    pub async fn get_leased(
        &self,
        container_id: &str,
        reference: &str,
    ) -> Result<Image, ImageError> {
        // `get` takes the shared lock again on its own descriptor; shared flocks never
        // wait for each other, even with a collection queued for the exclusive lock.
        let _lock = StoreLock::shared(self.root()).await?;
        let image = self.get(reference).await?;
        let store = self.clone();
        let id = container_id.to_string();
        let leased = image.clone();
        blocking(move || store.write_lease(&id, &leased)).await?;
        Ok(image)
    }

    /// Drops `container_id`'s lease; an unknown id is not an error.
    pub fn release(&self, container_id: &str) -> Result<(), ImageError> {
        let path = lease_path(self.root(), container_id);
        match fs::remove_file(&path) {
            Ok(()) => {
                debug!(container = container_id, "released image lease");
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ImageError::Io {
                context: format!("remove {}", path.display()),
                source: e,
            }),
        }
    }

    /// Every lease in the store, by container id.
    pub fn leases(&self) -> Result<Vec<Lease>, ImageError> {
        let dir = self.root().join(LEASES);
        let mut out = Vec::new();
        for path in json_files(&dir)? {
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                // Released between listing and reading.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(ImageError::Io {
                        context: format!("read {}", path.display()),
                        source: e,
                    })
                }
            };
            // A lease that cannot be read must fail the caller: ignoring it could let GC
            // take layers a container runs on. Leases are written atomically, so this
            // means someone else wrote the file.
            let lease: Lease =
                serde_json::from_slice(&bytes).map_err(|source| ImageError::Json {
                    context: format!("parse lease {}", path.display()),
                    source,
                })?;
            out.push(lease);
        }
        out.sort_by(|a, b| a.container_id.cmp(&b.container_id));
        Ok(out)
    }

    /// Writes the lease file; the caller holds the store lock shared.
    fn write_lease(&self, container_id: &str, image: &Image) -> Result<(), ImageError> {
        let mut layers = Vec::with_capacity(image.layers.len());
        for dir in &image.layers {
            let hex = layer_hex(dir).ok_or_else(|| ImageError::InvalidImage {
                image: image.reference.clone(),
                reason: format!("{} is not a layer of an image store", dir.display()),
            })?;
            if !dir.is_dir() {
                return Err(ImageError::InvalidImage {
                    image: image.reference.clone(),
                    reason: format!("layer sha256:{hex} left the store; get the image again"),
                });
            }
            layers.push(format!("sha256:{hex}"));
        }
        let lease = Lease {
            container_id: container_id.to_string(),
            reference: image.reference.clone(),
            layers,
            acquired_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let bytes = serde_json::to_vec_pretty(&lease).map_err(|source| ImageError::Json {
            context: "serialize lease".to_string(),
            source,
        })?;
        let path = lease_path(self.root(), container_id);
        // Atomic but not fsynced: a lease must outlive an agent restart, and a
        // host crash ends every container that could hold one.
        crate::fsutil::write_replace(&path, &bytes)?;
        debug!(container = container_id, image = %image.reference, "acquired image lease");
        Ok(())
    }
}

/// `<hex>` of a layer directory `<store>/layers/<hex>/rootfs`.
fn layer_hex(dir: &Path) -> Option<String> {
    let hex = dir.parent()?.file_name()?.to_str()?;
    is_hex64(hex).then(|| hex.to_string())
}

fn lease_path(root: &Path, container_id: &str) -> PathBuf {
    // Hashed, so any container id makes a safe file name; the id itself is inside.
    root.join(LEASES).join(format!(
        "{}.json",
        Digest::of(container_id.as_bytes()).hex()
    ))
}
