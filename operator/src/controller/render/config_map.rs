//! ConfigMap with the server's non-secret environment (`<name>-config`), loaded through `envFrom`. Pure.
//!
//! Names follow tmi-server's (and upstream TMI's) environment variables. Values that are secret never land
//! here: they reach the container as `secretKeyRef` env entries (see `deployment.rs`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use crate::controller::{
    names,
    validate::{Cache, Database, Route, ValidInstance},
};

/// Renders the ConfigMap.
pub fn render(i: &ValidInstance) -> ConfigMap {
    ConfigMap {
        metadata: names::child_meta(i, names::config_map(i)),
        data: Some(data(i)),
        ..Default::default()
    }
}

/// The environment the ConfigMap carries.
pub fn data(i: &ValidInstance) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        env.insert(k.to_owned(), v);
    };
    set("TMI_BUILD_MODE", i.build_mode.env_value().to_owned());
    set("TMI_SERVER_PORT", names::SERVER_PORT.to_string());
    set("TMI_SERVER_INTERFACE", "0.0.0.0".to_owned());
    set("TMI_SERVER_BASE_URL", i.url.clone());
    set("TMI_OAUTH_CALLBACK_URL", format!("{}/oauth2/callback", i.url));
    set(
        "TMI_LOG_IS_DEV",
        (i.build_mode == crate::crd::BuildMode::Development).to_string(),
    );
    if i.hostname.is_some() {
        set("TMI_CORS_ALLOWED_ORIGINS", i.url.clone());
    }
    if i.exposure.tls.is_some() {
        // Browsers reach TMI over HTTPS only: its cookies must never travel in clear.
        set("TMI_COOKIE_SECURE", "true".to_owned());
    }
    if i.exposure.route != Route::None {
        // Keepalive pings well inside the proxy's idle timeout, so idle collaboration sockets survive it.
        let ping = (i.exposure.idle_timeout_seconds / 2).clamp(5, 30);
        set("TMI_WEBSOCKET_PING_INTERVAL_SECONDS", ping.to_string());
    }
    if let Database::Sqlite { .. } = i.database {
        set(
            "TMI_DATABASE_URL",
            format!("sqlite://{}/tmi.db", names::DATA_MOUNT_PATH),
        );
    }
    if !matches!(i.cache, Cache::None) {
        // Instances may share one Redis: each keeps its keys (sessions, tokens, the collaboration
        // channel) under its own prefix.
        set("TMI_REDIS_KEY_PREFIX", format!("tmi:{}:{}:", i.namespace, i.name));
    }
    if let Cache::Host { host, port, db, .. } = &i.cache {
        set("TMI_REDIS_HOST", host.clone());
        set("TMI_REDIS_PORT", port.to_string());
        set("TMI_REDIS_DB", db.to_string());
    }
    if i.dev_login {
        set("OAUTH_PROVIDERS_TMI_ENABLED", "true".to_owned());
    }
    for p in &i.providers {
        let prefix = format!("OAUTH_PROVIDERS_{}_", names::provider_env_id(&p.id));
        let mut put = |suffix: &str, v: &Option<String>| {
            if let Some(v) = v {
                env.insert(format!("{prefix}{suffix}"), v.clone());
            }
        };
        put("ENABLED", &Some("true".to_owned()));
        put("NAME", &Some(p.name.clone().unwrap_or_else(|| p.id.clone())));
        put("ICON", &p.icon);
        put("AUTHORIZATION_URL", &Some(p.authorization_url.clone()));
        put("TOKEN_URL", &Some(p.token_url.clone()));
        put("USERINFO_URL", &p.userinfo_url);
        put("ISSUER", &p.issuer);
        put("JWKS_URL", &p.jwks_url);
        put("SCOPES", &p.scopes.as_ref().map(|s| s.join(",")));
        put("USERINFO_CLAIMS_SUBJECT_CLAIM", &p.subject_claim);
        put("USERINFO_CLAIMS_EMAIL_CLAIM", &p.email_claim);
        put("USERINFO_CLAIMS_NAME_CLAIM", &p.name_claim);
    }
    if let Some(admin) = &i.administrator {
        env.insert("TMI_ADMIN_PROVIDER".to_owned(), admin.provider.clone());
        if let Some(subject) = &admin.subject {
            env.insert("TMI_ADMIN_PROVIDER_ID".to_owned(), subject.clone());
        }
        if let Some(email) = &admin.email {
            env.insert("TMI_ADMIN_EMAIL".to_owned(), email.clone());
        }
        match &admin.group {
            Some(group) => {
                env.insert("TMI_ADMIN_GROUP_NAME".to_owned(), group.clone());
                env.insert("TMI_ADMIN_SUBJECT_TYPE".to_owned(), "group".to_owned());
            }
            None => {
                env.insert("TMI_ADMIN_SUBJECT_TYPE".to_owned(), "user".to_owned());
            }
        }
    }
    if i.auto_promote_first_user {
        env.insert("TMI_AUTH_AUTO_PROMOTE_FIRST_USER".to_owned(), "true".to_owned());
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::test_support::{EXTERNAL, FULL, valid_from_yaml};

    #[test]
    fn minimal_external_instance() {
        let d = data(&valid_from_yaml(EXTERNAL));
        assert_eq!(d["TMI_BUILD_MODE"], "production");
        assert_eq!(d["TMI_SERVER_PORT"], "8080");
        assert_eq!(d["TMI_SERVER_BASE_URL"], "http://acme.tenant.svc");
        assert_eq!(
            d["TMI_OAUTH_CALLBACK_URL"],
            "http://acme.tenant.svc/oauth2/callback"
        );
        assert!(!d.contains_key("TMI_DATABASE_URL"), "the URL is secret: {d:?}");
        assert!(!d.contains_key("OAUTH_PROVIDERS_TMI_ENABLED"));
    }

    #[test]
    fn providers_admin_and_redis_host() {
        let d = data(&valid_from_yaml(FULL));
        assert_eq!(d["TMI_BUILD_MODE"], "dev");
        assert_eq!(d["OAUTH_PROVIDERS_TMI_ENABLED"], "true");
        assert_eq!(d["OAUTH_PROVIDERS_AZURE_AD_ENABLED"], "true");
        assert_eq!(d["OAUTH_PROVIDERS_AZURE_AD_NAME"], "Entra ID");
        assert_eq!(d["OAUTH_PROVIDERS_AZURE_AD_SCOPES"], "openid,email");
        assert_eq!(d["OAUTH_PROVIDERS_AZURE_AD_ISSUER"], "https://login.example.com/");
        assert_eq!(d["OAUTH_PROVIDERS_GITHUB_USERINFO_CLAIMS_SUBJECT_CLAIM"], "id");
        assert!(
            !d.keys()
                .any(|k| k.ends_with("CLIENT_SECRET") || k.ends_with("CLIENT_ID")),
            "{d:?}"
        );
        assert_eq!(d["TMI_ADMIN_PROVIDER"], "github");
        assert_eq!(d["TMI_ADMIN_PROVIDER_ID"], "4242");
        assert_eq!(d["TMI_ADMIN_SUBJECT_TYPE"], "user");
        assert_eq!(d["TMI_REDIS_HOST"], "redis.cache.svc");
        assert_eq!(d["TMI_REDIS_PORT"], "6380");
        assert_eq!(d["TMI_REDIS_DB"], "2");
        assert!(d["TMI_REDIS_KEY_PREFIX"].starts_with("tmi:"), "{d:?}");
        assert_eq!(d["TMI_CORS_ALLOWED_ORIGINS"], "https://tmi.example.com");
        assert_eq!(d["TMI_LOG_IS_DEV"], "true");
    }

    #[test]
    fn sqlite_url_is_plain_config() {
        let d = data(&valid_from_yaml(crate::controller::test_support::SQLITE));
        assert_eq!(d["TMI_DATABASE_URL"], "sqlite:///data/tmi.db");
    }
}
