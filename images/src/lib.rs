//! mezzo-images: image references, local image archives, the content and layer store,
//! and rootfs backends (overlay mount, copy).
//!
//! The flow of one image: [`ImageReference::parse`] -> [`ImageStore::get`] (or
//! [`ImageStore::pull`]) finds the image in a registry ([`registry`], configured with
//! [`StoreOptions`]) or the local archive directory, puts its blobs into the content store
//! (`blobs/sha256/<hex>`, verified) and unpacks each layer once into the layer cache
//! (`layers/<diff id>/rootfs`, whiteouts in overlay form) -> [`rootfs::mount_overlay`]
//! or [`rootfs::copy_layers`] makes a container's root filesystem from the layers.

pub mod build;
mod content;
mod digest;
pub mod error;
mod fsutil;
pub mod gc;
pub mod layer;
pub mod leases;
mod locks;
pub mod manifest;
pub mod reference;
pub mod registry;
pub mod rootfs;
mod source;
pub mod store;
mod store_lock;

pub use digest::Digest;
pub use error::ImageError;
pub use gc::{spawn_gc_loop, GcPolicy, GcReport, StoredImage};
pub use leases::Lease;
pub use reference::ImageReference;
pub use registry::auth::{CredentialStore, Credentials};
pub use registry::RegistrySource;
pub use store::{Image, ImageConfig, ImageStore, StoreOptions, StoreStats};
