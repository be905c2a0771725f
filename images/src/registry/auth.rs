//! Registry authentication: parsing `WWW-Authenticate` challenges, and credentials read
//! from a docker config file (`~/.docker/config.json`).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;
use tracing::debug;

use crate::error::ImageError;

/// A user name and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password (or a personal access token).
    pub password: String,
}

impl Credentials {
    /// The value of an `Authorization: Basic ...` header.
    pub(crate) fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

impl fmt::Debug for Credentials {
    // Never print the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Credentials by registry host (`host[:port]`, lowercase), read from a
/// docker client config: `~/.docker/config.json` (`{"auths": {...}}`) or the
/// older `~/.dockercfg` (the same map without `auths`).
#[derive(Debug, Default, Clone)]
pub struct CredentialStore {
    by_host: HashMap<String, Credentials>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

impl CredentialStore {
    /// Reads the `auths` of a docker config file: `auth` (base64 of `user:password`) or
    /// `username` and `password` per registry.
    pub fn load(path: &Path) -> Result<Self, ImageError> {
        let bad = |reason: String| {
            ImageError::Config(format!("docker config {}: {reason}", path.display()))
        };
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        Self::parse(&bytes).map_err(bad)
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        // config.json nests the map under `auths`; .dockercfg is the map itself.
        let map = match value.get("auths") {
            Some(auths) => auths.clone(),
            None if value.is_object() => value,
            None => return Err("not a JSON object".to_string()),
        };
        let auths: HashMap<String, AuthEntry> = serde_json::from_value(map).map_err(|e| e.to_string())?;
        let mut by_host = HashMap::new();
        for (key, entry) in auths {
            let host = normalize_host(&key);
            let creds = if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|e| format!("auth of '{key}' is not base64: {e}"))?;
                let decoded = String::from_utf8(decoded)
                    .map_err(|_| format!("auth of '{key}' is not UTF-8"))?;
                let (user, pass) = decoded
                    .split_once(':')
                    .ok_or_else(|| format!("auth of '{key}' is not user:password"))?;
                Credentials {
                    username: user.to_string(),
                    password: pass.to_string(),
                }
            } else if let (Some(username), Some(password)) = (entry.username, entry.password) {
                Credentials { username, password }
            } else {
                if entry.identitytoken.is_some() {
                    debug!(registry = %key, "ignoring identity token (OAuth2 refresh tokens are not supported)");
                }
                continue;
            };
            by_host.insert(host, creds);
        }
        Ok(Self { by_host })
    }

    /// The credentials for `host` (`host[:port]`).
    pub fn get(&self, host: &str) -> Option<&Credentials> {
        let host = normalize_host(host);
        self.by_host.get(&host).or_else(|| {
            // Docker Hub is filed under several names.
            if is_docker_hub(&host) {
                self.by_host
                    .iter()
                    .find(|(k, _)| is_docker_hub(k))
                    .map(|(_, v)| v)
            } else {
                None
            }
        })
    }
}

fn is_docker_hub(host: &str) -> bool {
    matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com"
    )
}

/// `https://Host:5000/v1/` -> `host:5000`.
fn normalize_host(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or("").to_ascii_lowercase()
}

/// What a registry's `WWW-Authenticate` header asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// Get a token from `realm` and send it as `Authorization: Bearer`.
    Bearer {
        /// The token endpoint.
        realm: String,
        /// The `service` parameter to pass on.
        service: Option<String>,
        /// The `scope` parameter to pass on.
        scope: Option<String>,
    },
    /// Send `Authorization: Basic`.
    Basic,
}

/// Parses `Bearer realm="...",service="...",scope="..."` or `Basic realm="..."`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, params) = match header.split_once(char::is_whitespace) {
        Some((s, p)) => (s, p),
        None => (header, ""),
    };
    let params = parse_params(params);
    if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        })
    } else if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic)
    } else {
        None
    }
}

/// `key="quoted, value",key2=token` -> map (keys lowercase); backslash escapes in quotes.
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() && chars.peek().is_none() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                value.push(n);
                            }
                        }
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        let key = key.trim().to_ascii_lowercase();
        if !key.is_empty() {
            out.insert(key, value.trim().to_string());
        }
        if chars.peek().is_none() {
            return out;
        }
    }
}

/// A token endpoint's reply: docker's `token` or OAuth2's `access_token`.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenReply {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

impl TokenReply {
    /// The token, preferring `token` as docker does.
    pub(crate) fn into_token(self) -> Option<String> {
        self.token
            .filter(|t| !t.is_empty())
            .or(self.access_token.filter(|t| !t.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_with_commas_in_scope() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".to_string(),
                service: Some("registry.example".to_string()),
                scope: Some("repository:a/b:pull,push".to_string()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Bearer service=x"), None, "no realm");
        assert_eq!(parse_challenge("Negotiate abc"), None);
    }

    #[test]
    fn docker_config_both_forms() {
        let json = br#"{"auths": {
            "https://reg.example:5000/v1/": {"auth": "dXNlcjpwYTpzcw=="},
            "other.example": {"username": "u2", "password": "p2"},
            "https://index.docker.io/v1/": {"auth": "aHViOmh1YnB3"},
            "tokenonly.example": {"identitytoken": "x"}
        }}"#;
        let store = CredentialStore::parse(json).unwrap();
        let c = store.get("REG.example:5000").unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("user", "pa:ss"));
        assert_eq!(store.get("other.example").unwrap().password, "p2");
        assert_eq!(store.get("registry-1.docker.io").unwrap().username, "hub");
        assert!(store.get("tokenonly.example").is_none());
        assert!(store.get("reg.example").is_none(), "port is part of the key");
        assert!(CredentialStore::parse(br#"{"auths": {"x": {"auth": "!!"}}}"#).is_err());
    }

    #[test]
    fn token_reply_forms() {
        let r: TokenReply = serde_json::from_str(r#"{"access_token": "a"}"#).unwrap();
        assert_eq!(r.into_token().as_deref(), Some("a"));
        let r: TokenReply = serde_json::from_str(r#"{"token": "t", "access_token": "a"}"#).unwrap();
        assert_eq!(r.into_token().as_deref(), Some("t"));
        let r: TokenReply = serde_json::from_str(r#"{"token": ""}"#).unwrap();
        assert_eq!(r.into_token(), None);
    }
}
