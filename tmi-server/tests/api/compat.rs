//! Upstream TMI's behaviour where its clients and its own API tests depend on it (the choices are
//! listed in `docs/server.md`, "Differences from the contract"): each scenario sends what
//! upstream's tests send and checks what upstream answers.

use serde_json::json;

use crate::helpers::{Backend, Options, Session, TestApp};
use crate::pgdb::TestDatabase;

async fn new_tm(app: &TestApp, s: &Session) -> String {
    let tm = app
        .post("/threat_models", Some(&s.access), json!({"name": "Parent"}))
        .await;
    format!("/threat_models/{}", tm.expect(201)["id"].as_str().unwrap())
}

/// Upstream's workflow tests create and replace threats without `threat_type`: 201 with `[]`.
async fn threat_without_threat_type(b: Backend) {
    let app = TestApp::spawn(b).await;
    let s = app.login("alice").await;
    let tm = new_tm(&app, &s).await;
    let created = app
        .post(
            &format!("{tm}/threats"),
            Some(&s.access),
            json!({"name": "Spoof"}),
        )
        .await;
    let c = created.expect(201);
    assert_eq!(c["threat_type"], json!([]));
    let item = format!("{tm}/threats/{}", c["id"].as_str().unwrap());
    let put = app
        .put(
            &item,
            Some(&s.access),
            json!({"name": "Spoof 2", "severity": "High"}),
        )
        .await;
    assert_eq!(put.expect(200)["threat_type"], json!([]));
    let bulk = app
        .post(
            &format!("{tm}/threats/bulk"),
            Some(&s.access),
            json!([{"name": "A"}, {"name": "B", "threat_type": ["Tampering"]}]),
        )
        .await;
    let bulk = bulk.expect(201);
    assert_eq!(bulk[0]["threat_type"], json!([]));
    assert_eq!(bulk[1]["threat_type"], json!(["Tampering"]));
    // A missing threat model or threat is a 404 for the body upstream's tests send.
    let missing_tm = format!("/threat_models/{}", uuid::Uuid::new_v4());
    app.post(
        &format!("{missing_tm}/threats"),
        Some(&s.access),
        json!({"name": "X"}),
    )
    .await
    .expect_error(404, "not_found");
    let missing = format!("{tm}/threats/{}", uuid::Uuid::new_v4());
    app.put(&missing, Some(&s.access), json!({"name": "X"}))
        .await
        .expect_error(404, "not_found");
    // A name is still required.
    app.post(
        &format!("{tm}/threats"),
        Some(&s.access),
        json!({"severity": "high"}),
    )
    .await
    .expect_error(400, "invalid_input");
}

/// Upstream's asset tests post an `owner` field: upstream ignores unknown fields (201), on create
/// and update, while server-owned fields stay refused.
async fn unknown_fields_are_ignored(b: Backend) {
    let app = TestApp::spawn(b).await;
    let s = app.login("alice").await;
    let tm = new_tm(&app, &s).await;
    let created = app
        .post(
            &format!("{tm}/assets"),
            Some(&s.access),
            json!({"name": "DB", "type": "data", "owner": "alice@example.com"}),
        )
        .await;
    let c = created.expect(201).clone();
    assert!(c.get("owner").is_none());
    let item = format!("{tm}/assets/{}", c["id"].as_str().unwrap());
    let put = app
        .put(
            &item,
            Some(&s.access),
            json!({"name": "DB2", "type": "data", "owner": "bob@example.com"}),
        )
        .await;
    assert_eq!(put.expect(200)["name"], "DB2");
    let threat = app
        .post(
            &format!("{tm}/threats"),
            Some(&s.access),
            json!({"name": "T", "threat_type": [], "created_by": "x"}),
        )
        .await;
    threat.expect(201);
    for body in [
        json!({"name": "DB", "type": "data", "id": uuid::Uuid::new_v4()}),
        json!({"name": "DB", "type": "data", "created_at": "2024-01-01T00:00:00Z"}),
    ] {
        app.post(&format!("{tm}/assets"), Some(&s.access), body)
            .await
            .expect_error(400, "invalid_input");
    }
}

/// A JSON Patch whose `test` operation fails answers 400 `patch_failed` (upstream), not 409, on
/// threat models and children; nothing is written.
async fn failed_patch_test_is_400(b: Backend) {
    let app = TestApp::spawn(b).await;
    let s = app.login("alice").await;
    let tm = new_tm(&app, &s).await;
    let failing = json!([
        {"op": "test", "path": "/name", "value": "not the name"},
        {"op": "replace", "path": "/name", "value": "changed"}
    ]);
    app.patch(&tm, Some(&s.access), failing.clone())
        .await
        .expect_error(400, "patch_failed");
    assert_eq!(app.get(&tm, Some(&s.access)).await.expect(200)["name"], "Parent");
    let threat = app
        .post(&format!("{tm}/threats"), Some(&s.access), json!({"name": "T"}))
        .await;
    let item = format!("{tm}/threats/{}", threat.expect(201)["id"].as_str().unwrap());
    app.patch(&item, Some(&s.access), failing)
        .await
        .expect_error(400, "patch_failed");
    assert_eq!(app.get(&item, Some(&s.access)).await.expect(200)["name"], "T");
}

/// Response bodies carry what upstream always sends: a threat's `mitigated` and `auto_generated`
/// (false when unset), a diagram's `image` (`{}`) and `auto_generated`; `/config` lists the
/// built-in `http` content provider.
async fn responses_carry_upstreams_fields(b: Backend) {
    let app = TestApp::spawn(b).await;
    let s = app.login("alice").await;
    let tm = new_tm(&app, &s).await;
    let threat = app
        .post(&format!("{tm}/threats"), Some(&s.access), json!({"name": "T"}))
        .await;
    let t = threat.expect(201).clone();
    assert_eq!(
        (&t["mitigated"], &t["auto_generated"]),
        (&json!(false), &json!(false))
    );
    let item = format!("{tm}/threats/{}", t["id"].as_str().unwrap());
    let got = app.get(&item, Some(&s.access)).await;
    assert_eq!(got.expect(200)["mitigated"], false);
    let put = app
        .put(&item, Some(&s.access), json!({"name": "T", "mitigated": true}))
        .await;
    assert_eq!(put.expect(200)["mitigated"], true);
    let diagram = app
        .post(
            &format!("{tm}/diagrams"),
            Some(&s.access),
            json!({"name": "DFD", "type": "DFD-1.0.0"}),
        )
        .await;
    let d = diagram.expect(201).clone();
    assert_eq!((&d["image"], &d["auto_generated"]), (&json!({}), &json!(false)));
    let d_path = format!("{tm}/diagrams/{}", d["id"].as_str().unwrap());
    assert_eq!(
        app.get(&d_path, Some(&s.access)).await.expect(200)["image"],
        json!({})
    );
    let full = app.get(&tm, Some(&s.access)).await;
    assert_eq!(full.expect(200)["threats"][0]["mitigated"], true);
    let config = app.get("/config", None).await;
    let providers = config.expect(200)["content_providers"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        providers,
        vec![json!({"id": "http", "name": "HTTP", "kind": "direct", "icon": "fa-solid fa-globe"})]
    );
}

/// Public paths and method mismatches as upstream answers them: an unknown `/.well-known/` path is
/// a 404 without a token, introspection without a token is a 400, and a PUT of malformed JSON on a
/// metadata collection is a 400 (a well-formed one is still 405).
async fn public_paths_and_method_mismatches(b: Backend) {
    let app = TestApp::spawn(b).await;
    let s = app.login("alice").await;
    app.get("/.well-known/no-such-document", None)
        .await
        .expect_error(404, "not_found");
    app.get("/.well-known/openid-configuration", None)
        .await
        .expect(200);
    app.get("/no/such/path", None)
        .await
        .expect_error(401, "unauthorized");
    for body in ["", "token="] {
        app.send(
            reqwest::Method::POST,
            "/oauth2/introspect",
            None,
            Some(("application/x-www-form-urlencoded", body.as_bytes().to_vec())),
            &[],
        )
        .await
        .expect_error(400, "invalid_request");
    }
    let tm = new_tm(&app, &s).await;
    let collection = format!("{tm}/metadata");
    let put = |bytes: &'static str| {
        app.send(
            reqwest::Method::PUT,
            &collection,
            Some(&s.access),
            Some(("application/json", bytes.as_bytes().to_vec())),
            &[],
        )
    };
    put("{not json").await.expect_error(400, "invalid_input");
    put(r#"[{"key": "k", "value": "v"}]"#)
        .await
        .expect_error(405, "method_not_allowed");
}

/// Every operation the contract defines under a prefix of `layers::PUBLIC_PREFIXES` is public, so
/// answering 404 there without a token reveals nothing a token would hide.
#[test]
fn public_prefixes_hold_only_public_operations() {
    let templates = crate::helpers::CONTRACT.templates();
    for prefix in tmi_server::layers::PUBLIC_PREFIXES {
        let under: Vec<&String> = templates.iter().filter(|t| t.starts_with(prefix)).collect();
        assert!(!under.is_empty(), "{prefix}");
        for t in under {
            for m in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
                if let Some(op) = crate::helpers::CONTRACT.operation(m, t) {
                    assert!(op.public, "{m} {t} is not public");
                }
            }
        }
    }
}

/// `/me/preferences` as the contract describes it: creating preferences twice is a 409 (PUT
/// replaces), client keys are 1-64 letters, digits, `_` or `-`, and a document is at most 1 KiB.
async fn preferences_follow_the_contract(b: Backend) {
    let app = TestApp::spawn(b).await;
    let s = app.login("alice").await;
    let prefs = json!({"tmi-ux": {"theme": "dark"}});
    app.post("/me/preferences", Some(&s.access), prefs.clone())
        .await
        .expect(201);
    app.post(
        "/me/preferences",
        Some(&s.access),
        json!({"tmi-ux": {"theme": "light"}}),
    )
    .await
    .expect_error(409, "conflict");
    assert_eq!(
        app.get("/me/preferences", Some(&s.access)).await.expect(200),
        &prefs
    );
    for bad in [
        json!({"bad key": {}}),
        json!({"k".repeat(65): {}}),
        json!({"tmi-ux": {"blob": "x".repeat(1100)}}),
    ] {
        app.put("/me/preferences", Some(&s.access), bad.clone())
            .await
            .expect_error(400, "invalid_input");
        let bob = app.login("bob").await;
        app.post("/me/preferences", Some(&bob.access), bad)
            .await
            .expect_error(400, "invalid_input");
    }
    assert_eq!(
        app.get("/me/preferences", Some(&s.access)).await.expect(200),
        &prefs
    );
    let replaced = json!({"tmi-ux": {"theme": "light"}, "tmi_cli": {"color": true}});
    app.put("/me/preferences", Some(&s.access), replaced.clone())
        .await
        .expect(200);
    assert_eq!(
        app.get("/me/preferences", Some(&s.access)).await.expect(200),
        &replaced
    );
}

/// Document and repository `uri`s are absolute http(s) URLs with a valid host, so that responses
/// satisfy `format: uri`; hosts are not resolved (a name that does not resolve is accepted).
async fn uris_are_absolute_http_urls(b: Backend) {
    let app = TestApp::spawn(b).await;
    let s = app.login("alice").await;
    let tm = new_tm(&app, &s).await;
    for plural in ["documents", "repositories"] {
        let path = format!("{tm}/{plural}");
        for bad in [
            "ftp://example.com/file",
            "https://",
            "https://exa_mple.com/x",
            "https://host:99999/x",
            "file:///etc/passwd",
        ] {
            app.post(&path, Some(&s.access), json!({"name": "D", "uri": bad}))
                .await
                .expect_error(400, "invalid_input");
        }
        let ok = app
            .post(
                &path,
                Some(&s.access),
                json!({"name": "D", "uri": "https://does-not-resolve.invalid/x"}),
            )
            .await;
        let item = format!("{path}/{}", ok.expect(201)["id"].as_str().unwrap());
        app.patch(
            &item,
            Some(&s.access),
            json!([{"op": "replace", "path": "/uri", "value": "gopher://example.com/"}]),
        )
        .await
        .expect_error(400, "invalid_input");
    }
}

/// Optimistic locking is the same on every resource, a deliberate difference from upstream (which
/// ignores `If-Match` on `PUT /threat_models/{id}`): a stale `If-Match` is 409 `version_mismatch`
/// on the threat model and on all six children, including notes and repositories, whose version is
/// only visible as the `ETag` of a write.
async fn if_match_is_uniform(b: Backend) {
    let app = TestApp::spawn(b).await;
    let s = app.login("alice").await;
    let tm = new_tm(&app, &s).await;
    let put_if = |path: String, body: serde_json::Value, tag: &'static str| {
        let token = s.access.clone();
        let app = &app;
        async move {
            app.send(
                reqwest::Method::PUT,
                &path,
                Some(&token),
                Some(("application/json", body.to_string().into_bytes())),
                &[("if-match", tag)],
            )
            .await
        }
    };
    put_if(tm.clone(), json!({"name": "P2"}), "\"7\"")
        .await
        .expect_error(409, "version_mismatch");
    for (plural, body) in [
        ("notes", json!({"name": "N", "content": "c"})),
        (
            "repositories",
            json!({"name": "R", "uri": "https://example.com/r"}),
        ),
        ("threats", json!({"name": "T"})),
    ] {
        let created = app
            .post(&format!("{tm}/{plural}"), Some(&s.access), body.clone())
            .await;
        let item = format!("{tm}/{plural}/{}", created.expect(201)["id"].as_str().unwrap());
        let first = app.put(&item, Some(&s.access), body.clone()).await;
        first.expect(200);
        assert_eq!(first.header("etag").as_deref(), Some("\"2\""), "{plural}");
        put_if(item.clone(), body.clone(), "1")
            .await
            .expect_error(409, "version_mismatch");
        put_if(item.clone(), body.clone(), "\"2\"").await.expect(200);
        let stale_patch = app
            .send(
                reqwest::Method::PATCH,
                &item,
                Some(&s.access),
                Some((
                    "application/json-patch+json",
                    json!([{"op": "replace", "path": "/name", "value": "x"}])
                        .to_string()
                        .into_bytes(),
                )),
                &[("if-match", "2")],
            )
            .await;
        stale_patch.expect_error(409, "version_mismatch");
    }
}

both_backends!(
    threat_without_threat_type,
    unknown_fields_are_ignored,
    failed_patch_test_is_400,
    responses_carry_upstreams_fields,
    public_paths_and_method_mismatches,
    preferences_follow_the_contract,
    uris_are_absolute_http_urls,
    if_match_is_uniform,
);

/// Runs `sql` on `TMI_TEST_DATABASE_URL`'s database.
async fn admin_execute(sql: &str) {
    let admin = std::env::var("TMI_TEST_DATABASE_URL").unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&admin)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

/// Upstream sets `default_transaction_isolation = 'serializable'` on its database role. On such a
/// role, 32 concurrent creates in one threat model (which all bump the same alias counter) abort
/// with 40001; every request must still succeed, because the store runs them again.
#[tokio::test]
async fn serialization_failures_are_retried() {
    let db = TestDatabase::create("tmi_serializable").await;
    let role = format!("tmi_ser_{}", uuid::Uuid::new_v4().simple());
    admin_execute(&format!("CREATE ROLE {role} LOGIN")).await;
    admin_execute(&format!(
        "ALTER ROLE {role} SET default_transaction_isolation = 'serializable'"
    ))
    .await;
    let name = db
        .url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    admin_execute(&format!("ALTER DATABASE {name} OWNER TO {role}")).await;
    // The database's URL with the role as its user.
    let (scheme, rest) = db.url.split_once("://").unwrap();
    let host = rest.split_once('@').map_or(rest, |(_, h)| h);
    let url = format!("{scheme}://{role}@{host}");
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        Options {
            redis: false,
            vars: vec![("TMI_DATABASE_URL", url), ("TMI_DB_MAX_OPEN_CONNS", "16".into())],
            ..Default::default()
        },
    )
    .await;
    let s = app.login("alice").await;
    let tm = new_tm(&app, &s).await;
    let before = tmi_server::store::retry::retries();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..32 {
        let (client, base, token, tm) = (app.client.clone(), app.base.clone(), s.access.clone(), tm.clone());
        tasks.spawn(async move {
            let mut statuses = Vec::new();
            for j in 0..4 {
                let r = client
                    .post(format!("{base}{tm}/threats"))
                    .bearer_auth(&token)
                    .json(&json!({"name": format!("T{i}-{j}")}))
                    .send()
                    .await
                    .unwrap();
                statuses.push(r.status().as_u16());
            }
            statuses
        });
    }
    let mut statuses = Vec::new();
    while let Some(r) = tasks.join_next().await {
        statuses.extend(r.unwrap());
    }
    assert!(statuses.iter().all(|s| *s == 201), "statuses: {statuses:?}");
    let list = app.get(&format!("{tm}/threats?limit=100"), Some(&s.access)).await;
    let list = list.expect(200).clone();
    assert_eq!(list["total"], 128);
    let mut aliases: Vec<i64> = list["threats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["alias"].as_i64().unwrap())
        .collect();
    aliases.sort_unstable();
    aliases.dedup();
    assert_eq!(aliases.len(), 100, "aliases are unique");
    assert!(
        tmi_server::store::retry::retries() > before,
        "the role really ran serializable transactions that conflicted"
    );
    drop(app);
    drop(db);
    admin_execute(&format!("DROP ROLE IF EXISTS {role}")).await;
}
