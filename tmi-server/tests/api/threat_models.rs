//! Threat-model CRUD, defaults, filters, pagination, optimistic locking, JSON Patch, soft delete.

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp};

fn acl_has(tm: &Value, ptype: &str, id: &str, role: &str) -> bool {
    tm["authorization"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["principal_type"] == ptype && e["provider_id"] == id && e["role"] == role)
}

async fn create_get_defaults(b: Backend) {
    let app = TestApp::spawn(b).await;
    let s = app.login("alice").await;
    let res = app
        .post(
            "/threat_models",
            Some(&s.access),
            json!({"name": "Payments", "description": "card flow"}),
        )
        .await;
    let tm = res.expect(201).clone();
    let id = tm["id"].as_str().unwrap();
    assert_eq!(res.header("location"), Some(format!("/threat_models/{id}")));
    assert_eq!(tm["status"], "not_started");
    assert_eq!(tm["threat_model_framework"], "STRIDE");
    assert_eq!(tm["owner"]["provider_id"], "alice");
    assert_eq!(tm["owner"]["email"], "alice@tmi.local");
    assert_eq!(tm["version"], 1);
    assert!(acl_has(&tm, "user", "alice", "owner"));
    assert!(acl_has(&tm, "group", "security-reviewers", "owner"));
    assert!(acl_has(&tm, "group", "tmi-automation", "writer"));
    assert_eq!(tm["threats"], json!([]));
    let got = app.get(&format!("/threat_models/{id}"), Some(&s.access)).await;
    assert_eq!(got.expect(200)["name"], "Payments");
    let head = app
        .send(
            reqwest::Method::HEAD,
            &format!("/threat_models/{id}"),
            Some(&s.access),
            None,
            &[],
        )
        .await;
    assert_eq!(head.status.as_u16(), 200);
    assert!(head.body.is_null());

    let conf = app
        .post(
            "/threat_models",
            Some(&s.access),
            json!({"name": "Secret", "is_confidential": true, "threat_model_framework": "LINDDUN"}),
        )
        .await;
    let conf = conf.expect(201);
    assert!(acl_has(conf, "group", "confidential-project-reviewers", "owner"));
    assert_eq!(conf["threat_model_framework"], "LINDDUN");
    app.post(
        "/threat_models",
        Some(&s.access),
        json!({"name": "X", "threat_model_framework": "OWASP"}),
    )
    .await
    .expect_error(400, "invalid_input");
}

async fn list_filters_and_pagination(b: Backend) {
    let app = TestApp::spawn(b).await;
    let alice = app.login("alice").await;
    let bob = app.login("bob").await;
    for i in 0..3 {
        app.post(
            "/threat_models",
            Some(&alice.access),
            json!({"name": format!("A{i}")}),
        )
        .await
        .expect(201);
    }
    app.post("/threat_models", Some(&bob.access), json!({"name": "B0"}))
        .await
        .expect(201);
    let dashboard = "/threat_models?limit=25&offset=0&owner=alice@tmi.local&status=not_started,active,in_progress,pending_review,remediation_required,remediation_in_progress,verification_pending,approved";
    let list = app.get(dashboard, Some(&alice.access)).await;
    let list = list.expect(200);
    assert_eq!(list["total"], 3);
    assert_eq!(list["limit"], 25);
    let names: Vec<&str> = list["threat_models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["A2", "A1", "A0"], "newest first");
    assert_eq!(list["threat_models"][0]["threat_count"], 0);
    let page = app
        .get("/threat_models?limit=2&offset=2", Some(&alice.access))
        .await;
    assert_eq!(page.expect(200)["threat_models"].as_array().unwrap().len(), 1);
    // Bob sees only his own.
    assert_eq!(
        app.get("/threat_models", Some(&bob.access)).await.expect(200)["total"],
        1
    );
    assert_eq!(
        app.get("/threat_models?status=approved", Some(&alice.access))
            .await
            .expect(200)["total"],
        0
    );
    app.get("/threat_models?limit=0", Some(&alice.access))
        .await
        .expect_error(400, "invalid_input");
    app.get("/threat_models?limit=101", Some(&alice.access))
        .await
        .expect_error(400, "invalid_input");
    app.get("/threat_models?limit=abc", Some(&alice.access))
        .await
        .expect_error(400, "invalid_input");
}

async fn update_with_if_match(b: Backend) {
    let app = TestApp::spawn(b).await;
    let s = app.login("alice").await;
    let tm = app
        .post("/threat_models", Some(&s.access), json!({"name": "V"}))
        .await
        .expect(201)
        .clone();
    let path = format!("/threat_models/{}", tm["id"].as_str().unwrap());
    let body = json!({"name": "V2", "description": "d", "threat_model_framework": "CIA"});
    let ok = app
        .send(
            reqwest::Method::PUT,
            &path,
            Some(&s.access),
            Some(("application/json", body.to_string().into_bytes())),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(ok.expect(200)["version"], 2);
    assert_eq!(ok.header("etag").as_deref(), Some("\"2\""));
    let stale = app
        .send(
            reqwest::Method::PUT,
            &path,
            Some(&s.access),
            Some(("application/json", body.to_string().into_bytes())),
            &[("if-match", "1")],
        )
        .await;
    stale.expect_error(409, "version_mismatch");
    let bad = app
        .send(
            reqwest::Method::PUT,
            &path,
            Some(&s.access),
            Some(("application/json", body.to_string().into_bytes())),
            &[("if-match", "abc")],
        )
        .await;
    bad.expect_error(400, "invalid_if_match");
    let missing = app.put(&path, Some(&s.access), body.clone()).await;
    missing.expect(200);
    assert_eq!(missing.header("deprecation").as_deref(), Some("true"));
    // Prohibited and unknown fields, immutable confidentiality.
    app.put(&path, Some(&s.access), json!({"name": "x", "id": tm["id"]}))
        .await
        .expect_error(400, "invalid_input");
    app.put(&path, Some(&s.access), json!({"name": "x", "bogus": 1}))
        .await
        .expect_error(400, "invalid_input");
    app.put(
        &path,
        Some(&s.access),
        json!({"name": "x", "is_confidential": true}),
    )
    .await
    .expect_error(400, "invalid_input");
    app.post(
        "/threat_models",
        Some(&s.access),
        json!({"name": "x", "owner": "bob"}),
    )
    .await
    .expect_error(400, "invalid_input");
}

async fn json_patch(b: Backend) {
    let app = TestApp::spawn(b).await;
    let s = app.login("alice").await;
    let bob = app.login("bob").await;
    let tm = app
        .post("/threat_models", Some(&s.access), json!({"name": "P"}))
        .await
        .expect(201)
        .clone();
    let path = format!("/threat_models/{}", tm["id"].as_str().unwrap());
    let r = app
        .patch(
            &path,
            Some(&s.access),
            json!([
                {"op": "test", "path": "/name", "value": "P"},
                {"op": "replace", "path": "/name", "value": "P2"},
                {"op": "replace", "path": "/description", "value": "patched"},
                {"op": "add", "path": "/metadata/-", "value": {"key": "env", "value": "prod"}}
            ]),
        )
        .await;
    let r = r.expect(200);
    assert_eq!(r["name"], "P2");
    assert_eq!(r["metadata"], json!([{"key": "env", "value": "prod"}]));
    app.patch(
        &path,
        Some(&s.access),
        json!([{"op": "test", "path": "/name", "value": "nope"}]),
    )
    .await
    .expect_error(400, "patch_failed");
    app.patch(
        &path,
        Some(&s.access),
        json!([{"op": "replace", "path": "/id", "value": "x"}]),
    )
    .await
    .expect_error(400, "invalid_input");
    app.patch(
        &path,
        Some(&s.access),
        json!([{"op": "replace", "path": "/created_at", "value": "x"}]),
    )
    .await
    .expect_error(400, "invalid_input");
    app.patch(
        &path,
        Some(&s.access),
        json!([{"op": "replace", "path": "/name", "value": ""}]),
    )
    .await
    .expect_error(400, "invalid_input");
    // Status is for security reviewers.
    app.patch(
        &path,
        Some(&s.access),
        json!([{"op": "replace", "path": "/status", "value": "active"}]),
    )
    .await
    .expect_error(403, "forbidden");
    // application/json is the wrong media type for a single-resource PATCH.
    let wrong = app
        .send(
            reqwest::Method::PATCH,
            &path,
            Some(&s.access),
            Some(("application/json", b"[]".to_vec())),
            &[],
        )
        .await;
    wrong.expect_error(415, "unsupported_media_type");
    // Sharing through /authorization, then ownership transfer keeps the old owner.
    let shared = app.patch(&path, Some(&s.access), json!([{"op": "add", "path": "/authorization/-", "value": {"principal_type": "user", "provider": "tmi", "provider_id": "bob", "role": "writer"}}])).await;
    assert!(acl_has(shared.expect(200), "user", "bob", "writer"));
    // A writer cannot change the ACL.
    app.patch(&path, Some(&bob.access), json!([{"op": "add", "path": "/authorization/-", "value": {"principal_type": "user", "provider": "tmi", "provider_id": "eve", "role": "owner"}}])).await.expect_error(403, "forbidden");
    app.patch(&path, Some(&bob.access), json!([{"op": "replace", "path": "/owner", "value": {"principal_type": "user", "provider": "tmi", "provider_id": "bob", "email": "bob@tmi.local", "display_name": "Bob"}}])).await.expect_error(403, "forbidden");
    let moved = app.patch(&path, Some(&s.access), json!([{"op": "replace", "path": "/owner", "value": {"principal_type": "user", "provider": "tmi", "provider_id": "bob", "email": "bob@tmi.local", "display_name": "Bob"}}])).await;
    let moved = moved.expect(200);
    assert_eq!(moved["owner"]["provider_id"], "bob");
    assert!(acl_has(moved, "user", "alice", "owner"));
}

async fn reviewer_sets_status(b: Backend) {
    let app = TestApp::spawn(b).await;
    let s = app.login("alice").await;
    let rev = app.login("rita").await;
    app.add_to_group("rita", tmi_server::store::groups::SECURITY_REVIEWERS)
        .await;
    let rev = app.login(&rev.hint).await;
    let tm = app
        .post("/threat_models", Some(&s.access), json!({"name": "R"}))
        .await
        .expect(201)
        .clone();
    let path = format!("/threat_models/{}", tm["id"].as_str().unwrap());
    // The reviewer group owns every new model, so rita can read and patch it.
    let r = app.patch(&path, Some(&rev.access), json!([
        {"op": "replace", "path": "/status", "value": "In Progress"},
        {"op": "replace", "path": "/security_reviewer", "value": {"principal_type": "user", "provider": "tmi", "provider_id": "rita", "email": "rita@tmi.local", "display_name": "Rita"}}
    ])).await;
    let r = r.expect(200);
    assert_eq!(r["security_reviewer"]["provider_id"], "rita");
    let list = app
        .get(
            "/threat_models?security_reviewer=rita@tmi.local",
            Some(&rev.access),
        )
        .await;
    assert_eq!(list.expect(200)["total"], 1);
}

async fn soft_delete_and_restore(b: Backend) {
    let app = TestApp::spawn(b).await;
    let s = app.login("alice").await;
    let tm = app
        .post("/threat_models", Some(&s.access), json!({"name": "D"}))
        .await
        .expect(201)
        .clone();
    let id = tm["id"].as_str().unwrap();
    let path = format!("/threat_models/{id}");
    let threat = app
        .post(
            &format!("{path}/threats"),
            Some(&s.access),
            json!({"name": "T", "threat_type": []}),
        )
        .await
        .expect(201)
        .clone();
    app.delete(&path, Some(&s.access)).await.expect(204);
    app.get(&path, Some(&s.access))
        .await
        .expect_error(404, "not_found");
    app.get(
        &format!("{path}/threats/{}", threat["id"].as_str().unwrap()),
        Some(&s.access),
    )
    .await
    .expect_error(404, "not_found");
    assert_eq!(
        app.get("/threat_models", Some(&s.access)).await.expect(200)["total"],
        0
    );
    let restored = app
        .post(&format!("{path}/restore"), Some(&s.access), json!({}))
        .await;
    assert_eq!(restored.expect(200)["id"], id);
    assert_eq!(
        app.get(&path, Some(&s.access)).await.expect(200)["threats"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

both_backends!(
    create_get_defaults,
    list_filters_and_pagination,
    update_with_if_match,
    json_patch,
    reviewer_sets_status,
    soft_delete_and_restore
);
