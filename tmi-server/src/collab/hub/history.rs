//! Undo and redo: the session's last step is taken from the undo (or redo) list in the backend,
//! applied like any operation (so everyone gets the event), and moved to the other list. The
//! requester also gets a fresh `diagram_state`, since tmi-ux ignores events it initiated. IO: the
//! backend (history lists, sequence numbers) and the store (through `apply`).

use std::sync::Arc;

use uuid::Uuid;

use super::Hub;
use super::local::LocalSession;
use crate::collab::protocol::{HistoryOperation, HistoryOperationType, HistoryOutcome, ServerMessage, User};
use crate::collab::registry::HistoryEntry;

impl Hub {
    /// Undo (or, with `redo`, redo) the session's last step. `Some` is the answer for the
    /// requester when nothing was applied.
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
                if let Err(e) = self
                    .registry
                    .push_history(sid, !redo, &oriented(applied, redo))
                    .await
                {
                    tracing::warn!(error = %e, "collaboration: recording history failed");
                }
                self.send_state(local, conn_id).await;
                None
            }
            Err(_) => reply(HistoryOutcome::ResyncRequired),
        }
    }
}

/// The applied step as an entry of the other list, in the original orientation (`forward` is
/// always the change the user made).
fn oriented(applied: HistoryEntry, redo: bool) -> HistoryEntry {
    if redo {
        applied
    } else {
        HistoryEntry {
            forward: applied.inverse,
            inverse: applied.forward,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collab::hub::testing::{Fixture, op, received, user};
    use crate::collab::protocol::DiagramOperationRequest;
    use serde_json::json;

    fn add(id: &str) -> DiagramOperationRequest {
        serde_json::from_value(json!({
            "operation_id": Uuid::new_v4(),
            "base_vector": 0,
            "operation": op(json!([{"id": id, "operation": "add", "data": {"shape": "process"}}])),
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn undo_and_redo_move_one_step_between_the_lists() {
        let f = Fixture::new().await;
        let (id, local, mut rx, _) = f.join("alice").await;
        let alice = user("alice");
        let nothing = f.hub.history(&local, id, &alice, false).await;
        assert!(matches!(
            nothing,
            Some(ServerMessage::HistoryOperation(HistoryOperation {
                message: HistoryOutcome::NoOperationsToUndo,
                ..
            }))
        ));
        assert!(
            f.hub
                .operation(&local, id, &alice, &add("6f1c3a0e-0000-4000-8000-00000000000a"))
                .await
                .is_none()
        );
        assert_eq!(f.cells().await.len(), 1);
        received(&mut rx);

        assert!(f.hub.history(&local, id, &alice, false).await.is_none(), "undone");
        assert!(f.cells().await.is_empty());
        let got = received(&mut rx);
        assert!(
            got.iter()
                .any(|m| matches!(m, ServerMessage::DiagramState(s) if s.cells.is_empty())),
            "the requester gets a fresh state: {got:?}"
        );

        assert!(f.hub.history(&local, id, &alice, true).await.is_none(), "redone");
        assert_eq!(f.cells().await.len(), 1);
        let again = f.hub.history(&local, id, &alice, true).await;
        assert!(matches!(
            again,
            Some(ServerMessage::HistoryOperation(HistoryOperation {
                message: HistoryOutcome::NoOperationsToRedo,
                ..
            }))
        ));
    }
}
