//! HTTP basic authentication of the agent's operator endpoints, as Mesos's
//! `--authenticate_http_readonly` / `--authenticate_http_readwrite` with
//! `--http_credentials` (Mesos's JSON credentials file). Off by default.
//!
//! Read-only: `/state`, `/slave(1)/state`, `/monitor/statistics(.json)`,
//! `/containers`, `/files/*`, and the `GET_*` calls of `/api/v1`.
//! Read-write: every other `/api/v1` call. Open: `/health`, `/version`.
//! The executor API and the master's internal calls have their own schemes.

use crate::slave::Agent;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use std::path::Path;
use std::sync::Arc;

/// The realm in the `WWW-Authenticate` challenge.
pub const REALM: &str = "mezzo";

/// What an endpoint or call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

/// A credentials file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// the file cannot be read
    #[error("cannot read credentials file {path}: {source}")]
    Io { path: String, #[source] source: std::io::Error },
    /// the file is not Mesos's `{"credentials": [{"principal", "secret"}]}`
    #[error("credentials file {path} is not valid: {reason}")]
    Invalid { path: String, reason: String },
    /// authentication is on but no credentials were given
    #[error("{flag} needs --http_credentials (a JSON file of principals and secrets)")]
    Missing { flag: &'static str },
}

#[derive(serde::Deserialize)]
struct CredentialsFile {
    credentials: Vec<Credential>,
}

/// One principal and its secret.
#[derive(Clone, serde::Deserialize)]
pub struct Credential {
    pub principal: String,
    pub secret: String,
}

/// Parses Mesos's credentials JSON (`file://` prefix accepted) into
/// principals and secrets.
pub fn load_credentials(flag_value: &str) -> Result<Vec<Credential>, CredentialsError> {
    let path = flag_value.strip_prefix("file://").unwrap_or(flag_value);
    let text = std::fs::read_to_string(Path::new(path)).map_err(|source| CredentialsError::Io { path: path.to_string(), source })?;
    let invalid = |reason: String| CredentialsError::Invalid { path: path.to_string(), reason };
    let file: CredentialsFile = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    for (i, c) in file.credentials.iter().enumerate() {
        if c.principal.is_empty() || c.principal.contains(':') || c.principal.contains('\0') {
            return Err(invalid(format!("credentials[{i}].principal must be non-empty without ':' or NUL")));
        }
    }
    Ok(file.credentials)
}

/// The agent's operator authentication settings.
pub struct HttpAuth {
    readonly: bool,
    readwrite: bool,
    credentials: Vec<Credential>,
}

impl HttpAuth {
    /// From the flags; an error when authentication is on without credentials.
    pub fn new(readonly: bool, readwrite: bool, http_credentials: Option<&str>) -> Result<Self, CredentialsError> {
        let credentials = match http_credentials.filter(|v| !v.is_empty()) {
            Some(value) => load_credentials(value)?,
            None if readonly => return Err(CredentialsError::Missing { flag: "--authenticate_http_readonly" }),
            None if readwrite => return Err(CredentialsError::Missing { flag: "--authenticate_http_readwrite" }),
            None => Vec::new(),
        };
        Ok(HttpAuth { readonly, readwrite, credentials })
    }

    /// Ok when `access` needs no authentication or `headers` carry the
    /// basic credentials of a known principal; the 401 reply otherwise.
    pub fn check(&self, headers: &HeaderMap, access: Access) -> Result<(), Response> {
        let needed = match access {
            Access::ReadOnly => self.readonly,
            Access::ReadWrite => self.readwrite,
        };
        if !needed {
            return Ok(());
        }
        let offered = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok())
            .and_then(|raw| String::from_utf8(raw).ok());
        let Some(offered) = offered else {
            return Err(challenge("Missing or malformed 'Authorization: Basic' header"));
        };
        let Some((principal, secret)) = offered.split_once(':') else {
            return Err(challenge("Malformed basic credentials (expected 'principal:secret')"));
        };
        // Every credential is compared, in time independent of where they differ.
        let mut matched = false;
        for c in &self.credentials {
            let p = constant_time_eq(c.principal.as_bytes(), principal.as_bytes());
            let s = constant_time_eq(c.secret.as_bytes(), secret.as_bytes());
            matched |= p & s;
        }
        if matched {
            Ok(())
        } else {
            tracing::warn!(principal = %principal, "refused operator request: wrong principal or secret");
            Err(challenge("Invalid principal or secret"))
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() != b.len()) as u8;
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(!x);
    }
    std::hint::black_box(diff) == 0
}

fn challenge(message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, format!("Basic realm=\"{REALM}\"")), (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_string())],
        message.to_string(),
    )
        .into_response()
}

/// Which access a path needs before its handler runs (`/api/v1` decides
/// per call in its handler).
fn access_of(path: &str) -> Option<Access> {
    match path {
        "/state" | "/state.json" | "/slave(1)/state" | "/slave(1)/state.json" | "/monitor/statistics"
        | "/monitor/statistics.json" | "/containers" => Some(Access::ReadOnly),
        p if p.starts_with("/files/") => Some(Access::ReadOnly),
        _ => None,
    }
}

/// Middleware: read-only endpoints need read-only authentication.
pub async fn readonly_endpoints(State(agent): State<Arc<Agent>>, request: Request, next: Next) -> Response {
    if let Some(access) = access_of(request.uri().path()) {
        if let Err(reply) = agent.http_auth.check(request.headers(), access) {
            return reply;
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, pass: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        h.insert(header::AUTHORIZATION, format!("Basic {v}").parse().unwrap());
        h
    }

    #[test]
    fn credentials_file_in_mesos_format_with_file_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds.json");
        std::fs::write(&path, r#"{"credentials":[{"principal":"ops","secret":"s3cret"},{"principal":"ro","secret":"x"}]}"#).unwrap();
        let creds = load_credentials(&format!("file://{}", path.display())).unwrap();
        assert_eq!(creds.len(), 2);
        let auth = HttpAuth::new(true, false, Some(path.to_str().unwrap())).unwrap();
        assert!(auth.check(&basic("ops", "s3cret"), Access::ReadOnly).is_ok());
        assert!(auth.check(&basic("ro", "x"), Access::ReadOnly).is_ok());
        let refused = auth.check(&basic("ops", "wrong"), Access::ReadOnly).unwrap_err();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(refused.headers()[header::WWW_AUTHENTICATE], "Basic realm=\"mezzo\"");
        assert!(auth.check(&HeaderMap::new(), Access::ReadOnly).is_err());
        assert!(auth.check(&basic("ops", "s3cret0"), Access::ReadOnly).is_err());
        assert!(auth.check(&HeaderMap::new(), Access::ReadWrite).is_ok(), "read-write is off");
        std::fs::write(&path, r#"{"credentials":[{"principal":"a:b","secret":"x"}]}"#).unwrap();
        assert!(matches!(load_credentials(path.to_str().unwrap()), Err(CredentialsError::Invalid { .. })));
        std::fs::write(&path, r#"{"principal":"a"}"#).unwrap();
        assert!(matches!(load_credentials(path.to_str().unwrap()), Err(CredentialsError::Invalid { .. })));
        assert!(matches!(HttpAuth::new(false, true, None), Err(CredentialsError::Missing { .. })));
        assert!(HttpAuth::new(false, false, None).is_ok());
    }

    #[test]
    fn paths_needing_read_only_access() {
        assert_eq!(access_of("/state"), Some(Access::ReadOnly));
        assert_eq!(access_of("/files/read"), Some(Access::ReadOnly));
        assert_eq!(access_of("/monitor/statistics.json"), Some(Access::ReadOnly));
        assert_eq!(access_of("/health"), None);
        assert_eq!(access_of("/version"), None);
        assert_eq!(access_of("/api/v1/executor"), None);
        assert_eq!(access_of("/api/v1"), None);
    }
}
