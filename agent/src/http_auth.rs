//! HTTP basic authentication of the agent's operator endpoints, as Mesos's
//! `--authenticate_http_readonly` / `--authenticate_http_readwrite` with
//! `--http_credentials` (Mesos's JSON credentials file). Off by default.
//!
//! Read-only: `/state`, `/slave(1)/state`, `/monitor/statistics(.json)`,
//! `/containers`, `/files/*`, and the `GET_*`, `LIST_FILES` and `READ_FILE` calls of `/api/v1`.
//! Read-write: every other `/api/v1` call. Open: `/health`, `/version`.
//! The executor API and the master's internal calls have their own schemes.

use crate::agent::Agent;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mezzo_master::credentials::{parse_basic, BasicAuthError, Credentials};
use std::sync::Arc;

/// The realm in the `WWW-Authenticate` challenge.
pub const REALM: &str = "mezzo";

/// What an endpoint or call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

/// Operator authentication that cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// `--http_credentials` cannot be read or parsed (Mesos's JSON or text form).
    #[error("--http_credentials: {0}")]
    File(#[from] mezzo_master::credentials::CredentialsError),
    /// authentication is on but no credentials were given
    #[error("{flag} needs --http_credentials (a JSON file of principals and secrets)")]
    Missing { flag: &'static str },
}

/// The agent's operator authentication settings.
pub struct HttpAuth {
    readonly: bool,
    readwrite: bool,
    credentials: Credentials,
}

impl HttpAuth {
    /// From the flags; an error when authentication is on without credentials.
    pub fn new(readonly: bool, readwrite: bool, http_credentials: Option<&str>) -> Result<Self, CredentialsError> {
        let credentials = match http_credentials.filter(|v| !v.is_empty()) {
            Some(value) => Credentials::load(value)?,
            None if readonly => return Err(CredentialsError::Missing { flag: "--authenticate_http_readonly" }),
            None if readwrite => return Err(CredentialsError::Missing { flag: "--authenticate_http_readwrite" }),
            None => Credentials::default(),
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
        let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return Err(challenge("Missing 'Authorization: Basic' header"));
        };
        match self.credentials.authenticate_basic(value) {
            Ok(_) => Ok(()),
            Err(e @ BasicAuthError::Malformed(_)) => Err(challenge(&e.to_string())),
            Err(BasicAuthError::Refused) => {
                let principal = parse_basic(value).map(|(p, _)| p).unwrap_or_default();
                tracing::warn!(principal = %principal, "refused operator request: wrong principal or secret");
                Err(challenge("Invalid principal or secret"))
            }
        }
    }
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
        | "/monitor/statistics.json" | "/containers" | "/metrics/snapshot" | "/metrics" => Some(Access::ReadOnly),
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

    use base64::Engine;

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
        let auth = HttpAuth::new(true, false, Some(&format!("file://{}", path.display()))).unwrap();
        assert!(auth.check(&basic("ro", "x"), Access::ReadOnly).is_ok());
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
        assert!(matches!(HttpAuth::new(true, false, path.to_str()), Err(CredentialsError::File(_))));
        std::fs::write(&path, r#"{"principal":"a"}"#).unwrap();
        assert!(matches!(HttpAuth::new(true, false, path.to_str()), Err(CredentialsError::File(_))));
        assert!(matches!(HttpAuth::new(false, true, None), Err(CredentialsError::Missing { .. })));
        assert!(HttpAuth::new(false, false, None).is_ok());
    }

    #[test]
    fn paths_needing_read_only_access() {
        assert_eq!(access_of("/state"), Some(Access::ReadOnly));
        assert_eq!(access_of("/files/read"), Some(Access::ReadOnly));
        assert_eq!(access_of("/files/browse"), Some(Access::ReadOnly));
        assert_eq!(access_of("/files/debug"), Some(Access::ReadOnly));
        assert_eq!(access_of("/monitor/statistics.json"), Some(Access::ReadOnly));
        assert_eq!(access_of("/metrics/snapshot"), Some(Access::ReadOnly));
        assert_eq!(access_of("/metrics"), Some(Access::ReadOnly));
        assert_eq!(access_of("/health"), None);
        assert_eq!(access_of("/version"), None);
        assert_eq!(access_of("/api/v1/executor"), None);
        assert_eq!(access_of("/api/v1"), None);
    }
}
