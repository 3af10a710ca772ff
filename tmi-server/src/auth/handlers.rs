//! OAuth 2.0 endpoints and discovery documents (tmi-compat.md §4, Part B §2). Thin handlers over
//! `Tokens`, the providers and the store; the routes are in `auth::router`.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::provider::{AuthorizeStart, FlowSecrets, Identity, pkce_s256};
use super::tokens::{
    AuthUser, MaybeAuthUser, REFRESH_COOKIE, TokenPair, clear_cookies, cookie_value, kv_err, random_token,
    token_cookies, with_cookies,
};
use crate::error::ApiError;
use crate::extract::{MaybeJsonBody, Query, RawBody};
use crate::public_url::base_url;
use crate::state::AppState;

/// How long an authorization code or OAuth state stays valid.
const FLOW_TTL: Duration = Duration::from_secs(600);

fn bad_request(msg: &str) -> ApiError {
    ApiError::OAuth(StatusCode::BAD_REQUEST, "invalid_request", msg.to_owned())
}

fn token_response(state: &AppState, pair: TokenPair) -> Response {
    let cookies = if state.config.cookie_enabled {
        token_cookies(&state.config, &pair)
    } else {
        vec![]
    };
    let mut res = with_cookies(Json(&pair).into_response(), cookies);
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// `GET /oauth2/providers`.
pub async fn providers(State(state): State<AppState>, headers: HeaderMap) -> Json<Value> {
    let base = base_url(&state.config, &headers);
    let mut list: Vec<Value> = state
        .providers
        .iter()
        .map(|p| {
            let i = p.info();
            json!({
                "id": i.id,
                "name": i.name,
                "icon": i.icon,
                "auth_url": format!("{base}/oauth2/authorize?idp={}", i.id),
                "token_url": format!("{base}/oauth2/token?idp={}", i.id),
                "redirect_uri": state.config.oauth_callback_url,
                "client_id": i.client_id,
            })
        })
        .collect();
    list.sort_by_key(|p| p["name"].as_str().unwrap_or_default().to_owned());
    Json(json!({ "providers": list }))
}

/// `GET /saml/providers`: SAML is not configured.
pub async fn saml_providers() -> Json<Value> {
    Json(json!({ "providers": [] }))
}

#[derive(Default)]
pub struct AuthorizeQuery {
    idp: Option<String>,
    scope: Option<String>,
    response_type: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    client_callback: Option<String>,
    state: Option<String>,
    login_hint: Option<String>,
}

/// Exact match, or prefix match for entries ending in `*`.
pub fn callback_allowed(allowlist: &[String], callback: &str) -> bool {
    allowlist.iter().any(|a| match a.strip_suffix('*') {
        Some(prefix) => callback.starts_with(prefix),
        None => a == callback,
    })
}

/// What a TMI authorization code stands for until `/oauth2/token` redeems it (`pkce:<code>`).
#[derive(Serialize, Deserialize)]
struct PkceBinding {
    provider: String,
    challenge: String,
    login_hint: Option<String>,
    client_callback: String,
    /// The identity an external provider vouched for at `/oauth2/callback`; `None` for `tmi`.
    #[serde(default)]
    identity: Option<Identity>,
}

/// A sign-in in progress at an external provider (`oauth_state:<state>`, single use): the client's
/// side of the flow and the provider leg's secrets.
#[derive(Serialize, Deserialize)]
struct ProviderLeg {
    provider: String,
    challenge: String,
    login_hint: Option<String>,
    client_callback: String,
    client_state: String,
    flow: FlowSecrets,
}

/// `callback` with `params` appended to its query.
fn with_query(callback: &str, params: &[(&str, &str)]) -> String {
    let sep = if callback.contains('?') { '&' } else { '?' };
    let q: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect();
    format!("{callback}{sep}{}", q.join("&"))
}

/// `GET /oauth2/authorize`: validates the request; the `tmi` provider mints a code and redirects
/// straight to the client callback.
pub async fn authorize(
    State(state): State<AppState>,
    Query(raw): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    // Parsed by hand so that repeated parameters are a 400 with TMI's body, not a plain-text rejection.
    let mut q = AuthorizeQuery::default();
    for (k, v) in raw {
        let slot = match k.as_str() {
            "idp" => &mut q.idp,
            "scope" => &mut q.scope,
            "response_type" => &mut q.response_type,
            "code_challenge" => &mut q.code_challenge,
            "code_challenge_method" => &mut q.code_challenge_method,
            "client_callback" => &mut q.client_callback,
            "state" => &mut q.state,
            "login_hint" => &mut q.login_hint,
            _ => continue,
        };
        if slot.is_some() {
            return Err(bad_request(&format!("Parameter {k} is repeated")));
        }
        *slot = Some(v);
    }
    let idp = match q.idp.filter(|s| !s.is_empty()) {
        Some(idp) => idp,
        None if state.config.build_mode.is_dev_or_test() => "tmi".to_owned(),
        None => return Err(bad_request("Missing required parameter: idp")),
    };
    let provider = state
        .provider(&idp)
        .ok_or_else(|| bad_request("Unknown identity provider"))?;
    let scope = q.scope.unwrap_or_default();
    let scopes: Vec<&str> = scope.split(' ').filter(|s| !s.is_empty()).collect();
    if !scopes.contains(&"openid") || scopes.iter().any(|s| !["openid", "profile", "email"].contains(s)) {
        return Err(bad_request(
            "scope must include openid (allowed: openid profile email)",
        ));
    }
    if q.response_type.as_deref().is_some_and(|r| r != "code") {
        return Err(bad_request("Only response_type=code is supported"));
    }
    let challenge = q.code_challenge.unwrap_or_default();
    let valid_challenge = (43..=128).contains(&challenge.len())
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' || b == b'~');
    if !valid_challenge {
        return Err(bad_request("code_challenge is required (43-128 characters)"));
    }
    if q.code_challenge_method.as_deref() != Some("S256") {
        return Err(bad_request("code_challenge_method must be S256"));
    }
    let callback = q.client_callback.unwrap_or_default();
    if callback.is_empty() {
        return Err(bad_request("Missing required parameter: client_callback"));
    }
    if !callback_allowed(&state.config.client_callback_allowlist, &callback) {
        return Err(bad_request("client_callback is not in the allowlist"));
    }
    let oauth_state = q
        .state
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let login_hint = q.login_hint.filter(|h| !h.is_empty());
    // The provider leg gets a state of its own: the client's may be short or reused, and it only
    // has to come back to the client.
    let provider_state = random_token(32);
    match provider
        .authorize(
            &provider_state,
            login_hint.as_deref(),
            &state.config.oauth_callback_url,
        )
        .await?
    {
        AuthorizeStart::Code(code) => {
            let binding = PkceBinding {
                provider: idp,
                challenge,
                login_hint,
                client_callback: callback.clone(),
                identity: None,
            };
            let value = serde_json::to_string(&binding).map_err(ApiError::internal)?;
            state
                .kv
                .set(&format!("pkce:{code}"), &value, FLOW_TTL)
                .await
                .map_err(kv_err)?;
            let location = with_query(&callback, &[("code", &code), ("state", &oauth_state)]);
            Ok((StatusCode::FOUND, [(header::LOCATION, location)]).into_response())
        }
        AuthorizeStart::Redirect { url, flow } => {
            let leg = ProviderLeg {
                provider: idp,
                challenge,
                login_hint,
                client_callback: callback,
                client_state: oauth_state,
                flow,
            };
            let value = serde_json::to_string(&leg).map_err(ApiError::internal)?;
            state
                .kv
                .set(&format!("oauth_state:{provider_state}"), &value, FLOW_TTL)
                .await
                .map_err(kv_err)?;
            Ok((StatusCode::FOUND, [(header::LOCATION, url)]).into_response())
        }
    }
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|x| x[1..].to_owned())
        .unwrap_or_default()
}

/// `GET /oauth2/callback`: the external provider sends the browser back here. The state is taken
/// (single use: a replayed or unknown state is a 400), the provider's code exchanged and the
/// identity verified at once; the client callback then gets a TMI code that `/oauth2/token`
/// redeems against the client's PKCE verifier. Nothing is signed in when any step fails.
pub async fn callback(
    State(state): State<AppState>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let st = q
        .get("state")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad_request("Missing required parameter: state"))?;
    let leg = state
        .kv
        .take(&format!("oauth_state:{st}"))
        .await
        .map_err(kv_err)?
        .ok_or_else(|| bad_request("Invalid or expired state"))?;
    let leg: ProviderLeg = serde_json::from_str(&leg).map_err(ApiError::internal)?;
    if let Some(err) = q.get("error") {
        // The provider refused (the user cancelled, or its policy): the client hears it.
        let code: String = err
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        tracing::info!(provider = %leg.provider, error = %code, "the identity provider refused the sign-in");
        let location = with_query(
            &leg.client_callback,
            &[("error", &code), ("state", &leg.client_state)],
        );
        return Ok((StatusCode::FOUND, [(header::LOCATION, location)]).into_response());
    }
    let code = q
        .get("code")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| bad_request("Missing required parameter: code"))?;
    let provider = state
        .provider(&leg.provider)
        .ok_or_else(|| bad_request("Unknown identity provider"))?;
    let identity = provider
        .complete(code, &leg.flow, &state.config.oauth_callback_url)
        .await
        .inspect_err(|e| tracing::info!(provider = %leg.provider, error = %e, "sign-in refused"))?;
    let tmi_code = random_token(32);
    let binding = PkceBinding {
        provider: leg.provider,
        challenge: leg.challenge,
        login_hint: leg.login_hint,
        client_callback: leg.client_callback.clone(),
        identity: Some(identity),
    };
    let value = serde_json::to_string(&binding).map_err(ApiError::internal)?;
    state
        .kv
        .set(&format!("pkce:{tmi_code}"), &value, FLOW_TTL)
        .await
        .map_err(kv_err)?;
    let location = with_query(
        &leg.client_callback,
        &[("code", &tmi_code), ("state", &leg.client_state)],
    );
    Ok((StatusCode::FOUND, [(header::LOCATION, location)]).into_response())
}

#[derive(Deserialize, Default)]
struct TokenRequest {
    grant_type: Option<String>,
    code: Option<String>,
    code_verifier: Option<String>,
    redirect_uri: Option<String>,
    refresh_token: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

fn form_or_json<T: for<'de> Deserialize<'de> + Default>(
    json: MaybeJsonBody,
    raw: &RawBody,
) -> Result<T, ApiError> {
    if let MaybeJsonBody(Some(v)) = json {
        return serde_json::from_value(v).map_err(|e| ApiError::invalid(e.to_string()));
    }
    if raw.0.is_empty() || raw.0.first() == Some(&b'{') {
        return Ok(T::default());
    }
    serde_urlencoded::from_bytes(&raw.0).map_err(|e| ApiError::invalid(e.to_string()))
}

/// `POST /oauth2/token?idp=`.
pub async fn token(
    State(state): State<AppState>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    json: MaybeJsonBody,
    raw: RawBody,
) -> Result<Response, ApiError> {
    let req: TokenRequest = form_or_json(json, &raw)?;
    match req.grant_type.as_deref() {
        Some("authorization_code") => {}
        Some("client_credentials") => {
            return client_credentials_grant(&state, &headers, req.client_id, req.client_secret).await;
        }
        Some("refresh_token") => {
            let t = req
                .refresh_token
                .ok_or_else(|| bad_request("refresh_token is required"))?;
            return refresh_with(&state, &t).await;
        }
        Some(_) => {
            return Err(ApiError::OAuth(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "Unsupported grant_type".into(),
            ));
        }
        None => return Err(bad_request("grant_type is required")),
    }
    let (Some(code), Some(verifier), Some(_redirect)) = (req.code, req.code_verifier, req.redirect_uri)
    else {
        return Err(bad_request("code, code_verifier and redirect_uri are required"));
    };
    let idp = q.get("idp").cloned().unwrap_or_else(|| "tmi".into());
    if idp == "tmi" && !state.config.build_mode.is_dev_or_test() {
        return Err(ApiError::OAuth(
            StatusCode::FORBIDDEN,
            "unsupported_grant_type",
            "The tmi provider's code flow is only available in dev and test builds".into(),
        ));
    }
    let provider = state
        .provider(&idp)
        .ok_or_else(|| bad_request("Unknown identity provider"))?;
    let invalid_grant = || {
        ApiError::OAuth(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid authorization code or code_verifier".into(),
        )
    };
    let binding = state
        .kv
        .take(&format!("pkce:{code}"))
        .await
        .map_err(kv_err)?
        .ok_or_else(invalid_grant)?;
    let binding: PkceBinding = serde_json::from_str(&binding).map_err(ApiError::internal)?;
    if binding.provider != idp || pkce_s256(&verifier) != binding.challenge {
        return Err(invalid_grant());
    }
    let identity = match binding.identity {
        Some(identity) => identity,
        None => provider.exchange(&code, binding.login_hint.as_deref()).await?,
    };
    let (_, pair) = state.tokens.login(&identity).await?;
    Ok(token_response(&state, pair))
}

async fn refresh_with(state: &AppState, token: &str) -> Result<Response, ApiError> {
    match state.tokens.refresh(token).await {
        Ok(pair) => Ok(token_response(state, pair)),
        Err(e @ ApiError::OAuth(..)) => Ok(with_cookies(e.into_response(), clear_cookies(&state.config))),
        Err(e) => Err(e),
    }
}

/// `POST /oauth2/refresh`: body `{refresh_token}` or the refresh cookie.
pub async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
    MaybeJsonBody(json): MaybeJsonBody,
) -> Result<Response, ApiError> {
    let from_body = json.and_then(|v| v.get("refresh_token").and_then(Value::as_str).map(str::to_owned));
    let token = from_body
        .or_else(|| cookie_value(&headers, REFRESH_COOKIE))
        .ok_or_else(|| bad_request("refresh_token is required"))?;
    refresh_with(&state, &token).await
}

#[derive(Deserialize, Default)]
struct RevokeRequest {
    token: Option<String>,
}

fn invalid_client() -> ApiError {
    ApiError::OAuth(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "Client authentication required".into(),
    )
}

/// `POST /oauth2/revoke` (RFC 7009). The caller authenticates with a bearer token (this server has
/// no registered clients), and only their own tokens are revoked: an access token of theirs until
/// it expires, a refresh token of theirs together with every token of its login. Any other token
/// is left alone with the same 200, so the answer tells nothing about it.
pub async fn revoke(
    State(state): State<AppState>,
    MaybeAuthUser(user): MaybeAuthUser,
    json: MaybeJsonBody,
    raw: RawBody,
) -> Result<Json<Value>, ApiError> {
    let caller = user.ok_or_else(invalid_client)?;
    let req: RevokeRequest = form_or_json(json, &raw)?;
    let token = req
        .token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| bad_request("token is required"))?;
    if let Some(claims) = state.tokens.keys.verify(&token) {
        if owns(&caller, &claims) {
            state.tokens.revoke_access(&token, claims.exp).await?;
        }
    } else {
        state.tokens.revoke_refresh(&token, &caller.user).await?;
    }
    Ok(Json(json!({})))
}

/// Whether `claims` were issued to `caller`.
fn owns(caller: &AuthUser, claims: &super::tokens::Claims) -> bool {
    claims.idp == caller.user.provider && claims.sub == caller.user.provider_user_id
}

/// `POST /oauth2/introspect` (RFC 7662). Client authentication is a bearer token of this server
/// (it has no registered clients; see docs/server.md): without one, 401 `invalid_client`. A caller
/// learns about their own tokens; administrators about anyone's; any other token is reported
/// `{"active": false}`, as RFC 7662 §2.2 allows, so that a token cannot be probed for its owner.
pub async fn introspect(
    State(state): State<AppState>,
    MaybeAuthUser(caller): MaybeAuthUser,
    json: MaybeJsonBody,
    raw: RawBody,
) -> Result<Json<Value>, ApiError> {
    let req: RevokeRequest = form_or_json(json, &raw)?;
    // RFC 7662 makes `token` required; upstream answers 400 without it (before anything else).
    let Some(token) = req.token.filter(|t| !t.trim().is_empty()) else {
        return Err(ApiError::OAuth(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_request",
            "token is required".into(),
        ));
    };
    let caller = caller.ok_or_else(invalid_client)?;
    let visible = |u: &AuthUser| owns(&caller, &u.claims) || caller.claims.tmi_is_administrator;
    Ok(Json(match state.tokens.authenticate(&token).await? {
        Some(u) if visible(&u) => json!({
            "active": true,
            "sub": u.claims.sub,
            "email": u.claims.email,
            "name": u.claims.name,
            "exp": u.claims.exp,
            "iat": u.claims.iat,
            "iss": u.claims.iss,
            "token_type": "Bearer",
        }),
        _ => json!({"active": false}),
    }))
}

/// `GET /oauth2/providers/{idp}/groups`: the provider's groups TMI knows (brought by its users at
/// sign-in, or named by threat-model authorizations), for autocomplete when sharing with a group.
/// A provider that is not configured is a 404.
pub async fn provider_groups(
    State(state): State<AppState>,
    _user: AuthUser,
    axum::extract::Path(idp): axum::extract::Path<String>,
) -> Result<Json<Value>, ApiError> {
    if state.provider(&idp).is_none() {
        return Err(ApiError::NotFound(format!(
            "Identity provider {idp} is not configured"
        )));
    }
    let groups = state.store.provider_group_list(&idp, 1000).await?;
    Ok(Json(json!({
        "idp": idp,
        "groups": groups.iter().map(|g| json!({
            "name": g.group_name,
            "display_name": g.name,
            "used_in_authorizations": g.used_in_authorizations,
        })).collect::<Vec<_>>(),
    })))
}

/// `GET /oauth2/userinfo`.
pub async fn userinfo(user: AuthUser) -> Json<Value> {
    Json(json!({
        "sub": user.claims.sub,
        "email": user.user.email,
        "name": user.user.name,
        "idp": user.claims.idp,
        "groups": user.claims.groups,
    }))
}

fn cached(v: Value) -> Response {
    ([(header::CACHE_CONTROL, "public, max-age=3600")], Json(v)).into_response()
}

fn discovery(base: &str) -> Value {
    json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/oauth2/authorize"),
        "token_endpoint": format!("{base}/oauth2/token"),
        "userinfo_endpoint": format!("{base}/oauth2/userinfo"),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "revocation_endpoint": format!("{base}/oauth2/revoke"),
        "introspection_endpoint": format!("{base}/oauth2/introspect"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["HS256"],
        "scopes_supported": ["openid", "profile", "email"],
        "claims_supported": ["sub", "email", "email_verified", "name", "idp", "groups"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
    })
}

pub async fn openid_configuration(State(state): State<AppState>, headers: HeaderMap) -> Response {
    cached(discovery(&base_url(&state.config, &headers)))
}

pub async fn authorization_server(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let mut doc = discovery(&base_url(&state.config, &headers));
    if let Value::Object(m) = &mut doc {
        // RFC 8414 metadata: the OIDC-only members are not part of this document.
        for k in [
            "claims_supported",
            "id_token_signing_alg_values_supported",
            "subject_types_supported",
            "userinfo_endpoint",
        ] {
            m.remove(k);
        }
    }
    cached(doc)
}

pub async fn jwks() -> Response {
    cached(json!({"keys": []}))
}

pub async fn protected_resource(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let base = base_url(&state.config, &headers);
    cached(json!({
        "resource": base,
        "authorization_servers": [base],
        "scopes_supported": ["openid", "profile", "email"],
        "bearer_methods_supported": ["header"],
        "resource_name": "TMI (Threat Modeling Improved) API",
    }))
}

/// `POST /oauth2/token` with `grant_type=client_credentials` (`auth::client_credentials`): the
/// client authenticates with HTTP Basic or in the body; the answer is a service-account access
/// token, without cookies. A refused Basic authentication is challenged (RFC 6749 §5.2).
async fn client_credentials_grant(
    state: &AppState,
    headers: &HeaderMap,
    client_id: Option<String>,
    client_secret: Option<String>,
) -> Result<Response, ApiError> {
    use super::client_credentials::{ClientAuth, grant};
    let result = match ClientAuth::from_request(headers, client_id, client_secret) {
        Ok(client) => grant(&state.tokens, &client).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(pair) => {
            let mut res = Json(&pair).into_response();
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(res)
        }
        Err(e) if e.status_and_code().0 == StatusCode::UNAUTHORIZED => {
            let basic = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.get(..6))
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case("basic "));
            let mut res = e.into_response();
            if basic {
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"tmi\""),
                );
            }
            Ok(res)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_matching() {
        let list = vec![
            "http://localhost:8079/".to_string(),
            "http://localhost:4200/*".to_string(),
        ];
        assert!(callback_allowed(&list, "http://localhost:8079/"));
        assert!(!callback_allowed(&list, "http://localhost:8079/x"));
        assert!(callback_allowed(&list, "http://localhost:4200/oauth2/callback"));
        assert!(!callback_allowed(&list, "http://evil.example/"));
        assert!(!callback_allowed(&[], "http://localhost:8079/"));
    }

    #[test]
    fn pkce_s256_known_answer() {
        // Expected value computed independently (Python hashlib + urlsafe_b64encode).
        assert_eq!(
            pkce_s256("dBjftJeZ4CVP-mJ0m7aCmeOXQeHdbyx0c4Nj8tTm1Rk"),
            "D_6B4OBSMpFkHAmnoYmoU7-8NNx4wfs7MtzkKYkDSbc"
        );
    }
}
