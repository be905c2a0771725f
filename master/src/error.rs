//! Error types of the master.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Why the master could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// Reading the listener's address failed.
    #[error("failed to read the listener address: {0}")]
    LocalAddr(#[source] std::io::Error),
    /// Building the HTTP client for agents failed.
    #[error("failed to build the agent http client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// The registry could not be read at start (a corrupt entry, an I/O error).
    #[error("failed to recover the registry: {0}")]
    Registry(#[source] crate::registry::RegistryError),
    /// The HTTP server failed.
    #[error("http server failed: {0}")]
    Serve(#[source] std::io::Error),
    /// ZooKeeper refused what a master of a group must do (`--zk`).
    #[error("{0}")]
    Zk(#[from] mezzo_zk::ZkError),
    /// This master of a group lost its candidacy or its leadership: it stops, as Mesos's master does.
    #[error("lost leadership: {0}")]
    LostLeadership(String),
}

/// A rejected HTTP call; becomes a plain-text response with the status code,
/// as Mesos answers (`src/master/http.cpp`).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CallError {
    /// 400: malformed or invalid request.
    #[error("{0}")]
    BadRequest(String),
    /// 401: the caller did not authenticate.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the framework is not subscribed.
    #[error("{0}")]
    Forbidden(String),
    /// 404: the addressed object is unknown.
    #[error("{0}")]
    NotFound(String),
    /// 405: wrong HTTP method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 406: no acceptable response encoding.
    #[error("{0}")]
    NotAcceptable(String),
    /// 415: unsupported request encoding.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 410: the addressed object was removed or never existed.
    #[error("{0}")]
    Gone(String),
    /// 503: the registry cannot be written (no quorum, I/O error) or this
    /// master no longer leads.
    #[error("{0}")]
    ServiceUnavailable(String),
    /// 501: call type the master does not implement.
    #[error("{0}")]
    NotImplemented(String),
}

impl CallError {
    /// The HTTP status code of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            CallError::BadRequest(_) => StatusCode::BAD_REQUEST,
            CallError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            CallError::Forbidden(_) => StatusCode::FORBIDDEN,
            CallError::NotFound(_) => StatusCode::NOT_FOUND,
            CallError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            CallError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            CallError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            CallError::Gone(_) => StatusCode::GONE,
            CallError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            CallError::ServiceUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for CallError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut resp = (
            status,
            [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.to_string(),
        )
            .into_response();
        if status == StatusCode::METHOD_NOT_ALLOWED {
            resp.headers_mut().insert(
                axum::http::header::ALLOW,
                axum::http::HeaderValue::from_static("POST"),
            );
        }
        resp
    }
}
