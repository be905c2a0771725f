//! Image configs (OCI image config / docker image JSON), as the store reads
//! them and turns them into what a launcher needs (`ImageConfig`). A config
//! that parses serializes and parses again to the same config.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mezzo_images::manifest::ConfigFile;
use mezzo_images::{Digest, ImageConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(config) = serde_json::from_slice::<ConfigFile>(data) else { return };
    let json = serde_json::to_vec(&config).expect("a parsed config serializes");
    let again: ConfigFile = serde_json::from_slice(&json).unwrap_or_else(|e| {
        panic!("our own JSON does not parse: {e}: {}", String::from_utf8_lossy(&json))
    });
    assert_eq!(serde_json::to_vec(&again).unwrap(), json, "JSON is not a fixpoint");
    assert_eq!(ImageConfig::from(&config), ImageConfig::from(&again));
    for diff_id in &config.rootfs.diff_ids {
        let _ = Digest::parse(diff_id);
    }
});
