//! Startup: connecting the store (and migrating it), the JWT secret (generated into the data
//! directory when not configured), the administrator bootstrap, the application state, and serving
//! until shutdown. IO: the database, Redis, the data directory and the listener.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

use anyhow::Context;
use secrecy::ExposeSecret;

use crate::auth::kv::{MemoryKv, RedisKv, TokenKv};
use crate::auth::oauth::OAuthProvider;
use crate::auth::provider::{IdentityProvider, TmiProvider};
use crate::auth::revocations::Revocations;
use crate::auth::tokens::{JwtKeys, Tokens};
use crate::collab::backend::{Backend, MemoryBackend, RedisBackend};
use crate::collab::{self, hub::Hub};
use crate::config::Config;
use crate::limits::RateLimits;
use crate::metrics::Metrics;
use crate::openapi::Spec;
use crate::state::{AppState, Services};
use crate::store::retry::Retrying;
use crate::store::{Postgres, Sqlite, Store, UserRecord, groups};

/// Connects the configured store and applies migrations.
pub async fn connect_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let url = database_url(config)?;
    let max = config.db_max_connections.max(1);
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let pg = Postgres::connect(&url, max)
            .await
            .context("cannot connect to the database (TMI_DATABASE_URL)")?;
        pg.migrate().await.context("database migration failed")?;
        // A database upstream TMI used runs serializable transactions (see `store::retry`).
        Ok(Arc::new(Retrying::new(pg)))
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

/// The channel on which replicas announce revocations: Redis when configured, else in-process.
async fn revocation_channel(config: &Config) -> anyhow::Result<Arc<dyn Backend>> {
    Ok(match &config.redis {
        Some(r) => Arc::new(
            RedisBackend::connect_in(&r.url(), &r.key_prefix, "revocations:")
                .await
                .context("TMI_REDIS_URL")?,
        ),
        None => Arc::new(MemoryBackend::default()),
    })
}

/// Like `build_state`, with storage supplied (tests).
pub async fn build_state_with(
    config: Config,
    store: Arc<dyn Store>,
    kv: Arc<dyn TokenKv>,
    redis_enabled: bool,
) -> anyhow::Result<AppState> {
    let config = Arc::new(config);
    let keys = JwtKeys::new(&jwt_secret(&config)?)?;
    let mut providers: Vec<Arc<dyn IdentityProvider>> = Vec::new();
    if config.tmi_provider_enabled && config.build_mode.is_dev_or_test() {
        providers.push(Arc::new(TmiProvider));
    }
    if !config.oauth_providers.is_empty() {
        let http = crate::auth::oauth::http_client(config.oauth_ca_file.as_deref())?;
        for cfg in &config.oauth_providers {
            let p = OAuthProvider::new(cfg.clone(), http.clone());
            tracing::info!(provider = %cfg.id, oidc = cfg.is_oidc(), "identity provider configured");
            let warm = p.clone();
            tokio::spawn(async move { warm.warm_up().await });
            providers.push(p);
        }
    }
    for admin in &config.admins {
        if let (Some(pid), "user") = (&admin.provider_id, admin.subject_type.as_str()) {
            let user = match store.find_user(&admin.provider, pid).await? {
                Some(u) => u,
                None => {
                    store
                        .upsert_login_user(&UserRecord {
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
                .add_group_member(groups::ADMINISTRATORS, user.internal_uuid)
                .await?;
        }
    }
    let revocations = Revocations::start(store.clone(), revocation_channel(&config).await?)
        .await
        .context("cannot read token revocations from the database")?;
    let tokens = Arc::new(Tokens {
        keys,
        kv: kv.clone(),
        store: store.clone(),
        config: config.clone(),
        revocations,
    });
    let metrics = Arc::new(Metrics::default());
    let spec = Arc::new(Spec::embedded()?);
    let collab = Hub::start(
        collab::backend(&config).await?,
        store.clone(),
        spec.clone(),
        collab::settings(&config),
        metrics.collab.clone(),
    );
    let rate_limits = Arc::new(RateLimits::new(&config.limits));
    crate::limits::spawn_pruner(Arc::downgrade(&rate_limits));
    Ok(AppState::new(Services {
        collab,
        rate_limits,
        store,
        kv,
        tokens,
        config,
        spec,
        providers: Arc::new(providers),
        metrics,
        redis_enabled,
    }))
}

/// Serves (through `server::run`: connection cap and timeouts) until `shutdown` resolves, then drains: collaboration sockets are closed with 1012 (service
/// restart), and for `TMI_SHUTDOWN_DRAIN_SECONDS` every response carries `Connection: close`, so that
/// keep-alive clients finish their exchange and open their next connection elsewhere; then in-flight
/// requests complete and the remaining idle connections close.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let hub = state.collab.clone();
    let limits = state.config.limits.clone();
    let drain = std::time::Duration::from_secs(state.config.shutdown_drain_seconds);
    let draining = Arc::new(AtomicBool::new(false));
    let flag = draining.clone();
    let shutdown = async move {
        shutdown.await;
        flag.store(true, Ordering::SeqCst);
        // Upgraded sockets are not in-flight requests: close them so that clients move to another replica.
        hub.shutdown().await;
        tokio::time::sleep(drain).await;
    };
    let app = crate::router(state).layer(axum::middleware::map_response(move |mut res: Response| {
        let draining = draining.load(Ordering::SeqCst);
        async move {
            if draining && res.status() != StatusCode::SWITCHING_PROTOCOLS {
                res.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            res
        }
    }));
    crate::server::run(listener, app, &limits, shutdown).await
}
