//! Attaching and detaching this replica's sockets: a socket joins the session in the registry and
//! in the local registry and gets `diagram_state`; leaving may end the session (the host left) or
//! hand presenting on; permission and presenter changes; closing every socket on shutdown. IO:
//! the registry (backend) and the store (the diagram a joining socket starts from).

use std::sync::Arc;

use chrono::Utc;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::Hub;
use super::local::{ConnHandle, LocalSession, Outbound};
use super::messages::{state_message, text, vector_of};
use crate::collab::protocol::{ParticipantPermissions, User};
use crate::collab::registry::{ParticipantRecord, SessionRecord, user_key};
use crate::store::ChildRecord;

impl Hub {
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
        self.registry
            .join(sid, &self.participant(conn_id, user, permissions))
            .await?;
        let local = self.attach_local(
            record,
            conn_id,
            ConnHandle::new(user.clone(), permissions, data, control),
        );
        // Follow the session's channel before reading the state, so no event falls in between.
        self.track_subscription(sid).await;
        match self.load_diagram(record).await {
            Ok(diagram) => self.deliver_state(&local, conn_id, &diagram),
            Err(e) => {
                self.detach_local(sid, conn_id);
                self.track_subscription(sid).await;
                let _ = self.registry.leave(sid, conn_id, user).await;
                return Err(e);
            }
        }
        self.participants_changed(sid, Some(user.clone())).await;
        Ok(local)
    }

    /// This replica's participant entry for a socket, active now.
    fn participant(
        &self,
        conn_id: Uuid,
        user: &User,
        permissions: ParticipantPermissions,
    ) -> ParticipantRecord {
        let now = Utc::now();
        ParticipantRecord {
            conn_id,
            user: user.clone(),
            permissions,
            replica: self.replica.clone(),
            joined_at: now,
            last_activity: now,
        }
    }

    /// Adds the socket to the session's local entry (created on the first socket). The socket
    /// joins under the map's lock, so that a concurrent last leave cannot drop the local session
    /// between finding it and joining it.
    fn attach_local(&self, record: &SessionRecord, conn_id: Uuid, conn: ConnHandle) -> Arc<LocalSession> {
        let mut locals = self.locals();
        let local = locals
            .entry(record.session_id)
            .or_insert_with(|| Arc::new(LocalSession::new(record.clone())))
            .clone();
        local.dispatch().conns.insert(conn_id, conn);
        local
    }

    /// Sends one socket the given state and then whatever newer events were held for it.
    pub(super) fn deliver_state(&self, local: &LocalSession, conn_id: Uuid, diagram: &ChildRecord) {
        let v = vector_of(diagram);
        let state = text(&state_message(diagram));
        local.dispatch().deliver_state(conn_id, v, state);
    }

    /// Removes a socket from the local registry (and the session's entry with its last socket).
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
        self.track_subscription(sid).await;
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
        if let Err(e) = self
            .registry
            .join(sid, &self.participant(conn_id, user, permissions))
            .await
        {
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

    /// Closes every socket of this replica with 1012 (service restart) so clients reconnect to
    /// another replica; sessions stay.
    pub async fn shutdown(&self) {
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let locals: Vec<(Uuid, Arc<LocalSession>)> = self.locals().drain().collect();
        for (sid, local) in locals {
            let conns: Vec<(Uuid, User)> = {
                let d = local.dispatch();
                for conn in d.conns.values() {
                    conn.close(None, 1012, "Server restarting");
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collab::hub::testing::{Fixture, received};
    use crate::collab::protocol::ServerMessage;

    #[tokio::test]
    async fn a_joining_socket_gets_the_diagram_first_and_is_listed() {
        let f = Fixture::new().await;
        let (_, _, mut rx, _) = f.join("alice").await;
        let first = received(&mut rx);
        assert!(
            matches!(first.first(), Some(ServerMessage::DiagramState(_))),
            "{first:?}"
        );
        let participants = f.hub.registry.participants(f.session.session_id).await.unwrap();
        assert_eq!(participants.len(), 1);
    }

    #[tokio::test]
    async fn the_session_ends_when_the_host_leaves() {
        let f = Fixture::new().await;
        let (alice, _, _, _) = f.join("alice").await;
        let (_, _, _, mut bob_control) = f.join("bob").await;
        f.hub
            .detach(
                f.session.session_id,
                alice,
                &crate::collab::hub::testing::user("alice"),
            )
            .await;
        assert!(
            f.hub
                .registry
                .by_id(f.session.session_id)
                .await
                .unwrap()
                .is_none()
        );
        // Bob is told and closed with 1000 (the in-process bus delivers the terminate event).
        let mut closed = None;
        for _ in 0..500 {
            if let Ok(Outbound::Close(code, _)) = bob_control.try_recv() {
                closed = Some(code);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(closed, Some(1000));
    }

    #[tokio::test]
    async fn shutdown_closes_sockets_with_1012_and_keeps_the_session() {
        let f = Fixture::new().await;
        let (_, _, _, mut control) = f.join("alice").await;
        f.hub.shutdown().await;
        assert!(matches!(control.try_recv(), Ok(Outbound::Close(1012, _))));
        assert!(
            f.hub
                .registry
                .by_id(f.session.session_id)
                .await
                .unwrap()
                .is_some()
        );
    }
}
