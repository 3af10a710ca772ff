//! Threat-model handlers: list, create, get, update (PUT), patch (JSON Patch), delete, restore.
//! Thin: they shape documents with `model`, check owner-only rules and call the store.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use uuid::Uuid;

use super::model::{self, access_records, now, rfc3339, subject_key, user_json};
use crate::auth::AuthUser;
use crate::authz::Role;
use crate::error::ApiError;
use crate::gate::{JsonBody, TmAccess};
use crate::input;
use crate::input::query::Params;
use crate::resources;
use crate::state::AppState;
use crate::store::{ReviewerFilter, ThreatModelFilter, ThreatModelRecord, Viewer};
use crate::versioning;

/// Fields a threat-model JSON Patch may touch (default deny, `api/patch_allowlist.go`).
const PATCHABLE: &[&str] = &[
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

async fn is_admin(state: &AppState, user: &AuthUser) -> Result<bool, ApiError> {
    Ok(state
        .store
        .user_groups(user.user.internal_uuid)
        .await?
        .iter()
        .any(|g| g.group_name == "administrators"))
}

/// The `security_reviewer` filter: `is:null`, `is:notnull` (operators are case-insensitive) or a
/// partial email or display name; any other `<word>:` operator is a 400.
fn reviewer_filter(raw: &str) -> Result<ReviewerFilter, ApiError> {
    let lower = raw.trim().to_ascii_lowercase();
    match lower.as_str() {
        "is:null" => Ok(ReviewerFilter::Unassigned),
        "is:notnull" => Ok(ReviewerFilter::Assigned),
        _ => match raw.split_once(':') {
            Some((op, _)) if !op.is_empty() && op.chars().all(|c| c.is_ascii_alphabetic()) => {
                Err(ApiError::invalid(format!(
                    "unsupported filter operator '{op}' for parameter 'security_reviewer'; \
                     supported operators: is:null, is:notnull"
                )))
            }
            _ => Ok(ReviewerFilter::Matching(raw.to_owned())),
        },
    }
}

/// `GET /threat_models`: the models the caller can read, newest first.
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = Params::parse(raw.as_deref());
    let include_deleted = q.boolean("include_deleted")?.unwrap_or(false);
    if include_deleted && !is_admin(&state, &user).await? {
        return Err(ApiError::forbidden(
            "include_deleted requires administrator privileges",
        ));
    }
    let text = |k: &str| q.get(k).map(str::to_owned);
    let filter = ThreatModelFilter {
        owner: text("owner"),
        security_reviewer: q.get("security_reviewer").map(reviewer_filter).transpose()?,
        statuses: q.enum_list("status"),
        name_contains: text("name"),
        description_contains: text("description"),
        issue_uri_contains: text("issue_uri"),
        created_after: q.timestamp("created_after")?,
        created_before: q.timestamp("created_before")?,
        modified_after: q.timestamp("modified_after")?,
        modified_before: q.timestamp("modified_before")?,
        status_updated_after: q.timestamp("status_updated_after")?,
        status_updated_before: q.timestamp("status_updated_before")?,
        include_deleted,
        limit: q.integer("limit", 20, 100)?.max(1),
        offset: q.integer("offset", 0, 1_000_000_000)?,
    };
    let viewer = Viewer {
        provider: user.provider().to_owned(),
        provider_id: user.provider_id().to_owned(),
        groups: user.groups().to_vec(),
    };
    let (items, total) = state.store.list_threat_models(Some(&viewer), &filter).await?;
    Ok(Json(json!({
        "threat_models": items.iter().map(model::list_item).collect::<Vec<_>>(),
        "total": total,
        "limit": filter.limit,
        "offset": filter.offset,
    })))
}

#[derive(Clone, Copy, PartialEq)]
enum Duplicates {
    Reject,
    LastWins,
}

/// Normalizes request ACL entries: resolves users, maps `everyone` to provider `tmi`, handles duplicates.
async fn normalize_acl(state: &AppState, entries: &[Value], dup: Duplicates) -> Result<Vec<Value>, ApiError> {
    let mut out: Vec<Value> = Vec::new();
    for e in entries {
        let role = e.get("role").and_then(Value::as_str).unwrap_or_default();
        if Role::parse(role).is_none() {
            return Err(ApiError::invalid(
                "authorization role must be reader, writer or owner",
            ));
        }
        let (ptype, mut provider, provider_id) = subject_key(e);
        if provider == "*" {
            return Err(ApiError::invalid("authorization provider \"*\" is not allowed"));
        }
        if provider_id.is_empty() {
            return Err(ApiError::invalid("authorization entries need provider_id"));
        }
        let entry = match ptype.as_str() {
            "group" => {
                if provider_id == "everyone" {
                    provider = "tmi".into();
                }
                json!({"principal_type": "group", "provider": provider, "provider_id": provider_id, "role": role})
            }
            "user" => {
                let found = match state.store.find_user(&provider, &provider_id).await? {
                    Some(u) => Some(u),
                    None if provider_id.contains('@') => {
                        state.store.find_user_by_email(&provider, &provider_id).await?
                    }
                    None => None,
                };
                let mut v = match found {
                    Some(u) => user_json(&u.provider, &u.provider_user_id, &u.name, &u.email),
                    None => {
                        let email = e.get("email").and_then(Value::as_str).unwrap_or_default();
                        let email = if email.is_empty() && provider_id.contains('@') {
                            provider_id.as_str()
                        } else {
                            email
                        };
                        user_json(&provider, &provider_id, &provider_id, email)
                    }
                };
                v["role"] = json!(role);
                v
            }
            _ => return Err(ApiError::invalid("principal_type must be user or group")),
        };
        let key = subject_key(&entry);
        match out.iter().position(|x| subject_key(x) == key) {
            Some(_) if dup == Duplicates::Reject => {
                return Err(ApiError::invalid("Duplicate subjects in authorization list"));
            }
            Some(i) => out[i] = entry,
            None => out.push(entry),
        }
    }
    Ok(out)
}

/// Adds `entry` with at least `role`.
fn ensure(acl: &mut Vec<Value>, entry: Value, role: Role) {
    let key = subject_key(&entry);
    if let Some(existing) = acl.iter_mut().find(|x| subject_key(x) == key) {
        let current = existing.get("role").and_then(Value::as_str).and_then(Role::parse);
        if current < Some(role) {
            existing["role"] = json!(role_str(role));
        }
    } else {
        let mut e = entry;
        e["role"] = json!(role_str(role));
        acl.push(e);
    }
}

fn role_str(r: Role) -> &'static str {
    match r {
        Role::Reader => "reader",
        Role::Writer => "writer",
        Role::Owner => "owner",
    }
}

fn group(name: &str) -> Value {
    json!({"principal_type": "group", "provider": "tmi", "provider_id": name})
}

fn owner_entry(rec: &ThreatModelRecord) -> Value {
    rec.doc
        .get("owner")
        .cloned()
        .unwrap_or_else(|| user_json(&rec.owner_provider, &rec.owner_provider_id, "", &rec.owner_email))
}

/// Sorted (subject, role) pairs, to detect ACL changes.
fn acl_signature(acl: &[Value]) -> Vec<(String, String, String, String)> {
    let mut v: Vec<_> = access_records(acl)
        .into_iter()
        .map(|a| (a.principal_type, a.provider, a.provider_id, a.role))
        .collect();
    v.sort();
    v
}

fn clean_text(body: &mut Value, key: &str) {
    if let Some(Value::String(s)) = body.get_mut(key) {
        *s = input::strip_tags(s);
    }
}

/// `POST /threat_models`.
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(mut body): JsonBody,
) -> Result<Response, ApiError> {
    clean_text(&mut body, "name");
    clean_text(&mut body, "description");
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim()
        .to_owned();
    if name.is_empty() {
        return Err(ApiError::invalid("name is required"));
    }
    let framework = model::framework(body.get("threat_model_framework"))?;
    let confidential = body
        .get("is_confidential")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let metadata = model::metadata_entries(body.get("metadata"))?.unwrap_or_default();
    let requested: Vec<Value> = body
        .get("authorization")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let owner = user_json(
        user.provider(),
        user.provider_id(),
        &user.user.name,
        &user.user.email,
    );

    let mut acl = vec![{
        let mut o = owner.clone();
        o["role"] = json!("owner");
        o
    }];
    for e in normalize_acl(&state, &requested, Duplicates::Reject).await? {
        if subject_key(&e) == subject_key(&acl[0]) {
            continue;
        }
        acl.push(e);
    }
    let reviewers = if confidential {
        "confidential-project-reviewers"
    } else {
        "security-reviewers"
    };
    ensure(&mut acl, group(reviewers), Role::Owner);
    ensure(&mut acl, group("tmi-automation"), Role::Writer);

    let ts = now();
    let id = Uuid::new_v4();
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
    let mut rec = ThreatModelRecord {
        id,
        alias: 0,
        name,
        owner_provider: user.provider().to_owned(),
        owner_provider_id: user.provider_id().to_owned(),
        owner_email: user.user.email.clone(),
        reviewer_email: None,
        status: "not_started".into(),
        version: 1,
        created_at: ts,
        modified_at: ts,
        deleted_at: None,
        access: access_records(&acl),
        doc: strip_nulls(doc),
    };
    rec.alias = state.store.insert_threat_model(&rec, &metadata).await?;
    let mut body = model::response(&rec, &metadata);
    for key in [
        "diagrams",
        "threats",
        "documents",
        "repositories",
        "notes",
        "assets",
    ] {
        body[key] = json!([]);
    }
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/threat_models/{id}"))],
        Json(body),
    )
        .into_response())
}

fn strip_nulls(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.retain(|_, x| !x.is_null());
    }
    v
}

/// The full document of a threat model with its children.
pub async fn full(state: &AppState, rec: &ThreatModelRecord) -> Result<Value, ApiError> {
    let meta = state.store.metadata_under(rec.id).await?;
    let mut body = model::response(rec, meta.get(&rec.id).map(Vec::as_slice).unwrap_or(&[]));
    let children = state.store.list_children(rec.id, None, false).await?;
    let mut groups: HashMap<&str, Vec<Value>> = HashMap::new();
    for c in &children {
        if let Some(kind) = resources::KINDS.iter().find(|k| k.kind == c.kind) {
            let m = meta.get(&c.id).map(Vec::as_slice).unwrap_or(&[]);
            groups
                .entry(kind.plural)
                .or_default()
                .push(resources::response(&state.spec, kind, c, m, true));
        }
    }
    for kind in resources::KINDS {
        body[kind.plural] = json!(groups.remove(kind.plural).unwrap_or_default());
    }
    Ok(body)
}

/// `GET /threat_models/{id}`.
pub async fn get(State(state): State<AppState>, access: TmAccess) -> Result<Json<Value>, ApiError> {
    Ok(Json(full(&state, &access.tm).await?))
}

async fn save(
    state: &AppState,
    mut next: ThreatModelRecord,
    current: &ThreatModelRecord,
    metadata: Option<Vec<crate::store::MetadataEntry>>,
    pre: versioning::Precondition,
) -> Result<Response, ApiError> {
    next.version = current.version + 1;
    next.modified_at = now();
    next.doc = strip_nulls(next.doc);
    state
        .store
        .update_threat_model(&next, current.version, metadata.as_deref())
        .await?;
    let mut res = Json(full(state, &next).await?).into_response();
    versioning::decorate(&mut res, next.version, pre);
    Ok(res)
}

/// Applies the owner-only and reviewer rules to a new ACL and writes it into `next`.
fn set_acl(
    next: &mut ThreatModelRecord,
    current: &ThreatModelRecord,
    mut acl: Vec<Value>,
    role: Role,
) -> Result<(), ApiError> {
    // The owner always keeps the owner role.
    ensure(&mut acl, owner_entry(next), Role::Owner);
    if acl_signature(&acl)
        != acl_signature(
            current
                .doc
                .get("authorization")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[]),
        )
        && role != Role::Owner
    {
        return Err(ApiError::forbidden(
            "Only the owner can change the authorization list",
        ));
    }
    if let Some(reviewer) = next.doc.get("security_reviewer").filter(|r| r.is_object()) {
        let key = subject_key(
            &json!({"principal_type": "user", "provider": reviewer["provider"], "provider_id": reviewer["provider_id"]}),
        );
        let keeps_owner = acl.iter().any(|e| subject_key(e) == key && e["role"] == "owner");
        if !keeps_owner {
            return Err(ApiError::Conflict(
                "The security reviewer must keep the owner role".into(),
            ));
        }
    }
    next.access = access_records(&acl);
    next.doc["authorization"] = json!(acl);
    Ok(())
}

/// `PUT /threat_models/{id}`: full replacement of the writable fields.
pub async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    access: TmAccess,
    JsonBody(mut body): JsonBody,
) -> Result<Response, ApiError> {
    let current = access.tm;
    let pre = versioning::check(&headers, current.version, state.config.require_if_match)?;
    clean_text(&mut body, "name");
    clean_text(&mut body, "description");
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
    next.name = body
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim()
        .to_owned();
    if next.name.is_empty() {
        return Err(ApiError::invalid("name is required"));
    }
    next.doc["name"] = json!(next.name);
    next.doc["description"] = body.get("description").cloned().unwrap_or(Value::Null);
    next.doc["issue_uri"] = body.get("issue_uri").cloned().unwrap_or(Value::Null);
    next.doc["threat_model_framework"] = json!(model::framework(body.get("threat_model_framework"))?);
    if let Some(entries) = body.get("authorization").and_then(Value::as_array) {
        let acl = normalize_acl(&state, entries, Duplicates::Reject).await?;
        set_acl(&mut next, &current, acl, access.role)?;
    }
    let metadata = model::metadata_entries(body.get("metadata"))?;
    save(&state, next, &current, metadata, pre).await
}

/// `PATCH /threat_models/{id}`: RFC 6902 on the model's JSON, within the allowlist.
pub async fn patch(
    State(state): State<AppState>,
    headers: HeaderMap,
    user: AuthUser,
    access: TmAccess,
    JsonBody(ops): JsonBody,
) -> Result<Response, ApiError> {
    let current = access.tm;
    let pre = versioning::check(&headers, current.version, state.config.require_if_match)?;
    let (patch, touched) = crate::patch::parse(&ops, PATCHABLE)?;
    // Owner-only paths are refused by path, whatever the values (`api/patch_allowlist.go`).
    if access.role != Role::Owner && touched.iter().any(|t| t == "authorization" || t == "owner") {
        return Err(ApiError::forbidden(
            "Only the owner can change the authorization list or the owner",
        ));
    }
    let metadata_now = state.store.list_metadata(current.id).await?;
    let mut before = model::response(&current, &metadata_now);
    // Absent optional fields are null, so that `replace` (which needs an existing member) works on them.
    for k in PATCHABLE {
        if before.get(*k).is_none() {
            before[*k] = Value::Null;
        }
    }
    let after = crate::patch::apply(&before, &patch)?;
    let changed = |k: &str| touched.iter().any(|t| t == k) && before.get(k) != after.get(k);

    // The writable plain fields must still form a valid ThreatModelInput.
    let mut input = serde_json::Map::new();
    for k in [
        "name",
        "description",
        "threat_model_framework",
        "issue_uri",
        "metadata",
        "authorization",
    ] {
        if let Some(v) = after.get(k).filter(|v| !v.is_null()) {
            input.insert(k.into(), v.clone());
        }
    }
    let mut input = Value::Object(input);
    clean_text(&mut input, "name");
    clean_text(&mut input, "description");
    if let Err(errors) = state.spec.validate_component("ThreatModelInput", &input) {
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

    let mut next = current.clone();
    next.name = input["name"].as_str().unwrap_or_default().trim().to_owned();
    next.doc["name"] = json!(next.name);
    for k in ["description", "issue_uri"] {
        next.doc[k] = input.get(k).cloned().unwrap_or(Value::Null);
    }
    next.doc["threat_model_framework"] = json!(model::framework(input.get("threat_model_framework"))?);
    if changed("project_id") {
        let p = after.get("project_id").cloned().unwrap_or(Value::Null);
        if !(p.is_null() || p.as_str().is_some_and(|s| Uuid::parse_str(s).is_ok())) {
            return Err(ApiError::invalid("project_id must be a UUID or null"));
        }
        next.doc["project_id"] = p;
    }
    if changed("status") {
        if !user.is_security_reviewer() {
            return Err(ApiError::forbidden(
                "Only security reviewers can change the status",
            ));
        }
        let status = match after.get("status") {
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
    }
    if changed("owner") {
        if access.role != Role::Owner {
            return Err(ApiError::forbidden("Only the owner can transfer ownership"));
        }
        let o = after
            .get("owner")
            .filter(|o| o.is_object())
            .ok_or_else(|| ApiError::invalid("owner must be a user"))?;
        let provider = o.get("provider").and_then(Value::as_str).unwrap_or_default();
        let pid = o.get("provider_id").and_then(Value::as_str).unwrap_or_default();
        if provider.is_empty() || pid.is_empty() {
            return Err(ApiError::invalid("owner needs provider and provider_id"));
        }
        let resolved = normalize_acl(
            &state,
            &[json!({"principal_type": "user", "provider": provider, "provider_id": pid, "role": "owner"})],
            Duplicates::LastWins,
        )
        .await?;
        let mut new_owner = resolved.into_iter().next().unwrap_or_default();
        if let Value::Object(m) = &mut new_owner {
            m.remove("role");
        }
        let previous = owner_entry(&current);
        next.owner_provider = provider.to_owned();
        next.owner_provider_id = new_owner["provider_id"].as_str().unwrap_or(pid).to_owned();
        next.owner_email = new_owner
            .get("email")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        next.doc["owner"] = new_owner;
        let mut acl: Vec<Value> = current
            .doc
            .get("authorization")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        ensure(&mut acl, previous, Role::Owner);
        next.doc["authorization"] = json!(acl);
        next.access = access_records(&acl);
    }
    if changed("security_reviewer") {
        let r = after.get("security_reviewer").cloned().unwrap_or(Value::Null);
        let clearing = r.is_null();
        if !(user.is_security_reviewer() || (clearing && access.role == Role::Owner)) {
            return Err(ApiError::forbidden(
                "Only security reviewers can assign the security reviewer",
            ));
        }
        if clearing {
            next.reviewer_email = None;
            next.doc["security_reviewer"] = Value::Null;
        } else {
            let provider = r.get("provider").and_then(Value::as_str).unwrap_or_default();
            let pid = r.get("provider_id").and_then(Value::as_str).unwrap_or_default();
            if provider.is_empty() || pid.is_empty() {
                return Err(ApiError::invalid(
                    "security_reviewer needs provider and provider_id",
                ));
            }
            let resolved = normalize_acl(&state, &[json!({"principal_type": "user", "provider": provider, "provider_id": pid, "role": "owner"})], Duplicates::LastWins).await?;
            let mut reviewer = resolved.into_iter().next().unwrap_or_default();
            if let Value::Object(m) = &mut reviewer {
                m.remove("role");
            }
            next.reviewer_email = reviewer.get("email").and_then(Value::as_str).map(str::to_owned);
            let mut acl: Vec<Value> = next
                .doc
                .get("authorization")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            ensure(&mut acl, reviewer.clone(), Role::Owner);
            next.doc["security_reviewer"] = reviewer;
            next.doc["authorization"] = json!(acl);
            next.access = access_records(&acl);
        }
    }
    if changed("authorization") {
        let entries = after
            .get("authorization")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let acl = normalize_acl(&state, &entries, Duplicates::LastWins).await?;
        set_acl(&mut next, &current, acl, access.role)?;
    }
    let metadata = if changed("metadata") {
        model::metadata_entries(input.get("metadata"))?.or(Some(vec![]))
    } else {
        None
    };
    save(&state, next, &current, metadata, pre).await
}

/// `DELETE /threat_models/{id}`: soft delete (owner).
pub async fn delete(State(state): State<AppState>, access: TmAccess) -> Result<StatusCode, ApiError> {
    let current = access.tm;
    crate::collab::rest::ensure_no_session_on_threat_model(&state, current.id).await?;
    let mut next = current.clone();
    next.version += 1;
    next.deleted_at = Some(now());
    next.modified_at = now();
    state
        .store
        .update_threat_model(&next, current.version, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /threat_models/{id}/restore` (owner).
pub async fn restore(State(state): State<AppState>, access: TmAccess) -> Result<Json<Value>, ApiError> {
    let current = access.tm;
    if current.deleted_at.is_none() {
        return Err(ApiError::not_found("Deleted threat model"));
    }
    let mut next = current.clone();
    next.version += 1;
    next.deleted_at = None;
    next.modified_at = now();
    state
        .store
        .update_threat_model(&next, current.version, None)
        .await?;
    Ok(Json(full(&state, &next).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reviewer_filter_operators() {
        assert_eq!(reviewer_filter("IS:NULL").unwrap(), ReviewerFilter::Unassigned);
        assert_eq!(reviewer_filter("is:notnull").unwrap(), ReviewerFilter::Assigned);
        assert_eq!(
            reviewer_filter("rita@tmi.local").unwrap(),
            ReviewerFilter::Matching("rita@tmi.local".into())
        );
        assert_eq!(
            reviewer_filter("a:b@x").map_err(|e| e.status_and_code().0.as_u16()),
            Err(400)
        );
        assert!(reviewer_filter("is:banana").is_err());
        assert!(matches!(
            reviewer_filter("12:30"),
            Ok(ReviewerFilter::Matching(_))
        ));
    }
}
