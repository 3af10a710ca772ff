//! Dev login with PKCE, cookies, refresh rotation and reuse detection, revoke, logout, JWT rejections.

use base64::Engine;
use serde_json::json;

use crate::helpers::{Backend, Options, TestApp, challenge};

async fn dev_login_with_pkce(b: Backend) {
    let app = TestApp::spawn(b).await;
    let providers = app.get("/oauth2/providers", None).await;
    let list = providers.expect(200)["providers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], "tmi");
    assert!(
        list[0]["auth_url"]
            .as_str()
            .unwrap()
            .ends_with("/oauth2/authorize?idp=tmi")
    );

    // A wrong verifier is rejected, and the code is consumed.
    let code = app
        .authorize("alice", "the-right-verifier-0123456789-0123456789-abc")
        .await;
    let bad = app
        .post("/oauth2/token?idp=tmi", None, json!({"grant_type": "authorization_code", "code": code, "code_verifier": "wrong-verifier-0123456789-0123456789-0123456789", "redirect_uri": "http://localhost:8079/"}))
        .await;
    bad.expect_error(400, "invalid_grant");
    let again = app
        .post("/oauth2/token?idp=tmi", None, json!({"grant_type": "authorization_code", "code": code, "code_verifier": "the-right-verifier-0123456789-0123456789-abc", "redirect_uri": "http://localhost:8079/"}))
        .await;
    again.expect_error(400, "invalid_grant");

    // The right verifier, as a form body, sets both HttpOnly cookies.
    let verifier = "another-right-verifier-0123456789-0123456789";
    let code = app.authorize("alice", verifier).await;
    let form = format!(
        "grant_type=authorization_code&code={code}&code_verifier={verifier}&redirect_uri=http%3A%2F%2Flocalhost%3A8079%2F"
    );
    let res = app
        .send(
            reqwest::Method::POST,
            "/oauth2/token?idp=tmi",
            None,
            Some(("application/x-www-form-urlencoded", form.into_bytes())),
            &[],
        )
        .await;
    let body = res.expect(200).clone();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 3600);
    let cookies: Vec<String> = res
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("tmi_access_token=") && c.contains("HttpOnly") && c.contains("Path=/;"))
    );
    assert!(cookies.iter().any(|c| c.starts_with("tmi_refresh_token=")
        && c.contains("HttpOnly")
        && c.contains("SameSite=Strict")
        && c.contains("Path=/;")));

    // The access token works as a bearer token and as a cookie.
    let me = app.get("/me", Some(body["access_token"].as_str().unwrap())).await;
    let me = me.expect(200);
    assert_eq!(me["provider_id"], "alice");
    assert_eq!(me["email"], "alice@tmi.local");
    assert_eq!(me["display_name"], "Alice (TMI User)");
    let cookie = format!("tmi_access_token={}", body["access_token"].as_str().unwrap());
    app.send(reqwest::Method::GET, "/me", None, None, &[("cookie", &cookie)])
        .await
        .expect(200);
    let info = app
        .get("/oauth2/userinfo", Some(body["access_token"].as_str().unwrap()))
        .await;
    assert_eq!(info.expect(200)["sub"], "alice");

    // Claims carry TMI's set.
    let payload = body["access_token"].as_str().unwrap().split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    for k in [
        "iss",
        "aud",
        "sub",
        "exp",
        "iat",
        "nbf",
        "jti",
        "email",
        "email_verified",
        "name",
        "idp",
        "groups",
        "tmi_is_administrator",
        "tmi_is_security_reviewer",
        "auth_time",
    ] {
        assert!(claims.get(k).is_some(), "claim {k} missing: {claims}");
    }
}

async fn authorize_validation(b: Backend) {
    let app = TestApp::spawn(b).await;
    let c = challenge("v-0123456789-0123456789-0123456789-0123456789");
    let base =
        format!("/oauth2/authorize?idp=tmi&scope=openid&code_challenge={c}&code_challenge_method=S256");
    for (q, what) in [
        (
            "&client_callback=http://evil.example/",
            "callback outside the allowlist",
        ),
        ("", "missing client_callback"),
        (
            "&client_callback=http://localhost:8079/&scope=profile",
            "scope without openid",
        ),
    ] {
        let r = app.get(&format!("{base}{q}"), None).await;
        assert_eq!(r.status.as_u16(), 400, "{what}: {}", r.body);
        assert!(r.body["error"].is_string());
    }
    let plain = "/oauth2/authorize?idp=tmi&scope=openid&code_challenge=short&code_challenge_method=plain&client_callback=http://localhost:8079/";
    assert_eq!(app.get(plain, None).await.status.as_u16(), 400);
}

async fn refresh_rotation_and_reuse(b: Backend) {
    for redis in [false, true] {
        let app = TestApp::spawn_with(
            b,
            Options {
                redis,
                ..Default::default()
            },
        )
        .await;
        let s = app.login("bob").await;
        let first = app
            .post("/oauth2/refresh", None, json!({"refresh_token": s.refresh}))
            .await;
        let first = first.expect(200).clone();
        assert_ne!(first["refresh_token"], json!(s.refresh));
        app.get("/me", Some(first["access_token"].as_str().unwrap()))
            .await
            .expect(200);
        // The refresh cookie works too (empty body, as the web client sends).
        let cookie = format!("tmi_refresh_token={}", first["refresh_token"].as_str().unwrap());
        let second = app
            .send(
                reqwest::Method::POST,
                "/oauth2/refresh",
                None,
                Some(("application/json", b"{}".to_vec())),
                &[("cookie", &cookie)],
            )
            .await;
        let second = second.expect(200).clone();
        // Reusing a rotated token fails and revokes the whole family.
        app.post("/oauth2/refresh", None, json!({"refresh_token": s.refresh}))
            .await
            .expect_error(400, "invalid_grant");
        let after = app
            .post(
                "/oauth2/refresh",
                None,
                json!({"refresh_token": second["refresh_token"]}),
            )
            .await;
        after.expect_error(400, "invalid_grant");
        let cleared: Vec<String> = after
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert!(
            cleared.iter().any(|c| c.contains("Max-Age=0")),
            "a failed refresh clears cookies"
        );
        app.post("/oauth2/refresh", None, json!({"refresh_token": "not-a-token"}))
            .await
            .expect_error(400, "invalid_grant");
        // grant_type=refresh_token on /oauth2/token rotates too.
        let s2 = app.login("bob").await;
        let r = app
            .post(
                "/oauth2/token",
                None,
                json!({"grant_type": "refresh_token", "refresh_token": s2.refresh}),
            )
            .await;
        r.expect(200);
    }
}

async fn session_lifetime_is_absolute(b: Backend) {
    let app = TestApp::spawn_with(
        b,
        Options {
            vars: vec![("TMI_SESSION_LIFETIME_DAYS", "1".into())],
            ..Default::default()
        },
    )
    .await;
    let s = app.login("carol").await;
    // Rewrite the stored session start to two days ago.
    let key = format!("refresh_token:{}", s.refresh);
    let raw = app.state.kv.get(&key).await.unwrap().unwrap();
    let mut data: serde_json::Value = serde_json::from_str(&raw).unwrap();
    data["session_created"] = json!(chrono::Utc::now().timestamp() - 2 * 86_400);
    app.state
        .kv
        .set(&key, &data.to_string(), std::time::Duration::from_secs(600))
        .await
        .unwrap();
    app.post("/oauth2/refresh", None, json!({"refresh_token": s.refresh}))
        .await
        .expect_error(400, "invalid_grant");
}

async fn revoke_and_logout(b: Backend) {
    for redis in [false, true] {
        let app = TestApp::spawn_with(
            b,
            Options {
                redis,
                ..Default::default()
            },
        )
        .await;
        let s = app.login("dave").await;
        // Revocation needs a caller.
        app.post("/oauth2/revoke", None, json!({"token": s.access}))
            .await
            .expect_error(401, "invalid_client");
        let other = app.login("dave").await;
        app.post("/oauth2/revoke", Some(&other.access), json!({"token": s.access}))
            .await
            .expect(200);
        app.get("/me", Some(&s.access))
            .await
            .expect_error(401, "unauthorized");
        // Revoking a refresh token deletes it.
        app.post(
            "/oauth2/revoke",
            Some(&other.access),
            json!({"token": other.refresh}),
        )
        .await
        .expect(200);
        app.post("/oauth2/refresh", None, json!({"refresh_token": other.refresh}))
            .await
            .expect_error(400, "invalid_grant");
        // ... and with it every token of that login (RFC 7009 §2.1).
        app.get("/me", Some(&other.access))
            .await
            .expect_error(401, "unauthorized");
        let other = app.login("dave").await;
        // Introspection.
        let active = app
            .send(
                reqwest::Method::POST,
                "/oauth2/introspect",
                Some(&other.access),
                Some((
                    "application/x-www-form-urlencoded",
                    format!("token={}", other.access).into_bytes(),
                )),
                &[],
            )
            .await;
        assert_eq!(active.expect(200)["active"], true);
        let inactive = app
            .send(
                reqwest::Method::POST,
                "/oauth2/introspect",
                Some(&other.access),
                Some((
                    "application/x-www-form-urlencoded",
                    format!("token={}", s.access).into_bytes(),
                )),
                &[],
            )
            .await;
        assert_eq!(inactive.expect(200)["active"], false);
        // Logout revokes the presented token and clears cookies.
        let out = app
            .send(
                reqwest::Method::POST,
                "/me/logout",
                Some(&other.access),
                None,
                &[],
            )
            .await;
        out.expect(204);
        assert!(
            out.headers
                .get_all("set-cookie")
                .iter()
                .any(|v| v.to_str().unwrap().contains("Max-Age=0"))
        );
        app.get("/me", Some(&other.access))
            .await
            .expect_error(401, "unauthorized");
    }
}

async fn bad_tokens_are_401(b: Backend) {
    let app = TestApp::spawn(b).await;
    let s = app.login("erin").await;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = s.access.split('.').collect();
    let mut claims: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    let none = format!("{}.{}.", b64.encode(br#"{"alg":"none","typ":"JWT"}"#), parts[1]);
    claims["exp"] = json!(chrono::Utc::now().timestamp() - 3600);
    let key = jsonwebtoken::EncodingKey::from_secret(b"integration-test-secret-0123456789").unwrap();
    let expired = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
    claims["exp"] = json!(chrono::Utc::now().timestamp() + 3600);
    let wrong_key = jsonwebtoken::EncodingKey::from_secret(b"some-other-secret-0123456789").unwrap();
    let forged = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &wrong_key).unwrap();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(serde_json::to_vec(&json!({"sub": "mallory"})).unwrap()),
        parts[2]
    );
    for t in [
        none.as_str(),
        expired.as_str(),
        forged.as_str(),
        tampered.as_str(),
        "garbage",
    ] {
        let r = app.get("/me", Some(t)).await;
        r.expect_error(401, "unauthorized");
        assert_eq!(r.body["error_description"], "Authentication required");
    }
    let r = app
        .send(
            reqwest::Method::GET,
            "/me",
            None,
            None,
            &[("authorization", "Basic abc")],
        )
        .await;
    r.expect_error(401, "unauthorized");
}

async fn first_user_is_promoted(b: Backend) {
    let app = TestApp::spawn_with(
        b,
        Options {
            vars: vec![("TMI_AUTH_AUTO_PROMOTE_FIRST_USER", "true".into())],
            ..Default::default()
        },
    )
    .await;
    let first = app.login("charlie").await;
    let me = app.get("/me", Some(&first.access)).await;
    let me = me.expect(200);
    assert_eq!(me["is_admin"], true);
    assert_eq!(me["is_security_reviewer"], true);
    assert!(
        me["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["internal_uuid"] == "00000000-0000-0000-0000-000000000002")
    );
    let second = app.login("diana").await;
    assert_eq!(
        app.get("/me", Some(&second.access)).await.expect(200)["is_admin"],
        false
    );
}

async fn admin_bootstrap(b: Backend) {
    let app = TestApp::spawn_with(
        b,
        Options {
            vars: vec![
                ("TMI_ADMIN_PROVIDER", "tmi".into()),
                ("TMI_ADMIN_PROVIDER_ID", "root".into()),
            ],
            ..Default::default()
        },
    )
    .await;
    let s = app.login("root").await;
    assert_eq!(
        app.get("/me", Some(&s.access)).await.expect(200)["is_admin"],
        true
    );
    // Admins may list deleted threat models; others may not.
    app.get("/threat_models?include_deleted=true", Some(&s.access))
        .await
        .expect(200);
    let u = app.login("user-x").await;
    app.get("/threat_models?include_deleted=true", Some(&u.access))
        .await
        .expect_error(403, "forbidden");
}

/// Refreshes `refresh`; the new pair's (access, refresh).
async fn refreshed(app: &TestApp, refresh: &str) -> (String, String) {
    let r = app
        .post("/oauth2/refresh", None, json!({"refresh_token": refresh}))
        .await;
    let body = r.expect(200);
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

/// `POST /oauth2/introspect` of `token` (form body), authenticated as `caller`.
async fn introspect(app: &TestApp, caller: Option<&str>, token: &str) -> crate::helpers::Res {
    app.send(
        reqwest::Method::POST,
        "/oauth2/introspect",
        caller,
        Some((
            "application/x-www-form-urlencoded",
            format!("token={token}").into_bytes(),
        )),
        &[],
    )
    .await
}

/// Logging out with a bearer token ends the whole login: the refresh token that would mint the next
/// pair, and the login's earlier access tokens, are refused too; another login of the same user is
/// not affected.
async fn logout_ends_the_token_family(b: Backend) {
    for redis in [false, true] {
        let app = TestApp::spawn_with(
            b,
            Options {
                redis,
                ..Default::default()
            },
        )
        .await;
        let s = app.login("frank").await;
        let elsewhere = app.login("frank").await;
        let (access, refresh) = refreshed(&app, &s.refresh).await;
        app.send(reqwest::Method::POST, "/me/logout", Some(&access), None, &[])
            .await
            .expect(204);
        app.post("/oauth2/refresh", None, json!({"refresh_token": refresh}))
            .await
            .expect_error(400, "invalid_grant");
        app.get("/me", Some(&s.access))
            .await
            .expect_error(401, "unauthorized");
        app.get("/me", Some(&elsewhere.access)).await.expect(200);
        refreshed(&app, &elsewhere.refresh).await;
    }
}

/// RFC 7009: a caller revokes only their own tokens; someone else's stays valid (and the answer is
/// the same 200, so it reveals nothing).
async fn only_the_owner_revokes(b: Backend) {
    let app = TestApp::spawn(b).await;
    let alice = app.login("alice").await;
    let mallory = app.login("mallory").await;
    app.post(
        "/oauth2/revoke",
        Some(&mallory.access),
        json!({"token": alice.access}),
    )
    .await
    .expect(200);
    app.get("/me", Some(&alice.access)).await.expect(200);
    app.post(
        "/oauth2/revoke",
        Some(&mallory.access),
        json!({"token": alice.refresh}),
    )
    .await
    .expect(200);
    let (access, refresh) = refreshed(&app, &alice.refresh).await;
    // Alice may revoke her own: the refresh token ends her login.
    app.post("/oauth2/revoke", Some(&access), json!({"token": refresh}))
        .await
        .expect(200);
    app.post("/oauth2/refresh", None, json!({"refresh_token": refresh}))
        .await
        .expect_error(400, "invalid_grant");
    app.get("/me", Some(&access))
        .await
        .expect_error(401, "unauthorized");
    app.get("/me", Some(&mallory.access)).await.expect(200);
}

/// RFC 7662: introspection needs client authentication (here a bearer token of this server), and a
/// caller learns only about their own tokens unless they are an administrator.
async fn introspection_needs_client_authentication(b: Backend) {
    let app = TestApp::spawn(b).await;
    let alice = app.login("alice").await;
    let bob = app.login("bob").await;
    let anonymous = introspect(&app, None, &alice.access).await;
    anonymous.expect_error(401, "invalid_client");
    assert!(
        !anonymous.body.to_string().contains("alice@"),
        "nothing about the token: {}",
        anonymous.body
    );
    let other = introspect(&app, Some(&bob.access), &alice.access).await;
    assert_eq!(other.expect(200), &json!({"active": false}));
    let own = introspect(&app, Some(&alice.access), &alice.access).await;
    let own = own.expect(200);
    assert_eq!(own["active"], true);
    assert_eq!(own["email"], "alice@tmi.local");
    // An administrator may introspect anyone's token.
    app.add_to_group("bob", tmi_server::store::groups::ADMINISTRATORS)
        .await;
    let admin = app.login("bob").await;
    let seen = introspect(&app, Some(&admin.access), &alice.access).await;
    assert_eq!(seen.expect(200)["sub"], "alice");
}

/// Revocations are kept in the database: after Redis restarts empty (no persistence), a logged-out
/// token stays refused, on the running server and on a server started afterwards, and the login's
/// refresh token stays unusable.
async fn revocations_survive_a_redis_restart(b: Backend) {
    let mut redis = crate::helpers::PrivateRedis::start();
    let url = redis.url();
    let opts = |database: Option<String>| Options {
        redis: true,
        vars: vec![("TMI_REDIS_URL", url.clone())],
        database,
    };
    let app = TestApp::spawn_with(b, opts(None)).await;
    let s = app.login("grace").await;
    let (access, refresh) = refreshed(&app, &s.refresh).await;
    app.send(reqwest::Method::POST, "/me/logout", Some(&access), None, &[])
        .await
        .expect(204);
    app.get("/me", Some(&access))
        .await
        .expect_error(401, "unauthorized");

    redis.restart();
    app.get("/me", Some(&access))
        .await
        .expect_error(401, "unauthorized");
    app.get("/me", Some(&s.access))
        .await
        .expect_error(401, "unauthorized");
    let later = TestApp::spawn_with(b, opts(Some(app.database_url.clone()))).await;
    later
        .get("/me", Some(&access))
        .await
        .expect_error(401, "unauthorized");
    later
        .post("/oauth2/refresh", None, json!({"refresh_token": refresh}))
        .await
        .expect_error(400, "invalid_grant");
    // The servers work on: a new login is accepted by both.
    let again = later.login("grace").await;
    app.get("/me", Some(&again.access)).await.expect(200);
}

/// Polls `app` until it refuses `token` (401), for at most `within`; whether it did.
async fn refused_within(app: &TestApp, token: &str, within: std::time::Duration) -> bool {
    let started = std::time::Instant::now();
    loop {
        let res = app.get("/me", Some(token)).await;
        if res.status == 401 {
            return true;
        }
        res.expect(200);
        if started.elapsed() > within {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Two replicas sharing the database and Redis: a token revoked on one is refused by the other as
/// soon as the revocation is announced on Redis (each replica checks its in-process copy, with no
/// Redis round trip per request). A revocation made while Redis is down cannot be announced: the
/// other replica resynchronizes from the database when its subscription comes back (a gap in the
/// channel), long before its 30 s poll would have found it.
async fn revocations_reach_the_other_replica(b: Backend) {
    let mut redis = crate::helpers::PrivateRedis::start();
    let url = redis.url();
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    let opts = |database: Option<String>| Options {
        redis: true,
        vars: vec![
            ("TMI_REDIS_URL", url.clone()),
            (crate::helpers::REDIS_PREFIX_VAR, prefix.clone()),
        ],
        database,
    };
    let a = TestApp::spawn_with(b, opts(None)).await;
    let replica = TestApp::spawn_with(b, opts(Some(a.database_url.clone()))).await;
    let s = a.login("heidi").await;
    let caller = a.login("heidi").await;
    replica.get("/me", Some(&s.access)).await.expect(200);
    a.post("/oauth2/revoke", Some(&caller.access), json!({"token": s.access}))
        .await
        .expect(200);
    a.get("/me", Some(&s.access))
        .await
        .expect_error(401, "unauthorized");
    assert!(
        refused_within(&replica, &s.access, std::time::Duration::from_secs(5)).await,
        "the other replica still accepts a revoked token"
    );

    // Redis down: the revocation is recorded, but nobody hears of it.
    let t = a.login("heidi").await;
    replica.get("/me", Some(&t.access)).await.expect(200);
    redis.stop();
    a.post("/oauth2/revoke", Some(&caller.access), json!({"token": t.access}))
        .await
        .expect(200);
    a.get("/me", Some(&t.access))
        .await
        .expect_error(401, "unauthorized");
    redis.start_again();
    assert!(
        refused_within(&replica, &t.access, std::time::Duration::from_secs(15)).await,
        "the other replica did not resynchronize after Redis came back"
    );
    // Both replicas go on accepting the tokens that were not revoked.
    replica.get("/me", Some(&caller.access)).await.expect(200);
    a.get("/me", Some(&caller.access)).await.expect(200);
}

both_backends!(
    revocations_reach_the_other_replica,
    dev_login_with_pkce,
    authorize_validation,
    refresh_rotation_and_reuse,
    session_lifetime_is_absolute,
    revoke_and_logout,
    bad_tokens_are_401,
    first_user_is_promoted,
    admin_bootstrap,
    logout_ends_the_token_family,
    only_the_owner_revokes,
    introspection_needs_client_authentication,
    revocations_survive_a_redis_restart,
);
