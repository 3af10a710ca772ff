//! A child resource on the wire: the response document restricted to its schema's properties,
//! and its list form. Pure.

use serde_json::{Map, Value, json};

use super::kinds::Kind;
use super::wire::rfc3339;
use crate::openapi::Spec;
use crate::store::{ChildRecord, MetadataEntry};

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
    full.retain(|k, v| allowed.contains(k) && !v.is_null());
    Value::Object(full)
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
