//! The HTTP rules of tmi-compat.md §8: error body, precedence, media types, malformed input,
//! injection, limits, HEAD, CORS, unknown paths and methods.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{Backend, TestApp};

async fn precedence_and_media_types(b: Backend) {
    let app = TestApp::spawn(b).await;
    let s = app.login("alice").await;
    // Malformed path UUIDs are 400 even before authentication.
    app.get("/threat_models/not-a-uuid", None)
        .await
        .expect_error(400, "invalid_id");
    app.get("/threat_models/not-a-uuid", Some(&s.access))
        .await
        .expect_error(400, "invalid_id");
    app.get(
        "/threat_models/00000000-0000-0000-0000-00000000000z/threats",
        Some(&s.access),
    )
    .await
    .expect_error(400, "invalid_id");
    // 415 before 401.
    app.send(
        Method::POST,
        "/threat_models",
        None,
        Some(("text/plain", b"x".to_vec())),
        &[],
    )
    .await
    .expect_error(415, "unsupported_media_type");
    // Malformed and duplicate-key JSON.
    app.send(
        Method::POST,
        "/threat_models",
        Some(&s.access),
        Some(("application/json", b"{\"name\":".to_vec())),
        &[],
    )
    .await
    .expect_error(400, "invalid_input");
    app.send(
        Method::POST,
        "/threat_models",
        Some(&s.access),
        Some(("application/json", br#"{"name":"a","name":"b"}"#.to_vec())),
        &[],
    )
    .await
    .expect_error(400, "invalid_input");
    app.send(
        Method::POST,
        "/threat_models",
        Some(&s.access),
        Some(("application/json", Vec::new())),
        &[],
    )
    .await
    .expect_error(400, "invalid_input");
    // 401 before schema validation.
    app.post("/threat_models", None, json!({"bogus": 1}))
        .await
        .expect_error(401, "unauthorized");
    // Missing parent 404, existing but not shared 403.
    let missing = format!("/threat_models/{}", uuid::Uuid::new_v4());
    app.get(&missing, Some(&s.access))
        .await
        .expect_error(404, "not_found");
    let bob = app.login("bob").await;
    let tm = app
        .post("/threat_models", Some(&bob.access), json!({"name": "Bobs"}))
        .await
        .expect(201)
        .clone();
    let bobs = format!("/threat_models/{}", tm["id"].as_str().unwrap());
    app.get(&bobs, Some(&s.access))
        .await
        .expect_error(403, "forbidden");
    app.get(
        &format!("{bobs}/threats/{}", uuid::Uuid::new_v4()),
        Some(&bob.access),
    )
    .await
    .expect_error(404, "not_found");
    // 406 for an Accept the server cannot produce.
    app.send(
        Method::GET,
        "/threat_models",
        Some(&s.access),
        None,
        &[("accept", "application/xml")],
    )
    .await
    .expect_error(406, "not_acceptable");
}

async fn unknown_paths_and_methods(b: Backend) {
    let app = TestApp::spawn(b).await;
    let s = app.login("alice").await;
    app.get("/no/such/path", None)
        .await
        .expect_error(401, "unauthorized");
    app.get("/no/such/path", Some(&s.access))
        .await
        .expect_error(404, "not_found");
    app.send(Method::DELETE, "/threat_models", Some(&s.access), None, &[])
        .await
        .expect_error(405, "method_not_allowed");
    let head = app
        .send(Method::HEAD, "/threat_models", Some(&s.access), None, &[])
        .await;
    assert_eq!(head.status.as_u16(), 200);
    assert_eq!(
        app.send(Method::HEAD, "/threat_models", None, None, &[])
            .await
            .status
            .as_u16(),
        401
    );
}

async fn injection_limits_and_normalization(b: Backend) {
    let app = TestApp::spawn(b).await;
    let s = app.login("alice").await;
    for name in [
        "<script>alert(1)</script>",
        "x\" onmouseover=\"alert(1)",
        "javascript:alert(1)",
    ] {
        app.post("/threat_models", Some(&s.access), json!({"name": name}))
            .await
            .expect_error(400, "invalid_input");
    }
    app.post(
        "/threat_models",
        Some(&s.access),
        json!({"name": "n".repeat(257)}),
    )
    .await
    .expect_error(400, "invalid_input");
    app.post(
        "/threat_models",
        Some(&s.access),
        json!({"name": "ok", "description": "d".repeat(2049)}),
    )
    .await
    .expect_error(400, "invalid_input");
    app.post(
        "/threat_models",
        Some(&s.access),
        json!({"name": "ok", "issue_uri": "ftp://x"}),
    )
    .await
    .expect_error(400, "invalid_input");
    app.post("/threat_models", Some(&s.access), json!({"name": 5}))
        .await
        .expect_error(400, "invalid_input");
    let tags = app
        .post(
            "/threat_models",
            Some(&s.access),
            json!({"name": "Bold <b>name</b>"}),
        )
        .await;
    assert_eq!(tags.expect(201)["name"], "Bold name", "tags are stripped");
    // Roles in an ACL are normalized before validation.
    let shared = app
        .post(
            "/threat_models",
            Some(&s.access),
            json!({"name": "S", "authorization": [
                {"principal_type": "group", "provider": "tmi", "provider_id": "everyone", "role": "Reader"}
            ]}),
        )
        .await;
    let acl = shared.expect(201)["authorization"].as_array().unwrap().clone();
    assert!(
        acl.iter()
            .any(|e| e["provider_id"] == "everyone" && e["role"] == "reader")
    );
    // Duplicate subjects on create are rejected.
    app.post(
        "/threat_models",
        Some(&s.access),
        json!({"name": "S", "authorization": [
            {"principal_type": "user", "provider": "tmi", "provider_id": "bob", "role": "reader"},
            {"principal_type": "user", "provider": "tmi", "provider_id": "bob", "role": "writer"}
        ]}),
    )
    .await
    .expect_error(400, "invalid_input");
    app.post(
        "/threat_models",
        Some(&s.access),
        json!({"name": "S", "authorization": [
            {"principal_type": "user", "provider": "*", "provider_id": "bob", "role": "reader"}
        ]}),
    )
    .await
    .expect_error(400, "invalid_input");
}

async fn cors_with_credentials(b: Backend) {
    let app = TestApp::spawn(b).await;
    let pre = app
        .send(
            Method::OPTIONS,
            "/threat_models",
            None,
            None,
            &[
                ("origin", "http://localhost:4200"),
                ("access-control-request-method", "PATCH"),
                (
                    "access-control-request-headers",
                    "content-type,cache-control,pragma",
                ),
            ],
        )
        .await;
    assert!(pre.status.is_success(), "{:?}", pre.status);
    assert_eq!(
        pre.header("access-control-allow-origin").as_deref(),
        Some("http://localhost:4200")
    );
    assert_eq!(
        pre.header("access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert!(
        pre.header("access-control-allow-methods")
            .unwrap_or_default()
            .contains("PATCH")
    );
    let allowed = pre
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        allowed.contains("cache-control") && allowed.contains("pragma"),
        "{allowed}"
    );
    let simple = app
        .send(
            Method::GET,
            "/",
            None,
            None,
            &[("origin", "http://localhost:4200")],
        )
        .await;
    let exposed = simple
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        exposed.contains("www-authenticate") && exposed.contains("retry-after"),
        "{exposed}"
    );
    let evil = app
        .send(Method::GET, "/", None, None, &[("origin", "http://evil.example")])
        .await;
    assert!(evil.header("access-control-allow-origin").is_none());
}

async fn nothing_is_a_500(b: Backend) {
    let app = TestApp::spawn(b).await;
    let s = app.login("alice").await;
    let tm = app
        .post("/threat_models", Some(&s.access), json!({"name": "N"}))
        .await
        .expect(201)
        .clone();
    let base = format!("/threat_models/{}", tm["id"].as_str().unwrap());
    let note = app
        .post(
            &format!("{base}/notes"),
            Some(&s.access),
            json!({"name": "n", "content": "c"}),
        )
        .await
        .expect(201)
        .clone();
    type Case<'a> = (Method, String, Option<(&'a str, Vec<u8>)>);
    let cases: Vec<Case> = vec![
        (
            Method::POST,
            format!("{base}/notes"),
            Some((
                "application/json",
                br#"{"name":"n","content":"a\u0000b"}"#.to_vec(),
            )),
        ),
        (
            Method::POST,
            format!("{base}/metadata"),
            Some(("application/json", br#"{"key":"k","value":"\u0000"}"#.to_vec())),
        ),
        (Method::GET, "/threat_models?owner=%00".to_string(), None),
        (
            Method::PATCH,
            base.clone(),
            Some(("application/json-patch+json", b"{}".to_vec())),
        ),
        (
            Method::PATCH,
            base.clone(),
            Some(("application/json-patch+json", br#"[{"op":"replace"}]"#.to_vec())),
        ),
        (
            Method::PATCH,
            base.clone(),
            Some((
                "application/json-patch+json",
                br#"[{"op":"remove","path":"/name"}]"#.to_vec(),
            )),
        ),
        (
            Method::PATCH,
            base.clone(),
            Some((
                "application/json-patch+json",
                br#"[{"op":"replace","path":"/authorization","value":"x"}]"#.to_vec(),
            )),
        ),
        (
            Method::PATCH,
            base.clone(),
            Some((
                "application/json-patch+json",
                br#"[{"op":"replace","path":"/owner","value":null}]"#.to_vec(),
            )),
        ),
        (
            Method::PATCH,
            format!("{base}/notes/{}", note["id"].as_str().unwrap()),
            Some((
                "application/json-patch+json",
                br#"[{"op":"remove","path":"/content"}]"#.to_vec(),
            )),
        ),
        (
            Method::PUT,
            format!("{base}/metadata/k"),
            Some(("application/json", b"[]".to_vec())),
        ),
        (
            Method::POST,
            format!("{base}/threats"),
            Some((
                "application/json",
                br#"{"name":"t","threat_type":[],"score":1e400}"#.to_vec(),
            )),
        ),
        (
            Method::POST,
            "/oauth2/token?idp=tmi".to_string(),
            Some((
                "application/x-www-form-urlencoded",
                b"grant_type=authorization_code&code=%ZZ".to_vec(),
            )),
        ),
        (
            Method::POST,
            "/oauth2/refresh".to_string(),
            Some(("application/json", br#"{"refresh_token":""}"#.to_vec())),
        ),
        (Method::GET, "/oauth2/callback?code=x&state=y".to_string(), None),
    ];
    // Invalid UTF-8 in a filter is decoded lossily: no match, no error.
    assert_eq!(
        app.get("/threat_models?name=%FF%FE", Some(&s.access))
            .await
            .expect(200)["total"],
        0
    );
    for (m, path, body) in cases {
        let r = app.send(m.clone(), &path, Some(&s.access), body, &[]).await;
        assert!(r.status.is_client_error(), "{m} {path}: {} {}", r.status, r.body);
        assert!(
            r.body["error"].is_string(),
            "{m} {path}: TMI error body expected, got {}",
            r.body
        );
    }
}

async fn reviewer_keeps_owner_role(b: Backend) {
    let app = TestApp::spawn(b).await;
    let s = app.login("alice").await;
    app.login("rita").await;
    app.add_to_group("rita", tmi_server::store::groups::SECURITY_REVIEWERS)
        .await;
    let rita = app.login("rita").await;
    let tm = app
        .post("/threat_models", Some(&s.access), json!({"name": "R"}))
        .await
        .expect(201)
        .clone();
    let base = format!("/threat_models/{}", tm["id"].as_str().unwrap());
    app.patch(&base, Some(&rita.access), json!([{"op": "replace", "path": "/security_reviewer", "value": {"principal_type": "user", "provider": "tmi", "provider_id": "rita", "email": "rita@tmi.local", "display_name": "Rita"}}])).await.expect(200);
    let current = app.get(&base, Some(&s.access)).await.expect(200).clone();
    let without: Vec<serde_json::Value> = current["authorization"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["provider_id"] != "rita")
        .cloned()
        .collect();
    app.put(
        &base,
        Some(&s.access),
        json!({"name": "R", "authorization": without}),
    )
    .await
    .expect_error(409, "conflict");
    // A writer may not change the ACL through PUT either.
    let writer_acl =
        json!([{"principal_type": "user", "provider": "tmi", "provider_id": "walter", "role": "writer"}]);
    let mut acl = current["authorization"].as_array().unwrap().clone();
    acl.push(writer_acl[0].clone());
    app.put(&base, Some(&s.access), json!({"name": "R", "authorization": acl}))
        .await
        .expect(200);
    let walter = app.login("walter").await;
    app.put(
        &base,
        Some(&walter.access),
        json!({"name": "R", "authorization": []}),
    )
    .await
    .expect_error(403, "forbidden");
}

both_backends!(
    precedence_and_media_types,
    unknown_paths_and_methods,
    injection_limits_and_normalization,
    cors_with_credentials,
    nothing_is_a_500,
    reviewer_keeps_owner_role,
);
