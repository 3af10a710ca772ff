//! Metadata of teams and projects: list, create (409 on an existing key), put and delete one key,
//! and the bulk forms. The contract documents no 403 here and upstream checks only that the team or
//! project exists, so any signed-in caller may use them (docs/server.md). The bulk PATCH body is the
//! contract's `BulkPatchRequest`: each item's `id` must be the unit's, and its `operations` are a
//! JSON Patch applied to the unit's metadata seen as one object (`{"key": "value", …}`). IO through
//! the store.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::handlers::unit;
use super::{Params, id_param, uuid_param};
use crate::domain::metadata::{missing_key, parse as entries, put_entry, validate_entries};
use crate::domain::teams::UnitKind;
use crate::error::ApiError;
use crate::extract::{JsonBody, Path};
use crate::patch;
use crate::state::AppState;
use crate::store::{MetadataEntry, StoreError};

/// The unit whose metadata the path addresses; 404 when it does not exist.
async fn entity(state: &AppState, kind: &UnitKind, p: &HashMap<String, String>) -> Result<Uuid, ApiError> {
    Ok(unit(state, kind, uuid_param(p, id_param(kind))?).await?.id)
}

/// `GET …/metadata`.
pub async fn list(
    State(state): State<AppState>,
    Path(p): Params,
    kind: &'static UnitKind,
) -> Result<Json<Vec<MetadataEntry>>, ApiError> {
    let id = entity(&state, kind, &p).await?;
    Ok(Json(state.store.list_metadata(id).await?))
}

/// `POST …/metadata`.
pub async fn create(
    State(state): State<AppState>,
    Path(p): Params,
    JsonBody(body): JsonBody,
    kind: &'static UnitKind,
) -> Result<Response, ApiError> {
    let id = entity(&state, kind, &p).await?;
    let e: MetadataEntry = serde_json::from_value(body).map_err(|e| ApiError::invalid(e.to_string()))?;
    validate_entries(std::slice::from_ref(&e))?;
    state
        .store
        .insert_metadata(kind.kind, id, std::slice::from_ref(&e))
        .await
        .map_err(|err| match err {
            StoreError::Conflict => ApiError::Conflict(format!("Metadata key {:?} already exists", e.key)),
            other => other.into(),
        })?;
    Ok((StatusCode::CREATED, Json(e)).into_response())
}

/// `PUT …/metadata/{key}`: a new value for an existing key.
pub async fn put_key(
    State(state): State<AppState>,
    Path(p): Params,
    JsonBody(body): JsonBody,
    kind: &'static UnitKind,
) -> Result<Json<MetadataEntry>, ApiError> {
    let id = entity(&state, kind, &p).await?;
    let e = put_entry(p.get("key").cloned().unwrap_or_default(), &body)?;
    state
        .store
        .update_metadata_value(id, &e.key, &e.value)
        .await
        .map_err(missing_key)?;
    Ok(Json(e))
}

/// `DELETE …/metadata/{key}`.
pub async fn delete_key(
    State(state): State<AppState>,
    Path(p): Params,
    kind: &'static UnitKind,
) -> Result<StatusCode, ApiError> {
    let id = entity(&state, kind, &p).await?;
    let key = p.get("key").cloned().unwrap_or_default();
    state.store.delete_metadata(id, &key).await.map_err(missing_key)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The array forms of the bulk operations.
#[derive(Clone, Copy)]
pub enum Bulk {
    /// `POST …/metadata/bulk`: 409 (and nothing written) when any key exists.
    Create,
    /// `PUT …/metadata/bulk`: the whole set.
    Replace,
}

/// `POST` and `PUT …/metadata/bulk`; answers the unit's metadata afterwards.
pub async fn bulk(
    State(state): State<AppState>,
    Path(p): Params,
    JsonBody(body): JsonBody,
    kind: &'static UnitKind,
    mode: Bulk,
) -> Result<Response, ApiError> {
    let id = entity(&state, kind, &p).await?;
    let items = entries(body)?;
    validate_entries(&items)?;
    let status = match mode {
        Bulk::Create => {
            state
                .store
                .insert_metadata(kind.kind, id, &items)
                .await
                .map_err(|e| match e {
                    StoreError::Conflict => ApiError::Conflict("A metadata key already exists".into()),
                    other => other.into(),
                })?;
            StatusCode::CREATED
        }
        Bulk::Replace => {
            state.store.replace_metadata(kind.kind, id, &items).await?;
            StatusCode::OK
        }
    };
    Ok((status, Json(state.store.list_metadata(id).await?)).into_response())
}

/// The metadata after a bulk patch: every operation applied to `{"key": "value", …}` in order,
/// keys kept in their order with new ones last; values must stay strings.
fn patched(
    current: &[MetadataEntry],
    items: &[Value],
    unit_id: Uuid,
) -> Result<Vec<MetadataEntry>, ApiError> {
    let mut doc = Map::new();
    for e in current {
        doc.insert(e.key.clone(), Value::String(e.value.clone()));
    }
    let mut doc = Value::Object(doc);
    for item in items {
        let target = item["id"].as_str().and_then(|s| Uuid::parse_str(s).ok());
        if target != Some(unit_id) {
            return Err(ApiError::invalid(format!(
                "Each patch's id must be the id in the path ({unit_id})"
            )));
        }
        let keys: Vec<String> = doc
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let (ops, _) = patch::parse(
            &item["operations"],
            &keys
                .iter()
                .map(String::as_str)
                .chain(patch_targets(&item["operations"]))
                .collect::<Vec<_>>(),
        )?;
        doc = patch::apply(&doc, &ops)?;
    }
    let mut out: Vec<MetadataEntry> = Vec::new();
    let Value::Object(m) = doc else {
        return Err(ApiError::invalid("Metadata must remain an object of keys"));
    };
    let mut rest: Vec<(String, Value)> = m.into_iter().collect();
    // Existing keys first, in their order; then the new ones.
    for e in current {
        if let Some(i) = rest.iter().position(|(k, _)| *k == e.key) {
            let (k, v) = rest.remove(i);
            out.push(entry(k, v)?);
        }
    }
    for (k, v) in rest {
        out.push(entry(k, v)?);
    }
    validate_entries(&out)?;
    Ok(out)
}

/// The top-level keys the operations name (any key may be added).
fn patch_targets(ops: &Value) -> impl Iterator<Item = &str> {
    ops.as_array().into_iter().flatten().flat_map(|op| {
        ["path", "from"]
            .into_iter()
            .filter_map(move |f| op.get(f).and_then(Value::as_str))
            .map(|p| p.trim_start_matches('/').split('/').next().unwrap_or(""))
    })
}

fn entry(key: String, value: Value) -> Result<MetadataEntry, ApiError> {
    match value {
        Value::String(value) => Ok(MetadataEntry { key, value }),
        _ => Err(ApiError::invalid(format!(
            "Metadata value of {key:?} must be a string"
        ))),
    }
}

/// `PATCH …/metadata/bulk` (`BulkPatchRequest`): creates, updates and removes keys; answers the
/// unit's metadata afterwards.
pub async fn bulk_patch(
    State(state): State<AppState>,
    Path(p): Params,
    JsonBody(body): JsonBody,
    kind: &'static UnitKind,
) -> Result<Response, ApiError> {
    let id = entity(&state, kind, &p).await?;
    let items = body
        .get("patches")
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| ApiError::invalid("patches is required"))?;
    let current = state.store.list_metadata(id).await?;
    let next = patched(&current, &items, id)?;
    state.store.replace_metadata(kind.kind, id, &next).await?;
    Ok((StatusCode::OK, Json(state.store.list_metadata(id).await?)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bulk_patch_adds_replaces_and_removes_keys() {
        let id = Uuid::new_v4();
        let current = vec![
            MetadataEntry {
                key: "a".into(),
                value: "1".into(),
            },
            MetadataEntry {
                key: "b".into(),
                value: "2".into(),
            },
        ];
        let items = vec![json!({"id": id.to_string(), "operations": [
            {"op": "replace", "path": "/a", "value": "10"},
            {"op": "remove", "path": "/b"},
            {"op": "add", "path": "/c", "value": "3"}
        ]})];
        let out = patched(&current, &items, id).unwrap();
        assert_eq!(
            out,
            vec![
                MetadataEntry {
                    key: "a".into(),
                    value: "10".into()
                },
                MetadataEntry {
                    key: "c".into(),
                    value: "3".into()
                },
            ]
        );
        let other =
            vec![json!({"id": Uuid::new_v4().to_string(), "operations": [{"op": "remove", "path": "/a"}]})];
        assert!(patched(&current, &other, id).is_err());
        let number =
            vec![json!({"id": id.to_string(), "operations": [{"op": "add", "path": "/n", "value": 1}]})];
        assert!(patched(&current, &number, id).is_err());
    }
}
