//! Numbers at the edges of what a double or a 64-bit integer holds survive the database: a diagram
//! holding them stays readable, deletable and restorable (issue 12, item 1), and read back they
//! are the numbers that were written.

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp};

/// The numbers that once made a threat model unreadable on PostgreSQL, and their neighbours.
fn extremes() -> Value {
    json!({
        "max": f64::MAX,
        "min": f64::MIN,
        "tiny": 5e-324,
        "smallest_normal": f64::MIN_POSITIVE,
        "negative_zero": -0.0,
        "big_float": 1e16,
        "u64_max": u64::MAX,
        "i64_min": i64::MIN,
        "third": 1.0 / 3.0,
    })
}

/// The request bodies as the client sends them: the serialized text, numbers and all.
fn text(v: &Value) -> String {
    serde_json::to_string(v).unwrap()
}

async fn huge_numbers_round_trip_through_a_diagram(b: Backend) {
    let app = TestApp::spawn(b).await;
    let s = app.login("alice").await;
    let tm = app
        .post("/threat_models", Some(&s.access), json!({"name": "Numbers"}))
        .await;
    let tm = format!("/threat_models/{}", tm.expect(201)["id"].as_str().unwrap());
    let d = app
        .post(
            &format!("{tm}/diagrams"),
            Some(&s.access),
            json!({"name": "DFD", "type": "DFD-1.0.0"}),
        )
        .await;
    let diagram = format!("{tm}/diagrams/{}", d.expect(201)["id"].as_str().unwrap());

    // The one-liner of the issue: a cell whose data holds the largest double.
    let one_liner = json!({"name": "DFD", "type": "DFD-1.0.0", "cells": [
        {"id": "6f1c3a0e-0000-4000-8000-000000000001", "shape": "process",
         "position": {"x": 10, "y": 20}, "size": {"width": 120, "height": 60},
         "data": {"n": 1.797_693_134_862_315_7e308}}
    ]});
    app.put(&diagram, Some(&s.access), one_liner).await.expect(200);
    let got = app.get(&diagram, Some(&s.access)).await;
    assert_eq!(got.expect(200)["cells"][0]["data"]["n"], json!(f64::MAX));
    app.get(&tm, Some(&s.access)).await.expect(200);

    // Every extreme, in cell data and in a label position, reads back as the same number.
    let cells = json!([
        {"id": "6f1c3a0e-0000-4000-8000-000000000001", "shape": "process",
         "position": {"x": 10, "y": 20}, "size": {"width": 120, "height": 60}, "data": extremes()},
        {"id": "6f1c3a0e-0000-4000-8000-000000000002", "shape": "flow",
         "source": {"cell": "6f1c3a0e-0000-4000-8000-000000000001"},
         "target": {"cell": "6f1c3a0e-0000-4000-8000-000000000001"},
         "defaultLabel": {"position": f64::MAX}}
    ]);
    let patch = json!([{"op": "replace", "path": "/cells", "value": cells}]);
    let saved = app
        .send(
            reqwest::Method::PATCH,
            &diagram,
            Some(&s.access),
            Some(("application/json-patch+json", text(&patch).into_bytes())),
            &[],
        )
        .await;
    saved.expect(200);
    for read in [
        app.get(&diagram, Some(&s.access)).await.expect(200).clone(),
        app.get(&tm, Some(&s.access)).await.expect(200)["diagrams"][0].clone(),
    ] {
        assert_eq!(
            text(&read["cells"][0]["data"]),
            text(&extremes()),
            "numbers read back as written"
        );
        assert_eq!(read["cells"][1]["defaultLabel"]["position"], json!(f64::MAX));
    }

    // The diagram can be deleted, its threat model deleted and restored, and read again.
    app.delete(&diagram, Some(&s.access)).await.expect(204);
    app.post(&format!("{diagram}/restore"), Some(&s.access), json!({}))
        .await
        .expect(200);
    app.delete(&tm, Some(&s.access)).await.expect(204);
    app.post(&format!("{tm}/restore"), Some(&s.access), json!({}))
        .await
        .expect(200);
    let back = app.get(&tm, Some(&s.access)).await;
    assert_eq!(
        text(&back.expect(200)["diagrams"][0]["cells"][0]["data"]),
        text(&extremes())
    );
    app.get("/threat_models", Some(&s.access)).await.expect(200);
}

/// Preferences are a JSON column of their own.
async fn huge_numbers_round_trip_through_preferences(b: Backend) {
    let app = TestApp::spawn(b).await;
    let s = app.login("alice").await;
    let prefs = json!({"tmi-ux": extremes()});
    app.put("/me/preferences", Some(&s.access), prefs.clone())
        .await
        .expect(200);
    let got = app.get("/me/preferences", Some(&s.access)).await;
    assert_eq!(text(got.expect(200)), text(&prefs));
}

both_backends!(
    huge_numbers_round_trip_through_a_diagram,
    huge_numbers_round_trip_through_preferences,
);
