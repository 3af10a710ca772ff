//! The threat model on the wire: response documents, list items and the framework rule
//! (tmi-compat.md §1.3). Pure.

use serde_json::{Map, Value, json};

use super::wire::rfc3339;
use crate::error::ApiError;
use crate::store::{MetadataEntry, ThreatModelRecord, ThreatModelSummary};

/// The five recognised frameworks (`ValidThreatModelFrameworks`).
pub const FRAMEWORKS: &[&str] = &["CIA", "STRIDE", "LINDDUN", "DIE", "PLOT4ai"];

/// Validates and defaults the framework.
pub fn framework(v: Option<&Value>) -> Result<String, ApiError> {
    match v.and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok("STRIDE".into()),
        Some(f) => FRAMEWORKS
            .iter()
            .find(|k| k.eq_ignore_ascii_case(f))
            .map(|k| (*k).to_owned())
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "threat_model_framework must be one of {}",
                    FRAMEWORKS.join(", ")
                ))
            }),
    }
}

/// Strips HTML tags from a text member (`name`, `description`) of a body.
pub fn clean_text(body: &mut Value, key: &str) {
    if let Some(Value::String(s)) = body.get_mut(key) {
        *s = crate::input::strip_tags(s);
    }
}

/// The full response (children arrays are added by the caller when needed).
pub fn response(rec: &ThreatModelRecord, metadata: &[MetadataEntry]) -> Value {
    let mut doc = match &rec.doc {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    doc.insert("id".into(), json!(rec.id));
    doc.insert("name".into(), json!(rec.name));
    doc.insert("status".into(), json!(rec.status));
    doc.insert("alias".into(), json!(rec.alias));
    doc.insert("version".into(), json!(rec.version));
    doc.insert("created_at".into(), json!(rfc3339(&rec.created_at)));
    doc.insert("modified_at".into(), json!(rfc3339(&rec.modified_at)));
    match &rec.deleted_at {
        Some(d) => doc.insert("deleted_at".into(), json!(rfc3339(d))),
        None => doc.remove("deleted_at"),
    };
    doc.insert(
        "metadata".into(),
        serde_json::to_value(metadata).unwrap_or_else(|_| json!([])),
    );
    Value::Object(doc)
}

/// A `TMListItem`.
pub fn list_item(s: &ThreatModelSummary) -> Value {
    let full = response(&s.record, &[]);
    let mut item = Map::new();
    for k in [
        "id",
        "name",
        "description",
        "created_at",
        "modified_at",
        "owner",
        "created_by",
        "threat_model_framework",
        "issue_uri",
        "status",
        "status_updated",
        "security_reviewer",
        "deleted_at",
        "alias",
    ] {
        if let Some(v) = full.get(k).filter(|v| !v.is_null()) {
            item.insert(k.into(), v.clone());
        }
    }
    let c = &s.counts;
    for (k, n) in [
        ("document_count", c.documents),
        ("repo_count", c.repositories),
        ("diagram_count", c.diagrams),
        ("threat_count", c.threats),
        ("asset_count", c.assets),
        ("note_count", c.notes),
    ] {
        item.insert(k.into(), json!(n));
    }
    Value::Object(item)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frameworks() {
        assert_eq!(framework(None).unwrap(), "STRIDE");
        assert_eq!(framework(Some(&json!(""))).unwrap(), "STRIDE");
        assert_eq!(framework(Some(&json!("plot4ai"))).unwrap(), "PLOT4ai");
        assert!(framework(Some(&json!("OWASP"))).is_err());
    }
}
