//! OAuth 2.0 client credentials (tmi-compat.md §4.1, "Machine auth"): a user's machine identities.
//! A credential is created under `/me/client_credentials` (its secret shown that once) and
//! exchanged at `POST /oauth2/token` (`grant_type=client_credentials`) for an access token of a
//! service account of its owner: `sub = "sa:<credential id>:<owner's provider user id>"`, the
//! owner's identity provider and groups, never administrator, no refresh token. `Tokens::authenticate`
//! resolves such a token to the owner's user row; deleting the credential revokes every token it
//! granted (a `revocations` key, so the per-request check stays free of IO), and no token it grants
//! outlives the credential's `expires_at`.
//!
//! Secrets are 256-bit random values, so the database keeps their SHA-256 and compares digests in
//! constant time: a slow password hash only protects guessable passwords, and would hand callers a
//! CPU lever. Failed grants are counted per `client_id` in the token store, which replicas share:
//! `MAX_FAILURES` within `FAILURE_WINDOW` lock the client id out for `LOCKOUT` (429, `Retry-After`).
//!
//! IO: the store, the token store and the revocations, all reached through `Tokens`.

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, SubsecRound, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::revocations::credential_key;
use super::tokens::{AuthUser, Claims, TokenPair, Tokens, kv_err, random_token, token_hash};
use crate::domain::{admin, wire};
use crate::error::ApiError;
use crate::store::{ClientCredentialRecord, StoreError, groups};

/// Every client id starts with this (the contract's pattern `^tmi_cc_[A-Za-z0-9_-]+$`).
pub const CLIENT_ID_PREFIX: &str = "tmi_cc_";
/// Every secret starts with this, so that a leaked one is recognisable (secret scanners).
const SECRET_PREFIX: &str = "tmi_cs_";
/// Random bytes in a secret: 256 bits, beyond any guessing.
const SECRET_BYTES: usize = 32;
/// Random bytes in a client id: not a secret, but unique and not enumerable.
const CLIENT_ID_BYTES: usize = 18;
/// The longest client id looked up or counted; longer ones are refused unseen.
const CLIENT_ID_MAX: usize = 64;
/// The subject prefix of service-account tokens.
const SUBJECT_PREFIX: &str = "sa:";
/// Credentials one user may hold (upstream's default quota); more is 403 `quota_exceeded`.
pub const QUOTA: usize = 10;
/// Failed grants for one client id that lock it out…
pub const MAX_FAILURES: i64 = 5;
/// …when they fall within this window, counted from the first of them.
const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// How long a lockout lasts. Grants asked for meanwhile are refused without being checked or
/// counted, so they neither probe the secret nor prolong the lockout: an attacker keeps a client
/// locked only by failing again after each lockout, and must know its client id to do so.
pub const LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// Added to the revocation of a deleted credential, beyond the life of its last token: the
/// verification leeway and clock skew between replicas.
const REVOCATION_MARGIN: i64 = 60;
/// Longest name and description (the contract's `maxLength`).
const NAME_MAX: usize = 100;
const DESCRIPTION_MAX: usize = 500;

/// The subject of a token `credential` grants to its owner.
pub fn subject(credential: &Uuid, owner_provider_user_id: &str) -> String {
    format!("{SUBJECT_PREFIX}{credential}:{owner_provider_user_id}")
}

/// The credential and the owner's provider user id of a service-account subject.
pub fn parse_subject(sub: &str) -> Option<(Uuid, &str)> {
    let (id, owner) = sub.strip_prefix(SUBJECT_PREFIX)?.split_once(':')?;
    Some((Uuid::parse_str(id).ok()?, owner))
}

/// Whether an identity provider's subject would read as a service account's: such identities
/// cannot sign in, so that no interactive token passes for one.
pub fn is_reserved_subject(provider_user_id: &str) -> bool {
    provider_user_id.starts_with(SUBJECT_PREFIX)
}

/// The body of `POST /me/client_credentials` (unknown fields are refused, as upstream does).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
}

/// A validated creation request.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCredential {
    pub name: String,
    pub description: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl NewCredential {
    /// Checks a creation body: a name that is not blank, lengths, no control or invisible
    /// formatting characters, an expiry in the future.
    pub fn validate(body: &Value, now: DateTime<Utc>) -> Result<Self, ApiError> {
        let b: CreateBody = serde_json::from_value(body.clone())
            .map_err(|e| ApiError::invalid(format!("Invalid request body: {e}")))?;
        check_text("name", &b.name, NAME_MAX)?;
        if b.name.trim().is_empty() {
            return Err(ApiError::invalid("name must not be blank"));
        }
        if let Some(d) = &b.description {
            check_text("description", d, DESCRIPTION_MAX)?;
        }
        let expires_at = match b.expires_at {
            None => None,
            Some(s) => {
                let at = DateTime::parse_from_rfc3339(&s)
                    .map_err(|_| ApiError::invalid("expires_at must be an RFC 3339 date-time"))?
                    .with_timezone(&Utc)
                    .trunc_subsecs(6);
                if at <= now {
                    return Err(ApiError::invalid("expires_at must be in the future"));
                }
                Some(at)
            }
        };
        Ok(Self {
            name: b.name,
            description: b.description.filter(|d| !d.is_empty()),
            expires_at,
        })
    }
}

fn check_text(field: &str, s: &str, max: usize) -> Result<(), ApiError> {
    if s.chars().count() > max {
        return Err(ApiError::invalid(format!(
            "{field} must be at most {max} characters"
        )));
    }
    if s.chars().any(|c| c.is_control() || is_invisible(c)) {
        return Err(ApiError::invalid(format!(
            "{field} must not contain control or invisible formatting characters"
        )));
    }
    Ok(())
}

/// Zero-width and bidirectional formatting characters, which make a name read as another.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// A new credential and its secret, which exists nowhere else.
pub struct Created {
    pub record: ClientCredentialRecord,
    pub secret: String,
}

/// Creates a credential for the caller. The contract reserves this to administrators and security
/// reviewers (memberships read from the database, administrators by `admin::among`) and refuses
/// service accounts.
pub async fn create(tokens: &Tokens, caller: &AuthUser, body: &Value) -> Result<Created, ApiError> {
    if caller.is_service_account() {
        return Err(ApiError::forbidden(
            "Service accounts cannot create client credentials",
        ));
    }
    let store = tokens.store.as_ref();
    let owner = caller.user.internal_uuid;
    let memberships = store.user_groups(owner).await?;
    // Administrators as everywhere (admin::among: the built-in group or a configured provider group).
    let privileged = admin::among(&memberships, &tokens.config.admins)
        || memberships
            .iter()
            .any(|g| g.internal_uuid == groups::SECURITY_REVIEWERS);
    if !privileged {
        return Err(ApiError::forbidden(
            "Creating client credentials requires the administrator or security reviewer role",
        ));
    }
    let now = wire::now();
    let new = NewCredential::validate(body, now)?;
    if store.client_credentials_of(owner).await?.len() >= QUOTA {
        return Err(ApiError::OAuth(
            StatusCode::FORBIDDEN,
            "quota_exceeded",
            format!("A user may hold at most {QUOTA} client credentials; delete one first"),
        ));
    }
    let secret = format!("{SECRET_PREFIX}{}", random_token(SECRET_BYTES));
    let record = ClientCredentialRecord {
        id: Uuid::new_v4(),
        owner_uuid: owner,
        client_id: format!("{CLIENT_ID_PREFIX}{}", random_token(CLIENT_ID_BYTES)),
        secret_sha256: token_hash(&secret),
        name: new.name,
        description: new.description,
        created_at: now,
        modified_at: now,
        expires_at: new.expires_at,
        last_used_at: None,
    };
    store.insert_client_credential(&record).await?;
    tracing::info!(
        client_credential.id = %record.id,
        client_id = %record.client_id,
        user.provider = %caller.user.provider,
        "client credential created"
    );
    Ok(Created { record, secret })
}

/// The caller's credentials, oldest first (never their secrets, which are not kept).
pub async fn list(tokens: &Tokens, caller: &AuthUser) -> Result<Vec<ClientCredentialRecord>, ApiError> {
    Ok(tokens
        .store
        .client_credentials_of(caller.user.internal_uuid)
        .await?)
}

fn not_found() -> ApiError {
    ApiError::NotFound("Client credential not found or not owned by user".into())
}

/// Deletes one of the caller's credentials (someone else's is 404, like a missing one) and
/// revokes every token it granted: the revocation is recorded first, so a failure leaves the
/// credential listed (to delete again) rather than its tokens alive.
pub async fn delete(tokens: &Tokens, caller: &AuthUser, id: Uuid) -> Result<(), ApiError> {
    let owner = caller.user.internal_uuid;
    let owned = tokens
        .store
        .client_credentials_of(owner)
        .await?
        .iter()
        .any(|c| c.id == id);
    if !owned {
        return Err(not_found());
    }
    let until = Utc::now().timestamp() + tokens.config.jwt_expiration_seconds + REVOCATION_MARGIN;
    tokens.revocations.revoke(credential_key(&id), until).await?;
    match tokens.store.delete_client_credential(id, owner).await {
        // Deleted meanwhile by another request: gone either way.
        Ok(()) | Err(StoreError::NotFound) => {}
        Err(e) => return Err(e.into()),
    }
    tracing::info!(client_credential.id = %id, "client credential deleted; its tokens are revoked");
    Ok(())
}

/// `ClientCredentialInfo`: everything but the secret.
pub fn info_json(c: &ClientCredentialRecord, now: DateTime<Utc>) -> Value {
    let mut v = json!({
        "id": c.id,
        "client_id": c.client_id,
        "name": c.name,
        "is_active": c.expires_at.is_none_or(|e| e > now),
        "created_at": wire::rfc3339(&c.created_at),
        "modified_at": wire::rfc3339(&c.modified_at),
    });
    if let Some(d) = &c.description {
        v["description"] = json!(d);
    }
    if let Some(at) = &c.expires_at {
        v["expires_at"] = json!(wire::rfc3339(at));
    }
    if let Some(at) = &c.last_used_at {
        v["last_used_at"] = json!(wire::rfc3339(at));
    }
    v
}

/// `ClientCredentialResponse`: the new credential with its secret.
pub fn created_json(c: &Created) -> Value {
    let r = &c.record;
    let mut v = json!({
        "id": r.id,
        "client_id": r.client_id,
        "client_secret": c.secret,
        "name": r.name,
        "created_at": wire::rfc3339(&r.created_at),
    });
    if let Some(d) = &r.description {
        v["description"] = json!(d);
    }
    if let Some(at) = &r.expires_at {
        v["expires_at"] = json!(wire::rfc3339(at));
    }
    v
}

/// How a client authenticated at the token endpoint (RFC 6749 §2.3.1). Deliberately not `Debug`:
/// it holds the secret.
pub struct ClientAuth {
    pub client_id: String,
    secret: String,
    /// Through `Authorization: Basic`, which a refusal must challenge (RFC 6749 §5.2).
    pub basic: bool,
}

/// 401 `invalid_client`, the same whatever was wrong, so that it tells nothing about the client.
pub fn invalid_client() -> ApiError {
    ApiError::OAuth(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "Client authentication failed".into(),
    )
}

fn invalid_request(msg: &str) -> ApiError {
    ApiError::OAuth(StatusCode::BAD_REQUEST, "invalid_request", msg.to_owned())
}

impl ClientAuth {
    /// The client's credentials from HTTP Basic authentication or from the body's `client_id` and
    /// `client_secret`; using both at once is refused (RFC 6749 §2.3).
    pub fn from_request(
        headers: &HeaderMap,
        client_id: Option<String>,
        client_secret: Option<String>,
    ) -> Result<Self, ApiError> {
        let in_body = client_id.is_some() || client_secret.is_some();
        if let Some((client_id, secret)) = basic_credentials(headers)? {
            if in_body {
                return Err(invalid_request(
                    "Authenticate the client once: HTTP Basic or client_id and client_secret in the body",
                ));
            }
            return Ok(Self {
                client_id,
                secret,
                basic: true,
            });
        }
        match (
            client_id.filter(|s| !s.is_empty()),
            client_secret.filter(|s| !s.is_empty()),
        ) {
            (Some(client_id), Some(secret)) => Ok(Self {
                client_id,
                secret,
                basic: false,
            }),
            _ => Err(invalid_request("Missing client_id or client_secret parameter")),
        }
    }
}

/// `Authorization: Basic base64(urlencode(client_id) ":" urlencode(client_secret))`; `None` without
/// a Basic header; a malformed one is `invalid_client`.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let Some((scheme, encoded)) = value.to_str().ok().and_then(|v| v.split_once(' ')) else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(invalid_client)?;
    let (id, secret) = decoded.split_once(':').ok_or_else(invalid_client)?;
    match (form_decode(id), form_decode(secret)) {
        (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => Ok(Some((id, secret))),
        _ => Err(invalid_client()),
    }
}

/// One `application/x-www-form-urlencoded` value (`+` and `%XX`); `None` when it is not one.
fn form_decode(s: &str) -> Option<String> {
    if s.contains(['&', '=']) {
        return None;
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&format!("{s}=")).ok()?;
    pairs.into_iter().next().map(|(k, _)| k).or(Some(String::new()))
}

/// Whether `client_id` could be one this server issued; others are refused without a lookup and
/// without touching the failure counters.
fn well_formed(client_id: &str) -> bool {
    client_id.len() <= CLIENT_ID_MAX
        && client_id.strip_prefix(CLIENT_ID_PREFIX).is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn failures_key(client_id: &str) -> String {
    format!("client_credentials:failures:{client_id}")
}

fn lockout_key(client_id: &str) -> String {
    format!("client_credentials:locked:{client_id}")
}

fn locked(seconds: u64) -> ApiError {
    ApiError::TooManyRequests(
        "Too many failed authentication attempts; retry later".into(),
        seconds,
    )
}

/// Seconds left of a lockout of `client_id`, if one is running.
async fn locked_for(tokens: &Tokens, client_id: &str) -> Result<Option<u64>, ApiError> {
    let Some(until) = tokens.kv.get(&lockout_key(client_id)).await.map_err(kv_err)? else {
        return Ok(None);
    };
    let left = until.parse::<i64>().unwrap_or(0) - Utc::now().timestamp();
    Ok(u64::try_from(left).ok().filter(|s| *s > 0))
}

/// Counts a failed grant; returns the lockout's length when this failure starts one.
async fn record_failure(tokens: &Tokens, client_id: &str) -> Result<Option<u64>, ApiError> {
    let failures = tokens
        .kv
        .incr(&failures_key(client_id), FAILURE_WINDOW)
        .await
        .map_err(kv_err)?;
    if failures < MAX_FAILURES {
        return Ok(None);
    }
    let until = Utc::now().timestamp() + LOCKOUT.as_secs() as i64;
    tokens
        .kv
        .set(&lockout_key(client_id), &until.to_string(), LOCKOUT)
        .await
        .map_err(kv_err)?;
    // The lockout replaces the count: once it ends, the client has a fresh window.
    tokens.kv.delete(&failures_key(client_id)).await.map_err(kv_err)?;
    tracing::warn!(
        client_id,
        failures,
        "client id locked out after repeated failed grants"
    );
    Ok(Some(LOCKOUT.as_secs()))
}

/// The `client_credentials` grant: checks the lockout, then the client, and mints a token for a
/// service account of the credential's owner. Every refusal of the client itself is the same 401
/// `invalid_client` (unknown id, wrong secret, expired credential) and counts towards the lockout.
pub async fn grant(tokens: &Tokens, client: &ClientAuth) -> Result<TokenPair, ApiError> {
    if !well_formed(&client.client_id) {
        return Err(invalid_client());
    }
    if let Some(left) = locked_for(tokens, &client.client_id).await? {
        return Err(locked(left));
    }
    let now = Utc::now();
    let presented = token_hash(&client.secret);
    let credential = tokens
        .store
        .client_credential_by_client_id(&client.client_id)
        .await?
        .filter(|c| {
            bool::from(c.secret_sha256.as_bytes().ct_eq(presented.as_bytes()))
                && c.expires_at.is_none_or(|e| e > now)
        });
    let Some(credential) = credential else {
        return Err(match record_failure(tokens, &client.client_id).await? {
            Some(lockout) => locked(lockout),
            None => invalid_client(),
        });
    };
    tokens
        .kv
        .delete(&failures_key(&client.client_id))
        .await
        .map_err(kv_err)?;
    let owner = tokens
        .store
        .get_user(credential.owner_uuid)
        .await?
        .ok_or_else(invalid_client)?;
    let (_, names) = tokens.group_names(&owner, &[]).await?;
    // Administration needs an interactive sign-in (upstream): a service account never carries it.
    let groups: Vec<String> = names.into_iter().filter(|n| n != admin::GROUP_NAME).collect();
    let issued = now.timestamp();
    let mut exp = issued + tokens.config.jwt_expiration_seconds;
    if let Some(end) = credential.expires_at {
        exp = exp.min(end.timestamp());
    }
    let iss = tokens.config.issuer();
    let claims = Claims {
        aud: iss.clone(),
        iss,
        sub: subject(&credential.id, &owner.provider_user_id),
        exp,
        iat: issued,
        nbf: issued,
        jti: Uuid::new_v4().to_string(),
        email: owner.email.clone(),
        email_verified: owner.email_verified,
        name: format!("[Service Account] {}", credential.name),
        idp: owner.provider.clone(),
        tmi_is_administrator: false,
        tmi_is_security_reviewer: groups.iter().any(|g| g == "security-reviewers"),
        groups,
        auth_time: issued,
        sid: None,
    };
    let access_token = tokens.keys.sign(&claims)?;
    if let Err(e) = tokens
        .store
        .touch_client_credential(credential.id, wire::now())
        .await
    {
        // The token is good; only the "last used" time is stale.
        tracing::warn!(error = %e, client_credential.id = %credential.id, "recording a credential's use failed");
    }
    tracing::info!(client_credential.id = %credential.id, "service account token issued");
    Ok(TokenPair {
        access_token,
        // The contract requires the member and upstream sends it empty: RFC 6749 §4.4.3 grants no
        // refresh token to a client that can authenticate again.
        refresh_token: String::new(),
        expires_in: exp - issued,
        token_type: "bearer",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip() {
        let id = Uuid::new_v4();
        let sub = subject(&id, "alice:with:colons");
        assert_eq!(parse_subject(&sub), Some((id, "alice:with:colons")));
        assert_eq!(parse_subject("alice"), None);
        assert_eq!(parse_subject("sa:not-a-uuid:alice"), None);
        assert!(is_reserved_subject(&sub));
        assert!(!is_reserved_subject("alice"));
    }

    #[test]
    fn generated_values_have_the_contract_shape() {
        let secret = random_token(SECRET_BYTES);
        assert_eq!(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&secret)
                .unwrap()
                .len(),
            32,
            "256 bits"
        );
        assert_ne!(secret, random_token(SECRET_BYTES));
        let id = format!("{CLIENT_ID_PREFIX}{}", random_token(CLIENT_ID_BYTES));
        assert!(well_formed(&id), "{id}");
        assert!(!well_formed("tmi_cc_"));
        assert!(!well_formed("other_abc"));
        assert!(!well_formed("tmi_cc_a b"));
        assert!(!well_formed(&format!("tmi_cc_{}", "a".repeat(CLIENT_ID_MAX))));
        // Known-answer SHA-256 (of "abc").
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn creation_bodies_are_validated() {
        let now = Utc::now();
        let ok = NewCredential::validate(
            &json!({"name": "CI", "description": "", "expires_at": "2999-01-01T00:00:00Z"}),
            now,
        )
        .unwrap();
        assert_eq!(ok.description, None, "an empty description is none");
        assert!(ok.expires_at.is_some());
        for bad in [
            json!({"name": "   "}),
            json!({"name": "a\u{200B}b"}),
            json!({"name": "a\u{7}b"}),
            json!({"name": "x".repeat(101)}),
            json!({"name": "CI", "description": "d".repeat(501)}),
            json!({"name": "CI", "expires_at": "2000-01-01T00:00:00Z"}),
            json!({"name": "CI", "expires_at": "tomorrow"}),
            json!({"name": "CI", "owner": "someone-else"}),
        ] {
            let e = NewCredential::validate(&bad, now).unwrap_err();
            assert_eq!(e.status_and_code().0, StatusCode::BAD_REQUEST, "{bad}");
        }
        assert!(NewCredential::validate(&json!({"name": "é".repeat(100)}), now).is_ok());
    }

    fn basic(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn client_authentication_methods() {
        let encoded = STANDARD.encode("tmi_cc_abc:tmi_cs_s%2Bx+y");
        let a = ClientAuth::from_request(&basic(&format!("Basic {encoded}")), None, None).unwrap();
        assert_eq!(a.client_id, "tmi_cc_abc");
        assert_eq!(a.secret, "tmi_cs_s+x y", "form-decoded (RFC 6749 §2.3.1)");
        assert!(a.basic);
        let b = ClientAuth::from_request(&HeaderMap::new(), Some("id".into()), Some("s".into())).unwrap();
        assert!(!b.basic);
        // Both methods at once, one part missing, a malformed header.
        let both = ClientAuth::from_request(&basic(&format!("basic {encoded}")), Some("id".into()), None);
        assert_eq!(both.err().unwrap().status_and_code().1, "invalid_request");
        let missing = ClientAuth::from_request(&HeaderMap::new(), Some("id".into()), None);
        assert_eq!(missing.err().unwrap().status_and_code().1, "invalid_request");
        for bad in ["Basic !!!", "Basic dG1pX2NjX2FiYw=="] {
            let e = ClientAuth::from_request(&basic(bad), None, None).err().unwrap();
            assert_eq!(e.status_and_code(), (StatusCode::UNAUTHORIZED, "invalid_client"));
        }
        // A bearer token is not client authentication.
        let bearer = ClientAuth::from_request(&basic("Bearer x"), None, None);
        assert_eq!(bearer.err().unwrap().status_and_code().1, "invalid_request");
    }
}
