//! `ApiError`, the one error type of every handler, rendered as TMI's error body
//! `{"error", "error_description"}` (tmi-compat.md §8). Pure.

use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store::StoreError;

/// TMI's error body.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: String,
    pub error_description: String,
}

/// Every error a handler or middleware can answer with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{1}")]
    BadRequest(&'static str, String),
    #[error("Authentication required")]
    Unauthorized,
    #[error("{0}")]
    UnauthorizedWith(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("The resource was modified: the If-Match version does not match the current version")]
    VersionMismatch,
    #[error("If-Match header is required for this operation")]
    IfMatchRequired,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    ServiceUnavailable(String),
    /// 429 `too_many_requests`, with `Retry-After` in seconds.
    #[error("{0}")]
    TooManyRequests(String, u64),
    /// 408: the request body did not arrive in time (`TMI_SERVER_BODY_TIMEOUT`).
    #[error("The request body did not arrive in time")]
    RequestTimeout,
    /// An OAuth-style error with a custom code (e.g. `invalid_grant`).
    #[error("{2}")]
    OAuth(StatusCode, &'static str, String),
    #[error("An internal server error occurred")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// 400 `invalid_input`.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::BadRequest("invalid_input", msg.into())
    }

    /// 400 `invalid_id`.
    pub fn invalid_id(msg: impl Into<String>) -> Self {
        Self::BadRequest("invalid_id", msg.into())
    }

    /// 403 `forbidden`.
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::Forbidden(msg.into())
    }

    /// 404 `not_found`.
    pub fn not_found(what: &str) -> Self {
        Self::NotFound(format!("{what} not found"))
    }

    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        Self::Internal(e.into())
    }

    /// The HTTP status and the error code of the body.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(code, _) => (StatusCode::BAD_REQUEST, code),
            Self::Unauthorized | Self::UnauthorizedWith(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::VersionMismatch => (StatusCode::CONFLICT, "version_mismatch"),
            Self::IfMatchRequired => (StatusCode::PRECONDITION_REQUIRED, "if_match_required"),
            Self::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            Self::NotAcceptable(_) => (StatusCode::NOT_ACCEPTABLE, "not_acceptable"),
            Self::ServiceUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable"),
            Self::TooManyRequests(..) => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            Self::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            Self::OAuth(status, code, _) => (*status, code),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
        }
    }
}

/// Strips control characters and caps the length, as TMI does for every message.
fn clean(msg: &str) -> String {
    msg.chars().filter(|c| !c.is_control()).take(1000).collect()
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound("Resource not found".into()),
            StoreError::Conflict => Self::Conflict("Resource already exists".into()),
            StoreError::VersionMismatch => Self::VersionMismatch,
            // Still aborted after `store::retry`'s attempts: the client may try again.
            e if crate::store::retry::is_retryable(&e) => {
                Self::ServiceUnavailable("The database is busy; try again".into())
            }
            e => Self::Internal(e.into()),
        }
    }
}

/// An internal error kept in the response extensions, for the logging middleware.
#[derive(Clone)]
pub struct InternalErrorLog(pub Arc<anyhow::Error>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = ErrorBody {
            error: code.to_owned(),
            error_description: clean(&self.to_string()),
        };
        let mut res = (status, Json(body)).into_response();
        match self {
            Self::Internal(err) => {
                res.extensions_mut().insert(InternalErrorLog(Arc::new(err)));
            }
            Self::ServiceUnavailable(_) => {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
            }
            Self::Unauthorized | Self::UnauthorizedWith(_) => {
                res.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::TooManyRequests(_, retry_after) => {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
            }
            Self::RequestTimeout => {
                res.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes() {
        assert_eq!(
            ApiError::VersionMismatch.status_and_code(),
            (StatusCode::CONFLICT, "version_mismatch")
        );
        assert_eq!(
            ApiError::invalid_id("x").status_and_code(),
            (StatusCode::BAD_REQUEST, "invalid_id")
        );
        assert_eq!(
            ApiError::Unauthorized.status_and_code().0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            ApiError::from(StoreError::NotFound).status_and_code().0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            ApiError::internal(anyhow::anyhow!("db password=x")).to_string(),
            "An internal server error occurred"
        );
    }

    #[test]
    fn messages_are_cleaned() {
        assert_eq!(clean("a\nb\u{7}c"), "abc");
        assert_eq!(clean(&"x".repeat(2000)).len(), 1000);
    }
}
