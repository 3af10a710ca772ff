//! The web client's cells through both write paths (issue 12, item 5): the same tmi-ux 1.13 nodes
//! and edge saved by REST PATCH (solo auto-save) and sent as WebSocket operations (collaboration)
//! are accepted by both, stored identically, and every later REST save of either diagram works.
//! Cells the REST rules refuse are refused over the socket as well.

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Env, Replica, stored_cells};

const ACTOR: &str = "2a4f3c1e-8b7d-4e0a-9c61-0d5b7e3f1a01";
const PROCESS: &str = "2a4f3c1e-8b7d-4e0a-9c61-0d5b7e3f1a02";
const STORE: &str = "2a4f3c1e-8b7d-4e0a-9c61-0d5b7e3f1a03";
const FLOW: &str = "2a4f3c1e-8b7d-4e0a-9c61-0d5b7e3f1a04";
const FLOW_2: &str = "2a4f3c1e-8b7d-4e0a-9c61-0d5b7e3f1a05";

/// Port groups as tmi-ux registers them on every node.
fn ports() -> Value {
    let circle = json!({"circle": {"r": 5, "magnet": "active", "stroke": "#000", "strokeWidth": 1, "fill": "#fff",
        "style": {"visibility": "hidden"}}});
    json!({
        "groups": {
            "top": {"position": "top", "attrs": circle},
            "right": {"position": "right", "attrs": circle},
            "bottom": {"position": "bottom", "attrs": circle},
            "left": {"position": "left", "attrs": circle},
        },
        "items": [{"id": "top", "group": "top"}, {"id": "right", "group": "right"},
            {"id": "bottom", "group": "bottom"}, {"id": "left", "group": "left"}],
    })
}

/// A new data flow as tmi-ux 1.13 creates it: its label carries `textAnchor` and
/// `textVerticalAnchor`, which the contract's `EdgeLabel` does not list.
fn edge(id: &str, source: &str, target: &str, vertical: &str) -> Value {
    json!({
        "id": id, "shape": "flow", "zIndex": 1,
        "source": {"cell": source, "port": "right"},
        "target": {"cell": target, "port": "left"},
        "attrs": {"line": {"stroke": "#000000", "strokeWidth": 2,
            "targetMarker": {"name": "classic", "size": 8}}},
        "labels": [{"attrs": {"text": {"text": "Flow", "fontSize": 12, "fill": "#333333",
            "fontFamily": "Roboto Condensed, Arial, sans-serif",
            "textAnchor": "middle", "textVerticalAnchor": vertical}}, "position": 0.5}],
        "vertices": [{"x": 260, "y": 140}],
        "connector": {"name": "smooth"},
        "router": {"name": "normal"},
        "data": {"_metadata": []},
    })
}

/// The nodes and edges of a small diagram, as the client sends them: flat and nested geometry,
/// X6 attributes, ports, and one edge whose enum values are not yet in canonical form.
fn client_cells() -> Vec<Value> {
    vec![
        json!({"id": ACTOR, "shape": "actor", "x": 40, "y": 100, "width": 120, "height": 60, "zIndex": 1,
            "attrs": {"body": {"fill": "#ffffff", "stroke": "#000000", "strokeWidth": 2},
                "text": {"text": "User", "fontSize": 12, "fill": "#000000", "fontFamily": "Roboto Condensed, Arial, sans-serif",
                    "textAnchor": "middle", "textVerticalAnchor": "middle", "refX": "50%", "refY": "50%"}},
            "ports": ports(), "data": {"_metadata": []}}),
        json!({"id": PROCESS, "shape": "process", "position": {"x": 340, "y": 100}, "size": {"width": 120, "height": 60},
            "zIndex": 2, "angle": 0,
            "attrs": {"body": {"fill": "#ffffff", "stroke": "#000000", "strokeWidth": 2, "rx": 30, "ry": 30},
                "text": {"text": "Auth Service", "fontSize": 12, "fill": "#000000"}},
            "ports": ports(), "data": {"_metadata": [{"key": "owner", "value": "team-a"}]}}),
        json!({"id": STORE, "shape": "store", "position": {"x": 340, "y": 300}, "size": {"width": 120, "height": 60},
            "zIndex": 3, "attrs": {"text": {"text": "Users DB"}}, "ports": ports()}),
        edge(FLOW, ACTOR, PROCESS, "middle"),
        // Case and spacing as upstream's enum normalizer tolerates them (tmi-compat.md §8).
        edge(FLOW_2, PROCESS, STORE, " Middle "),
    ]
}

fn by_id(cells: &BTreeMap<String, Value>) -> Vec<(String, Value)> {
    cells.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

async fn same_cells_through_rest_and_websocket(env: Env) {
    let r = env.replica().await;
    let alice = r.login("alice").await;
    let (tm_rest, d_rest) = r.diagram(&alice, &[]).await;
    let (tm_ws, d_ws) = r.diagram(&alice, &[]).await;
    let rest_path = format!("/threat_models/{tm_rest}/diagrams/{d_rest}");
    let ws_path = format!("/threat_models/{tm_ws}/diagrams/{d_ws}");

    // REST: the client's auto-save replaces the cells with JSON Patch.
    let saved = r
        .patch(
            &rest_path,
            &alice,
            json!([{"op": "replace", "path": "/cells", "value": client_cells()}]),
        )
        .await;
    saved.expect(200);

    // WebSocket: the same cells as collaboration operations, one add each.
    let session = r.session(&alice, &tm_ws, &d_ws).await;
    let mut c = r.connect(&alice, &session).await;
    c.expect("diagram_state").await;
    for cell in client_cells() {
        let id = cell["id"].as_str().unwrap().to_owned();
        c.op(json!([{"id": id, "operation": "add", "data": cell}])).await;
    }
    c.send(json!({"message_type": "sync_status_request"})).await;
    let status = c.expect("sync_status_response").await;
    assert_eq!(status["update_vector"], 5, "every operation applied");
    r.call(
        Method::DELETE,
        &Replica::collaborate_path(&tm_ws, &d_ws),
        Some(&alice),
        None,
    )
    .await
    .expect(204);
    c.close().await;

    // Both stored the same, normalized cells.
    let (rest_cells, _) = stored_cells(&r, &alice, &tm_rest, &d_rest).await;
    let (ws_cells, _) = stored_cells(&r, &alice, &tm_ws, &d_ws).await;
    assert_eq!(rest_cells.len(), 5);
    assert_eq!(by_id(&rest_cells), by_id(&ws_cells));
    let actor = &rest_cells[ACTOR];
    assert_eq!(actor["position"], json!({"x": 40, "y": 100}));
    assert_eq!(actor["size"], json!({"width": 120, "height": 60}));
    for flow in [FLOW, FLOW_2] {
        assert_eq!(
            rest_cells[flow]["labels"][0]["attrs"]["text"]["textVerticalAnchor"],
            "middle"
        );
    }

    // Every later REST save works: the whole diagram as the client re-saves it, and a rename.
    for (path, cells) in [(&rest_path, &rest_cells), (&ws_path, &ws_cells)] {
        let all: Vec<Value> = cells.values().cloned().collect();
        r.patch(
            path,
            &alice,
            json!([{"op": "replace", "path": "/cells", "value": all}]),
        )
        .await
        .expect(200);
        r.patch(
            path,
            &alice,
            json!([{"op": "replace", "path": "/name", "value": "renamed"}]),
        )
        .await
        .expect(200);
        let put = r
            .call(
                Method::PUT,
                path,
                Some(&alice),
                Some(json!({"name": "DFD", "type": "DFD-1.0.0", "cells": client_cells()})),
            )
            .await;
        put.expect(200);
    }
}

/// What REST refuses, the socket refuses: a label attribute nobody defines, a node too small.
async fn invalid_cells_are_refused_on_both_paths(env: Env) {
    let r = env.replica().await;
    let alice = r.login("alice").await;
    let (tm, d) = r.diagram(&alice, &[]).await;
    let path = format!("/threat_models/{tm}/diagrams/{d}");
    let mut bad_label = edge(FLOW, ACTOR, PROCESS, "middle");
    bad_label["labels"][0]["attrs"]["text"]["onclick"] = json!("x");
    let small = json!({"id": ACTOR, "shape": "actor", "position": {"x": 1, "y": 1}, "size": {"width": 4, "height": 4}});
    for bad in [bad_label, small] {
        r.patch(
            &path,
            &alice,
            json!([{"op": "replace", "path": "/cells", "value": [bad.clone()]}]),
        )
        .await
        .expect(400);
    }
    let session = r.session(&alice, &tm, &d).await;
    let mut c = r.connect(&alice, &session).await;
    c.expect("diagram_state").await;
    let mut bad_label = edge(FLOW, ACTOR, PROCESS, "middle");
    bad_label["labels"][0]["attrs"]["text"]["onclick"] = json!("x");
    c.op(json!([{"id": FLOW, "operation": "add", "data": bad_label}]))
        .await;
    let rejected = c.expect("operation_rejected").await;
    assert_eq!(rejected["reason"], "validation_failed", "{rejected}");
    c.send(json!({"message_type": "sync_status_request"})).await;
    assert_eq!(c.expect("sync_status_response").await["update_vector"], 0);
}

#[tokio::test]
async fn same_cells_through_rest_and_websocket_sqlite() {
    same_cells_through_rest_and_websocket(Env::sqlite()).await;
}

#[tokio::test]
async fn same_cells_through_rest_and_websocket_postgres() {
    same_cells_through_rest_and_websocket(Env::postgres(Some(Env::test_redis())).await).await;
}

#[tokio::test]
async fn invalid_cells_are_refused_on_both_paths_sqlite() {
    invalid_cells_are_refused_on_both_paths(Env::sqlite()).await;
}

#[tokio::test]
async fn invalid_cells_are_refused_on_both_paths_postgres() {
    invalid_cells_are_refused_on_both_paths(Env::postgres(Some(Env::test_redis())).await).await;
}
