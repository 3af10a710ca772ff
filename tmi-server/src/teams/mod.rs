//! Teams and projects: `/teams…` and `/projects…` (38 operations: CRUD and JSON Patch, metadata
//! with its bulk forms, notes). Routes only; the handlers are in `handlers.rs`, `notes.rs` and
//! `metadata.rs`, the rules and wire shapes in `domain::teams`, the persistence in
//! `store::teams`.

pub mod handlers;
pub mod metadata;
pub mod notes;

use std::collections::HashMap;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;

use crate::auth::tokens::AuthUser;
use crate::domain::teams::{PROJECTS, TEAMS, UnitKind};
use crate::error::ApiError;
use crate::extract::{JsonBody, Path};
use crate::routes::Routes;
use crate::state::AppState;

type Params = Path<HashMap<String, String>>;

/// The path parameter naming a unit of this kind.
fn id_param(kind: &UnitKind) -> &'static str {
    if kind.kind == TEAMS.kind {
        "team_id"
    } else {
        "project_id"
    }
}

/// The path parameter naming a note of a unit of this kind.
fn note_param(kind: &UnitKind) -> &'static str {
    if kind.kind == TEAMS.kind {
        "team_note_id"
    } else {
        "project_note_id"
    }
}

/// A UUID path parameter (the gate has checked its form already).
fn uuid_param(p: &HashMap<String, String>, name: &str) -> Result<uuid::Uuid, ApiError> {
    p.get(name)
        .and_then(|s| uuid::Uuid::parse_str(s).ok())
        .ok_or_else(|| ApiError::invalid_id(format!("Invalid {name}: must be a UUID")))
}

fn routes_for(r: Routes, kind: &'static UnitKind) -> Routes {
    let base = format!("/{}", kind.list_key);
    let item = format!("{base}/{{{}}}", id_param(kind));
    let meta = format!("{item}/metadata");
    let meta_bulk = format!("{item}/metadata/bulk");
    let meta_key = format!("{item}/metadata/{{key}}");
    let notes = format!("{item}/notes");
    let note = format!("{item}/notes/{{{}}}", note_param(kind));
    r.get(&base, move |s: State<AppState>, u: AuthUser, q: RawQuery| {
        handlers::list(s, u, q, kind)
    })
    .post(&base, move |s: State<AppState>, u: AuthUser, b: JsonBody| {
        handlers::create(s, u, b, kind)
    })
    .get(&item, move |s: State<AppState>, u: AuthUser, p: Params| {
        handlers::get(s, u, p, kind)
    })
    .put(
        &item,
        move |s: State<AppState>, h: HeaderMap, u: AuthUser, p: Params, b: JsonBody| {
            handlers::update(s, h, u, p, b, kind)
        },
    )
    .patch(
        &item,
        move |s: State<AppState>, h: HeaderMap, u: AuthUser, p: Params, b: JsonBody| {
            handlers::patch(s, h, u, p, b, kind)
        },
    )
    .delete(&item, move |s: State<AppState>, u: AuthUser, p: Params| {
        handlers::delete(s, u, p, kind)
    })
    .get(&meta, move |s: State<AppState>, p: Params| {
        metadata::list(s, p, kind)
    })
    .post(&meta, move |s: State<AppState>, p: Params, b: JsonBody| {
        metadata::create(s, p, b, kind)
    })
    .put(&meta_key, move |s: State<AppState>, p: Params, b: JsonBody| {
        metadata::put_key(s, p, b, kind)
    })
    .delete(&meta_key, move |s: State<AppState>, p: Params| {
        metadata::delete_key(s, p, kind)
    })
    .post(&meta_bulk, move |s: State<AppState>, p: Params, b: JsonBody| {
        metadata::bulk(s, p, b, kind, metadata::Bulk::Create)
    })
    .put(&meta_bulk, move |s: State<AppState>, p: Params, b: JsonBody| {
        metadata::bulk(s, p, b, kind, metadata::Bulk::Replace)
    })
    .patch(&meta_bulk, move |s: State<AppState>, p: Params, b: JsonBody| {
        metadata::bulk_patch(s, p, b, kind)
    })
    .get(
        &notes,
        move |s: State<AppState>, u: AuthUser, p: Params, q: RawQuery| notes::list(s, u, p, q, kind),
    )
    .post(
        &notes,
        move |s: State<AppState>, u: AuthUser, p: Params, b: JsonBody| notes::create(s, u, p, b, kind),
    )
    .get(&note, move |s: State<AppState>, u: AuthUser, p: Params| {
        notes::get(s, u, p, kind)
    })
    .put(
        &note,
        move |s: State<AppState>, u: AuthUser, p: Params, b: JsonBody| notes::update(s, u, p, b, kind),
    )
    .patch(
        &note,
        move |s: State<AppState>, u: AuthUser, p: Params, b: JsonBody| notes::patch(s, u, p, b, kind),
    )
    .delete(&note, move |s: State<AppState>, u: AuthUser, p: Params| {
        notes::delete(s, u, p, kind)
    })
}

pub fn router() -> Routes {
    routes_for(routes_for(Routes::new(), &TEAMS), &PROJECTS)
}
