//! Identity providers behind one trait: the built-in `tmi` dev provider (tmi-compat.md §4.4), here,
//! and external OAuth 2.0 / OIDC providers (`oauth`). Pure for `TmiProvider`.

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;

use crate::error::ApiError;

/// What `/oauth2/providers` shows for a provider.
#[derive(Debug, Clone)]
pub struct ProviderInfo {
    pub id: String,
    pub name: String,
    pub icon: String,
    pub client_id: String,
}

/// An authenticated identity, as the provider reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub provider: String,
    pub provider_user_id: String,
    pub email: String,
    pub name: String,
    pub email_verified: bool,
    /// Groups asserted by the IdP.
    pub groups: Vec<String>,
}

/// PKCE's S256 code challenge of `verifier` (RFC 7636 §4.2): base64url(sha256(verifier)).
pub fn pkce_s256(verifier: &str) -> String {
    use sha2::Digest;
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

/// Secrets of one sign-in towards an external provider, kept server-side with its `state`: the
/// PKCE verifier of the provider leg and, for OpenID Connect, the `nonce` the id_token must carry.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FlowSecrets {
    pub code_verifier: String,
    pub nonce: Option<String>,
}

/// How an authorization request continues.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthorizeStart {
    /// The provider issued a code at once (dev provider): redirect to the client callback with it.
    Code(String),
    /// Redirect the browser to the IdP's authorization page; `flow` is kept with the state.
    Redirect { url: String, flow: FlowSecrets },
}

/// An identity provider.
#[async_trait]
pub trait IdentityProvider: Send + Sync {
    fn info(&self) -> ProviderInfo;
    /// Starts an authorization; `callback_url` is TMI's own `/oauth2/callback`.
    async fn authorize(
        &self,
        state: &str,
        login_hint: Option<&str>,
        callback_url: &str,
    ) -> Result<AuthorizeStart, ApiError>;
    /// Exchanges a code for the user's identity; `login_hint` is the one given at authorize.
    async fn exchange(&self, code: &str, login_hint: Option<&str>) -> Result<Identity, ApiError>;
    /// Completes a sign-in at an external provider: the provider's code (back at
    /// `/oauth2/callback`) is exchanged and the identity read and verified.
    async fn complete(
        &self,
        _code: &str,
        _flow: &FlowSecrets,
        _callback_url: &str,
    ) -> Result<Identity, ApiError> {
        Err(ApiError::OAuth(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_request",
            "This provider does not redirect to an identity provider".into(),
        ))
    }
}

/// The built-in `tmi` provider: no IdP, the identity comes from `login_hint`.
pub struct TmiProvider;

/// `^[a-z0-9-]{3,20}$`, not starting or ending with `-`.
pub fn valid_hint(hint: &str) -> bool {
    (3..=20).contains(&hint.len())
        && hint
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !hint.starts_with('-')
        && !hint.ends_with('-')
}

/// `alice` → `Alice (TMI User)`, `test-user` → `Test User (TMI User)`.
pub fn display_name(hint: &str) -> String {
    let words: Vec<String> = hint
        .split('-')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
                None => String::new(),
            }
        })
        .collect();
    format!("{} (TMI User)", words.join(" "))
}

#[async_trait]
impl IdentityProvider for TmiProvider {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            id: "tmi".into(),
            name: "TMI Provider".into(),
            icon: "/static/provider-logos/signin/tmi.svg".into(),
            client_id: "tmi-client".into(),
        }
    }

    async fn authorize(
        &self,
        _state: &str,
        login_hint: Option<&str>,
        _callback: &str,
    ) -> Result<AuthorizeStart, ApiError> {
        let now = chrono::Utc::now().timestamp();
        // Random suffix: upstream's one-second codes collide for parallel logins of one user.
        let nonce: u64 = rand::rng().random();
        let code = match login_hint {
            Some(h) => format!(
                "test_auth_code_{now}_hint_{}_{nonce:016x}",
                URL_SAFE_NO_PAD.encode(h)
            ),
            None => format!("test_auth_code_{now}_{nonce:016x}"),
        };
        Ok(AuthorizeStart::Code(code))
    }

    async fn exchange(&self, _code: &str, login_hint: Option<&str>) -> Result<Identity, ApiError> {
        let hint = login_hint
            .map(str::to_lowercase)
            .filter(|h| valid_hint(h))
            .unwrap_or_else(|| {
                let n: u32 = rand::rng().random_range(0..100_000_000);
                format!("testuser-{n:08}")
            });
        Ok(Identity {
            provider: "tmi".into(),
            email: format!("{hint}@tmi.local"),
            name: display_name(&hint),
            provider_user_id: hint,
            email_verified: false,
            groups: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn identity_from_hint() {
        let id = TmiProvider.exchange("c", Some("Alice")).await.unwrap();
        assert_eq!(
            (id.provider_user_id.as_str(), id.email.as_str()),
            ("alice", "alice@tmi.local")
        );
        assert_eq!(id.name, "Alice (TMI User)");
        assert_eq!(display_name("test-user"), "Test User (TMI User)");
        let anon = TmiProvider.exchange("c", Some("-bad")).await.unwrap();
        assert!(anon.provider_user_id.starts_with("testuser-"));
        assert!(!valid_hint("ab") && !valid_hint("a_b_c") && valid_hint("charlie"));
    }

    #[tokio::test]
    async fn codes_are_unique() {
        let a = TmiProvider.authorize("s", Some("bob"), "").await.unwrap();
        let b = TmiProvider.authorize("s", Some("bob"), "").await.unwrap();
        assert_ne!(a, b);
    }
}
