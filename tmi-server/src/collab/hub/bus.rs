//! Events between replicas: every replica publishes a session's events on that session's channel
//! (Redis pub/sub, or in process), which only the replicas with sockets in the session follow,
//! and each replica hands the events to its sockets of the session: operations in vector order (`order`), broadcasts, participant lists, kicks and
//! terminations. A gap that stays open, or a bus interruption, is closed by a resync from the
//! database. IO: the backend (publish), the registry and the store (resync).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Hub;
use super::local::{LocalSession, send_after_state};
use super::messages::{dedupe, error_message, state_message, text, vector_of};
use super::order::GAP_WAIT;
use crate::collab::protocol::{ParticipantsUpdate, ServerMessage, User};
use crate::collab::registry::{ParticipantRecord, SessionRecord, user_key};

/// One message between replicas (the bus payload).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Envelope {
    pub(super) session_id: Uuid,
    #[serde(flatten)]
    pub(super) kind: EnvelopeKind,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum EnvelopeKind {
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

impl Hub {
    pub(super) async fn publish(&self, session_id: Uuid, kind: EnvelopeKind) -> anyhow::Result<()> {
        let payload = serde_json::to_string(&Envelope { session_id, kind })?;
        self.registry
            .backend()
            .publish_to(&session_id.to_string(), &payload)
            .await
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

    /// Hands one bus payload to the sockets of its session on this replica, if any.
    pub(super) fn dispatch(self: &Arc<Self>, payload: &str) {
        let Ok(env) = serde_json::from_str::<Envelope>(payload) else {
            tracing::warn!("collaboration bus: dropping an unreadable message");
            return;
        };
        let sid = env.session_id;
        let Some(local) = self.locals().get(&sid).cloned() else {
            return;
        };
        match env.kind {
            EnvelopeKind::Operation {
                update_vector,
                exclude,
                message,
            } => self.deliver_operation(sid, &local, update_vector, exclude, &message),
            EnvelopeKind::Broadcast {
                exclude,
                to_user,
                message,
            } => deliver_broadcast(&local, exclude, to_user.as_deref(), &message),
            EnvelopeKind::Participants { initiating_user } => {
                self.refresh_participants(sid, local, initiating_user)
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
                    conn.close(Some(payload.clone()), code, &message);
                }
            }
            EnvelopeKind::Terminate { message } => self.terminate_local(sid, &message),
        }
    }

    /// An operation event: delivered in vector order; a gap that opens is checked later.
    fn deliver_operation(
        self: &Arc<Self>,
        sid: Uuid,
        local: &LocalSession,
        update_vector: i64,
        exclude: Option<Uuid>,
        message: &ServerMessage,
    ) {
        if let ServerMessage::DiagramOperationEvent(ev) = message {
            local.last_seq.fetch_max(ev.sequence_number, Ordering::Relaxed);
        }
        let gap_opened = local.dispatch().arrive(update_vector, exclude, text(message));
        if gap_opened {
            self.check_gap_later(sid);
        }
    }

    /// Membership changed: re-read the session and send every socket the participant list.
    fn refresh_participants(
        self: &Arc<Self>,
        sid: Uuid,
        local: Arc<LocalSession>,
        initiating_user: Option<User>,
    ) {
        let hub = self.clone();
        tokio::spawn(async move {
            let Ok(Some(record)) = hub.registry.by_id(sid).await else {
                return;
            };
            local.set_record(record.clone());
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

    /// Tells this replica's sockets of the session that it ended and closes them (1000).
    pub(super) fn terminate_local(&self, sid: Uuid, message: &str) {
        let Some(local) = self.locals().remove(&sid) else {
            return;
        };
        let payload = text(&error_message("session_terminated", message));
        let d = local.dispatch();
        for conn in d.conns.values() {
            conn.close(Some(payload.clone()), 1000, message);
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
            let open = local.dispatch().gap_overdue();
            if open {
                tracing::info!(session = %sid, "collaboration: an event is missing; resyncing from the database");
                hub.resync(&local).await;
            }
        });
        tokio::spawn(task);
    }

    /// Reloads the diagram and brings every socket of the session up to it.
    pub(super) async fn resync(self: &Arc<Self>, local: &Arc<LocalSession>) {
        self.metrics.resyncs.inc();
        let record = local.record();
        let diagram = match self.load_diagram(&record).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "collaboration resync: cannot load the diagram");
                return;
            }
        };
        let state = text(&state_message(&diagram));
        let gap_left = local.dispatch().catch_up(vector_of(&diagram), state);
        if gap_left {
            self.check_gap_later(record.session_id);
        }
    }

    /// The bus lost messages (Redis restarted or this replica lagged): re-register what this
    /// replica serves, in case Redis lost it, and resync every local session.
    pub(super) async fn recover(self: &Arc<Self>) {
        self.metrics.bus_gaps.inc();
        let locals: Vec<Arc<LocalSession>> = self.locals().values().cloned().collect();
        let _ = self
            .registry
            .heartbeat(&self.replica, self.settings.heartbeat * 3)
            .await;
        for local in locals {
            let record = local.record();
            let participants = self.local_participants(&local, &record);
            let seq = local.last_seq.load(Ordering::Relaxed);
            if let Err(e) = self.registry.restore(&record, &participants, seq).await {
                tracing::warn!(error = %e, "collaboration: re-registering a session failed");
            }
            self.resync(&local).await;
            self.participants_changed(record.session_id, None).await;
        }
    }

    /// The participant entries of this replica's sockets in a session.
    fn local_participants(&self, local: &LocalSession, record: &SessionRecord) -> Vec<ParticipantRecord> {
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
    }
}

/// A broadcast: to every socket of the session except `exclude`, or only to `to_user`'s.
fn deliver_broadcast(
    local: &LocalSession,
    exclude: Option<Uuid>,
    to_user: Option<&str>,
    message: &ServerMessage,
) {
    let payload = text(message);
    let mut d = local.dispatch();
    for (id, conn) in d.conns.iter_mut() {
        if Some(*id) == exclude || to_user.is_some_and(|u| u != user_key(&conn.user)) {
            continue;
        }
        send_after_state(conn, payload.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collab::hub::testing::{Fixture, received, user, wait_for, without_lists};

    #[test]
    fn the_wire_form_names_the_kind() {
        let env = Envelope {
            session_id: Uuid::nil(),
            kind: EnvelopeKind::Terminate {
                message: "bye".into(),
            },
        };
        let v = serde_json::to_value(&env).unwrap();
        assert_eq!(v["kind"], "terminate");
        assert_eq!(v["message"], "bye");
        let back: Envelope = serde_json::from_value(v).unwrap();
        assert!(matches!(back.kind, EnvelopeKind::Terminate { .. }));
    }

    fn is_note(m: &ServerMessage) -> bool {
        matches!(m, ServerMessage::Error(e) if e.error == "note")
    }

    #[tokio::test]
    async fn a_broadcast_for_one_user_reaches_only_their_sockets() {
        let f = Fixture::new().await;
        let (_, _, mut alice, _) = f.join("alice").await;
        let (_, _, mut bob, _) = f.join("bob").await;
        let sid = f.session.session_id;
        f.hub
            .broadcast(sid, None, Some(&user("bob")), error_message("note", "for bob"))
            .await;
        let got = wait_for(&mut bob, is_note).await;
        assert_eq!(got.iter().filter(|m| is_note(m)).count(), 1);
        // The same delivery pass would have queued it for alice.
        assert!(!received(&mut alice).iter().any(is_note));
    }

    #[tokio::test]
    async fn a_lost_event_is_recovered_from_the_database() {
        let f = Fixture::new().await;
        let (_, local, mut rx, _) = f.join("alice").await;
        received(&mut rx);
        // Operation 1 was stored by another replica whose event got lost; event 2 arrives.
        let (tm, d) = (f.session.threat_model_id, f.session.diagram_id);
        let current = f.store.get_child(tm, "diagram", d).await.unwrap();
        let mut next = current.clone();
        next.doc["update_vector"] = serde_json::json!(1);
        next.version += 1;
        f.store.update_child(&next, current.version, None).await.unwrap();
        f.hub.dispatch(
            &serde_json::to_string(&Envelope {
                session_id: f.session.session_id,
                kind: EnvelopeKind::Operation {
                    update_vector: 2,
                    exclude: None,
                    message: error_message("event", "event 2"),
                },
            })
            .unwrap(),
        );
        assert!(without_lists(received(&mut rx)).is_empty(), "held");
        // After the gap wait the replica resyncs: the stored state at vector 1, then event 2.
        let got = without_lists(wait_for(&mut rx, |m| matches!(m, ServerMessage::DiagramState(_))).await);
        assert!(
            matches!(&got[..], [ServerMessage::DiagramState(s), ServerMessage::Error(e)] if s.update_vector == 1 && e.error == "event"),
            "{got:?}"
        );
        assert!(local.dispatch().gap_since.is_none());
        assert_eq!(f.hub.metrics.resyncs.get(), 1);
    }
}
