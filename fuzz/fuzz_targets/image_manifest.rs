//! Image manifests, indexes (OCI index, docker manifest list, an OCI layout's
//! `index.json`) and `docker save` archives' `manifest.json`, as the image
//! store reads them from registries and archives. Each document that parses
//! must serialize and parse again to the same document, and its digests
//! either parse or are refused (never a panic).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mezzo_images::manifest::{Descriptor, DockerArchiveEntry, Index, Manifest};
use mezzo_images::Digest;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// serialize -> parse -> serialize is a fixpoint.
fn round_trip<T: Serialize + DeserializeOwned>(value: &T) {
    let json = serde_json::to_vec(value).expect("a parsed document serializes");
    let again: T = serde_json::from_slice(&json).unwrap_or_else(|e| {
        panic!("our own JSON does not parse: {e}: {}", String::from_utf8_lossy(&json))
    });
    assert_eq!(serde_json::to_vec(&again).unwrap(), json, "JSON is not a fixpoint");
}

fn check_descriptor(d: &Descriptor) {
    if let Ok(digest) = Digest::parse(&d.digest) {
        assert_eq!(digest.as_str(), d.digest);
        assert_eq!(digest.hex().len(), 64);
        assert!(digest.hex().bytes().all(|b| b.is_ascii_hexdigit()));
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = serde_json::from_slice::<Manifest>(data) {
        round_trip(&manifest);
        check_descriptor(&manifest.config);
        manifest.layers.iter().for_each(check_descriptor);
    }
    if let Ok(index) = serde_json::from_slice::<Index>(data) {
        round_trip(&index);
        index.manifests.iter().for_each(check_descriptor);
    }
    if let Ok(entries) = serde_json::from_slice::<Vec<DockerArchiveEntry>>(data) {
        round_trip(&entries);
    }
});
