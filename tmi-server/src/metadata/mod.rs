//! Key/value metadata on threat models and their children (tmi-compat.md §1.11): list, create
//! (409 on an existing key), get/put/delete one key, and bulk create/replace/upsert. HTTP
//! handlers and routes over `domain::metadata` (the key and entry rules); IO through the store.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use uuid::Uuid;

use crate::domain::kinds::{KINDS, Kind};
use crate::domain::live;
use crate::domain::metadata::{missing_key, parse as entries, put_entry, validate_entries};
use crate::error::ApiError;
use crate::extract::{JsonBody, Path, TmAccess};
use crate::routes::Routes;
use crate::state::AppState;
use crate::store::{MetadataEntry, StoreError};

/// The entity whose metadata a request addresses; children must be live.
async fn entity(
    state: &AppState,
    access: &TmAccess,
    kind: Option<&Kind>,
    p: &HashMap<String, String>,
) -> Result<(&'static str, Uuid), ApiError> {
    match kind {
        None => Ok(("threat_model", access.tm.id)),
        Some(k) => {
            let id = p
                .get(k.id_param)
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(|| ApiError::invalid_id(format!("Invalid {}", k.id_param)))?;
            live::child(state.store.as_ref(), access.tm.id, k, id).await?;
            let kind: &'static str = KINDS
                .iter()
                .find(|x| x.kind == k.kind)
                .map_or("threat_model", |x| x.kind);
            Ok((kind, id))
        }
    }
}

fn bulk_limit(kind: Option<&Kind>) -> usize {
    kind.map_or(20, |k| k.metadata_bulk_limit)
}

async fn list(
    state: AppState,
    access: TmAccess,
    kind: Option<&'static Kind>,
    p: HashMap<String, String>,
) -> Result<Json<Vec<MetadataEntry>>, ApiError> {
    let (_, id) = entity(&state, &access, kind, &p).await?;
    Ok(Json(state.store.list_metadata(id).await?))
}

async fn create(
    state: AppState,
    access: TmAccess,
    kind: Option<&'static Kind>,
    p: HashMap<String, String>,
    body: Value,
) -> Result<Response, ApiError> {
    let (t, id) = entity(&state, &access, kind, &p).await?;
    let e: MetadataEntry = serde_json::from_value(body).map_err(|e| ApiError::invalid(e.to_string()))?;
    validate_entries(std::slice::from_ref(&e))?;
    match state.store.insert_metadata(t, id, std::slice::from_ref(&e)).await {
        Err(StoreError::Conflict) => Err(ApiError::Conflict(format!(
            "Metadata key {:?} already exists",
            e.key
        ))),
        r => {
            r?;
            Ok((StatusCode::CREATED, Json(e)).into_response())
        }
    }
}

async fn get_key(
    state: AppState,
    access: TmAccess,
    kind: Option<&'static Kind>,
    p: HashMap<String, String>,
) -> Result<Json<MetadataEntry>, ApiError> {
    let (_, id) = entity(&state, &access, kind, &p).await?;
    let key = p.get("key").cloned().unwrap_or_default();
    state
        .store
        .list_metadata(id)
        .await?
        .into_iter()
        .find(|e| e.key == key)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("Metadata key"))
}

async fn put_key(
    state: AppState,
    access: TmAccess,
    kind: Option<&'static Kind>,
    p: HashMap<String, String>,
    body: Value,
) -> Result<Json<MetadataEntry>, ApiError> {
    let (_, id) = entity(&state, &access, kind, &p).await?;
    let e = put_entry(p.get("key").cloned().unwrap_or_default(), &body)?;
    state
        .store
        .update_metadata_value(id, &e.key, &e.value)
        .await
        .map_err(missing_key)?;
    Ok(Json(e))
}

async fn delete_key(
    state: AppState,
    access: TmAccess,
    kind: Option<&'static Kind>,
    p: HashMap<String, String>,
) -> Result<StatusCode, ApiError> {
    let (_, id) = entity(&state, &access, kind, &p).await?;
    let key = p.get("key").cloned().unwrap_or_default();
    state.store.delete_metadata(id, &key).await.map_err(missing_key)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Clone, Copy)]
enum Bulk {
    Create,
    Replace,
    Upsert,
}

async fn bulk(
    state: AppState,
    access: TmAccess,
    kind: Option<&'static Kind>,
    p: HashMap<String, String>,
    body: Value,
    mode: Bulk,
) -> Result<Response, ApiError> {
    let (t, id) = entity(&state, &access, kind, &p).await?;
    let items = entries(body)?;
    if items.len() > bulk_limit(kind) {
        return Err(ApiError::invalid(format!(
            "At most {} metadata entries per bulk request",
            bulk_limit(kind)
        )));
    }
    validate_entries(&items)?;
    let status = match mode {
        Bulk::Create => {
            state
                .store
                .insert_metadata(t, id, &items)
                .await
                .map_err(|e| match e {
                    StoreError::Conflict => ApiError::Conflict("A metadata key already exists".into()),
                    other => other.into(),
                })?;
            StatusCode::CREATED
        }
        Bulk::Replace => {
            state.store.replace_metadata(t, id, &items).await?;
            StatusCode::OK
        }
        Bulk::Upsert => {
            state.store.upsert_metadata(t, id, &items).await?;
            StatusCode::OK
        }
    };
    Ok((status, Json(state.store.list_metadata(id).await?)).into_response())
}

/// The metadata routes under `base` (a threat model, or one kind of child when `kind` is set).
fn routes(r: Routes, base: &str, kind: Option<&'static Kind>) -> Routes {
    let collection = format!("{base}/metadata");
    let bulk_path = format!("{base}/metadata/bulk");
    let key = format!("{base}/metadata/{{key}}");
    r.get(
        &collection,
        move |State(s): State<AppState>, a: TmAccess, Path(p): Path<HashMap<String, String>>| {
            list(s, a, kind, p)
        },
    )
    .post(
        &collection,
        move |State(s): State<AppState>,
              a: TmAccess,
              Path(p): Path<HashMap<String, String>>,
              JsonBody(b): JsonBody| { create(s, a, kind, p, b) },
    )
    .post(
        &bulk_path,
        move |State(s): State<AppState>,
              a: TmAccess,
              Path(p): Path<HashMap<String, String>>,
              JsonBody(b): JsonBody| { bulk(s, a, kind, p, b, Bulk::Create) },
    )
    .put(
        &bulk_path,
        move |State(s): State<AppState>,
              a: TmAccess,
              Path(p): Path<HashMap<String, String>>,
              JsonBody(b): JsonBody| { bulk(s, a, kind, p, b, Bulk::Replace) },
    )
    .patch(
        &bulk_path,
        move |State(s): State<AppState>,
              a: TmAccess,
              Path(p): Path<HashMap<String, String>>,
              JsonBody(b): JsonBody| { bulk(s, a, kind, p, b, Bulk::Upsert) },
    )
    .get(
        &key,
        move |State(s): State<AppState>, a: TmAccess, Path(p): Path<HashMap<String, String>>| {
            get_key(s, a, kind, p)
        },
    )
    .put(
        &key,
        move |State(s): State<AppState>,
              a: TmAccess,
              Path(p): Path<HashMap<String, String>>,
              JsonBody(b): JsonBody| { put_key(s, a, kind, p, b) },
    )
    .delete(
        &key,
        move |State(s): State<AppState>, a: TmAccess, Path(p): Path<HashMap<String, String>>| {
            delete_key(s, a, kind, p)
        },
    )
}

/// Metadata on threat models and on each kind of child.
pub fn router() -> Routes {
    let mut r = routes(Routes::new(), "/threat_models/{threat_model_id}", None);
    for k in KINDS {
        let base = format!(
            "/threat_models/{{threat_model_id}}/{}/{{{}}}",
            k.plural, k.id_param
        );
        r = routes(r, &base, Some(k));
    }
    r
}
