//! The sign-in logos `/oauth2/providers` advertises (`/static/provider-logos/signin/<name>.svg`),
//! embedded in the binary and served without authentication, outside the API gate (they are not
//! API operations). Pure.

use axum::Router;
use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The logos shipped with the server.
const LOGOS: [(&str, &str); 2] = [
    (
        "tmi.svg",
        include_str!("../../static/provider-logos/signin/tmi.svg"),
    ),
    (
        "oidc.svg",
        include_str!("../../static/provider-logos/signin/oidc.svg"),
    ),
];

/// Where the logos are served.
pub const PREFIX: &str = "/static/provider-logos/signin";

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route(&format!("{PREFIX}/{{file}}"), get(logo))
}

async fn logo(Path(file): Path<String>) -> Response {
    match LOGOS.iter().find(|(name, _)| *name == file) {
        Some((_, svg)) => (
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                (header::CACHE_CONTROL, "public, max-age=86400"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                // An SVG opened directly must not run anything.
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'",
                ),
            ],
            *svg,
        )
            .into_response(),
        None => crate::error::ApiError::NotFound(format!("No logo {file} is served here")).into_response(),
    }
}
