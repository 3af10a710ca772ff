//! The rules of `PATCH /threat_models/{id}` (RFC 6902 JSON Patch): the allowlist of paths, the
//! owner-only and security-reviewer-only changes, re-validation of the patched fields as a
//! `ThreatModelInput`, ownership transfer and reviewer assignment (both keep the owner role in the
//! ACL). The result is the next record and, when the patch touched it, the new metadata; the
//! handler writes it. IO: reads metadata and resolves users through the `Store` trait.

use json_patch::Patch;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::acl::{self, Duplicates};
use super::metadata;
use super::threat_model::{self, clean_input};
use super::wire::{now, rfc3339};
use crate::authz::Role;
use crate::error::ApiError;
use crate::input;
use crate::openapi::Spec;
use crate::patch;
use crate::store::{MetadataEntry, Store, ThreatModelRecord};

/// Fields a threat-model JSON Patch may touch (default deny, `api/patch_allowlist.go`).
pub const PATCHABLE: &[&str] = &[
    "name",
    "description",
    "issue_uri",
    "metadata",
    "threat_model_framework",
    "project_id",
    "authorization",
    "owner",
    "status",
    "security_reviewer",
];

/// The plain fields that must still form a valid `ThreatModelInput` after the patch.
const INPUT_FIELDS: &[&str] = &[
    "name",
    "description",
    "threat_model_framework",
    "issue_uri",
    "metadata",
    "authorization",
];

/// What the caller may do: their role on the threat model and whether they are a security reviewer.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub role: Role,
    pub security_reviewer: bool,
}

/// The document before and after the patch, and which top-level members the patch names.
struct Patched {
    before: Value,
    after: Value,
    touched: Vec<String>,
}

impl Patched {
    /// Whether the patch names `k` and actually changed it.
    fn changed(&self, k: &str) -> bool {
        self.touched.iter().any(|t| t == k) && self.before.get(k) != self.after.get(k)
    }

    fn after(&self, k: &str) -> Value {
        self.after.get(k).cloned().unwrap_or(Value::Null)
    }
}

/// Applies the JSON Patch `ops` to `current`: the next record and `Some(metadata)` when the patch
/// changed the metadata.
pub async fn apply(
    store: &dyn Store,
    spec: &Spec,
    caller: Caller,
    current: &ThreatModelRecord,
    ops: &Value,
) -> Result<(ThreatModelRecord, Option<Vec<MetadataEntry>>), ApiError> {
    let (ops, touched) = parse(ops, caller)?;
    let metadata_now = store.list_metadata(current.id).await?;
    let p = patch_document(current, &metadata_now, &ops, touched)?;
    let input = validated_input(spec, &p.after)?;

    let mut next = current.clone();
    set_plain_fields(&mut next, &input)?;
    if p.changed("project_id") {
        set_project(&mut next, p.after("project_id"))?;
        crate::domain::teams::check_project(store, next.doc.get("project_id")).await?;
    }
    if p.changed("status") {
        set_status(&mut next, caller, p.after.get("status"))?;
    }
    if p.changed("owner") {
        transfer_ownership(store, &mut next, current, caller, p.after.get("owner")).await?;
    }
    if p.changed("security_reviewer") {
        assign_reviewer(store, &mut next, caller, p.after("security_reviewer")).await?;
    }
    if p.changed("authorization") {
        let entries = p.after("authorization").as_array().cloned().unwrap_or_default();
        let list = acl::normalize(store, &entries, Duplicates::LastWins).await?;
        acl::set(&mut next, current, list, caller.role)?;
    }
    let metadata = if p.changed("metadata") {
        metadata::from_body(input.get("metadata"))?.or(Some(vec![]))
    } else {
        None
    };
    Ok((next, metadata))
}

/// The operations within the allowlist; owner-only paths are refused by path, whatever the values.
fn parse(ops: &Value, caller: Caller) -> Result<(Patch, Vec<String>), ApiError> {
    let (ops, touched) = patch::parse(ops, PATCHABLE)?;
    if caller.role != Role::Owner && touched.iter().any(|t| t == "authorization" || t == "owner") {
        return Err(ApiError::forbidden(
            "Only the owner can change the authorization list or the owner",
        ));
    }
    Ok((ops, touched))
}

/// The response document with absent patchable fields as null (so that `replace`, which needs an
/// existing member, works on them), before and after the operations.
fn patch_document(
    current: &ThreatModelRecord,
    metadata_now: &[MetadataEntry],
    ops: &Patch,
    touched: Vec<String>,
) -> Result<Patched, ApiError> {
    let mut before = threat_model::response(current, metadata_now);
    for k in PATCHABLE {
        if before.get(*k).is_none() {
            before[*k] = Value::Null;
        }
    }
    let after = patch::apply(&before, ops)?;
    Ok(Patched {
        before,
        after,
        touched,
    })
}

/// The writable plain fields after the patch, cleaned, as a valid `ThreatModelInput`.
fn validated_input(spec: &Spec, after: &Value) -> Result<Value, ApiError> {
    let mut input = Map::new();
    for k in INPUT_FIELDS {
        if let Some(v) = after.get(*k).filter(|v| !v.is_null()) {
            input.insert((*k).into(), v.clone());
        }
    }
    let mut input = Value::Object(input);
    if let Err(errors) = spec.validate_component("ThreatModelInput", &input) {
        return Err(ApiError::invalid(format!(
            "Patched threat model is invalid: {}",
            errors.join("; ")
        )));
    }
    if let Some(at) = input::find_injection(&input, "") {
        return Err(ApiError::invalid(format!(
            "Potentially unsafe content in field {at}"
        )));
    }
    clean_input(spec, &mut input)?;
    Ok(input)
}

/// Name, description, issue URI and framework from the validated input.
fn set_plain_fields(next: &mut ThreatModelRecord, input: &Value) -> Result<(), ApiError> {
    next.name = input["name"].as_str().unwrap_or_default().trim().to_owned();
    next.doc["name"] = json!(next.name);
    for k in ["description", "issue_uri"] {
        next.doc[k] = input.get(k).cloned().unwrap_or(Value::Null);
    }
    next.doc["threat_model_framework"] = json!(threat_model::framework(input.get("threat_model_framework"))?);
    Ok(())
}

/// `project_id`: a UUID or null.
fn set_project(next: &mut ThreatModelRecord, p: Value) -> Result<(), ApiError> {
    if !(p.is_null() || p.as_str().is_some_and(|s| Uuid::parse_str(s).is_ok())) {
        return Err(ApiError::invalid("project_id must be a UUID or null"));
    }
    next.doc["project_id"] = p;
    Ok(())
}

/// `status` (security reviewers only): a non-empty string of at most 128 characters, normalized;
/// `status_updated` becomes now.
fn set_status(next: &mut ThreatModelRecord, caller: Caller, status: Option<&Value>) -> Result<(), ApiError> {
    if !caller.security_reviewer {
        return Err(ApiError::forbidden(
            "Only security reviewers can change the status",
        ));
    }
    let status = match status {
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 128 => input::normalize_enum(s),
        _ => {
            return Err(ApiError::invalid(
                "status must be a string of at most 128 characters",
            ));
        }
    };
    next.status = status.clone();
    next.doc["status"] = json!(status);
    next.doc["status_updated"] = json!(rfc3339(&now()));
    Ok(())
}

/// The user a patch names (`owner` or `security_reviewer`), resolved like an ACL entry, without
/// its role.
async fn resolve_user(store: &dyn Store, provider: &str, pid: &str) -> Result<Value, ApiError> {
    let resolved = acl::normalize(
        store,
        &[json!({"principal_type": "user", "provider": provider, "provider_id": pid, "role": "owner"})],
        Duplicates::LastWins,
    )
    .await?;
    let mut user = resolved.into_iter().next().unwrap_or_default();
    if let Value::Object(m) = &mut user {
        m.remove("role");
    }
    Ok(user)
}

/// The ACL of `rec` as stored in its document.
fn current_acl(rec: &ThreatModelRecord) -> Vec<Value> {
    rec.doc
        .get("authorization")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// `owner` (the owner only): the new owner; the previous owner keeps the owner role in the ACL.
async fn transfer_ownership(
    store: &dyn Store,
    next: &mut ThreatModelRecord,
    current: &ThreatModelRecord,
    caller: Caller,
    owner: Option<&Value>,
) -> Result<(), ApiError> {
    if caller.role != Role::Owner {
        return Err(ApiError::forbidden("Only the owner can transfer ownership"));
    }
    let o = owner
        .filter(|o| o.is_object())
        .ok_or_else(|| ApiError::invalid("owner must be a user"))?;
    let provider = o.get("provider").and_then(Value::as_str).unwrap_or_default();
    let pid = o.get("provider_id").and_then(Value::as_str).unwrap_or_default();
    if provider.is_empty() || pid.is_empty() {
        return Err(ApiError::invalid("owner needs provider and provider_id"));
    }
    let new_owner = resolve_user(store, provider, pid).await?;
    let previous = acl::owner_entry(current);
    next.owner_provider = provider.to_owned();
    next.owner_provider_id = new_owner["provider_id"].as_str().unwrap_or(pid).to_owned();
    next.owner_email = new_owner
        .get("email")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    next.doc["owner"] = new_owner;
    let mut list = current_acl(current);
    acl::ensure(&mut list, previous, Role::Owner);
    next.doc["authorization"] = json!(list);
    next.access = acl::access_records(&list);
    Ok(())
}

/// `security_reviewer` (security reviewers; the owner may clear it): the reviewer gets the owner
/// role in the ACL.
async fn assign_reviewer(
    store: &dyn Store,
    next: &mut ThreatModelRecord,
    caller: Caller,
    r: Value,
) -> Result<(), ApiError> {
    let clearing = r.is_null();
    if !(caller.security_reviewer || (clearing && caller.role == Role::Owner)) {
        return Err(ApiError::forbidden(
            "Only security reviewers can assign the security reviewer",
        ));
    }
    if clearing {
        next.reviewer_email = None;
        next.doc["security_reviewer"] = Value::Null;
        return Ok(());
    }
    let provider = r.get("provider").and_then(Value::as_str).unwrap_or_default();
    let pid = r.get("provider_id").and_then(Value::as_str).unwrap_or_default();
    if provider.is_empty() || pid.is_empty() {
        return Err(ApiError::invalid(
            "security_reviewer needs provider and provider_id",
        ));
    }
    let reviewer = resolve_user(store, provider, pid).await?;
    next.reviewer_email = reviewer.get("email").and_then(Value::as_str).map(str::to_owned);
    let mut list = current_acl(next);
    acl::ensure(&mut list, reviewer.clone(), Role::Owner);
    next.doc["security_reviewer"] = reviewer;
    next.doc["authorization"] = json!(list);
    next.access = acl::access_records(&list);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::wire::user_json;
    use crate::store::Sqlite;

    async fn store() -> (Sqlite, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let s = Sqlite::connect(&format!("sqlite://{}/t.db", dir.path().display()), 1)
            .await
            .unwrap();
        s.migrate().await.unwrap();
        (s, dir)
    }

    fn model() -> ThreatModelRecord {
        let at = chrono::Utc::now();
        let owner = user_json("tmi", "alice", "Alice", "alice@tmi.local");
        let mut owner_entry = owner.clone();
        owner_entry["role"] = json!("owner");
        ThreatModelRecord {
            id: Uuid::new_v4(),
            alias: 1,
            name: "TM".into(),
            owner_provider: "tmi".into(),
            owner_provider_id: "alice".into(),
            owner_email: "alice@tmi.local".into(),
            reviewer_email: None,
            status: "not_started".into(),
            version: 1,
            created_at: at,
            modified_at: at,
            deleted_at: None,
            doc: json!({
                "name": "TM",
                "threat_model_framework": "STRIDE",
                "owner": owner,
                "authorization": [owner_entry],
                "status": "not_started",
            }),
            access: vec![],
        }
    }

    fn status(e: ApiError) -> u16 {
        e.status_and_code().0.as_u16()
    }

    const WRITER: Caller = Caller {
        role: Role::Writer,
        security_reviewer: false,
    };

    #[tokio::test]
    async fn the_patch_rules_decide_who_may_change_what() {
        let (store, _dir) = store().await;
        let spec = Spec::embedded().unwrap();
        let tm = model();
        let replace = |path: &str, value: Value| json!([{"op": "replace", "path": path, "value": value}]);

        // Owner-only paths are refused by path, before anything is read.
        let acl = replace("/authorization", json!([]));
        let e = apply(&store, &spec, WRITER, &tm, &acl).await.unwrap_err();
        assert_eq!(status(e), 403);
        // The status is for security reviewers.
        let to_review = replace("/status", json!("In Review"));
        let e = apply(&store, &spec, WRITER, &tm, &to_review).await.unwrap_err();
        assert_eq!(status(e), 403);
        let reviewer = Caller {
            security_reviewer: true,
            ..WRITER
        };
        let (next, metadata) = apply(&store, &spec, reviewer, &tm, &to_review).await.unwrap();
        assert_eq!(next.status, "in_review", "normalized like request bodies");
        assert!(next.doc["status_updated"].is_string());
        assert!(metadata.is_none(), "metadata untouched");
        // Paths outside the allowlist, and results that are no valid ThreatModelInput, are 400.
        let e = apply(&store, &spec, WRITER, &tm, &replace("/alias", json!(7)))
            .await
            .unwrap_err();
        assert_eq!(status(e), 400);
        let e = apply(&store, &spec, WRITER, &tm, &replace("/name", json!(7)))
            .await
            .unwrap_err();
        assert_eq!(status(e), 400);
        // A metadata change comes back for the handler to write.
        let add = json!([{"op": "add", "path": "/metadata/-", "value": {"key": "k", "value": "v"}}]);
        let (_, metadata) = apply(&store, &spec, WRITER, &tm, &add).await.unwrap();
        assert_eq!(metadata.map(|m| m.len()), Some(1));
    }

    #[tokio::test]
    async fn transferring_ownership_keeps_the_previous_owner_as_owner() {
        let (store, _dir) = store().await;
        let spec = Spec::embedded().unwrap();
        let tm = model();
        let owner = Caller {
            role: Role::Owner,
            security_reviewer: false,
        };
        let to_bob = json!([{"op": "replace", "path": "/owner", "value": {
            "principal_type": "user", "provider": "tmi", "provider_id": "bob", "display_name": "bob"
        }}]);
        let e = apply(&store, &spec, WRITER, &tm, &to_bob).await.unwrap_err();
        assert_eq!(status(e), 403);
        let (next, _) = apply(&store, &spec, owner, &tm, &to_bob).await.unwrap();
        assert_eq!(next.owner_provider_id, "bob");
        assert!(
            next.access
                .iter()
                .any(|a| a.provider_id == "alice" && a.role == "owner")
        );
    }
}
