//! Registry credentials from a docker client config (`--docker_config`):
//! `~/.docker/config.json` (`{"auths": {"<registry>": {"auth": base64(user:pass)}}}`)
//! or the older `~/.dockercfg` (the same map without `auths`). They travel to
//! the engine as the `X-Registry-Auth` header of a pull.

use crate::ContainerizerError;
use base64::Engine as _;
use bollard::auth::DockerCredentials;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// The registry Docker Hub images come from, as `docker login` records it.
const DOCKER_HUB_KEYS: &[&str] = &["https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io"];

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

/// Credentials per registry, as read from a docker config file.
#[derive(Debug, Default, Clone)]
pub struct RegistryAuth {
    entries: HashMap<String, DockerCredentials>,
}

impl RegistryAuth {
    /// Reads `path` (config.json or .dockercfg format).
    pub fn load(path: &Path) -> Result<Self, ContainerizerError> {
        let text = std::fs::read_to_string(path).map_err(ContainerizerError::io("read docker config", path))?;
        Self::parse(&text).map_err(|e| ContainerizerError::InvalidSpec(format!("docker config {}: {e}", path.display())))
    }

    /// Parses a config.json or .dockercfg document.
    pub fn parse(text: &str) -> Result<Self, String> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let map = match value.get("auths") {
            Some(auths) => auths.clone(),
            None => value,
        };
        let raw: HashMap<String, AuthEntry> = serde_json::from_value(map).map_err(|e| e.to_string())?;
        let mut entries = HashMap::new();
        for (registry, entry) in raw {
            let (mut username, mut password) = (entry.username, entry.password);
            if let Some(auth) = entry.auth.filter(|a| !a.is_empty()) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|e| format!("auth of {registry} is not base64: {e}"))?;
                let decoded = String::from_utf8(decoded).map_err(|_| format!("auth of {registry} is not utf-8"))?;
                let (user, pass) = decoded
                    .split_once(':')
                    .ok_or_else(|| format!("auth of {registry} is not user:password"))?;
                username = Some(user.to_string());
                password = Some(pass.to_string());
            }
            let credentials = DockerCredentials {
                username,
                password,
                email: entry.email,
                identitytoken: entry.identitytoken,
                serveraddress: Some(registry.clone()),
                ..Default::default()
            };
            entries.insert(normalize(&registry), credentials);
        }
        Ok(RegistryAuth { entries })
    }

    /// Credentials for the registry `image_name` (a repository name without
    /// tag) is pulled from, when the config has some.
    pub fn for_image(&self, image_name: &str) -> Option<DockerCredentials> {
        let host = registry_host(image_name);
        if host == "docker.io" {
            return DOCKER_HUB_KEYS.iter().find_map(|k| self.entries.get(&normalize(k))).cloned();
        }
        self.entries.get(&normalize(host)).cloned()
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

/// `https://host:port/v2/` and `host:port` name the same registry.
fn normalize(key: &str) -> String {
    let key = key.trim_start_matches("https://").trim_start_matches("http://");
    key.split('/').next().unwrap_or(key).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

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
