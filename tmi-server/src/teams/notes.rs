//! Notes of teams and projects: list, create, get, update (PUT), patch, delete, for the members of
//! the team (and administrators). Non-sharable notes exist only for administrators and security
//! reviewers (404 for everyone else), who alone may set `sharable` (`domain::teams`). IO through
//! the store.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use uuid::Uuid;

use super::handlers::accessible;
use super::{Params, note_param, uuid_param};
use crate::auth::tokens::AuthUser;
use crate::domain::teams::{self as rules, UnitKind};
use crate::domain::wire;
use crate::error::ApiError;
use crate::extract::{JsonBody, Path};
use crate::input::query::Params as Query;
use crate::patch;
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::teams::OrgNoteRecord;

/// The note the path names, if the caller may see it.
async fn visible(
    state: &AppState,
    parent: Uuid,
    p: &HashMap<String, String>,
    kind: &UnitKind,
    privileged: bool,
) -> Result<OrgNoteRecord, ApiError> {
    let id = uuid_param(p, note_param(kind))?;
    let note = state.store.get_org_note(parent, id).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::not_found("Note"),
        other => other.into(),
    })?;
    if !note.sharable && !privileged {
        return Err(ApiError::not_found("Note"));
    }
    Ok(note)
}

/// `GET …/notes`: a page of the notes the caller may see, oldest first.
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    Path(p): Params,
    RawQuery(raw): RawQuery,
    kind: &'static UnitKind,
) -> Result<Json<Value>, ApiError> {
    let parent = accessible(&state, &user, kind, &p).await?;
    let q = Query::parse(raw.as_deref());
    let limit = q.integer("limit", 20, 100)?;
    let offset = q.integer("offset", 0, i64::MAX)?;
    let privileged = rules::is_privileged(&state, &user).await?;
    let (notes, total) = state
        .store
        .list_org_notes(parent.id, privileged, limit, offset)
        .await?;
    Ok(Json(json!({
        "notes": notes.iter().map(rules::note_list_item).collect::<Vec<_>>(),
        "total": total,
        "limit": limit,
        "offset": offset,
    })))
}

/// `POST …/notes`.
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    Path(p): Params,
    JsonBody(body): JsonBody,
    kind: &'static UnitKind,
) -> Result<Response, ApiError> {
    let parent = accessible(&state, &user, kind, &p).await?;
    let privileged = rules::is_privileged(&state, &user).await?;
    let mut m = rules::prepare_note(&state.spec, body)?;
    let sharable = rules::note_sharable(&mut m, privileged, None)?;
    m.remove("sharable");
    let now = wire::now();
    let note = OrgNoteRecord {
        id: Uuid::new_v4(),
        parent_id: parent.id,
        sharable,
        created_at: now,
        modified_at: now,
        doc: Value::Object(m),
    };
    state.store.insert_org_note(&note).await?;
    Ok((StatusCode::CREATED, Json(rules::note(&note))).into_response())
}

/// `GET …/notes/{id}`.
pub async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    Path(p): Params,
    kind: &'static UnitKind,
) -> Result<Json<Value>, ApiError> {
    let parent = accessible(&state, &user, kind, &p).await?;
    let privileged = rules::is_privileged(&state, &user).await?;
    Ok(Json(rules::note(
        &visible(&state, parent.id, &p, kind, privileged).await?,
    )))
}

async fn save(
    state: &AppState,
    current: OrgNoteRecord,
    mut m: serde_json::Map<String, Value>,
    privileged: bool,
) -> Result<Json<Value>, ApiError> {
    let sharable = rules::note_sharable(&mut m, privileged, Some(current.sharable))?;
    m.remove("sharable");
    let note = OrgNoteRecord {
        sharable,
        modified_at: wire::now().max(current.modified_at),
        doc: Value::Object(m),
        ..current
    };
    state.store.update_org_note(&note).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::not_found("Note"),
        other => other.into(),
    })?;
    Ok(Json(rules::note(&note)))
}

/// `PUT …/notes/{id}`: full replacement (`sharable` is kept unless a privileged caller sends it).
pub async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    Path(p): Params,
    JsonBody(body): JsonBody,
    kind: &'static UnitKind,
) -> Result<Json<Value>, ApiError> {
    let parent = accessible(&state, &user, kind, &p).await?;
    let privileged = rules::is_privileged(&state, &user).await?;
    let current = visible(&state, parent.id, &p, kind, privileged).await?;
    let m = rules::prepare_note(&state.spec, body)?;
    save(&state, current, m, privileged).await
}

/// `PATCH …/notes/{id}`: RFC 6902 on the note's fields.
pub async fn patch(
    State(state): State<AppState>,
    user: AuthUser,
    Path(p): Params,
    JsonBody(ops): JsonBody,
    kind: &'static UnitKind,
) -> Result<Json<Value>, ApiError> {
    let parent = accessible(&state, &user, kind, &p).await?;
    let privileged = rules::is_privileged(&state, &user).await?;
    let current = visible(&state, parent.id, &p, kind, privileged).await?;
    let (ops, touched) = patch::parse(&ops, rules::NOTE_PATCHABLE)?;
    let doc = patch::apply(&rules::note_writable(&current), &ops)?;
    state
        .spec
        .validate_component("TeamProjectNoteBase", &doc)
        .map_err(|errors| ApiError::invalid(format!("The patched note is invalid: {}", errors.join("; "))))?;
    let mut m = rules::prepare_note(&state.spec, doc)?;
    if !touched.iter().any(|f| f == "sharable") {
        m.remove("sharable");
    }
    save(&state, current, m, privileged).await
}

/// `DELETE …/notes/{id}`.
pub async fn delete(
    State(state): State<AppState>,
    user: AuthUser,
    Path(p): Params,
    kind: &'static UnitKind,
) -> Result<StatusCode, ApiError> {
    let parent = accessible(&state, &user, kind, &p).await?;
    let privileged = rules::is_privileged(&state, &user).await?;
    let note = visible(&state, parent.id, &p, kind, privileged).await?;
    state
        .store
        .delete_org_note(parent.id, note.id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("Note"),
            other => other.into(),
        })?;
    Ok(StatusCode::NO_CONTENT)
}
