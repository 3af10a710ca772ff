//! The six child resources: CRUD, JSON Patch, soft delete/restore, metadata; diagram rules.

use serde_json::{Value, json};

use crate::helpers::{Backend, Session, TestApp};

/// (plural, create body, replacement body, a patchable field and value, versioned)
fn samples() -> Vec<(&'static str, Value, Value, &'static str, Value, bool)> {
    vec![
        (
            "threats",
            json!({"name": "Spoof", "threat_type": ["Spoofing"], "severity": "High", "score": 7.5}),
            json!({"name": "Spoof 2", "threat_type": [], "status": "In Progress"}),
            "/mitigation",
            json!("mfa"),
            true,
        ),
        (
            "documents",
            json!({"name": "Spec", "uri": "https://example.com/spec"}),
            json!({"name": "Spec 2", "uri": "https://example.com/spec2"}),
            "/description",
            json!("d"),
            true,
        ),
        (
            "notes",
            json!({"name": "N", "content": "# Hello"}),
            json!({"name": "N2", "content": "body"}),
            "/content",
            json!("patched"),
            false,
        ),
        (
            "assets",
            json!({"name": "DB", "type": "data"}),
            json!({"name": "DB2", "type": "software"}),
            "/criticality",
            json!("high"),
            true,
        ),
        (
            "repositories",
            json!({"uri": "https://github.com/x/y", "name": "repo"}),
            json!({"uri": "https://github.com/x/z"}),
            "/name",
            json!("renamed"),
            false,
        ),
        (
            "diagrams",
            json!({"name": "DFD", "type": "DFD-1.0.0"}),
            json!({"name": "DFD 2", "type": "DFD-1.0.0", "cells": []}),
            "/description",
            json!("d"),
            true,
        ),
    ]
}

async fn new_tm(app: &TestApp, s: &Session) -> String {
    let tm = app
        .post("/threat_models", Some(&s.access), json!({"name": "Parent"}))
        .await;
    format!("/threat_models/{}", tm.expect(201)["id"].as_str().unwrap())
}

async fn crud_every_kind(b: Backend) {
    let app = TestApp::spawn(b).await;
    let s = app.login("alice").await;
    let tm = new_tm(&app, &s).await;
    for (plural, create, replace, field, value, versioned) in samples() {
        let created = app
            .post(&format!("{tm}/{plural}"), Some(&s.access), create.clone())
            .await;
        let c = created.expect(201).clone();
        let id = c["id"].as_str().unwrap();
        assert_eq!(c["alias"], 1, "{plural}");
        let item = format!("{tm}/{plural}/{id}");
        assert!(created.header("location").unwrap().ends_with(&item), "{plural}");
        assert_eq!(app.get(&item, Some(&s.access)).await.expect(200)["id"], id);
        let list = app
            .get(&format!("{tm}/{plural}?limit=10&offset=0"), Some(&s.access))
            .await;
        let list = list.expect(200);
        assert_eq!(list["total"], 1, "{plural}");
        assert_eq!(list[plural].as_array().unwrap().len(), 1);
        let put = app.put(&item, Some(&s.access), replace.clone()).await;
        put.expect(200);
        if versioned {
            assert_eq!(put.body["version"], 2, "{plural}");
            let stale = app
                .send(
                    reqwest::Method::PUT,
                    &item,
                    Some(&s.access),
                    Some(("application/json", replace.to_string().into_bytes())),
                    &[("if-match", "1")],
                )
                .await;
            stale.expect_error(409, "version_mismatch");
        } else {
            assert!(put.body.get("version").is_none(), "{plural} has no version");
        }
        let patched = app
            .patch(
                &item,
                Some(&s.access),
                json!([{"op": "replace", "path": field, "value": value}]),
            )
            .await;
        assert_eq!(patched.expect(200)[&field[1..]], value, "{plural}");
        app.patch(
            &item,
            Some(&s.access),
            json!([{"op": "replace", "path": "/id", "value": "x"}]),
        )
        .await
        .expect_error(400, "invalid_input");
        app.patch(
            &item,
            Some(&s.access),
            json!([{"op": "replace", "path": "/alias", "value": 3}]),
        )
        .await
        .expect_error(400, "invalid_input");
        // Prohibited and unknown fields.
        let mut with_id = replace.clone();
        with_id["id"] = json!(id);
        app.put(&item, Some(&s.access), with_id)
            .await
            .expect_error(400, "invalid_input");
        // Unknown fields are ignored, as upstream (no child update schema forbids them).
        let mut unknown = replace.clone();
        unknown["bogus_field"] = json!(1);
        let r = app.put(&item, Some(&s.access), unknown).await;
        assert!(r.expect(200).get("bogus_field").is_none(), "{plural}");
        // The threat model embeds it.
        let full = app.get(&tm, Some(&s.access)).await;
        assert_eq!(full.expect(200)[plural].as_array().unwrap().len(), 1, "{plural}");
        // Soft delete, include_deleted, restore.
        app.delete(&item, Some(&s.access)).await.expect(204);
        app.get(&item, Some(&s.access))
            .await
            .expect_error(404, "not_found");
        assert_eq!(
            app.get(&format!("{tm}/{plural}"), Some(&s.access))
                .await
                .expect(200)["total"],
            0
        );
        let with_deleted = app
            .get(&format!("{tm}/{plural}?include_deleted=true"), Some(&s.access))
            .await;
        assert!(
            with_deleted.expect(200)[plural][0]["deleted_at"].is_string(),
            "{plural}"
        );
        app.post(&format!("{item}/restore"), Some(&s.access), json!({}))
            .await
            .expect(200);
        app.get(&item, Some(&s.access)).await.expect(200);
        // A child of another threat model is not found under this one.
        let other = new_tm(&app, &s).await;
        app.get(&format!("{other}/{plural}/{id}"), Some(&s.access))
            .await
            .expect_error(404, "not_found");
    }
}

async fn threat_normalization_and_filters(b: Backend) {
    let app = TestApp::spawn(b).await;
    let s = app.login("alice").await;
    let tm = new_tm(&app, &s).await;
    let t = app
        .post(
            &format!("{tm}/threats"),
            Some(&s.access),
            json!({"name": "A", "threat_type": [], "severity": "High", "status": "In Progress"}),
        )
        .await;
    let t = t.expect(201);
    assert_eq!(t["severity"], "high");
    assert_eq!(t["status"], "in_progress");
    assert_eq!(t["threat_model_id"], tm.rsplit('/').next().unwrap());
    app.post(
        &format!("{tm}/threats"),
        Some(&s.access),
        json!({"name": "B", "threat_type": [], "severity": "low"}),
    )
    .await
    .expect(201);
    app.post(
        &format!("{tm}/threats"),
        Some(&s.access),
        json!({"name": "C", "threat_type": [], "score": 1.25}),
    )
    .await
    .expect_error(400, "invalid_input");
    app.post(
        &format!("{tm}/threats"),
        Some(&s.access),
        json!({"threat_type": []}),
    )
    .await
    .expect_error(400, "invalid_input");
    let high = app
        .get(&format!("{tm}/threats?severity=high"), Some(&s.access))
        .await;
    assert_eq!(high.expect(200)["total"], 1);
    let sorted = app
        .get(
            &format!("{tm}/threats?limit=10&offset=0&sort=severity:asc"),
            Some(&s.access),
        )
        .await;
    let names: Vec<&str> = sorted.expect(200)["threats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["A", "B"]);
    let newest = app.get(&format!("{tm}/threats"), Some(&s.access)).await;
    assert_eq!(
        newest.expect(200)["threats"][0]["name"],
        "B",
        "default sort is created_at:desc"
    );
}

async fn diagrams_cells_and_image(b: Backend) {
    let app = TestApp::spawn(b).await;
    let s = app.login("alice").await;
    let tm = new_tm(&app, &s).await;
    let d = app
        .post(
            &format!("{tm}/diagrams"),
            Some(&s.access),
            json!({"name": "DFD", "type": "DFD-1.0.0"}),
        )
        .await;
    let d = d.expect(201).clone();
    assert_eq!(d["cells"], json!([]));
    assert_eq!(d["update_vector"], 0);
    app.post(
        &format!("{tm}/diagrams"),
        Some(&s.access),
        json!({"name": "DFD", "type": "DFD-1.0.0", "cells": []}),
    )
    .await
    .expect_error(400, "invalid_input");
    let path = format!("{tm}/diagrams/{}", d["id"].as_str().unwrap());
    let cells = json!([
        {"id": "6f1c3a0e-0000-4000-8000-000000000001", "shape": "process", "x": 10, "y": 20, "width": 120, "height": 60},
        {"id": "6f1c3a0e-0000-4000-8000-000000000002", "shape": "store", "position": {"x": 300, "y": 20}, "size": {"width": 120, "height": 60}},
        {"id": "6f1c3a0e-0000-4000-8000-000000000003", "shape": "flow", "source": {"cell": "6f1c3a0e-0000-4000-8000-000000000001"}, "target": {"cell": "6f1c3a0e-0000-4000-8000-000000000002"}}
    ]);
    let r = app.patch(&path, Some(&s.access), json!([{"op": "replace", "path": "/cells", "value": cells}, {"op": "replace", "path": "/image", "value": {"svg": "PHN2Zz48L3N2Zz4="}}])).await;
    let r = r.expect(200);
    assert_eq!(r["update_vector"], 1);
    assert_eq!(r["image"]["update_vector"], 1);
    assert_eq!(
        r["cells"][0]["position"],
        json!({"x": 10, "y": 20}),
        "flat geometry is nested"
    );
    assert!(r["cells"][0].get("x").is_none());
    let again = app
        .patch(
            &path,
            Some(&s.access),
            json!([{"op": "replace", "path": "/name", "value": "renamed"}]),
        )
        .await;
    assert_eq!(again.expect(200)["update_vector"], 1, "no cell change, no bump");
    let list = app.get(&format!("{tm}/diagrams"), Some(&s.access)).await;
    assert!(
        list.expect(200)["diagrams"][0].get("cells").is_none(),
        "list items carry no cells"
    );
}

async fn metadata_everywhere(b: Backend) {
    let app = TestApp::spawn(b).await;
    let s = app.login("alice").await;
    let tm = new_tm(&app, &s).await;
    let mut parents = vec![tm.clone()];
    for (plural, create, ..) in samples() {
        let c = app.post(&format!("{tm}/{plural}"), Some(&s.access), create).await;
        parents.push(format!("{tm}/{plural}/{}", c.expect(201)["id"].as_str().unwrap()));
    }
    for p in parents {
        let m = format!("{p}/metadata");
        assert_eq!(app.get(&m, Some(&s.access)).await.expect(200), &json!([]));
        app.post(&m, Some(&s.access), json!({"key": "env", "value": "prod"}))
            .await
            .expect(201);
        app.post(&m, Some(&s.access), json!({"key": "env", "value": "dev"}))
            .await
            .expect_error(409, "conflict");
        assert_eq!(
            app.get(&format!("{m}/env"), Some(&s.access)).await.expect(200)["value"],
            "prod"
        );
        let body = if p.contains("/assets/") {
            json!({"key": "env", "value": "qa"})
        } else {
            json!({"value": "qa"})
        };
        assert_eq!(
            app.put(&format!("{m}/env"), Some(&s.access), body)
                .await
                .expect(200)["value"],
            "qa"
        );
        let missing = if p.contains("/assets/") {
            json!({"key": "missing", "value": "x"})
        } else {
            json!({"value": "x"})
        };
        app.put(&format!("{m}/missing"), Some(&s.access), missing)
            .await
            .expect_error(404, "not_found");
        app.post(
            &format!("{m}/bulk"),
            Some(&s.access),
            json!([{"key": "a", "value": "1"}, {"key": "a", "value": "2"}]),
        )
        .await
        .expect_error(400, "invalid_input");
        app.post(
            &format!("{m}/bulk"),
            Some(&s.access),
            json!([{"key": "b", "value": "1"}, {"key": "env", "value": "2"}]),
        )
        .await
        .expect_error(409, "conflict");
        assert_eq!(
            app.get(&m, Some(&s.access))
                .await
                .expect(200)
                .as_array()
                .unwrap()
                .len(),
            1,
            "nothing partially written"
        );
        app.post(
            &format!("{m}/bulk"),
            Some(&s.access),
            json!([{"key": "b", "value": "1"}]),
        )
        .await
        .expect(201);
        let up = app
            .send(
                reqwest::Method::PATCH,
                &format!("{m}/bulk"),
                Some(&s.access),
                Some((
                    "application/json",
                    json!([{"key": "b", "value": "2"}, {"key": "c", "value": "3"}])
                        .to_string()
                        .into_bytes(),
                )),
                &[],
            )
            .await;
        assert_eq!(up.expect(200).as_array().unwrap().len(), 3);
        let replaced = app
            .put(
                &format!("{m}/bulk"),
                Some(&s.access),
                json!([{"key": "z", "value": "9"}]),
            )
            .await;
        assert_eq!(replaced.expect(200), &json!([{"key": "z", "value": "9"}]));
        app.delete(&format!("{m}/z"), Some(&s.access)).await.expect(204);
        app.delete(&format!("{m}/z"), Some(&s.access))
            .await
            .expect_error(404, "not_found");
        app.post(&m, Some(&s.access), json!({"key": "bad/key", "value": "x"}))
            .await
            .expect_error(400, "invalid_input");
        app.post(
            &m,
            Some(&s.access),
            json!({"key": "k", "value": "x".repeat(1025)}),
        )
        .await
        .expect_error(400, "invalid_input");
    }
    let too_many: Vec<Value> = (0..21)
        .map(|i| json!({"key": format!("k{i}"), "value": "v"}))
        .collect();
    app.post(&format!("{tm}/metadata/bulk"), Some(&s.access), json!(too_many))
        .await
        .expect_error(400, "invalid_input");
}

async fn threat_score_and_date_filters(b: Backend) {
    let app = TestApp::spawn(b).await;
    let s = app.login("alice").await;
    let tm = new_tm(&app, &s).await;
    for (n, score) in [("low", 2.0), ("mid", 5.5), ("high", 9.1)] {
        app.post(
            &format!("{tm}/threats"),
            Some(&s.access),
            json!({"name": n, "threat_type": [], "score": score}),
        )
        .await
        .expect(201);
    }
    assert_eq!(
        app.get(&format!("{tm}/threats?score_gt=5"), Some(&s.access))
            .await
            .expect(200)["total"],
        2
    );
    assert_eq!(
        app.get(&format!("{tm}/threats?score_le=5.5"), Some(&s.access))
            .await
            .expect(200)["total"],
        2
    );
    assert_eq!(
        app.get(&format!("{tm}/threats?score_eq=9.1"), Some(&s.access))
            .await
            .expect(200)["total"],
        1
    );
    assert_eq!(
        app.get(
            &format!("{tm}/threats?created_after=2000-01-01T00:00:00Z"),
            Some(&s.access)
        )
        .await
        .expect(200)["total"],
        3
    );
    assert_eq!(
        app.get(
            &format!("{tm}/threats?created_before=2000-01-01T00:00:00Z"),
            Some(&s.access)
        )
        .await
        .expect(200)["total"],
        0
    );
    let tms = app
        .get(
            "/threat_models?created_after=2000-01-01T00:00:00Z&modified_before=2999-01-01T00:00:00Z",
            Some(&s.access),
        )
        .await;
    assert_eq!(tms.expect(200)["total"], 1);
    assert_eq!(
        app.get(
            "/threat_models?created_before=2000-01-01T00:00:00Z",
            Some(&s.access)
        )
        .await
        .expect(200)["total"],
        0
    );
}

both_backends!(
    crud_every_kind,
    threat_normalization_and_filters,
    diagrams_cells_and_image,
    metadata_everywhere,
    threat_score_and_date_filters,
);
