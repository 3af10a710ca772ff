//! The threat model (tmi-compat.md §1.3, §3): a new model from a create body (defaults, the
//! creator as owner, the initial ACL), the PUT rules (name required, `is_confidential` fixed at
//! creation, ACL changes by the owner), the successor every write stores, soft delete and restore,
//! and the model on the wire (response documents, list items, the framework rule). IO: resolving
//! ACL users through the `Store` trait; the rest is pure.

use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::acl::{self, Duplicates};
use super::metadata;
use super::uris;
use super::wire::{now, rfc3339, user_json};
use crate::authz::Role;
use crate::error::ApiError;
use crate::input::html;
use crate::openapi::Spec;
use crate::store::{MetadataEntry, Store, ThreatModelRecord, ThreatModelSummary, UserRecord};

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

/// Cleans the text members of a `ThreatModelInput` body: `name` and `description` are plain text
/// (`input::html::plain_text`), a blank `issue_uri` is dropped and any other must be an http(s) URL, and the
/// results must satisfy the `ThreatModel` response schema they are read back through (names: no `<>"'&`).
pub fn clean_input(spec: &Spec, body: &mut Value) -> Result<(), ApiError> {
    let Value::Object(m) = body else {
        return Ok(());
    };
    for key in ["name", "description"] {
        if let Some(Value::String(s)) = m.get_mut(key) {
            *s = html::plain_text(key, s)?;
        }
    }
    uris::optional_http_url(m, "issue_uri")?;
    let mut stored = m.clone();
    if let Some(Value::String(name)) = stored.get_mut("name") {
        *name = name.trim().to_owned();
    }
    spec.validate_properties("ThreatModel", &stored)
        .map_err(|errors| ApiError::invalid(format!("Invalid threat model: {}", errors.join("; "))))
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

/// A `TMListItem`: the listed fields of `response`, built from the record without copying the whole
/// document first (the list of 25 showed in the API benchmark's profile).
pub fn list_item(s: &ThreatModelSummary) -> Value {
    let rec = &s.record;
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
        // As `response` sets them: the record's columns override the document.
        let v = match k {
            "id" => json!(rec.id),
            "name" => json!(rec.name),
            "status" => json!(rec.status),
            "alias" => json!(rec.alias),
            "created_at" => json!(rfc3339(&rec.created_at)),
            "modified_at" => json!(rfc3339(&rec.modified_at)),
            "deleted_at" => rec.deleted_at.as_ref().map_or(Value::Null, |d| json!(rfc3339(d))),
            _ => rec.doc.get(k).cloned().unwrap_or(Value::Null),
        };
        if !v.is_null() {
            item.insert(k.into(), v);
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

/// The trimmed, cleaned `name` of a body; 400 when empty.
fn required_name(body: &Value) -> Result<String, ApiError> {
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim()
        .to_owned();
    if name.is_empty() {
        return Err(ApiError::invalid("name is required"));
    }
    Ok(name)
}

/// A document without its null members (absent and null read the same).
pub fn strip_nulls(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.retain(|_, x| !x.is_null());
    }
    v
}

/// A new threat model created by `creator` from a `ThreatModelInput` body, and its metadata: the
/// creator owns it, the status is `not_started`, the ACL is `acl::for_new_model`.
pub async fn new_model(
    store: &dyn Store,
    spec: &Spec,
    creator: &UserRecord,
    mut body: Value,
) -> Result<(ThreatModelRecord, Vec<MetadataEntry>), ApiError> {
    clean_input(spec, &mut body)?;
    let name = required_name(&body)?;
    let framework = framework(body.get("threat_model_framework"))?;
    let confidential = body
        .get("is_confidential")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let metadata = metadata::from_body(body.get("metadata"))?.unwrap_or_default();
    let requested: Vec<Value> = body
        .get("authorization")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let owner = user_json(
        &creator.provider,
        &creator.provider_user_id,
        &creator.name,
        &creator.email,
    );
    let acl = acl::for_new_model(store, &owner, &requested, confidential).await?;
    let ts = now();
    let doc = json!({
        "name": name,
        "description": body.get("description").cloned().unwrap_or(Value::Null),
        "threat_model_framework": framework,
        "authorization": acl,
        "owner": owner,
        "created_by": owner,
        "status": "not_started",
        "status_updated": rfc3339(&ts),
        "security_reviewer": Value::Null,
        "project_id": Value::Null,
        "issue_uri": body.get("issue_uri").cloned().unwrap_or(Value::Null),
        "is_confidential": confidential,
    });
    let rec = ThreatModelRecord {
        id: Uuid::new_v4(),
        alias: 0,
        name,
        owner_provider: creator.provider.clone(),
        owner_provider_id: creator.provider_user_id.clone(),
        owner_email: creator.email.clone(),
        reviewer_email: None,
        status: "not_started".into(),
        version: 1,
        created_at: ts,
        modified_at: ts,
        deleted_at: None,
        access: acl::access_records(&acl),
        doc: strip_nulls(doc),
    };
    Ok((rec, metadata))
}

/// The PUT of a threat model by a caller with `role`: the writable fields replaced, the ACL (when
/// the body has one) normalized and checked by `acl::set`, and `Some(metadata)` when the body
/// sets it. `is_confidential` can only be repeated, never changed.
pub async fn replaced(
    store: &dyn Store,
    spec: &Spec,
    current: &ThreatModelRecord,
    role: Role,
    mut body: Value,
) -> Result<(ThreatModelRecord, Option<Vec<MetadataEntry>>), ApiError> {
    clean_input(spec, &mut body)?;
    if let Some(c) = body.get("is_confidential").and_then(Value::as_bool)
        && c != current
            .doc
            .get("is_confidential")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    {
        return Err(ApiError::invalid(
            "is_confidential can only be set when the threat model is created",
        ));
    }
    let mut next = current.clone();
    next.name = required_name(&body)?;
    next.doc["name"] = json!(next.name);
    next.doc["description"] = body.get("description").cloned().unwrap_or(Value::Null);
    next.doc["issue_uri"] = body.get("issue_uri").cloned().unwrap_or(Value::Null);
    next.doc["threat_model_framework"] = json!(framework(body.get("threat_model_framework"))?);
    if let Some(entries) = body.get("authorization").and_then(Value::as_array) {
        let list = acl::normalize(store, entries, Duplicates::Reject).await?;
        acl::set(&mut next, current, list, role)?;
    }
    let metadata = metadata::from_body(body.get("metadata"))?;
    Ok((next, metadata))
}

/// What a write of `next` over `current` stores: the next version, modified now, no nulls.
pub fn successor(mut next: ThreatModelRecord, current: &ThreatModelRecord) -> ThreatModelRecord {
    next.version = current.version + 1;
    next.modified_at = now();
    next.doc = strip_nulls(next.doc);
    next
}

/// The soft-deleted successor of a threat model.
pub fn tombstone(current: &ThreatModelRecord) -> ThreatModelRecord {
    let mut next = current.clone();
    next.version += 1;
    next.deleted_at = Some(now());
    next.modified_at = now();
    next
}

/// The restored successor of a soft-deleted threat model; 404 when it is not deleted.
pub fn restored(current: &ThreatModelRecord) -> Result<ThreatModelRecord, ApiError> {
    if current.deleted_at.is_none() {
        return Err(ApiError::not_found("Deleted threat model"));
    }
    let mut next = current.clone();
    next.version += 1;
    next.deleted_at = None;
    next.modified_at = now();
    Ok(next)
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

    async fn store() -> (crate::store::Sqlite, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let s = crate::store::Sqlite::connect(&format!("sqlite://{}/t.db", dir.path().display()), 1)
            .await
            .unwrap();
        s.migrate().await.unwrap();
        (s, dir)
    }

    fn alice() -> UserRecord {
        UserRecord {
            internal_uuid: Uuid::new_v4(),
            provider: "tmi".into(),
            provider_user_id: "alice".into(),
            email: "alice@tmi.local".into(),
            name: "Alice".into(),
            email_verified: false,
        }
    }

    fn role_of(rec: &ThreatModelRecord, id: &str) -> Option<String> {
        rec.access
            .iter()
            .find(|a| a.provider_id == id)
            .map(|a| a.role.clone())
    }

    #[tokio::test]
    async fn a_new_model_is_owned_by_its_creator_with_the_default_groups() {
        let (store, _dir) = store().await;
        let e = new_model(
            &store,
            &Spec::embedded().unwrap(),
            &alice(),
            json!({"name": "  "}),
        )
        .await
        .unwrap_err();
        assert_eq!(e.status_and_code().0.as_u16(), 400);
        let (rec, metadata) = new_model(
            &store,
            &Spec::embedded().unwrap(),
            &alice(),
            json!({"name": "<i>TM</i>"}),
        )
        .await
        .unwrap();
        assert_eq!(rec.name, "TM");
        assert_eq!((rec.status.as_str(), rec.version), ("not_started", 1));
        assert_eq!(rec.doc["threat_model_framework"], "STRIDE");
        assert!(rec.doc.get("issue_uri").is_none(), "nulls are not stored");
        assert_eq!(role_of(&rec, "alice").as_deref(), Some("owner"));
        assert_eq!(role_of(&rec, "security-reviewers").as_deref(), Some("owner"));
        assert_eq!(role_of(&rec, "tmi-automation").as_deref(), Some("writer"));
        assert!(metadata.is_empty());
        let (confidential, _) = new_model(
            &store,
            &Spec::embedded().unwrap(),
            &alice(),
            json!({"name": "C", "is_confidential": true}),
        )
        .await
        .unwrap();
        assert_eq!(
            role_of(&confidential, "confidential-project-reviewers").as_deref(),
            Some("owner")
        );
    }

    #[tokio::test]
    async fn a_put_keeps_confidentiality_and_only_the_owner_changes_the_acl() {
        let (store, _dir) = store().await;
        let (current, _) = new_model(
            &store,
            &Spec::embedded().unwrap(),
            &alice(),
            json!({"name": "TM"}),
        )
        .await
        .unwrap();
        let e = replaced(
            &store,
            &Spec::embedded().unwrap(),
            &current,
            Role::Owner,
            json!({"name": "TM", "is_confidential": true}),
        )
        .await
        .unwrap_err();
        assert_eq!(e.status_and_code().0.as_u16(), 400);
        let bob =
            json!([{"principal_type": "user", "provider": "tmi", "provider_id": "bob", "role": "reader"}]);
        let e = replaced(
            &store,
            &Spec::embedded().unwrap(),
            &current,
            Role::Writer,
            json!({"name": "TM", "authorization": bob}),
        )
        .await
        .unwrap_err();
        assert_eq!(e.status_and_code().0.as_u16(), 403);
        let (next, metadata) = replaced(
            &store,
            &Spec::embedded().unwrap(),
            &current,
            Role::Owner,
            json!({"name": "TM 2", "authorization": bob}),
        )
        .await
        .unwrap();
        assert_eq!(next.name, "TM 2");
        assert_eq!(role_of(&next, "bob").as_deref(), Some("reader"));
        assert_eq!(
            role_of(&next, "alice").as_deref(),
            Some("owner"),
            "the owner stays"
        );
        assert!(metadata.is_none());
        let stored = successor(next, &current);
        assert_eq!(stored.version, current.version + 1);
        assert!(restored(&stored).is_err(), "not deleted");
        assert!(restored(&tombstone(&stored)).is_ok());
    }
}
