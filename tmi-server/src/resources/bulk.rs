//! Bulk endpoints (tmi-compat.md §2.2): `POST …/{kind}/bulk` creates, `PUT` updates (threats, every
//! item names an existing one) or upserts (documents, repositories, assets), `PATCH …/threats/bulk`
//! applies a JSON Patch per threat and `DELETE …/threats/bulk?threat_ids=` soft-deletes.
//!
//! All or nothing: every item is checked and its new row built first, then one `write_children`
//! transaction writes them all; any invalid item is a 400 (an unknown id a 404, an id in use
//! elsewhere a 409) and nothing is written. IO: reads and writes children through the `Store`.

use std::collections::HashSet;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::domain::children::{new_record, patched, replacement, response, successor, tombstone};
use crate::domain::kinds::Kind;
use crate::domain::live;
use crate::error::ApiError;
use crate::extract::{JsonBody, TmAccess};
use crate::input::query::Params;
use crate::state::AppState;
use crate::store::{ChildRecord, ChildWrite, MetadataEntry, StoreError};

/// The items of an array body, between one and the kind's limit.
fn items(kind: &Kind, body: Value) -> Result<Vec<Value>, ApiError> {
    let Value::Array(items) = body else {
        return Err(ApiError::invalid("Request body must be a JSON array"));
    };
    check_count(kind, items.len())?;
    Ok(items)
}

fn check_count(kind: &Kind, n: usize) -> Result<(), ApiError> {
    let limit = kind.bulk_limit.unwrap_or(0);
    if n == 0 {
        return Err(ApiError::invalid(format!("No {} provided", kind.plural)));
    }
    if n > limit {
        return Err(ApiError::invalid(format!(
            "At most {limit} {} per bulk request",
            kind.plural
        )));
    }
    Ok(())
}

/// The `id` of an item, removed from it; ids must be unique within a request.
fn take_id(item: &mut Value, seen: &mut HashSet<Uuid>) -> Result<Uuid, ApiError> {
    let id = item
        .as_object_mut()
        .and_then(|m| m.remove("id"))
        .and_then(|v| v.as_str().and_then(|s| Uuid::parse_str(s).ok()))
        .ok_or_else(|| ApiError::invalid("Every item needs an id (a UUID)"))?;
    if !seen.insert(id) {
        return Err(ApiError::invalid(format!("Duplicate id {id} in the request")));
    }
    Ok(id)
}

fn metadata_of(w: &ChildWrite, current: Option<&[MetadataEntry]>) -> Vec<MetadataEntry> {
    match w {
        ChildWrite::Insert { metadata, .. } => metadata.clone(),
        ChildWrite::Update { metadata, .. } => metadata
            .clone()
            .unwrap_or_else(|| current.unwrap_or_default().to_vec()),
    }
}

/// Writes the batch and answers with the written children, in request order.
async fn commit(
    state: &AppState,
    kind: &Kind,
    writes: Vec<ChildWrite>,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let aliases = state.store.write_children(&writes).await.map_err(|e| match e {
        StoreError::Conflict => ApiError::Conflict(format!(
            "An id in the request is already used by another {} or threat model",
            kind.kind
        )),
        other => other.into(),
    })?;
    let mut out = Vec::with_capacity(writes.len());
    for (w, alias) in writes.iter().zip(aliases) {
        let child = match w {
            ChildWrite::Insert { child, .. } | ChildWrite::Update { child, .. } => child,
        };
        let current = match w {
            ChildWrite::Update { metadata: None, .. } => Some(state.store.list_metadata(child.id).await?),
            _ => None,
        };
        let mut c = child.clone();
        c.alias = alias;
        out.push(response(
            &state.spec,
            kind,
            &c,
            &metadata_of(w, current.as_deref()),
            false,
        ));
    }
    Ok((status, Json(Value::Array(out))).into_response())
}

/// An update of `current` to the writable fields `m`.
fn update(
    kind: &Kind,
    current: &ChildRecord,
    m: Map<String, Value>,
    metadata: Option<Vec<MetadataEntry>>,
) -> Result<ChildWrite, ApiError> {
    let previous = current.doc.as_object().cloned().unwrap_or_default();
    Ok(ChildWrite::Update {
        child: successor(kind, current, previous, m)?,
        expected_version: current.version,
        metadata,
    })
}

/// `POST …/{kind}/bulk`: creates every item (201).
pub async fn create(
    kind: &'static Kind,
    State(state): State<AppState>,
    access: TmAccess,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let mut writes = Vec::new();
    for item in items(kind, body)? {
        let (child, metadata) = new_record(&state.spec, kind, access.tm.id, None, item)?;
        writes.push(ChildWrite::Insert { child, metadata });
    }
    commit(&state, kind, writes, StatusCode::CREATED).await
}

/// `PUT …/threats/bulk`: replaces every named threat (200); an unknown id is a 404.
pub async fn update_all(
    kind: &'static Kind,
    State(state): State<AppState>,
    access: TmAccess,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let mut seen = HashSet::new();
    let mut writes = Vec::new();
    for mut item in items(kind, body)? {
        let id = take_id(&mut item, &mut seen)?;
        let current = live::child(state.store.as_ref(), access.tm.id, kind, id).await?;
        let (m, metadata) = replacement(&state.spec, kind, item)?;
        writes.push(update(kind, &current, m, metadata)?);
    }
    commit(&state, kind, writes, StatusCode::OK).await
}

/// `PUT …/{documents,repositories,assets}/bulk`: updates the items whose id names a live child of
/// this kind in this threat model and creates the others with their id. The contract answers 201
/// for documents and 200 for repositories and assets.
pub async fn upsert(
    kind: &'static Kind,
    State(state): State<AppState>,
    access: TmAccess,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let mut seen = HashSet::new();
    let mut writes = Vec::new();
    for mut item in items(kind, body)? {
        let id = take_id(&mut item, &mut seen)?;
        match state.store.get_child(access.tm.id, kind.kind, id).await {
            Ok(current) if current.deleted_at.is_none() => {
                let (m, metadata) = replacement(&state.spec, kind, item)?;
                writes.push(update(kind, &current, m, metadata)?);
            }
            Ok(_) => {
                return Err(ApiError::Conflict(format!(
                    "{} {id} is deleted; restore it first",
                    kind.label
                )));
            }
            Err(StoreError::NotFound) => {
                let (child, metadata) = new_record(&state.spec, kind, access.tm.id, Some(id), item)?;
                writes.push(ChildWrite::Insert { child, metadata });
            }
            Err(e) => return Err(e.into()),
        }
    }
    let status = if kind.kind == "document" {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    commit(&state, kind, writes, status).await
}

/// `PATCH …/threats/bulk`: `{"patches": [{"id", "operations"}]}`, each a JSON Patch with the same
/// allowlist as `PATCH …/threats/{id}` (200).
pub async fn patch_all(
    kind: &'static Kind,
    State(state): State<AppState>,
    access: TmAccess,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let patches = match body.get("patches") {
        Some(Value::Array(p)) => p.clone(),
        _ => return Err(ApiError::invalid("patches must be an array")),
    };
    check_count(kind, patches.len())?;
    let mut seen = HashSet::new();
    let mut writes = Vec::new();
    for mut p in patches {
        let ops = p
            .get("operations")
            .cloned()
            .ok_or_else(|| ApiError::invalid("Every patch needs operations"))?;
        let id = take_id(&mut p, &mut seen)?;
        let current = live::child(state.store.as_ref(), access.tm.id, kind, id).await?;
        let (m, metadata) = patched(&state.spec, state.store.as_ref(), kind, &current, &ops).await?;
        writes.push(update(kind, &current, m, metadata)?);
    }
    commit(&state, kind, writes, StatusCode::OK).await
}

/// `DELETE …/threats/bulk?threat_ids=a,b`: soft-deletes every listed threat (200 with
/// `{deleted_count, deleted_ids}`); an unknown id is a 404.
pub async fn delete_all(
    kind: &'static Kind,
    State(state): State<AppState>,
    access: TmAccess,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let param = format!("{}_ids", kind.kind);
    let raw_ids = Params::parse(raw.as_deref()).list(&param);
    check_count(kind, raw_ids.len())?;
    let mut seen = HashSet::new();
    let mut writes = Vec::new();
    let mut ids = Vec::new();
    for raw_id in raw_ids {
        let id = Uuid::parse_str(&raw_id)
            .map_err(|_| ApiError::invalid_id(format!("Invalid {param} entry {raw_id:?}: must be a UUID")))?;
        if !seen.insert(id) {
            return Err(ApiError::invalid(format!("Duplicate id {id} in {param}")));
        }
        let current = live::child(state.store.as_ref(), access.tm.id, kind, id).await?;
        writes.push(ChildWrite::Update {
            child: tombstone(&current),
            expected_version: current.version,
            metadata: None,
        });
        ids.push(id);
    }
    state.store.write_children(&writes).await?;
    Ok(Json(json!({"deleted_count": ids.len(), "deleted_ids": ids})).into_response())
}
