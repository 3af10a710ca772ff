//! Applying operations: a cell operation is checked against the stored cells and written, with
//! `update_vector + 1`, under the database's row lock (writers on every replica queue in one
//! order), and its event is published while this replica's apply lock is held (so this replica
//! publishes in vector order). A refused operation answers `operation_rejected` with the current
//! vector. IO: the store, the backend (publish, sequence numbers, history).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::Hub;
use super::bus::EnvelopeKind;
use super::local::LocalSession;
use super::messages::vector_of;
use crate::collab::cells::{self, Rejection};
use crate::collab::protocol::{
    Cell, CellPatchOperation, DiagramOperationEvent, DiagramOperationRequest, OperationRejected,
    RejectionReason, ServerMessage, User,
};
use crate::collab::registry::{HistoryEntry, SessionRecord};
use crate::openapi::Spec;
use crate::store::{ChildRecord, StoreError};

/// What applying an operation gave: the applied change and the new vector, or the rejection with
/// the vector it was checked against.
type Outcome = Result<(cells::Applied, i64), (i64, Rejection)>;

pub(super) fn rejected(operation_id: Uuid, seq: Option<u64>, vector: i64, r: Rejection) -> ServerMessage {
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

/// Applies `operation` to a diagram row in place: the cells move out of the row and back in (no
/// copy of the diagram), `update_vector` and the version go up. `None` leaves the row unwritten.
fn apply_to_row(
    spec: &Spec,
    mut next: ChildRecord,
    operation: &CellPatchOperation,
    now: DateTime<Utc>,
    outcome: &mut Option<Outcome>,
) -> Option<ChildRecord> {
    let vector = vector_of(&next);
    if next.deleted_at.is_some() {
        *outcome = Some(Err((vector, diagram_gone())));
        return None;
    }
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
    match cells::apply(spec, cells_now, operation) {
        Err(r) => {
            *outcome = Some(Err((vector, r)));
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
            *outcome = Some(Ok((applied, vector + 1)));
            Some(next)
        }
    }
}

impl Hub {
    /// The session's diagram, unless it was deleted.
    pub(super) async fn load_diagram(&self, record: &SessionRecord) -> anyhow::Result<ChildRecord> {
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
                    current_vector(local),
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

    /// [`Self::apply_locked`], counted in the metrics.
    pub(super) async fn apply(
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

    /// Applies `operation` to the stored diagram under the database's lock and publishes the event
    /// while this replica's apply lock is held. Returns the history entry, or the rejection with
    /// the current vector.
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
        let mut outcome: Option<Outcome> = None;
        let now = Utc::now();
        let written = self
            .store
            .update_child_locked(
                record.threat_model_id,
                "diagram",
                record.diagram_id,
                &mut |next: ChildRecord| apply_to_row(&self.spec, next, operation, now, &mut outcome),
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
        self.announce(
            local,
            &record,
            user,
            operation_id,
            seq,
            exclude,
            &applied,
            new_vector,
        )
        .await;
        Ok(HistoryEntry {
            forward: applied.forward,
            inverse: applied.inverse,
        })
    }

    /// Publishes an applied operation's event. When that fails, the operation is stored but not
    /// announced: this replica's sockets are brought up to date; other replicas find the gap.
    #[allow(clippy::too_many_arguments)]
    async fn announce(
        self: &Arc<Self>,
        local: &Arc<LocalSession>,
        record: &SessionRecord,
        user: &User,
        operation_id: Uuid,
        seq: u64,
        exclude: Option<Uuid>,
        applied: &cells::Applied,
        new_vector: i64,
    ) {
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
            tracing::warn!(error = %e, "collaboration: publishing an operation failed");
            self.resync(local).await;
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

/// The vector this replica has delivered (0 before any).
fn current_vector(local: &LocalSession) -> i64 {
    local.dispatch().delivered.max(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collab::hub::testing::{Fixture, op, received, user, wait_for};

    fn request(operation: CellPatchOperation) -> DiagramOperationRequest {
        serde_json::from_value(json!({
            "operation_id": Uuid::new_v4(),
            "base_vector": 0,
            "operation": operation,
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn an_applied_operation_is_stored_and_reaches_the_others_only() {
        let f = Fixture::new().await;
        let (alice_id, local, mut alice, _) = f.join("alice").await;
        let (_, _, mut bob, _) = f.join("bob").await;
        let add = op(
            json!([{"id": "6f1c3a0e-0000-4000-8000-00000000000a", "operation": "add", "data": {"shape": "process"}}]),
        );
        let reply = f
            .hub
            .operation(&local, alice_id, &user("alice"), &request(add))
            .await;
        assert!(reply.is_none(), "{reply:?}");
        assert_eq!(f.cells().await.len(), 1);
        assert_eq!(f.hub.stored_vector(&local).await.unwrap(), 1);
        let is_event = |m: &ServerMessage| matches!(m, ServerMessage::DiagramOperationEvent(_));
        let got = wait_for(&mut bob, is_event).await;
        assert!(
            got.iter()
                .any(|m| matches!(m, ServerMessage::DiagramOperationEvent(e) if e.update_vector == 1)),
            "{got:?}"
        );
        // One delivery pass queues the event for every socket: alice's would be there by now.
        assert!(
            !received(&mut alice).iter().any(is_event),
            "the originator does not get its own event"
        );
    }

    #[tokio::test]
    async fn a_conflicting_operation_is_rejected_and_nothing_is_stored() {
        let f = Fixture::new().await;
        let (alice_id, local, _, _) = f.join("alice").await;
        let remove = op(json!([{"id": "missing", "operation": "remove"}]));
        let reply = f
            .hub
            .operation(&local, alice_id, &user("alice"), &request(remove))
            .await;
        let Some(ServerMessage::OperationRejected(r)) = reply else {
            panic!("not rejected: {reply:?}");
        };
        assert_eq!(r.update_vector, 0);
        assert_eq!(f.hub.stored_vector(&local).await.unwrap(), 0);
    }
}
