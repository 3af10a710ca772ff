//! The REST side of collaboration (tmi-compat.md §5.1–5.2): start, read and end a diagram's
//! session, issue single-use WebSocket tickets, list the caller's sessions. Thin handlers over
//! the hub; IO through it and the store.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::protocol::{PrincipalType, User};
use super::registry::SessionRecord;
use crate::auth::tokens::{AuthUser, token_hash};
use crate::authz::{Subject, effective_role};
use crate::domain::live;
use crate::domain::wire::rfc3339;
use crate::error::ApiError;
use crate::extract::{Path, Query, TmAccess};
use crate::public_url::websocket_base;
use crate::state::AppState;
use crate::store::UserRecord;

/// Tickets live this long (as upstream).
pub const TICKET_TTL: Duration = Duration::from_secs(30);

/// What a ticket stands for; stored under `ws_ticket:<ticket>` and consumed once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ticket {
    pub user_id: Uuid,
    pub provider: String,
    pub provider_id: String,
    pub session_id: Uuid,
    /// Group names of the token the ticket was issued for (a snapshot, like the token's).
    pub groups: Vec<String>,
    /// SHA-256 of that access token: revoking it (logout) closes the socket with 4401.
    pub token_hash: String,
    /// The token's family: ending the login (logout elsewhere, refresh-token reuse) also closes it.
    #[serde(default)]
    pub family: Option<String>,
    /// When the login behind the token ends for good (its `auth_time` plus the absolute session
    /// lifetime): no refresh can extend it, so the socket closes with 4401 then. A token's own
    /// short expiry does not close the socket: the web client refreshes it in the background and
    /// has no reconnect.
    pub login_expires_at: i64,
}

impl Ticket {
    /// Whether the login behind the ticket has ended at `now` (Unix seconds). Pure.
    pub fn login_expired(&self, now: i64) -> bool {
        now >= self.login_expires_at
    }
}

/// The protocol's view of a user.
pub fn protocol_user(u: &UserRecord) -> User {
    User {
        principal_type: PrincipalType::User,
        provider: u.provider.clone(),
        provider_id: u.provider_user_id.clone(),
        email: u.email.clone(),
        display_name: if u.name.is_empty() {
            u.provider_user_id.clone()
        } else {
            u.name.clone()
        },
    }
}

fn user_value(u: &User) -> Value {
    serde_json::to_value(u).unwrap_or(Value::Null)
}

fn parse_ids(tm: &str, d: &str) -> Result<(Uuid, Uuid), ApiError> {
    let tm = Uuid::parse_str(tm).map_err(|_| ApiError::invalid_id("Invalid threat_model_id"))?;
    let d = Uuid::parse_str(d).map_err(|_| ApiError::invalid_id("Invalid diagram_id"))?;
    Ok((tm, d))
}

/// The `CollaborationSession` body.
async fn session_body(
    state: &AppState,
    record: &SessionRecord,
    headers: &HeaderMap,
) -> Result<Value, ApiError> {
    let tm = state.store.get_threat_model(record.threat_model_id).await?;
    let diagram = state
        .store
        .get_child(record.threat_model_id, "diagram", record.diagram_id)
        .await?;
    let participants = state
        .collab
        .participants_update(record, None)
        .await
        .map_err(ApiError::internal)?
        .participants;
    let mut body = json!({
        "session_id": record.session_id,
        "host": user_value(&record.host),
        "threat_model_id": record.threat_model_id,
        "threat_model_name": tm.name,
        "diagram_id": record.diagram_id,
        "diagram_name": diagram.doc.get("name").and_then(Value::as_str).unwrap_or_default(),
        "participants": participants.iter().map(|p| json!({
            "user": user_value(&p.user),
            "permissions": p.permissions,
            "last_activity": rfc3339(&p.last_activity),
        })).collect::<Vec<_>>(),
        "websocket_url": format!(
            "{}/threat_models/{}/diagrams/{}/ws?session_id={}",
            websocket_base(&state.config, headers),
            record.threat_model_id,
            record.diagram_id,
            record.session_id
        ),
    });
    if let Some(p) = &record.presenter {
        body["presenter"] = user_value(p);
    }
    Ok(body)
}

/// `GET …/collaborate`: 200 with the session, 404 when there is none.
pub async fn get_session(
    State(state): State<AppState>,
    Path((tm, d)): Path<(String, String)>,
    _access: TmAccess,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (tm, d) = parse_ids(&tm, &d)?;
    live::diagram(state.store.as_ref(), tm, d).await?;
    let record = state
        .collab
        .registry
        .by_diagram(d)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::NotFound("No active collaboration session for this diagram".into()))?;
    Ok(Json(session_body(&state, &record, &headers).await?).into_response())
}

/// `POST …/collaborate`: 201 with a new session hosted by the caller, or 200 with the existing one.
pub async fn start_session(
    State(state): State<AppState>,
    Path((tm, d)): Path<(String, String)>,
    _access: TmAccess,
    user: AuthUser,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (tm, d) = parse_ids(&tm, &d)?;
    live::diagram(state.store.as_ref(), tm, d).await?;
    let (record, created) = state
        .collab
        .registry
        .create_or_get(tm, d, &protocol_user(&user.user))
        .await
        .map_err(ApiError::internal)?;
    let body = session_body(&state, &record, &headers).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(body)).into_response())
}

/// `DELETE …/collaborate`: the host ends the session (all sockets close); anyone else: no-op.
pub async fn end_session(
    State(state): State<AppState>,
    Path((tm, d)): Path<(String, String)>,
    _access: TmAccess,
    user: AuthUser,
) -> Result<Response, ApiError> {
    let (tm, d) = parse_ids(&tm, &d)?;
    live::diagram(state.store.as_ref(), tm, d).await?;
    if let Some(record) = state
        .collab
        .registry
        .by_diagram(d)
        .await
        .map_err(ApiError::internal)?
        && record.host.provider == user.provider()
        && record.host.provider_id == user.provider_id()
    {
        state
            .collab
            .end_session(&record, "Session ended by the host")
            .await
            .map_err(ApiError::internal)?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /ws/ticket?session_id=`: a single-use ticket for the WebSocket, valid 30 s (not for
/// service accounts).
pub async fn ticket(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    user: AuthUser,
) -> Result<Response, ApiError> {
    // A socket edits diagrams, which service-account tokens may not (`subject_authority: invoker`
    // on the collaboration writes); and it would outlive the deletion of their credential.
    if user.is_service_account() {
        return Err(ApiError::forbidden(
            "Service-account tokens cannot join collaboration sessions",
        ));
    }
    let sid = q
        .get("session_id")
        .ok_or_else(|| ApiError::invalid("session_id is required"))
        .and_then(|s| {
            Uuid::parse_str(s).map_err(|_| ApiError::invalid_id("Invalid session_id: must be a UUID"))
        })?;
    let not_found = || ApiError::NotFound("Collaboration session not found".into());
    let record = state
        .collab
        .registry
        .by_id(sid)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(not_found)?;
    let tm = live::threat_model(state.store.as_ref(), record.threat_model_id)
        .await?
        .ok_or_else(not_found)?;
    if effective_role(&tm, &Subject::from(&user)).is_none() {
        return Err(not_found());
    }
    let ticket = crate::auth::tokens::random_token(32);
    let data = Ticket {
        user_id: user.user.internal_uuid,
        provider: user.provider().to_owned(),
        provider_id: user.provider_id().to_owned(),
        session_id: sid,
        groups: user.groups().to_vec(),
        token_hash: token_hash(&user.token),
        family: user.claims.sid.clone(),
        login_expires_at: user.claims.auth_time + state.config.session_lifetime_days * 86_400,
    };
    let value = serde_json::to_string(&data).map_err(ApiError::internal)?;
    state
        .kv
        .set(&format!("ws_ticket:{ticket}"), &value, TICKET_TTL)
        .await
        .map_err(|e| ApiError::ServiceUnavailable(format!("Ticket store unavailable: {e}")))?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "ticket": ticket })),
    )
        .into_response())
}

/// `GET /me/sessions`: the active sessions of threat models the caller can read (an array, as
/// TMI and tmi-ux have it).
pub async fn my_sessions(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut out = Vec::new();
    for record in state.collab.registry.all().await.map_err(ApiError::internal)? {
        let Some(tm) = live::threat_model(state.store.as_ref(), record.threat_model_id).await? else {
            continue;
        };
        if effective_role(&tm, &Subject::from(&user)).is_none() {
            continue;
        }
        match session_body(&state, &record, &headers).await {
            Ok(body) => out.push(body),
            Err(ApiError::NotFound(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(Json(Value::Array(out)).into_response())
}

/// A 429 with `Retry-After` and TMI's error body.
pub fn too_many(message: &str) -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, "5")],
        Json(crate::error::ErrorBody {
            error: "too_many_requests".into(),
            error_description: message.into(),
        }),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_ends_at_its_absolute_lifetime() {
        let ticket = Ticket {
            user_id: Uuid::nil(),
            provider: "tmi".into(),
            provider_id: "alice".into(),
            session_id: Uuid::nil(),
            groups: vec![],
            token_hash: String::new(),
            family: None,
            login_expires_at: 1_000,
        };
        assert!(!ticket.login_expired(999));
        assert!(ticket.login_expired(1_000));
    }
}
