//! The collaboration WebSocket (tmi-compat.md §5.2–5.3): ticket authentication, origin check and
//! connection caps before the upgrade; then one task per socket that reads client messages and
//! acts on them through the hub, and a writer task that sends the hub's messages and keepalive
//! pings. IO: the socket, the hub, the store and the token store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::ws::{
    CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::hub::{Hub, LocalSession, Outbound, SOCKET_QUEUE, error_message, text};
use super::protocol::{
    AuthorizationDenied, AuthorizationDeniedReason, ClientMessage, ParticipantPermissions,
    PresenterDeniedEvent, PresenterRequestEvent, ServerMessage, SyncStatusResponse, User,
};
use super::registry::user_key;
use super::rest::{Ticket, protocol_user, too_many};
use crate::authz::{Role, Subject, effective_role};
use crate::config::Config;
use crate::domain::live;
use crate::error::ApiError;
use crate::extract::{Path, Query};
use crate::state::AppState;

/// Largest inbound message (upstream's read limit).
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Whether a browser origin may open a socket: any in dev/test; otherwise localhost, the
/// server's own host (request `Host` or `TMI_SERVER_BASE_URL`), `WEBSOCKET_ALLOWED_ORIGINS`, and
/// the CORS origins (the web client's origin is configured there). Pure.
pub fn origin_allowed(config: &Config, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        // Non-browser clients send no Origin.
        return true;
    };
    if config.build_mode.is_dev_or_test() {
        return true;
    }
    let origin = origin.trim_end_matches('/');
    let host_of = |o: &str| {
        o.split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or("").to_ascii_lowercase())
            .unwrap_or_default()
    };
    let origin_host = host_of(origin);
    let bare = origin_host.split(':').next().unwrap_or("");
    if bare == "localhost" || bare == "127.0.0.1" {
        return true;
    }
    let request_host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !origin_host.is_empty() && origin_host == request_host {
        return true;
    }
    if let Some(base) = &config.base_url
        && host_of(base) == origin_host
    {
        return true;
    }
    config
        .websocket_allowed_origins
        .iter()
        .chain(config.cors_allowed_origins.iter())
        .any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

fn permissions_of(role: Role) -> ParticipantPermissions {
    if role >= Role::Writer {
        ParticipantPermissions::Writer
    } else {
        ParticipantPermissions::Reader
    }
}

/// `GET /threat_models/{tm}/diagrams/{d}/ws?session_id=…&ticket=…`.
pub async fn upgrade(
    State(state): State<AppState>,
    Path((tm, d)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // A request that cannot be upgraded is refused before its ticket is consumed.
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            return ApiError::invalid(format!("WebSocket upgrade required: {rejection}")).into_response();
        }
    };
    match prepare(&state, &tm, &d, &q, &headers).await {
        Ok(Prepared::Ready(ctx)) => ws
            .max_message_size(2 * MAX_MESSAGE)
            .max_frame_size(2 * MAX_MESSAGE)
            .on_upgrade(move |socket| run(socket, state, *ctx))
            .into_response(),
        Ok(Prepared::Refused(res)) => res,
        Err(e) => e.into_response(),
    }
}

struct Ctx {
    ticket: Ticket,
    user: User,
    permissions: ParticipantPermissions,
}

enum Prepared {
    Ready(Box<Ctx>),
    Refused(Response),
}

async fn prepare(
    state: &AppState,
    tm: &str,
    d: &str,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Prepared, ApiError> {
    let tm = Uuid::parse_str(tm).map_err(|_| ApiError::invalid_id("Invalid threat_model_id"))?;
    let d = Uuid::parse_str(d).map_err(|_| ApiError::invalid_id("Invalid diagram_id"))?;
    // Only a ticket authenticates a socket: no bearer header, no token parameter.
    let raw = q
        .get("ticket")
        .filter(|t| !t.is_empty() && t.len() <= 128)
        .ok_or(ApiError::UnauthorizedWith(
            "A WebSocket ticket is required".into(),
        ))?;
    let ticket: Ticket = state
        .kv
        .take(&format!("ws_ticket:{raw}"))
        .await
        .map_err(|e| ApiError::ServiceUnavailable(format!("Ticket store unavailable: {e}")))?
        .and_then(|s| serde_json::from_str(&s).ok())
        .ok_or(ApiError::UnauthorizedWith(
            "Invalid, expired or already used ticket".into(),
        ))?;
    if let Some(sid) = q.get("session_id")
        && Uuid::parse_str(sid).ok() != Some(ticket.session_id)
    {
        return Err(ApiError::UnauthorizedWith(
            "The ticket was issued for another session".into(),
        ));
    }
    if !origin_allowed(&state.config, headers) {
        return Err(ApiError::forbidden("Origin not allowed"));
    }
    let hub = &state.collab;
    let record = hub
        .registry
        .by_id(ticket.session_id)
        .await
        .map_err(ApiError::internal)?
        .filter(|r| r.threat_model_id == tm && r.diagram_id == d)
        .ok_or_else(|| ApiError::NotFound("Collaboration session not found".into()))?;
    let user = state
        .store
        .find_user(&ticket.provider, &ticket.provider_id)
        .await?
        .ok_or(ApiError::UnauthorizedWith("Unknown user".into()))?;
    let model = live::threat_model(state.store.as_ref(), tm)
        .await?
        .ok_or_else(|| ApiError::not_found("Threat model"))?;
    let subject = Subject {
        provider: &user.provider,
        provider_id: &user.provider_user_id,
        email: &user.email,
        groups: &ticket.groups,
    };
    let role = effective_role(&model, &subject)
        .ok_or_else(|| ApiError::forbidden("You do not have access to this threat model"))?;
    let who = protocol_user(&user);
    if hub
        .registry
        .is_denied(record.session_id, &who)
        .await
        .map_err(ApiError::internal)?
    {
        return Err(ApiError::forbidden("You were removed from this session"));
    }
    let participants = hub
        .registry
        .participants(record.session_id)
        .await
        .map_err(ApiError::internal)?;
    if participants.len() >= hub.settings.max_participants_per_session {
        return Ok(Prepared::Refused(too_many("The session is full")));
    }
    if hub
        .registry
        .user_connections(&who)
        .await
        .map_err(ApiError::internal)?
        >= hub.settings.max_connections_per_user
    {
        return Ok(Prepared::Refused(too_many(
            "Too many open collaboration connections",
        )));
    }
    Ok(Prepared::Ready(Box::new(Ctx {
        ticket,
        user: who,
        permissions: permissions_of(role),
    })))
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason.to_owned()),
    }))
}

/// One socket, from upgrade to close.
async fn run(socket: WebSocket, state: AppState, ctx: Ctx) {
    let hub = state.collab.clone();
    let conn_id = Uuid::new_v4();
    let (mut sink, mut stream) = socket.split();
    let (data_tx, mut data_rx) = mpsc::channel::<Outbound>(SOCKET_QUEUE);
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel::<Outbound>();
    let Ok(Some(record)) = hub.registry.by_id(ctx.ticket.session_id).await else {
        let _ = sink.send(close(1000, "Session not found")).await;
        return;
    };
    let ping_every = hub.settings.ping_interval;
    let writer = tokio::spawn(async move {
        let mut ping = tokio::time::interval(ping_every);
        ping.tick().await;
        let write = Duration::from_secs(10);
        loop {
            let msg = tokio::select! {
                biased;
                m = ctl_rx.recv() => match m {
                    Some(Outbound::Text(t)) => Message::Text(Utf8Bytes::from(t.as_ref())),
                    Some(Outbound::Close(code, reason)) => {
                        let _ = tokio::time::timeout(write, sink.send(close(code, &reason))).await;
                        return;
                    }
                    None => return,
                },
                m = data_rx.recv() => match m {
                    Some(Outbound::Text(t)) => Message::Text(Utf8Bytes::from(t.as_ref())),
                    Some(Outbound::Close(code, reason)) => {
                        let _ = tokio::time::timeout(write, sink.send(close(code, &reason))).await;
                        return;
                    }
                    None => return,
                },
                _ = ping.tick() => Message::Ping(Default::default()),
            };
            match tokio::time::timeout(write, sink.send(msg)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    });
    let local = match hub
        .attach(
            &record,
            conn_id,
            &ctx.user,
            ctx.permissions,
            data_tx.clone(),
            ctl_tx.clone(),
        )
        .await
    {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "collaboration: joining the session failed");
            let _ = ctl_tx.send(Outbound::Text(text(&error_message(
                "diagram_not_found",
                "The diagram could not be loaded",
            ))));
            let _ = ctl_tx.send(Outbound::Close(1011, "Diagram unavailable".into()));
            let _ = writer.await;
            return;
        }
    };
    hub.metrics.sockets.inc();
    let mut conn = Conn {
        state: &state,
        hub: &hub,
        local: &local,
        conn_id,
        user: ctx.user.clone(),
        permissions: ctx.permissions,
        ticket: &ctx.ticket,
        out: ctl_tx.clone(),
    };
    let mut writer = writer;
    let mut writer_done = false;
    let mut check = tokio::time::interval(ping_every);
    check.tick().await;
    let mut last_seen = Instant::now();
    loop {
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(t))) => {
                    last_seen = Instant::now();
                    if t.len() > MAX_MESSAGE {
                        conn.close(1009, "Message too big");
                        continue;
                    }
                    conn.handle(t.as_str()).await;
                }
                Some(Ok(Message::Binary(_))) => {
                    last_seen = Instant::now();
                    conn.send(error_message("validation_error", "Binary frames are not supported"));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => last_seen = Instant::now(),
                Some(Ok(Message::Close(_))) | None => break,
                Some(Err(e)) => {
                    let msg = e.to_string();
                    if msg.contains("too long") || msg.contains("Space limit") {
                        conn.close(1009, "Message too big");
                    }
                    break;
                }
            },
            _ = check.tick() => {
                // Access first: a revoked user learns why (4401/4403), even if also silent.
                if conn.recheck().await {
                    continue;
                }
                if last_seen.elapsed() > ping_every * 3 {
                    conn.close(1001, "No response to keepalive pings");
                    break;
                }
            }
            _ = &mut writer => {
                writer_done = true;
                break;
            }
        }
    }
    drop(conn);
    drop(ctl_tx);
    drop(data_tx);
    hub.detach(record.session_id, conn_id, &ctx.user).await;
    hub.metrics.sockets.dec();
    // Let the writer flush a pending close frame.
    if writer_done {
        // The writer sent a close frame (or the socket broke): wait briefly for the client's
        // close reply, so that closing does not reset a connection with unread data (which
        // would lose the close frame on the client's side).
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(m)) = stream.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    } else {
        let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    }
}

struct Conn<'a> {
    state: &'a AppState,
    hub: &'a Arc<Hub>,
    local: &'a Arc<LocalSession>,
    conn_id: Uuid,
    user: User,
    permissions: ParticipantPermissions,
    ticket: &'a Ticket,
    out: mpsc::UnboundedSender<Outbound>,
}

impl Conn<'_> {
    fn send(&self, m: ServerMessage) {
        let _ = self.out.send(Outbound::Text(text(&m)));
    }

    fn close(&self, code: u16, reason: &str) {
        let _ = self.out.send(Outbound::Close(code, reason.to_owned()));
    }

    fn is_host(&self) -> bool {
        user_key(&self.local.record().host) == user_key(&self.user)
    }

    fn denied(&self, original_operation_id: String) {
        self.send(ServerMessage::AuthorizationDenied(AuthorizationDenied {
            original_operation_id,
            reason: AuthorizationDeniedReason::InsufficientPermissions,
        }));
    }

    /// Re-checks on every keepalive period that the token behind the ticket was not revoked
    /// (4401) and that the user can still read the threat model (4403). `true` when it closed the
    /// socket.
    async fn recheck(&mut self) -> bool {
        let revoked = self
            .state
            .kv
            .get(&format!("blacklist:token:{}", self.ticket.token_hash))
            .await
            .ok()
            .flatten()
            .is_some();
        if revoked || self.ticket.login_expired(chrono::Utc::now().timestamp()) {
            self.send(error_message("unauthorized", "Your session has ended"));
            self.close(
                4401,
                if revoked {
                    "Token revoked"
                } else {
                    "Session expired"
                },
            );
            return true;
        }
        let record = self.local.record();
        let role = match live::threat_model(self.state.store.as_ref(), record.threat_model_id).await {
            Ok(Some(tm)) => {
                let subject = Subject {
                    provider: &self.user.provider,
                    provider_id: &self.user.provider_id,
                    email: &self.user.email,
                    groups: &self.ticket.groups,
                };
                effective_role(&tm, &subject)
            }
            Ok(None) => None,
            Err(_) => return false,
        };
        match role {
            None => {
                self.send(error_message(
                    "unauthorized",
                    "Your access to this threat model was revoked",
                ));
                self.close(4403, "Access revoked");
                true
            }
            Some(r) => {
                let now = permissions_of(r);
                if now != self.permissions {
                    self.permissions = now;
                    self.hub
                        .update_permissions(self.local, self.conn_id, &self.user, now)
                        .await;
                }
                false
            }
        }
    }

    /// The connected participant named by a message, checked against the server's view:
    /// `Err(true)` when the name matches someone but the rest of the identity does not.
    async fn target(&self, named: &User) -> Result<User, bool> {
        let participants = self
            .hub
            .registry
            .participants(self.local.record().session_id)
            .await
            .unwrap_or_default();
        let Some(p) = participants
            .iter()
            .find(|p| p.user.provider == named.provider && p.user.provider_id == named.provider_id)
        else {
            return Err(false);
        };
        if p.user.email != named.email || p.user.display_name != named.display_name {
            return Err(true);
        }
        Ok(p.user.clone())
    }

    /// Resolves a named user or answers for the sender; `None` when the message must stop here.
    async fn resolve(&self, named: &User) -> Option<User> {
        match self.target(named).await {
            Ok(u) => Some(u),
            Err(false) => {
                self.send(error_message(
                    "invalid_participant",
                    "That user is not in this session",
                ));
                None
            }
            Err(true) => {
                tracing::warn!(user = %user_key(&self.user), "collaboration: a message impersonated another user");
                self.send(error_message(
                    "SECURITY_VIOLATION",
                    "The named user does not match the session's records",
                ));
                self.close(1008, "Security violation");
                None
            }
        }
    }

    async fn handle(&mut self, frame: &str) {
        let msg = match ClientMessage::from_json(frame) {
            Ok(m) => m,
            Err(e) => {
                if let Some(code) = e.error_code() {
                    self.send(error_message(code, e.to_string()));
                }
                return;
            }
        };
        let sid = self.local.record().session_id;
        match msg {
            ClientMessage::DiagramOperationRequest(req) => {
                if self.permissions != ParticipantPermissions::Writer {
                    self.denied(req.operation_id.to_string());
                    return;
                }
                if let Some(m) = self
                    .hub
                    .operation(self.local, self.conn_id, &self.user, &req)
                    .await
                {
                    self.send(m);
                }
            }
            ClientMessage::UndoRequest | ClientMessage::RedoRequest => {
                if self.permissions != ParticipantPermissions::Writer {
                    self.denied(String::new());
                    return;
                }
                let redo = matches!(msg, ClientMessage::RedoRequest);
                if let Some(m) = self.hub.history(self.local, self.conn_id, &self.user, redo).await {
                    self.send(m);
                }
            }
            ClientMessage::SyncStatusRequest => match self.hub.stored_vector(self.local).await {
                Ok(v) => self.send(ServerMessage::SyncStatusResponse(SyncStatusResponse {
                    update_vector: v,
                })),
                Err(_) => self.send(error_message(
                    "diagram_not_found",
                    "The diagram could not be loaded",
                )),
            },
            ClientMessage::SyncRequest(req) => match self.hub.stored_vector(self.local).await {
                Ok(v) if req.update_vector == Some(v) => {
                    self.send(ServerMessage::SyncStatusResponse(SyncStatusResponse {
                        update_vector: v,
                    }))
                }
                Ok(_) => self.hub.send_state(self.local, self.conn_id).await,
                Err(_) => self.send(error_message(
                    "diagram_not_found",
                    "The diagram could not be loaded",
                )),
            },
            ClientMessage::PresenterRequest => {
                if self.is_host() {
                    let _ = self
                        .hub
                        .set_presenter(sid, Some(self.user.clone()), &self.user)
                        .await;
                    return;
                }
                let record = self.local.record();
                let host_here = self
                    .hub
                    .registry
                    .participants(sid)
                    .await
                    .unwrap_or_default()
                    .iter()
                    .any(|p| user_key(&p.user) == user_key(&record.host));
                if host_here {
                    let m = ServerMessage::PresenterRequestEvent(PresenterRequestEvent {
                        requesting_user: self.user.clone(),
                    });
                    self.hub.broadcast(sid, None, Some(&record.host), m).await;
                } else {
                    self.send(ServerMessage::PresenterDeniedEvent(PresenterDeniedEvent {
                        denied_user: self.user.clone(),
                    }));
                }
            }
            ClientMessage::PresenterDeniedRequest(req) => {
                if !self.is_host() {
                    self.send(error_message(
                        "permission_denied",
                        "Only the host can deny presenter requests",
                    ));
                    return;
                }
                if let Some(target) = self.resolve(&req.denied_user).await {
                    let m = ServerMessage::PresenterDeniedEvent(PresenterDeniedEvent {
                        denied_user: target.clone(),
                    });
                    self.hub.broadcast(sid, None, Some(&target), m).await;
                }
            }
            ClientMessage::ChangePresenterRequest(req) => {
                if !self.is_host() {
                    self.send(error_message(
                        "permission_denied",
                        "Only the host can change the presenter",
                    ));
                    return;
                }
                let presenter = match &req.new_presenter {
                    None => None,
                    Some(named) => match self.resolve(named).await {
                        Some(u) => Some(u),
                        None => return,
                    },
                };
                let _ = self.hub.set_presenter(sid, presenter, &self.user).await;
            }
            ClientMessage::PresenterCursor(_) | ClientMessage::PresenterSelection(_) => {
                let is_presenter = self
                    .local
                    .record()
                    .presenter
                    .as_ref()
                    .is_some_and(|p| user_key(p) == user_key(&self.user));
                if !is_presenter {
                    return;
                }
                let relay = match msg {
                    ClientMessage::PresenterCursor(c) => ServerMessage::PresenterCursor(c),
                    ClientMessage::PresenterSelection(s) => ServerMessage::PresenterSelection(s),
                    _ => return,
                };
                self.hub.broadcast(sid, Some(self.conn_id), None, relay).await;
            }
            ClientMessage::RemoveParticipantRequest(req) => {
                if !self.is_host() {
                    self.send(error_message(
                        "permission_denied",
                        "Only the host can remove participants",
                    ));
                    return;
                }
                if user_key(&req.removed_user) == user_key(&self.user) {
                    self.send(error_message(
                        "invalid_participant",
                        "The host cannot remove themselves",
                    ));
                    return;
                }
                if let Some(target) = self.resolve(&req.removed_user).await {
                    if let Err(e) = self.hub.registry.deny(sid, &target).await {
                        tracing::warn!(error = %e, "collaboration: recording a removal failed");
                    }
                    self.hub
                        .kick(
                            sid,
                            &target,
                            1000,
                            "removed_from_session",
                            "You were removed from the session by the host",
                        )
                        .await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Config {
        let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_vars(&vars).unwrap()
    }

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().unwrap());
        }
        h
    }

    #[test]
    fn origins() {
        let prod = config(&[
            ("TMI_BUILD_MODE", "production"),
            ("TMI_SERVER_BASE_URL", "https://api.tmi.example"),
            ("TMI_CORS_ALLOWED_ORIGINS", "https://tmi.example"),
            ("WEBSOCKET_ALLOWED_ORIGINS", "https://other.example"),
        ]);
        let host = "api.internal:8080";
        assert!(
            origin_allowed(&prod, &headers(None, host)),
            "no Origin: not a browser"
        );
        assert!(
            origin_allowed(&prod, &headers(Some("https://tmi.example"), host)),
            "CORS origin"
        );
        assert!(
            origin_allowed(&prod, &headers(Some("https://other.example/"), host)),
            "listed origin"
        );
        assert!(
            origin_allowed(&prod, &headers(Some("https://api.tmi.example"), host)),
            "base URL host"
        );
        assert!(
            origin_allowed(&prod, &headers(Some("http://api.internal:8080"), host)),
            "request host"
        );
        assert!(origin_allowed(
            &prod,
            &headers(Some("http://localhost:4200"), host)
        ));
        assert!(!origin_allowed(
            &prod,
            &headers(Some("https://evil.example"), host)
        ));
        assert!(!origin_allowed(
            &prod,
            &headers(Some("https://tmi.example.evil.example"), host)
        ));
        let dev = config(&[("TMI_BUILD_MODE", "dev")]);
        assert!(
            origin_allowed(&dev, &headers(Some("https://evil.example"), host)),
            "dev allows any"
        );
    }
}
