//! Registry credentials from a docker client config (`--docker_config`),
//! read by the image store's parser (`~/.docker/config.json` or the older
//! `~/.dockercfg`). They travel to the engine as the `X-Registry-Auth`
//! header of a pull.

use crate::ContainerizerError;
use bollard::auth::DockerCredentials;
use mezzo_images::CredentialStore;
use std::path::Path;

/// Credentials per registry, as read from a docker config file.
#[derive(Debug, Default, Clone)]
pub struct RegistryAuth {
    store: CredentialStore,
}

impl RegistryAuth {
    /// Reads `path` (config.json or .dockercfg format).
    pub fn load(path: &Path) -> Result<Self, ContainerizerError> {
        let store = CredentialStore::load(path).map_err(|e| ContainerizerError::InvalidSpec(e.to_string()))?;
        Ok(RegistryAuth { store })
    }

    /// Parses a config.json or .dockercfg document.
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(RegistryAuth { store: CredentialStore::parse(text.as_bytes())? })
    }

    /// Credentials for the registry `image_name` (a repository name without
    /// tag) is pulled from, when the config has some.
    pub fn for_image(&self, image_name: &str) -> Option<DockerCredentials> {
        let host = registry_host(image_name);
        self.store.get(host).map(|c| DockerCredentials {
            username: Some(c.username.clone()),
            password: Some(c.password.clone()),
            serveraddress: Some(host.to_string()),
            ..Default::default()
        })
    }
}

/// The registry part of a repository name (`docker.io` when it has none), as
/// docker decides it: a first component with a `.` or `:`, or `localhost`.
pub fn registry_host(image_name: &str) -> &str {
    match image_name.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => first,
        _ => "docker.io",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn config_json_and_dockercfg_formats() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let json = format!(r#"{{"auths": {{"127.0.0.1:5000": {{"auth": "{auth}"}}, "https://index.docker.io/v1/": {{"auth": "{auth}"}}}}}}"#);
        let parsed = RegistryAuth::parse(&json).unwrap();
        let c = parsed.for_image("127.0.0.1:5000/team/app").unwrap();
        assert_eq!((c.username.as_deref(), c.password.as_deref()), (Some("alice"), Some("s3cret")));
        assert_eq!(c.serveraddress.as_deref(), Some("127.0.0.1:5000"));
        assert!(parsed.for_image("busybox").is_some());
        assert!(parsed.for_image("other.example:5000/app").is_none());
        let old = format!(r#"{{"https://reg.example/v1/": {{"auth": "{auth}", "email": "a@b"}}}}"#);
        let parsed = RegistryAuth::parse(&old).unwrap();
        assert_eq!(parsed.for_image("reg.example/app").unwrap().username.as_deref(), Some("alice"));
        assert!(RegistryAuth::parse(r#"{"auths": {"r": {"auth": "!!"}}}"#).is_err());
    }

    #[test]
    fn registry_host_follows_docker() {
        assert_eq!(registry_host("busybox"), "docker.io");
        assert_eq!(registry_host("library/busybox"), "docker.io");
        assert_eq!(registry_host("localhost/app"), "localhost");
        assert_eq!(registry_host("127.0.0.1:5000/app"), "127.0.0.1:5000");
        assert_eq!(registry_host("quay.io/team/app"), "quay.io");
    }
}
