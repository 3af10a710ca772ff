//! `&TmiInstance` → `ValidInstance`: checks the spec and applies the operator's defaults. Pure.
//!
//! The CRD's CEL rules reject most bad input at admission; this step repeats the cross-field checks so that an
//! object admitted under an older CRD (or with validation ratcheting) is reported as `Stalled/InvalidSpec`
//! rather than rendered. Everything after this step works on [`ValidInstance`] and never sees an `Option`
//! the operator has a default for.

use kube::ResourceExt;

use crate::controller::names;
use crate::crd::{
    Administrator, BuildMode, ConfigMapKeyRef, ExposureType, GatewayParentRef, IngressController, IssuerRef,
    OAuthProvider, ProbeOverride, Resources, Scheduling, SecretKeyRef, SessionAffinity, TmiInstance,
    UserinfoClaims, UserinfoEndpoint,
};
use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar, LocalObjectReference};
use std::collections::BTreeMap;

/// A spec the operator cannot act on. The message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidSpec {
    /// JSON path of the offending field, e.g. `spec.server.replicas`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

fn invalid(field: &str, message: impl Into<String>) -> InvalidSpec {
    InvalidSpec {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// The instance with defaults applied; input to `render`.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidInstance {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.uid`, for owner references.
    pub uid: String,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `spec.version`.
    pub version: String,
    /// Effective server image.
    pub image: String,
    /// Whether `spec.image` pins the image (automated updates then do nothing).
    pub image_pinned: bool,
    /// `spec.upgrade.policy`, effective default `Manual`.
    pub upgrade_policy: crate::crd::UpgradePolicy,
    /// `spec.upgrade.backup`, when enabled (external PostgreSQL only).
    pub backup: Option<Backup>,
    /// `spec.imagePullSecrets`.
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Effective build mode.
    pub build_mode: BuildMode,
    /// Effective replicas.
    pub replicas: i32,
    /// `spec.hostname`.
    pub hostname: Option<String>,
    /// Base URL the server is configured with: `http://<hostname>` when exposed without TLS,
    /// `https://<hostname>` otherwise, the in-cluster Service URL without a hostname. (`status.url` also waits
    /// for the certificate and the route, see `status`.)
    pub url: String,
    /// The in-cluster Service URL.
    pub service_url: String,
    /// How the instance is exposed.
    pub exposure: Exposure,
    /// `spec.suspend`.
    pub suspend: bool,
    /// `spec.server.resources`.
    pub resources: Option<Resources>,
    /// `spec.server.scheduling`.
    pub scheduling: Scheduling,
    /// `spec.server.env`.
    pub env: Vec<EnvVar>,
    /// `spec.server.envFrom`.
    pub env_from: Vec<EnvFromSource>,
    /// Probe overrides: startup, readiness, liveness.
    pub probes: [Option<ProbeOverride>; 3],
    /// The database.
    pub database: Database,
    /// The cache.
    pub cache: Cache,
    /// `spec.auth.devLogin`.
    pub dev_login: bool,
    /// `spec.auth.providers`, with the shorthand `userinfoUrl`/`*Claim` fields moved into `userinfo[0]`.
    pub providers: Vec<OAuthProvider>,
    /// `spec.auth.trustedCA`.
    pub trusted_ca: Option<CaBundle>,
    /// The administrator to bootstrap.
    pub administrator: Option<Administrator>,
    /// `spec.auth.autoPromoteFirstUser`.
    pub auto_promote_first_user: bool,
    /// Where the JWT key comes from.
    pub jwt: SecretKeyRef,
    /// Whether [`Self::jwt`] is the operator's generated Secret.
    pub jwt_generated: bool,
}

/// The effective backup before migration (`spec.upgrade.backup` with `enabled: true`).
#[derive(Debug, Clone, PartialEq)]
pub struct Backup {
    /// The PersistentVolumeClaim the dumps go to.
    pub claim_name: String,
    /// The directory inside it, if any.
    pub sub_path: Option<String>,
    /// The image running `pg_dump`.
    pub image: String,
    /// How many dumps of this instance to keep; `None`: all.
    pub keep: Option<i32>,
}

/// The effective exposure.
#[derive(Debug, Clone, PartialEq)]
pub struct Exposure {
    /// The route object.
    pub route: Route,
    /// TLS, when configured.
    pub tls: Option<Tls>,
    /// Whether cookie affinity is wanted (`Auto` resolved against the replicas and the route kind).
    pub cookie_affinity: bool,
    /// WebSocket idle timeout at the proxy, seconds.
    pub idle_timeout_seconds: i32,
}

/// `spec.upgrade.backup` with its defaults, when enabled; refused for SQLite (which has no migrate Job).
fn backup(spec: &crate::crd::TmiInstanceSpec, database: &Database) -> Result<Option<Backup>, InvalidSpec> {
    let Some(b) = spec
        .upgrade
        .as_ref()
        .and_then(|u| u.backup.as_ref())
        .filter(|b| b.enabled == Some(true))
    else {
        return Ok(None);
    };
    if let Database::Sqlite { .. } = database {
        return Err(invalid(
            "spec.upgrade.backup.enabled",
            "a backup before migration needs spec.database.external: a SQLite instance has no migrate Job \
             (its server migrates at start); back up its volume instead",
        ));
    }
    Ok(Some(Backup {
        claim_name: b.persistent_volume_claim.claim_name.clone(),
        sub_path: b
            .persistent_volume_claim
            .sub_path
            .clone()
            .map(|p| p.trim_end_matches('/').to_owned())
            .filter(|p| !p.is_empty()),
        image: b
            .image
            .clone()
            .unwrap_or_else(|| names::DEFAULT_BACKUP_IMAGE.to_owned()),
        keep: b.keep,
    }))
}

/// Default WebSocket idle timeout at the proxy: one hour.
pub const DEFAULT_IDLE_TIMEOUT_SECONDS: i32 = 3600;

/// The object that routes outside traffic to the Service.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// In-cluster only.
    None,
    /// An Ingress.
    Ingress {
        /// `ingressClassName`; the cluster default when `None`.
        class_name: Option<String>,
        /// The preset (`Auto` is resolved from the IngressClass by `inputs`).
        controller: IngressController,
        /// The user's annotations.
        annotations: BTreeMap<String, String>,
    },
    /// A Gateway API HTTPRoute.
    Gateway {
        /// Gateways to attach to.
        parent_refs: Vec<GatewayParentRef>,
    },
}

/// Where the certificate comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Tls {
    /// A cert-manager Certificate from this issuer, into `<name>-tls`.
    Issuer(IssuerRef),
    /// An existing Secret.
    Secret(String),
}

impl Exposure {
    /// `Ingress`, `Gateway` or `None`, for status.
    pub fn mode(&self) -> &'static str {
        match self.route {
            Route::None => "None",
            Route::Ingress { .. } => "Ingress",
            Route::Gateway { .. } => "Gateway",
        }
    }
}

impl names::Instance for ValidInstance {
    fn name(&self) -> &str {
        &self.name
    }
    fn namespace(&self) -> &str {
        &self.namespace
    }
    fn uid(&self) -> &str {
        &self.uid
    }
}

/// Where the PEM bundle trusted for calls to identity providers comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum CaBundle {
    /// A ConfigMap key.
    ConfigMap(ConfigMapKeyRef),
    /// A Secret key.
    Secret(SecretKeyRef),
}

/// The effective database.
#[derive(Debug, Clone, PartialEq)]
pub enum Database {
    /// External PostgreSQL; the URL is in a Secret.
    External {
        /// The URL's Secret key.
        url: SecretKeyRef,
    },
    /// SQLite on a PVC.
    Sqlite {
        /// Volume size.
        size: String,
        /// StorageClass, if any.
        storage_class_name: Option<String>,
    },
}

/// The effective cache.
#[derive(Debug, Clone, PartialEq)]
pub enum Cache {
    /// No Redis.
    None,
    /// Redis URL in a Secret.
    Url(SecretKeyRef),
    /// Redis host with optional password.
    Host {
        /// Host name.
        host: String,
        /// Port.
        port: i32,
        /// Logical database.
        db: i32,
        /// Password Secret key.
        password: Option<SecretKeyRef>,
    },
}

impl BuildMode {
    /// The `TMI_BUILD_MODE` value.
    pub fn env_value(self) -> &'static str {
        match self {
            BuildMode::Production => "production",
            BuildMode::Development => "dev",
            BuildMode::Test => "test",
        }
    }
}

impl Database {
    /// `External` or `Sqlite`, for status.
    pub fn mode(&self) -> &'static str {
        match self {
            Database::External { .. } => "External",
            Database::Sqlite { .. } => "Sqlite",
        }
    }
}

impl Cache {
    /// `External` or `None`, for status.
    pub fn mode(&self) -> &'static str {
        match self {
            Cache::None => "None",
            Cache::Url(_) | Cache::Host { .. } => "External",
        }
    }
}

/// Checks `obj` and applies defaults.
pub fn validate(obj: &TmiInstance) -> Result<ValidInstance, InvalidSpec> {
    let name = obj.name_any();
    let namespace = obj
        .namespace()
        .ok_or_else(|| invalid("metadata.namespace", "must be set"))?;
    let uid = obj
        .uid()
        .ok_or_else(|| invalid("metadata.uid", "must be set (object not from the API server)"))?;
    if name.len() > 45 {
        return Err(invalid("metadata.name", "must be at most 45 characters"));
    }
    let spec = &obj.spec;
    let server = spec.server.clone().unwrap_or_default();
    let replicas = server.replicas.unwrap_or(1);
    if !(0..=100).contains(&replicas) {
        return Err(invalid("spec.server.replicas", "must be between 0 and 100"));
    }

    let database = match (&spec.database.external, &spec.database.sqlite) {
        (Some(external), None) => Database::External {
            url: external.url_secret_ref.clone(),
        },
        (None, Some(sqlite)) => {
            if replicas != 1 {
                return Err(invalid(
                    "spec.server.replicas",
                    "must be 1 when spec.database.sqlite is set",
                ));
            }
            Database::Sqlite {
                size: sqlite.size.clone(),
                storage_class_name: sqlite.storage_class_name.clone(),
            }
        }
        _ => {
            return Err(invalid(
                "spec.database",
                "exactly one of spec.database.external or spec.database.sqlite must be set",
            ));
        }
    };

    let cache = match spec.cache.as_ref().map(|c| &c.external) {
        None => Cache::None,
        Some(None) => return Err(invalid("spec.cache.external", "required when spec.cache is set")),
        Some(Some(ext)) => match (&ext.url_secret_ref, &ext.host) {
            (Some(url), None) => Cache::Url(url.clone()),
            (None, Some(host)) => Cache::Host {
                host: host.clone(),
                port: ext.port.unwrap_or(6379),
                db: ext.db.unwrap_or(0),
                password: ext.password_secret_ref.clone(),
            },
            _ => {
                return Err(invalid(
                    "spec.cache.external",
                    "exactly one of spec.cache.external.urlSecretRef or spec.cache.external.host must be set",
                ));
            }
        },
    };
    if replicas > 1 && cache == Cache::None {
        return Err(invalid(
            "spec.server.replicas",
            "more than 1 replica requires spec.cache.external",
        ));
    }

    let build_mode = spec.build_mode.unwrap_or_default();
    let auth = spec.auth.clone().unwrap_or_default();
    let dev_login = auth.dev_login.unwrap_or(false);
    if dev_login && build_mode == BuildMode::Production {
        return Err(invalid(
            "spec.auth.devLogin",
            "requires spec.buildMode Development or Test",
        ));
    }
    let raw_providers = auth.providers.unwrap_or_default();
    let mut providers = Vec::with_capacity(raw_providers.len());
    for (i, p) in raw_providers.iter().enumerate() {
        if raw_providers.iter().filter(|q| q.id == p.id).count() > 1 {
            return Err(invalid(
                &format!("spec.auth.providers[{i}].id"),
                format!("duplicate id {:?}", p.id),
            ));
        }
        providers.push(provider(i, p)?);
    }
    let trusted_ca = match auth.trusted_ca {
        None => None,
        Some(ca) => match (ca.config_map_key_ref, ca.secret_key_ref) {
            (Some(c), None) => Some(CaBundle::ConfigMap(c)),
            (None, Some(s)) => Some(CaBundle::Secret(s)),
            _ => {
                return Err(invalid(
                    "spec.auth.trustedCA",
                    "exactly one of configMapKeyRef or secretKeyRef must be set",
                ));
            }
        },
    };
    let mut administrators = auth.administrators.unwrap_or_default();
    if administrators.len() > 1 {
        return Err(invalid(
            "spec.auth.administrators",
            "at most one administrator is supported",
        ));
    }
    let administrator = administrators.pop();
    if let Some(admin) = &administrator {
        let known =
            (admin.provider == "tmi" && dev_login) || providers.iter().any(|p| p.id == admin.provider);
        if !known {
            return Err(invalid(
                "spec.auth.administrators[0].provider",
                format!("{:?} is not a configured provider", admin.provider),
            ));
        }
    }

    let (jwt, jwt_generated) = match spec.secrets.as_ref().and_then(|s| s.jwt_secret_ref.clone()) {
        Some(r) => (r, false),
        None => (
            SecretKeyRef {
                name: names::generated_secret_for(&name),
                key: names::JWT_SECRET_KEY.to_owned(),
            },
            true,
        ),
    };

    let image = spec
        .image
        .clone()
        .unwrap_or_else(|| format!("{}:{}", names::DEFAULT_IMAGE_REPOSITORY, spec.version));
    let exposure = exposure(spec, replicas)?;
    let service_url = format!("http://{name}.{namespace}.svc");
    let url = match &spec.hostname {
        Some(host) if exposure.route != Route::None && exposure.tls.is_none() => format!("http://{host}"),
        Some(host) => format!("https://{host}"),
        None => service_url.clone(),
    };
    let probes = server.probes.unwrap_or_default();
    let backup = backup(spec, &database)?;

    Ok(ValidInstance {
        name,
        namespace,
        uid,
        generation: obj.metadata.generation,
        version: spec.version.clone(),
        image,
        image_pinned: spec.image.is_some(),
        upgrade_policy: spec.upgrade.as_ref().and_then(|u| u.policy).unwrap_or_default(),
        backup,
        image_pull_secrets: spec.image_pull_secrets.clone().unwrap_or_default(),
        build_mode,
        replicas,
        hostname: spec.hostname.clone(),
        url,
        service_url,
        exposure,
        suspend: spec.suspend.unwrap_or(false),
        resources: server.resources,
        scheduling: server.scheduling.unwrap_or_default(),
        env: server.env.unwrap_or_default(),
        env_from: server.env_from.unwrap_or_default(),
        probes: [probes.startup, probes.readiness, probes.liveness],
        database,
        cache,
        dev_login,
        providers,
        trusted_ca,
        administrator,
        auto_promote_first_user: auth.auto_promote_first_user.unwrap_or(false),
        jwt,
        jwt_generated,
    })
}

/// Authorization-request parameters the server sets itself; `additionalParams` cannot override them.
pub const RESERVED_PARAMS: [&str; 9] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "client_secret",
];

/// `https://` followed by a host and no whitespace, as the CRD's URL rule.
fn is_https_url(url: &str) -> bool {
    url.strip_prefix("https://")
        .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/') && !rest.contains(char::is_whitespace))
}

/// Checks one provider as the CRD's CEL rules do, and moves the shorthand `userinfoUrl`/`*Claim` fields into
/// `userinfo[0]`, so that rendering knows one form only.
fn provider(i: usize, p: &OAuthProvider) -> Result<OAuthProvider, InvalidSpec> {
    let field = |f: &str| format!("spec.auth.providers[{i}].{f}");
    let id_ok =
        p.id.split('-').all(|part| {
            !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        }) && p.id.starts_with(|c: char| c.is_ascii_lowercase());
    if !id_ok {
        return Err(invalid(
            &field("id"),
            "must be lower-case letters, digits and single dashes, e.g. google",
        ));
    }
    if p.id == "tmi" {
        return Err(invalid(&field("id"), "'tmi' is reserved for devLogin"));
    }
    for (name, url) in [
        ("issuer", &p.issuer),
        ("authorizationUrl", &p.authorization_url),
        ("tokenUrl", &p.token_url),
        ("jwksUrl", &p.jwks_url),
        ("userinfoUrl", &p.userinfo_url),
    ] {
        if url.as_deref().is_some_and(|u| !is_https_url(u)) {
            return Err(invalid(&field(name), "must be an https URL"));
        }
    }
    let shorthand = p.subject_claim.is_some() || p.email_claim.is_some() || p.name_claim.is_some();
    if p.userinfo.is_some() && (p.userinfo_url.is_some() || shorthand) {
        return Err(invalid(
            &field("userinfo"),
            "cannot be combined with the shorthand userinfoUrl, subjectClaim, emailClaim and nameClaim",
        ));
    }
    if shorthand && p.userinfo_url.is_none() {
        return Err(invalid(
            &field("userinfoUrl"),
            "required by subjectClaim, emailClaim and nameClaim, which map its answer",
        ));
    }
    let mut out = p.clone();
    if let Some(url) = out.userinfo_url.take() {
        out.userinfo = Some(vec![UserinfoEndpoint {
            url,
            claims: shorthand.then(|| UserinfoClaims {
                subject: out.subject_claim.take(),
                email: out.email_claim.take(),
                name: out.name_claim.take(),
                ..Default::default()
            }),
        }]);
    }
    let userinfo = out.userinfo.clone().unwrap_or_default();
    if p.userinfo.is_some() && !(1..=3).contains(&userinfo.len()) {
        return Err(invalid(
            &field("userinfo"),
            "must list 1 to 3 endpoints (primary, secondary, additional)",
        ));
    }
    for (n, u) in userinfo.iter().enumerate() {
        if !is_https_url(&u.url) {
            return Err(invalid(
                &field(&format!("userinfo[{n}].url")),
                "must be an https URL",
            ));
        }
    }
    if p.issuer.is_none() {
        let plain = "is required for a provider without issuer (plain OAuth 2.0)";
        if p.authorization_url.is_none() {
            return Err(invalid(&field("authorizationUrl"), plain));
        }
        if p.token_url.is_none() {
            return Err(invalid(&field("tokenUrl"), plain));
        }
        if userinfo.is_empty() {
            return Err(invalid(&field("userinfoUrl"), plain));
        }
        if !userinfo
            .iter()
            .any(|u| u.claims.as_ref().is_some_and(|c| c.subject.is_some()))
        {
            return Err(invalid(&field("subjectClaim"), plain));
        }
    }
    if let Some(scopes) = &p.scopes {
        let token = |s: &String| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| (0x21..=0x7e).contains(&b) && !b"\",\\".contains(&b))
        };
        if !scopes.iter().all(token) {
            return Err(invalid(
                &field("scopes"),
                "must be OAuth scope tokens (printable ASCII without spaces, commas, quotes or backslashes)",
            ));
        }
        if p.issuer.is_some() && !scopes.iter().any(|s| s == "openid") {
            return Err(invalid(
                &field("scopes"),
                "must include openid for an OpenID Connect provider (issuer set)",
            ));
        }
    }
    for key in p.additional_params.iter().flatten().map(|(k, _)| k) {
        let well_formed = key.len() <= 64
            && key.starts_with(|c: char| c.is_ascii_lowercase())
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !well_formed {
            return Err(invalid(
                &field("additionalParams"),
                format!("{key:?} is not a lower-case parameter name (letters, digits and _)"),
            ));
        }
        if RESERVED_PARAMS.contains(&key.as_str()) {
            return Err(invalid(
                &field("additionalParams"),
                format!("{key:?} is set by the server itself"),
            ));
        }
    }
    if let Some(format) = &p.auth_header_format
        && (format.matches("%s").count() != 1 || format.contains(['\r', '\n']))
    {
        return Err(invalid(
            &field("authHeaderFormat"),
            "must contain exactly one %s (the access token) and no line breaks",
        ));
    }
    if p.accept_header.as_ref().is_some_and(|a| a.contains(['\r', '\n'])) {
        return Err(invalid(&field("acceptHeader"), "must not contain line breaks"));
    }
    Ok(out)
}

/// The effective exposure; repeats the CRD's CEL rules on it.
fn exposure(spec: &crate::crd::TmiInstanceSpec, replicas: i32) -> Result<Exposure, InvalidSpec> {
    let Some(e) = &spec.exposure else {
        return Ok(Exposure {
            route: Route::None,
            tls: None,
            cookie_affinity: false,
            idle_timeout_seconds: DEFAULT_IDLE_TIMEOUT_SECONDS,
        });
    };
    if e.type_ != ExposureType::None && spec.hostname.is_none() {
        return Err(invalid(
            "spec.exposure.type",
            "Ingress or Gateway requires spec.hostname: routes and certificates are for that name",
        ));
    }
    if e.type_ != ExposureType::Ingress && e.ingress.is_some() {
        return Err(invalid(
            "spec.exposure.ingress",
            "only allowed with spec.exposure.type Ingress",
        ));
    }
    if e.type_ == ExposureType::None
        && (e.tls.is_some() || e.session_affinity.is_some() || e.websocket_idle_timeout_seconds.is_some())
    {
        return Err(invalid(
            "spec.exposure.type",
            "tls, sessionAffinity and websocketIdleTimeoutSeconds need type Ingress or Gateway",
        ));
    }
    let route = match e.type_ {
        ExposureType::None => Route::None,
        ExposureType::Ingress => {
            let ingress = e.ingress.clone().unwrap_or_default();
            let annotations = ingress.annotations.unwrap_or_default();
            if let Some(k) = annotations.keys().find(|k| k.contains("snippet")) {
                return Err(invalid(
                    "spec.exposure.ingress.annotations",
                    format!(
                        "{k:?} carries a configuration snippet, which is refused: it injects raw proxy configuration"
                    ),
                ));
            }
            let controller = ingress.controller.unwrap_or(IngressController::Auto);
            if controller == IngressController::Alb && e.tls.is_some() {
                return Err(invalid(
                    "spec.exposure.tls",
                    "cannot be used with controller ALB: the AWS load balancer terminates TLS with ACM certificates",
                ));
            }
            Route::Ingress {
                class_name: ingress.class_name,
                controller,
                annotations,
            }
        }
        ExposureType::Gateway => match &e.gateway {
            Some(g) if !g.parent_refs.is_empty() => Route::Gateway {
                parent_refs: g.parent_refs.clone(),
            },
            _ => {
                return Err(invalid(
                    "spec.exposure.gateway.parentRefs",
                    "at least one Gateway is required with spec.exposure.type Gateway",
                ));
            }
        },
    };
    let tls = match &e.tls {
        None => None,
        Some(t) => match (&t.issuer_ref, &t.secret_name) {
            (Some(issuer), None) => Some(Tls::Issuer(issuer.clone())),
            (None, Some(secret)) => Some(Tls::Secret(secret.clone())),
            _ => {
                return Err(invalid(
                    "spec.exposure.tls",
                    "exactly one of issuerRef or secretName must be set",
                ));
            }
        },
    };
    let idle_timeout_seconds = e
        .websocket_idle_timeout_seconds
        .unwrap_or(DEFAULT_IDLE_TIMEOUT_SECONDS);
    if !(30..=86400).contains(&idle_timeout_seconds) {
        return Err(invalid(
            "spec.exposure.websocketIdleTimeoutSeconds",
            "must be between 30 and 86400",
        ));
    }
    // `Auto` adds cookie affinity where it is needed (more than one pod) and where the route can express it
    // portably: on an Ingress. A Gateway's `sessionPersistence` is experimental and not implemented by every
    // Gateway, so it is only rendered when asked for (`Cookie`).
    let cookie_affinity = match e.session_affinity.unwrap_or(SessionAffinity::Auto) {
        SessionAffinity::Cookie => route != Route::None,
        SessionAffinity::None => false,
        SessionAffinity::Auto => matches!(route, Route::Ingress { .. }) && replicas > 1,
    };
    Ok(Exposure {
        route,
        tls,
        cookie_affinity,
        idle_timeout_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::test_support::{instance_from_yaml, valid_from_yaml};

    const MINIMAL: &str = r#"
apiVersion: tmi.dev/v1alpha1
kind: TmiInstance
metadata: { name: acme, namespace: tenant, uid: 00000000-0000-0000-0000-000000000001, generation: 3 }
spec:
  version: 1.2.3
  database: { external: { urlSecretRef: { name: db, key: url } } }
"#;

    #[test]
    fn minimal_spec_gets_defaults() {
        let v = validate(&instance_from_yaml(MINIMAL)).unwrap();
        assert_eq!(v.replicas, 1);
        assert_eq!(v.build_mode, BuildMode::Production);
        assert_eq!(v.image, "ghcr.io/tmi-operator/tmi-server:1.2.3");
        assert_eq!(v.url, "http://acme.tenant.svc");
        assert_eq!(v.cache, Cache::None);
        assert!(v.jwt_generated);
        assert_eq!(v.jwt.name, "acme-generated");
        assert_eq!(v.generation, Some(3));
    }

    #[test]
    fn hostname_drives_url() {
        let mut i = instance_from_yaml(MINIMAL);
        i.spec.hostname = Some("tmi.example.com".into());
        assert_eq!(validate(&i).unwrap().url, "https://tmi.example.com");
    }

    /// Exposed without TLS, the server's URL is `http://`; a snippet annotation is refused naming the field.
    #[test]
    fn exposure_drives_the_scheme_and_refuses_snippets() {
        use crate::controller::test_support::INGRESS;
        let mut i = instance_from_yaml(INGRESS);
        assert_eq!(validate(&i).unwrap().url, "https://tmi.example.com");
        i.spec.exposure.as_mut().unwrap().tls = None;
        assert_eq!(validate(&i).unwrap().url, "http://tmi.example.com");
        let annotations = i
            .spec
            .exposure
            .as_mut()
            .unwrap()
            .ingress
            .as_mut()
            .unwrap()
            .annotations
            .as_mut()
            .unwrap();
        annotations.insert("nginx.ingress.kubernetes.io/server-snippet".into(), "x".into());
        let e = validate(&i).unwrap_err();
        assert_eq!(e.field, "spec.exposure.ingress.annotations");
        assert!(e.message.contains("server-snippet"));
        i.spec.exposure = None;
        i.spec.hostname = None;
        i.spec.exposure = Some(crate::crd::ExposureSpec {
            type_: ExposureType::Ingress,
            ingress: None,
            gateway: None,
            tls: None,
            session_affinity: None,
            websocket_idle_timeout_seconds: None,
        });
        assert_eq!(validate(&i).unwrap_err().field, "spec.exposure.type");
    }

    fn err(yaml_spec_patch: impl FnOnce(&mut TmiInstance)) -> InvalidSpec {
        let mut i = instance_from_yaml(MINIMAL);
        yaml_spec_patch(&mut i);
        validate(&i).unwrap_err()
    }

    #[test]
    fn replicas_without_cache_rejected() {
        let e = err(|i| {
            i.spec.server = Some(crate::crd::ServerSpec {
                replicas: Some(3),
                ..Default::default()
            })
        });
        assert_eq!(e.field, "spec.server.replicas");
    }

    #[test]
    fn both_databases_rejected() {
        let e = err(|i| {
            i.spec.database.sqlite = Some(crate::crd::SqliteDatabase {
                size: "1Gi".into(),
                storage_class_name: None,
            })
        });
        assert_eq!(e.field, "spec.database");
    }

    #[test]
    fn dev_login_in_production_rejected() {
        let e = err(|i| {
            i.spec.auth = Some(crate::crd::AuthSpec {
                dev_login: Some(true),
                ..Default::default()
            })
        });
        assert_eq!(e.field, "spec.auth.devLogin");
        assert!(e.to_string().starts_with("spec.auth.devLogin: "));
    }

    #[test]
    fn unknown_admin_provider_rejected() {
        let e = err(|i| {
            i.spec.auth = Some(crate::crd::AuthSpec {
                administrators: Some(vec![Administrator {
                    provider: "google".into(),
                    subject: Some("1".into()),
                    email: None,
                    group: None,
                }]),
                ..Default::default()
            })
        });
        assert_eq!(e.field, "spec.auth.administrators[0].provider");
    }

    /// Every provider rule of the CRD, repeated for objects admitted under an older CRD: the field is named.
    #[test]
    fn provider_rules_name_the_field() {
        use crate::controller::test_support::SIGN_IN;
        type Edit = fn(&mut OAuthProvider);
        // (provider index in SIGN_IN: 0 GitHub, 1 Keycloak; edit; field after `spec.auth.providers[i].`)
        let cases: Vec<(usize, Edit, &str)> = vec![
            (0, |p| p.id = "Git_Hub".into(), "id"),
            (0, |p| p.authorization_url = None, "authorizationUrl"),
            (0, |p| p.token_url = None, "tokenUrl"),
            (0, |p| p.userinfo = None, "userinfoUrl"),
            (
                0,
                |p| {
                    for u in p.userinfo.iter_mut().flatten() {
                        u.claims.as_mut().unwrap().subject = None;
                    }
                },
                "subjectClaim",
            ),
            (
                0,
                |p| p.token_url = Some("http://github.com/t".into()),
                "tokenUrl",
            ),
            (
                0,
                |p| p.userinfo.as_mut().unwrap()[1].url = "http://x/".into(),
                "userinfo[1].url",
            ),
            (
                1,
                |p| p.issuer = Some("http://sso.example.com/realms/tmi".into()),
                "issuer",
            ),
            (1, |p| p.jwks_url = Some("ftp://sso/keys".into()), "jwksUrl"),
            (1, |p| p.scopes = Some(vec!["profile".into()]), "scopes"),
            (1, |p| p.scopes = Some(vec!["openid,email".into()]), "scopes"),
            (1, |p| p.subject_claim = Some("sub".into()), "userinfo"),
            (
                1,
                |p| {
                    p.userinfo = None;
                    p.email_claim = Some("mail".into());
                },
                "userinfoUrl",
            ),
            (
                1,
                |p| {
                    let u = p.userinfo.clone().unwrap()[0].clone();
                    p.userinfo = Some(vec![u.clone(), u.clone(), u.clone(), u]);
                },
                "userinfo",
            ),
            (
                1,
                |p| {
                    p.additional_params = Some([("redirect_uri".into(), "https://evil".into())].into());
                },
                "additionalParams",
            ),
            (
                1,
                |p| p.additional_params = Some([("Prompt".into(), "login".into())].into()),
                "additionalParams",
            ),
            (
                0,
                |p| p.auth_header_format = Some("token %s %s".into()),
                "authHeaderFormat",
            ),
            (
                0,
                |p| p.auth_header_format = Some("token".into()),
                "authHeaderFormat",
            ),
            (
                0,
                |p| p.accept_header = Some("a\r\nX-Injected: 1".into()),
                "acceptHeader",
            ),
        ];
        for (n, (index, edit, field)) in cases.into_iter().enumerate() {
            let mut i = instance_from_yaml(SIGN_IN);
            edit(&mut i.spec.auth.as_mut().unwrap().providers.as_mut().unwrap()[index]);
            match validate(&i) {
                Ok(_) => panic!("case {n} ({field}) accepted"),
                Err(e) => assert_eq!(
                    e.field,
                    format!("spec.auth.providers[{index}].{field}"),
                    "case {n}: {e}"
                ),
            }
        }
        // Valid as written; an OIDC provider needs nothing but its issuer and client.
        let mut i = instance_from_yaml(SIGN_IN);
        let keycloak = &mut i.spec.auth.as_mut().unwrap().providers.as_mut().unwrap()[1];
        keycloak.scopes = None;
        keycloak.userinfo = None;
        keycloak.additional_params = None;
        assert!(validate(&i).is_ok());
    }

    /// The shorthand fields become `userinfo[0]`; `trustedCA` needs exactly one source.
    #[test]
    fn shorthand_is_normalized_and_trusted_ca_needs_one_source() {
        let v = valid_from_yaml(crate::controller::test_support::FULL);
        let github = v.providers.iter().find(|p| p.id == "github").unwrap();
        assert_eq!(github.userinfo_url, None);
        assert_eq!(github.subject_claim, None);
        let endpoint = &github.userinfo.as_ref().unwrap()[0];
        assert_eq!(endpoint.url, "https://api.github.com/user");
        assert_eq!(endpoint.claims.as_ref().unwrap().subject.as_deref(), Some("id"));

        let v = valid_from_yaml(crate::controller::test_support::SIGN_IN);
        assert_eq!(
            v.trusted_ca,
            Some(CaBundle::ConfigMap(ConfigMapKeyRef {
                name: "corp-ca".into(),
                key: "ca.pem".into()
            }))
        );
        let e = err(|i| {
            i.spec.auth = Some(crate::crd::AuthSpec {
                trusted_ca: Some(crate::crd::TrustedCa {
                    config_map_key_ref: None,
                    secret_key_ref: None,
                }),
                ..Default::default()
            })
        });
        assert_eq!(e.field, "spec.auth.trustedCA");
    }

    #[test]
    fn missing_uid_rejected() {
        let mut i = instance_from_yaml(MINIMAL);
        i.metadata.uid = None;
        assert_eq!(validate(&i).unwrap_err().field, "metadata.uid");
    }
}
