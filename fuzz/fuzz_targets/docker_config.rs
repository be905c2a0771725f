//! Docker credential files (`~/.docker/config.json`, `.dockercfg`, the
//! `--docker_config` flag) and registries' `WWW-Authenticate` challenges.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mezzo_images::registry::auth::{parse_challenge, Challenge, CredentialStore};

fuzz_target!(|data: &[u8]| {
    if let Ok(store) = CredentialStore::parse(data) {
        for host in ["docker.io", "index.docker.io", "localhost:5000", "quay.io", "https://Index.Docker.io/v1/"] {
            if let Some(creds) = store.get(host) {
                // Debug output never carries the password.
                assert_eq!(
                    format!("{creds:?}"),
                    format!("Credentials {{ username: {:?}, .. }}", creds.username)
                );
            }
        }
    }
    if let Ok(header) = std::str::from_utf8(data) {
        if let Some(Challenge::Bearer { realm, .. }) = parse_challenge(header) {
            assert!(!realm.is_empty() || header.to_ascii_lowercase().contains("realm"));
        }
    }
});
