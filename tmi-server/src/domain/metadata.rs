//! Metadata rules (tmi-compat.md §1.11): the key pattern, value sizes, unique keys, and reading
//! entries from a request body. Pure.

use std::collections::HashSet;

use serde_json::Value;

use crate::error::ApiError;
use crate::store::MetadataEntry;

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

/// Entries from a request body (a JSON array of `{key, value}`), not yet validated.
pub fn parse(body: Value) -> Result<Vec<MetadataEntry>, ApiError> {
    serde_json::from_value(body).map_err(|e| ApiError::invalid(format!("Invalid metadata: {e}")))
}

/// The `metadata` member of a create or update body, validated; `None` when absent or null.
pub fn from_body(v: Option<&Value>) -> Result<Option<Vec<MetadataEntry>>, ApiError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let entries: Vec<MetadataEntry> =
        serde_json::from_value(v.clone()).map_err(|e| ApiError::invalid(format!("Invalid metadata: {e}")))?;
    validate_entries(&entries)?;
    Ok(Some(entries))
}

/// The entry a `PUT …/metadata/{key}` writes: the path's key and the body's `value`, both validated.
pub fn put_entry(key: String, body: &Value) -> Result<MetadataEntry, ApiError> {
    if !valid_key(&key) {
        return Err(ApiError::invalid("Invalid metadata key"));
    }
    let value = body
        .get("value")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let e = MetadataEntry { key, value };
    validate_entries(std::slice::from_ref(&e))?;
    Ok(e)
}

/// A store error of a write to one metadata key: a missing key is the contract's 404.
pub fn missing_key(e: crate::store::StoreError) -> ApiError {
    match e {
        crate::store::StoreError::NotFound => ApiError::not_found("Metadata key"),
        other => other.into(),
    }
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
