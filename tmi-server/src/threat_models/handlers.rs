//! Threat-model handlers: list, create, get, update (PUT), patch (JSON Patch), delete, restore.
//! Thin: the rules and the document shape are in `domain::threat_model`,
//! `domain::threat_model_patch` and `domain::acl`; IO through the store.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::auth::tokens::AuthUser;
use crate::domain::kinds::KINDS;
use crate::domain::threat_model as model;
use crate::domain::threat_model_patch::{self, Caller};
use crate::domain::{admin, children, sessions};
use crate::error::ApiError;
use crate::extract::{JsonBody, TmAccess};
use crate::input::query::Params;
use crate::resources::handlers::DELETE_ATTEMPTS;
use crate::state::AppState;
use crate::store::{MetadataEntry, ReviewerFilter, StoreError, ThreatModelFilter, ThreatModelRecord, Viewer};
use crate::versioning;

/// The `security_reviewer` filter: `is:null`, `is:notnull` (operators are case-insensitive) or a
/// partial email or display name; any other `<word>:` operator is a 400.
fn reviewer_filter(raw: &str) -> Result<ReviewerFilter, ApiError> {
    let lower = raw.trim().to_ascii_lowercase();
    match lower.as_str() {
        "is:null" => Ok(ReviewerFilter::Unassigned),
        "is:notnull" => Ok(ReviewerFilter::Assigned),
        _ => match raw.split_once(':') {
            Some((op, _)) if !op.is_empty() && op.chars().all(|c| c.is_ascii_alphabetic()) => {
                Err(ApiError::invalid(format!(
                    "unsupported filter operator '{op}' for parameter 'security_reviewer'; \
                     supported operators: is:null, is:notnull"
                )))
            }
            _ => Ok(ReviewerFilter::Matching(raw.to_owned())),
        },
    }
}

/// `GET /threat_models`: the models the caller can read, newest first.
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = Params::parse(raw.as_deref());
    let include_deleted = q.boolean("include_deleted")?.unwrap_or(false);
    // Service-account tokens never act as administrators (upstream).
    if include_deleted
        && (user.is_service_account()
            || !admin::is_administrator(
                state.store.as_ref(),
                &state.config.admins,
                user.user.internal_uuid,
            )
            .await?)
    {
        return Err(ApiError::forbidden(
            "include_deleted requires administrator privileges",
        ));
    }
    let text = |k: &str| q.get(k).map(str::to_owned);
    let filter = ThreatModelFilter {
        owner: text("owner"),
        security_reviewer: q.get("security_reviewer").map(reviewer_filter).transpose()?,
        statuses: q.enum_list("status"),
        name_contains: text("name"),
        description_contains: text("description"),
        issue_uri_contains: text("issue_uri"),
        created_after: q.timestamp("created_after")?,
        created_before: q.timestamp("created_before")?,
        modified_after: q.timestamp("modified_after")?,
        modified_before: q.timestamp("modified_before")?,
        status_updated_after: q.timestamp("status_updated_after")?,
        status_updated_before: q.timestamp("status_updated_before")?,
        include_deleted,
        limit: q.integer("limit", 20, 100)?.max(1),
        offset: q.integer("offset", 0, 1_000_000_000)?,
    };
    let viewer = Viewer {
        provider: user.provider().to_owned(),
        provider_id: user.provider_id().to_owned(),
        groups: user.groups().to_vec(),
    };
    let (items, total) = state.store.list_threat_models(Some(&viewer), &filter).await?;
    Ok(Json(json!({
        "threat_models": items.iter().map(model::list_item).collect::<Vec<_>>(),
        "total": total,
        "limit": filter.limit,
        "offset": filter.offset,
    })))
}

/// `POST /threat_models`.
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let (mut rec, metadata) = model::new_model(state.store.as_ref(), &state.spec, &user.user, body).await?;
    rec.alias = state.store.insert_threat_model(&rec, &metadata).await?;
    let mut body = model::response(&rec, &metadata);
    for key in [
        "diagrams",
        "threats",
        "documents",
        "repositories",
        "notes",
        "assets",
    ] {
        body[key] = json!([]);
    }
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/threat_models/{}", rec.id))],
        Json(body),
    )
        .into_response())
}

/// The full document of a threat model with its children.
pub async fn full(state: &AppState, rec: &ThreatModelRecord) -> Result<Value, ApiError> {
    let meta = state.store.metadata_under(rec.id).await?;
    let mut body = model::response(rec, meta.get(&rec.id).map(Vec::as_slice).unwrap_or(&[]));
    let children = state.store.list_children(rec.id, None, false).await?;
    let mut groups: HashMap<&str, Vec<Value>> = HashMap::new();
    for c in &children {
        if let Some(kind) = KINDS.iter().find(|k| k.kind == c.kind) {
            let m = meta.get(&c.id).map(Vec::as_slice).unwrap_or(&[]);
            groups
                .entry(kind.plural)
                .or_default()
                .push(children::response(&state.spec, kind, c, m, true));
        }
    }
    for kind in KINDS {
        body[kind.plural] = json!(groups.remove(kind.plural).unwrap_or_default());
    }
    Ok(body)
}

/// `GET /threat_models/{id}`, with the version as `ETag` for a later `If-Match`.
pub async fn get(State(state): State<AppState>, access: TmAccess) -> Result<Response, ApiError> {
    let mut res = Json(full(&state, &access.tm).await?).into_response();
    versioning::tag(&mut res, access.tm.version);
    Ok(res)
}

async fn save(
    state: &AppState,
    next: ThreatModelRecord,
    current: &ThreatModelRecord,
    metadata: Option<Vec<MetadataEntry>>,
    pre: versioning::Precondition,
) -> Result<Response, ApiError> {
    let next = model::successor(next, current);
    state
        .store
        .update_threat_model(&next, current.version, metadata.as_deref())
        .await?;
    let mut res = Json(full(state, &next).await?).into_response();
    versioning::decorate(&mut res, next.version, pre);
    Ok(res)
}

/// `PUT /threat_models/{id}`: full replacement of the writable fields.
pub async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    access: TmAccess,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let current = access.tm;
    let pre = versioning::check(&headers, current.version, state.config.require_if_match)?;
    let (next, metadata) =
        model::replaced(state.store.as_ref(), &state.spec, &current, access.role, body).await?;
    save(&state, next, &current, metadata, pre).await
}

/// `PATCH /threat_models/{id}`: RFC 6902 on the model's JSON, within the allowlist
/// (`domain::threat_model_patch`).
pub async fn patch(
    State(state): State<AppState>,
    headers: HeaderMap,
    user: AuthUser,
    access: TmAccess,
    JsonBody(ops): JsonBody,
) -> Result<Response, ApiError> {
    let current = access.tm;
    let pre = versioning::check(&headers, current.version, state.config.require_if_match)?;
    let caller = Caller {
        role: access.role,
        security_reviewer: user.is_security_reviewer(),
    };
    let (next, metadata) =
        threat_model_patch::apply(state.store.as_ref(), &state.spec, caller, &current, &ops).await?;
    save(&state, next, &current, metadata, pre).await
}

/// `DELETE /threat_models/{id}`: soft delete (owner); a given `If-Match` must name the current version. A
/// write between the read and the tombstone is retried as for children
/// (`resources::handlers::delete`): 404 once another delete won.
pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    access: TmAccess,
) -> Result<StatusCode, ApiError> {
    let mut current = access.tm;
    let mut attempt = 0;
    loop {
        versioning::check(&headers, current.version, false)?;
        sessions::ensure_none_on_threat_model(state.collab.as_ref(), current.id).await?;
        let next = model::tombstone(&current);
        match state
            .store
            .update_threat_model(&next, current.version, None)
            .await
        {
            Err(StoreError::VersionMismatch) if attempt < DELETE_ATTEMPTS => {
                attempt += 1;
                current = state.store.get_threat_model(current.id).await?;
                if current.deleted_at.is_some() {
                    return Err(ApiError::not_found("Threat model"));
                }
            }
            done => return done.map(|()| StatusCode::NO_CONTENT).map_err(ApiError::from),
        }
    }
}

/// `POST /threat_models/{id}/restore` (owner).
pub async fn restore(State(state): State<AppState>, access: TmAccess) -> Result<Json<Value>, ApiError> {
    let current = access.tm;
    let next = model::restored(&current)?;
    state
        .store
        .update_threat_model(&next, current.version, None)
        .await?;
    Ok(Json(full(&state, &next).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reviewer_filter_operators() {
        assert_eq!(reviewer_filter("IS:NULL").unwrap(), ReviewerFilter::Unassigned);
        assert_eq!(reviewer_filter("is:notnull").unwrap(), ReviewerFilter::Assigned);
        assert_eq!(
            reviewer_filter("rita@tmi.local").unwrap(),
            ReviewerFilter::Matching("rita@tmi.local".into())
        );
        assert_eq!(
            reviewer_filter("a:b@x").map_err(|e| e.status_and_code().0.as_u16()),
            Err(400)
        );
        assert!(reviewer_filter("is:banana").is_err());
        assert!(matches!(
            reviewer_filter("12:30"),
            Ok(ReviewerFilter::Matching(_))
        ));
    }
}
