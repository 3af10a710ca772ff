//! Service info, probes, metrics, discovery and the placeholder features.

use crate::helpers::{Backend, TestApp};

async fn service_info_and_probes(b: Backend) {
    let app = TestApp::spawn(b).await;
    let info = app.get("/", None).await;
    assert_eq!(info.expect(200)["status"]["code"], "ok");
    assert_eq!(info.body["api"]["version"], "1.8.22");
    assert_eq!(app.get("/livez", None).await.expect(200)["status"], "ok");
    assert_eq!(
        app.get("/readyz", None).await.expect(200)["database"]["status"],
        "healthy"
    );
    app.get("/config", None).await.expect(200);
    let doc = app.get("/openapi.json", None).await;
    assert_eq!(doc.expect(200)["openapi"], "3.0.3");
    let metrics = app.get("/metrics", None).await;
    let text = metrics.body.as_str().unwrap_or_default();
    assert!(text.contains("tmi_http_requests_total"), "{text}");
    for p in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
        "/.well-known/jwks.json",
        "/.well-known/oauth-protected-resource",
    ] {
        let r = app.get(p, None).await;
        r.expect(200);
        assert_eq!(r.header("cache-control").as_deref(), Some("public, max-age=3600"));
    }
    let oidc = app.get("/.well-known/openid-configuration", None).await;
    assert_eq!(
        oidc.body["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(
        app.get("/.well-known/jwks.json", None).await.body["keys"],
        serde_json::json!([])
    );
}

async fn unused_features_are_empty_lists(b: Backend) {
    let app = TestApp::spawn(b).await;
    let s = app.login("alice").await;
    for (path, key) in [
        ("/addons", "addons"),
        ("/intake/surveys?limit=100", "surveys"),
        (
            "/intake/survey_responses?limit=100&status=draft",
            "survey_responses",
        ),
        ("/projects?limit=200", "projects"),
        ("/teams", "teams"),
    ] {
        let r = app.get(path, Some(&s.access)).await;
        assert_eq!(r.expect(200)[key], serde_json::json!([]), "{path}");
        app.get(path, None).await.expect_error(401, "unauthorized");
    }
    assert_eq!(
        app.get("/saml/providers", None).await.expect(200)["providers"],
        serde_json::json!([])
    );
    let sessions = app.get("/me/sessions", Some(&s.access)).await;
    assert!(sessions.expect(200).is_array());
}

async fn preferences(b: Backend) {
    let app = TestApp::spawn(b).await;
    let s = app.login("alice").await;
    assert_eq!(
        app.get("/me/preferences", Some(&s.access)).await.expect(200),
        &serde_json::json!({})
    );
    let prefs = serde_json::json!({"tmi-ux": {"theme": "dark"}});
    app.post("/me/preferences", Some(&s.access), prefs.clone())
        .await
        .expect(201);
    let updated = serde_json::json!({"tmi-ux": {"theme": "light"}});
    assert_eq!(
        app.put("/me/preferences", Some(&s.access), updated.clone())
            .await
            .expect(200),
        &updated
    );
    assert_eq!(
        app.get("/me/preferences", Some(&s.access)).await.expect(200),
        &updated
    );
    app.put(
        "/me/preferences",
        Some(&s.access),
        serde_json::json!({"tmi-ux": 3}),
    )
    .await
    .expect_error(400, "invalid_input");
}

both_backends!(
    service_info_and_probes,
    unused_features_are_empty_lists,
    preferences
);
