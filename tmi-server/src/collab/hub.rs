//! This replica's side of collaboration: the sockets it holds per session, the bus that carries
//! events between replicas (one Redis pub/sub channel, or in-process without Redis: same code
//! path), ordered delivery of operations by `update_vector`, applying operations to the stored
//! diagram, undo/redo, resync, and the background heartbeat and janitor. IO: the store, the
//! backend, and the per-socket queues (the socket itself is driven by `socket`).
//!
//! Ordering: every applied operation bumps the diagram's `update_vector` in the database with a
//! compare-and-swap on the row version, so the database defines one total order. Events carry
//! that vector; each replica delivers them to its sockets strictly in vector order, holding back
//! early arrivals; a gap that does not fill within [`GAP_WAIT`] (a lost message, a dead
//! publisher) is closed by reloading the diagram and sending `diagram_state`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::backend::{Backend, Signal};
use super::cells::{self, Rejection};
use super::protocol::{
    Cell, CellPatchOperation, DiagramOperationEvent, DiagramOperationRequest, DiagramState, ErrorPayload,
    HistoryOperation, HistoryOperationType, HistoryOutcome, OperationRejected, Participant,
    ParticipantPermissions, ParticipantsUpdate, RejectionReason, ServerMessage, User,
};
use super::registry::{HistoryEntry, ParticipantRecord, Registry, SessionRecord, user_key};
use crate::domain::sessions::OpenSessions;
use crate::metrics::CollabMetrics;
use crate::store::{ChildRecord, Store, StoreError};

/// How long an out-of-order event waits for the ones before it.
pub const GAP_WAIT: Duration = Duration::from_millis(300);
/// Queue of one socket; a client that falls this far behind is disconnected (it resyncs on join).
pub const SOCKET_QUEUE: usize = 1024;

/// Tunables, from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Keepalive ping period; a socket silent for three periods is closed.
    pub ping_interval: Duration,
    /// A session without connected participants for this long is ended.
    pub empty_session_grace: Duration,
    pub max_connections_per_user: usize,
    pub max_participants_per_session: usize,
    /// Replica heartbeat period; the heartbeat expires after three periods.
    pub heartbeat: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(30),
            empty_session_grace: Duration::from_secs(30),
            max_connections_per_user: 5,
            max_participants_per_session: 50,
            heartbeat: Duration::from_secs(2),
        }
    }
}

/// What the hub sends a socket's writer.
#[derive(Debug, Clone)]
pub enum Outbound {
    Text(Arc<str>),
    /// Close with this code and reason.
    Close(u16, String),
}

/// One message between replicas (the bus payload).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Envelope {
    session_id: Uuid,
    #[serde(flatten)]
    kind: EnvelopeKind,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum EnvelopeKind {
    /// An applied operation, delivered in `update_vector` order.
    Operation {
        update_vector: i64,
        exclude: Option<Uuid>,
        message: ServerMessage,
    },
    /// A message outside the operation order (cursor, selection, presenter events).
    Broadcast {
        exclude: Option<Uuid>,
        /// Only to this user's sockets.
        to_user: Option<String>,
        message: ServerMessage,
    },
    /// Membership or presenter changed: every replica re-reads and tells its sockets.
    Participants { initiating_user: Option<User> },
    /// Disconnect this user's sockets (removed by the host or lost access).
    Kick {
        user: String,
        code: u16,
        error: String,
        message: String,
    },
    /// The session ended.
    Terminate { message: String },
}

/// A socket as the hub knows it.
struct ConnHandle {
    user: User,
    permissions: ParticipantPermissions,
    data: mpsc::Sender<Outbound>,
    control: mpsc::UnboundedSender<Outbound>,
    /// The `update_vector` this socket has seen; `None` until its `diagram_state` went out, while
    /// events wait in `pending`.
    vector: Option<i64>,
    /// Held messages: operation events (with their vector and excluded socket) and, with no
    /// vector, other messages, which must also follow `diagram_state` (tmi-compat Part B §4.3).
    pending: Vec<(Option<i64>, Option<Uuid>, Arc<str>)>,
}

#[derive(Default)]
struct Dispatch {
    /// The highest vector delivered in order on this replica.
    delivered: i64,
    /// Early events by vector.
    held: BTreeMap<i64, (Option<Uuid>, Arc<str>)>,
    gap_since: Option<Instant>,
    conns: HashMap<Uuid, ConnHandle>,
    /// A database vector seen ahead of `delivered` by the anti-entropy check.
    suspect: Option<i64>,
}

/// A session with sockets on this replica.
pub struct LocalSession {
    record: Mutex<SessionRecord>,
    dispatch: Mutex<Dispatch>,
    /// Serializes this replica's diagram writes, so that it publishes them in vector order.
    apply: tokio::sync::Mutex<()>,
    last_seq: AtomicU64,
}

impl LocalSession {
    pub fn record(&self) -> SessionRecord {
        self.record
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn dispatch(&self) -> std::sync::MutexGuard<'_, Dispatch> {
        self.dispatch.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// This replica's collaboration hub.
pub struct Hub {
    pub replica: String,
    pub registry: Registry,
    pub settings: Settings,
    store: Arc<dyn Store>,
    pub metrics: CollabMetrics,
    local: Mutex<HashMap<Uuid, Arc<LocalSession>>>,
    shutting_down: AtomicBool,
    /// Dropped with the hub, which ends its background tasks.
    alive: tokio::sync::watch::Sender<()>,
}

/// A message as the text frame every recipient shares.
pub fn text(message: &ServerMessage) -> Arc<str> {
    Arc::from(serde_json::to_string(message).unwrap_or_default())
}

/// A `diagram_state` from a stored diagram row.
pub fn state_message(diagram: &ChildRecord) -> ServerMessage {
    let cells: Vec<Cell> = diagram
        .doc
        .get("cells")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|c| c.as_object().cloned()).collect())
        .unwrap_or_default();
    let palette = diagram
        .doc
        .get("color_palette")
        .and_then(|p| serde_json::from_value(p.clone()).ok());
    ServerMessage::DiagramState(DiagramState {
        diagram_id: diagram.id,
        update_vector: vector_of(diagram),
        cells,
        color_palette: palette,
    })
}

fn vector_of(diagram: &ChildRecord) -> i64 {
    diagram
        .doc
        .get("update_vector")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// An `error` message.
pub fn error_message(error: &str, message: impl Into<String>) -> ServerMessage {
    ServerMessage::Error(ErrorPayload {
        error: error.to_owned(),
        message: message.into(),
        code: None,
        details: None,
        timestamp: Utc::now(),
    })
}

fn rejected(operation_id: Uuid, seq: Option<u64>, vector: i64, r: Rejection) -> ServerMessage {
    ServerMessage::OperationRejected(OperationRejected {
        operation_id,
        sequence_number: seq,
        update_vector: vector,
        reason: r.reason,
        message: r.message,
        details: Some(r.code.to_owned()),
        affected_cells: (!r.affected_cells.is_empty()).then_some(r.affected_cells),
        requires_resync: r.requires_resync,
        timestamp: Utc::now(),
    })
}

fn diagram_gone() -> Rejection {
    Rejection {
        reason: RejectionReason::DiagramNotFound,
        code: "diagram_not_found",
        message: "The diagram no longer exists".into(),
        affected_cells: vec![],
        requires_resync: false,
    }
}

fn save_failed(message: &str) -> Rejection {
    Rejection {
        reason: RejectionReason::ConflictDetected,
        code: "save_failed",
        message: message.to_owned(),
        affected_cells: vec![],
        requires_resync: true,
    }
}

impl Hub {
    /// Creates the hub and starts its background tasks (bus subscription, heartbeat, janitor).
    pub fn start(
        backend: Arc<dyn Backend>,
        store: Arc<dyn Store>,
        settings: Settings,
        metrics: CollabMetrics,
    ) -> Arc<Self> {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "tmi".into());
        let replica = format!("{host}-{}", &Uuid::new_v4().simple().to_string()[..8]);
        let hub = Arc::new(Self {
            replica,
            registry: Registry::new(backend.clone()),
            settings,
            store,
            metrics,
            local: Mutex::default(),
            shutting_down: AtomicBool::new(false),
            alive: tokio::sync::watch::channel(()).0,
        });
        let mut signals = backend.subscribe();
        let weak = Arc::downgrade(&hub);
        let mut alive = hub.alive.subscribe();
        tokio::spawn(async move {
            loop {
                let signal = tokio::select! {
                    s = signals.recv() => s,
                    // The hub was dropped: end the subscription too.
                    _ = alive.changed() => None,
                };
                let Some(signal) = signal else { return };
                let Some(hub) = weak.upgrade() else { return };
                match signal {
                    Signal::Message(payload) => hub.dispatch(&payload),
                    Signal::Gap => hub.recover().await,
                }
            }
        });
        let weak = Arc::downgrade(&hub);
        tokio::spawn(async move {
            let mut tick = 0u64;
            loop {
                let Some(hub) = weak.upgrade() else { return };
                let period = hub.settings.heartbeat;
                if let Err(e) = hub.registry.heartbeat(&hub.replica, period * 3).await {
                    tracing::warn!(error = %e, "collaboration heartbeat failed");
                }
                if tick.is_multiple_of(2) {
                    hub.janitor().await;
                }
                tick += 1;
                drop(hub);
                tokio::time::sleep(period).await;
            }
        });
        hub
    }

    fn locals(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<LocalSession>>> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    async fn publish(&self, session_id: Uuid, kind: EnvelopeKind) -> anyhow::Result<()> {
        let payload = serde_json::to_string(&Envelope { session_id, kind })?;
        self.registry.backend().publish(&payload).await
    }

    /// Publishes a broadcast; failures are logged (nothing durable depends on it).
    pub async fn broadcast(
        &self,
        sid: Uuid,
        exclude: Option<Uuid>,
        to_user: Option<&User>,
        message: ServerMessage,
    ) {
        let kind = EnvelopeKind::Broadcast {
            exclude,
            to_user: to_user.map(user_key),
            message,
        };
        if let Err(e) = self.publish(sid, kind).await {
            tracing::warn!(error = %e, "collaboration broadcast failed");
        }
    }

    /// Tells every replica that membership or the presenter changed.
    pub async fn participants_changed(&self, sid: Uuid, initiating_user: Option<User>) {
        if let Err(e) = self
            .publish(sid, EnvelopeKind::Participants { initiating_user })
            .await
        {
            tracing::warn!(error = %e, "collaboration participants update failed");
        }
    }

    /// Disconnects a user's sockets in a session, on every replica.
    pub async fn kick(&self, sid: Uuid, user: &User, code: u16, error: &str, message: &str) {
        let kind = EnvelopeKind::Kick {
            user: user_key(user),
            code,
            error: error.into(),
            message: message.into(),
        };
        if let Err(e) = self.publish(sid, kind).await {
            tracing::warn!(error = %e, "collaboration kick failed");
        }
    }

    /// Ends a session everywhere: participants get `session_terminated` and close 1000.
    pub async fn end_session(&self, record: &SessionRecord, message: &str) -> anyhow::Result<()> {
        self.registry.end(record).await?;
        let kind = EnvelopeKind::Terminate {
            message: message.to_owned(),
        };
        if let Err(e) = self.publish(record.session_id, kind).await {
            tracing::warn!(error = %e, "collaboration terminate broadcast failed");
            self.terminate_local(record.session_id, message);
        }
        Ok(())
    }

    /// The current `participants_update` of a session.
    pub async fn participants_update(
        &self,
        record: &SessionRecord,
        initiating_user: Option<User>,
    ) -> anyhow::Result<ParticipantsUpdate> {
        let participants = self.registry.participants(record.session_id).await?;
        Ok(ParticipantsUpdate {
            initiating_user,
            participants: dedupe(participants),
            host: record.host.clone(),
            current_presenter: record.presenter.clone(),
        })
    }

    // --- Sockets ------------------------------------------------------------------------------

    /// Registers a socket: records the participant, sends it `diagram_state` (events that arrive
    /// meanwhile are held and follow it), and announces the new participant list.
    #[allow(clippy::too_many_arguments)]
    pub async fn attach(
        &self,
        record: &SessionRecord,
        conn_id: Uuid,
        user: &User,
        permissions: ParticipantPermissions,
        data: mpsc::Sender<Outbound>,
        control: mpsc::UnboundedSender<Outbound>,
    ) -> anyhow::Result<Arc<LocalSession>> {
        let sid = record.session_id;
        let now = Utc::now();
        self.registry
            .join(
                sid,
                &ParticipantRecord {
                    conn_id,
                    user: user.clone(),
                    permissions,
                    replica: self.replica.clone(),
                    joined_at: now,
                    last_activity: now,
                },
            )
            .await?;
        // The socket joins under the map's lock, so that a concurrent last leave cannot drop the
        // local session between finding it and joining it.
        let local = {
            let mut locals = self.locals();
            let local = locals
                .entry(sid)
                .or_insert_with(|| {
                    Arc::new(LocalSession {
                        record: Mutex::new(record.clone()),
                        dispatch: Mutex::new(Dispatch {
                            delivered: i64::MIN,
                            ..Dispatch::default()
                        }),
                        apply: tokio::sync::Mutex::new(()),
                        last_seq: AtomicU64::new(0),
                    })
                })
                .clone();
            local.dispatch().conns.insert(
                conn_id,
                ConnHandle {
                    user: user.clone(),
                    permissions,
                    data,
                    control,
                    vector: None,
                    pending: Vec::new(),
                },
            );
            local
        };
        match self.load_diagram(record).await {
            Ok(diagram) => self.deliver_state(&local, conn_id, &diagram),
            Err(e) => {
                self.detach_local(sid, conn_id);
                let _ = self.registry.leave(sid, conn_id, user).await;
                return Err(e);
            }
        }
        self.participants_changed(sid, Some(user.clone())).await;
        Ok(local)
    }

    /// Sends one socket the given state and then whatever newer events were held for it.
    fn deliver_state(&self, local: &LocalSession, conn_id: Uuid, diagram: &ChildRecord) {
        let v = vector_of(diagram);
        let state = text(&state_message(diagram));
        let mut d = local.dispatch();
        // The first state loaded on this replica fixes where in-order delivery starts; events
        // that arrived before it were held.
        let first = d.delivered == i64::MIN;
        if first {
            d.delivered = v;
        }
        if let Some(conn) = d.conns.get_mut(&conn_id)
            && conn.vector.is_none_or(|cv| cv <= v)
        {
            send(conn, state);
            conn.vector = Some(v);
            for (ev, exclude, payload) in std::mem::take(&mut conn.pending) {
                match ev {
                    None => send(conn, payload),
                    Some(ev) if ev > v => {
                        conn.vector = Some(ev);
                        if exclude != Some(conn_id) {
                            send(conn, payload);
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        if first {
            drain(&mut d);
            if d.held.is_empty() {
                d.gap_since = None;
            }
        }
    }

    fn detach_local(&self, sid: Uuid, conn_id: Uuid) -> bool {
        let mut locals = self.locals();
        let Some(local) = locals.get(&sid).cloned() else {
            return false;
        };
        let empty = {
            let mut d = local.dispatch();
            d.conns.remove(&conn_id);
            d.conns.is_empty()
        };
        if empty {
            locals.remove(&sid);
        }
        true
    }

    /// Unregisters a socket that closed. When the host leaves (and this replica is not shutting
    /// down), the session ends, as in TMI; when the presenter leaves, presenting falls back to
    /// the host, else the first writer, else nobody.
    pub async fn detach(&self, sid: Uuid, conn_id: Uuid, user: &User) {
        self.detach_local(sid, conn_id);
        if let Err(e) = self.registry.leave(sid, conn_id, user).await {
            tracing::warn!(error = %e, "collaboration leave failed");
        }
        if self.is_shutting_down() {
            return;
        }
        let Ok(Some(mut record)) = self.registry.by_id(sid).await else {
            return;
        };
        let participants = self.registry.participants(sid).await.unwrap_or_default();
        let host_key = user_key(&record.host);
        if user_key(user) == host_key && !participants.iter().any(|p| user_key(&p.user) == host_key) {
            if let Err(e) = self
                .end_session(&record, "Session terminated: host disconnected")
                .await
            {
                tracing::warn!(error = %e, "ending the collaboration session failed");
            }
            return;
        }
        if let Some(presenter) = &record.presenter
            && !participants
                .iter()
                .any(|p| user_key(&p.user) == user_key(presenter))
        {
            record.presenter = participants
                .iter()
                .find(|p| user_key(&p.user) == host_key)
                .or_else(|| {
                    participants
                        .iter()
                        .find(|p| p.permissions == ParticipantPermissions::Writer)
                })
                .map(|p| p.user.clone());
            let _ = self.registry.put(&record).await;
        }
        self.participants_changed(sid, Some(user.clone())).await;
    }

    /// A participant's role changed (their access to the threat model was edited): record it and
    /// tell everyone, so the web client's edit rights follow.
    pub async fn update_permissions(
        &self,
        local: &LocalSession,
        conn_id: Uuid,
        user: &User,
        permissions: ParticipantPermissions,
    ) {
        let sid = local.record().session_id;
        if let Some(conn) = local.dispatch().conns.get_mut(&conn_id) {
            conn.permissions = permissions;
        }
        let now = Utc::now();
        let record = ParticipantRecord {
            conn_id,
            user: user.clone(),
            permissions,
            replica: self.replica.clone(),
            joined_at: now,
            last_activity: now,
        };
        if let Err(e) = self.registry.join(sid, &record).await {
            tracing::warn!(error = %e, "collaboration: recording a permission change failed");
        }
        self.participants_changed(sid, None).await;
    }

    /// Updates the presenter everywhere.
    pub async fn set_presenter(&self, sid: Uuid, presenter: Option<User>, by: &User) -> anyhow::Result<()> {
        let Some(mut record) = self.registry.by_id(sid).await? else {
            return Ok(());
        };
        record.presenter = presenter;
        self.registry.put(&record).await?;
        self.participants_changed(sid, Some(by.clone())).await;
        Ok(())
    }

    // --- Bus delivery ---------------------------------------------------------------------------

    fn dispatch(self: &Arc<Self>, payload: &str) {
        let Ok(env) = serde_json::from_str::<Envelope>(payload) else {
            tracing::warn!("collaboration bus: dropping an unreadable message");
            return;
        };
        let Some(local) = self.locals().get(&env.session_id).cloned() else {
            return;
        };
        match env.kind {
            EnvelopeKind::Operation {
                update_vector,
                exclude,
                message,
            } => {
                if let ServerMessage::DiagramOperationEvent(ev) = &message {
                    local.last_seq.fetch_max(ev.sequence_number, Ordering::Relaxed);
                }
                let wait = {
                    let mut d = local.dispatch();
                    d.held.insert(update_vector, (exclude, text(&message)));
                    drain(&mut d);
                    if d.held.is_empty() {
                        d.gap_since = None;
                        false
                    } else if d.gap_since.is_none() {
                        d.gap_since = Some(Instant::now());
                        true
                    } else {
                        false
                    }
                };
                if wait {
                    self.check_gap_later(env.session_id);
                }
            }
            EnvelopeKind::Broadcast {
                exclude,
                to_user,
                message,
            } => {
                let payload = text(&message);
                let mut d = local.dispatch();
                for (id, conn) in d.conns.iter_mut() {
                    if Some(*id) == exclude || to_user.as_ref().is_some_and(|u| *u != user_key(&conn.user)) {
                        continue;
                    }
                    send_after_state(conn, payload.clone());
                }
            }
            EnvelopeKind::Participants { initiating_user } => {
                let hub = self.clone();
                tokio::spawn(async move {
                    let Ok(Some(record)) = hub.registry.by_id(env.session_id).await else {
                        return;
                    };
                    if let Ok(mut guard) = local.record.lock() {
                        *guard = record.clone();
                    }
                    match hub.participants_update(&record, initiating_user).await {
                        Ok(update) => {
                            let payload = text(&ServerMessage::ParticipantsUpdate(update));
                            let mut d = local.dispatch();
                            for conn in d.conns.values_mut() {
                                send_after_state(conn, payload.clone());
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "reading participants failed"),
                    }
                });
            }
            EnvelopeKind::Kick {
                user,
                code,
                error,
                message,
            } => {
                let payload = text(&error_message(&error, message.clone()));
                let d = local.dispatch();
                for conn in d.conns.values().filter(|c| user_key(&c.user) == user) {
                    let _ = conn.control.send(Outbound::Text(payload.clone()));
                    let _ = conn.control.send(Outbound::Close(code, message.clone()));
                }
            }
            EnvelopeKind::Terminate { message } => self.terminate_local(env.session_id, &message),
        }
    }

    fn terminate_local(&self, sid: Uuid, message: &str) {
        let Some(local) = self.locals().remove(&sid) else {
            return;
        };
        let payload = text(&error_message("session_terminated", message));
        let d = local.dispatch();
        for conn in d.conns.values() {
            let _ = conn.control.send(Outbound::Text(payload.clone()));
            let _ = conn.control.send(Outbound::Close(1000, message.to_owned()));
        }
    }

    /// After [`GAP_WAIT`], closes a gap that is still open from the database. (Boxed: resync
    /// schedules this again, and the cycle needs a named `Send` future.)
    fn check_gap_later(self: &Arc<Self>, sid: Uuid) {
        let hub = self.clone();
        let task: futures::future::BoxFuture<'static, ()> = Box::pin(async move {
            tokio::time::sleep(GAP_WAIT).await;
            let Some(local) = hub.locals().get(&sid).cloned() else {
                return;
            };
            let open = local
                .dispatch()
                .gap_since
                .is_some_and(|t| t.elapsed() >= GAP_WAIT);
            if open {
                tracing::info!(session = %sid, "collaboration: an event is missing; resyncing from the database");
                hub.resync(&local).await;
            }
        });
        tokio::spawn(task);
    }

    /// Reloads the diagram and brings every socket of the session up to it.
    async fn resync(self: &Arc<Self>, local: &Arc<LocalSession>) {
        self.metrics.resyncs.inc();
        let record = local.record();
        let diagram = match self.load_diagram(&record).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "collaboration resync: cannot load the diagram");
                return;
            }
        };
        let v = vector_of(&diagram);
        let state = text(&state_message(&diagram));
        let reschedule = {
            let mut d = local.dispatch();
            if v > d.delivered || d.delivered == i64::MIN {
                d.delivered = v;
            }
            let from = d.delivered.saturating_add(1);
            d.held = d.held.split_off(&from);
            for conn in d.conns.values_mut() {
                if conn.vector.is_some_and(|cv| cv < v) {
                    send(conn, state.clone());
                    conn.vector = Some(v);
                }
            }
            d.gap_since = None;
            d.suspect = None;
            drain(&mut d);
            if d.held.is_empty() {
                false
            } else {
                d.gap_since = Some(Instant::now());
                true
            }
        };
        if reschedule {
            self.check_gap_later(record.session_id);
        }
    }

    /// The bus lost messages (Redis restarted or this replica lagged): re-register what this
    /// replica serves, in case Redis lost it, and resync every local session.
    async fn recover(self: &Arc<Self>) {
        self.metrics.bus_gaps.inc();
        let locals: Vec<Arc<LocalSession>> = self.locals().values().cloned().collect();
        let _ = self
            .registry
            .heartbeat(&self.replica, self.settings.heartbeat * 3)
            .await;
        for local in locals {
            let record = local.record();
            let participants: Vec<ParticipantRecord> = {
                let d = local.dispatch();
                d.conns
                    .iter()
                    .map(|(id, c)| ParticipantRecord {
                        conn_id: *id,
                        user: c.user.clone(),
                        permissions: c.permissions,
                        replica: self.replica.clone(),
                        joined_at: record.created_at,
                        last_activity: Utc::now(),
                    })
                    .collect()
            };
            let seq = local.last_seq.load(Ordering::Relaxed);
            if let Err(e) = self.registry.restore(&record, &participants, seq).await {
                tracing::warn!(error = %e, "collaboration: re-registering a session failed");
            }
            self.resync(&local).await;
            self.participants_changed(record.session_id, None).await;
        }
    }

    /// Periodic upkeep: ends sessions nobody is connected to, drops dead replicas' participants,
    /// and checks each local session against the database (a lost event with no later one to
    /// reveal the gap).
    async fn janitor(self: &Arc<Self>) {
        let sessions = match self.registry.all().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "collaboration janitor cannot list sessions");
                return;
            }
        };
        for record in sessions {
            let sid = record.session_id;
            let before = self
                .registry
                .backend()
                .hgetall(&format!("participants:{sid}"))
                .await;
            let Ok(live) = self.registry.participants(sid).await else {
                continue;
            };
            if before.as_ref().is_ok_and(|b| b.len() != live.len()) && !live.is_empty() {
                self.participants_changed(sid, None).await;
            }
            if live.is_empty() {
                let since = self
                    .registry
                    .empty_since(sid)
                    .await
                    .unwrap_or_else(|_| Utc::now());
                let since = since.max(record.created_at);
                let grace = chrono::Duration::from_std(self.settings.empty_session_grace)
                    .unwrap_or_else(|_| chrono::Duration::seconds(30));
                if Utc::now() - since >= grace {
                    tracing::info!(session = %sid, "ending a collaboration session nobody is connected to");
                    let _ = self.end_session(&record, "Session ended: no participants").await;
                }
            } else {
                let _ = self.registry.clear_empty(sid).await;
            }
        }
        let locals: Vec<Arc<LocalSession>> = self.locals().values().cloned().collect();
        for local in locals {
            let record = local.record();
            let Ok(diagram) = self.load_diagram(&record).await else {
                continue;
            };
            let v = vector_of(&diagram);
            let stale = {
                let mut d = local.dispatch();
                if v > d.delivered {
                    let seen_before = d.suspect.is_some_and(|s| s <= v);
                    d.suspect = Some(v);
                    seen_before
                } else {
                    d.suspect = None;
                    false
                }
            };
            if stale {
                tracing::info!(session = %record.session_id, "collaboration: behind the database; resyncing");
                self.resync(&local).await;
            }
        }
    }

    /// Closes every socket of this replica with 1012 (service restart) so clients reconnect to
    /// another replica; sessions stay.
    pub async fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
        let locals: Vec<(Uuid, Arc<LocalSession>)> = self.locals().drain().collect();
        for (sid, local) in locals {
            let conns: Vec<(Uuid, User)> = {
                let d = local.dispatch();
                for conn in d.conns.values() {
                    let _ = conn
                        .control
                        .send(Outbound::Close(1012, "Server restarting".into()));
                }
                d.conns.iter().map(|(id, c)| (*id, c.user.clone())).collect()
            };
            for (id, user) in conns {
                let _ = self.registry.leave(sid, id, &user).await;
            }
        }
        let _ = self
            .registry
            .backend()
            .del(&[format!("replica:{}", self.replica)])
            .await;
    }

    // --- Diagram operations ---------------------------------------------------------------------

    async fn load_diagram(&self, record: &SessionRecord) -> anyhow::Result<ChildRecord> {
        let d = self
            .store
            .get_child(record.threat_model_id, "diagram", record.diagram_id)
            .await?;
        if d.deleted_at.is_some() {
            return Err(StoreError::NotFound.into());
        }
        Ok(d)
    }

    /// Applies an operation and persists it; on success the other participants get the event.
    /// Returns the rejection for the originator, if any.
    pub async fn operation(
        self: &Arc<Self>,
        local: &Arc<LocalSession>,
        conn_id: Uuid,
        user: &User,
        req: &DiagramOperationRequest,
    ) -> Option<ServerMessage> {
        let sid = local.record().session_id;
        let seq = match self.registry.next_seq(sid).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "collaboration: cannot assign a sequence number");
                return Some(rejected(
                    req.operation_id,
                    None,
                    self.current_vector(local).await,
                    save_failed("The collaboration service is unavailable; resync and retry"),
                ));
            }
        };
        match self
            .apply(local, &req.operation, user, req.operation_id, seq, Some(conn_id))
            .await
        {
            Ok(entry) => {
                if let Err(e) = self.registry.record(sid, &entry).await {
                    tracing::warn!(error = %e, "collaboration: recording history failed");
                }
                None
            }
            Err((vector, r)) => Some(rejected(req.operation_id, Some(seq), vector, r)),
        }
    }

    async fn current_vector(&self, local: &LocalSession) -> i64 {
        let d = local.dispatch();
        d.delivered.max(0)
    }

    /// [`Self::apply_locked`], counted in the metrics.
    async fn apply(
        self: &Arc<Self>,
        local: &Arc<LocalSession>,
        operation: &CellPatchOperation,
        user: &User,
        operation_id: Uuid,
        seq: u64,
        exclude: Option<Uuid>,
    ) -> Result<HistoryEntry, (i64, Rejection)> {
        let result = self
            .apply_locked(local, operation, user, operation_id, seq, exclude)
            .await;
        let outcome = if result.is_ok() { "applied" } else { "rejected" };
        self.metrics
            .operations
            .get_or_create(&crate::metrics::OutcomeLabels { outcome })
            .inc();
        result
    }

    /// Applies `operation` to the stored diagram under the database's lock (so writers on every
    /// replica queue in one order) and publishes the event while this replica's apply lock is
    /// held, so this replica publishes in vector order. Returns the history entry, or the
    /// rejection with the current vector.
    async fn apply_locked(
        self: &Arc<Self>,
        local: &Arc<LocalSession>,
        operation: &CellPatchOperation,
        user: &User,
        operation_id: Uuid,
        seq: u64,
        exclude: Option<Uuid>,
    ) -> Result<HistoryEntry, (i64, Rejection)> {
        let record = local.record();
        let _serial = local.apply.lock().await;
        let mut outcome: Option<Result<(cells::Applied, i64), (i64, Rejection)>> = None;
        let now = Utc::now();
        let written = self
            .store
            .update_child_locked(
                record.threat_model_id,
                "diagram",
                record.diagram_id,
                &mut |mut next: ChildRecord| {
                    let vector = vector_of(&next);
                    if next.deleted_at.is_some() {
                        outcome = Some(Err((vector, diagram_gone())));
                        return None;
                    }
                    // The cells move out of the row and back in: no copy of the diagram.
                    let cells_now: Vec<Cell> = match next.doc.get_mut("cells").map(Value::take) {
                        Some(Value::Array(items)) => items
                            .into_iter()
                            .filter_map(|c| match c {
                                Value::Object(m) => Some(m),
                                _ => None,
                            })
                            .collect(),
                        _ => Vec::new(),
                    };
                    match cells::apply(cells_now, operation) {
                        Err(r) => {
                            outcome = Some(Err((vector, r)));
                            None
                        }
                        Ok(mut applied) => {
                            let cells = std::mem::take(&mut applied.cells);
                            if let Value::Object(doc) = &mut next.doc {
                                doc.insert(
                                    "cells".into(),
                                    Value::Array(cells.into_iter().map(Value::Object).collect()),
                                );
                                doc.insert("update_vector".into(), json!(vector + 1));
                            }
                            next.version += 1;
                            next.modified_at = now;
                            outcome = Some(Ok((applied, vector + 1)));
                            Some(next)
                        }
                    }
                },
            )
            .await;
        let (applied, new_vector) = match (written, outcome) {
            (Ok(_), Some(Ok(done))) => done,
            (Ok(_), Some(Err(rejection))) => return Err(rejection),
            (Err(StoreError::NotFound), _) => return Err((0, diagram_gone())),
            (Err(e), _) => {
                tracing::warn!(error = %e, "collaboration: saving the diagram failed");
                return Err((
                    0,
                    save_failed("The operation could not be saved; resync and retry"),
                ));
            }
            (Ok(_), None) => {
                return Err((
                    0,
                    save_failed("The operation could not be saved; resync and retry"),
                ));
            }
        };
        let event = ServerMessage::DiagramOperationEvent(DiagramOperationEvent {
            initiating_user: user.clone(),
            operation_id,
            sequence_number: seq,
            update_vector: new_vector,
            operation: applied.forward.clone(),
        });
        let kind = EnvelopeKind::Operation {
            update_vector: new_vector,
            exclude,
            message: event,
        };
        if let Err(e) = self.publish(record.session_id, kind).await {
            // Persisted but not announced: bring this replica's sockets up to date; other
            // replicas find the gap themselves.
            tracing::warn!(error = %e, "collaboration: publishing an operation failed");
            self.resync(local).await;
        }
        Ok(HistoryEntry {
            forward: applied.forward,
            inverse: applied.inverse,
        })
    }

    /// Undo or redo the session's last step. Everyone (the requester too) gets the event; the
    /// requester also gets a fresh `diagram_state`, since tmi-ux ignores events it initiated.
    pub async fn history(
        self: &Arc<Self>,
        local: &Arc<LocalSession>,
        conn_id: Uuid,
        user: &User,
        redo: bool,
    ) -> Option<ServerMessage> {
        let sid = local.record().session_id;
        let operation_type = if redo {
            HistoryOperationType::Redo
        } else {
            HistoryOperationType::Undo
        };
        let reply = |message| {
            Some(ServerMessage::HistoryOperation(HistoryOperation {
                operation_type,
                message,
            }))
        };
        let entry = match self.registry.pop_history(sid, redo).await {
            Ok(Some(e)) => e,
            Ok(None) => {
                return reply(if redo {
                    HistoryOutcome::NoOperationsToRedo
                } else {
                    HistoryOutcome::NoOperationsToUndo
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "collaboration: reading history failed");
                return reply(HistoryOutcome::ResyncRequired);
            }
        };
        let Ok(seq) = self.registry.next_seq(sid).await else {
            let _ = self.registry.push_history(sid, redo, &entry).await;
            return reply(HistoryOutcome::ResyncRequired);
        };
        let step = if redo { &entry.forward } else { &entry.inverse };
        match self.apply(local, step, user, Uuid::new_v4(), seq, None).await {
            Ok(applied) => {
                // Keep the entry in the original orientation for the other stack.
                let moved = if redo {
                    applied
                } else {
                    HistoryEntry {
                        forward: applied.inverse,
                        inverse: applied.forward,
                    }
                };
                if let Err(e) = self.registry.push_history(sid, !redo, &moved).await {
                    tracing::warn!(error = %e, "collaboration: recording history failed");
                }
                self.send_state(local, conn_id).await;
                None
            }
            Err(_) => reply(HistoryOutcome::ResyncRequired),
        }
    }

    /// Sends one socket the current `diagram_state`.
    pub async fn send_state(&self, local: &Arc<LocalSession>, conn_id: Uuid) {
        let record = local.record();
        match self.load_diagram(&record).await {
            Ok(d) => self.deliver_state(local, conn_id, &d),
            Err(e) => tracing::warn!(error = %e, "collaboration: cannot load the diagram"),
        }
    }

    /// The diagram's current `update_vector` (from the database).
    pub async fn stored_vector(&self, local: &LocalSession) -> anyhow::Result<i64> {
        Ok(vector_of(&self.load_diagram(&local.record()).await?))
    }
}

/// Delivers held events that continue the order.
/// The sessions this hub knows of answer the domain's "no collaboration session open" rule.
#[async_trait::async_trait]
impl OpenSessions for Hub {
    async fn on_diagram(&self, diagram_id: Uuid) -> anyhow::Result<bool> {
        Ok(self.registry.by_diagram(diagram_id).await?.is_some())
    }

    async fn on_threat_model(&self, tm: Uuid) -> anyhow::Result<bool> {
        Ok(self.registry.all().await?.iter().any(|s| s.threat_model_id == tm))
    }
}

fn drain(d: &mut Dispatch) {
    loop {
        if d.delivered == i64::MIN {
            return;
        }
        let Some((&v, _)) = d.held.first_key_value() else {
            return;
        };
        if v <= d.delivered {
            d.held.remove(&v);
            continue;
        }
        if v != d.delivered + 1 {
            return;
        }
        let Some((exclude, payload)) = d.held.remove(&v) else {
            return;
        };
        d.delivered = v;
        for (id, conn) in d.conns.iter_mut() {
            match conn.vector {
                None => conn.pending.push((Some(v), exclude, payload.clone())),
                Some(cv) if v > cv => {
                    conn.vector = Some(v);
                    if exclude != Some(*id) {
                        send(conn, payload.clone());
                    }
                }
                Some(_) => {}
            }
        }
    }
}

/// Queues a message, or holds it until the socket's `diagram_state` went out.
fn send_after_state(conn: &mut ConnHandle, payload: Arc<str>) {
    if conn.vector.is_none() {
        conn.pending.push((None, None, payload));
    } else {
        send(conn, payload);
    }
}

/// Queues a message; a socket whose queue is full is closed (it resyncs when it reconnects).
fn send(conn: &mut ConnHandle, payload: Arc<str>) {
    if conn.data.try_send(Outbound::Text(payload)).is_err() {
        let _ = conn.control.send(Outbound::Close(
            1013,
            "Client too slow; reconnect to resync".into(),
        ));
    }
}

/// One entry per user (several tabs show once), with the best permission and latest activity.
fn dedupe(participants: Vec<ParticipantRecord>) -> Vec<Participant> {
    let mut out: Vec<Participant> = Vec::new();
    for p in participants {
        if let Some(existing) = out.iter_mut().find(|e| user_key(&e.user) == user_key(&p.user)) {
            if p.permissions == ParticipantPermissions::Writer {
                existing.permissions = ParticipantPermissions::Writer;
            }
            existing.last_activity = existing.last_activity.max(p.last_activity);
        } else {
            out.push(Participant {
                user: p.user,
                permissions: p.permissions,
                last_activity: p.last_activity,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collab::backend::RedisBackend;

    async fn subscribers(conn: &mut redis::aio::MultiplexedConnection, channel: &str) -> i64 {
        let reply: (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(conn)
            .await
            .unwrap();
        reply.1
    }

    /// A hub that is dropped (tests, shutdown) leaves no subscriber connection behind.
    #[tokio::test]
    async fn dropping_the_hub_ends_its_redis_subscription() {
        let url = std::env::var("TMI_TEST_REDIS_URL")
            .expect("TMI_TEST_REDIS_URL is not set: run the tests with `make test`, which starts Redis");
        let prefix = format!("test:{}:", Uuid::new_v4().simple());
        let backend = Arc::new(RedisBackend::connect(&url, &prefix).await.unwrap());
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Sqlite::connect(&format!("sqlite://{}/t.db", dir.path().display()), 1)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let hub = Hub::start(
            backend,
            Arc::new(store),
            Settings::default(),
            CollabMetrics::default(),
        );
        let mut conn = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let channel = format!("{prefix}collab:events");
        let mut n = 0;
        for _ in 0..100 {
            n = subscribers(&mut conn, &channel).await;
            if n == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(n, 1, "the hub subscribes");
        drop(hub);
        for _ in 0..100 {
            n = subscribers(&mut conn, &channel).await;
            if n == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(n, 0, "the subscription ended with the hub");
    }
}
