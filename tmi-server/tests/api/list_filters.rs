//! Every query parameter of the list operations the contract declares, each applied, with
//! pagination `total` counting the matches: `GET /threat_models` and the child lists.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, Session, TestApp};

/// Names in a list response, in order, and its `total`.
async fn names(app: &TestApp, path: &str, s: &Session, key: &str) -> (Vec<String>, i64) {
    let r = app.get(path, Some(&s.access)).await;
    let body = r.expect(200);
    let names = body[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    (names, body["total"].as_i64().unwrap())
}

fn enc(s: &str) -> String {
    s.replace('%', "%25")
        .replace('+', "%2B")
        .replace(':', "%3A")
        .replace(' ', "%20")
}

async fn threat_model_filters(b: Backend) {
    let app = TestApp::spawn(b).await;
    let alice = app.login("alice").await;
    let bob = app.login("bob").await;
    let rita = app.login("rita").await;
    app.add_to_group("rita", tmi_server::store::groups::SECURITY_REVIEWERS)
        .await;
    let rita = Session {
        access: app.login("rita").await.access,
        ..rita
    };
    let share =
        json!([{"principal_type": "user", "provider": "tmi", "provider_id": "alice", "role": "reader"}]);
    let create = |s: &Session, body: Value| {
        let token = s.access.clone();
        let app = &app;
        async move {
            let r = app.post("/threat_models", Some(&token), body).await;
            format!("/threat_models/{}", r.expect(201)["id"].as_str().unwrap())
        }
    };
    let first = create(
        &alice,
        json!({"name": "Payments", "description": "Card flow at 100% load", "issue_uri": "https://jira.example.com/browse/PAY-1"}),
    )
    .await;
    let before_second = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    create(
        &alice,
        json!({"name": "Identity", "description": "SSO for 1_0 apps", "issue_uri": "https://github.com/x/y/issues/9"}),
    )
    .await;
    create(
        &bob,
        json!({"name": "Bobs", "description": "card", "authorization": share}),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let before_review = chrono::Utc::now();
    // Rita reviews the first model and moves it on.
    app.patch(
        &first,
        Some(&rita.access),
        json!([
            {"op": "replace", "path": "/security_reviewer", "value": {"principal_type": "user", "provider": "tmi", "provider_id": "rita"}},
            {"op": "replace", "path": "/status", "value": "In Progress"}
        ]),
    )
    .await
    .expect(200);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let after_review = chrono::Utc::now();
    let list = |q: String| {
        let app = &app;
        let alice = &alice;
        async move { names(app, &format!("/threat_models?{q}"), alice, "threat_models").await }
    };
    let ts = |t: chrono::DateTime<chrono::Utc>| enc(&t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));

    assert_eq!(list(String::new()).await.1, 3);
    // owner: partial, case-insensitive, on email or display name.
    assert_eq!(list("owner=ALICE@tmi".into()).await.1, 2);
    assert_eq!(
        list("owner=bob%20(tmi".into()).await,
        (vec!["Bobs".to_owned()], 1)
    );
    assert_eq!(list("owner=nobody".into()).await.1, 0);
    // security_reviewer: partial email or name, is:null, is:notnull, unknown operator 400.
    assert_eq!(list("security_reviewer=RITA@".into()).await.0, vec!["Payments"]);
    assert_eq!(
        list("security_reviewer=rita%20(".into()).await.0,
        vec!["Payments"]
    );
    assert_eq!(
        list("security_reviewer=is:notnull".into()).await.0,
        vec!["Payments"]
    );
    assert_eq!(list("security_reviewer=IS:NULL".into()).await.1, 2);
    app.get("/threat_models?security_reviewer=is:banana", Some(&alice.access))
        .await
        .expect_error(400, "invalid_input");
    // status: repeated or comma-separated, normalized.
    assert_eq!(list("status=in_progress".into()).await.0, vec!["Payments"]);
    assert_eq!(list("status=In%20Progress".into()).await.0, vec!["Payments"]);
    assert_eq!(list("status=approved&status=not_started".into()).await.1, 2);
    assert_eq!(list("status=approved,in_progress".into()).await.1, 1);
    // Text filters: partial, case-insensitive, `%` and `_` are literal.
    assert_eq!(list("name=IDENT".into()).await.0, vec!["Identity"]);
    assert_eq!(list("description=CARD".into()).await.1, 2);
    assert_eq!(list("description=100%25".into()).await.0, vec!["Payments"]);
    assert_eq!(list("description=1_0".into()).await.0, vec!["Identity"]);
    assert_eq!(list("description=0".into()).await.1, 2);
    assert_eq!(list("issue_uri=jira.example".into()).await.0, vec!["Payments"]);
    assert_eq!(list("issue_uri=ISSUES/9".into()).await.0, vec!["Identity"]);
    // Time bounds.
    assert_eq!(
        list(format!("created_after={}", ts(before_second))).await.0,
        vec!["Bobs", "Identity"]
    );
    assert_eq!(
        list(format!("created_before={}", ts(before_second))).await.0,
        vec!["Payments"]
    );
    assert_eq!(list(format!("modified_after={}", ts(after_review))).await.1, 0);
    assert_eq!(list(format!("modified_before={}", ts(after_review))).await.1, 3);
    assert_eq!(
        list(format!("status_updated_after={}", ts(before_review)))
            .await
            .0,
        vec!["Payments"],
        "only the reviewed model's status changed since"
    );
    assert_eq!(
        list(format!("status_updated_before={}", ts(before_review)))
            .await
            .1,
        2
    );
    app.get(
        "/threat_models?status_updated_after=yesterday",
        Some(&alice.access),
    )
    .await
    .expect_error(400, "invalid_input");
    // Pagination counts the matches, not the page.
    let (page, total) = list("description=card&limit=1&offset=1".into()).await;
    assert_eq!((page.len(), total), (1, 2));
    // Filters never widen visibility.
    assert_eq!(
        names(&app, "/threat_models?name=Payments", &bob, "threat_models")
            .await
            .1,
        0
    );
}

async fn threat_filters(b: Backend) {
    let app = TestApp::spawn(b).await;
    let s = app.login("alice").await;
    let writer = app.login("walter").await;
    let tm = app
        .post(
            "/threat_models",
            Some(&s.access),
            json!({"name": "P", "authorization": [{"principal_type": "user", "provider": "tmi", "provider_id": "walter", "role": "writer"}]}),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let base = format!("/threat_models/{tm}/threats");
    let diagram = "6f1c3a0e-0000-4000-8000-00000000000d";
    let cell = "6f1c3a0e-0000-4000-8000-00000000000c";
    let bodies = [
        json!({"name": "Spoof login", "description": "Weak MFA on login", "threat_type": ["Spoofing"],
            "severity": "High", "priority": "P1", "status": "Open", "score": 9.1, "mitigated": true,
            "diagram_id": diagram, "cell_id": cell}),
        json!({"name": "Tamper logs", "description": "Log integrity", "threat_type": ["Tampering", "Repudiation"],
            "severity": "low", "priority": "P2", "status": "In Progress", "score": 2.0}),
        json!({"name": "Leak", "threat_type": ["Information Disclosure"], "severity": "critical",
            "status": "closed", "score": 5.5}),
    ];
    let before_last = {
        let mut t = chrono::Utc::now();
        for (i, body) in bodies.iter().enumerate() {
            if i == 2 {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                t = chrono::Utc::now();
            }
            app.post(&base, Some(&s.access), body.clone()).await.expect(201);
        }
        t
    };
    let list = |q: &str| {
        let app = &app;
        let s = &s;
        let path = format!("{base}?{q}");
        async move { names(app, &path, s, "threats").await }
    };
    let ts = enc(&before_last.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));

    assert_eq!(list("").await.0, vec!["Leak", "Tamper logs", "Spoof login"]);
    assert_eq!(list("name=LOG").await.1, 2);
    assert_eq!(list("description=mfa").await.0, vec!["Spoof login"]);
    assert_eq!(list("threat_type=spoofing").await.0, vec!["Spoof login"]);
    assert_eq!(
        list("threat_type=Repudiation&threat_type=Information%20Disclosure")
            .await
            .1,
        2
    );
    assert_eq!(list("threat_type=Spoofing,Tampering").await.1, 2);
    assert_eq!(list("severity=High").await.0, vec!["Spoof login"]);
    assert_eq!(list("severity=high&severity=critical").await.1, 2);
    assert_eq!(list("severity=low,critical").await.1, 2);
    app.get(&format!("{base}?severity=apocalyptic"), Some(&s.access))
        .await
        .expect_error(400, "invalid_input");
    assert_eq!(list("priority=p2").await.0, vec!["Tamper logs"]);
    assert_eq!(list("priority=P1&priority=P2").await.1, 2);
    assert_eq!(list("status=in_progress").await.0, vec!["Tamper logs"]);
    assert_eq!(list("status=Open&status=closed").await.1, 2);
    assert_eq!(list("mitigated=true").await.0, vec!["Spoof login"]);
    assert_eq!(list("mitigated=false").await.1, 2);
    assert_eq!(
        list(&format!("diagram_id={diagram}")).await.0,
        vec!["Spoof login"]
    );
    assert_eq!(list(&format!("cell_id={cell}")).await.0, vec!["Spoof login"]);
    assert_eq!(list("score_gt=5.5").await.0, vec!["Spoof login"]);
    assert_eq!(list("score_ge=5.5").await.1, 2);
    assert_eq!(list("score_lt=5.5").await.0, vec!["Tamper logs"]);
    assert_eq!(list("score_le=5.5").await.1, 2);
    assert_eq!(list("score_eq=9.1").await.0, vec!["Spoof login"]);
    assert_eq!(list("score_gt=1&score_lt=9").await.1, 2);
    assert_eq!(list(&format!("created_after={ts}")).await.0, vec!["Leak"]);
    assert_eq!(list(&format!("created_before={ts}")).await.1, 2);
    assert_eq!(list(&format!("modified_after={ts}")).await.0, vec!["Leak"]);
    assert_eq!(list(&format!("modified_before={ts}")).await.1, 2);
    assert_eq!(
        list("sort=score:asc").await.0,
        vec!["Tamper logs", "Leak", "Spoof login"]
    );
    assert_eq!(
        list("sort=name:desc").await.0,
        vec!["Tamper logs", "Spoof login", "Leak"]
    );
    app.get(&format!("{base}?sort=name:sideways"), Some(&s.access))
        .await
        .expect_error(400, "invalid_input");
    let (page, total) = list("severity=high,low&limit=1&offset=1").await;
    assert_eq!((page, total), (vec!["Spoof login".to_owned()], 2));

    // include_deleted: the owner sees tombstones; a writer may not ask.
    let gone = app
        .get(&format!("{base}?name=leak"), Some(&s.access))
        .await
        .expect(200)["threats"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.delete(&format!("{base}/{gone}"), Some(&s.access))
        .await
        .expect(204);
    assert_eq!(list("").await.1, 2);
    let all = app
        .get(&format!("{base}?include_deleted=true"), Some(&s.access))
        .await;
    let all = all.expect(200);
    assert_eq!(all["total"], 3);
    assert!(
        all["threats"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["deleted_at"].is_string())
    );
    app.get(&format!("{base}?include_deleted=true"), Some(&writer.access))
        .await
        .expect_error(403, "forbidden");
    app.get(&format!("{base}?include_deleted=false"), Some(&writer.access))
        .await
        .expect(200);
}

/// The other kinds take `limit`, `offset` and `include_deleted`.
async fn child_pagination(b: Backend) {
    let app = TestApp::spawn(b).await;
    let s = app.login("alice").await;
    let tm = app
        .post("/threat_models", Some(&s.access), json!({"name": "P"}))
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (plural, body) in [
        ("documents", json!({"name": "D", "uri": "https://e.com/d"})),
        ("notes", json!({"name": "N", "content": "c"})),
        ("assets", json!({"name": "A", "type": "data"})),
        ("repositories", json!({"name": "R", "uri": "https://e.com/r"})),
        ("diagrams", json!({"name": "G", "type": "DFD-1.0.0"})),
    ] {
        let base = format!("/threat_models/{tm}/{plural}");
        let mut ids = Vec::new();
        for i in 0..3 {
            let mut body = body.clone();
            body["name"] = json!(format!("{plural}-{i}"));
            let c = app.post(&base, Some(&s.access), body).await;
            ids.push(c.expect(201)["id"].as_str().unwrap().to_owned());
        }
        let (page, total) = names(&app, &format!("{base}?limit=2&offset=1"), &s, plural).await;
        assert_eq!(
            (page, total),
            (vec![format!("{plural}-1"), format!("{plural}-2")], 3),
            "{plural}: oldest first"
        );
        app.send(
            Method::DELETE,
            &format!("{base}/{}", ids[0]),
            Some(&s.access),
            None,
            &[],
        )
        .await
        .expect(204);
        assert_eq!(names(&app, &base, &s, plural).await.1, 2, "{plural}");
        assert_eq!(
            names(&app, &format!("{base}?include_deleted=true"), &s, plural)
                .await
                .1,
            3,
            "{plural}"
        );
    }
}

both_backends!(threat_model_filters, threat_filters, child_pagination);
