//! Client credentials (`/me/client_credentials`, `grant_type=client_credentials`): create, list
//! without the secret, the grant through JSON, form and HTTP Basic, the service-account token
//! acting with its owner's permissions (reads, not content writes, never administration), deletion
//! revoking its tokens at once, someone else's credential being 404, the per-client lockout shared
//! by replicas, and the subjects reserved for service accounts.

use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};
use tmi_server::store::groups;

use crate::helpers::{Backend, Options, REDIS_PREFIX_VAR, Res, TestApp};

const CREDENTIALS: &str = "/me/client_credentials";

/// Creates a credential as `token`'s user; returns (id, client_id, client_secret).
async fn create(app: &TestApp, token: &str, name: &str) -> (String, String, String) {
    let res = app.post(CREDENTIALS, Some(token), json!({"name": name})).await;
    let body = res.expect(201);
    (
        body["id"].as_str().unwrap().to_owned(),
        body["client_id"].as_str().unwrap().to_owned(),
        body["client_secret"].as_str().unwrap().to_owned(),
    )
}

/// The grant with the client's credentials in a JSON body.
async fn grant(app: &TestApp, client_id: &str, secret: &str) -> Res {
    app.post(
        "/oauth2/token",
        None,
        json!({"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}),
    )
    .await
}

/// The grant with HTTP Basic client authentication (RFC 6749 §2.3.1).
async fn grant_basic(app: &TestApp, client_id: &str, secret: &str) -> Res {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{secret}"));
    app.send(
        Method::POST,
        "/oauth2/token",
        None,
        Some((
            "application/x-www-form-urlencoded",
            b"grant_type=client_credentials".to_vec(),
        )),
        &[("authorization", &format!("Basic {basic}"))],
    )
    .await
}

/// The claims of a JWT (not verified: the server did that).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

async fn new_tm(app: &TestApp, token: &str, name: &str) -> String {
    let tm = app
        .post("/threat_models", Some(token), json!({"name": name}))
        .await;
    format!("/threat_models/{}", tm.expect(201)["id"].as_str().unwrap())
}

async fn lifecycle(b: Backend) {
    let app = TestApp::spawn(b).await;
    let alice = app.login("alice").await;
    let bob = app.login("bob").await;
    // The contract reserves creation to administrators and security reviewers.
    app.post(CREDENTIALS, Some(&alice.access), json!({"name": "CI"}))
        .await
        .expect_error(403, "forbidden");
    app.add_to_group("alice", groups::ADMINISTRATORS).await;

    let res = app
        .post(
            CREDENTIALS,
            Some(&alice.access),
            json!({"name": "CI/CD Pipeline", "description": "Automated scanning", "expires_at": "2999-01-01T00:00:00Z"}),
        )
        .await;
    let created = res.expect(201).clone();
    assert_eq!(res.header("cache-control").as_deref(), Some("no-store"));
    let id = created["id"].as_str().unwrap().to_owned();
    let client_id = created["client_id"].as_str().unwrap().to_owned();
    let secret = created["client_secret"].as_str().unwrap().to_owned();
    assert!(client_id.starts_with("tmi_cc_"), "{created}");
    assert!(
        secret.starts_with("tmi_cs_") && secret.len() >= 7 + 43,
        "256 bits: {created}"
    );
    assert_eq!(created["name"], "CI/CD Pipeline");
    assert_eq!(created["description"], "Automated scanning");
    assert_eq!(created["expires_at"], "2999-01-01T00:00:00.000000Z");

    // The list never shows the secret (nor anything derived from it).
    let list = app.get(CREDENTIALS, Some(&alice.access)).await;
    let body = list.expect(200).clone();
    assert_eq!(body["total"], 1);
    assert_eq!(
        (body["limit"].clone(), body["offset"].clone()),
        (json!(20), json!(0))
    );
    let item = &body["credentials"][0];
    assert_eq!(item["id"], json!(id));
    assert_eq!(item["client_id"], json!(client_id));
    assert_eq!(item["is_active"], true);
    assert!(item.get("last_used_at").is_none(), "never used: {item}");
    let text = body.to_string();
    assert!(!text.contains(&secret) && !text.contains("secret"), "{text}");
    // Nobody else sees it.
    assert_eq!(
        app.get(CREDENTIALS, Some(&bob.access)).await.expect(200)["total"],
        0
    );

    // The grant: JSON body, form body, HTTP Basic.
    let json_grant = grant(&app, &client_id, &secret).await;
    let token = json_grant.expect(200).clone();
    assert_eq!(token["token_type"], "bearer");
    assert_eq!(token["expires_in"], 3600);
    assert_eq!(token["refresh_token"], "", "no refresh token: {token}");
    assert_eq!(json_grant.header("cache-control").as_deref(), Some("no-store"));
    assert!(
        json_grant.header("set-cookie").is_none(),
        "no cookies for machines"
    );
    let form = format!("grant_type=client_credentials&client_id={client_id}&client_secret={secret}");
    let form_grant = app
        .send(
            Method::POST,
            "/oauth2/token",
            None,
            Some(("application/x-www-form-urlencoded", form.into_bytes())),
            &[],
        )
        .await;
    form_grant.expect(200);
    let basic = grant_basic(&app, &client_id, &secret).await;
    basic.expect(200);
    let sa = token["access_token"].as_str().unwrap().to_owned();

    // The token is a service account of alice: her identity provider and groups, not administrator.
    let c = claims(&sa);
    assert_eq!(c["sub"], json!(format!("sa:{id}:alice")));
    assert_eq!(c["idp"], "tmi");
    assert_eq!(c["tmi_is_administrator"], false);
    assert!(
        !c["groups"].as_array().unwrap().contains(&json!("administrators")),
        "{c}"
    );
    let used = app.get(CREDENTIALS, Some(&alice.access)).await;
    assert!(used.expect(200)["credentials"][0]["last_used_at"].is_string());

    // It acts as alice: her threat model yes, bob's no; content writes and administration no.
    let hers = new_tm(&app, &alice.access, "Alice model").await;
    let his = new_tm(&app, &bob.access, "Bob model").await;
    assert_eq!(app.get(&hers, Some(&sa)).await.expect(200)["name"], "Alice model");
    app.get(&his, Some(&sa)).await.expect_error(403, "forbidden");
    let list = app.get("/threat_models", Some(&sa)).await;
    assert_eq!(list.expect(200)["total"], 1);
    assert_eq!(
        app.get("/me", Some(&sa)).await.expect(200)["provider_id"],
        "alice"
    );
    app.patch(
        &hers,
        Some(&sa),
        json!([{"op": "replace", "path": "/description", "value": "by a machine"}]),
    )
    .await
    .expect_error(403, "forbidden");
    app.get("/threat_models?include_deleted=true", Some(&alice.access))
        .await
        .expect(200);
    app.get("/threat_models?include_deleted=true", Some(&sa))
        .await
        .expect_error(403, "forbidden");
    app.post(CREDENTIALS, Some(&sa), json!({"name": "Nested"}))
        .await
        .expect_error(403, "forbidden");

    // Someone else's credential is not found, and survives the attempt.
    let path = format!("{CREDENTIALS}/{id}");
    app.delete(&path, Some(&bob.access))
        .await
        .expect_error(404, "not_found");
    app.get(&hers, Some(&sa)).await.expect(200);
    app.delete(&format!("{CREDENTIALS}/not-a-uuid"), Some(&alice.access))
        .await
        .expect_error(400, "invalid_id");

    // Deleting it ends its tokens on the next request, and the grant.
    app.delete(&path, Some(&alice.access)).await.expect(204);
    app.get(&hers, Some(&sa)).await.expect_error(401, "unauthorized");
    grant(&app, &client_id, &secret)
        .await
        .expect_error(401, "invalid_client");
    let refused = grant_basic(&app, &client_id, &secret).await;
    refused.expect_error(401, "invalid_client");
    assert!(
        refused
            .header("www-authenticate")
            .is_some_and(|h| h.starts_with("Basic")),
        "a refused Basic authentication is challenged"
    );
    assert_eq!(
        app.get(CREDENTIALS, Some(&alice.access)).await.expect(200)["total"],
        0
    );
    app.delete(&path, Some(&alice.access))
        .await
        .expect_error(404, "not_found");
    // Alice's own session is untouched.
    app.get(&hers, Some(&alice.access)).await.expect(200);
}

async fn creation_rules(b: Backend) {
    let app = TestApp::spawn(b).await;
    let rita = app.login("rita").await;
    app.add_to_group("rita", groups::SECURITY_REVIEWERS).await;
    for (body, why) in [
        (json!({"name": "   "}), "blank name"),
        (json!({"name": "x".repeat(101)}), "name too long"),
        (
            json!({"name": "CI", "description": "d".repeat(501)}),
            "description too long",
        ),
        (
            json!({"name": "CI", "expires_at": "2001-01-01T00:00:00Z"}),
            "expiry in the past",
        ),
        (json!({"name": "CI", "owner_uuid": "x"}), "unknown field"),
        (json!({}), "no name"),
    ] {
        let res = app.post(CREDENTIALS, Some(&rita.access), body).await;
        assert_eq!(res.status.as_u16(), 400, "{why}: {}", res.body);
    }
    // A quota of ten per user.
    for i in 0..10 {
        create(&app, &rita.access, &format!("c{i}")).await;
    }
    let over = app
        .post(CREDENTIALS, Some(&rita.access), json!({"name": "c10"}))
        .await;
    over.expect_error(403, "quota_exceeded");
    let page = app
        .get(&format!("{CREDENTIALS}?limit=3&offset=8"), Some(&rita.access))
        .await;
    let body = page.expect(200);
    assert_eq!(body["total"], 10);
    let names: Vec<&str> = body["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["c8", "c9"], "oldest first");
    app.get(&format!("{CREDENTIALS}?limit=101"), Some(&rita.access))
        .await
        .expect_error(400, "invalid_input");
    // The grant's own refusals.
    grant(&app, "tmi_cc_unknown", "tmi_cs_whatever")
        .await
        .expect_error(401, "invalid_client");
    app.post(
        "/oauth2/token",
        None,
        json!({"grant_type": "client_credentials", "client_id": "tmi_cc_x"}),
    )
    .await
    .expect_error(400, "invalid_request");
}

/// Repeated failures lock the client id out, on every replica: 429 with `Retry-After` and TMI's
/// error body, even for the right secret; attempts meanwhile do not prolong the lockout; other
/// clients are unaffected; once the lockout is over the right secret works.
async fn lockout(b: Backend) {
    let redis = crate::helpers::redis_url();
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    let opts = |database: Option<String>| Options {
        redis: true,
        vars: vec![
            ("TMI_REDIS_URL", redis.clone()),
            (REDIS_PREFIX_VAR, prefix.clone()),
        ],
        database,
    };
    let a = TestApp::spawn_with(b, opts(None)).await;
    let replica = TestApp::spawn_with(b, opts(Some(a.database_url.clone()))).await;
    let ada = a.login("ada").await;
    a.add_to_group("ada", groups::ADMINISTRATORS).await;
    let (_, client_id, secret) = create(&a, &ada.access, "Locked").await;
    let (_, other_id, other_secret) = create(&a, &ada.access, "Unaffected").await;

    // Failures count on either replica.
    for i in 0..4 {
        let app = if i % 2 == 0 { &a } else { &replica };
        grant(app, &client_id, "tmi_cs_wrong")
            .await
            .expect_error(401, "invalid_client");
    }
    let fifth = grant(&a, &client_id, "tmi_cs_wrong").await;
    fifth.expect_error(429, "too_many_requests");
    let retry_after: u64 = fifth.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry_after), "{retry_after}");

    // The right secret is refused while locked, on the other replica too, and the lockout's end
    // does not move however often the client tries.
    let lock_key = format!("client_credentials:locked:{client_id}");
    let ends = a.state.kv.get(&lock_key).await.unwrap().expect("a lockout");
    for app in [&replica, &a, &replica] {
        let res = grant(app, &client_id, &secret).await;
        res.expect_error(429, "too_many_requests");
        assert!(res.header("retry-after").is_some());
        grant(app, &client_id, "tmi_cs_wrong")
            .await
            .expect_error(429, "too_many_requests");
    }
    assert_eq!(a.state.kv.get(&lock_key).await.unwrap(), Some(ends));
    grant(&replica, &other_id, &other_secret).await.expect(200);

    // The lockout over (its key expired), the right secret works, and the count starts afresh.
    a.state.kv.delete(&lock_key).await.unwrap();
    grant(&replica, &client_id, &secret).await.expect(200);
    for _ in 0..4 {
        grant(&a, &client_id, "tmi_cs_wrong")
            .await
            .expect_error(401, "invalid_client");
    }
    grant(&a, &client_id, &secret).await.expect(200);
    grant(&a, &client_id, "tmi_cs_wrong")
        .await
        .expect_error(401, "invalid_client");
}

/// A token whose subject reads `sa:<id>:<user>` would act as that user, so no identity provider
/// subject of that form may sign in.
async fn reserved_subjects(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.login("alice").await;
    let forged = tmi_server::auth::provider::Identity {
        provider: "tmi".into(),
        provider_user_id: format!("sa:{}:alice", uuid::Uuid::new_v4()),
        email: "mallory@tmi.local".into(),
        name: "Mallory".into(),
        email_verified: true,
        groups: vec![],
    };
    let refused = app.state.tokens.login(&forged).await.expect_err("refused");
    assert_eq!(refused.status_and_code().0.as_u16(), 403);
    assert!(
        app.state
            .store
            .find_user("tmi", &forged.provider_user_id)
            .await
            .unwrap()
            .is_none()
    );
}

both_backends!(lifecycle, creation_rules, lockout, reserved_subjects);
