//! The layers around every route: request metrics, CORS, the answers for unknown paths and methods,
//! and logging internal errors once inside the request span. IO: authenticates the caller of an
//! unknown path (through the token store) to choose between 401 and 404.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::Config;
use crate::error::{ApiError, InternalErrorLog};
use crate::gate;
use crate::state::AppState;

/// Counts every request by method, matched route and status.
pub async fn record_request(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let start = Instant::now();
    let res = next.run(req).await;
    state.metrics.observe_request(
        method,
        route,
        res.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    res
}

pub fn cors(config: &Config) -> CorsLayer {
    let mut origins: Vec<HeaderValue> = config
        .cors_allowed_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok())
        .collect();
    if origins.is_empty() && config.build_mode.is_dev_or_test() {
        origins.push(HeaderValue::from_static("http://localhost:4200"));
    }
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_credentials(true)
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::CACHE_CONTROL,
            header::PRAGMA,
            header::ACCEPT,
            header::IF_MATCH,
            HeaderName::from_static("x-requested-with"),
        ])
        .expose_headers([
            header::WWW_AUTHENTICATE,
            header::RETRY_AFTER,
            header::LOCATION,
            header::ETAG,
        ])
        .max_age(Duration::from_secs(600))
}

/// Path prefixes under which the contract defines only public operations; upstream's JWT
/// middleware skips them, so an unknown path there is a 404 even without a token.
pub const PUBLIC_PREFIXES: &[&str] = &["/.well-known/"];

/// Unknown paths: 401 when unauthenticated (as TMI's JWT middleware runs first), else 404; under a
/// public prefix always 404.
pub async fn not_found(State(state): State<AppState>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let undefined = || {
        ApiError::NotFound(format!("endpoint {path} is not defined in the API specification")).into_response()
    };
    if PUBLIC_PREFIXES.iter().any(|p| path.starts_with(p)) {
        return undefined();
    }
    match gate::authenticate(&state, req.headers()).await {
        Ok(Some(_)) => undefined(),
        Ok(None) => ApiError::Unauthorized.into_response(),
        Err(e) => e.into_response(),
    }
}

/// A known path with a method the contract does not define: 405. Upstream reads the body of a
/// write to a metadata collection (`…/metadata`) first, so malformed JSON there is a 400.
pub async fn method_not_allowed(req: Request) -> Response {
    let writes = matches!(*req.method(), Method::PUT | Method::PATCH);
    if writes && req.uri().path().ends_with("/metadata") {
        let bytes = axum::body::to_bytes(req.into_body(), 1024 * 1024)
            .await
            .unwrap_or_default();
        if crate::input::parse_strict(&bytes).is_err() {
            return ApiError::invalid("Invalid JSON in request body").into_response();
        }
    }
    ApiError::MethodNotAllowed.into_response()
}

/// Logs internal errors once, inside the request span (clients only see the generic message).
pub async fn log_errors(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    if let Some(InternalErrorLog(err)) = res.extensions().get::<InternalErrorLog>() {
        tracing::error!(error = ?err, "request failed");
    }
    res
}
