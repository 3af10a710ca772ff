//! Child-resource handlers, shared by all six kinds: list, create, get, update (PUT), patch
//! (JSON Patch), delete (soft) and restore.

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
use crate::domain::children::{list_item, response};
use crate::domain::kinds::Kind;
use crate::domain::wire::now;
use crate::domain::{admin, diagrams, live, metadata, sessions};
use crate::error::ApiError;
use crate::extract::{JsonBody, Path, TmAccess};
use crate::input;
use crate::input::query::Params;
use crate::state::AppState;
use crate::store::{ChildRecord, MetadataEntry};
use crate::versioning::{self, Precondition};

/// Fields the server owns; sending them is a 400 (tmi-compat.md §1.13).
const PROHIBITED: &[&str] = &[
    "id",
    "created_at",
    "modified_at",
    "alias",
    "version",
    "deleted_at",
    "threat_model_id",
    "update_vector",
    "auto_generated",
];

fn child_id(kind: &Kind, params: &HashMap<String, String>) -> Result<Uuid, ApiError> {
    params
        .get(kind.id_param)
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| ApiError::invalid_id(format!("Invalid {}", kind.id_param)))
}

/// Checks fields and cleans text; returns the input object.
fn prepare(state: &AppState, kind: &Kind, schema: &str, body: Value) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(mut m) = body else {
        return Err(ApiError::invalid("Request body must be a JSON object"));
    };
    let allowed = state.spec.property_names(schema);
    for k in m.keys() {
        if PROHIBITED.contains(&k.as_str()) {
            return Err(ApiError::invalid(format!(
                "Field {k} is set by the server and cannot be provided"
            )));
        }
        if !allowed.contains(k) {
            return Err(ApiError::invalid(format!("Unknown field {k}")));
        }
    }
    for k in ["name", "description", "mitigation"] {
        if let Some(Value::String(s)) = m.get_mut(k) {
            *s = input::strip_tags(s).trim().to_owned();
        }
    }
    if let Some(Value::String(s)) = m.get_mut("content") {
        *s = input::sanitize_markdown(s);
    }
    if kind.kind == "threat"
        && let Some(score) = m.get("score").and_then(Value::as_f64)
        && ((score * 10.0).round() - score * 10.0).abs() > 1e-9
    {
        return Err(ApiError::invalid("score allows at most one decimal place"));
    }
    if m.get("name").and_then(Value::as_str).is_some_and(str::is_empty) {
        return Err(ApiError::invalid("name must not be empty"));
    }
    Ok(m)
}

/// Server-side defaults for a new child.
fn defaults(state: &AppState, kind: &Kind, m: &mut Map<String, Value>) {
    let props = state.spec.property_names(kind.response_schema);
    for flag in ["include_in_report", "timmy_enabled"] {
        if props.iter().any(|p| p == flag) {
            m.entry(flag).or_insert(json!(true));
        }
    }
    if kind.kind == "document" {
        m.insert("access_status".into(), json!("unknown"));
    }
    if kind.kind == "diagram" {
        m.entry("cells").or_insert(json!([]));
        m.insert("update_vector".into(), json!(0));
    }
    if kind.kind == "threat" {
        m.entry("threat_type").or_insert(json!([]));
    }
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
        && !admin::is_administrator(state.store.as_ref(), user.user.internal_uuid).await?
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

/// A new child of `threat_model_id` from a create body (`id` set by the server unless given).
pub fn new_record(
    state: &AppState,
    kind: &Kind,
    threat_model_id: Uuid,
    id: Option<Uuid>,
    body: Value,
) -> Result<(ChildRecord, Vec<MetadataEntry>), ApiError> {
    let mut m = prepare(state, kind, kind.create_schema, body)?;
    let metadata = metadata::from_body(m.remove("metadata").as_ref())?.unwrap_or_default();
    defaults(state, kind, &mut m);
    let ts = now();
    let c = ChildRecord {
        id: id.unwrap_or_else(Uuid::new_v4),
        threat_model_id,
        kind: kind.kind.into(),
        alias: 0,
        version: 1,
        created_at: ts,
        modified_at: ts,
        deleted_at: None,
        doc: Value::Object(m),
    };
    Ok((c, metadata))
}

/// `POST …/{kind}`.
pub async fn create(
    kind: &'static Kind,
    State(state): State<AppState>,
    access: TmAccess,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let (mut c, metadata) = new_record(&state, kind, access.tm.id, None, body)?;
    c.alias = state.store.insert_child(&c, &metadata).await?;
    let mut res = respond(&state, kind, &c, StatusCode::CREATED).await?;
    let location = format!("/threat_models/{}/{}/{}", access.tm.id, kind.plural, c.id);
    if let Ok(v) = location.parse() {
        res.headers_mut().insert(header::LOCATION, v);
    }
    Ok(res)
}

/// `GET …/{kind}/{id}`.
pub async fn get(
    kind: &'static Kind,
    State(state): State<AppState>,
    access: TmAccess,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let c = live::child(state.store.as_ref(), access.tm.id, kind, child_id(kind, &p)?).await?;
    respond(&state, kind, &c, StatusCode::OK).await
}

/// The next version of `current` with the writable fields `m`, keeping the server-owned fields of
/// its document `previous`.
pub fn successor(
    kind: &Kind,
    current: &ChildRecord,
    previous: Map<String, Value>,
    mut m: Map<String, Value>,
) -> Result<ChildRecord, ApiError> {
    for keep in [
        "access_status",
        "content_source",
        "access_diagnostics",
        "access_status_updated_at",
        "auto_generated",
        "update_vector",
    ] {
        if let Some(v) = previous.get(keep) {
            m.entry(keep).or_insert(v.clone());
        }
    }
    for flag in ["include_in_report", "timmy_enabled"] {
        if let Some(v) = previous.get(flag) {
            m.entry(flag).or_insert(v.clone());
        }
    }
    if kind.kind == "diagram" {
        diagrams::finish(&mut m, &previous)?;
    }
    let mut next = current.clone();
    next.doc = Value::Object(m);
    next.version = current.version + 1;
    next.modified_at = now();
    Ok(next)
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
    let next = successor(kind, &current, previous, m)?;
    state
        .store
        .update_child(&next, current.version, metadata.as_deref())
        .await?;
    let mut res = respond(state, kind, &next, StatusCode::OK).await?;
    if kind.versioned {
        versioning::decorate(&mut res, next.version, pre);
    }
    Ok(res)
}

fn precondition(
    state: &AppState,
    kind: &Kind,
    headers: &HeaderMap,
    c: &ChildRecord,
) -> Result<Precondition, ApiError> {
    if kind.versioned {
        versioning::check(headers, c.version, state.config.require_if_match)
    } else {
        Ok(Precondition::Matched)
    }
}

/// The writable fields of a child and, when the request sets them, its metadata.
pub type Writable = (Map<String, Value>, Option<Vec<MetadataEntry>>);

/// The writable fields and metadata of a full-replacement body.
pub fn replacement(state: &AppState, kind: &Kind, body: Value) -> Result<Writable, ApiError> {
    let mut m = prepare(state, kind, kind.update_schema, body)?;
    let metadata = metadata::from_body(m.remove("metadata").as_ref())?;
    Ok((m, metadata))
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
    let (m, metadata) = replacement(&state, kind, body)?;
    write(&state, kind, current, m, metadata, pre).await
}

/// The writable fields and (when the patch touches them) the metadata after applying the JSON
/// Patch `ops` to `current`, with the same allowlist and validation as a PUT.
pub async fn patched(
    state: &AppState,
    kind: &Kind,
    current: &ChildRecord,
    ops: &Value,
) -> Result<Writable, ApiError> {
    let writable = state.spec.property_names(kind.update_schema);
    let allowed: Vec<&str> = writable.iter().map(String::as_str).collect();
    let (patch, touched) = crate::patch::parse(ops, &allowed)?;
    let meta = state.store.list_metadata(current.id).await?;
    let mut before = response(&state.spec, kind, current, &meta, false);
    for k in &writable {
        if before.get(k).is_none() {
            before[k.as_str()] = Value::Null;
        }
    }
    let after = crate::patch::apply(&before, &patch)?;
    let mut input = Map::new();
    if let Value::Object(a) = &after {
        for (k, v) in a {
            if writable.contains(k) && !v.is_null() {
                input.insert(k.clone(), v.clone());
            }
        }
    }
    if kind.kind == "diagram" {
        for c in input
            .get_mut("cells")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            diagrams::normalize_cell(c);
        }
    }
    let mut input_value = Value::Object(input);
    input::normalize_enums(&mut input_value);
    if let Err(errors) = state.spec.validate_component(kind.update_schema, &input_value) {
        return Err(ApiError::invalid(format!(
            "Patched {} is invalid: {}",
            kind.kind,
            errors.join("; ")
        )));
    }
    if let Some(at) = input::find_injection(&input_value, "") {
        return Err(ApiError::invalid(format!(
            "Potentially unsafe content in field {at}"
        )));
    }
    let mut m = prepare(state, kind, kind.update_schema, input_value)?;
    let metadata_value = m.remove("metadata");
    let metadata = if touched.iter().any(|t| t == "metadata") {
        Some(metadata::from_body(metadata_value.as_ref())?.unwrap_or_default())
    } else {
        None
    };
    Ok((m, metadata))
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
    let (m, metadata) = patched(&state, kind, &current, &ops).await?;
    write(&state, kind, current, m, metadata, pre).await
}

/// `DELETE …/{kind}/{id}`: soft delete.
pub async fn delete(
    kind: &'static Kind,
    State(state): State<AppState>,
    access: TmAccess,
    Path(p): Path<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    let current = live::child(state.store.as_ref(), access.tm.id, kind, child_id(kind, &p)?).await?;
    sessions::ensure_none_on_child(state.collab.as_ref(), kind, current.id).await?;
    state
        .store
        .update_child(&tombstone(&current), current.version, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The soft-deleted successor of a child (single and bulk delete).
pub fn tombstone(current: &ChildRecord) -> ChildRecord {
    let at = now();
    let mut next = current.clone();
    next.version += 1;
    next.deleted_at = Some(at);
    next.modified_at = at;
    next
}

/// `POST …/{kind}/{id}/restore` (owner).
pub async fn restore(
    kind: &'static Kind,
    State(state): State<AppState>,
    access: TmAccess,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let id = child_id(kind, &p)?;
    let current = live::deleted_child(state.store.as_ref(), access.tm.id, kind, id).await?;
    let mut next = current.clone();
    next.version += 1;
    next.deleted_at = None;
    next.modified_at = now();
    state.store.update_child(&next, current.version, None).await?;
    respond(&state, kind, &next, StatusCode::OK).await
}
