//! The rules of a child resource (one set for all six kinds, `kinds::Kind` says what differs): the
//! fields a body may set and how text is cleaned, server-side defaults, the successor a PUT,
//! PATCH, delete or restore writes (keeping server-owned fields), and the response document
//! restricted to its schema's properties with its list form. Shared by the single and the bulk
//! endpoints. IO: `patched` reads the current metadata through the `Store` trait; the rest is pure.

use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::diagrams;
use super::kinds::Kind;
use super::metadata;
use super::uris;
use super::wire::{now, rfc3339};
use crate::error::ApiError;
use crate::input;
use crate::input::html;
use crate::openapi::Spec;
use crate::patch;
use crate::store::{ChildRecord, MetadataEntry, Store};

/// The response document, restricted to the response schema's properties; `embedded` selects the
/// form used inside a threat model (assets are `ExtendedAsset` there).
pub fn response(
    spec: &Spec,
    kind: &Kind,
    c: &ChildRecord,
    metadata: &[MetadataEntry],
    embedded: bool,
) -> Value {
    let schema = if embedded && kind.kind == "asset" {
        "ExtendedAsset"
    } else {
        kind.response_schema
    };
    let allowed = spec.property_names(schema);
    let mut full = match &c.doc {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    full.insert("id".into(), json!(c.id));
    full.insert("threat_model_id".into(), json!(c.threat_model_id));
    full.insert("alias".into(), json!(c.alias));
    full.insert("version".into(), json!(c.version));
    full.insert("created_at".into(), json!(rfc3339(&c.created_at)));
    full.insert("modified_at".into(), json!(rfc3339(&c.modified_at)));
    if let Some(d) = &c.deleted_at {
        full.insert("deleted_at".into(), json!(rfc3339(d)));
    }
    full.insert(
        "metadata".into(),
        serde_json::to_value(metadata).unwrap_or_else(|_| json!([])),
    );
    for (field, default) in response_defaults(kind) {
        if full.get(field).is_none_or(Value::is_null) {
            full.insert(field.into(), default);
        }
    }
    full.retain(|k, v| allowed.contains(k) && !v.is_null());
    Value::Object(full)
}

/// Fields upstream always sends for a kind, with the value it sends when nothing set them.
fn response_defaults(kind: &Kind) -> Vec<(&'static str, Value)> {
    match kind.kind {
        "threat" => vec![("mitigated", json!(false)), ("auto_generated", json!(false))],
        "diagram" => vec![("image", json!({})), ("auto_generated", json!(false))],
        _ => Vec::new(),
    }
}

/// The list form of a child.
pub fn list_item(spec: &Spec, kind: &Kind, c: &ChildRecord, metadata: &[MetadataEntry]) -> Value {
    let mut v = response(spec, kind, c, metadata, false);
    if let (Some(schema), Value::Object(m)) = (kind.list_item_schema, &mut v) {
        let allowed = spec.property_names(schema);
        m.retain(|k, _| allowed.contains(k));
    }
    v
}

/// Fields the server owns; sending them is a 400 (tmi-compat.md §1.13).
pub const PROHIBITED: &[&str] = &[
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

/// The plain-text fields of a child (`input::html::plain_text`); note `content` is Markdown.
const PLAIN_TEXT: &[&str] = &["name", "description", "mitigation"];

/// Checks fields and cleans text; returns the input object. Server-owned fields are refused; other
/// fields the schema does not name are dropped, as upstream does (where the schema forbids extra
/// properties the gate has already refused them).
fn prepare(spec: &Spec, kind: &Kind, schema: &str, body: Value) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(mut m) = body else {
        return Err(ApiError::invalid("Request body must be a JSON object"));
    };
    if let Some(k) = m.keys().find(|k| PROHIBITED.contains(&k.as_str())) {
        return Err(ApiError::invalid(format!(
            "Field {k} is set by the server and cannot be provided"
        )));
    }
    let allowed = spec.property_names(schema);
    m.retain(|k, _| allowed.contains(k));
    for k in PLAIN_TEXT {
        if let Some(Value::String(s)) = m.get_mut(*k) {
            *s = html::plain_text(k, s)?.trim().to_owned();
        }
    }
    if let Some(Value::String(s)) = m.get_mut("content") {
        let clean = html::markdown("content", s)?;
        if clean.trim().is_empty() && !s.trim().is_empty() {
            return Err(ApiError::invalid(
                "content is empty after sanitization; it consisted entirely of markup that is not permitted",
            ));
        }
        *s = clean;
    }
    if matches!(kind.kind, "document" | "repository")
        && let Some(Value::String(uri)) = m.get_mut("uri")
    {
        uris::check_http_url("uri", uri)?;
        *uri = uri.trim().to_owned();
    }
    uris::optional_http_url(&mut m, "issue_uri")?;
    // Stored text is read back through the response schema, whose patterns are stricter than the input's
    // (names: no `<>"'&`; descriptions: no `<>`): hold the input to them.
    spec.validate_properties(kind.response_schema, &m)
        .map_err(|errors| ApiError::invalid(format!("Invalid {}: {}", kind.kind, errors.join("; "))))?;
    if kind.kind == "threat"
        && let Some(score) = m.get("score").and_then(Value::as_f64)
        && ((score * 10.0).round() - score * 10.0).abs() > 1e-9
    {
        return Err(ApiError::invalid("score allows at most one decimal place"));
    }
    if m.get("name").and_then(Value::as_str).is_some_and(str::is_empty) {
        return Err(ApiError::invalid("name must not be empty"));
    }
    if kind.kind == "diagram"
        && let Some(Value::Array(cells)) = m.get_mut("cells")
    {
        diagrams::check_cells(spec, cells)?;
    }
    Ok(m)
}

/// Server-side defaults for a new child.
fn defaults(spec: &Spec, kind: &Kind, m: &mut Map<String, Value>) {
    let props = spec.property_names(kind.response_schema);
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

/// A new child of `threat_model_id` from a create body (`id` set by the server unless given).
pub fn new_record(
    spec: &Spec,
    kind: &Kind,
    threat_model_id: Uuid,
    id: Option<Uuid>,
    body: Value,
) -> Result<(ChildRecord, Vec<MetadataEntry>), ApiError> {
    let mut m = prepare(spec, kind, kind.create_schema, body)?;
    let metadata = metadata::from_body(m.remove("metadata").as_ref())?.unwrap_or_default();
    defaults(spec, kind, &mut m);
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

/// The writable fields of a child and, when the request sets them, its metadata.
pub type Writable = (Map<String, Value>, Option<Vec<MetadataEntry>>);

/// The writable fields and metadata of a full-replacement body.
pub fn replacement(spec: &Spec, kind: &Kind, body: Value) -> Result<Writable, ApiError> {
    let mut m = prepare(spec, kind, kind.update_schema, body)?;
    let metadata = metadata::from_body(m.remove("metadata").as_ref())?;
    Ok((m, metadata))
}

/// The writable fields and (when the patch touches them) the metadata after applying the JSON
/// Patch `ops` to `current`, with the same allowlist and validation as a PUT.
pub async fn patched(
    spec: &Spec,
    store: &dyn Store,
    kind: &Kind,
    current: &ChildRecord,
    ops: &Value,
) -> Result<Writable, ApiError> {
    let writable = spec.property_names(kind.update_schema);
    let allowed: Vec<&str> = writable.iter().map(String::as_str).collect();
    let (patch, touched) = patch::parse(ops, &allowed)?;
    let meta = store.list_metadata(current.id).await?;
    let mut before = response(spec, kind, current, &meta, false);
    for k in writable.iter() {
        if before.get(k).is_none() {
            before[k.as_str()] = Value::Null;
        }
    }
    let after = patch::apply(&before, &patch)?;
    let mut input = Map::new();
    if let Value::Object(a) = &after {
        for (k, v) in a {
            if writable.contains(k) && !v.is_null() {
                input.insert(k.clone(), v.clone());
            }
        }
    }
    // Cells are checked one by one in `prepare` (`diagrams::check_cells`, as WebSocket operations
    // are); the rest of the document here, with an empty cell list standing in for them.
    let cells = match input.get_mut("cells") {
        Some(c) if kind.kind == "diagram" => Some(std::mem::replace(c, json!([]))),
        _ => None,
    };
    let mut input_value = Value::Object(input);
    input::normalize_enums(&mut input_value);
    if let Err(errors) = spec.validate_component(kind.update_schema, &input_value) {
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
    if let (Some(cells), Value::Object(m)) = (cells, &mut input_value) {
        m.insert("cells".into(), cells);
    }
    let mut m = prepare(spec, kind, kind.update_schema, input_value)?;
    let metadata_value = m.remove("metadata");
    let metadata = if touched.iter().any(|t| t == "metadata") {
        Some(metadata::from_body(metadata_value.as_ref())?.unwrap_or_default())
    } else {
        None
    };
    Ok((m, metadata))
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

/// The restored successor of a soft-deleted child.
pub fn restored(current: &ChildRecord) -> ChildRecord {
    let mut next = current.clone();
    next.version += 1;
    next.deleted_at = None;
    next.modified_at = now();
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::kinds;

    fn status(e: ApiError) -> u16 {
        e.status_and_code().0.as_u16()
    }

    #[test]
    fn a_body_sets_only_client_fields_and_text_is_cleaned() {
        let spec = Spec::embedded().unwrap();
        let threat = kinds::by_kind("threat").unwrap();
        let tm = Uuid::new_v4();
        let e = new_record(&spec, threat, tm, None, json!({"name": "T", "version": 3})).unwrap_err();
        assert_eq!(status(e), 400, "server-owned field");
        let (c, _) = new_record(&spec, threat, tm, None, json!({"name": "T", "colour": "red"})).unwrap();
        assert!(c.doc.get("colour").is_none(), "unknown fields are dropped");
        let e = new_record(&spec, threat, tm, None, json!({"name": "T", "score": 1.25})).unwrap_err();
        assert_eq!(status(e), 400, "one decimal place");
        let (c, metadata) = new_record(
            &spec,
            threat,
            tm,
            None,
            json!({"name": " <b>T</b> ", "metadata": [{"key": "k", "value": "v"}]}),
        )
        .unwrap();
        assert_eq!(c.doc["name"], "T");
        assert_eq!(c.doc["threat_type"], json!([]), "default");
        assert_eq!((c.version, c.threat_model_id), (1, tm));
        assert_eq!(metadata.len(), 1);
    }

    #[test]
    fn successors_keep_server_owned_fields_and_count_versions() {
        let spec = Spec::embedded().unwrap();
        let document = kinds::by_kind("document").unwrap();
        let (mut current, _) = new_record(
            &spec,
            document,
            Uuid::new_v4(),
            None,
            json!({"name": "D", "uri": "https://x"}),
        )
        .unwrap();
        current.doc["access_status"] = json!("accessible");
        let previous = current.doc.as_object().cloned().unwrap();
        let (m, _) = replacement(&spec, document, json!({"name": "D2", "uri": "https://y"})).unwrap();
        let next = successor(document, &current, previous, m).unwrap();
        assert_eq!(next.doc["access_status"], "accessible");
        assert_eq!(next.doc["name"], "D2");
        assert_eq!(next.version, current.version + 1);
        let gone = tombstone(&next);
        assert!(gone.deleted_at.is_some());
        let back = restored(&gone);
        assert!(back.deleted_at.is_none());
        assert_eq!(back.version, next.version + 2);
    }
}
