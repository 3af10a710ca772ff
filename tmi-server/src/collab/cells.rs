//! Pure: applying one collaboration operation (a batch of cell changes) to a diagram's cells, with
//! the conflict rules of tmi-compat.md §5.4, and computing the operation that undoes it. No IO.
//!
//! An operation is all-or-nothing: the first invalid change rejects the whole batch and the cells
//! stay as they were. Changes to the same cell within one batch are de-duplicated first (the last
//! one wins), as upstream does.

use std::collections::HashMap;

use serde_json::Value;

use super::protocol::{
    Cell, CellOperation, CellOperationKind, CellPatchOperation, PatchKind, RejectionReason,
};
use crate::domain::diagrams::{self, MAX_CELLS};
use crate::openapi::Spec;

/// Why an operation was not applied; becomes `operation_rejected`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectionReason,
    /// Upstream's finer code (`cell_already_exists`, ...), sent as `details`.
    pub code: &'static str,
    pub message: String,
    pub affected_cells: Vec<String>,
    /// Whether the client's view is probably stale (conflicts), so it should resync.
    pub requires_resync: bool,
}

impl Rejection {
    fn new(
        reason: RejectionReason,
        code: &'static str,
        message: impl Into<String>,
        cell: Option<&str>,
    ) -> Self {
        let requires_resync = reason == RejectionReason::ConflictDetected;
        Self {
            reason,
            code,
            message: message.into(),
            affected_cells: cell.map(|c| vec![c.to_owned()]).unwrap_or_default(),
            requires_resync,
        }
    }
}

/// The result of applying an operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The diagram's cells afterwards.
    pub cells: Vec<Cell>,
    /// The changes that took effect, normalized (what the other participants receive).
    pub forward: CellPatchOperation,
    /// The changes that restore the previous cells (for undo).
    pub inverse: CellPatchOperation,
}

fn patch(cells: Vec<CellOperation>) -> CellPatchOperation {
    CellPatchOperation {
        kind: PatchKind::Patch,
        cells,
    }
}

/// Checks a cell's payload with the REST rules (`diagrams::check_cell`) and gives it the
/// operation's id.
fn prepare_data(spec: &Spec, op: &CellOperation, code: &'static str) -> Result<Cell, Rejection> {
    let Some(data) = op.data.clone() else {
        return Err(Rejection::new(
            RejectionReason::ValidationFailed,
            code,
            format!(
                "{} of cell {} requires cell data",
                kind_name(&op.operation),
                op.id
            ),
            Some(&op.id),
        ));
    };
    match data.get("id") {
        None => {}
        Some(Value::String(id)) if *id == op.id => {}
        Some(_) => {
            return Err(Rejection::new(
                RejectionReason::ValidationFailed,
                "cell_id_mismatch",
                format!("cell data id does not match the operation's cell id {}", op.id),
                Some(&op.id),
            ));
        }
    }
    let mut value = Value::Object(data);
    if let Value::Object(m) = &mut value {
        m.insert("id".into(), Value::String(op.id.clone()));
    }
    if let Err(message) = diagrams::check_cell(spec, &mut value) {
        return Err(Rejection::new(
            RejectionReason::ValidationFailed,
            "invalid_cell",
            message,
            Some(&op.id),
        ));
    }
    match value {
        Value::Object(cell) => Ok(cell),
        _ => Err(Rejection::new(
            RejectionReason::ValidationFailed,
            code,
            "cell data must be an object",
            Some(&op.id),
        )),
    }
}

fn kind_name(kind: &CellOperationKind) -> &str {
    match kind {
        CellOperationKind::Add => "add",
        CellOperationKind::Update => "update",
        CellOperationKind::Remove => "remove",
        CellOperationKind::Other(s) => s,
    }
}

/// Applies `operation` to `cells` (taken by value: the diagram's cells are changed in place, not
/// copied; on a rejection the caller keeps nothing). Every added or updated cell passes the same
/// check as a REST save (`diagrams::check_cell` against `spec`). Builds an index of the cells
/// first (O(diagram)); a live diagram keeps a [`LiveCells`] instead and pays only for the cells an
/// operation touches.
pub fn apply(spec: &Spec, cells: Vec<Cell>, operation: &CellPatchOperation) -> Result<Applied, Rejection> {
    let mut live = LiveCells::new(cells.into_iter().map(Value::Object).collect());
    let (forward, inverse) = live.apply(spec, operation)?;
    Ok(Applied {
        cells: live.into_cells().into_iter().filter_map(into_object).collect(),
        forward,
        inverse,
    })
}

fn into_object(v: Value) -> Option<Cell> {
    match v {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// A diagram's cells in their stored order with an index by cell id: applying an operation costs
/// O(cells it touches) (plus O(cells after the first removed one) for a removal).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveCells {
    cells: Vec<Value>,
    index: HashMap<String, usize>,
}

/// One planned change of [`LiveCells::apply`]'s first pass.
enum Planned {
    Add(Cell),
    Update(usize, Cell),
    Remove(usize),
}

impl LiveCells {
    /// Indexes `cells` (entries that are not objects are dropped, as a stored diagram's are).
    pub fn new(cells: Vec<Value>) -> Self {
        let cells: Vec<Value> = cells.into_iter().filter(Value::is_object).collect();
        let index = cells
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.get("id").and_then(Value::as_str).map(|id| (id.to_owned(), i)))
            .collect();
        Self { cells, index }
    }

    pub fn len(&self) -> usize {
        self.cells.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// The cells, to put back into the diagram document.
    pub fn into_cells(self) -> Vec<Value> {
        self.cells
    }

    /// Applies `operation` all-or-nothing: every change is checked first (a rejection leaves the
    /// cells untouched), then written. Returns the changes that took effect (normalized) and the
    /// changes that undo them.
    pub fn apply(
        &mut self,
        spec: &Spec,
        operation: &CellPatchOperation,
    ) -> Result<(CellPatchOperation, CellPatchOperation), Rejection> {
        if let PatchKind::Other(t) = &operation.kind {
            return Err(Rejection::new(
                RejectionReason::InvalidOperationType,
                "invalid_operation_type",
                format!("unknown operation type {t:?}; expected patch"),
                None,
            ));
        }
        if operation.cells.is_empty() {
            return Err(Rejection::new(
                RejectionReason::EmptyOperation,
                "empty_cell_operations",
                "the operation has no cell changes",
                None,
            ));
        }
        // De-duplicate: the last change of a cell wins, at the position of its first mention. So
        // each cell is changed at most once and every check below reads the cells as they were.
        let mut order: Vec<&str> = Vec::new();
        let mut last: HashMap<&str, &CellOperation> = HashMap::new();
        for op in &operation.cells {
            if op.id.is_empty() || op.id.len() > 256 {
                return Err(Rejection::new(
                    RejectionReason::ValidationFailed,
                    "invalid_cell_id",
                    "cell ids must be 1 to 256 characters",
                    None,
                ));
            }
            if last.insert(op.id.as_str(), op).is_none() {
                order.push(op.id.as_str());
            }
        }

        // First pass: check everything, change nothing.
        let mut plan: Vec<(&str, Planned)> = Vec::with_capacity(order.len());
        let (mut adds, mut removes) = (0usize, 0usize);
        for id in order {
            let op = last[id];
            match &op.operation {
                CellOperationKind::Add => {
                    let cell = prepare_data(spec, op, "add_requires_cell_data")?;
                    if self.index.contains_key(id) {
                        return Err(Rejection::new(
                            RejectionReason::ConflictDetected,
                            "cell_already_exists",
                            format!("cell {id} already exists"),
                            Some(id),
                        ));
                    }
                    adds += 1;
                    plan.push((id, Planned::Add(cell)));
                }
                CellOperationKind::Update => {
                    let cell = prepare_data(spec, op, "update_requires_cell_data")?;
                    let Some(&i) = self.index.get(id) else {
                        return Err(Rejection::new(
                            RejectionReason::ConflictDetected,
                            "update_nonexistent_cell",
                            format!("cell {id} does not exist"),
                            Some(id),
                        ));
                    };
                    if self.cells[i].as_object() == Some(&cell) {
                        continue;
                    }
                    plan.push((id, Planned::Update(i, cell)));
                }
                CellOperationKind::Remove => {
                    let Some(&i) = self.index.get(id) else {
                        continue;
                    };
                    removes += 1;
                    plan.push((id, Planned::Remove(i)));
                }
                CellOperationKind::Other(kind) => {
                    return Err(Rejection::new(
                        RejectionReason::InvalidOperationType,
                        "invalid_operation_type",
                        format!("unknown cell operation {kind:?}; expected add, update or remove"),
                        Some(id),
                    ));
                }
            }
        }
        if plan.is_empty() {
            return Err(Rejection::new(
                RejectionReason::NoStateChange,
                "no_state_change",
                "the operation changes nothing",
                None,
            ));
        }
        if self.cells.len() + adds - removes > MAX_CELLS {
            return Err(Rejection::new(
                RejectionReason::ValidationFailed,
                "too_many_cells",
                format!("a diagram holds at most {MAX_CELLS} cells"),
                None,
            ));
        }

        // Second pass: write. Removed cells leave the array after every other change, so the
        // positions found above stay valid until then.
        let mut forward = Vec::with_capacity(plan.len());
        let mut inverse = Vec::with_capacity(plan.len());
        let mut removed: Vec<usize> = Vec::with_capacity(removes);
        for (id, change) in plan {
            let (fwd, inv) = match change {
                Planned::Add(cell) => {
                    self.index.insert(id.to_owned(), self.cells.len());
                    self.cells.push(Value::Object(cell.clone()));
                    (
                        (CellOperationKind::Add, Some(cell)),
                        (CellOperationKind::Remove, None),
                    )
                }
                Planned::Update(i, cell) => {
                    let before = std::mem::replace(&mut self.cells[i], Value::Object(cell.clone()));
                    (
                        (CellOperationKind::Update, Some(cell)),
                        (CellOperationKind::Update, into_object(before)),
                    )
                }
                Planned::Remove(i) => {
                    self.index.remove(id);
                    removed.push(i);
                    (
                        (CellOperationKind::Remove, None),
                        (CellOperationKind::Add, self.cells[i].as_object().cloned()),
                    )
                }
            };
            forward.push(CellOperation {
                id: id.to_owned(),
                operation: fwd.0,
                data: fwd.1,
            });
            inverse.push(CellOperation {
                id: id.to_owned(),
                operation: inv.0,
                data: inv.1,
            });
        }
        if let Some(&first) = removed.iter().min() {
            removed.sort_unstable();
            let mut i = 0;
            self.cells.retain(|_| {
                let keep = removed.binary_search(&i).is_err();
                i += 1;
                keep
            });
            for (i, c) in self.cells.iter().enumerate().skip(first) {
                if let Some(id) = c.get("id").and_then(Value::as_str)
                    && let Some(slot) = self.index.get_mut(id)
                {
                    *slot = i;
                }
            }
        }
        // Undo applies the inverse changes in reverse order.
        inverse.reverse();
        Ok((patch(forward), patch(inverse)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A cell id (the contract's UUID form) named by one letter.
    fn id(name: char) -> String {
        format!("00000000-0000-4000-8000-{:0>12}", u32::from(name))
    }

    fn cell(v: Value) -> Cell {
        v.as_object().cloned().unwrap()
    }

    fn op(v: Value) -> CellPatchOperation {
        serde_json::from_value(json!({"type": "patch", "cells": v})).unwrap()
    }

    fn spec() -> Spec {
        Spec::embedded().unwrap()
    }

    #[test]
    fn add_update_remove_and_undo_restores() {
        let spec = spec();
        let (a, b) = (id('a'), id('b'));
        let start = vec![cell(json!({"id": a, "shape": "process"}))];
        let o = op(json!([
            {"id": b, "operation": "add", "data": {"shape": "actor", "x": 1, "y": 2, "width": 40, "height": 30}},
            {"id": a, "operation": "update", "data": {"id": a, "shape": "store"}},
        ]));
        let applied = apply(&spec, start.clone(), &o).unwrap();
        assert_eq!(applied.cells.len(), 2);
        assert_eq!(
            applied.cells[1]["position"],
            json!({"x": 1, "y": 2}),
            "normalized"
        );
        assert_eq!(applied.cells[1]["id"], b, "id filled in");
        assert_eq!(applied.cells[0]["shape"], "store");
        let undone = apply(&spec, applied.cells.clone(), &applied.inverse).unwrap();
        assert_eq!(undone.cells, start);
        let removed = apply(
            &spec,
            applied.cells.clone(),
            &op(json!([{"id": a, "operation": "remove"}])),
        )
        .unwrap();
        assert_eq!(removed.cells.len(), 1);
        let restored = apply(&spec, removed.cells.clone(), &removed.inverse).unwrap();
        assert!(
            restored
                .cells
                .iter()
                .any(|c| c["id"] == a.as_str() && c["shape"] == "store")
        );
    }

    #[test]
    fn conflicts_and_validation() {
        let spec = spec();
        let (a, z, q) = (id('a'), id('z'), id('q'));
        let start = vec![cell(json!({"id": a, "shape": "process"}))];
        let r = apply(
            &spec,
            start.clone(),
            &op(json!([{"id": a, "operation": "add", "data": {"shape": "actor"}}])),
        )
        .unwrap_err();
        assert_eq!(
            (r.reason, r.code, r.requires_resync),
            (RejectionReason::ConflictDetected, "cell_already_exists", true)
        );
        let r = apply(
            &spec,
            start.clone(),
            &op(json!([{"id": z, "operation": "update", "data": {"shape": "actor"}}])),
        )
        .unwrap_err();
        assert_eq!(r.code, "update_nonexistent_cell");
        let r = apply(&spec, start.clone(), &op(json!([{"id": z, "operation": "add"}]))).unwrap_err();
        assert_eq!(
            (r.reason, r.requires_resync),
            (RejectionReason::ValidationFailed, false)
        );
        let r = apply(
            &spec,
            start.clone(),
            &op(json!([{"id": z, "operation": "remove"}])),
        )
        .unwrap_err();
        assert_eq!(r.reason, RejectionReason::NoStateChange);
        let r = apply(&spec, start.clone(), &op(json!([]))).unwrap_err();
        assert_eq!(r.reason, RejectionReason::EmptyOperation);
        let r = apply(
            &spec,
            start.clone(),
            &op(json!([{"id": a, "operation": "explode"}])),
        )
        .unwrap_err();
        assert_eq!(r.reason, RejectionReason::InvalidOperationType);
        let r = apply(
            &spec,
            start.clone(),
            &op(json!([{"id": q, "operation": "add", "data": {"id": "other"}}])),
        )
        .unwrap_err();
        assert_eq!(r.reason, RejectionReason::ValidationFailed);
    }

    /// A cell REST would refuse is refused here too, with the same reasons.
    #[test]
    fn cells_pass_the_rest_checks() {
        let spec = spec();
        let start = vec![cell(json!({"id": id('a'), "shape": "process"}))];
        for bad in [
            json!({"shape": "hexagon"}),
            json!({"shape": "process", "size": {"width": 1, "height": 1}}),
            json!({"shape": "flow", "source": {"cell": id('a')}}),
            json!({"shape": "flow", "source": {"cell": id('a')}, "target": {"cell": id('a')},
                "labels": [{"attrs": {"text": {"text": "x", "bogus": 1}}}]}),
        ] {
            let r = apply(
                &spec,
                start.clone(),
                &op(json!([{"id": id('n'), "operation": "add", "data": bad.clone()}])),
            )
            .unwrap_err();
            assert_eq!(
                (r.reason, r.code),
                (RejectionReason::ValidationFailed, "invalid_cell"),
                "{bad}"
            );
        }
        let r = apply(
            &spec,
            start.clone(),
            &op(json!([{"id": "n1", "operation": "add", "data": {"shape": "process"}}])),
        )
        .unwrap_err();
        assert_eq!(r.code, "invalid_cell", "ids are UUIDs, as in REST");
        // Enum values are normalized before they are checked.
        let ok = apply(
            &spec,
            start,
            &op(json!([{"id": id('e'), "operation": "add", "data": {"shape": " Flow ",
                "source": {"cell": id('a')}, "target": {"cell": id('a')},
                "labels": [{"attrs": {"text": {"text": "x", "textAnchor": "Middle", "textVerticalAnchor": "BOTTOM"}}}]}}])),
        )
        .unwrap();
        assert_eq!(ok.cells[1]["shape"], "flow");
        assert_eq!(
            ok.cells[1]["labels"][0]["attrs"]["text"],
            json!({"text": "x", "textAnchor": "middle", "textVerticalAnchor": "bottom"})
        );
    }

    #[test]
    fn batch_is_atomic_and_deduplicated() {
        let spec = spec();
        let (a, n) = (id('a'), id('n'));
        let start = vec![cell(json!({"id": a, "shape": "process"}))];
        // The second change conflicts: nothing of the batch applies.
        let r = apply(
            &spec,
            start.clone(),
            &op(json!([
                {"id": n, "operation": "add", "data": {"shape": "actor"}},
                {"id": a, "operation": "add", "data": {"shape": "actor"}}
            ])),
        );
        assert!(r.is_err());
        // Two changes of one cell: the last wins.
        let applied = apply(
            &spec,
            start.clone(),
            &op(json!([
                {"id": a, "operation": "update", "data": {"shape": "process", "data": {"label": 1}}},
                {"id": a, "operation": "update", "data": {"shape": "process", "data": {"label": 2}}},
            ])),
        )
        .unwrap();
        assert_eq!(applied.cells[0]["data"]["label"], 2);
        assert_eq!(applied.forward.cells.len(), 1);
    }
}
