//! Sign-in through a real identity provider (Keycloak, started by scripts/with-services.sh): the
//! whole browser-less flow, authorize at tmi-server → Keycloak's login form → tmi-server's callback
//! → tmi-server's tokens → `/me`, for an OpenID Connect configuration (discovery, JWKS) and a plain
//! OAuth 2.0 one (explicit URLs and claim mappings), groups → ACLs and administrators, and every
//! refusal (replayed or missing state, expired code, tampered id_token, wrong audience, nonce).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, Options, Res, TestApp, challenge};
use crate::keycloak::{self, Keycloak, Realm, query_param};

/// The client callback the tests register (in the server's allowlist).
const CLIENT_CALLBACK: &str = "http://localhost:8079/";
/// The server's own callback as registered at Keycloak: a loopback URI without a port matches any
/// port there, and the tests carry Keycloak's redirect to the test server themselves.
const TMI_CALLBACK: &str = "http://127.0.0.1/oauth2/callback";

/// An OpenID Connect provider `kc`: only the issuer; discovery finds the rest.
fn oidc_vars(realm: &Realm) -> Vec<(&'static str, String)> {
    vec![
        ("TMI_BUILD_MODE", "production".into()),
        ("TMI_OAUTH_CALLBACK_URL", TMI_CALLBACK.into()),
        ("OAUTH_PROVIDERS_KC_ENABLED", "true".into()),
        ("OAUTH_PROVIDERS_KC_NAME", "Keycloak".into()),
        ("OAUTH_PROVIDERS_KC_CLIENT_ID", realm.client_id().into()),
        ("OAUTH_PROVIDERS_KC_CLIENT_SECRET", realm.client_secret().into()),
        ("OAUTH_PROVIDERS_KC_ISSUER", realm.issuer()),
        // Administrators: the members of the provider's `tmi-admins` group.
        ("TMI_ADMIN_PROVIDER", "kc".into()),
        ("TMI_ADMIN_SUBJECT_TYPE", "group".into()),
        ("TMI_ADMIN_GROUP_NAME", "tmi-admins".into()),
    ]
}

async fn realm(name: &str) -> Realm {
    let kc = Keycloak::from_env();
    kc.wait_ready().await;
    kc.new_realm(name).await
}

async fn spawn(backend: Backend, vars: Vec<(&'static str, String)>) -> TestApp {
    let mut vars = vars;
    vars.push(("TMI_OAUTH_CLIENT_CALLBACK_ALLOWLIST", CLIENT_CALLBACK.into()));
    TestApp::spawn_with(
        backend,
        Options {
            vars,
            ..Options::default()
        },
    )
    .await
}

/// Steps of one sign-in, so that tests can stop or tamper between them.
struct Flow {
    verifier: String,
    /// Keycloak's redirect to the server's callback (with `code` and `state`).
    idp_redirect: String,
}

/// Authorize at the server for `idp` and log in at Keycloak's form as `user`.
async fn start(app: &TestApp, idp: &str, user: &str, password: &str) -> Flow {
    let verifier = format!(
        "v-{}-{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let res = app
        .get(
            &format!(
                "/oauth2/authorize?idp={idp}&scope=openid%20profile%20email&code_challenge={}&code_challenge_method=S256&client_callback={CLIENT_CALLBACK}&state=client-state-1",
                challenge(&verifier)
            ),
            None,
        )
        .await;
    assert_eq!(res.status, StatusCode::FOUND, "{}", res.body);
    let to_idp = res.header("location").expect("Location");
    // PKCE towards the provider with a verifier of the server's own, and a state of its own.
    assert_eq!(
        query_param(&to_idp, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert!(query_param(&to_idp, "code_challenge").is_some_and(|c| c != challenge(&verifier)));
    assert!(query_param(&to_idp, "state").is_some_and(|s| s != "client-state-1"));
    assert_eq!(
        query_param(&to_idp, "redirect_uri").as_deref(),
        Some(TMI_CALLBACK)
    );
    let idp_redirect = keycloak::login(&keycloak::browser(), &to_idp, user, password)
        .await
        .expect("Keycloak login");
    assert!(idp_redirect.starts_with(TMI_CALLBACK), "{idp_redirect}");
    Flow {
        verifier,
        idp_redirect,
    }
}

/// The provider's redirect, delivered to the test server's callback.
async fn callback(app: &TestApp, idp_redirect: &str) -> Res {
    let query = idp_redirect.split_once('?').map(|(_, q)| q).unwrap_or_default();
    app.get(&format!("/oauth2/callback?{query}"), None).await
}

/// Callback → client callback → `/oauth2/token`: the token answer.
async fn finish(app: &TestApp, idp: &str, flow: &Flow) -> Value {
    let res = callback(app, &flow.idp_redirect).await;
    assert_eq!(res.status, StatusCode::FOUND, "{}", res.body);
    let back = res.header("location").expect("Location");
    assert!(back.starts_with(CLIENT_CALLBACK), "{back}");
    assert_eq!(query_param(&back, "state").as_deref(), Some("client-state-1"));
    let code = query_param(&back, "code").expect("code");
    app.post(
        &format!("/oauth2/token?idp={idp}"),
        None,
        json!({"grant_type": "authorization_code", "code": code, "code_verifier": flow.verifier, "redirect_uri": CLIENT_CALLBACK}),
    )
    .await
    .expect(200)
    .clone()
}

async fn sign_in(app: &TestApp, idp: &str, user: &str) -> String {
    let flow = start(app, idp, user, &format!("{user}-password")).await;
    finish(app, idp, &flow).await["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

fn jwt_claims(token: &str) -> Value {
    keycloak::jwt_parts(token).1
}

/// OIDC through discovery: identity, provider groups in TMI, ACLs on an IdP group, administrators by
/// group, refresh keeping the groups, and the provider list.
pub async fn oidc_sign_in(backend: Backend) {
    let realm = realm("oidc").await;
    let app = spawn(backend, oidc_vars(&realm)).await;

    let providers = app.get("/oauth2/providers", None).await.expect(200).clone();
    let kc = providers["providers"]
        .as_array()
        .expect("providers")
        .iter()
        .find(|p| p["id"] == "kc")
        .expect("kc listed")
        .clone();
    assert_eq!(kc["name"], "Keycloak");
    assert_eq!(kc["client_id"], realm.client_id());
    assert_eq!(kc["redirect_uri"], TMI_CALLBACK);
    // Production mode: the password-less dev provider is not offered.
    assert!(
        providers["providers"]
            .as_array()
            .expect("list")
            .iter()
            .all(|p| p["id"] != "tmi")
    );

    let flow = start(&app, "kc", "alice", "alice-password").await;
    let tokens = finish(&app, "kc", &flow).await;
    let alice = tokens["access_token"].as_str().expect("access").to_owned();
    let me = app.get("/me", Some(&alice)).await.expect(200).clone();
    assert_eq!(me["provider"], "kc");
    assert_eq!(me["email"], "alice@example.test");
    assert_eq!(me["display_name"], "Alice Liddell");
    assert_eq!(me["is_admin"], false);
    let group_names: Vec<&str> = me["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g["group_name"].as_str())
        .collect();
    assert!(group_names.contains(&"threat-modelers"), "{me}");
    let claims = jwt_claims(&alice);
    assert_eq!(claims["idp"], "kc");
    assert!(
        claims["groups"]
            .as_array()
            .expect("groups")
            .contains(&json!("threat-modelers"))
    );

    // Groups → ACL: bob shares a threat model with the provider group; alice (a member) reads it,
    // carol (not a member) does not.
    let bob = sign_in(&app, "kc", "bob").await;
    let tm = app
        .post(
            "/threat_models",
            Some(&bob),
            json!({"name": "Shared with a Keycloak group", "authorization": [
                {"principal_type": "group", "provider": "kc", "provider_id": "threat-modelers", "role": "reader"}
            ]}),
        )
        .await
        .expect(201)
        .clone();
    let path = format!("/threat_models/{}", tm["id"].as_str().expect("id"));
    app.get(&path, Some(&alice)).await.expect(200);
    let carol = sign_in(&app, "kc", "carol").await;
    app.get(&path, Some(&carol)).await.expect_error(403, "forbidden");

    // Administrators by group: carol is in tmi-admins.
    let carol_me = app.get("/me", Some(&carol)).await.expect(200).clone();
    assert_eq!(carol_me["is_admin"], true, "{carol_me}");
    assert_eq!(jwt_claims(&carol)["tmi_is_administrator"], true);

    // A refreshed token keeps the provider's groups, so the ACL still admits alice.
    let refreshed = app
        .post(
            "/oauth2/refresh",
            None,
            json!({"refresh_token": tokens["refresh_token"].as_str().expect("refresh")}),
        )
        .await
        .expect(200)
        .clone();
    let alice2 = refreshed["access_token"].as_str().expect("access");
    assert!(
        jwt_claims(alice2)["groups"]
            .as_array()
            .expect("groups")
            .contains(&json!("threat-modelers"))
    );
    app.get(&path, Some(alice2)).await.expect(200);
}

/// The same Keycloak as a plain OAuth 2.0 provider: explicit endpoints, no issuer (so no id_token
/// verification), the identity from a primary and a secondary userinfo endpoint through claim
/// mappings, as GitHub is configured.
pub async fn plain_oauth_sign_in(backend: Backend) {
    let realm = realm("plain").await;
    let app = spawn(
        backend,
        vec![
            ("TMI_BUILD_MODE", "production".into()),
            ("TMI_OAUTH_CALLBACK_URL", TMI_CALLBACK.into()),
            ("OAUTH_PROVIDERS_KC_PLAIN_ENABLED", "true".into()),
            ("OAUTH_PROVIDERS_KC_PLAIN_CLIENT_ID", realm.client_id().into()),
            (
                "OAUTH_PROVIDERS_KC_PLAIN_CLIENT_SECRET",
                realm.client_secret().into(),
            ),
            ("OAUTH_PROVIDERS_KC_PLAIN_AUTHORIZATION_URL", realm.auth_url()),
            ("OAUTH_PROVIDERS_KC_PLAIN_TOKEN_URL", realm.token_url()),
            ("OAUTH_PROVIDERS_KC_PLAIN_SCOPES", "openid,email,profile".into()),
            ("OAUTH_PROVIDERS_KC_PLAIN_USERINFO_URL", realm.userinfo_url()),
            (
                "OAUTH_PROVIDERS_KC_PLAIN_USERINFO_CLAIMS_SUBJECT_CLAIM",
                "preferred_username".into(),
            ),
            // No e-mail from the primary endpoint (a deliberately wrong path): the secondary one,
            // called after it as GitHub's /user/emails is, supplies it.
            (
                "OAUTH_PROVIDERS_KC_PLAIN_USERINFO_CLAIMS_EMAIL_CLAIM",
                "no.such.field".into(),
            ),
            (
                "OAUTH_PROVIDERS_KC_PLAIN_USERINFO_SECONDARY_URL",
                realm.userinfo_url(),
            ),
            (
                "OAUTH_PROVIDERS_KC_PLAIN_USERINFO_SECONDARY_CLAIMS_EMAIL_CLAIM",
                "email".into(),
            ),
            (
                "OAUTH_PROVIDERS_KC_PLAIN_USERINFO_CLAIMS_NAME_CLAIM",
                "given_name".into(),
            ),
            (
                "OAUTH_PROVIDERS_KC_PLAIN_USERINFO_CLAIMS_GROUPS_CLAIM",
                "groups".into(),
            ),
            (
                "OAUTH_PROVIDERS_KC_PLAIN_ACCEPT_HEADER",
                "application/json".into(),
            ),
        ],
    )
    .await;
    let token = sign_in(&app, "kc-plain", "alice").await;
    let me = app.get("/me", Some(&token)).await.expect(200).clone();
    assert_eq!(me["provider"], "kc-plain");
    // The subject and name come from the mapped fields, not from OIDC defaults.
    assert_eq!(me["provider_id"], "alice");
    assert_eq!(me["display_name"], "Alice");
    assert_eq!(me["email"], "alice@example.test");
    assert!(
        jwt_claims(&token)["groups"]
            .as_array()
            .expect("groups")
            .contains(&json!("threat-modelers"))
    );
}

/// Every refusal answers a 4xx with TMI's error body and signs nobody in.
pub async fn refusals(backend: Backend) {
    let realm = realm("refusals").await;
    let app = spawn(backend, oidc_vars(&realm)).await;
    let no_session = |res: &Res| {
        assert!(res.header("set-cookie").is_none(), "a refusal set a cookie");
        assert!(res.header("location").is_none(), "a refusal redirected");
    };

    // Missing and unknown state.
    let res = app.get("/oauth2/callback?code=abc", None).await;
    res.expect_error(400, "invalid_request");
    no_session(&res);
    let res = app.get("/oauth2/callback?code=abc&state=made-up", None).await;
    res.expect_error(400, "invalid_request");
    no_session(&res);

    // A replayed state: the second delivery of the same redirect is refused.
    let flow = start(&app, "kc", "alice", "alice-password").await;
    let _ = finish(&app, "kc", &flow).await;
    let res = callback(&app, &flow.idp_redirect).await;
    res.expect_error(400, "invalid_request");
    no_session(&res);

    // A wrong password never reaches the server's callback.
    let verifier = "v".repeat(50);
    let to_idp = app
        .get(
            &format!(
                "/oauth2/authorize?idp=kc&scope=openid&code_challenge={}&code_challenge_method=S256&client_callback={CLIENT_CALLBACK}",
                challenge(&verifier)
            ),
            None,
        )
        .await
        .header("location")
        .expect("Location");
    assert!(
        keycloak::login(&keycloak::browser(), &to_idp, "alice", "wrong")
            .await
            .is_err()
    );

    // An expired code: the provider refuses the exchange.
    realm.set_code_lifespan(1).await;
    let flow = start(&app, "kc", "bob", "bob-password").await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let res = callback(&app, &flow.idp_redirect).await;
    res.expect_error(400, "invalid_grant");
    no_session(&res);

    // The client's PKCE verifier still guards TMI's own code.
    realm.set_code_lifespan(60).await;
    let flow = start(&app, "kc", "bob", "bob-password").await;
    let res = callback(&app, &flow.idp_redirect).await;
    let code = query_param(&res.header("location").expect("Location"), "code").expect("code");
    app.post(
        "/oauth2/token?idp=kc",
        None,
        json!({"grant_type": "authorization_code", "code": code, "code_verifier": "w".repeat(50), "redirect_uri": CLIENT_CALLBACK}),
    )
    .await
    .expect_error(400, "invalid_grant");
}

/// id_token verification with tokens Keycloak really signed: a tampered token, another client's
/// audience and another sign-in's nonce are refused; key rotation and ES256/EdDSA keys are followed.
pub async fn id_token_verification() {
    use tmi_server::auth::oauth::{OAuthProvider, http_client};
    use tmi_server::auth::provider_config::parse;
    let realm = realm("idtoken").await;
    let provider = |client_id: &str| {
        let vars = [
            ("OAUTH_PROVIDERS_KC_ENABLED", "true".to_owned()),
            ("OAUTH_PROVIDERS_KC_CLIENT_ID", client_id.to_owned()),
            (
                "OAUTH_PROVIDERS_KC_CLIENT_SECRET",
                realm.client_secret().to_owned(),
            ),
            ("OAUTH_PROVIDERS_KC_ISSUER", realm.issuer()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let cfg = parse(&vars).expect("config").remove(0);
        OAuthProvider::new(cfg, http_client(None).expect("client"))
    };
    let ours = provider(realm.client_id());
    let id_token = |nonce: &'static str| id_token(&realm, nonce);

    let token = id_token("n-1").await;
    let claims = ours
        .verify(&token, Some("n-1"))
        .await
        .expect("a genuine id_token verifies");
    assert_eq!(claims["email"], "alice@example.test");
    assert_eq!(claims["aud"], realm.client_id());

    let refused = |r: Result<Value, tmi_server::error::ApiError>| {
        let e = r.expect_err("refused");
        assert_eq!(e.status_and_code().0.as_u16(), 401, "{e}");
        e.to_string()
    };
    // Tampered: one character of the payload changed (alice claims another e-mail).
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut payload = jwt_claims(&token);
    payload["email"] = json!("mallory@example.test");
    {
        use base64::Engine;
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload.to_string());
    }
    let msg = refused(ours.verify(&parts.join("."), Some("n-1")).await);
    assert!(msg.contains("signature"), "{msg}");
    // Another client's configuration: wrong audience.
    let msg = refused(provider("another-client").verify(&token, Some("n-1")).await);
    assert!(msg.contains("another client"), "{msg}");
    // Another sign-in's nonce.
    let msg = refused(ours.verify(&token, Some("n-2")).await);
    assert!(msg.contains("nonce"), "{msg}");

    // Key rotation at the provider: a token under the new key verifies (the JWKS is refetched for
    // the unknown kid), with the old JWKS cached.
    let old_kid = jwt_header(&token)["kid"].clone();
    realm.rotate_keys().await;
    let rotated = id_token("n-3").await;
    assert_ne!(jwt_header(&rotated)["kid"], old_kid);
    ours.verify(&rotated, Some("n-3"))
        .await
        .expect("verifies after rotation");

    for alg in ["ES256", "EdDSA"] {
        realm.set_id_token_alg(alg).await;
        let t = id_token("n-4").await;
        assert_eq!(jwt_header(&t)["alg"], alg);
        ours.verify(&t, Some("n-4"))
            .await
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
    }
}

/// An id_token for alice straight from Keycloak (code flow with `nonce`), as a relying party gets it.
async fn id_token(realm: &Realm, nonce: &str) -> String {
    let url = format!(
        "{}&nonce={nonce}",
        realm.authorization_url(TMI_CALLBACK, "st", None)
    );
    let back = keycloak::login(&keycloak::browser(), &url, "alice", "alice-password")
        .await
        .expect("login");
    let code = query_param(&back, "code").expect("code");
    let tokens = realm
        .exchange_code(&code, TMI_CALLBACK, None)
        .await
        .expect("Keycloak's token answer");
    tokens["id_token"].as_str().expect("id_token").to_owned()
}

fn jwt_header(token: &str) -> Value {
    keycloak::jwt_parts(token).0
}

both_backends!(oidc_sign_in, plain_oauth_sign_in, refusals);

#[tokio::test]
async fn id_token_verification_against_keycloak() {
    id_token_verification().await;
}

/// The icon `/oauth2/providers` advertises for the dev provider is served, without a token.
#[tokio::test]
async fn provider_logo_is_served() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let list = app.get("/oauth2/providers", None).await.expect(200).clone();
    let icon = list["providers"][0]["icon"].as_str().expect("icon").to_owned();
    assert!(icon.starts_with("/static/"), "{icon}");
    let res = app
        .client
        .get(format!("{}{icon}", app.base))
        .send()
        .await
        .expect("GET logo");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("image/svg+xml")
    );
    assert!(res.text().await.expect("body").starts_with("<svg"));
    let missing = app
        .client
        .get(format!("{}/static/provider-logos/signin/nope.svg", app.base))
        .send()
        .await
        .expect("GET");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}
