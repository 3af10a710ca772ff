//! External identity providers: OpenID Connect (discovery, `nonce`, id_token verification against
//! the provider's JWKS with rotation) and plain OAuth 2.0 (userinfo calls with claim mappings,
//! GitHub style), both with PKCE towards the provider. IO: HTTP calls to the provider; the
//! discovery document and the JWKS are cached per provider.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::http::StatusCode;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};

use super::claims::Claims;
use super::provider::{AuthorizeStart, FlowSecrets, Identity, IdentityProvider, ProviderInfo, pkce_s256};
use super::provider_config::OAuthProviderConfig;
use super::tokens::random_token;
use crate::error::ApiError;

/// How long a JWKS is trusted before it is fetched again.
const JWKS_TTL: Duration = Duration::from_secs(3600);
/// Clock skew tolerated on `exp`, `nbf` and `iat`.
const LEEWAY_SECONDS: u64 = 60;
/// Signature algorithms accepted on id tokens (never `none`, never a shared-secret HMAC).
const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The provider's endpoints: configured, or found through discovery.
#[derive(Debug, Clone)]
struct Endpoints {
    authorization: String,
    token: String,
    jwks: Option<String>,
    userinfo: Option<String>,
    /// The token endpoint takes the client secret only in a Basic header.
    basic_auth_only: bool,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    jwks_uri: Option<String>,
    userinfo_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Vec<String>,
}

#[derive(Default)]
struct JwksCache {
    keys: Vec<Jwk>,
    fetched: Option<Instant>,
}

/// An external OAuth 2.0 / OIDC provider.
pub struct OAuthProvider {
    cfg: OAuthProviderConfig,
    http: reqwest::Client,
    endpoints: RwLock<Option<Endpoints>>,
    jwks: Mutex<JwksCache>,
}

fn unavailable(cfg: &OAuthProviderConfig, what: &str) -> ApiError {
    ApiError::ServiceUnavailable(format!(
        "The identity provider {} could not be reached ({what}); try again",
        cfg.id
    ))
}

fn denied(msg: impl Into<String>) -> ApiError {
    ApiError::OAuth(StatusCode::UNAUTHORIZED, "access_denied", msg.into())
}

fn invalid_token(msg: impl Into<String>) -> ApiError {
    ApiError::OAuth(StatusCode::UNAUTHORIZED, "invalid_token", msg.into())
}

impl OAuthProvider {
    pub fn new(cfg: OAuthProviderConfig, http: reqwest::Client) -> Arc<Self> {
        let configured = match (&cfg.authorization_url, &cfg.token_url) {
            (Some(a), Some(t)) if !cfg.is_oidc() || cfg.jwks_url.is_some() => Some(Endpoints {
                authorization: a.clone(),
                token: t.clone(),
                jwks: cfg.jwks_url.clone(),
                userinfo: None,
                basic_auth_only: false,
            }),
            _ => None,
        };
        Arc::new(Self {
            cfg,
            http,
            endpoints: RwLock::new(configured),
            jwks: Mutex::new(JwksCache::default()),
        })
    }

    pub fn config(&self) -> &OAuthProviderConfig {
        &self.cfg
    }

    /// The endpoints; for an OIDC provider with endpoints missing from the configuration, from its
    /// discovery document (fetched once, retried on the next sign-in after a failure).
    async fn endpoints(&self) -> Result<Endpoints, ApiError> {
        if let Some(e) = self.endpoints.read().await.clone() {
            return Ok(e);
        }
        let Some(issuer) = &self.cfg.issuer else {
            return Err(ApiError::internal(anyhow::anyhow!("provider without endpoints")));
        };
        let url = format!("{issuer}/.well-known/openid-configuration");
        let doc: Discovery = self
            .http
            .get(&url)
            .header("accept", "application/json")
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| {
                tracing::warn!(provider = %self.cfg.id, error = %e, "OIDC discovery failed");
                unavailable(&self.cfg, "discovery")
            })?
            .json()
            .await
            .map_err(|_| unavailable(&self.cfg, "discovery document unreadable"))?;
        if doc.issuer.trim_end_matches('/') != issuer {
            tracing::error!(provider = %self.cfg.id, configured = %issuer, announced = %doc.issuer,
                "the discovery document names another issuer; check OAUTH_PROVIDERS_*_ISSUER");
            return Err(unavailable(&self.cfg, "discovery names another issuer"));
        }
        let pick = |configured: &Option<String>, found: Option<String>| configured.clone().or(found);
        let basic_only = !doc.token_endpoint_auth_methods_supported.is_empty()
            && !doc
                .token_endpoint_auth_methods_supported
                .iter()
                .any(|m| m == "client_secret_post")
            && doc
                .token_endpoint_auth_methods_supported
                .iter()
                .any(|m| m == "client_secret_basic");
        let e = Endpoints {
            authorization: pick(&self.cfg.authorization_url, doc.authorization_endpoint)
                .ok_or_else(|| unavailable(&self.cfg, "no authorization_endpoint"))?,
            token: pick(&self.cfg.token_url, doc.token_endpoint)
                .ok_or_else(|| unavailable(&self.cfg, "no token_endpoint"))?,
            jwks: pick(&self.cfg.jwks_url, doc.jwks_uri),
            userinfo: doc.userinfo_endpoint,
            basic_auth_only: basic_only,
        };
        *self.endpoints.write().await = Some(e.clone());
        Ok(e)
    }

    /// Warms the discovery document and the JWKS at startup; failures are logged, not fatal (the
    /// provider may come up after the server).
    pub async fn warm_up(&self) {
        match self.endpoints().await {
            Ok(e) => {
                if let Some(jwks) = &e.jwks
                    && let Err(err) = self.fetch_jwks(jwks).await
                {
                    tracing::warn!(provider = %self.cfg.id, error = %err, "cannot fetch the provider's JWKS yet");
                }
            }
            Err(err) => tracing::warn!(provider = %self.cfg.id, error = %err, "provider not reachable yet"),
        }
    }

    async fn fetch_jwks(&self, url: &str) -> Result<Vec<Jwk>, ApiError> {
        #[derive(Deserialize)]
        struct Set {
            keys: Vec<Value>,
        }
        let set: Set = self
            .http
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|_| unavailable(&self.cfg, "JWKS"))?
            .json()
            .await
            .map_err(|_| unavailable(&self.cfg, "JWKS unreadable"))?;
        // Keys this library cannot read (encryption keys, unknown types) are skipped one by one.
        let keys: Vec<Jwk> = set
            .keys
            .into_iter()
            .filter_map(|k| serde_json::from_value::<Jwk>(k).ok())
            .filter(|k| !matches!(k.common.public_key_use, Some(PublicKeyUse::Encryption)))
            .filter(|k| !matches!(k.algorithm, AlgorithmParameters::OctetKey(_)))
            .collect();
        let mut cache = self.jwks.lock().await;
        cache.keys = keys.clone();
        cache.fetched = Some(Instant::now());
        Ok(keys)
    }

    /// The verification key for a token header: from the cache, or after refetching the JWKS when
    /// the `kid` is unknown (the provider rotated its keys) or the cache is old.
    async fn key_for(&self, jwks_url: &str, kid: Option<&str>, alg: Algorithm) -> Result<Jwk, ApiError> {
        let pick = |keys: &[Jwk]| -> Option<Jwk> {
            let fits = |k: &&Jwk| {
                let family_ok = matches!(
                    (&k.algorithm, alg),
                    (
                        AlgorithmParameters::RSA(_),
                        Algorithm::RS256
                            | Algorithm::RS384
                            | Algorithm::RS512
                            | Algorithm::PS256
                            | Algorithm::PS384
                            | Algorithm::PS512
                    ) | (
                        AlgorithmParameters::EllipticCurve(_),
                        Algorithm::ES256 | Algorithm::ES384
                    ) | (AlgorithmParameters::OctetKeyPair(_), Algorithm::EdDSA)
                );
                let alg_ok = k
                    .common
                    .key_algorithm
                    .is_none_or(|ka| Algorithm::try_from(ka).is_ok_and(|a| a == alg));
                family_ok && alg_ok
            };
            match kid {
                Some(kid) => keys
                    .iter()
                    .filter(|k| k.common.key_id.as_deref() == Some(kid))
                    .find(fits)
                    .cloned(),
                None => {
                    let mut candidates = keys.iter().filter(fits);
                    match (candidates.next(), candidates.next()) {
                        (Some(only), None) => Some(only.clone()),
                        _ => None,
                    }
                }
            }
        };
        // An unknown `kid` refetches at once: id tokens come only from the provider's token endpoint
        // (never from a client), so a refetch per unknown key cannot be driven by an attacker.
        let (cached, stale) = {
            let cache = self.jwks.lock().await;
            (
                pick(&cache.keys),
                cache.fetched.is_none_or(|f| f.elapsed() > JWKS_TTL),
            )
        };
        if let Some(k) = cached
            && !stale
        {
            return Ok(k);
        }
        let keys = self.fetch_jwks(jwks_url).await?;
        pick(&keys)
            .ok_or_else(|| invalid_token("The id_token is signed with a key the provider does not publish"))
    }

    /// Verifies an id_token of this provider (endpoints from configuration or discovery).
    pub async fn verify(&self, token: &str, nonce: Option<&str>) -> Result<Value, ApiError> {
        let e = self.endpoints().await?;
        let jwks = e
            .jwks
            .as_deref()
            .ok_or_else(|| unavailable(&self.cfg, "no jwks_uri"))?;
        self.verify_id_token(jwks, token, nonce).await
    }

    /// Verifies an id_token: signature against the provider's JWKS, `iss`, `aud` (and `azp` with
    /// several audiences), `exp`/`nbf`/`iat`, and the `nonce` of this sign-in.
    async fn verify_id_token(
        &self,
        jwks_url: &str,
        token: &str,
        nonce: Option<&str>,
    ) -> Result<Value, ApiError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| invalid_token("The id_token is malformed"))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(invalid_token(format!(
                "The id_token's signature algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let jwk = self.key_for(jwks_url, header.kid.as_deref(), header.alg).await?;
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|_| invalid_token("The provider's signing key is unusable"))?;
        let mut v = Validation::new(header.alg);
        v.leeway = LEEWAY_SECONDS;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        if let Some(issuer) = &self.cfg.issuer {
            v.set_issuer(&[issuer.as_str(), format!("{issuer}/").as_str()]);
        }
        v.set_audience(&[self.cfg.client_id.as_str()]);
        let data = jsonwebtoken::decode::<Value>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            invalid_token(match e.kind() {
                K::InvalidSignature => "The id_token's signature is invalid",
                K::ExpiredSignature => "The id_token has expired",
                K::ImmatureSignature => "The id_token is not valid yet",
                K::InvalidIssuer => "The id_token was issued by another issuer",
                K::InvalidAudience => "The id_token was issued for another client",
                K::MissingRequiredClaim(_) => "The id_token lacks a required claim",
                _ => "The id_token is invalid",
            })
        })?;
        let claims = data.claims;
        if let Some(Value::Array(aud)) = claims.get("aud")
            && aud.len() > 1
            && claims.get("azp").and_then(Value::as_str) != Some(self.cfg.client_id.as_str())
        {
            return Err(invalid_token("The id_token was issued for another client (azp)"));
        }
        if claims.get("nonce").and_then(Value::as_str) != nonce {
            return Err(invalid_token("The id_token's nonce does not match this sign-in"));
        }
        Ok(claims)
    }

    async fn exchange_code(
        &self,
        e: &Endpoints,
        code: &str,
        verifier: &str,
        callback: &str,
    ) -> Result<Value, ApiError> {
        let secret = self.cfg.client_secret.expose_secret();
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", callback),
            ("code_verifier", verifier),
        ];
        let mut req = self.http.post(&e.token).header("accept", "application/json");
        if e.basic_auth_only {
            req = req.basic_auth(&self.cfg.client_id, Some(secret));
        } else {
            form.push(("client_id", &self.cfg.client_id));
            form.push(("client_secret", secret));
        }
        let res = req
            .form(&form)
            .send()
            .await
            .map_err(|_| unavailable(&self.cfg, "token endpoint"))?;
        let status = res.status();
        let body: Value = res
            .json()
            .await
            .map_err(|_| unavailable(&self.cfg, "token answer unreadable"))?;
        // GitHub answers 200 with an `error` member.
        if let Some(err) = body.get("error").and_then(Value::as_str) {
            tracing::info!(provider = %self.cfg.id, error = err, "the provider refused the authorization code");
            return Err(ApiError::OAuth(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                format!("The identity provider refused the authorization code ({err}); sign in again"),
            ));
        }
        if !status.is_success() {
            return Err(unavailable(&self.cfg, "token endpoint"));
        }
        Ok(body)
    }

    async fn userinfo(&self, url: &str, access_token: &str) -> Result<Value, ApiError> {
        let auth = self.cfg.auth_header_format.replacen("%s", access_token, 1);
        self.http
            .get(url)
            .header("authorization", auth)
            .header("accept", &self.cfg.accept_header)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| {
                tracing::warn!(provider = %self.cfg.id, status = ?e.status(), "userinfo call failed");
                unavailable(&self.cfg, "userinfo")
            })?
            .json()
            .await
            .map_err(|_| unavailable(&self.cfg, "userinfo answer unreadable"))
    }
}

#[async_trait]
impl IdentityProvider for OAuthProvider {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            id: self.cfg.id.clone(),
            name: self.cfg.name.clone(),
            icon: self.cfg.icon.clone(),
            client_id: self.cfg.client_id.clone(),
        }
    }

    async fn authorize(
        &self,
        state: &str,
        login_hint: Option<&str>,
        callback_url: &str,
    ) -> Result<AuthorizeStart, ApiError> {
        let e = self.endpoints().await?;
        let flow = FlowSecrets {
            code_verifier: random_token(32),
            nonce: self.cfg.is_oidc().then(|| random_token(32)),
        };
        let mut url = url::Url::parse(&e.authorization)
            .map_err(|_| unavailable(&self.cfg, "authorization endpoint is not a URL"))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.cfg.client_id)
                .append_pair("redirect_uri", callback_url)
                .append_pair("scope", &self.cfg.scopes.join(" "))
                .append_pair("state", state)
                .append_pair("code_challenge", &pkce_s256(&flow.code_verifier))
                .append_pair("code_challenge_method", "S256");
            if let Some(n) = &flow.nonce {
                q.append_pair("nonce", n);
            }
            if let Some(h) = login_hint {
                q.append_pair("login_hint", h);
            }
            for (k, v) in &self.cfg.additional_params {
                q.append_pair(k, v);
            }
        }
        Ok(AuthorizeStart::Redirect {
            url: url.into(),
            flow,
        })
    }

    async fn exchange(&self, _code: &str, _login_hint: Option<&str>) -> Result<Identity, ApiError> {
        Err(ApiError::OAuth(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid authorization code or code_verifier".into(),
        ))
    }

    async fn complete(
        &self,
        code: &str,
        flow: &FlowSecrets,
        callback_url: &str,
    ) -> Result<Identity, ApiError> {
        let e = self.endpoints().await?;
        let tokens = self
            .exchange_code(&e, code, &flow.code_verifier, callback_url)
            .await?;
        let access_token = tokens
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| unavailable(&self.cfg, "no access_token in the token answer"))?;
        let mut claims = Claims::default();
        let mut verified_sub = None;
        let primary_mappings = self
            .cfg
            .userinfo
            .first()
            .map(|u| u.claims.clone())
            .unwrap_or_default();
        let explicit_subject = self
            .cfg
            .userinfo
            .iter()
            .any(|u| u.claims.contains_key("subject_claim"));
        if self.cfg.is_oidc() {
            let id_token = tokens
                .get("id_token")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid_token("The provider returned no id_token"))?;
            let jwks = e
                .jwks
                .as_deref()
                .ok_or_else(|| unavailable(&self.cfg, "no jwks_uri"))?;
            let id = self
                .verify_id_token(jwks, id_token, flow.nonce.as_deref())
                .await?;
            let sub = id.get("sub").and_then(Value::as_str).map(str::to_owned);
            let mut without_subject = primary_mappings.clone();
            without_subject.remove("subject_claim");
            if !explicit_subject {
                claims.subject = sub.clone();
            }
            claims.read(&id, &without_subject, true, false);
            verified_sub = sub;
        }
        for (i, endpoint) in self.cfg.userinfo.iter().enumerate() {
            let doc = self.userinfo(&endpoint.url, access_token).await?;
            claims.read(&doc, &endpoint.claims, i == 0, false);
            check_standard_sub(&e, &endpoint.url, &doc, verified_sub.as_deref())?;
        }
        // An OIDC provider whose id_token lacks the email: its standard userinfo endpoint.
        if self.cfg.is_oidc()
            && self.cfg.userinfo.is_empty()
            && (claims.email.is_none() || claims.groups.is_none())
            && let Some(url) = &e.userinfo
        {
            let doc = self.userinfo(url, access_token).await?;
            claims.read(&doc, &primary_mappings, true, false);
            check_standard_sub(&e, url, &doc, verified_sub.as_deref())?;
        }
        let subject = claims
            .subject
            .clone()
            .ok_or_else(|| denied("The identity provider did not identify the user (no subject)"))?;
        let email = claims.email.clone().ok_or_else(|| {
            denied(format!(
                "The identity provider did not return an email address; map one with {}",
                self.cfg.var("USERINFO_CLAIMS_EMAIL_CLAIM")
            ))
        })?;
        Ok(Identity {
            provider: self.cfg.id.clone(),
            provider_user_id: subject,
            name: claims.display_name().unwrap_or_else(|| email.clone()),
            email,
            email_verified: claims.email_verified.unwrap_or(false),
            groups: claims.groups.unwrap_or_default(),
        })
    }
}

/// OIDC Core §5.3.2: the standard userinfo answer's `sub` must be the id_token's.
fn check_standard_sub(e: &Endpoints, url: &str, doc: &Value, verified: Option<&str>) -> Result<(), ApiError> {
    if e.userinfo.as_deref() == Some(url)
        && let Some(v) = verified
        && doc.get("sub").and_then(Value::as_str) != Some(v)
    {
        return Err(invalid_token(
            "The userinfo answer names another subject than the id_token",
        ));
    }
    Ok(())
}

/// The HTTP client for calls to identity providers: public roots plus `TMI_OAUTH_CA_FILE`, bounded
/// timeouts, no cookies, and no redirects (an endpoint that redirects is misconfigured, and
/// following redirects would carry the client secret elsewhere).
pub fn http_client(ca_file: Option<&str>) -> anyhow::Result<reqwest::Client> {
    use anyhow::Context;
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tmi-server/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).with_context(|| format!("TMI_OAUTH_CA_FILE: cannot read {path}"))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("TMI_OAUTH_CA_FILE: {path} holds no PEM certificate"))?;
        anyhow::ensure!(
            !certs.is_empty(),
            "TMI_OAUTH_CA_FILE: {path} holds no PEM certificate"
        );
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build()
        .context("cannot build the identity providers' HTTP client")
}
