//! The crate's error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while resolving, importing, unpacking or mounting an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The reference string does not follow Docker's reference grammar.
    #[error("invalid image reference '{reference}': {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// Why it was rejected.
        reason: String,
    },
    /// No archive or layout holds the image, and the store has no copy of it.
    #[error("image '{image}' not found in {location}")]
    NotFound {
        /// The image, in its short form (e.g. `busybox:latest`).
        image: String,
        /// Where it was looked for.
        location: String,
    },
    /// Content did not hash to the digest that names it.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was being verified (a blob, a layer's diff id).
        what: String,
        /// The digest the manifest or config promised.
        expected: String,
        /// The digest of the bytes actually read.
        actual: String,
    },
    /// A layer tar tried to write outside its directory or otherwise misbehaved.
    #[error("refusing layer {layer}: {reason}")]
    HostileLayer {
        /// The layer's diff id or digest.
        layer: String,
        /// The offending entry and what it tried to do.
        reason: String,
    },
    /// An archive, manifest or config is malformed.
    #[error("invalid image {image}: {reason}")]
    InvalidImage {
        /// The image or archive concerned.
        image: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Something valid that this crate does not handle (e.g. sparse files, schema 1 manifests).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// An I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A JSON document could not be read or written.
    #[error("{context}: {source}")]
    Json {
        /// Which document.
        context: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// mount(2) or umount(2) failed.
    #[error("{op} {}: {source}", target.display())]
    Mount {
        /// `mount overlay on` or `unmount`.
        op: &'static str,
        /// The mount point.
        target: PathBuf,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// A registry answered with an error, or could not be reached after retries.
    #[error("registry {registry}: {reason}")]
    Registry {
        /// The registry's base URL.
        registry: String,
        /// What was asked and what went wrong.
        reason: String,
    },
    /// A registry refused our credentials, or asked for credentials we do not have.
    #[error("registry {registry} refused access: {reason}")]
    Unauthorized {
        /// The registry's base URL.
        registry: String,
        /// What was asked and why it was refused.
        reason: String,
    },
    /// The store options are unusable (bad registry URL, unreadable CA or credentials file).
    #[error("invalid image store configuration: {0}")]
    Config(String),
    /// A blocking task panicked or was cancelled.
    #[error("image task failed: {0}")]
    Task(String),
}

/// Attaches a description to I/O errors.
pub(crate) trait IoContext<T> {
    /// Wraps the error with `context()`, evaluated only on error.
    fn ctx<F: FnOnce() -> String>(self, context: F) -> Result<T, ImageError>;
}

impl<T> IoContext<T> for Result<T, io::Error> {
    fn ctx<F: FnOnce() -> String>(self, context: F) -> Result<T, ImageError> {
        self.map_err(|source| ImageError::Io {
            context: context(),
            source,
        })
    }
}

impl<T> IoContext<T> for Result<T, nix::Error> {
    fn ctx<F: FnOnce() -> String>(self, context: F) -> Result<T, ImageError> {
        self.map_err(|errno| ImageError::Io {
            context: context(),
            source: io::Error::from(errno),
        })
    }
}
