//! Bulk endpoints: threats POST/PUT/PATCH/DELETE, documents/repositories/assets POST and PUT
//! (upsert); limits, and all-or-nothing writes (tmi-compat.md §2.2).

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, Res, Session, TestApp};

async fn new_tm(app: &TestApp, s: &Session) -> String {
    let tm = app
        .post("/threat_models", Some(&s.access), json!({"name": "Bulk"}))
        .await;
    format!("/threat_models/{}", tm.expect(201)["id"].as_str().unwrap())
}

async fn json_request(app: &TestApp, method: Method, path: &str, s: &Session, body: Value) -> Res {
    app.send(
        method,
        path,
        Some(&s.access),
        Some(("application/json", body.to_string().into_bytes())),
        &[],
    )
    .await
}

/// The `name`s of a child list, in creation order, and its total.
async fn names(app: &TestApp, path: &str, s: &Session, key: &str) -> Vec<String> {
    let r = app
        .get(&format!("{path}?sort=created_at:asc&limit=100"), Some(&s.access))
        .await;
    let body = r.expect(200);
    body[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn threats(b: Backend) {
    let app = TestApp::spawn(b).await;
    let s = app.login("alice").await;
    let tm = new_tm(&app, &s).await;
    let list = format!("{tm}/threats");
    let bulk = format!("{tm}/threats/bulk");

    // Create: 201, every item written with its metadata; aliases in order.
    let created = app
        .post(
            &bulk,
            Some(&s.access),
            json!([
                {"name": "A", "threat_type": ["Spoofing"], "severity": "High",
                 "metadata": [{"key": "cwe", "value": "79"}]},
                {"name": "B", "threat_type": []}
            ]),
        )
        .await;
    let created = created.expect(201).clone();
    assert_eq!(created[0]["alias"], 1);
    assert_eq!(created[1]["alias"], 2);
    assert_eq!(created[0]["severity"], "high");
    assert_eq!(created[0]["metadata"], json!([{"key": "cwe", "value": "79"}]));
    let [a, b_id] = <[String; 2]>::try_from(ids(&created)).unwrap();
    assert_eq!(names(&app, &list, &s, "threats").await, ["A", "B"]);
    assert_eq!(
        app.get(&format!("{list}/{a}/metadata"), Some(&s.access))
            .await
            .expect(200),
        &json!([{"key": "cwe", "value": "79"}])
    );

    // Limits and all-or-nothing.
    let many: Vec<Value> = (0..21)
        .map(|i| json!({"name": format!("T{i}"), "threat_type": []}))
        .collect();
    app.post(&bulk, Some(&s.access), json!(many))
        .await
        .expect_error(400, "invalid_input");
    app.post(&bulk, Some(&s.access), json!([]))
        .await
        .expect_error(400, "invalid_input");
    for bad in [
        json!([{"name": "C", "threat_type": []}, {"threat_type": []}]),
        json!([{"name": "C", "threat_type": []}, {"name": "D", "threat_type": [], "id": a}]),
        json!([{"name": "C", "threat_type": []}, {"name": "<script>x</script>", "threat_type": []}]),
        json!([{"name": "C", "threat_type": []}, {"name": "D", "threat_type": [], "score": 1.25}]),
    ] {
        app.post(&bulk, Some(&s.access), bad.clone())
            .await
            .expect_error(400, "invalid_input");
    }
    assert_eq!(
        names(&app, &list, &s, "threats").await,
        ["A", "B"],
        "nothing written"
    );
    let twenty: Vec<Value> = (0..20)
        .map(|i| json!({"name": format!("T{i}"), "threat_type": []}))
        .collect();
    let r = app.post(&bulk, Some(&s.access), json!(twenty)).await;
    let extra = ids(r.expect(201));
    assert_eq!(extra.len(), 20);
    app.send(
        Method::DELETE,
        &format!("{bulk}?threat_ids={}", extra.join(",")),
        Some(&s.access),
        None,
        &[],
    )
    .await
    .expect(200);

    // Update: 200, full replacement of every named threat; an unknown id is a 404, nothing written.
    let r = json_request(
        &app,
        Method::PUT,
        &bulk,
        &s,
        json!([
            {"id": a, "name": "A2", "threat_type": ["Tampering"], "status": "In Progress"},
            {"id": b_id, "name": "B2", "threat_type": []}
        ]),
    )
    .await;
    let updated = r.expect(200);
    assert_eq!(updated[0]["name"], "A2");
    assert_eq!(updated[0]["status"], "in_progress");
    assert_eq!(updated[0]["version"], 2);
    assert_eq!(updated[0]["alias"], 1);
    assert!(updated[0].get("severity").is_none(), "PUT replaces");
    assert_eq!(
        updated[0]["metadata"],
        json!([{"key": "cwe", "value": "79"}]),
        "metadata kept when not sent"
    );
    let ghost = uuid::Uuid::new_v4();
    for (bad, status, code) in [
        (
            json!([{"id": a, "name": "A3", "threat_type": []}, {"id": ghost, "name": "G", "threat_type": []}]),
            404,
            "not_found",
        ),
        (
            json!([{"id": a, "name": "A3", "threat_type": []}, {"id": a, "name": "A4", "threat_type": []}]),
            400,
            "invalid_input",
        ),
        (
            json!([{"id": a, "name": "A3", "threat_type": []}, {"name": "B3", "threat_type": []}]),
            400,
            "invalid_input",
        ),
    ] {
        json_request(&app, Method::PUT, &bulk, &s, bad)
            .await
            .expect_error(status, code);
    }
    assert_eq!(names(&app, &list, &s, "threats").await, ["A2", "B2"]);

    // Patch: 200, each threat gets its own operations, with the single-PATCH allowlist.
    let r = json_request(
        &app,
        Method::PATCH,
        &bulk,
        &s,
        json!({"patches": [
            {"id": a, "operations": [{"op": "replace", "path": "/severity", "value": "Critical"}]},
            {"id": b_id, "operations": [{"op": "replace", "path": "/name", "value": "B3"},
                                        {"op": "add", "path": "/metadata", "value": [{"key": "k", "value": "v"}]}]}
        ]}),
    )
    .await;
    let patched = r.expect(200);
    assert_eq!(patched[0]["severity"], "critical");
    assert_eq!(patched[0]["name"], "A2");
    assert_eq!(patched[1]["name"], "B3");
    assert_eq!(patched[1]["metadata"], json!([{"key": "k", "value": "v"}]));
    for (bad, status, code) in [
        (
            json!({"patches": [
                {"id": a, "operations": [{"op": "replace", "path": "/name", "value": "A9"}]},
                {"id": b_id, "operations": [{"op": "replace", "path": "/id", "value": "x"}]}]}),
            400,
            "invalid_input",
        ),
        (
            json!({"patches": [
                {"id": a, "operations": [{"op": "replace", "path": "/name", "value": "A9"}]},
                {"id": b_id, "operations": [{"op": "remove", "path": "/name"}]}]}),
            400,
            "invalid_input",
        ),
        (
            json!({"patches": [
                {"id": a, "operations": [{"op": "replace", "path": "/name", "value": "A9"}]},
                {"id": ghost, "operations": [{"op": "replace", "path": "/name", "value": "G"}]}]}),
            404,
            "not_found",
        ),
        (
            json!({"patches": [
                {"id": a, "operations": [{"op": "replace", "path": "/name", "value": "A9"}]},
                {"id": b_id, "operations": [{"op": "test", "path": "/name", "value": "nope"}]}]}),
            400,
            "patch_failed",
        ),
        (json!({"patches": []}), 400, "invalid_input"),
    ] {
        json_request(&app, Method::PATCH, &bulk, &s, bad)
            .await
            .expect_error(status, code);
    }
    let too_many: Vec<Value> = (0..21)
        .map(|_| json!({"id": a, "operations": [{"op": "replace", "path": "/name", "value": "x"}]}))
        .collect();
    json_request(&app, Method::PATCH, &bulk, &s, json!({"patches": too_many}))
        .await
        .expect_error(400, "invalid_input");
    assert_eq!(names(&app, &list, &s, "threats").await, ["A2", "B3"]);

    // Delete: 200 with the count and ids; unknown ids, duplicates and bad ids change nothing.
    let delete = |q: String| {
        let (app, s, bulk) = (&app, &s, &bulk);
        async move {
            app.send(Method::DELETE, &format!("{bulk}{q}"), Some(&s.access), None, &[])
                .await
        }
    };
    delete(format!("?threat_ids={a},{ghost}"))
        .await
        .expect_error(404, "not_found");
    delete(format!("?threat_ids={a},{a}"))
        .await
        .expect_error(400, "invalid_input");
    delete("?threat_ids=not-a-uuid".into())
        .await
        .expect_error(400, "invalid_input");
    delete(String::new()).await.expect_error(400, "invalid_input");
    let ids21: Vec<String> = (0..21).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    delete(format!("?threat_ids={}", ids21.join(",")))
        .await
        .expect_error(400, "invalid_input");
    assert_eq!(names(&app, &list, &s, "threats").await.len(), 2);
    let r = delete(format!("?threat_ids={a}&threat_ids={b_id}")).await;
    let body = r.expect(200);
    assert_eq!(body["deleted_count"], 2);
    assert_eq!(body["deleted_ids"], json!([a, b_id]));
    assert!(names(&app, &list, &s, "threats").await.is_empty());
    app.get(&format!("{list}/{a}"), Some(&s.access))
        .await
        .expect_error(404, "not_found");
    // Soft delete: the owner can restore.
    app.send(
        Method::POST,
        &format!("{list}/{a}/restore"),
        Some(&s.access),
        None,
        &[],
    )
    .await
    .expect(200);
}

async fn upserts(b: Backend) {
    let app = TestApp::spawn(b).await;
    let s = app.login("alice").await;
    let tm = new_tm(&app, &s).await;
    let other = new_tm(&app, &s).await;
    for (plural, make, put_status, limit) in [
        (
            "documents",
            (|n: &str| json!({"name": n, "uri": format!("https://e.com/{n}")})) as fn(&str) -> Value,
            201,
            20,
        ),
        (
            "repositories",
            |n| json!({"name": n, "uri": format!("https://e.com/{n}.git")}),
            200,
            20,
        ),
        ("assets", |n| json!({"name": n, "type": "data"}), 200, 50),
    ] {
        let list = format!("{tm}/{plural}");
        let bulk = format!("{list}/bulk");
        let created = app
            .post(&bulk, Some(&s.access), json!([make("one"), make("two")]))
            .await;
        let existing = ids(created.expect(201));
        assert_eq!(names(&app, &list, &s, plural).await, ["one", "two"], "{plural}");

        // Upsert: the existing id is replaced, the new id is created with that id.
        let fresh = uuid::Uuid::new_v4().to_string();
        let with_id = |id: &str, n: &str| {
            let mut v = make(n);
            v["id"] = json!(id);
            v
        };
        let r = json_request(
            &app,
            Method::PUT,
            &bulk,
            &s,
            json!([with_id(&existing[0], "one-v2"), with_id(&fresh, "three")]),
        )
        .await;
        let up = r.expect(put_status).clone();
        assert_eq!(ids(&up), vec![existing[0].clone(), fresh.clone()], "{plural}");
        assert_eq!(up[1]["alias"], 3, "{plural}");
        if plural != "repositories" {
            assert_eq!(up[0]["version"], 2, "{plural}");
            assert_eq!(up[1]["version"], 1, "{plural}");
        }
        assert_eq!(
            names(&app, &list, &s, plural).await,
            ["one-v2", "two", "three"],
            "{plural}"
        );
        app.get(&format!("{list}/{fresh}"), Some(&s.access))
            .await
            .expect(200);

        // An id used under another threat model, an invalid item or a duplicate: nothing written.
        let foreign = app
            .post(&format!("{other}/{plural}"), Some(&s.access), make("elsewhere"))
            .await
            .expect(201)["id"]
            .as_str()
            .unwrap()
            .to_owned();
        json_request(
            &app,
            Method::PUT,
            &bulk,
            &s,
            json!([with_id(&existing[1], "two-v2"), with_id(&foreign, "stolen")]),
        )
        .await
        .expect_error(409, "conflict");
        let mut invalid = with_id(&uuid::Uuid::new_v4().to_string(), "bad");
        invalid["name"] = json!("");
        for bad in [
            json!([with_id(&existing[1], "two-v2"), invalid]),
            json!([with_id(&existing[1], "two-v2"), with_id(&existing[1], "two-v3")]),
            json!([with_id(&existing[1], "two-v2"), make("no id")]),
        ] {
            json_request(&app, Method::PUT, &bulk, &s, bad)
                .await
                .expect_error(400, "invalid_input");
        }
        // A deleted child is not silently revived.
        app.delete(&format!("{list}/{fresh}"), Some(&s.access))
            .await
            .expect(204);
        json_request(
            &app,
            Method::PUT,
            &bulk,
            &s,
            json!([with_id(&existing[1], "two-v2"), with_id(&fresh, "zombie")]),
        )
        .await
        .expect_error(409, "conflict");
        assert_eq!(
            names(&app, &list, &s, plural).await,
            ["one-v2", "two"],
            "{plural}: nothing written"
        );

        // Limits.
        let over: Vec<Value> = (0..=limit).map(|i| make(&format!("n{i}"))).collect();
        app.post(&bulk, Some(&s.access), json!(over))
            .await
            .expect_error(400, "invalid_input");
        let over_put: Vec<Value> = (0..=limit)
            .map(|i| with_id(&uuid::Uuid::new_v4().to_string(), &format!("n{i}")))
            .collect();
        json_request(&app, Method::PUT, &bulk, &s, json!(over_put))
            .await
            .expect_error(400, "invalid_input");
        let at_limit: Vec<Value> = (0..limit).map(|i| make(&format!("n{i}"))).collect();
        assert_eq!(
            app.post(&bulk, Some(&s.access), json!(at_limit))
                .await
                .expect(201)
                .as_array()
                .unwrap()
                .len(),
            limit,
            "{plural}"
        );
    }
    // Notes and diagrams have no bulk endpoints: `bulk` is not an id.
    app.put(
        &format!("{tm}/notes/bulk"),
        Some(&s.access),
        json!({"name": "n", "content": "c"}),
    )
    .await
    .expect_error(400, "invalid_id");
}

both_backends!(threats, upserts);
