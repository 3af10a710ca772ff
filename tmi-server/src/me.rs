//! The caller's own resources, `/me/*` (tmi-compat.md Part B §3.2): profile, logout, TMI-managed
//! groups and their members, preferences, linked content tokens and identities, client credentials
//! (`auth::client_credentials`). (`/me/sessions` belongs to collaboration.) Thin HTTP handlers; IO
//! through the store and the token store.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::auth::client_credentials;
use crate::auth::tokens::{AuthUser, REFRESH_COOKIE, clear_cookies, cookie_value, with_cookies};
use crate::domain::{admin, preferences};
use crate::error::ApiError;
use crate::extract::{JsonBody, Path};
use crate::input::query::Params;
use crate::routes::Routes;
use crate::state::AppState;
use crate::store::StoreError;

pub fn router() -> Routes {
    Routes::new()
        .get("/me", me)
        .post("/me/logout", logout)
        .get("/me/groups", my_groups)
        .get("/me/groups/{group_id}/members", my_group_members)
        .get("/me/preferences", get_preferences)
        .post("/me/preferences", put_preferences)
        .put("/me/preferences", put_preferences)
        .get("/me/content_tokens", content_tokens)
        .get("/me/identities", identities)
        .post("/me/client_credentials", create_client_credential)
        .get("/me/client_credentials", list_client_credentials)
        .delete("/me/client_credentials/{credential_id}", delete_client_credential)
}

/// `GET /me`.
pub async fn me(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>, ApiError> {
    let groups = state.store.user_groups(user.user.internal_uuid).await?;
    Ok(Json(json!({
        "principal_type": "user",
        "provider": user.user.provider,
        "provider_id": user.user.provider_user_id,
        "display_name": user.user.name,
        "email": user.user.email,
        "is_admin": admin::among(&groups, &state.config.admins),
        "is_security_reviewer": groups.iter().any(|g| g.internal_uuid == crate::store::groups::SECURITY_REVIEWERS),
        "groups": groups.iter().map(|g| json!({
            "internal_uuid": g.internal_uuid,
            "group_name": g.group_name,
            "name": g.name,
        })).collect::<Vec<_>>(),
    })))
}

/// `GET /me/groups`: the TMI-managed groups the caller is a direct member of (read from the
/// database, so a membership granted after the token was issued shows at once).
pub async fn my_groups(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>, ApiError> {
    let groups: Vec<Value> = state
        .store
        .user_groups(user.user.internal_uuid)
        .await?
        .iter()
        .filter(|g| g.internal_uuid != crate::store::groups::EVERYONE)
        .map(|g| json!({"internal_uuid": g.internal_uuid, "group_name": g.group_name, "name": g.name}))
        .collect();
    Ok(Json(json!({"total": groups.len(), "groups": groups})))
}

/// `GET /me/groups/{group_id}/members`: a page of the members of a group the caller belongs to
/// (404 for an unknown group, 403 for one the caller is not a member of). The web client fills its
/// security-reviewer picker from the `security-reviewers` group this way.
pub async fn my_group_members(
    State(state): State<AppState>,
    user: AuthUser,
    Path(group_id): Path<uuid::Uuid>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = Params::parse(raw.as_deref());
    let limit = q.integer("limit", 50, 1000)?;
    let offset = q.integer("offset", 0, 1_000_000)?;
    if state.store.get_group(group_id).await?.is_none() {
        return Err(ApiError::not_found("Group"));
    }
    let member = state
        .store
        .user_groups(user.user.internal_uuid)
        .await?
        .iter()
        .any(|g| g.internal_uuid == group_id);
    if !member {
        return Err(ApiError::forbidden("You are not a member of this group"));
    }
    let (members, total) = state.store.group_members(group_id, limit, offset).await?;
    let members: Vec<Value> = members
        .iter()
        .map(|m| {
            let mut v = json!({
                "id": m.id,
                "group_internal_uuid": m.group_uuid,
                "user_internal_uuid": m.user.internal_uuid,
                "user_name": m.user.name,
                "user_provider": m.user.provider,
                "user_provider_user_id": m.user.provider_user_id,
                "added_at": m.added_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "subject_type": "user",
            });
            // Sparse users (added to an ACL before their first login) may have no email yet.
            if !m.user.email.is_empty() {
                v["user_email"] = json!(m.user.email);
            }
            v
        })
        .collect();
    Ok(Json(
        json!({"members": members, "total": total, "limit": limit, "offset": offset}),
    ))
}

/// `POST /me/logout`: ends the login: the presented access token, every token of its family
/// (earlier access tokens and the refresh token that would mint the next), and the refresh cookie's
/// token; clears cookies.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    user: AuthUser,
) -> Result<Response, ApiError> {
    state.tokens.end_login(&user.token, &user.claims).await?;
    if let Some(r) = cookie_value(&headers, REFRESH_COOKIE) {
        state.tokens.revoke_refresh(&r, &user.user).await?;
    }
    Ok(with_cookies(
        StatusCode::NO_CONTENT.into_response(),
        clear_cookies(&state.config),
    ))
}

/// `GET /me/preferences`.
pub async fn get_preferences(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        state
            .store
            .get_preferences(user.user.internal_uuid)
            .await?
            .unwrap_or_else(|| json!({})),
    ))
}

/// `POST /me/preferences` (201; 409 when the user has preferences) and `PUT /me/preferences`
/// (200, an upsert). The document's rules are in `domain::preferences`.
pub async fn put_preferences(
    State(state): State<AppState>,
    method: axum::http::Method,
    user: AuthUser,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    preferences::validate(&body)?;
    let id = user.user.internal_uuid;
    let status = if method == axum::http::Method::POST {
        state
            .store
            .insert_preferences(id, &body)
            .await
            .map_err(|e| match e {
                StoreError::Conflict => {
                    ApiError::Conflict("Preferences already exist; use PUT to replace them".into())
                }
                e => e.into(),
            })?;
        StatusCode::CREATED
    } else {
        state.store.put_preferences(id, &body).await?;
        StatusCode::OK
    };
    Ok((status, Json(body)).into_response())
}

/// `GET /me/content_tokens` (`ContentTokenList`): the caller's linked content-provider tokens. No
/// content provider (Confluence, Google Drive, …) can be linked yet, so the list is empty; the web
/// client's document dialog calls this and treats a 404 as an error.
pub async fn content_tokens(_user: AuthUser) -> Json<Value> {
    Json(json!({"content_tokens": []}))
}

/// `GET /me/identities` (`MyIdentitiesResponse`): the identity the caller signs in with, and the
/// identities linked to their account, none until account linking exists.
pub async fn identities(user: AuthUser) -> Json<Value> {
    Json(json!({
        "primary": {
            "provider": user.user.provider,
            "email": user.user.email,
            "name": user.user.name,
        },
        "linked": [],
    }))
}

/// `POST /me/client_credentials` (201 `ClientCredentialResponse`): the only answer that carries the
/// secret, so it is not to be cached.
pub async fn create_client_credential(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let created = client_credentials::create(&state.tokens, &user, &body).await?;
    let mut res = (
        StatusCode::CREATED,
        Json(client_credentials::created_json(&created)),
    )
        .into_response();
    res.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(res)
}

/// `GET /me/client_credentials` (`ListClientCredentialsResponse`): a page of the caller's
/// credentials, without secrets.
pub async fn list_client_credentials(
    State(state): State<AppState>,
    user: AuthUser,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = Params::parse(raw.as_deref());
    let limit = q.integer("limit", 20, 100)?;
    let offset = q.integer("offset", 0, 1_000_000_000)?;
    let all = client_credentials::list(&state.tokens, &user).await?;
    let now = chrono::Utc::now();
    let page: Vec<Value> = all
        .iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(usize::try_from(limit).unwrap_or(0))
        .map(|c| client_credentials::info_json(c, now))
        .collect();
    Ok(Json(json!({
        "credentials": page,
        "total": all.len(),
        "limit": limit,
        "offset": offset,
    })))
}

/// `DELETE /me/client_credentials/{credential_id}` (204): the credential and every token it granted.
pub async fn delete_client_credential(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<uuid::Uuid>,
) -> Result<StatusCode, ApiError> {
    client_credentials::delete(&state.tokens, &user, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
