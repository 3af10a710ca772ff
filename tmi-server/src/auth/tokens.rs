//! Authentication: HS256 JWTs with TMI's claim set, the authenticated caller (`AuthUser`), token
//! issuance with single-use refresh rotation and reuse detection, revocation (of tokens and of token
//! families, through `revocations`), and cookies. IO: talks to the `Store` (users, groups,
//! revocations) and the `TokenKv` (refresh tokens).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::client_credentials;
use super::kv::TokenKv;
use super::provider::Identity;
use super::revocations::{Revocations, credential_key, family_key, token_key};
use crate::authz::Subject;
use crate::config::Config;
use crate::domain::admin;
use crate::error::ApiError;
use crate::store::{GroupRecord, Store, UserRecord, groups};

pub const ACCESS_COOKIE: &str = "tmi_access_token";
pub const REFRESH_COOKIE: &str = "tmi_refresh_token";

/// The access token's claims (tmi-compat.md §4.2).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    pub email: String,
    pub email_verified: bool,
    pub name: String,
    pub idp: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub tmi_is_administrator: bool,
    #[serde(default)]
    pub tmi_is_security_reviewer: bool,
    pub auth_time: i64,
    /// The token family (every token of one login, OIDC's session id): logout and refresh-token
    /// reuse revoke it. Absent in tokens minted before families were carried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// Signing and verification keys.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl JwtKeys {
    pub fn new(secret: &[u8]) -> anyhow::Result<Self> {
        let mut validation = Validation::new(Algorithm::HS256);
        // Like TMI, requests are not checked for `iss`/`aud`.
        validation.validate_aud = false;
        validation.validate_nbf = true;
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub", "nbf"]);
        Ok(Self {
            encoding: EncodingKey::from_secret(secret).map_err(|_| anyhow::anyhow!("invalid JWT secret"))?,
            decoding: DecodingKey::from_secret(secret).map_err(|_| anyhow::anyhow!("invalid JWT secret"))?,
            validation,
        })
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, ApiError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(ApiError::internal)
    }

    /// Verifies signature, algorithm (HS256 only, so `alg: none` fails), `exp` and `nbf`.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|d| d.claims)
    }
}

/// `sha256(token)` in hex: the revocation key of an access token, and the stored form of a
/// client secret.
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// `bytes` random bytes, base64url without padding: codes, states, tickets, secrets.
pub fn random_token(bytes: usize) -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// The names of TMI's built-in groups: a provider's group of the same name is dropped at sign-in,
/// so that ACL entries on TMI's groups match TMI's members only.
const BUILT_IN_GROUP_NAMES: [&str; 6] = [
    "everyone",
    "security-reviewers",
    "administrators",
    "confidential-project-reviewers",
    "tmi-automation",
    "embedding-automation",
];

/// The provider's groups of an identity, deduplicated, without TMI's built-in names.
fn provider_groups(identity: &Identity) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for g in &identity.groups {
        let g = g.trim();
        if g.is_empty() || out.iter().any(|o| o == g) {
            continue;
        }
        if BUILT_IN_GROUP_NAMES.contains(&g) {
            tracing::warn!(provider = %identity.provider, group = g,
                "ignoring a provider group named like one of TMI's built-in groups");
            continue;
        }
        out.push(g.to_owned());
    }
    out
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user: UserRecord,
    pub claims: Claims,
    pub token: String,
}

impl AuthUser {
    pub fn provider(&self) -> &str {
        &self.user.provider
    }
    pub fn provider_id(&self) -> &str {
        &self.user.provider_user_id
    }
    /// Group names from the token (a snapshot taken at issuance, as in TMI).
    pub fn groups(&self) -> &[String] {
        &self.claims.groups
    }
    pub fn is_security_reviewer(&self) -> bool {
        self.claims.tmi_is_security_reviewer
    }
    /// Whether the token is a service account's (granted to a client credential of `user`).
    pub fn is_service_account(&self) -> bool {
        client_credentials::parse_subject(&self.claims.sub).is_some()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<AuthUser>()
            .cloned()
            .ok_or(ApiError::Unauthorized)
    }
}

/// `res` with `Set-Cookie` headers.
pub fn with_cookies(mut res: axum::response::Response, cookies: Vec<String>) -> axum::response::Response {
    for c in cookies {
        if let Ok(v) = axum::http::HeaderValue::from_str(&c) {
            res.headers_mut().append(axum::http::header::SET_COOKIE, v);
        }
    }
    res
}

/// The caller as far as ACL matching goes.
impl<'a> From<&'a AuthUser> for Subject<'a> {
    fn from(u: &'a AuthUser) -> Self {
        Subject {
            provider: u.provider(),
            provider_id: u.provider_id(),
            email: &u.user.email,
            groups: u.groups(),
        }
    }
}

/// The caller when authentication is optional.
pub struct MaybeAuthUser(pub Option<AuthUser>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeAuthUser {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.extensions.get::<AuthUser>().cloned()))
    }
}

/// What a refresh token stands for.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RefreshData {
    provider: String,
    provider_user_id: String,
    /// Unix time of the interactive login that started this session.
    session_created: i64,
    auth_time: i64,
    /// Every token of one login shares a family; reuse of a rotated token revokes the family.
    family: String,
    /// The groups the identity provider asserted at the interactive login: refreshed tokens carry
    /// them too (a sign-in refreshes them).
    #[serde(default)]
    idp_groups: Vec<String>,
}

/// A freshly issued token pair.
#[derive(Debug, Clone, Serialize)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
    pub token_type: &'static str,
}

/// Issues, rotates and revokes tokens.
pub struct Tokens {
    pub keys: JwtKeys,
    pub kv: Arc<dyn TokenKv>,
    pub store: Arc<dyn Store>,
    pub config: Arc<Config>,
    pub revocations: Arc<Revocations>,
}

/// The answer when the token store (Redis or process memory) fails.
pub fn kv_err(e: anyhow::Error) -> ApiError {
    tracing::error!(error = %e, "token store unavailable");
    ApiError::ServiceUnavailable("Token store unavailable".into())
}

fn invalid_grant(msg: &str) -> ApiError {
    ApiError::OAuth(
        axum::http::StatusCode::BAD_REQUEST,
        "invalid_grant",
        msg.to_owned(),
    )
}

impl Tokens {
    fn refresh_ttl(&self) -> Duration {
        Duration::from_secs(self.config.refresh_token_days as u64 * 86_400)
    }

    /// Records a login: creates or refreshes the user, applies auto-promotion and bootstrap, and
    /// issues a new session.
    pub async fn login(&self, identity: &Identity) -> Result<(UserRecord, TokenPair), ApiError> {
        if client_credentials::is_reserved_subject(&identity.provider_user_id) {
            // Its tokens would read as a service account's (`Tokens::authenticate`).
            return Err(ApiError::OAuth(
                axum::http::StatusCode::FORBIDDEN,
                "access_denied",
                "This identity's subject is reserved for service accounts".into(),
            ));
        }
        let idp_groups = provider_groups(identity);
        let user = self
            .store
            .upsert_login_user(&UserRecord {
                internal_uuid: Uuid::new_v4(),
                provider: identity.provider.clone(),
                provider_user_id: identity.provider_user_id.clone(),
                email: identity.email.clone(),
                name: identity.name.clone(),
                email_verified: identity.email_verified,
            })
            .await?;
        if identity.provider != "tmi" {
            self.store
                .set_provider_groups(user.internal_uuid, &identity.provider, &idp_groups)
                .await?;
        }
        self.apply_group_rules(&user).await?;
        let now = Utc::now().timestamp();
        let data = RefreshData {
            provider: user.provider.clone(),
            provider_user_id: user.provider_user_id.clone(),
            session_created: now,
            auth_time: now,
            family: Uuid::new_v4().to_string(),
            idp_groups,
        };
        let pair = self.issue(&user, &data.idp_groups, &data).await?;
        Ok((user, pair))
    }

    /// Auto-promotion of the first user, `TMI_AUTH_EVERYONE_IS_A_REVIEWER` and `TMI_ADMIN_*`.
    async fn apply_group_rules(&self, user: &UserRecord) -> Result<(), ApiError> {
        let c = &self.config;
        if c.auto_promote_first_user && self.store.group_member_count(groups::ADMINISTRATORS).await? == 0 {
            self.store
                .add_group_member(groups::ADMINISTRATORS, user.internal_uuid)
                .await?;
            self.store
                .add_group_member(groups::SECURITY_REVIEWERS, user.internal_uuid)
                .await?;
            tracing::info!(user.provider = %user.provider, "promoted the first user to administrator");
        }
        if c.everyone_is_a_reviewer {
            self.store
                .add_group_member(groups::SECURITY_REVIEWERS, user.internal_uuid)
                .await?;
        }
        for admin in &c.admins {
            let matches = admin.subject_type == "user"
                && admin.provider == user.provider
                && (admin.provider_id.as_deref() == Some(user.provider_user_id.as_str())
                    || admin
                        .email
                        .as_deref()
                        .is_some_and(|e| e.eq_ignore_ascii_case(&user.email)));
            if matches {
                self.store
                    .add_group_member(groups::ADMINISTRATORS, user.internal_uuid)
                    .await?;
            }
        }
        Ok(())
    }

    /// TMI-managed groups of a user plus admin groups granted through `TMI_ADMIN_SUBJECT_TYPE=group`.
    pub async fn group_names(
        &self,
        user: &UserRecord,
        idp_groups: &[String],
    ) -> Result<(Vec<GroupRecord>, Vec<String>), ApiError> {
        let managed = self.store.user_groups(user.internal_uuid).await?;
        let mut names: Vec<String> = idp_groups.to_vec();
        for g in &managed {
            if !names.contains(&g.group_name) {
                names.push(g.group_name.clone());
            }
        }
        for admin in &self.config.admins {
            if admin.subject_type == "group"
                && admin.provider == user.provider
                && admin.group_name.as_ref().is_some_and(|g| idp_groups.contains(g))
                && !admin::named_in(&names)
            {
                names.push(admin::GROUP_NAME.into());
            }
        }
        Ok((managed, names))
    }

    async fn issue(
        &self,
        user: &UserRecord,
        idp_groups: &[String],
        data: &RefreshData,
    ) -> Result<TokenPair, ApiError> {
        let (managed, names) = self.group_names(user, idp_groups).await?;
        // Roles come from TMI's own groups (and the configured admin groups), never from a group
        // name alone: a provider's group called `administrators` grants nothing.
        let is_admin = admin::among(&managed, &self.config.admins);
        let is_reviewer = managed
            .iter()
            .any(|g| g.internal_uuid == groups::SECURITY_REVIEWERS);
        let now = Utc::now().timestamp();
        let iss = self.config.issuer();
        let claims = Claims {
            aud: iss.clone(),
            iss,
            sub: user.provider_user_id.clone(),
            exp: now + self.config.jwt_expiration_seconds,
            iat: now,
            nbf: now,
            jti: Uuid::new_v4().to_string(),
            email: user.email.clone(),
            email_verified: user.email_verified,
            name: user.name.clone(),
            idp: user.provider.clone(),
            tmi_is_administrator: is_admin,
            tmi_is_security_reviewer: is_reviewer,
            groups: names,
            auth_time: data.auth_time,
            sid: Some(data.family.clone()),
        };
        let access_token = self.keys.sign(&claims)?;
        let refresh_token = Uuid::new_v4().to_string();
        let value = serde_json::to_string(data).map_err(ApiError::internal)?;
        self.kv
            .set(
                &format!("refresh_token:{refresh_token}"),
                &value,
                self.refresh_ttl(),
            )
            .await
            .map_err(kv_err)?;
        Ok(TokenPair {
            access_token,
            refresh_token,
            expires_in: self.config.jwt_expiration_seconds,
            token_type: "bearer",
        })
    }

    /// Single-use rotation with an absolute session lifetime. Presenting an already rotated token
    /// revokes its whole family (the legitimate holder's newer token too).
    pub async fn refresh(&self, token: &str) -> Result<TokenPair, ApiError> {
        let Some(raw) = self
            .kv
            .take(&format!("refresh_token:{token}"))
            .await
            .map_err(kv_err)?
        else {
            if let Some(family) = self
                .kv
                .get(&format!("refresh_used:{token}"))
                .await
                .map_err(kv_err)?
            {
                tracing::warn!("refresh token reuse detected; revoking the session");
                let until = Utc::now().timestamp() + self.family_lifetime();
                self.revocations.revoke(family_key(&family), until).await?;
            }
            return Err(invalid_grant("Invalid or expired refresh token"));
        };
        let data: RefreshData = serde_json::from_str(&raw).map_err(ApiError::internal)?;
        // The database, not the cache: a logout on another replica a moment ago counts.
        let now = Utc::now().timestamp();
        if self.store.is_revoked(&family_key(&data.family), now).await? {
            return Err(invalid_grant("Invalid or expired refresh token"));
        }
        self.kv
            .set(&format!("refresh_used:{token}"), &data.family, self.refresh_ttl())
            .await
            .map_err(kv_err)?;
        let lifetime = self.config.session_lifetime_days * 86_400;
        if now >= data.session_created + lifetime {
            return Err(invalid_grant("Session lifetime exceeded; sign in again"));
        }
        let user = self
            .store
            .find_user(&data.provider, &data.provider_user_id)
            .await?
            .ok_or_else(|| invalid_grant("Invalid or expired refresh token"))?;
        self.issue(&user, &data.idp_groups, &data).await
    }

    /// How long a family revocation must last: the absolute session lifetime plus the life of the
    /// last access token a refresh at its very end could mint.
    fn family_lifetime(&self) -> i64 {
        self.config.session_lifetime_days * 86_400 + self.config.jwt_expiration_seconds
    }

    /// Revokes a refresh token if `owner` holds it (RFC 7009: only its owner may), and with it
    /// every token of its login. Someone else's token is left alone, without saying so.
    pub async fn revoke_refresh(&self, token: &str, owner: &UserRecord) -> Result<(), ApiError> {
        let key = format!("refresh_token:{token}");
        let Some(raw) = self.kv.get(&key).await.map_err(kv_err)? else {
            return Ok(());
        };
        let Ok(data) = serde_json::from_str::<RefreshData>(&raw) else {
            return Ok(());
        };
        if data.provider != owner.provider || data.provider_user_id != owner.provider_user_id {
            return Ok(());
        }
        self.kv.delete(&key).await.map_err(kv_err)?;
        let until = data.auth_time + self.family_lifetime();
        self.revocations.revoke(family_key(&data.family), until).await?;
        Ok(())
    }

    /// Revokes an access token until it expires.
    pub async fn revoke_access(&self, token: &str, exp: i64) -> Result<(), ApiError> {
        self.revocations
            .revoke(token_key(&token_hash(token)), exp)
            .await?;
        Ok(())
    }

    /// Ends the login a token belongs to: the token, and every access and refresh token of its
    /// family (logout).
    pub async fn end_login(&self, token: &str, claims: &Claims) -> Result<(), ApiError> {
        self.revoke_access(token, claims.exp).await?;
        if let Some(family) = &claims.sid {
            let until = claims.auth_time + self.family_lifetime();
            self.revocations.revoke(family_key(family), until).await?;
        }
        Ok(())
    }

    /// Whether an access token (its hash and its family) is revoked. No IO.
    pub fn is_revoked(&self, token_hash: &str, family: Option<&str>) -> bool {
        self.revocations.is_revoked(&token_key(token_hash))
            || family.is_some_and(|f| self.revocations.is_revoked(&family_key(f)))
    }

    /// Verifies an access token and loads its user; `None` when invalid, revoked or unknown. A
    /// service account's token (`client_credentials`) loads the credential's owner, unless the
    /// credential was deleted (checked in memory, like every revocation).
    pub async fn authenticate(&self, token: &str) -> Result<Option<AuthUser>, ApiError> {
        let Some(claims) = self.keys.verify(token) else {
            return Ok(None);
        };
        if self.is_revoked(&token_hash(token), claims.sid.as_deref()) {
            return Ok(None);
        }
        let subject = match client_credentials::parse_subject(&claims.sub) {
            Some((credential, _)) if self.revocations.is_revoked(&credential_key(&credential)) => {
                return Ok(None);
            }
            Some((_, owner)) => owner,
            None => claims.sub.as_str(),
        };
        let Some(user) = self.store.find_user(&claims.idp, subject).await? else {
            return Ok(None);
        };
        Ok(Some(AuthUser {
            user,
            claims,
            token: token.to_owned(),
        }))
    }
}

/// `Set-Cookie` values for a token pair.
pub fn token_cookies(config: &Config, pair: &TokenPair) -> Vec<String> {
    let common = cookie_attrs(config);
    vec![
        format!(
            "{ACCESS_COOKIE}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{common}",
            pair.access_token, pair.expires_in
        ),
        format!(
            "{REFRESH_COOKIE}={}; Path={}; Max-Age={}; HttpOnly; SameSite=Strict{common}",
            pair.refresh_token,
            config.refresh_cookie_path,
            config.refresh_token_days * 86_400
        ),
    ]
}

/// `Set-Cookie` values that clear both cookies.
pub fn clear_cookies(config: &Config) -> Vec<String> {
    let common = cookie_attrs(config);
    vec![
        format!("{ACCESS_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax{common}"),
        format!(
            "{REFRESH_COOKIE}=; Path={}; Max-Age=0; HttpOnly; SameSite=Strict{common}",
            config.refresh_cookie_path
        ),
    ]
}

fn cookie_attrs(config: &Config) -> String {
    let mut s = String::new();
    if config.cookie_secure {
        s.push_str("; Secure");
    }
    if let Some(d) = &config.cookie_domain {
        s.push_str("; Domain=");
        s.push_str(d);
    }
    s
}

/// The value of one cookie in a `Cookie` header.
pub fn cookie_value(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp_offset: i64) -> Claims {
        let now = Utc::now().timestamp();
        Claims {
            iss: "http://x".into(),
            aud: "http://x".into(),
            sub: "alice".into(),
            exp: now + exp_offset,
            iat: now,
            nbf: now,
            jti: "j".into(),
            email: "alice@tmi.local".into(),
            email_verified: false,
            name: "Alice".into(),
            idp: "tmi".into(),
            groups: vec![],
            tmi_is_administrator: false,
            tmi_is_security_reviewer: false,
            auth_time: now,
            sid: None,
        }
    }

    #[test]
    fn jwt_round_trip_and_rejections() {
        let keys = JwtKeys::new(b"0123456789abcdef0123").unwrap();
        let token = keys.sign(&claims(60)).unwrap();
        assert_eq!(keys.verify(&token).unwrap().sub, "alice");
        assert!(
            keys.verify(&keys.sign(&claims(-120)).unwrap()).is_none(),
            "expired"
        );
        assert!(
            JwtKeys::new(b"another-secret-entirely")
                .unwrap()
                .verify(&token)
                .is_none(),
            "wrong key"
        );
        // alg: none
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let body = b64.encode(serde_json::to_vec(&claims(60)).unwrap());
        let none = format!("{}.{body}.", b64.encode(br#"{"alg":"none","typ":"JWT"}"#));
        assert!(keys.verify(&none).is_none(), "alg none");
    }

    #[test]
    fn cookie_parsing() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            "a=1; tmi_access_token=tok; b=2".parse().unwrap(),
        );
        assert_eq!(cookie_value(&h, ACCESS_COOKIE).as_deref(), Some("tok"));
        assert_eq!(cookie_value(&h, REFRESH_COOKIE), None);
    }
}
