//! Where tmi-server follows upstream TMI rather than the letter of the contract, because upstream's
//! clients and tests depend on it (each choice is listed in `docs/server.md`, "Differences from the
//! contract"). Pure.

use serde_json::{Value, json};

use super::diagrams;

/// Operations whose threat bodies may omit `threat_type`: the contract requires it, upstream
/// defaults it to `[]` (its own workflow tests create threats without it).
const THREAT_BODIES: &[&str] = &[
    "createThreatModelThreat",
    "updateThreatModelThreat",
    "bulkCreateThreatModelThreats",
    "bulkUpdateThreatModelThreats",
];

/// Fills in what upstream defaults or normalizes before the request is checked against the
/// contract: a threat without `threat_type` gets `[]` (single bodies and each item of a bulk
/// array); the cells of a diagram PUT are normalized as every cell write is
/// (`diagrams::normalize_cell`: enum values, flat geometry), so `"shape": "Process"` passes.
pub fn fill_request_defaults(operation_id: &str, body: &mut Value) {
    if operation_id == "updateThreatModelDiagram" {
        if let Some(Value::Array(cells)) = body.get_mut("cells") {
            cells.iter_mut().for_each(diagrams::normalize_cell);
        }
        return;
    }
    if !THREAT_BODIES.contains(&operation_id) {
        return;
    }
    let items: Vec<&mut Value> = match body {
        Value::Array(items) => items.iter_mut().collect(),
        other => vec![other],
    };
    for item in items {
        if let Value::Object(m) = item {
            m.entry("threat_type").or_insert_with(|| json!([]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_threat_without_threat_type_gets_an_empty_list() {
        let mut one = json!({"name": "T"});
        fill_request_defaults("createThreatModelThreat", &mut one);
        assert_eq!(one["threat_type"], json!([]));
        let mut kept = json!({"name": "T", "threat_type": ["spoofing"]});
        fill_request_defaults("updateThreatModelThreat", &mut kept);
        assert_eq!(kept["threat_type"], json!(["spoofing"]));
        let mut bulk = json!([{"name": "A"}, {"name": "B", "threat_type": ["x"]}]);
        fill_request_defaults("bulkCreateThreatModelThreats", &mut bulk);
        assert_eq!(
            bulk,
            json!([{"name": "A", "threat_type": []}, {"name": "B", "threat_type": ["x"]}])
        );
        let mut put = json!({"name": "D", "cells": [{"id": "c", "shape": "Process", "x": 1, "y": 2,
            "width": 40, "height": 30}]});
        fill_request_defaults("updateThreatModelDiagram", &mut put);
        assert_eq!(
            put["cells"][0],
            json!({"id": "c", "shape": "process", "position": {"x": 1, "y": 2}, "size": {"width": 40, "height": 30}}),
            "diagram cells are normalized before the contract is checked"
        );
        let mut asset = json!({"name": "A"});
        fill_request_defaults("createThreatModelAsset", &mut asset);
        assert_eq!(asset, json!({"name": "A"}), "other operations are untouched");
    }
}
