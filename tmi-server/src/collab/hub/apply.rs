//! Applying operations, by group commit. Each replica keeps the live diagram of a session it hosts
//! in memory (`LiveDiagram`: the row and its cells indexed by id), so checking and applying an
//! operation costs what it touches, not the diagram's size. Operations queue per session; whoever
//! takes the session's apply lock commits everything queued: it applies the batch in memory, each
//! accepted operation taking `update_vector + 1`, and writes the diagram row once, in one
//! transaction, with a compare-and-swap on the row version. Only after that commit are the events
//! published (in vector order, still under the lock) and the originators answered, so an
//! acknowledged operation is in the database. When the swap fails (another replica or a REST
//! write moved the row), the live diagram is reloaded and the whole batch is checked again, so
//! the database still defines one total order across replicas. A refused operation answers
//! `operation_rejected` with the vector it was checked against. IO: the store, the backend
//! (publish, sequence numbers, history).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::Hub;
use super::bus::EnvelopeKind;
use super::local::LocalSession;
use super::messages::vector_of;
use crate::collab::cells::{LiveCells, Rejection};
use crate::collab::protocol::{
    CellPatchOperation, DiagramOperationEvent, DiagramOperationRequest, OperationRejected, RejectionReason,
    ServerMessage, User,
};
use crate::collab::registry::{HistoryEntry, SessionRecord};
use crate::openapi::Spec;
use crate::store::{ChildRecord, Store, StoreError};

/// What a queued operation became: its history entry, or the rejection with the vector it was
/// checked against.
type Outcome = Result<HistoryEntry, (i64, Rejection)>;

/// One operation of a batch: applied (forward, inverse, new vector) or rejected (the vector it
/// was checked against, why).
type Applied = Result<(CellPatchOperation, CellPatchOperation, i64), (i64, Rejection)>;

/// An operation waiting for the next group commit of its session.
pub(super) struct Queued {
    operation: CellPatchOperation,
    user: User,
    operation_id: Uuid,
    seq: u64,
    exclude: Option<Uuid>,
    done: oneshot::Sender<Outcome>,
}

/// The diagram of a session as this replica last loaded or committed it: the row (its document
/// without `cells`) and the cells, indexed.
pub(super) struct LiveDiagram {
    row: ChildRecord,
    cells: LiveCells,
}

impl LiveDiagram {
    fn from_row(mut row: ChildRecord) -> Self {
        let cells = match row.doc.get_mut("cells").map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        Self {
            row,
            cells: LiveCells::new(cells),
        }
    }

    /// The row with the cells put back into its document.
    fn into_row(mut self) -> ChildRecord {
        if let Value::Object(doc) = &mut self.row.doc {
            doc.insert("cells".into(), Value::Array(self.cells.into_cells()));
        }
        self.row
    }

    /// Writes the row with the cells put back into its document (moved, not copied) when its
    /// stored version is still `expected`.
    async fn write(&mut self, store: &dyn Store, expected: i64) -> Result<(), StoreError> {
        let cells = std::mem::take(&mut self.cells).into_cells();
        if let Value::Object(doc) = &mut self.row.doc {
            doc.insert("cells".into(), Value::Array(cells));
        }
        let written = store.update_child(&self.row, expected, None).await;
        let cells = match self.row.doc.get_mut("cells").map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        if let Value::Object(doc) = &mut self.row.doc {
            doc.remove("cells");
        }
        self.cells = LiveCells::new(cells);
        written
    }
}

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

const SAVE_FAILED: &str = "The operation could not be saved; resync and retry";

/// Answers every queued operation with the same rejection (vector 0: unknown).
fn answer_all(batch: Vec<Queued>, rejection: Rejection) {
    for q in batch {
        let _ = q.done.send(Err((0, rejection.clone())));
    }
}

/// Answers every queued operation after the store failed.
fn fail_all(batch: Vec<Queued>, e: &StoreError) {
    if matches!(e, StoreError::NotFound) {
        return answer_all(batch, diagram_gone());
    }
    tracing::warn!(error = %e, "collaboration: saving the diagram failed");
    answer_all(batch, save_failed(SAVE_FAILED));
}

/// Applies a batch to a diagram in order, each accepted operation taking the next vector; when any
/// was accepted, the row gets the new vector, the next version and `now`.
fn apply_batch(spec: &Spec, diagram: &mut LiveDiagram, batch: &[Queued], now: DateTime<Utc>) -> Vec<Applied> {
    let mut vector = vector_of(&diagram.row);
    let results: Vec<Applied> = batch
        .iter()
        .map(|q| match diagram.cells.apply(spec, &q.operation) {
            Ok((forward, inverse)) => {
                vector += 1;
                Ok((forward, inverse, vector))
            }
            Err(r) => Err((vector, r)),
        })
        .collect();
    if results.iter().any(Result::is_ok) {
        diagram.row.version += 1;
        diagram.row.modified_at = now;
        if let Value::Object(doc) = &mut diagram.row.doc {
            doc.insert("update_vector".into(), json!(vector));
        }
    }
    results
}

impl Hub {
    /// The session's diagram, unless it was deleted.
    pub(super) async fn load_diagram(&self, record: &SessionRecord) -> anyhow::Result<ChildRecord> {
        Ok(self.load_diagram_row(record).await?)
    }

    /// [`Self::load_diagram`] with the store's error.
    async fn load_diagram_row(&self, record: &SessionRecord) -> Result<ChildRecord, StoreError> {
        let d = self
            .store
            .get_child(record.threat_model_id, "diagram", record.diagram_id)
            .await?;
        if d.deleted_at.is_some() {
            return Err(StoreError::NotFound);
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

    /// Queues `operation` for the session's next group commit and waits for its outcome; runs
    /// that commit when it gets the apply lock before any other committer took the operation.
    async fn apply_locked(
        self: &Arc<Self>,
        local: &Arc<LocalSession>,
        operation: &CellPatchOperation,
        user: &User,
        operation_id: Uuid,
        seq: u64,
        exclude: Option<Uuid>,
    ) -> Outcome {
        let (done, mut outcome) = oneshot::channel();
        local.queue().push(Queued {
            operation: operation.clone(),
            user: user.clone(),
            operation_id,
            seq,
            exclude,
            done,
        });
        let mut live = local.apply.lock().await;
        // A committer that held the lock while this waited may have taken the operation: it
        // answers before it lets the lock go.
        if let Ok(result) = outcome.try_recv() {
            return result;
        }
        let batch = std::mem::take(&mut *local.queue());
        self.commit(local, &mut live, batch).await;
        drop(live);
        outcome.await.unwrap_or_else(|_| {
            Err((
                0,
                save_failed("The operation could not be saved; resync and retry"),
            ))
        })
    }

    /// One group commit. Fast path: `batch` is applied to the live diagram and the row written
    /// with a compare-and-swap on its version. When this replica has no live diagram, or someone
    /// else wrote the row since (the swap fails, or every operation was refused by a copy that no
    /// swap proved current), the batch is applied again to the row read under the database's row
    /// lock, as writers on several replicas queue there. Then each applied operation's event is
    /// published, in vector order, and every queued operation is answered.
    async fn commit(
        self: &Arc<Self>,
        local: &Arc<LocalSession>,
        live: &mut Option<LiveDiagram>,
        batch: Vec<Queued>,
    ) {
        if batch.is_empty() {
            return;
        }
        let record = local.record();
        let now = Utc::now();
        if let Some(diagram) = live.as_mut() {
            let expected = diagram.row.version;
            let results = apply_batch(&self.spec, diagram, &batch, now);
            if results.iter().any(Result::is_ok) {
                match diagram.write(self.store.as_ref(), expected).await {
                    Ok(()) => return self.finish(local, &record, batch, results).await,
                    Err(StoreError::VersionMismatch) => {}
                    Err(e) => {
                        *live = None;
                        return fail_all(batch, &e);
                    }
                }
            }
        }
        *live = None;
        // What the locked pass gave: the diagram when nothing was written, and the results.
        let mut kept: Option<(Option<LiveDiagram>, Vec<Applied>)> = None;
        let mut gone = false;
        let spec = self.spec.clone();
        let written = self
            .store
            .update_child_locked(
                record.threat_model_id,
                "diagram",
                record.diagram_id,
                &mut |row: ChildRecord| {
                    kept = None;
                    gone = row.deleted_at.is_some();
                    if gone {
                        return None;
                    }
                    let mut diagram = LiveDiagram::from_row(row);
                    let results = apply_batch(&spec, &mut diagram, &batch, now);
                    if results.iter().any(Result::is_ok) {
                        kept = Some((None, results));
                        Some(diagram.into_row())
                    } else {
                        kept = Some((Some(diagram), results));
                        None
                    }
                },
            )
            .await;
        match (written, kept) {
            (Ok(Some(row)), Some((_, results))) => {
                *live = Some(LiveDiagram::from_row(row));
                self.finish(local, &record, batch, results).await;
            }
            (Ok(None), Some((diagram, results))) => {
                *live = diagram;
                self.finish(local, &record, batch, results).await;
            }
            (Ok(_), _) if gone => answer_all(batch, diagram_gone()),
            (Err(e), _) => fail_all(batch, &e),
            (Ok(_), None) => answer_all(batch, save_failed(SAVE_FAILED)),
        }
    }

    /// Publishes the events of a committed batch in vector order and answers its operations.
    async fn finish(
        self: &Arc<Self>,
        local: &Arc<LocalSession>,
        record: &SessionRecord,
        batch: Vec<Queued>,
        results: Vec<Applied>,
    ) {
        for (q, result) in batch.into_iter().zip(results) {
            let outcome = match result {
                Ok((forward, inverse, new_vector)) => {
                    self.announce(
                        local,
                        record,
                        &q.user,
                        q.operation_id,
                        q.seq,
                        q.exclude,
                        &forward,
                        new_vector,
                    )
                    .await;
                    Ok(HistoryEntry { forward, inverse })
                }
                Err(rejection) => Err(rejection),
            };
            let _ = q.done.send(outcome);
        }
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
        forward: &CellPatchOperation,
        new_vector: i64,
    ) {
        let event = ServerMessage::DiagramOperationEvent(DiagramOperationEvent {
            initiating_user: user.clone(),
            operation_id,
            sequence_number: seq,
            update_vector: new_vector,
            operation: forward.clone(),
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

    fn add(name: u32) -> CellPatchOperation {
        op(
            json!([{"id": format!("6f1c3a0e-0000-4000-8000-{name:012}"), "operation": "add", "data": {"shape": "process"}}]),
        )
    }

    #[tokio::test]
    async fn concurrent_operations_are_all_stored_and_delivered_in_vector_order() {
        let f = Fixture::new().await;
        let (alice_id, local, _alice, _) = f.join("alice").await;
        let (_, _, mut bob, _) = f.join("bob").await;
        let replies = futures::future::join_all((0..20).map(|n| {
            let (hub, local) = (f.hub.clone(), local.clone());
            async move {
                hub.operation(&local, alice_id, &user("alice"), &request(add(n)))
                    .await
            }
        }))
        .await;
        assert!(replies.iter().all(Option::is_none), "{replies:?}");
        assert_eq!(f.cells().await.len(), 20);
        assert_eq!(f.hub.stored_vector(&local).await.unwrap(), 20);
        let last =
            |m: &ServerMessage| matches!(m, ServerMessage::DiagramOperationEvent(e) if e.update_vector == 20);
        let vectors: Vec<i64> = wait_for(&mut bob, last)
            .await
            .iter()
            .filter_map(|m| match m {
                ServerMessage::DiagramOperationEvent(e) => Some(e.update_vector),
                _ => None,
            })
            .collect();
        assert_eq!(vectors, (1..=20).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_write_by_someone_else_is_seen_by_the_next_operation() {
        let f = Fixture::new().await;
        let (alice_id, local, _alice, _) = f.join("alice").await;
        let reply = f
            .hub
            .operation(&local, alice_id, &user("alice"), &request(add(1)))
            .await;
        assert!(reply.is_none(), "{reply:?}");
        // Another replica (or a REST save) adds cell 2 behind this replica's live diagram.
        let (tm, d) = (f.session.threat_model_id, f.session.diagram_id);
        let mut row = f.store.get_child(tm, "diagram", d).await.unwrap();
        let expected = row.version;
        row.doc["cells"]
            .as_array_mut()
            .unwrap()
            .push(json!({"id": "6f1c3a0e-0000-4000-8000-000000000002", "shape": "process"}));
        row.doc["update_vector"] = json!(2);
        row.version += 1;
        f.store.update_child(&row, expected, None).await.unwrap();
        let update = op(
            json!([{"id": "6f1c3a0e-0000-4000-8000-000000000002", "operation": "update",
            "data": {"shape": "actor"}}]),
        );
        let reply = f
            .hub
            .operation(&local, alice_id, &user("alice"), &request(update))
            .await;
        assert!(reply.is_none(), "{reply:?}");
        assert_eq!(f.hub.stored_vector(&local).await.unwrap(), 3);
        let cells = f.cells().await;
        assert_eq!(cells.len(), 2);
        assert_eq!(cells[1]["shape"], "actor");
    }
}
