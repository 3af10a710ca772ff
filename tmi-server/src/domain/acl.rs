//! Threat-model access control lists (tmi-compat.md §3): normalising requested entries
//! (resolving users, the `everyone` group, duplicates), the entries every new model gets, and the
//! rules a changed list must satisfy (only the owner changes it; the owner and the security
//! reviewer keep the owner role). IO: `normalize` resolves users through the `Store` trait; the
//! rest is pure.

use serde_json::{Value, json};

use super::wire::user_json;
use crate::authz::Role;
use crate::error::ApiError;
use crate::store::{AccessRecord, Store, ThreatModelRecord};

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

#[derive(Clone, Copy, PartialEq)]
pub enum Duplicates {
    Reject,
    LastWins,
}

/// Normalizes request ACL entries (400 for an invalid one): resolves users, maps `everyone` to provider `tmi`, handles duplicates.
pub async fn normalize(
    store: &dyn Store,
    entries: &[Value],
    dup: Duplicates,
) -> Result<Vec<Value>, ApiError> {
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
                let found = match store.find_user(&provider, &provider_id).await? {
                    Some(u) => Some(u),
                    None if provider_id.contains('@') => {
                        store.find_user_by_email(&provider, &provider_id).await?
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
pub fn ensure(acl: &mut Vec<Value>, entry: Value, role: Role) {
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

pub fn role_str(r: Role) -> &'static str {
    match r {
        Role::Reader => "reader",
        Role::Writer => "writer",
        Role::Owner => "owner",
    }
}

pub fn group(name: &str) -> Value {
    json!({"principal_type": "group", "provider": "tmi", "provider_id": name})
}

pub fn owner_entry(rec: &ThreatModelRecord) -> Value {
    rec.doc
        .get("owner")
        .cloned()
        .unwrap_or_else(|| user_json(&rec.owner_provider, &rec.owner_provider_id, "", &rec.owner_email))
}

/// Sorted (subject, role) pairs, to detect ACL changes.
pub fn signature(acl: &[Value]) -> Vec<(String, String, String, String)> {
    let mut v: Vec<_> = access_records(acl)
        .into_iter()
        .map(|a| (a.principal_type, a.provider, a.provider_id, a.role))
        .collect();
    v.sort();
    v
}

/// Applies the owner-only and reviewer rules to a new ACL and writes it into `next`.
pub fn set(
    next: &mut ThreatModelRecord,
    current: &ThreatModelRecord,
    mut acl: Vec<Value>,
    role: Role,
) -> Result<(), ApiError> {
    // The owner always keeps the owner role.
    ensure(&mut acl, owner_entry(next), Role::Owner);
    if signature(&acl)
        != signature(
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

/// The ACL of a new threat model: the creator as owner, the requested entries (normalized,
/// duplicates refused), the reviewers group (`confidential-project-reviewers` for a confidential
/// model) as owner and `tmi-automation` as writer.
pub async fn for_new_model(
    store: &dyn Store,
    owner: &Value,
    requested: &[Value],
    confidential: bool,
) -> Result<Vec<Value>, ApiError> {
    let mut acl = vec![{
        let mut o = owner.clone();
        o["role"] = json!("owner");
        o
    }];
    for e in normalize(store, requested, Duplicates::Reject).await? {
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
    Ok(acl)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ptype: &str, id: &str, role: &str) -> Value {
        json!({"principal_type": ptype, "provider": "tmi", "provider_id": id, "role": role})
    }

    #[test]
    fn ensure_only_raises_roles() {
        let mut acl = vec![entry("user", "bob", "writer")];
        ensure(&mut acl, entry("user", "bob", "reader"), Role::Reader);
        assert_eq!(acl[0]["role"], "writer", "an existing higher role is kept");
        ensure(&mut acl, entry("user", "bob", "reader"), Role::Owner);
        assert_eq!(acl[0]["role"], "owner");
        ensure(&mut acl, group("tmi-automation"), Role::Writer);
        assert_eq!(acl.len(), 2);
        assert_eq!(acl[1]["role"], "writer");
    }

    #[test]
    fn only_the_owner_changes_the_list_and_the_owner_stays_owner() {
        let owner = user_json("tmi", "alice", "Alice", "");
        let at = chrono::Utc::now();
        let current = ThreatModelRecord {
            id: uuid::Uuid::new_v4(),
            alias: 1,
            name: "TM".into(),
            owner_provider: "tmi".into(),
            owner_provider_id: "alice".into(),
            owner_email: String::new(),
            reviewer_email: None,
            status: "not_started".into(),
            version: 1,
            created_at: at,
            modified_at: at,
            deleted_at: None,
            doc: json!({"owner": owner, "authorization": [entry("user", "alice", "owner")]}),
            access: vec![],
        };
        let mut next = current.clone();
        let changed = vec![entry("user", "alice", "owner"), entry("user", "bob", "reader")];
        assert!(set(&mut next, &current, changed.clone(), Role::Writer).is_err());
        set(&mut next, &current, changed, Role::Owner).unwrap();
        assert_eq!(next.access.len(), 2);
        // Dropping the owner from the list puts them back as owner.
        let mut next = current.clone();
        set(
            &mut next,
            &current,
            vec![entry("user", "bob", "reader")],
            Role::Owner,
        )
        .unwrap();
        let acl = next.doc["authorization"].as_array().unwrap();
        assert!(
            acl.iter()
                .any(|e| e["provider_id"] == "alice" && e["role"] == "owner")
        );
    }
}
