//! What handlers extract, every rejection being TMI's error body: what the gate established
//! (`JsonBody`, `MaybeJsonBody`, `RawBody`, `TmAccess`, read from the request's extensions), and
//! `Path` and `Query`, which wrap axum's and turn a rejection (an unparsable path segment or query
//! string) into `ApiError` at the extractor, as in axum's error-handling example, instead of axum's
//! plain-text answer. Pure.

use axum::body::Bytes;
use axum::extract::FromRequestParts;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde_json::Value;

use crate::authz::Role;
use crate::error::ApiError;
use crate::store::ThreatModelRecord;

/// The validated, normalized JSON body of a request.
#[derive(Clone, Debug)]
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequestParts<S> for JsonBody {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<JsonBody>()
            .cloned()
            .ok_or_else(|| ApiError::invalid("Request body is required"))
    }
}

/// The JSON body when one was sent.
pub struct MaybeJsonBody(pub Option<Value>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeJsonBody {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.extensions.get::<JsonBody>().map(|j| j.0.clone())))
    }
}

/// The raw body, for form-encoded operations (empty when none was sent).
#[derive(Clone, Debug, Default)]
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequestParts<S> for RawBody {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<RawBody>().cloned().unwrap_or_default())
    }
}

/// The parent threat model of a `/threat_models/{id}/…` request and the caller's role on it.
#[derive(Clone, Debug)]
pub struct TmAccess {
    pub tm: ThreatModelRecord,
    pub role: Role,
}

impl<S: Send + Sync> FromRequestParts<S> for TmAccess {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<TmAccess>()
            .cloned()
            .ok_or_else(|| ApiError::not_found("Threat model"))
    }
}

/// `axum::extract::Path` with TMI's error body.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// `axum::extract::Query` with TMI's error body.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// A framework rejection: a client error is a 400 `invalid_input` with axum's explanation; anything
/// else (a route declared without the parameters its handler reads) is an internal error.
fn rejected(status: StatusCode, text: String) -> ApiError {
    if status.is_client_error() {
        ApiError::invalid(text)
    } else {
        ApiError::internal(anyhow::anyhow!("{status}: {text}"))
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        rejected(r.status(), r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        rejected(r.status(), r.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::http::Request;
    use axum::response::IntoResponse;
    use axum::routing::get;
    use tower::ServiceExt;

    async fn call(router: Router, uri: &str) -> (u16, serde_json::Value) {
        let res = router
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status().as_u16();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 16).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn rejections_are_tmi_error_bodies() {
        let router = Router::new()
            .route(
                "/n/{n}",
                get(|Path(n): Path<u32>| async move { n.to_string().into_response() }),
            )
            .route(
                "/q",
                get(
                    |Query(q): Query<std::collections::HashMap<String, u32>>| async move {
                        q.len().to_string().into_response()
                    },
                ),
            );
        let (status, body) = call(router.clone(), "/n/seven").await;
        assert_eq!(status, 400);
        assert_eq!(body["error"], "invalid_input");
        assert!(
            body["error_description"].as_str().unwrap().contains("seven"),
            "{body}"
        );
        let (status, body) = call(router, "/q?limit=many").await;
        assert_eq!(status, 400);
        assert_eq!(body["error"], "invalid_input");
    }
}
