//! The collaboration WebSocket (tmi-compat.md §5.2–5.3): ticket authentication, origin check and
//! connection caps before the upgrade; then one task per socket that reads client messages and
//! acts on them through the hub, and a writer task that sends the hub's messages and keepalive
//! pings. The messages of a joined socket are handled in `conn`. IO: the socket, the hub, the
//! store and the token store.

mod conn;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::ws::{
    CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::hub::{Hub, Outbound, SOCKET_QUEUE, error_message, text};
use super::protocol::{ParticipantPermissions, User};
use super::registry::SessionRecord;
use super::rest::{Ticket, protocol_user, too_many};
use crate::authz::{Role, Subject, effective_role};
use crate::config::Config;
use crate::domain::live;
use crate::error::ApiError;
use crate::extract::{Path, Query};
use crate::state::AppState;
use conn::{Conn, permissions_of};

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
    conn_id: Uuid,
    /// The socket's place under the user's cap, taken before the upgrade.
    reservation: Reservation,
}

/// One of a user's sockets under `TMI_WEBSOCKET_MAX_CONNECTIONS_PER_USER`, reserved atomically
/// before the upgrade; given back when dropped unless the socket left the session normally (which
/// frees it). An upgrade that never completes thus frees its place too.
struct Reservation {
    registry: super::registry::Registry,
    user: User,
    conn_id: Uuid,
    armed: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (registry, user, conn_id) = (self.registry.clone(), self.user.clone(), self.conn_id);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = registry.release(&user, conn_id).await {
                    tracing::warn!(error = %e, "collaboration: freeing a connection reservation failed");
                }
            });
        }
    }
}

enum Prepared {
    Ready(Box<Ctx>),
    Refused(Response),
}

/// Everything the upgrade checks, in order: ids, the ticket (consumed), the origin, the session,
/// the user's access, a removal by the host, and the caps.
async fn prepare(
    state: &AppState,
    tm: &str,
    d: &str,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Prepared, ApiError> {
    let tm = Uuid::parse_str(tm).map_err(|_| ApiError::invalid_id("Invalid threat_model_id"))?;
    let d = Uuid::parse_str(d).map_err(|_| ApiError::invalid_id("Invalid diagram_id"))?;
    let ticket = take_ticket(state, q).await?;
    if !origin_allowed(&state.config, headers) {
        return Err(ApiError::forbidden("Origin not allowed"));
    }
    let record = state
        .collab
        .registry
        .by_id(ticket.session_id)
        .await
        .map_err(ApiError::internal)?
        .filter(|r| r.threat_model_id == tm && r.diagram_id == d)
        .ok_or_else(|| ApiError::NotFound("Collaboration session not found".into()))?;
    let (who, role) = ticket_holder_access(state, &ticket, tm).await?;
    let conn_id = Uuid::new_v4();
    let reservation = match admission(&state.collab, &record, &who, conn_id).await? {
        Ok(r) => r,
        Err(refused) => return Ok(Prepared::Refused(refused)),
    };
    Ok(Prepared::Ready(Box::new(Ctx {
        ticket,
        user: who,
        permissions: permissions_of(role),
        conn_id,
        reservation,
    })))
}

/// The ticket named by the query, consumed; it must be for the session the query names. Only a
/// ticket authenticates a socket: no bearer header, no token parameter.
async fn take_ticket(state: &AppState, q: &HashMap<String, String>) -> Result<Ticket, ApiError> {
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
    Ok(ticket)
}

/// The ticket's user and their role on the (live) threat model; 403 without one.
async fn ticket_holder_access(state: &AppState, ticket: &Ticket, tm: Uuid) -> Result<(User, Role), ApiError> {
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
    Ok((protocol_user(&user), role))
}

/// 403 for a user the host removed; `Err(429)` when the session or the user's connections are at
/// their cap; else the socket's reserved place under the user's cap. The place is taken in one
/// atomic step, so parallel connects cannot together pass the cap.
async fn admission(
    hub: &Hub,
    record: &SessionRecord,
    who: &User,
    conn_id: Uuid,
) -> Result<Result<Reservation, Response>, ApiError> {
    let sid = record.session_id;
    if hub
        .registry
        .is_denied(sid, who)
        .await
        .map_err(ApiError::internal)?
    {
        return Err(ApiError::forbidden("You were removed from this session"));
    }
    let participants = hub.registry.participants(sid).await.map_err(ApiError::internal)?;
    if participants.len() >= hub.settings.max_participants_per_session {
        return Ok(Err(too_many("The session is full")));
    }
    let reserved = hub
        .registry
        .reserve_connection(who, conn_id, &hub.replica, hub.settings.max_connections_per_user)
        .await
        .map_err(ApiError::internal)?;
    if !reserved {
        return Ok(Err(too_many("Too many open collaboration connections")));
    }
    Ok(Ok(Reservation {
        registry: hub.registry.clone(),
        user: who.clone(),
        conn_id,
        armed: true,
    }))
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason.to_owned()),
    }))
}

/// One socket, from upgrade to close: the writer task, joining the session, the read loop, and
/// leaving.
async fn run(socket: WebSocket, state: AppState, mut ctx: Ctx) {
    let hub = state.collab.clone();
    let conn_id = ctx.conn_id;
    let (mut sink, stream) = socket.split();
    let (data_tx, data_rx) = mpsc::channel::<Outbound>(SOCKET_QUEUE);
    let (ctl_tx, ctl_rx) = mpsc::unbounded_channel::<Outbound>();
    let Ok(Some(record)) = hub.registry.by_id(ctx.ticket.session_id).await else {
        let _ = sink.send(close(1000, "Session not found")).await;
        return;
    };
    let ping_every = hub.settings.ping_interval;
    let writer = tokio::spawn(write(sink, data_rx, ctl_rx, ping_every));
    let joined = hub
        .attach(
            &record,
            conn_id,
            &ctx.user,
            ctx.permissions,
            data_tx.clone(),
            ctl_tx.clone(),
        )
        .await;
    let local = match joined {
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
    let rate = hub.settings.max_messages_per_second;
    let (stream, end) = read(&mut conn, stream, writer, ping_every, rate).await;
    drop(conn);
    drop(ctl_tx);
    drop(data_tx);
    hub.detach(record.session_id, conn_id, &ctx.user).await;
    // `detach` freed the place under the cap.
    ctx.reservation.armed = false;
    hub.metrics.sockets.dec();
    finish(stream, end).await;
}

/// The writer task: the hub's messages (control first), keepalive pings, and the close frame.
/// Ends when a write takes longer than 10 s or fails, after a close, or when both queues close.
async fn write(
    mut sink: SplitSink<WebSocket, Message>,
    mut data_rx: mpsc::Receiver<Outbound>,
    mut ctl_rx: mpsc::UnboundedReceiver<Outbound>,
    ping_every: Duration,
) {
    let mut ping = tokio::time::interval(ping_every);
    ping.tick().await;
    let limit = Duration::from_secs(10);
    loop {
        let next = tokio::select! {
            biased;
            m = ctl_rx.recv() => m.map_or(Next::Stop, Next::Send),
            m = data_rx.recv() => m.map_or(Next::Stop, Next::Send),
            _ = ping.tick() => Next::Ping,
        };
        let msg = match next {
            Next::Stop => return,
            Next::Ping => Message::Ping(Default::default()),
            Next::Send(Outbound::Text(t)) => Message::Text(Utf8Bytes::from(t.as_ref())),
            Next::Send(Outbound::Close(code, reason)) => {
                let _ = tokio::time::timeout(limit, sink.send(close(code, &reason))).await;
                return;
            }
        };
        match tokio::time::timeout(limit, sink.send(msg)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}

/// What the writer does next.
enum Next {
    Send(Outbound),
    Ping,
    Stop,
}

/// A socket's message budget: `rate` per second, bursts of twice as many.
fn message_limiter(rate: u32) -> governor::DefaultDirectRateLimiter {
    let rate = std::num::NonZeroU32::new(rate).unwrap_or(std::num::NonZeroU32::MIN);
    let burst = rate.saturating_mul(std::num::NonZeroU32::MIN.saturating_add(1));
    governor::RateLimiter::direct(governor::Quota::per_second(rate).allow_burst(burst))
}

/// How the read loop ended.
enum End {
    /// The writer ended (it sent a close frame, or the socket broke).
    WriterDone,
    /// The client closed or the reader gave up; the writer may still flush a close frame.
    Reader(JoinHandle<()>),
}

/// The read loop: client frames, and every keepalive period the access re-check and the
/// silence check. A socket that sends more than `rate` messages per second (beyond a burst of
/// twice that) is told so and closed with 1008, and nothing more it sends is handled: a flood
/// cannot fill the other participants' queues or the session's apply section.
async fn read(
    conn: &mut Conn<'_>,
    mut stream: SplitStream<WebSocket>,
    mut writer: JoinHandle<()>,
    ping_every: Duration,
    rate: u32,
) -> (SplitStream<WebSocket>, End) {
    let mut check = tokio::time::interval(ping_every);
    check.tick().await;
    let mut last_seen = Instant::now();
    let limiter = message_limiter(rate);
    let mut flooding = false;
    loop {
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(_) | Message::Binary(_))) if flooding => last_seen = Instant::now(),
                Some(Ok(Message::Text(_) | Message::Binary(_))) if limiter.check().is_err() => {
                    last_seen = Instant::now();
                    flooding = true;
                    let reason = format!("Message rate limit exceeded ({rate} per second)");
                    conn.send(error_message("rate_limit_exceeded", &reason));
                    conn.close(1008, &reason);
                }
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
            _ = &mut writer => return (stream, End::WriterDone),
        }
    }
    (stream, End::Reader(writer))
}

/// After leaving: let the writer flush a pending close frame, or, when the writer already sent
/// one (or the socket broke), wait briefly for the client's close reply, so that closing does not
/// reset a connection with unread data (which would lose the close frame on the client's side).
async fn finish(mut stream: SplitStream<WebSocket>, end: End) {
    match end {
        End::WriterDone => {
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(Ok(m)) = stream.next().await {
                    if matches!(m, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
        End::Reader(writer) => {
            let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
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
