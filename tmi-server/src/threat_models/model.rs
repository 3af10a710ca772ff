//! The threat model on the wire: response documents, list items, ACL normalization and the
//! defaults TMI bakes into new models (tmi-compat.md §1.3, §3.2). Pure.

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::store::{AccessRecord, MetadataEntry, ThreatModelRecord, ThreatModelSummary};

/// The five recognised frameworks (`ValidThreatModelFrameworks`).
pub const FRAMEWORKS: &[&str] = &["CIA", "STRIDE", "LINDDUN", "DIE", "PLOT4ai"];

/// Now, truncated to microseconds like TMI.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// RFC 3339 UTC with microseconds.
pub fn rfc3339(dt: &DateTime<Utc>) -> String {
    dt.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A `User` principal.
pub fn user_json(provider: &str, provider_id: &str, name: &str, email: &str) -> Value {
    let display = if name.is_empty() { provider_id } else { name };
    let mut u = json!({
        "principal_type": "user",
        "provider": provider,
        "provider_id": provider_id,
        "display_name": display,
    });
    if !email.is_empty() {
        u["email"] = json!(email);
    }
    u
}

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

/// The key of an ACL subject.
pub fn subject_key(e: &Value) -> (String, String, String) {
    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    (s("principal_type"), s("provider"), s("provider_id"))
}

/// ACL entries in their queryable form.
pub fn access_records(acl: &[Value]) -> Vec<AccessRecord> {
    acl.iter()
        .map(|e| {
            let (principal_type, provider, provider_id) = subject_key(e);
            AccessRecord {
                principal_type,
                provider,
                provider_id,
                role: e
                    .get("role")
                    .and_then(Value::as_str)
                    .unwrap_or("reader")
                    .to_owned(),
            }
        })
        .collect()
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

/// Validates metadata entries from a body: unique keys.
pub fn metadata_entries(v: Option<&Value>) -> Result<Option<Vec<MetadataEntry>>, ApiError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let entries: Vec<MetadataEntry> =
        serde_json::from_value(v.clone()).map_err(|e| ApiError::invalid(format!("Invalid metadata: {e}")))?;
    crate::metadata::validate_entries(&entries)?;
    Ok(Some(entries))
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

    #[test]
    fn timestamps_have_microseconds() {
        let t = now();
        assert!(rfc3339(&t).ends_with('Z'));
        assert_eq!(rfc3339(&t).split('.').nth(1).map(|f| f.len()), Some(7));
    }
}
