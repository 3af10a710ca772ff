//! The TMI REST API server: a drop-in compatible reimplementation of TMI on PostgreSQL or SQLite.
//! `router` builds the HTTP surface; `build_state` connects storage; `serve` runs until shutdown.

pub mod auth;
pub mod authz;
pub mod collab;
pub mod config;
pub mod error;
pub mod features;
pub mod gate;
pub mod health;
pub mod input;
pub mod metadata;
pub mod metrics;
pub mod openapi;
pub mod patch;
pub mod resources;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod threat_models;
pub mod versioning;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use secrecy::ExposeSecret;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use auth::handlers as oauth;
use auth::kv::{MemoryKv, RedisKv, TokenKv};
use auth::provider::{IdentityProvider, TmiProvider};
use config::Config;
use error::{ApiError, InternalErrorLog};
use state::AppState;
use store::{Postgres, Sqlite, Store};

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/", get(health::root))
        .route("/config", get(health::client_config))
        .route(
            "/.well-known/openid-configuration",
            get(oauth::openid_configuration),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(oauth::authorization_server),
        )
        .route("/.well-known/jwks.json", get(oauth::jwks))
        .route(
            "/.well-known/oauth-protected-resource",
            get(oauth::protected_resource),
        )
        .route("/oauth2/providers", get(oauth::providers))
        .route("/oauth2/authorize", get(oauth::authorize))
        .route("/oauth2/callback", get(oauth::callback))
        .route("/oauth2/token", post(oauth::token))
        .route("/oauth2/refresh", post(oauth::refresh))
        .route("/oauth2/revoke", post(oauth::revoke))
        .route("/oauth2/introspect", post(oauth::introspect))
        .route("/oauth2/userinfo", get(oauth::userinfo))
        .route("/saml/providers", get(oauth::saml_providers))
        .route("/me", get(oauth::me))
        .route("/me/logout", post(oauth::logout))
        .route("/me/groups", get(oauth::my_groups))
        .route("/me/groups/{group_id}/members", get(oauth::my_group_members))
        .route(
            "/me/preferences",
            get(oauth::get_preferences)
                .post(oauth::put_preferences)
                .put(oauth::put_preferences),
        )
        .route("/addons", get(features::addons))
        .route("/intake/surveys", get(features::surveys))
        .route("/intake/survey_responses", get(features::survey_responses))
        .route("/projects", get(features::projects))
        .route("/teams", get(features::teams))
        .merge(threat_models::router())
        .merge(resources::router())
        .merge(metadata::router())
        .merge(collab::router())
        .route_layer(middleware::from_fn_with_state(state.clone(), gate::gate))
        // Operational endpoints stay outside the gate and the OpenAPI contract.
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::serve))
        .route("/openapi.json", get(health::openapi_document))
        .merge(collab::socket_router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);

    api.layer(middleware::from_fn(log_errors))
        .layer(middleware::from_fn_with_state(state.clone(), metrics::record))
        .layer(TraceLayer::new_for_http())
        .layer(cors(&state.config))
        .with_state(state)
}

fn cors(config: &Config) -> CorsLayer {
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

/// Unknown paths: 401 when unauthenticated (as TMI's JWT middleware runs first), else 404.
async fn not_found(State(state): State<AppState>, req: Request) -> Response {
    match gate::authenticate(&state, req.headers()).await {
        Ok(Some(_)) => ApiError::NotFound(format!(
            "endpoint {} is not defined in the API specification",
            req.uri().path()
        ))
        .into_response(),
        Ok(None) => ApiError::Unauthorized.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn method_not_allowed() -> Response {
    ApiError::MethodNotAllowed.into_response()
}

/// Logs internal errors once, inside the request span (clients only see the generic message), and
/// gives framework rejections (plain text) TMI's JSON error body.
async fn log_errors(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    if let Some(InternalErrorLog(err)) = res.extensions().get::<InternalErrorLog>() {
        tracing::error!(error = ?err, "request failed");
    }
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let code = match status.as_u16() {
        400 | 422 => "invalid_input",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        406 => "not_acceptable",
        409 => "conflict",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        429 => "too_many_requests",
        503 => "service_unavailable",
        _ => "server_error",
    };
    let description = String::from_utf8_lossy(&text)
        .chars()
        .filter(|c| !c.is_control())
        .take(1000)
        .collect::<String>();
    let body = error::ErrorBody {
        error: code.to_owned(),
        error_description: description,
    };
    let status = if status.as_u16() == 422 {
        axum::http::StatusCode::BAD_REQUEST
    } else {
        status
    };
    let mut out = (status, axum::Json(body)).into_response();
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

/// Connects the configured store and applies migrations.
pub async fn connect_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let url = database_url(config)?;
    let max = config.db_max_connections.max(1);
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let pg = Postgres::connect(&url, max)
            .await
            .context("cannot connect to the database (TMI_DATABASE_URL)")?;
        pg.migrate().await.context("database migration failed")?;
        Ok(Arc::new(pg))
    } else {
        let lite = Sqlite::connect(&url, max.min(8))
            .await
            .context("cannot open the SQLite database (TMI_DATABASE_URL)")?;
        lite.migrate().await.context("database migration failed")?;
        Ok(Arc::new(lite))
    }
}

/// `TMI_DATABASE_URL`, or SQLite under the data directory.
pub fn database_url(config: &Config) -> anyhow::Result<String> {
    match &config.database_url {
        Some(u) => Ok(u.expose_secret().to_owned()),
        None => {
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("cannot create {}", config.data_dir))?;
            Ok(format!("sqlite://{}/tmi.db", config.data_dir))
        }
    }
}

/// `TMI_JWT_SECRET`, or a generated secret kept in `<data_dir>/jwt-secret` (mode 0600).
fn jwt_secret(config: &Config) -> anyhow::Result<Vec<u8>> {
    if let Some(s) = &config.jwt_secret {
        return Ok(s.expose_secret().as_bytes().to_vec());
    }
    let path = std::path::Path::new(&config.data_dir).join("jwt-secret");
    if let Ok(existing) = std::fs::read_to_string(&path)
        && existing.trim().len() >= 32
    {
        return Ok(existing.trim().as_bytes().to_vec());
    }
    std::fs::create_dir_all(&config.data_dir)?;
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 48];
    rand::rng().fill_bytes(&mut bytes);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    use std::io::Write;
    opts.open(&path)
        .and_then(|mut f| f.write_all(secret.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    tracing::info!(path = %path.display(), "generated a JWT signing secret");
    Ok(secret.into_bytes())
}

/// Builds the application state: storage, token store, keys, providers, admin bootstrap.
pub async fn build_state(config: Config) -> anyhow::Result<AppState> {
    let store = connect_store(&config).await?;
    let (kv, redis_enabled): (Arc<dyn TokenKv>, bool) = match &config.redis {
        Some(r) => (
            Arc::new(
                RedisKv::connect(&r.url(), &r.key_prefix)
                    .await
                    .context("TMI_REDIS_URL")?,
            ),
            true,
        ),
        None => (Arc::new(MemoryKv::default()), false),
    };
    build_state_with(config, store, kv, redis_enabled).await
}

/// Like `build_state`, with storage supplied (tests).
pub async fn build_state_with(
    config: Config,
    store: Arc<dyn Store>,
    kv: Arc<dyn TokenKv>,
    redis_enabled: bool,
) -> anyhow::Result<AppState> {
    let config = Arc::new(config);
    let keys = auth::JwtKeys::new(&jwt_secret(&config)?)?;
    let mut providers: Vec<Arc<dyn IdentityProvider>> = Vec::new();
    if config.tmi_provider_enabled && config.build_mode.is_dev_or_test() {
        providers.push(Arc::new(TmiProvider));
    }
    for admin in &config.admins {
        if let (Some(pid), "user") = (&admin.provider_id, admin.subject_type.as_str()) {
            let user = match store.find_user(&admin.provider, pid).await? {
                Some(u) => u,
                None => {
                    store
                        .upsert_login_user(&store::UserRecord {
                            internal_uuid: uuid::Uuid::new_v4(),
                            provider: admin.provider.clone(),
                            provider_user_id: pid.clone(),
                            email: admin.email.clone().unwrap_or_default(),
                            name: pid.clone(),
                            email_verified: false,
                        })
                        .await?
                }
            };
            store
                .add_group_member(store::groups::ADMINISTRATORS, user.internal_uuid)
                .await?;
        }
    }
    let tokens = Arc::new(auth::Tokens {
        keys,
        kv: kv.clone(),
        store: store.clone(),
        config: config.clone(),
    });
    let metrics = Arc::new(metrics::Metrics::default());
    let collab = collab::Hub::start(
        collab::backend(&config).await?,
        store.clone(),
        collab::settings(&config),
        metrics.collab.clone(),
    );
    Ok(AppState {
        collab,
        store,
        kv,
        tokens,
        config,
        spec: Arc::new(openapi::Spec::embedded()?),
        providers: Arc::new(providers),
        metrics,
        redis_enabled,
    })
}

/// Serves until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let hub = state.collab.clone();
    // Upgraded sockets are not in-flight requests: close them (code 1012) so that clients move
    // to another replica, then drain the rest.
    let shutdown = async move {
        shutdown.await;
        hub.shutdown().await;
    };
    // Small WebSocket frames must not wait for delayed ACKs (Nagle): measured by bench-collab
    // as a ~30 ms fan-out tail from 50 ops/s up.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
