//! Teams and projects (tmi-compat.md §2.2): the writable fields and their rules, relationships and
//! their cycles, who may do what, and the wire shapes of units, list items and notes. IO: reads
//! users, units and relationships through the `Store` trait (to resolve and check references);
//! writes nothing.
//!
//! Authorization, as upstream TMI decides it (`x-tmi-authz` is `ownership: none` on every one of
//! these operations, so the handlers decide): any signed-in user may create a team (becoming its
//! first member, `engineering_lead`); a team and its notes are read and written by its members and
//! administrators; a project by the members of its team and administrators, and creating one (or
//! moving it to another team) needs membership of that team; deleting a team or project is for its
//! creator and administrators. Non-sharable notes are seen and written only by administrators and
//! security reviewers, who alone may set `sharable`. Metadata needs only that the unit exists (the
//! contract documents no 403 there, and upstream checks nothing more).

use std::collections::{HashSet, VecDeque};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::auth::tokens::AuthUser;
use crate::domain::admin;
use crate::domain::wire::{rfc3339, user_json};
use crate::error::ApiError;
use crate::input::html;
use crate::openapi::Spec;
use crate::state::AppState;
use crate::store::teams::{OrgNoteRecord, OrgUnitRecord, OrgUnitSummary, PROJECT, RelationRecord, TEAM};
use crate::store::{MetadataEntry, Store, StoreError};

/// What differs between teams and projects.
#[derive(Debug)]
pub struct UnitKind {
    /// `team` or `project` (also the metadata entity type).
    pub kind: &'static str,
    /// `Team` or `Project`, for messages.
    pub label: &'static str,
    /// The request schema of PUT and of a patched document.
    pub input_schema: &'static str,
    /// `related_teams` or `related_projects`.
    pub related_field: &'static str,
    /// `related_team_id` or `related_project_id`.
    pub related_id: &'static str,
    /// The writable fields (what PUT keeps and PATCH may touch).
    pub fields: &'static [&'static str],
    /// The list response's array key.
    pub list_key: &'static str,
}

pub const TEAMS: UnitKind = UnitKind {
    kind: TEAM,
    label: "Team",
    input_schema: "TeamInput",
    related_field: "related_teams",
    related_id: "related_team_id",
    fields: &[
        "name",
        "description",
        "uri",
        "email_address",
        "status",
        "related_teams",
        "members",
        "responsible_parties",
    ],
    list_key: "teams",
};

pub const PROJECTS: UnitKind = UnitKind {
    kind: PROJECT,
    label: "Project",
    input_schema: "ProjectInput",
    related_field: "related_projects",
    related_id: "related_project_id",
    fields: &[
        "name",
        "description",
        "team_id",
        "uri",
        "status",
        "related_projects",
        "responsible_parties",
    ],
    list_key: "projects",
};

/// Both kinds' default lifecycle status.
pub const DEFAULT_STATUS: &str = "active";
/// The role of a member given without one, and of a team's creator.
const DEFAULT_MEMBER_ROLE: &str = "engineer";
const CREATOR_ROLE: &str = "engineering_lead";
/// How far relationship chains are followed (cycle checks and transitive filters), as upstream.
pub const MAX_DEPTH: usize = 10;

/// The relationships with a direction, in which a cycle is refused.
const DIRECTIONAL: &[&str] = &["parent", "child", "supersedes", "superseded_by"];

/// The same relationship seen from the other end.
pub fn inverse(relationship: &str) -> Option<&'static str> {
    Some(match relationship {
        "parent" => "child",
        "child" => "parent",
        "dependency" => "dependent",
        "dependent" => "dependency",
        "supersedes" => "superseded_by",
        "superseded_by" => "supersedes",
        "related" => "related",
        _ => return None,
    })
}

/// A unit's writable fields, checked and cleaned, with what the store mirrors out of them.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub doc: Value,
    pub name: String,
    pub status: String,
    pub team_id: Option<Uuid>,
    pub members: Vec<Uuid>,
    pub relations: Vec<(Uuid, String)>,
}

fn uuid_at(v: &Value, field: &str) -> Result<Uuid, ApiError> {
    v.as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| ApiError::invalid(format!("{field} must be a UUID")))
}

fn clean_text(m: &mut Map<String, Value>, field: &str) -> Result<(), ApiError> {
    if let Some(Value::String(s)) = m.get_mut(field) {
        *s = html::plain_text(field, s)?.trim().to_owned();
    }
    Ok(())
}

/// The people entries (`members`, `responsible_parties`): `{user_id, role?, custom_role?}`, no user
/// twice.
fn people(
    m: &mut Map<String, Value>,
    field: &str,
    default_role: Option<&str>,
) -> Result<Vec<Uuid>, ApiError> {
    let mut ids = Vec::new();
    let Some(Value::Array(items)) = m.get_mut(field) else {
        m.remove(field);
        return Ok(ids);
    };
    for item in items.iter_mut() {
        let id = uuid_at(&item["user_id"], &format!("{field}[].user_id"))?;
        if ids.contains(&id) {
            return Err(ApiError::invalid(format!("{field} names user {id} twice")));
        }
        ids.push(id);
        let mut entry = json!({"user_id": id.to_string()});
        match item.get("role").and_then(Value::as_str) {
            Some(r) => entry["role"] = json!(r),
            None => {
                if let Some(r) = default_role {
                    entry["role"] = json!(r);
                }
            }
        }
        if let Some(c) = item.get("custom_role").and_then(Value::as_str) {
            entry["custom_role"] = json!(html::plain_text("custom_role", c)?.trim());
        }
        *item = entry;
    }
    Ok(ids)
}

/// Checks and cleans the writable fields of a PUT body or a patched document (already valid against
/// the input schema); other fields are dropped, as upstream's binding does.
pub fn prepare(kind: &UnitKind, body: Value) -> Result<Prepared, ApiError> {
    let Value::Object(mut m) = body else {
        return Err(ApiError::invalid("Request body must be a JSON object"));
    };
    m.retain(|k, v| kind.fields.contains(&k.as_str()) && !v.is_null());
    clean_text(&mut m, "name")?;
    clean_text(&mut m, "description")?;
    let name = m
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if name.is_empty() {
        return Err(ApiError::invalid("name is required and must not be empty"));
    }
    let status = m
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_STATUS)
        .to_owned();
    m.insert("status".into(), json!(status));
    let members = if kind.kind == TEAM {
        people(&mut m, "members", Some(DEFAULT_MEMBER_ROLE))?
    } else {
        Vec::new()
    };
    people(&mut m, "responsible_parties", None)?;
    let team_id = if kind.kind == PROJECT {
        let id = uuid_at(m.get("team_id").unwrap_or(&Value::Null), "team_id")?;
        m.insert("team_id".into(), json!(id.to_string()));
        Some(id)
    } else {
        None
    };
    let mut relations: Vec<(Uuid, String)> = Vec::new();
    if let Some(Value::Array(items)) = m.get_mut(kind.related_field) {
        for item in items.iter_mut() {
            let id = uuid_at(&item[kind.related_id], kind.related_id)?;
            let rel = item["relationship"].as_str().unwrap_or_default().to_owned();
            if inverse(&rel).is_none() && rel != "other" {
                return Err(ApiError::invalid(format!("Unknown relationship {rel:?}")));
            }
            if relations.iter().any(|(i, r)| *i == id && *r == rel) {
                return Err(ApiError::invalid(format!(
                    "{} names the {rel} relationship to {id} twice",
                    kind.related_field
                )));
            }
            relations.push((id, rel.clone()));
            let mut entry = json!({kind.related_id: id.to_string(), "relationship": rel});
            if let Some(c) = item.get("custom_relationship").and_then(Value::as_str) {
                entry["custom_relationship"] = json!(html::plain_text("custom_relationship", c)?.trim());
            }
            *item = entry;
        }
    }
    Ok(Prepared {
        doc: Value::Object(m),
        name,
        status,
        team_id,
        members,
        relations,
    })
}

/// The array-valued writable fields (empty when unset, so that a patch may `add` to them).
const ARRAY_FIELDS: &[&str] = &[
    "related_teams",
    "related_projects",
    "members",
    "responsible_parties",
];

/// The writable view of a stored unit, which JSON Patch documents apply to: every writable field,
/// unset ones as `null` (or `[]` for arrays), so that `replace` works on them as on the full
/// document upstream patches.
pub fn writable(kind: &UnitKind, rec: &OrgUnitRecord) -> Value {
    let mut m = Map::new();
    for f in kind.fields {
        let unset = if ARRAY_FIELDS.contains(f) {
            json!([])
        } else {
            Value::Null
        };
        m.insert((*f).to_owned(), rec.doc.get(*f).cloned().unwrap_or(unset));
    }
    Value::Object(m)
}

/// Whether following `relationship` from `start` (edges `x -relationship-> y`, and their inverses
/// recorded the other way round) reaches `target` within `MAX_DEPTH` steps.
async fn reaches(store: &dyn Store, start: Uuid, target: Uuid, relationship: &str) -> Result<bool, ApiError> {
    let back = inverse(relationship);
    let mut seen = HashSet::from([start]);
    let mut frontier = VecDeque::from([(start, 0usize)]);
    while let Some((at, depth)) = frontier.pop_front() {
        if at == target {
            return Ok(true);
        }
        if depth >= MAX_DEPTH {
            continue;
        }
        for e in store.relations_of(at).await? {
            let next = if e.from_id == at && e.relationship == relationship {
                e.to_id
            } else if e.to_id == at && Some(e.relationship.as_str()) == back {
                e.from_id
            } else {
                continue;
            };
            if seen.insert(next) {
                frontier.push_back((next, depth + 1));
            }
        }
    }
    Ok(false)
}

/// Checks the references of a prepared unit `id`: users exist, related units exist and are not the
/// unit itself (400), a directional relationship does not close a cycle (409), a project's team
/// exists (400). Returns the relationship rows to store.
pub async fn check_references(
    store: &dyn Store,
    kind: &UnitKind,
    id: Uuid,
    p: &Prepared,
) -> Result<Vec<RelationRecord>, ApiError> {
    let mut users: Vec<Uuid> = p.members.clone();
    if let Some(Value::Array(parties)) = p.doc.get("responsible_parties") {
        users.extend(
            parties
                .iter()
                .filter_map(|e| e["user_id"].as_str().and_then(|s| Uuid::parse_str(s).ok())),
        );
    }
    for u in users {
        if store.get_user(u).await?.is_none() {
            return Err(ApiError::invalid(format!("User {u} not found")));
        }
    }
    if let Some(team) = p.team_id {
        match store.get_org_unit(TEAM, team).await {
            Ok(_) => {}
            Err(StoreError::NotFound) => return Err(ApiError::invalid(format!("Team {team} not found"))),
            Err(e) => return Err(e.into()),
        }
    }
    let mut rows = Vec::new();
    for (other, rel) in &p.relations {
        if *other == id {
            return Err(ApiError::invalid(format!(
                "A {} cannot have a relationship with itself",
                kind.kind
            )));
        }
        match store.get_org_unit(kind.kind, *other).await {
            Ok(_) => {}
            Err(StoreError::NotFound) => {
                return Err(ApiError::invalid(format!(
                    "Related {} {other} not found",
                    kind.kind
                )));
            }
            Err(e) => return Err(e.into()),
        }
        if DIRECTIONAL.contains(&rel.as_str()) && reaches(store, *other, id, rel).await? {
            return Err(ApiError::Conflict(format!(
                "Adding the {rel} relationship to {other} would create a cycle"
            )));
        }
        rows.push(RelationRecord {
            from_id: id,
            to_id: *other,
            relationship: rel.clone(),
        });
    }
    Ok(rows)
}

/// The ids the `related_to` / `relationship` / `transitive` list filter selects, as upstream reads
/// it: without a relationship, every unit related to `related_to` either way; with one, the units
/// with that relationship to it, the units it has that relationship to, and those it has the
/// inverse relationship to; transitively (directional relationships only), the chain of units
/// `related_to` reaches by following the relationship, up to `MAX_DEPTH` steps.
pub async fn related_ids(
    store: &dyn Store,
    related_to: Uuid,
    relationship: Option<&str>,
    transitive: bool,
) -> Result<Vec<Uuid>, ApiError> {
    let mut out: Vec<Uuid> = Vec::new();
    let push = |id: Uuid, out: &mut Vec<Uuid>| {
        if id != related_to && !out.contains(&id) {
            out.push(id);
        }
    };
    match relationship {
        Some(rel) if transitive && DIRECTIONAL.contains(&rel) => {
            let mut frontier = vec![related_to];
            for _ in 0..MAX_DEPTH {
                let mut next = Vec::new();
                for at in frontier {
                    for e in store.relations_of(at).await? {
                        if e.from_id == at
                            && e.relationship == rel
                            && !out.contains(&e.to_id)
                            && e.to_id != related_to
                        {
                            out.push(e.to_id);
                            next.push(e.to_id);
                        }
                    }
                }
                if next.is_empty() {
                    break;
                }
                frontier = next;
            }
        }
        Some(rel) => {
            let inv = inverse(rel);
            for e in store.relations_of(related_to).await? {
                if e.to_id == related_to && e.relationship == rel {
                    push(e.from_id, &mut out);
                } else if e.from_id == related_to
                    && (e.relationship == rel || Some(e.relationship.as_str()) == inv)
                {
                    push(e.to_id, &mut out);
                }
            }
        }
        None => {
            for e in store.relations_of(related_to).await? {
                push(
                    if e.from_id == related_to {
                        e.to_id
                    } else {
                        e.from_id
                    },
                    &mut out,
                );
            }
        }
    }
    Ok(out)
}

/// A threat model's `project_id` must name an existing project (400 otherwise); null detaches it.
pub async fn check_project(store: &dyn Store, project_id: Option<&Value>) -> Result<(), ApiError> {
    let Some(id) = project_id
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
    else {
        return Ok(());
    };
    match store.get_org_unit(PROJECT, id).await {
        Ok(_) => Ok(()),
        Err(StoreError::NotFound) => Err(ApiError::invalid(format!("Project {id} not found"))),
        Err(e) => Err(e.into()),
    }
}

/// Whether the caller is an administrator (read from the database, as every admin check is).
/// Service-account tokens never act as administrators (as on the threat-model list).
pub async fn is_admin(state: &AppState, user: &AuthUser) -> Result<bool, ApiError> {
    if user.is_service_account() {
        return Ok(false);
    }
    admin::is_administrator(
        state.store.as_ref(),
        &state.config.admins,
        user.user.internal_uuid,
    )
    .await
}

/// Administrators and security reviewers: they see and set non-sharable notes.
pub async fn is_privileged(state: &AppState, user: &AuthUser) -> Result<bool, ApiError> {
    Ok(user.is_security_reviewer() || is_admin(state, user).await?)
}

/// 403 unless the caller is a member of `team` or an administrator.
pub async fn require_member(
    state: &AppState,
    user: &AuthUser,
    team: Uuid,
    what: &str,
) -> Result<(), ApiError> {
    if state.store.is_team_member(team, user.user.internal_uuid).await? || is_admin(state, user).await? {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "You must be a member of the team or an administrator to {what}"
    )))
}

/// The team whose membership grants access to a unit: a team itself, a project's team.
pub fn governing_team(rec: &OrgUnitRecord) -> Uuid {
    rec.team_id.unwrap_or(rec.id)
}

/// A `User` document for an internal id; `null` when the user no longer exists.
pub async fn user_doc(store: &dyn Store, id: Uuid) -> Result<Value, ApiError> {
    Ok(match store.get_user(id).await? {
        Some(u) => user_json(&u.provider, &u.provider_user_id, &u.name, &u.email),
        None => Value::Null,
    })
}

/// `members` / `responsible_parties` with each entry's `user` resolved.
async fn resolve_people(store: &dyn Store, entries: Option<&Value>) -> Result<Value, ApiError> {
    let mut out = Vec::new();
    if let Some(Value::Array(items)) = entries {
        for item in items {
            let mut e = item.clone();
            if let Some(id) = item["user_id"].as_str().and_then(|s| Uuid::parse_str(s).ok()) {
                e["user"] = user_doc(store, id).await?;
            }
            out.push(e);
        }
    }
    Ok(Value::Array(out))
}

/// A unit's relationships as written, less those whose other end has since been deleted (deleting a
/// unit deletes its relationship rows, not the other units' documents).
pub async fn related(store: &dyn Store, kind: &UnitKind, rec: &OrgUnitRecord) -> Result<Value, ApiError> {
    let Some(Value::Array(items)) = rec.doc.get(kind.related_field) else {
        return Ok(json!([]));
    };
    let live = store.relations_of(rec.id).await?;
    Ok(Value::Array(
        items
            .iter()
            .filter(|e| {
                live.iter().any(|r| {
                    r.from_id == rec.id
                        && e[kind.related_id].as_str() == Some(r.to_id.to_string().as_str())
                        && e["relationship"].as_str() == Some(r.relationship.as_str())
                })
            })
            .cloned()
            .collect(),
    ))
}

/// The full `Team` or `Project` document.
pub async fn render(
    store: &dyn Store,
    kind: &UnitKind,
    rec: &OrgUnitRecord,
    metadata: &[MetadataEntry],
    notes: &[OrgNoteRecord],
) -> Result<Value, ApiError> {
    let mut out = json!({
        "id": rec.id.to_string(),
        "name": rec.name,
        "status": rec.status,
        "created_by": user_doc(store, rec.created_by).await?,
        "created_at": rfc3339(&rec.created_at),
        "modified_at": rfc3339(&rec.modified_at),
        "version": rec.version,
        "metadata": metadata,
        "notes": notes.iter().map(note_list_item).collect::<Vec<_>>(),
        kind.related_field: related(store, kind, rec).await?,
        "responsible_parties": resolve_people(store, rec.doc.get("responsible_parties")).await?,
    });
    for f in ["description", "uri", "email_address"] {
        if let Some(v) = rec.doc.get(f).filter(|v| !v.is_null()) {
            out[f] = v.clone();
        }
    }
    if let Some(by) = rec
        .doc
        .get("_modified_by")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
    {
        out["modified_by"] = user_doc(store, by).await?;
    }
    if kind.kind == TEAM {
        out["members"] = resolve_people(store, rec.doc.get("members")).await?;
    }
    if let Some(team) = rec.team_id {
        out["team_id"] = json!(team.to_string());
        out["team"] = match store.get_org_unit(TEAM, team).await {
            Ok(t) => {
                let mut s = json!({"id": t.id.to_string(), "name": t.name});
                if let Some(d) = t.doc.get("description").filter(|v| v.is_string()) {
                    s["description"] = d.clone();
                }
                s
            }
            Err(StoreError::NotFound) => Value::Null,
            Err(e) => return Err(e.into()),
        };
    }
    Ok(out)
}

/// A `TeamListItem` or `ProjectListItem`.
pub fn list_item(kind: &UnitKind, s: &OrgUnitSummary) -> Value {
    let rec = &s.record;
    let mut out = json!({
        "id": rec.id.to_string(),
        "name": rec.name,
        "status": rec.status,
        "created_at": rfc3339(&rec.created_at),
        "modified_at": rfc3339(&rec.modified_at),
        "note_count": s.note_count,
    });
    if let Some(d) = rec.doc.get("description").filter(|v| v.is_string()) {
        out["description"] = d.clone();
    }
    if kind.kind == TEAM {
        out["member_count"] = json!(s.member_count);
        out["project_count"] = json!(s.project_count);
    } else {
        if let Some(team) = rec.team_id {
            out["team_id"] = json!(team.to_string());
        }
        if let Some(n) = &s.team_name {
            out["team_name"] = json!(n);
        }
    }
    out
}

/// A new unit's record from its prepared fields.
pub fn new_record(kind: &UnitKind, p: &Prepared, creator: Uuid, at: DateTime<Utc>) -> OrgUnitRecord {
    OrgUnitRecord {
        id: Uuid::new_v4(),
        kind: kind.kind.to_owned(),
        team_id: p.team_id,
        name: p.name.clone(),
        status: p.status.clone(),
        created_by: creator,
        version: 1,
        created_at: at,
        modified_at: at,
        doc: p.doc.clone(),
    }
}

/// A team's creator joins it as `engineering_lead` unless the request lists them already.
pub fn add_creator(p: &mut Prepared, creator: Uuid) {
    if p.members.contains(&creator) {
        return;
    }
    p.members.insert(0, creator);
    let entry = json!({"user_id": creator.to_string(), "role": CREATOR_ROLE});
    match p.doc.get_mut("members") {
        Some(Value::Array(items)) => items.insert(0, entry),
        _ => p.doc["members"] = json!([entry]),
    }
}

/// A team PUT without `members` keeps the current members (an explicit list, even an empty one,
/// replaces them): omitting the field must not lock every member out of the team.
pub fn keep_members(p: &mut Prepared, current: &OrgUnitRecord) {
    let Some(Value::Array(items)) = current.doc.get("members") else {
        return;
    };
    p.members = items
        .iter()
        .filter_map(|e| e["user_id"].as_str().and_then(|s| Uuid::parse_str(s).ok()))
        .collect();
    p.doc["members"] = Value::Array(items.clone());
}

/// The next version of `current` with the prepared fields.
pub fn successor(current: &OrgUnitRecord, p: &Prepared, by: Uuid, at: DateTime<Utc>) -> OrgUnitRecord {
    let mut doc = p.doc.clone();
    doc["_modified_by"] = json!(by.to_string());
    OrgUnitRecord {
        team_id: p.team_id,
        name: p.name.clone(),
        status: p.status.clone(),
        version: current.version + 1,
        modified_at: at.max(current.modified_at),
        doc,
        ..current.clone()
    }
}

/// The writable fields of a note.
const NOTE_FIELDS: &[&str] = &["name", "content", "description", "timmy_enabled", "sharable"];

/// Checks and cleans a note body (already valid against `TeamProjectNoteBase`): the name and
/// description as plain text, the content as sanitized Markdown. `sharable` is decided by the
/// caller (`note_sharable`).
pub fn prepare_note(spec: &Spec, body: Value) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(mut m) = body else {
        return Err(ApiError::invalid("Request body must be a JSON object"));
    };
    m.retain(|k, v| NOTE_FIELDS.contains(&k.as_str()) && !v.is_null());
    clean_text(&mut m, "name")?;
    clean_text(&mut m, "description")?;
    if m.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
        return Err(ApiError::invalid("name is required and must not be empty"));
    }
    match m.get_mut("content") {
        Some(Value::String(s)) => {
            let clean = html::markdown("content", s)?;
            if clean.trim().is_empty() {
                return Err(ApiError::invalid(
                    "content is empty after sanitization; it consisted entirely of markup that is not permitted",
                ));
            }
            *s = clean;
        }
        _ => return Err(ApiError::invalid("content is required")),
    }
    m.entry("timmy_enabled").or_insert(json!(true));
    spec.validate_properties("TeamNoteListItem", &{
        let mut listed = m.clone();
        listed.remove("content");
        listed
    })
    .map_err(|errors| ApiError::invalid(format!("Invalid note: {}", errors.join("; "))))?;
    Ok(m)
}

/// `sharable` of a note written by the caller: only administrators and security reviewers may set
/// it (403 for anyone else who sends it); otherwise it keeps `current`, or on create is true for
/// regular users and false for privileged ones (upstream's defaults).
pub fn note_sharable(
    m: &mut Map<String, Value>,
    privileged: bool,
    current: Option<bool>,
) -> Result<bool, ApiError> {
    let asked = m.remove("sharable");
    if asked.is_some() && !privileged {
        return Err(ApiError::forbidden(
            "Only administrators and security reviewers may set sharable",
        ));
    }
    let v = asked.and_then(|v| v.as_bool()).or(current).unwrap_or(!privileged);
    m.insert("sharable".into(), json!(v));
    Ok(v)
}

/// A `TeamNote` / `ProjectNote`.
pub fn note(n: &OrgNoteRecord) -> Value {
    let mut out = n.doc.clone();
    out["id"] = json!(n.id.to_string());
    out["sharable"] = json!(n.sharable);
    out["created_at"] = json!(rfc3339(&n.created_at));
    out["modified_at"] = json!(rfc3339(&n.modified_at));
    out
}

/// A `TeamNoteListItem` / `ProjectNoteListItem` (no content).
pub fn note_list_item(n: &OrgNoteRecord) -> Value {
    let mut out = note(n);
    if let Some(m) = out.as_object_mut() {
        m.remove("content");
    }
    out
}

/// The writable view of a note, which JSON Patch documents apply to.
pub fn note_writable(n: &OrgNoteRecord) -> Value {
    let mut m = Map::new();
    for f in NOTE_FIELDS {
        m.insert((*f).to_owned(), n.doc.get(*f).cloned().unwrap_or(Value::Null));
    }
    m.insert("sharable".into(), json!(n.sharable));
    Value::Object(m)
}

/// Note paths a JSON Patch may touch.
pub const NOTE_PATCHABLE: &[&str] = NOTE_FIELDS;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_relationships_pair_up() {
        for r in [
            "parent",
            "child",
            "dependency",
            "dependent",
            "supersedes",
            "superseded_by",
            "related",
        ] {
            assert_eq!(inverse(inverse(r).unwrap()), Some(r));
        }
        assert_eq!(inverse("other"), None);
    }

    #[test]
    fn prepare_defaults_and_refusals() {
        let p = prepare(
            &TEAMS,
            json!({"name": " A ", "members": [{"user_id": Uuid::nil()}], "id": "x"}),
        )
        .unwrap();
        assert_eq!(p.name, "A");
        assert_eq!(p.status, DEFAULT_STATUS);
        assert_eq!(p.doc["members"][0]["role"], DEFAULT_MEMBER_ROLE);
        assert!(p.doc.get("id").is_none(), "server fields are dropped");
        let twice = json!({"name": "A", "members": [{"user_id": Uuid::nil()}, {"user_id": Uuid::nil()}]});
        assert!(prepare(&TEAMS, twice).is_err());
        assert!(
            prepare(&PROJECTS, json!({"name": "P"})).is_err(),
            "a project needs its team"
        );
        let mut p = prepare(&TEAMS, json!({"name": "A"})).unwrap();
        let me = Uuid::new_v4();
        add_creator(&mut p, me);
        assert_eq!(p.members, vec![me]);
        assert_eq!(p.doc["members"][0]["role"], CREATOR_ROLE);
    }

    #[test]
    fn only_privileged_callers_set_sharable() {
        let mut m = Map::new();
        m.insert("sharable".into(), json!(false));
        assert!(note_sharable(&mut m.clone(), false, None).is_err());
        assert!(!note_sharable(&mut m, true, None).unwrap());
        assert!(note_sharable(&mut Map::new(), false, None).unwrap());
        assert!(!note_sharable(&mut Map::new(), true, None).unwrap());
        assert!(!note_sharable(&mut Map::new(), false, Some(false)).unwrap());
    }
}
