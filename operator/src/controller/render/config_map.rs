//! ConfigMap with the server's non-secret environment (`<name>-config`), loaded through `envFrom`. Pure.
//!
//! Names follow tmi-server's (and upstream TMI's) environment variables. Values that are secret never land
//! here: they reach the container as `secretKeyRef` env entries (see `deployment.rs`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use crate::controller::{
    names,
    render::deployment::{TRUSTED_CA_DIR, TRUSTED_CA_FILE},
    validate::{Cache, Database, Route, ValidInstance},
};
use crate::crd::OAuthProvider;

/// Renders the ConfigMap.
pub fn render(i: &ValidInstance) -> ConfigMap {
    ConfigMap {
        metadata: names::child_meta(i, names::config_map(i)),
        data: Some(data(i)),
        ..Default::default()
    }
}

/// tmi-server's own default client-callback allowlist in dev and test mode (the web client's `ng serve` port
/// and the test callback stub), which an explicit list replaces.
const DEV_CLIENT_CALLBACKS: [&str; 3] = [
    "http://localhost:4200/*",
    "http://localhost:8079/*",
    "http://localhost:8079/",
];

/// Userinfo endpoints in the order the server calls them: `userinfo[0]`, `[1]`, `[2]`.
const USERINFO_PREFIXES: [&str; 3] = ["USERINFO", "USERINFO_SECONDARY", "USERINFO_ADDITIONAL"];

/// One provider's non-secret `OAUTH_PROVIDERS_<ID>_*` variables, one per field that is set (the server applies
/// its own defaults to the rest). The client id and secret are `secretKeyRef`s, see `deployment.rs`.
fn provider_env(env: &mut BTreeMap<String, String>, p: &OAuthProvider) {
    let prefix = format!("OAUTH_PROVIDERS_{}_", names::provider_env_id(&p.id));
    let mut put = |suffix: &str, v: Option<&String>| {
        if let Some(v) = v {
            env.insert(format!("{prefix}{suffix}"), v.clone());
        }
    };
    put("ENABLED", Some(&"true".to_owned()));
    put("NAME", Some(p.name.as_ref().unwrap_or(&p.id)));
    put("ICON", p.icon.as_ref());
    put("ISSUER", p.issuer.as_ref());
    put("AUTHORIZATION_URL", p.authorization_url.as_ref());
    put("TOKEN_URL", p.token_url.as_ref());
    put("JWKS_URL", p.jwks_url.as_ref());
    put("SCOPES", p.scopes.as_ref().map(|s| s.join(",")).as_ref());
    // `validate` moved the shorthand `userinfoUrl`/`*Claim` fields into `userinfo[0]`.
    for (endpoint, kind) in p.userinfo.iter().flatten().zip(USERINFO_PREFIXES) {
        put(&format!("{kind}_URL"), Some(&endpoint.url));
        let c = endpoint.claims.clone().unwrap_or_default();
        for (claim, value) in [
            ("SUBJECT_CLAIM", &c.subject),
            ("EMAIL_CLAIM", &c.email),
            ("NAME_CLAIM", &c.name),
            ("GIVEN_NAME_CLAIM", &c.given_name),
            ("FAMILY_NAME_CLAIM", &c.family_name),
            ("PICTURE_CLAIM", &c.picture),
            ("EMAIL_VERIFIED_CLAIM", &c.email_verified),
            ("GROUPS_CLAIM", &c.groups),
        ] {
            put(&format!("{kind}_CLAIMS_{claim}"), value.as_ref());
        }
    }
    for (param, value) in p.additional_params.iter().flatten() {
        put(
            &format!("ADDITIONAL_PARAMS_{}", param.to_ascii_uppercase()),
            Some(value),
        );
    }
    put("AUTH_HEADER_FORMAT", p.auth_header_format.as_ref());
    put("ACCEPT_HEADER", p.accept_header.as_ref());
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
        // A web client on the instance's own origin sends `client_callback=<url>/…`. Without a list the server
        // refuses every callback in production and allows only localhost in dev/test: those entries are kept.
        let mut allowed = vec![format!("{}/*", i.url)];
        if i.build_mode != crate::crd::BuildMode::Production {
            allowed.extend(DEV_CLIENT_CALLBACKS.map(str::to_owned));
        }
        set("TMI_OAUTH_CLIENT_CALLBACK_ALLOWLIST", allowed.join(","));
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
        provider_env(&mut env, p);
    }
    if i.trusted_ca.is_some() {
        env.insert(
            "TMI_OAUTH_CA_FILE".to_owned(),
            format!("{TRUSTED_CA_DIR}/{TRUSTED_CA_FILE}"),
        );
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
    use crate::controller::test_support::{EXTERNAL, FULL, SIGN_IN, instance_from_yaml, valid_from_yaml};
    use crate::controller::validate::validate;

    /// The provider variables of `d` (`OAUTH_PROVIDERS_<ID>_*`), as `suffix=value` lines.
    fn provider_vars(d: &BTreeMap<String, String>, id: &str) -> Vec<String> {
        let prefix = format!("OAUTH_PROVIDERS_{id}_");
        d.iter()
            .filter_map(|(k, v)| Some(format!("{}={v}", k.strip_prefix(&prefix)?)))
            .collect()
    }

    /// A GitHub-style provider (plain OAuth 2.0) renders every variable the server reads for it, one to one.
    #[test]
    fn github_style_provider_variables() {
        let d = data(&valid_from_yaml(SIGN_IN));
        assert_eq!(
            provider_vars(&d, "GITHUB"),
            [
                "ACCEPT_HEADER=application/vnd.github+json",
                "ADDITIONAL_PARAMS_ALLOW_SIGNUP=false",
                "AUTHORIZATION_URL=https://github.com/login/oauth/authorize",
                "AUTH_HEADER_FORMAT=token %s",
                "ENABLED=true",
                "ICON=fa-brands fa-github",
                "NAME=GitHub",
                "SCOPES=read:user,user:email",
                "TOKEN_URL=https://github.com/login/oauth/access_token",
                "USERINFO_CLAIMS_NAME_CLAIM=name",
                "USERINFO_CLAIMS_PICTURE_CLAIM=avatar_url",
                "USERINFO_CLAIMS_SUBJECT_CLAIM=id",
                "USERINFO_SECONDARY_CLAIMS_EMAIL_CLAIM=[0].email",
                "USERINFO_SECONDARY_CLAIMS_EMAIL_VERIFIED_CLAIM=[0].verified",
                "USERINFO_SECONDARY_URL=https://api.github.com/user/emails",
                "USERINFO_URL=https://api.github.com/user",
            ]
        );
    }

    /// A Keycloak/OIDC provider renders its issuer and only what is set (discovery fills the endpoints); the
    /// groups mapping and the administrators group reach the server; the private CA is pointed at.
    #[test]
    fn keycloak_oidc_provider_variables() {
        let d = data(&valid_from_yaml(SIGN_IN));
        assert_eq!(
            provider_vars(&d, "KEYCLOAK"),
            [
                "ADDITIONAL_PARAMS_PROMPT=login",
                "ENABLED=true",
                "ISSUER=https://sso.example.com/realms/tmi",
                "NAME=Corporate SSO",
                "SCOPES=openid,profile,email",
                "USERINFO_CLAIMS_FAMILY_NAME_CLAIM=family_name",
                "USERINFO_CLAIMS_GIVEN_NAME_CLAIM=given_name",
                "USERINFO_CLAIMS_GROUPS_CLAIM=groups",
                "USERINFO_URL=https://sso.example.com/realms/tmi/protocol/openid-connect/userinfo",
            ]
        );
        assert_eq!(d["TMI_ADMIN_PROVIDER"], "keycloak");
        assert_eq!(d["TMI_ADMIN_SUBJECT_TYPE"], "group");
        assert_eq!(d["TMI_ADMIN_GROUP_NAME"], "tmi-admins");
        assert_eq!(d["TMI_OAUTH_CA_FILE"], "/etc/tmi/trusted-ca/ca.crt");
    }

    /// The shorthand `userinfoUrl`/`subjectClaim`/`emailClaim`/`nameClaim` renders the same variables as
    /// `userinfo[0]`.
    #[test]
    fn shorthand_renders_as_the_primary_endpoint() {
        let d = data(&valid_from_yaml(FULL));
        assert_eq!(
            provider_vars(&d, "GITHUB"),
            [
                "AUTHORIZATION_URL=https://github.com/login/oauth/authorize",
                "ENABLED=true",
                "NAME=github",
                "TOKEN_URL=https://github.com/login/oauth/access_token",
                "USERINFO_CLAIMS_SUBJECT_CLAIM=id",
                "USERINFO_URL=https://api.github.com/user",
            ]
        );
        assert!(!d.contains_key("TMI_OAUTH_CA_FILE"));
    }

    /// The IdP callback is the instance's public URL: `https://<hostname>` with TLS, `http://` exposed
    /// without it, the in-cluster URL without a hostname. The web client on the instance's own origin may
    /// receive the sign-in (production has no other default); dev/test keep the server's localhost entries.
    #[test]
    fn callback_and_client_callbacks_follow_the_public_url() {
        let d = data(&valid_from_yaml(SIGN_IN));
        assert_eq!(
            d["TMI_OAUTH_CALLBACK_URL"],
            "https://tmi.example.com/oauth2/callback"
        );
        assert_eq!(d["TMI_SERVER_BASE_URL"], "https://tmi.example.com");
        assert_eq!(
            d["TMI_OAUTH_CLIENT_CALLBACK_ALLOWLIST"],
            "https://tmi.example.com/*"
        );

        let mut plain = instance_from_yaml(SIGN_IN);
        plain.spec.exposure.as_mut().unwrap().tls = None;
        let d = data(&validate(&plain).unwrap());
        assert_eq!(
            d["TMI_OAUTH_CALLBACK_URL"],
            "http://tmi.example.com/oauth2/callback"
        );
        assert_eq!(
            d["TMI_OAUTH_CLIENT_CALLBACK_ALLOWLIST"],
            "http://tmi.example.com/*"
        );

        let d = data(&valid_from_yaml(FULL));
        assert_eq!(
            d["TMI_OAUTH_CALLBACK_URL"],
            "https://tmi.example.com/oauth2/callback"
        );
        assert_eq!(
            d["TMI_OAUTH_CLIENT_CALLBACK_ALLOWLIST"],
            "https://tmi.example.com/*,http://localhost:4200/*,http://localhost:8079/*,http://localhost:8079/"
        );

        let d = data(&valid_from_yaml(EXTERNAL));
        assert_eq!(
            d["TMI_OAUTH_CALLBACK_URL"],
            "http://acme.tenant.svc/oauth2/callback"
        );
        assert!(!d.contains_key("TMI_OAUTH_CLIENT_CALLBACK_ALLOWLIST"));
    }

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

    /// Every worked configuration in docs/sign-in.md renders exactly the server variables printed beside it:
    /// the provider's `OAUTH_PROVIDERS_<ID>_*`, `TMI_ADMIN_*` and `TMI_OAUTH_CA_FILE` (client id and secret as
    /// `secretKeyRef`s).
    #[test]
    fn sign_in_doc_matches_the_rendered_variables() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/sign-in.md")).unwrap();
        let blocks: Vec<(&str, String)> = doc
            .split("```")
            .skip(1)
            .step_by(2)
            .map(|b| {
                let (lang, body) = b.split_once('\n').unwrap();
                (lang.trim(), body.to_owned())
            })
            .collect();
        let mut checked = 0;
        for pair in blocks.windows(2) {
            let [(yaml_lang, yaml), (sh_lang, sh)] = pair else {
                unreachable!()
            };
            if *yaml_lang != "yaml" || *sh_lang != "sh" || !sh.contains("OAUTH_PROVIDERS_") {
                continue;
            }
            let mut instance: serde_yaml::Value = serde_yaml::from_str(SIGN_IN).unwrap();
            instance["spec"]["auth"] = serde_yaml::Value::Null;
            let snippet: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
            for (k, v) in snippet["spec"].as_mapping().unwrap() {
                instance["spec"][k.as_str().unwrap()] = v.clone();
            }
            let instance: crate::crd::TmiInstance = serde_yaml::from_value(instance).unwrap();
            let valid = validate(&instance).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
            let d = data(&valid);
            let secrets: Vec<String> = crate::controller::render::deployment::secret_env(&valid)
                .into_iter()
                .map(|e| e.name)
                .collect();
            let mut expected = BTreeMap::new();
            for line in sh.lines() {
                let (k, v) = line.split_once('=').unwrap();
                if k.ends_with("_CLIENT_ID") || k.ends_with("_CLIENT_SECRET") {
                    assert!(secrets.contains(&k.to_owned()), "{k} not a secretKeyRef\n{yaml}");
                } else {
                    expected.insert(k.to_owned(), v.to_owned());
                }
            }
            let rendered: BTreeMap<String, String> = d
                .into_iter()
                .filter(|(k, _)| {
                    k.starts_with("OAUTH_PROVIDERS_")
                        || k.starts_with("TMI_ADMIN_")
                        || k == "TMI_OAUTH_CA_FILE"
                })
                .collect();
            assert_eq!(rendered, expected, "docs/sign-in.md:\n{yaml}");
            checked += 1;
        }
        assert_eq!(
            checked, 6,
            "Google, GitHub, Entra ID, Okta, Keycloak, generic OIDC"
        );
    }

    #[test]
    fn sqlite_url_is_plain_config() {
        let d = data(&valid_from_yaml(crate::controller::test_support::SQLITE));
        assert_eq!(d["TMI_DATABASE_URL"], "sqlite:///data/tmi.db");
    }
}
