//! One joined collaboration socket's messages (tmi-compat.md §5.3): each client message type has
//! its own method (operations and undo/redo for writers, sync, the presenter flow, the host's
//! removal of a participant), named users are checked against the session's records, and every
//! keepalive period the login and the access to the threat model are checked again. IO: through
//! the hub, the store and the token store.

use std::sync::Arc;

use tokio::sync::mpsc;
use uuid::Uuid;

use crate::authz::{Role, Subject, effective_role};
use crate::collab::hub::{Hub, LocalSession, Outbound, error_message, text};
use crate::collab::protocol::{
    AuthorizationDenied, AuthorizationDeniedReason, ClientMessage, DiagramOperationRequest,
    ParticipantPermissions, PresenterDeniedEvent, PresenterRequestEvent, ServerMessage, SyncStatusResponse,
    User,
};
use crate::collab::registry::user_key;
use crate::collab::rest::Ticket;
use crate::domain::live;
use crate::state::AppState;

/// What a role lets a participant do in a session.
pub(super) fn permissions_of(role: Role) -> ParticipantPermissions {
    if role >= Role::Writer {
        ParticipantPermissions::Writer
    } else {
        ParticipantPermissions::Reader
    }
}

/// One joined socket as its messages see it.
pub(super) struct Conn<'a> {
    pub(super) state: &'a AppState,
    pub(super) hub: &'a Arc<Hub>,
    pub(super) local: &'a Arc<LocalSession>,
    pub(super) conn_id: Uuid,
    pub(super) user: User,
    pub(super) permissions: ParticipantPermissions,
    pub(super) ticket: &'a Ticket,
    pub(super) out: mpsc::UnboundedSender<Outbound>,
}

impl Conn<'_> {
    pub(super) fn send(&self, m: ServerMessage) {
        let _ = self.out.send(Outbound::Text(text(&m)));
    }

    pub(super) fn close(&self, code: u16, reason: &str) {
        let _ = self.out.send(Outbound::Close(code, reason.to_owned()));
    }

    fn sid(&self) -> Uuid {
        self.local.record().session_id
    }

    fn is_host(&self) -> bool {
        user_key(&self.local.record().host) == user_key(&self.user)
    }

    fn is_writer(&self) -> bool {
        self.permissions == ParticipantPermissions::Writer
    }

    fn denied(&self, original_operation_id: String) {
        self.send(ServerMessage::AuthorizationDenied(AuthorizationDenied {
            original_operation_id,
            reason: AuthorizationDeniedReason::InsufficientPermissions,
        }));
    }

    /// `permission_denied` unless the sender is the host; `true` when they are.
    fn host_only(&self, message: &str) -> bool {
        if !self.is_host() {
            self.send(error_message("permission_denied", message));
        }
        self.is_host()
    }

    /// Re-checks on every keepalive period that the token behind the ticket was not revoked
    /// and the login has not ended (4401), and that the user can still read the threat model
    /// (4403); a changed role is announced. `true` when it closed the socket.
    pub(super) async fn recheck(&mut self) -> bool {
        if let Some(reason) = self.login_ended() {
            self.send(error_message("unauthorized", "Your session has ended"));
            self.close(4401, reason);
            return true;
        }
        let role = match self.current_role().await {
            Ok(role) => role,
            // The database did not answer: keep the socket, check again next period.
            Err(()) => return false,
        };
        let Some(role) = role else {
            self.send(error_message(
                "unauthorized",
                "Your access to this threat model was revoked",
            ));
            self.close(4403, "Access revoked");
            return true;
        };
        let now = permissions_of(role);
        if now != self.permissions {
            self.permissions = now;
            self.hub
                .update_permissions(self.local, self.conn_id, &self.user, now)
                .await;
        }
        false
    }

    /// Why the login behind the ticket is over (revoked token or absolute lifetime), if it is.
    fn login_ended(&self) -> Option<&'static str> {
        let revoked = self
            .state
            .tokens
            .is_revoked(&self.ticket.token_hash, self.ticket.family.as_deref());
        if revoked {
            Some("Token revoked")
        } else if self.ticket.login_expired(chrono::Utc::now().timestamp()) {
            Some("Session expired")
        } else {
            None
        }
    }

    /// The user's role on the threat model now (`None`: no access or the model is gone).
    async fn current_role(&self) -> Result<Option<Role>, ()> {
        let record = self.local.record();
        match live::threat_model(self.state.store.as_ref(), record.threat_model_id).await {
            Ok(Some(tm)) => {
                let subject = Subject {
                    provider: &self.user.provider,
                    provider_id: &self.user.provider_id,
                    email: &self.user.email,
                    groups: &self.ticket.groups,
                };
                Ok(effective_role(&tm, &subject))
            }
            Ok(None) => Ok(None),
            Err(_) => Err(()),
        }
    }

    /// The connected participant named by a message, checked against the server's view:
    /// `Err(true)` when the name matches someone but the rest of the identity does not.
    async fn target(&self, named: &User) -> Result<User, bool> {
        let participants = self
            .hub
            .registry
            .participants(self.sid())
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

    /// One client frame.
    pub(super) async fn handle(&mut self, frame: &str) {
        let msg = match ClientMessage::from_json(frame) {
            Ok(m) => m,
            Err(e) => {
                if let Some(code) = e.error_code() {
                    self.send(error_message(code, e.to_string()));
                }
                return;
            }
        };
        match msg {
            ClientMessage::DiagramOperationRequest(req) => self.operation(&req).await,
            ClientMessage::UndoRequest => self.history(false).await,
            ClientMessage::RedoRequest => self.history(true).await,
            ClientMessage::SyncStatusRequest => self.sync(None).await,
            ClientMessage::SyncRequest(req) => self.sync(Some(req.update_vector)).await,
            ClientMessage::PresenterRequest => self.presenter_request().await,
            ClientMessage::PresenterDeniedRequest(req) => self.deny_presenter(&req.denied_user).await,
            ClientMessage::ChangePresenterRequest(req) => {
                self.change_presenter(req.new_presenter.as_ref()).await
            }
            ClientMessage::PresenterCursor(c) => {
                self.relay_presenter(ServerMessage::PresenterCursor(c)).await
            }
            ClientMessage::PresenterSelection(s) => {
                self.relay_presenter(ServerMessage::PresenterSelection(s)).await
            }
            ClientMessage::RemoveParticipantRequest(req) => self.remove_participant(&req.removed_user).await,
        }
    }

    /// `diagram_operation_request` (writers): applied through the hub; a rejection answers.
    async fn operation(&self, req: &DiagramOperationRequest) {
        if !self.is_writer() {
            self.denied(req.operation_id.to_string());
            return;
        }
        if let Some(m) = self
            .hub
            .operation(self.local, self.conn_id, &self.user, req)
            .await
        {
            self.send(m);
        }
    }

    /// `undo_request` / `redo_request` (writers).
    async fn history(&self, redo: bool) {
        if !self.is_writer() {
            self.denied(String::new());
            return;
        }
        if let Some(m) = self.hub.history(self.local, self.conn_id, &self.user, redo).await {
            self.send(m);
        }
    }

    /// `sync_status_request` (`client_vector: None`) and `sync_request`: the stored vector, or a
    /// fresh `diagram_state` when the client's vector differs.
    async fn sync(&self, client_vector: Option<Option<i64>>) {
        match self.hub.stored_vector(self.local).await {
            Ok(v) if client_vector.is_none_or(|c| c == Some(v)) => {
                self.send(ServerMessage::SyncStatusResponse(SyncStatusResponse {
                    update_vector: v,
                }))
            }
            Ok(_) => self.hub.send_state(self.local, self.conn_id).await,
            Err(_) => self.send(error_message(
                "diagram_not_found",
                "The diagram could not be loaded",
            )),
        }
    }

    /// `presenter_request`: the host becomes presenter at once; anyone else asks the host (or is
    /// denied when the host is not connected).
    async fn presenter_request(&self) {
        let sid = self.sid();
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

    /// `presenter_denied_request` (host): tells the named participant.
    async fn deny_presenter(&self, named: &User) {
        if !self.host_only("Only the host can deny presenter requests") {
            return;
        }
        if let Some(target) = self.resolve(named).await {
            let m = ServerMessage::PresenterDeniedEvent(PresenterDeniedEvent {
                denied_user: target.clone(),
            });
            self.hub.broadcast(self.sid(), None, Some(&target), m).await;
        }
    }

    /// `change_presenter_request` (host): a named participant, or nobody.
    async fn change_presenter(&self, named: Option<&User>) {
        if !self.host_only("Only the host can change the presenter") {
            return;
        }
        let presenter = match named {
            None => None,
            Some(named) => match self.resolve(named).await {
                Some(u) => Some(u),
                None => return,
            },
        };
        let _ = self.hub.set_presenter(self.sid(), presenter, &self.user).await;
    }

    /// `presenter_cursor` / `presenter_selection`: relayed to the others, from the presenter only.
    async fn relay_presenter(&self, relay: ServerMessage) {
        let is_presenter = self
            .local
            .record()
            .presenter
            .as_ref()
            .is_some_and(|p| user_key(p) == user_key(&self.user));
        if is_presenter {
            self.hub
                .broadcast(self.sid(), Some(self.conn_id), None, relay)
                .await;
        }
    }

    /// `remove_participant_request` (host): the participant is refused from now on and closed.
    async fn remove_participant(&self, named: &User) {
        if !self.host_only("Only the host can remove participants") {
            return;
        }
        if user_key(named) == user_key(&self.user) {
            self.send(error_message(
                "invalid_participant",
                "The host cannot remove themselves",
            ));
            return;
        }
        let Some(target) = self.resolve(named).await else {
            return;
        };
        let sid = self.sid();
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
