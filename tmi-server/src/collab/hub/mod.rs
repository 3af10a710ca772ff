//! This replica's side of collaboration: the sockets it holds per session, the bus that carries
//! events between replicas (one Redis pub/sub channel per session, which a replica follows only
//! while it has sockets in the session; or in-process without Redis: same code path), ordered delivery of operations by `update_vector`, applying operations to the stored
//! diagram, undo/redo, resync, and the background heartbeat and janitor. IO: the store, the
//! backend, and the per-socket queues (the socket itself is driven by `socket`).
//!
//! Ordering: every applied operation bumps the diagram's `update_vector` in the database with a
//! compare-and-swap on the row version, so the database defines one total order. Events carry
//! that vector; each replica delivers them to its sockets strictly in vector order, holding back
//! early arrivals; a gap that does not fill within [`GAP_WAIT`] (a lost message, a dead
//! publisher) is closed by reloading the diagram and sending `diagram_state`.
//!
//! One concern per file: `local` (the local socket registry), `sockets` (attaching and detaching
//! sockets), `order` (ordered delivery), `bus` (events between replicas, resync and recovery),
//! `apply` (applying operations), `history` (undo/redo), `tasks` (subscription, heartbeat and
//! janitor) and `messages` (the messages the hub builds).

mod apply;
mod bus;
mod history;
mod local;
mod messages;
mod order;
mod sockets;
mod tasks;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use uuid::Uuid;

use super::backend::Backend;
use super::registry::Registry;
use crate::domain::sessions::OpenSessions;
use crate::metrics::CollabMetrics;
use crate::openapi::Spec;
use crate::store::Store;

pub use local::{LocalSession, Outbound, SOCKET_QUEUE};
pub use messages::{error_message, state_message, text};
pub use order::GAP_WAIT;

/// Tunables, from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Keepalive ping period; a socket silent for three periods is closed.
    pub ping_interval: Duration,
    /// A session without connected participants for this long is ended.
    pub empty_session_grace: Duration,
    pub max_connections_per_user: usize,
    pub max_participants_per_session: usize,
    /// Messages one socket may send per second on average (bursts of twice as many).
    pub max_messages_per_second: u32,
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
            max_messages_per_second: 50,
            heartbeat: Duration::from_secs(2),
        }
    }
}

/// This replica's collaboration hub.
pub struct Hub {
    pub replica: String,
    pub registry: Registry,
    pub settings: Settings,
    store: Arc<dyn Store>,
    /// The contract cells are checked against (`domain::diagrams::check_cell`, as REST does).
    spec: Arc<Spec>,
    pub metrics: CollabMetrics,
    local: Mutex<HashMap<Uuid, Arc<LocalSession>>>,
    /// The sessions whose bus channel this replica follows (it follows exactly those it has
    /// sockets in); the lock also orders the follow and unfollow calls.
    followed: tokio::sync::Mutex<HashSet<Uuid>>,
    shutting_down: AtomicBool,
    /// Dropped with the hub, which ends its background tasks.
    alive: tokio::sync::watch::Sender<()>,
}

impl Hub {
    /// Creates the hub and starts its background tasks (bus subscription, heartbeat, janitor).
    pub fn start(
        backend: Arc<dyn Backend>,
        store: Arc<dyn Store>,
        spec: Arc<Spec>,
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
            spec,
            metrics,
            local: Mutex::default(),
            followed: tokio::sync::Mutex::default(),
            shutting_down: AtomicBool::new(false),
            alive: tokio::sync::watch::channel(()).0,
        });
        tasks::spawn(&hub, backend.as_ref());
        hub
    }

    fn locals(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<LocalSession>>> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Follows a session's bus channel while this replica has sockets in it and stops after the
    /// last one left, so a replica receives only the traffic of the sessions it hosts.
    pub(super) async fn track_subscription(&self, sid: Uuid) {
        let mut followed = self.followed.lock().await;
        let hosted = self.locals().contains_key(&sid);
        if hosted == followed.contains(&sid) {
            return;
        }
        let backend = self.registry.backend();
        let topic = sid.to_string();
        let result = if hosted {
            backend.follow(&topic).await
        } else {
            backend.unfollow(&topic).await
        };
        match result {
            Ok(()) if hosted => {
                followed.insert(sid);
            }
            Ok(()) => {
                followed.remove(&sid);
            }
            Err(e) => tracing::warn!(error = %e, "collaboration: changing the bus subscription failed"),
        }
    }

    /// Stops following the channels of sessions that left this replica without a detach (ended).
    pub(super) async fn untrack_gone_sessions(&self) {
        let gone: Vec<Uuid> = {
            let followed = self.followed.lock().await;
            let locals = self.locals();
            followed
                .iter()
                .filter(|s| !locals.contains_key(s))
                .copied()
                .collect()
        };
        for sid in gone {
            self.track_subscription(sid).await;
        }
    }
}

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

/// Fixtures for the hub's tests: users, sockets, and a hub on SQLite with the in-process backend
/// and one diagram.
#[cfg(test)]
pub(super) mod testing {
    use chrono::Utc;
    use serde_json::{Value, json};
    use tokio::sync::mpsc;

    use super::local::ConnHandle;
    use super::*;
    use crate::collab::backend::MemoryBackend;
    use crate::collab::protocol::{CellPatchOperation, ParticipantPermissions, ServerMessage, User};
    use crate::collab::registry::SessionRecord;
    use crate::store::{ChildRecord, Sqlite, ThreatModelRecord};

    pub fn user(id: &str) -> User {
        serde_json::from_value(json!({
            "principal_type": "user", "provider": "tmi", "provider_id": id,
            "email": format!("{id}@tmi.local"), "display_name": id,
        }))
        .unwrap()
    }

    /// A socket with a data queue of `capacity`, and its two receivers.
    pub(in crate::collab::hub) fn conn(
        user: User,
        capacity: usize,
    ) -> (
        ConnHandle,
        mpsc::Receiver<Outbound>,
        mpsc::UnboundedReceiver<Outbound>,
    ) {
        let (data, data_rx) = mpsc::channel(capacity);
        let (control, control_rx) = mpsc::unbounded_channel();
        let c = ConnHandle::new(user, ParticipantPermissions::Writer, data, control);
        (c, data_rx, control_rx)
    }

    pub fn diagram_row(doc: Value) -> ChildRecord {
        let at = Utc::now();
        ChildRecord {
            id: Uuid::new_v4(),
            threat_model_id: Uuid::new_v4(),
            kind: "diagram".into(),
            alias: 1,
            version: 1,
            created_at: at,
            modified_at: at,
            deleted_at: None,
            doc,
        }
    }

    /// `{"type": "patch", "cells": …}`.
    pub fn op(cells: Value) -> CellPatchOperation {
        serde_json::from_value(json!({"type": "patch", "cells": cells})).unwrap()
    }

    /// The messages queued for a socket, parsed.
    pub fn received(rx: &mut mpsc::Receiver<Outbound>) -> Vec<ServerMessage> {
        let mut out = Vec::new();
        while let Ok(Outbound::Text(t)) = rx.try_recv() {
            out.push(serde_json::from_str(&t).unwrap());
        }
        out
    }

    /// Waits (at most 5 s) until the socket receives a message `want` accepts; returns what it
    /// received up to then and anything already queued after it.
    pub async fn wait_for(
        rx: &mut mpsc::Receiver<Outbound>,
        want: impl Fn(&ServerMessage) -> bool,
    ) -> Vec<ServerMessage> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Outbound::Text(t))) => {
                    let m: ServerMessage = serde_json::from_str(&t).unwrap();
                    let done = want(&m);
                    got.push(m);
                    if done {
                        got.extend(received(rx));
                        return got;
                    }
                }
                Ok(Some(Outbound::Close(..))) => {}
                Ok(None) | Err(_) => panic!("the expected message did not arrive; got {got:?}"),
            }
        }
    }

    /// Messages without participant lists (which arrive whenever membership changes).
    pub fn without_lists(messages: Vec<ServerMessage>) -> Vec<ServerMessage> {
        messages
            .into_iter()
            .filter(|m| !matches!(m, ServerMessage::ParticipantsUpdate(_)))
            .collect()
    }

    /// A hub on a fresh SQLite store with one threat model and one empty diagram, and a session
    /// on that diagram hosted by alice.
    pub struct Fixture {
        pub hub: Arc<Hub>,
        pub store: Arc<dyn Store>,
        pub session: SessionRecord,
        _dir: tempfile::TempDir,
    }

    impl Fixture {
        pub async fn new() -> Self {
            Self::with(Settings::default()).await
        }

        pub async fn with(settings: Settings) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let sqlite = Sqlite::connect(&format!("sqlite://{}/t.db", dir.path().display()), 1)
                .await
                .unwrap();
            sqlite.migrate().await.unwrap();
            let store: Arc<dyn Store> = Arc::new(sqlite);
            let at = Utc::now();
            let tm = ThreatModelRecord {
                id: Uuid::new_v4(),
                alias: 0,
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
                doc: json!({"name": "TM"}),
                access: vec![],
            };
            store.insert_threat_model(&tm, &[]).await.unwrap();
            let mut diagram = diagram_row(json!({"name": "D", "cells": [], "update_vector": 0}));
            diagram.threat_model_id = tm.id;
            store.insert_child(&diagram, &[]).await.unwrap();
            let hub = Hub::start(
                Arc::new(MemoryBackend::default()),
                store.clone(),
                Arc::new(crate::openapi::Spec::embedded().unwrap()),
                settings,
                CollabMetrics::default(),
            );
            let (session, _) = hub
                .registry
                .create_or_get(tm.id, diagram.id, &user("alice"))
                .await
                .unwrap();
            Self {
                hub,
                store,
                session,
                _dir: dir,
            }
        }

        /// Attaches a socket for `who`: its id, the local session and its data queue.
        pub async fn join(
            &self,
            who: &str,
        ) -> (
            Uuid,
            Arc<LocalSession>,
            mpsc::Receiver<Outbound>,
            mpsc::UnboundedReceiver<Outbound>,
        ) {
            let (data, data_rx) = mpsc::channel(SOCKET_QUEUE);
            let (control, control_rx) = mpsc::unbounded_channel();
            let id = Uuid::new_v4();
            let local = self
                .hub
                .attach(
                    &self.session,
                    id,
                    &user(who),
                    ParticipantPermissions::Writer,
                    data,
                    control,
                )
                .await
                .unwrap();
            (id, local, data_rx, control_rx)
        }

        /// The stored diagram's cells.
        pub async fn cells(&self) -> Vec<Value> {
            let d = self
                .store
                .get_child(self.session.threat_model_id, "diagram", self.session.diagram_id)
                .await
                .unwrap();
            d.doc["cells"].as_array().cloned().unwrap_or_default()
        }
    }
}
