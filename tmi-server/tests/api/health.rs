//! Service info, probes, metrics, discovery and the placeholder features; readiness while the
//! configured Redis is unreachable.

use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::helpers::{Backend, Options, Res, TestApp, redis_url};

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

/// A TCP relay to the test Redis on a fixed port that can be closed (the port refuses connections
/// and every relayed connection is cut) and opened again, to play a Redis outage.
struct RedisSwitch {
    port: u16,
    target: String,
    relay: Option<JoinSet<()>>,
}

impl RedisSwitch {
    async fn new() -> Self {
        let target = redis_url()
            .trim_start_matches("redis://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let mut switch = RedisSwitch {
            port,
            target,
            relay: None,
        };
        switch.open().await;
        switch
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn open(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        let target = self.target.clone();
        let mut relay = JoinSet::new();
        relay.spawn(async move {
            // Connections live in this set, so that dropping it (close) cuts them all.
            let mut connections = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        self.relay = Some(relay);
    }

    async fn close(&mut self) {
        if let Some(mut relay) = self.relay.take() {
            relay.shutdown().await;
        }
    }
}

/// Polls `path` until it answers `status` (or fails after `within`).
async fn eventually(app: &TestApp, path: &str, status: u16, within: Duration) -> Res {
    let start = Instant::now();
    loop {
        let r = app.get(path, None).await;
        if r.status.as_u16() == status || start.elapsed() > within {
            assert_eq!(r.status.as_u16(), status, "{path} after {within:?}: {}", r.body);
            return r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `/readyz` follows the configured Redis (token store and collaboration): 503 while its port is
/// closed, 200 again once it answers; `/livez` stays 200 and `/` reports `degraded`.
async fn readiness_follows_redis(b: Backend) {
    let mut redis = RedisSwitch::new().await;
    let app = TestApp::spawn_with(
        b,
        Options {
            redis: true,
            vars: vec![
                ("TMI_REDIS_URL", redis.url()),
                (
                    "TMI_REDIS_KEY_PREFIX",
                    format!("test:{}:", uuid::Uuid::new_v4().simple()),
                ),
            ],
            ..Default::default()
        },
    )
    .await;
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.expect(200)["redis"]["status"], "healthy");

    redis.close().await;
    let down = eventually(&app, "/readyz", 503, Duration::from_secs(10)).await;
    assert_eq!(down.body["redis"]["status"], "unhealthy", "{}", down.body);
    assert_eq!(down.body["database"]["status"], "healthy");
    assert_eq!(app.get("/livez", None).await.expect(200)["status"], "ok");
    let info = app.get("/", None).await;
    assert_eq!(info.expect(200)["status"]["code"], "degraded");
    assert_eq!(info.body["health"]["redis"]["status"], "unhealthy");

    redis.open().await;
    let up = eventually(&app, "/readyz", 200, Duration::from_secs(30)).await;
    assert_eq!(up.body["redis"]["status"], "healthy");
    assert_eq!(app.get("/", None).await.expect(200)["status"]["code"], "ok");
    // The token store works again: a full login goes through Redis.
    let s = app.login("alice").await;
    app.get("/me", Some(&s.access)).await.expect(200);
}

/// A Redis that does not answer at start does not stop the server (unlike TMI, which exits and so
/// crash-loops until Redis is back): it serves, `/readyz` answers 503 without revealing the
/// password, and it becomes ready once Redis answers. Independent of the database, so it runs once.
#[tokio::test]
async fn unreachable_redis_at_start() {
    async fn start(redis_url: String) -> (String, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}/tmi.db", dir.path().display());
        let vars: std::collections::HashMap<String, String> = [
            ("TMI_DATABASE_URL", db),
            ("TMI_BUILD_MODE", "test".into()),
            ("TMI_JWT_SECRET", "integration-test-secret-0123456789".into()),
            ("TMI_DATA_DIR", dir.path().display().to_string()),
            ("TMI_REDIS_URL", redis_url),
            (
                "TMI_REDIS_KEY_PREFIX",
                format!("test:{}:", uuid::Uuid::new_v4().simple()),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let config = tmi_server::config::Config::from_vars(&vars).unwrap();
        let state = tmi_server::build_state(config)
            .await
            .expect("the server starts without its Redis");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = tmi_server::serve(listener, state, std::future::pending()).await;
        });
        (base, dir)
    }
    async fn get(base: &str, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("{base}{path}")).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    let mut redis = RedisSwitch::new().await;
    redis.close().await;
    let with_password = redis.url().replace("redis://", "redis://:hunter2secret@");
    let (base, _dir) = start(with_password).await;
    let (status, body) = get(&base, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("unhealthy") && !body.contains("hunter2secret"),
        "{body}"
    );
    assert_eq!(get(&base, "/livez").await.0, 200);

    let (base, _dir2) = start(redis.url()).await;
    assert_eq!(get(&base, "/readyz").await.0, 503);
    redis.open().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(&base, "/readyz").await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready after Redis came back: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

both_backends!(
    service_info_and_probes,
    unused_features_are_empty_lists,
    preferences,
    readiness_follows_redis
);
