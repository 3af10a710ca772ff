//! Child-resource handlers, shared by all six kinds: list, create, get, update (PUT), patch
//! (JSON Patch), delete (soft) and restore. Thin: the rules are in `domain::children`, the live
//! lookups and the open-session check in `domain`; IO through the store.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::listing;
use crate::auth::tokens::AuthUser;
use crate::authz::Role;
use crate::domain::children::{self, list_item, response};
use crate::domain::kinds::Kind;
use crate::domain::{admin, live, sessions};
use crate::error::ApiError;
use crate::extract::{JsonBody, Path, TmAccess};
use crate::input::query::Params;
use crate::state::AppState;
use crate::store::{ChildRecord, MetadataEntry, StoreError};
use crate::versioning::{self, Precondition};

fn child_id(kind: &Kind, params: &HashMap<String, String>) -> Result<Uuid, ApiError> {
    params
        .get(kind.id_param)
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| ApiError::invalid_id(format!("Invalid {}", kind.id_param)))
}

async fn respond(
    state: &AppState,
    kind: &Kind,
    c: &ChildRecord,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let meta = state.store.list_metadata(c.id).await?;
    Ok((status, Json(response(&state.spec, kind, c, &meta, false))).into_response())
}

/// `GET …/{kind}`: filtered (`listing`), then paginated. `include_deleted` needs the owner role or
/// administrator privileges.
pub async fn list(
    kind: &'static Kind,
    State(state): State<AppState>,
    user: AuthUser,
    access: TmAccess,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = Params::parse(raw.as_deref());
    let include_deleted = q.boolean("include_deleted")?.unwrap_or(false);
    if include_deleted
        && access.role != Role::Owner
        // Service-account tokens never act as administrators (upstream).
        && (user.is_service_account()
            || !admin::is_administrator(state.store.as_ref(), &state.config.admins, user.user.internal_uuid)
                .await?)
    {
        return Err(ApiError::forbidden(
            "include_deleted requires the owner role or administrator privileges",
        ));
    }
    let limit = q.integer("limit", 20, 100)?.max(1) as usize;
    let offset = q.integer("offset", 0, 1_000_000_000)? as usize;
    let filter = listing::Filter::parse(kind.kind, &q)?;
    let rows = state
        .store
        .list_children(access.tm.id, Some(kind.kind), include_deleted)
        .await?;
    let rows = filter.apply(rows);
    let total = rows.len();
    let meta = state.store.metadata_under(access.tm.id).await?;
    let items: Vec<Value> = rows
        .iter()
        .skip(offset)
        .take(limit)
        .map(|c| {
            list_item(
                &state.spec,
                kind,
                c,
                meta.get(&c.id).map(Vec::as_slice).unwrap_or(&[]),
            )
        })
        .collect();
    Ok(Json(
        json!({ kind.plural: items, "total": total, "limit": limit, "offset": offset }),
    ))
}

/// `POST …/{kind}`.
pub async fn create(
    kind: &'static Kind,
    State(state): State<AppState>,
    access: TmAccess,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let (mut c, metadata) = children::new_record(&state.spec, kind, access.tm.id, None, body)?;
    c.alias = state.store.insert_child(&c, &metadata).await?;
    let mut res = respond(&state, kind, &c, StatusCode::CREATED).await?;
    let location = format!("/threat_models/{}/{}/{}", access.tm.id, kind.plural, c.id);
    if let Ok(v) = location.parse() {
        res.headers_mut().insert(header::LOCATION, v);
    }
    Ok(res)
}

/// `GET …/{kind}/{id}`, with the version as `ETag` for a later `If-Match`.
pub async fn get(
    kind: &'static Kind,
    State(state): State<AppState>,
    access: TmAccess,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let c = live::child(state.store.as_ref(), access.tm.id, kind, child_id(kind, &p)?).await?;
    let mut res = respond(&state, kind, &c, StatusCode::OK).await?;
    versioning::tag(&mut res, c.version);
    Ok(res)
}

/// Writes a new document for `current`, keeping server-owned fields.
async fn write(
    state: &AppState,
    kind: &Kind,
    current: ChildRecord,
    m: Map<String, Value>,
    metadata: Option<Vec<MetadataEntry>>,
    pre: Precondition,
) -> Result<Response, ApiError> {
    sessions::ensure_none_on_child(state.collab.as_ref(), kind, current.id).await?;
    let previous = current.doc.as_object().cloned().unwrap_or_default();
    let next = children::successor(kind, &current, previous, m)?;
    state
        .store
        .update_child(&next, current.version, metadata.as_deref())
        .await?;
    let mut res = respond(state, kind, &next, StatusCode::OK).await?;
    versioning::decorate(&mut res, next.version, pre);
    Ok(res)
}

/// Optimistic locking, the same for every kind (and the threat model): a given `If-Match` must
/// name the stored version, else 409. Notes and repositories keep a version too, though their
/// schema does not show it (their writes send it as `ETag`); only the kinds whose schema has
/// `version` may require `If-Match` (`TMI_REQUIRE_IF_MATCH`) or get the deprecation headers.
fn precondition(
    state: &AppState,
    kind: &Kind,
    headers: &HeaderMap,
    c: &ChildRecord,
) -> Result<Precondition, ApiError> {
    let pre = versioning::check(
        headers,
        c.version,
        state.config.require_if_match && kind.versioned,
    )?;
    Ok(if kind.versioned {
        pre
    } else {
        Precondition::Matched
    })
}

/// `PUT …/{kind}/{id}`: full replacement.
pub async fn update(
    kind: &'static Kind,
    State(state): State<AppState>,
    headers: HeaderMap,
    access: TmAccess,
    Path(p): Path<HashMap<String, String>>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let current = live::child(state.store.as_ref(), access.tm.id, kind, child_id(kind, &p)?).await?;
    let pre = precondition(&state, kind, &headers, &current)?;
    let (m, metadata) = children::replacement(&state.spec, kind, body)?;
    write(&state, kind, current, m, metadata, pre).await
}

/// `PATCH …/{kind}/{id}`: JSON Patch over the writable fields.
pub async fn patch(
    kind: &'static Kind,
    State(state): State<AppState>,
    headers: HeaderMap,
    access: TmAccess,
    Path(p): Path<HashMap<String, String>>,
    JsonBody(ops): JsonBody,
) -> Result<Response, ApiError> {
    let current = live::child(state.store.as_ref(), access.tm.id, kind, child_id(kind, &p)?).await?;
    let pre = precondition(&state, kind, &headers, &current)?;
    let (m, metadata) = children::patched(&state.spec, state.store.as_ref(), kind, &current, &ops).await?;
    write(&state, kind, current, m, metadata, pre).await
}

/// `DELETE …/{kind}/{id}`: soft delete; a given `If-Match` must name the current version. A write that
/// lands between the read and the tombstone is not a conflict the caller asked about: the child is read
/// again (404 once another delete won; a given `If-Match` is then checked against the new version).
pub async fn delete(
    kind: &'static Kind,
    State(state): State<AppState>,
    headers: HeaderMap,
    access: TmAccess,
    Path(p): Path<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    let id = child_id(kind, &p)?;
    let mut attempt = 0;
    loop {
        let current = live::child(state.store.as_ref(), access.tm.id, kind, id).await?;
        versioning::check(&headers, current.version, false)?;
        sessions::ensure_none_on_child(state.collab.as_ref(), kind, current.id).await?;
        match state
            .store
            .update_child(&children::tombstone(&current), current.version, None)
            .await
        {
            Err(StoreError::VersionMismatch) if attempt < DELETE_ATTEMPTS => attempt += 1,
            done => return done.map(|()| StatusCode::NO_CONTENT).map_err(ApiError::from),
        }
    }
}

/// How often a delete reads the record again after losing a race with another write.
pub const DELETE_ATTEMPTS: u32 = 5;

/// `POST …/{kind}/{id}/restore` (owner).
pub async fn restore(
    kind: &'static Kind,
    State(state): State<AppState>,
    access: TmAccess,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let id = child_id(kind, &p)?;
    let current = live::deleted_child(state.store.as_ref(), access.tm.id, kind, id).await?;
    let next = children::restored(&current);
    state.store.update_child(&next, current.version, None).await?;
    respond(&state, kind, &next, StatusCode::OK).await
}
