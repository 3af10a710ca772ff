//! Team and project handlers: list, create, get, update (PUT), patch (JSON Patch), delete. Thin:
//! the rules and shapes are in `domain::teams`; IO through the store.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Params, id_param, uuid_param};
use crate::auth::tokens::AuthUser;
use crate::domain::teams::{self as rules, PROJECTS, Prepared, TEAMS, UnitKind};
use crate::domain::wire;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::input::query::Params as Query;
use crate::patch;
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::teams::{OrgUnitFilter, OrgUnitRecord};
use crate::versioning;

/// Notes embedded in a unit's document (upstream embeds at most this many).
const EMBEDDED_NOTES: i64 = 1000;

/// The unit the path names; 404 when it does not exist.
pub(super) async fn unit(state: &AppState, kind: &UnitKind, id: Uuid) -> Result<OrgUnitRecord, ApiError> {
    state
        .store
        .get_org_unit(kind.kind, id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found(kind.label),
            other => other.into(),
        })
}

/// The unit the path names, when the caller may read and write it (members of its team and
/// administrators); 404 when missing, 403 otherwise.
pub(super) async fn accessible(
    state: &AppState,
    user: &AuthUser,
    kind: &UnitKind,
    p: &std::collections::HashMap<String, String>,
) -> Result<OrgUnitRecord, ApiError> {
    let rec = unit(state, kind, uuid_param(p, id_param(kind))?).await?;
    rules::require_member(
        state,
        user,
        rules::governing_team(&rec),
        &format!("access this {}", kind.kind),
    )
    .await?;
    Ok(rec)
}

async fn full(
    state: &AppState,
    user: &AuthUser,
    kind: &UnitKind,
    rec: &OrgUnitRecord,
) -> Result<Value, ApiError> {
    let metadata = state.store.list_metadata(rec.id).await?;
    let privileged = rules::is_privileged(state, user).await?;
    let (notes, _) = state
        .store
        .list_org_notes(rec.id, privileged, EMBEDDED_NOTES, 0)
        .await?;
    rules::render(state.store.as_ref(), kind, rec, &metadata, &notes).await
}

/// `GET /teams`, `GET /projects`: what the caller belongs to (everything for administrators),
/// newest first.
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    RawQuery(raw): RawQuery,
    kind: &'static UnitKind,
) -> Result<Json<Value>, ApiError> {
    let q = Query::parse(raw.as_deref());
    let uuid = |name: &str| -> Result<Option<Uuid>, ApiError> {
        q.get(name)
            .map(|s| Uuid::parse_str(s).map_err(|_| ApiError::invalid(format!("{name} must be a UUID"))))
            .transpose()
    };
    let mut filter = OrgUnitFilter {
        kind: kind.kind,
        visible_to: if rules::is_admin(&state, &user).await? {
            None
        } else {
            Some(user.user.internal_uuid)
        },
        name_contains: q.get("name").filter(|s| !s.is_empty()).map(str::to_owned),
        statuses: q.enum_list("status"),
        member: if kind.kind == PROJECTS.kind {
            None
        } else {
            uuid("member_user_id")?
        },
        team_id: if kind.kind == PROJECTS.kind {
            uuid("team_id")?
        } else {
            None
        },
        ids: None,
        limit: q.integer("limit", 20, 1000)?,
        offset: q.integer("offset", 0, i64::MAX)?,
    };
    if let Some(related) = uuid("related_to")? {
        let transitive = q.boolean("transitive")?.unwrap_or(false);
        filter.ids =
            Some(rules::related_ids(state.store.as_ref(), related, q.get("relationship"), transitive).await?);
    }
    let (items, total) = state.store.list_org_units(&filter).await?;
    Ok(Json(json!({
        kind.list_key: items.iter().map(|s| rules::list_item(kind, s)).collect::<Vec<_>>(),
        "total": total,
        "limit": filter.limit,
        "offset": filter.offset,
    })))
}

/// `POST /teams` (the creator becomes a member), `POST /projects` (for members of its team).
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody,
    kind: &'static UnitKind,
) -> Result<Response, ApiError> {
    let me = user.user.internal_uuid;
    let mut p = rules::prepare(kind, body)?;
    if let Some(team) = p.team_id {
        rules::require_member(&state, &user, team, "create a project in it").await?;
    } else {
        rules::add_creator(&mut p, me);
    }
    let rec = rules::new_record(kind, &p, me, wire::now());
    let relations = rules::check_references(state.store.as_ref(), kind, rec.id, &p).await?;
    state
        .store
        .insert_org_unit(&rec, &p.members, &relations, &[])
        .await?;
    let body = rules::render(state.store.as_ref(), kind, &rec, &[], &[]).await?;
    let mut res = (StatusCode::CREATED, Json(body)).into_response();
    versioning::tag(&mut res, rec.version);
    Ok(res)
}

/// `GET /teams/{id}`, `GET /projects/{id}`, with the version as `ETag`.
pub async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    crate::extract::Path(p): Params,
    kind: &'static UnitKind,
) -> Result<Response, ApiError> {
    let rec = accessible(&state, &user, kind, &p).await?;
    let mut res = Json(full(&state, &user, kind, &rec).await?).into_response();
    versioning::tag(&mut res, rec.version);
    Ok(res)
}

async fn save(
    state: &AppState,
    user: &AuthUser,
    kind: &UnitKind,
    current: &OrgUnitRecord,
    p: Prepared,
    pre: versioning::Precondition,
) -> Result<Response, ApiError> {
    if let Some(team) = p.team_id.filter(|t| Some(*t) != current.team_id) {
        rules::require_member(state, user, team, "move a project to it").await?;
    }
    let relations = rules::check_references(state.store.as_ref(), kind, current.id, &p).await?;
    let next = rules::successor(current, &p, user.user.internal_uuid, wire::now());
    state
        .store
        .update_org_unit(&next, current.version, &p.members, &relations, None)
        .await?;
    let mut res = Json(full(state, user, kind, &next).await?).into_response();
    versioning::decorate(&mut res, next.version, pre);
    Ok(res)
}

/// `PUT /teams/{id}`, `PUT /projects/{id}`: full replacement of the writable fields (responsible
/// parties and relationships included; a team's members too when the body lists them, and kept
/// when it leaves `members` out).
pub async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    user: AuthUser,
    crate::extract::Path(p): Params,
    JsonBody(body): JsonBody,
    kind: &'static UnitKind,
) -> Result<Response, ApiError> {
    let current = accessible(&state, &user, kind, &p).await?;
    let pre = versioning::check(&headers, current.version, state.config.require_if_match)?;
    let members_given = body.get("members").is_some_and(|m| !m.is_null());
    let mut prepared = rules::prepare(kind, body)?;
    if kind.kind == TEAMS.kind && !members_given {
        rules::keep_members(&mut prepared, &current);
    }
    save(&state, &user, kind, &current, prepared, pre).await
}

/// `PATCH /teams/{id}`, `PATCH /projects/{id}`: RFC 6902 on the writable fields; the result must
/// be a valid input document.
pub async fn patch(
    State(state): State<AppState>,
    headers: HeaderMap,
    user: AuthUser,
    crate::extract::Path(p): Params,
    JsonBody(ops): JsonBody,
    kind: &'static UnitKind,
) -> Result<Response, ApiError> {
    let current = accessible(&state, &user, kind, &p).await?;
    let pre = versioning::check(&headers, current.version, state.config.require_if_match)?;
    let (ops, _) = patch::parse(&ops, kind.fields)?;
    let mut view = rules::writable(kind, &current);
    view[kind.related_field] = rules::related(state.store.as_ref(), kind, &current).await?;
    let doc = patch::apply(&view, &ops)?;
    state
        .spec
        .validate_component(kind.input_schema, &doc)
        .map_err(|errors| {
            ApiError::invalid(format!(
                "The patched {} is invalid: {}",
                kind.kind,
                errors.join("; ")
            ))
        })?;
    let prepared = rules::prepare(kind, doc)?;
    save(&state, &user, kind, &current, prepared, pre).await
}

/// `DELETE /teams/{id}`, `DELETE /projects/{id}`: the creator or an administrator; 409 while a team
/// has projects or a threat model names the project.
pub async fn delete(
    State(state): State<AppState>,
    user: AuthUser,
    crate::extract::Path(p): Params,
    kind: &'static UnitKind,
) -> Result<StatusCode, ApiError> {
    let rec = unit(&state, kind, uuid_param(&p, id_param(kind))?).await?;
    if rec.created_by != user.user.internal_uuid && !rules::is_admin(&state, &user).await? {
        return Err(ApiError::forbidden(format!(
            "You must be the {} creator or an administrator to delete it",
            kind.kind
        )));
    }
    state
        .store
        .delete_org_unit(kind.kind, rec.id)
        .await
        .map_err(|e| match e {
            StoreError::Conflict if kind.kind == PROJECTS.kind => {
                ApiError::Conflict("The project is referenced by threat models".into())
            }
            StoreError::Conflict => ApiError::Conflict("The team is referenced by projects".into()),
            StoreError::NotFound => ApiError::not_found(kind.label),
            other => other.into(),
        })?;
    Ok(StatusCode::NO_CONTENT)
}
