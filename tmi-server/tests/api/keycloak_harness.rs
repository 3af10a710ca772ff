//! The Keycloak harness (`tests/common/keycloak.rs`) against the real Keycloak `scripts/services.sh` starts:
//! alice signs in through the login form of a fresh realm (code flow with PKCE S256), the code is exchanged at
//! Keycloak's token endpoint, and the id token says who she is; key rotation and the id token algorithm change
//! what the next tokens carry; a wrong password gives no code. No tmi-server and no database here (so one test,
//! not one per backend): the sign-in tests of tmi-server build on this.

use serde_json::{Value, json};

use crate::keycloak::{self, ALICE, Keycloak, Realm};

/// A redirect URI of the template's client: registered without a port, matched on any port.
const REDIRECT: &str = "http://127.0.0.1:9/oauth2/callback";

/// Signs `user` in at `realm` from its authorization URL and exchanges the code: the token JSON.
async fn sign_in(realm: &Realm, user: keycloak::User) -> Value {
    let (verifier, challenge) = keycloak::pkce();
    let state = uuid::Uuid::new_v4().to_string();
    let start = realm.authorization_url(REDIRECT, &state, Some(&challenge));
    let back = keycloak::login(&keycloak::browser(), &start, user.username, user.password)
        .await
        .unwrap_or_else(|e| panic!("{} signs in: {e}", user.username));
    assert!(back.starts_with(REDIRECT), "back to the client: {back}");
    assert_eq!(
        keycloak::query_param(&back, "state").as_deref(),
        Some(state.as_str())
    );
    let code = keycloak::query_param(&back, "code").expect("a code");
    // PKCE is enforced: the code alone, without its verifier, is refused.
    let refused = realm.exchange_code(&code, REDIRECT, None).await;
    assert_eq!(refused.expect_err("no verifier")["error"], "invalid_grant");
    // That attempt used the code up: Keycloak refuses a code's second use. Sign in again for a fresh one.
    let back = keycloak::login(&keycloak::browser(), &start, user.username, user.password)
        .await
        .unwrap_or_else(|e| panic!("{} signs in again: {e}", user.username));
    let code = keycloak::query_param(&back, "code").expect("a code");
    realm
        .exchange_code(&code, REDIRECT, Some(&verifier))
        .await
        .unwrap_or_else(|e| panic!("code exchange: {e}"))
}

fn jwks_key<'a>(jwks: &'a Value, kid: &str) -> Option<&'a Value> {
    jwks["keys"].as_array()?.iter().find(|k| k["kid"] == kid)
}

#[tokio::test]
async fn alice_signs_in_at_a_real_keycloak_whose_keys_and_algorithms_tests_can_change() {
    let kc = Keycloak::from_env();
    kc.wait_ready().await;
    let realm = kc.new_realm("harness").await;
    assert!(
        realm
            .issuer()
            .starts_with(&format!("{}/realms/harness-", kc.url())),
        "{}",
        realm.issuer()
    );
    let discovery: Value = reqwest::get(realm.discovery_url())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], realm.issuer().as_str());
    assert_eq!(discovery["token_endpoint"], realm.token_url().as_str());
    assert_eq!(discovery["jwks_uri"], realm.jwks_url().as_str());

    // Who alice is, in the id token: the issuer named after 127.0.0.1, the client as audience, her group.
    let tokens = sign_in(&realm, ALICE).await;
    let (header, claims) = keycloak::jwt_parts(tokens["id_token"].as_str().unwrap());
    assert_eq!(header["alg"], "RS256");
    assert_eq!(claims["iss"], realm.issuer().as_str());
    assert!(claims["iss"].as_str().unwrap().starts_with("http://127.0.0.1:"));
    assert_eq!(claims["aud"], realm.client_id());
    assert_eq!(claims["azp"], realm.client_id());
    assert_eq!(claims["email"], ALICE.email);
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["name"], ALICE.name);
    assert_eq!(claims["preferred_username"], ALICE.username);
    assert_eq!(claims["groups"], json!(["threat-modelers"]));
    let first_kid = header["kid"].as_str().unwrap().to_owned();
    assert!(jwks_key(&realm.jwks().await, &first_kid).is_some());
    // … and at userinfo, with the access token.
    let info: Value = reqwest::Client::new()
        .get(realm.userinfo_url())
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["groups"], json!(["threat-modelers"]));
    assert_eq!(info["email"], ALICE.email);

    // A wrong password: the form comes back with Keycloak's error, and no code.
    let start = realm.authorization_url(REDIRECT, "s", None);
    let wrong = keycloak::login(&keycloak::browser(), &start, "alice", "not-her-password").await;
    let message = wrong.expect_err("no code for a wrong password");
    assert!(message.contains("Invalid username or password"), "{message}");

    // Key rotation: a new signing key, listed in the JWKS, signs the next id tokens; the old one is passive
    // (still listed, for the tokens it signed).
    let rotation = realm.rotate_keys().await;
    assert_eq!(rotation.old_kid, first_kid);
    let jwks = realm.jwks().await;
    assert!(jwks_key(&jwks, &rotation.new_kid).is_some(), "{jwks}");
    assert!(jwks_key(&jwks, &rotation.old_kid).is_some(), "{jwks}");
    let tokens = sign_in(&realm, ALICE).await;
    let (header, _) = keycloak::jwt_parts(tokens["id_token"].as_str().unwrap());
    assert_eq!(header["kid"], rotation.new_kid.as_str());
    assert_eq!(header["alg"], "RS256");

    // Other algorithms for the id token: ES256 (P-256) and EdDSA (Ed25519), keys in the JWKS.
    for (alg, crv) in [("ES256", "P-256"), ("EdDSA", "Ed25519")] {
        realm.set_id_token_alg(alg).await;
        let tokens = sign_in(&realm, ALICE).await;
        let (header, claims) = keycloak::jwt_parts(tokens["id_token"].as_str().unwrap());
        assert_eq!(header["alg"], alg);
        assert_eq!(claims["email"], ALICE.email);
        let key = jwks_key(&realm.jwks().await, header["kid"].as_str().unwrap()).cloned();
        assert_eq!(key.expect("the signing key is published")["crv"], crv);
    }

    // The imported realm is untouched by all this; carol is in tmi-admins there.
    let tmi = kc.realm(keycloak::IMPORTED_REALM);
    let tokens = sign_in(&tmi, keycloak::CAROL).await;
    let (header, claims) = keycloak::jwt_parts(tokens["id_token"].as_str().unwrap());
    assert_eq!(header["alg"], "RS256");
    assert_eq!(claims["iss"], tmi.issuer().as_str());
    assert_eq!(claims["groups"], json!(["tmi-admins"]));
}
