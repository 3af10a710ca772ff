//! The rules of `/me/preferences` (contract `UserPreferences`): at most 20 clients, each keyed by
//! 1–64 letters, digits, `_` or `-`, each an object, and at most 1 KiB in all. Pure.

use serde_json::Value;

use crate::error::ApiError;

/// Largest serialized document.
pub const MAX_BYTES: usize = 1024;
/// Most client entries.
pub const MAX_CLIENTS: usize = 20;

fn valid_key(k: &str) -> bool {
    (1..=64).contains(&k.len())
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks a preferences document as the contract describes it; 400 otherwise.
pub fn validate(doc: &Value) -> Result<(), ApiError> {
    let Value::Object(clients) = doc else {
        return Err(ApiError::invalid("Preferences must be a JSON object"));
    };
    if clients.len() > MAX_CLIENTS {
        return Err(ApiError::invalid(format!(
            "Preferences hold at most {MAX_CLIENTS} clients"
        )));
    }
    if let Some(k) = clients.keys().find(|k| !valid_key(k)) {
        return Err(ApiError::invalid(format!(
            "Invalid client key {k:?}: 1-64 letters, digits, '_' or '-'"
        )));
    }
    if let Some((k, _)) = clients.iter().find(|(_, v)| !v.is_object()) {
        return Err(ApiError::invalid(format!(
            "Preferences of client {k:?} must be an object"
        )));
    }
    let size = serde_json::to_vec(doc).map_err(ApiError::internal)?.len();
    if size > MAX_BYTES {
        return Err(ApiError::invalid(format!(
            "Preferences are {size} bytes; at most {MAX_BYTES} are allowed"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_size_and_shape() {
        assert!(validate(&json!({})).is_ok());
        assert!(validate(&json!({"tmi-ux": {"theme": "dark"}, "tmi_cli": {}})).is_ok());
        assert!(validate(&json!({"bad key": {}})).is_err());
        assert!(validate(&json!({"": {}})).is_err());
        assert!(validate(&json!({"k".repeat(65): {}})).is_err());
        assert!(validate(&json!({"tmi-ux": "dark"})).is_err());
        assert!(validate(&json!({"tmi-ux": {"blob": "x".repeat(1100)}})).is_err());
        let many: serde_json::Map<String, Value> = (0..21).map(|i| (format!("c{i}"), json!({}))).collect();
        assert!(validate(&Value::Object(many)).is_err());
    }
}
