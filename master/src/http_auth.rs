//! HTTP basic authentication of frameworks and operators, as Mesos's basic
//! authenticator: each realm is guarded only when its flag asks for it
//! (`--authenticate_http_frameworks`/`--authenticate_frameworks` for the
//! scheduler API, `--authenticate_http_readwrite` for endpoints that change
//! state, `--authenticate_http_readonly` for the read-only ones); a missing
//! or wrong `Authorization` header gets 401 with a `WWW-Authenticate`
//! challenge. `/version` and `/health` stay open, as in Mesos.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::MasterConfig;
use crate::master::Shared;

/// The `WWW-Authenticate` challenge of a 401 (realm `mezzo`).
pub(crate) const CHALLENGE: &str = "Basic realm=\"mezzo\"";

/// The endpoints a request is for, each with its own flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Realm {
    /// `/api/v1/scheduler`.
    Framework,
    /// Endpoints that change state (`/teardown`).
    ReadWrite,
    /// Endpoints that only read (`/state`, `/tasks`, ...).
    ReadOnly,
}

impl Realm {
    fn required(self, config: &MasterConfig) -> bool {
        match self {
            Realm::Framework => config.authenticate_frameworks,
            Realm::ReadWrite => config.authenticate_http_readwrite,
            Realm::ReadOnly => config.authenticate_http_readonly,
        }
    }
}

/// 401 with the basic challenge, as Mesos's basic authenticator answers.
pub(crate) fn unauthorized(message: &str) -> Response {
    let mut resp = (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.to_string(),
    )
        .into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(CHALLENGE),
    );
    resp
}

/// Authenticates a request for `realm`. `Ok(None)` when the realm is not
/// guarded (the request is anonymous, as in Mesos), `Ok(Some(principal))`
/// when the credentials are right, else the 401 to send.
pub(crate) fn authenticate(config: &MasterConfig, realm: Realm, headers: &HeaderMap) -> Result<Option<String>, Response> {
    if !realm.required(config) {
        return Ok(None);
    }
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized("Authentication required: send HTTP basic credentials"));
    };
    let Some(credentials) = config.credentials.as_ref() else {
        // The binary refuses to start like this; an embedding may not.
        return Err(unauthorized("Authentication failed: the master has no credentials"));
    };
    let value = value.to_str().unwrap_or("");
    match credentials.authenticate_basic(value) {
        Ok(principal) => Ok(Some(principal)),
        Err(e) => {
            tracing::info!(?realm, error = %e, "refused HTTP authentication");
            Err(unauthorized("Authentication failed: wrong principal or secret"))
        }
    }
}

/// Middleware for the read-only endpoints.
pub(crate) async fn readonly(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    match authenticate(&shared.config, Realm::ReadOnly, req.headers()) {
        Ok(_) => next.run(req).await,
        Err(resp) => resp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::{Credential, Credentials};
    use base64::Engine as _;

    fn config() -> MasterConfig {
        MasterConfig {
            authenticate_frameworks: true,
            credentials: Some(Arc::new(Credentials::from_list(vec![Credential {
                principal: "web".into(),
                secret: "s3cret".into(),
            }]))),
            ..MasterConfig::default()
        }
    }

    fn basic(user_pass: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_pass));
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(&v).unwrap());
        h
    }

    #[test]
    fn guarded_realms_need_the_right_secret() {
        let c = config();
        assert_eq!(authenticate(&c, Realm::Framework, &basic("web:s3cret")).unwrap(), Some("web".into()));
        let resp = authenticate(&c, Realm::Framework, &basic("web:wrong")).unwrap_err();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(resp.headers()[header::WWW_AUTHENTICATE], "Basic realm=\"mezzo\"");
        assert!(authenticate(&c, Realm::Framework, &HeaderMap::new()).is_err());
        // Unguarded realms are anonymous, whatever is sent.
        assert_eq!(authenticate(&c, Realm::ReadOnly, &basic("web:wrong")).unwrap(), None);
    }
}
