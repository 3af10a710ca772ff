//! Key/value metadata on threat models and their children (tmi-compat.md §1.11): list, create
//! (409 on an existing key), get/put/delete one key, and bulk create/replace/upsert.

use std::collections::{HashMap, HashSet};

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use uuid::Uuid;

use crate::error::ApiError;
use crate::gate::{JsonBody, TmAccess};
use crate::resources::{self, KINDS, Kind};
use crate::state::AppState;
use crate::store::{MetadataEntry, StoreError};

/// Key rule of the upstream handlers: `^[a-zA-Z0-9._\-:]{1,256}$`.
pub fn valid_key(key: &str) -> bool {
    (1..=256).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b))
}

/// Checks keys, values (≤1024 bytes) and duplicate keys.
pub fn validate_entries(entries: &[MetadataEntry]) -> Result<(), ApiError> {
    let mut seen = HashSet::new();
    for e in entries {
        if !valid_key(&e.key) {
            return Err(ApiError::invalid(format!("Invalid metadata key {:?}", e.key)));
        }
        if e.value.is_empty() || e.value.len() > 1024 {
            return Err(ApiError::invalid("Metadata values must be 1 to 1024 bytes"));
        }
        if !seen.insert(e.key.as_str()) {
            return Err(ApiError::invalid(format!("Duplicate metadata key {:?}", e.key)));
        }
    }
    Ok(())
}

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
            resources::handlers::live_child(state, access.tm.id, k, id).await?;
            let kind: &'static str = KINDS
                .iter()
                .find(|x| x.kind == k.kind)
                .map_or("threat_model", |x| x.kind);
            Ok((kind, id))
        }
    }
}

fn entries(body: Value) -> Result<Vec<MetadataEntry>, ApiError> {
    serde_json::from_value(body).map_err(|e| ApiError::invalid(format!("Invalid metadata: {e}")))
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
    let key = p.get("key").cloned().unwrap_or_default();
    if !valid_key(&key) {
        return Err(ApiError::invalid("Invalid metadata key"));
    }
    let value = body
        .get("value")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let e = MetadataEntry {
        key: key.clone(),
        value,
    };
    validate_entries(std::slice::from_ref(&e))?;
    state
        .store
        .update_metadata_value(id, &key, &e.value)
        .await
        .map_err(|err| match err {
            StoreError::NotFound => ApiError::not_found("Metadata key"),
            other => other.into(),
        })?;
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
    state
        .store
        .delete_metadata(id, &key)
        .await
        .map_err(|err| match err {
            StoreError::NotFound => ApiError::not_found("Metadata key"),
            other => other.into(),
        })?;
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

macro_rules! metadata_routes {
    ($r:expr, $base:expr, $kind:expr) => {{
        let kind: Option<&'static Kind> = $kind;
        $r.route(
            &format!("{}/metadata", $base),
            get(
                move |State(s): State<AppState>, a: TmAccess, Path(p): Path<HashMap<String, String>>| {
                    list(s, a, kind, p)
                },
            )
            .post(
                move |State(s): State<AppState>,
                      a: TmAccess,
                      Path(p): Path<HashMap<String, String>>,
                      JsonBody(b): JsonBody| { create(s, a, kind, p, b) },
            ),
        )
        .route(
            &format!("{}/metadata/bulk", $base),
            post(
                move |State(s): State<AppState>,
                      a: TmAccess,
                      Path(p): Path<HashMap<String, String>>,
                      JsonBody(b): JsonBody| { bulk(s, a, kind, p, b, Bulk::Create) },
            )
            .put(
                move |State(s): State<AppState>,
                      a: TmAccess,
                      Path(p): Path<HashMap<String, String>>,
                      JsonBody(b): JsonBody| { bulk(s, a, kind, p, b, Bulk::Replace) },
            )
            .patch(
                move |State(s): State<AppState>,
                      a: TmAccess,
                      Path(p): Path<HashMap<String, String>>,
                      JsonBody(b): JsonBody| { bulk(s, a, kind, p, b, Bulk::Upsert) },
            ),
        )
        .route(
            &format!("{}/metadata/{{key}}", $base),
            get(
                move |State(s): State<AppState>, a: TmAccess, Path(p): Path<HashMap<String, String>>| {
                    get_key(s, a, kind, p)
                },
            )
            .put(
                move |State(s): State<AppState>,
                      a: TmAccess,
                      Path(p): Path<HashMap<String, String>>,
                      JsonBody(b): JsonBody| { put_key(s, a, kind, p, b) },
            )
            .delete(
                move |State(s): State<AppState>, a: TmAccess, Path(p): Path<HashMap<String, String>>| {
                    delete_key(s, a, kind, p)
                },
            ),
        )
    }};
}

pub fn router() -> Router<AppState> {
    let mut r = Router::new();
    r = metadata_routes!(r, "/threat_models/{threat_model_id}", None);
    for k in KINDS {
        let base = format!(
            "/threat_models/{{threat_model_id}}/{}/{{{}}}",
            k.plural, k.id_param
        );
        r = metadata_routes!(r, base, Some(k));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values() {
        assert!(
            valid_key("env:prod.v1-x_y")
                && !valid_key("a/b")
                && !valid_key("")
                && !valid_key(&"k".repeat(257))
        );
        let dup = vec![
            MetadataEntry {
                key: "a".into(),
                value: "1".into(),
            },
            MetadataEntry {
                key: "a".into(),
                value: "2".into(),
            },
        ];
        assert!(validate_entries(&dup).is_err());
        assert!(
            validate_entries(&[MetadataEntry {
                key: "a".into(),
                value: "x".repeat(1025)
            }])
            .is_err()
        );
    }
}
