//! The local socket registry: the sessions that have sockets on this replica, each socket's two
//! queues (bounded data, unbounded control) and what it has seen, and the delivery state of each
//! session (`Dispatch`, ordered by `order`). Pure data and in-memory queues; attaching and
//! detaching sockets (which also touch the registry in the backend) is in `sockets`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc;
use uuid::Uuid;

use super::apply::{LiveDiagram, Queued};
use crate::collab::protocol::{ParticipantPermissions, User};
use crate::collab::registry::SessionRecord;

/// Queue of one socket; a client that falls this far behind is disconnected (it resyncs on join).
pub const SOCKET_QUEUE: usize = 1024;

/// What the hub sends a socket's writer.
#[derive(Debug, Clone)]
pub enum Outbound {
    Text(Arc<str>),
    /// Close with this code and reason.
    Close(u16, String),
}

/// A socket as the hub knows it.
pub(super) struct ConnHandle {
    pub(super) user: User,
    pub(super) permissions: ParticipantPermissions,
    pub(super) data: mpsc::Sender<Outbound>,
    pub(super) control: mpsc::UnboundedSender<Outbound>,
    /// The `update_vector` this socket has seen; `None` until its `diagram_state` went out, while
    /// events wait in `pending`.
    pub(super) vector: Option<i64>,
    /// Held messages: operation events (with their vector and excluded socket) and, with no
    /// vector, other messages, which must also follow `diagram_state` (tmi-compat Part B §4.3).
    pub(super) pending: Vec<(Option<i64>, Option<Uuid>, Arc<str>)>,
}

impl ConnHandle {
    pub(super) fn new(
        user: User,
        permissions: ParticipantPermissions,
        data: mpsc::Sender<Outbound>,
        control: mpsc::UnboundedSender<Outbound>,
    ) -> Self {
        Self {
            user,
            permissions,
            data,
            control,
            vector: None,
            pending: Vec::new(),
        }
    }

    /// Closes the socket after an optional last text frame (control queue: never dropped).
    pub(super) fn close(&self, last: Option<Arc<str>>, code: u16, reason: &str) {
        if let Some(text) = last {
            let _ = self.control.send(Outbound::Text(text));
        }
        let _ = self.control.send(Outbound::Close(code, reason.to_owned()));
    }
}

/// The delivery state of one session on this replica.
#[derive(Default)]
pub(super) struct Dispatch {
    /// The highest vector delivered in order on this replica (`i64::MIN` until the first
    /// `diagram_state` fixed where in-order delivery starts).
    pub(super) delivered: i64,
    /// Early events by vector.
    pub(super) held: BTreeMap<i64, (Option<Uuid>, Arc<str>)>,
    pub(super) gap_since: Option<Instant>,
    pub(super) conns: HashMap<Uuid, ConnHandle>,
    /// A database vector seen ahead of `delivered` by the anti-entropy check.
    pub(super) suspect: Option<i64>,
}

/// A session with sockets on this replica.
pub struct LocalSession {
    pub(super) record: Mutex<SessionRecord>,
    dispatch: Mutex<Dispatch>,
    /// Serializes this replica's group commits (so that it publishes in vector order) and holds
    /// the live diagram they apply to (`None` until loaded, or after someone else wrote it).
    pub(super) apply: tokio::sync::Mutex<Option<LiveDiagram>>,
    /// Operations waiting for the next group commit.
    queue: Mutex<Vec<Queued>>,
    pub(super) last_seq: AtomicU64,
}

impl LocalSession {
    pub(super) fn new(record: SessionRecord) -> Self {
        Self {
            record: Mutex::new(record),
            dispatch: Mutex::new(Dispatch {
                delivered: i64::MIN,
                ..Dispatch::default()
            }),
            apply: tokio::sync::Mutex::new(None),
            queue: Mutex::default(),
            last_seq: AtomicU64::new(0),
        }
    }

    pub fn record(&self) -> SessionRecord {
        self.record
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub(super) fn set_record(&self, record: SessionRecord) {
        *self.record.lock().unwrap_or_else(|p| p.into_inner()) = record;
    }

    pub(super) fn queue(&self) -> std::sync::MutexGuard<'_, Vec<Queued>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn dispatch(&self) -> std::sync::MutexGuard<'_, Dispatch> {
        self.dispatch.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Queues a message, or holds it until the socket's `diagram_state` went out.
pub(super) fn send_after_state(conn: &mut ConnHandle, payload: Arc<str>) {
    if conn.vector.is_none() {
        conn.pending.push((None, None, payload));
    } else {
        send(conn, payload);
    }
}

/// Queues a message; a socket whose queue is full is closed (it resyncs when it reconnects).
pub(super) fn send(conn: &mut ConnHandle, payload: Arc<str>) {
    if conn.data.try_send(Outbound::Text(payload)).is_err() {
        let _ = conn.control.send(Outbound::Close(
            1013,
            "Client too slow; reconnect to resync".into(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collab::hub::testing::{conn, user};

    #[test]
    fn messages_wait_for_the_sockets_diagram_state() {
        let (mut c, mut data, _control) = conn(user("alice"), 4);
        send_after_state(&mut c, Arc::from("cursor"));
        assert!(data.try_recv().is_err(), "held until diagram_state");
        assert_eq!(c.pending.len(), 1);
        c.vector = Some(0);
        send_after_state(&mut c, Arc::from("cursor"));
        assert!(matches!(data.try_recv(), Ok(Outbound::Text(t)) if &*t == "cursor"));
    }

    #[test]
    fn a_socket_that_falls_behind_is_closed_with_1013() {
        let (mut c, _data, mut control) = conn(user("alice"), 1);
        c.vector = Some(0);
        send(&mut c, Arc::from("one"));
        assert!(control.try_recv().is_err());
        send(&mut c, Arc::from("two"));
        assert!(matches!(control.try_recv(), Ok(Outbound::Close(1013, _))));
    }
}
