//! RFC 6902 JSON Patch with a per-resource path allowlist (tmi-compat.md §8). Pure.

use json_patch::{Patch, PatchErrorKind, PatchOperation};
use serde_json::Value;

use crate::error::ApiError;

/// The top-level field an operation path targets (`/authorization/0/role` → `authorization`).
fn top_field(path: &str) -> String {
    path.trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("")
        .replace("~1", "/")
        .replace("~0", "~")
}

/// Parses a patch document and returns the top-level fields it touches.
pub fn parse(ops: &Value, allowed: &[&str]) -> Result<(Patch, Vec<String>), ApiError> {
    let patch: Patch = serde_json::from_value(ops.clone())
        .map_err(|e| ApiError::invalid(format!("Invalid JSON Patch document: {e}")))?;
    if patch.0.is_empty() {
        return Err(ApiError::invalid(
            "JSON Patch document must contain at least one operation",
        ));
    }
    let mut touched = Vec::new();
    for op in &patch.0 {
        let mut paths = vec![op.path().as_str().to_owned()];
        match op {
            PatchOperation::Move(m) => paths.push(m.from.as_str().to_owned()),
            PatchOperation::Copy(c) => paths.push(c.from.as_str().to_owned()),
            _ => {}
        }
        for p in paths {
            let field = top_field(&p);
            if p.is_empty() || !allowed.contains(&field.as_str()) {
                return Err(ApiError::invalid(format!("Patching path {p:?} is not allowed")));
            }
            if !matches!(op, PatchOperation::Test(_)) && !touched.contains(&field) {
                touched.push(field);
            }
        }
    }
    Ok((patch, touched))
}

/// Applies a parsed patch to a copy of `doc`. A failed `test` is a 400 `patch_failed`, as upstream
/// answers (not 409: nothing conflicts with another writer, the client's assertion was false).
pub fn apply(doc: &Value, patch: &Patch) -> Result<Value, ApiError> {
    let mut out = doc.clone();
    json_patch::patch(&mut out, &patch.0).map_err(|e| match e.kind {
        PatchErrorKind::TestFailed => {
            ApiError::BadRequest("patch_failed", format!("JSON Patch test failed at {}", e.path))
        }
        _ => ApiError::invalid(format!("JSON Patch could not be applied: {e}")),
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn allowlist_and_test_op() {
        let doc = json!({"name": "a", "authorization": [{"role": "reader"}]});
        let ops = json!([{"op": "test", "path": "/name", "value": "a"}, {"op": "replace", "path": "/name", "value": "b"}]);
        let (p, touched) = parse(&ops, &["name"]).unwrap();
        assert_eq!(touched, vec!["name"]);
        assert_eq!(apply(&doc, &p).unwrap()["name"], "b");
        let failing = json!([{"op": "test", "path": "/name", "value": "zzz"}]);
        let (p, _) = parse(&failing, &["name"]).unwrap();
        assert!(matches!(
            apply(&doc, &p),
            Err(ApiError::BadRequest("patch_failed", _))
        ));
        assert!(
            parse(
                &json!([{"op": "replace", "path": "/id", "value": "x"}]),
                &["name"]
            )
            .is_err()
        );
        assert!(
            parse(
                &json!([{"op": "move", "from": "/id", "path": "/name"}]),
                &["name"]
            )
            .is_err()
        );
        assert!(parse(&json!([{"op": "frobnicate", "path": "/name"}]), &["name"]).is_err());
        assert!(parse(&json!([]), &["name"]).is_err());
        let (_, touched) = parse(
            &json!([{"op": "replace", "path": "/authorization/0/role", "value": "owner"}]),
            &["authorization"],
        )
        .unwrap();
        assert_eq!(touched, vec!["authorization"]);
    }
}
