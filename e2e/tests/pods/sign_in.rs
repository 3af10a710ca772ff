//! Real sign-in on real pods: a production-mode TmiInstance whose only way in is an OpenID Connect
//! provider, the Keycloak that scripts/with-services.sh starts (reached by the pods over HTTPS at the
//! node's address, its CA given to the instance as its trusted CA). The test plays the browser:
//! authorize at the instance's Service → Keycloak's login form → the instance's callback → tokens →
//! `/me`, and checks that administrators by IdP group work.

use std::time::Duration;

use kube::api::Api;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tmi_operator::crd::TmiInstance;

use super::keycloak::{self, Keycloak, Realm, query_param};
use super::{cp, database, install_operator, is_ready, redis_url, service, wait_instance};

/// The client callback the test registers in the instance's allowlist.
const CLIENT_CALLBACK: &str = "http://localhost:8079/";

/// A reqwest client that trusts the run's Keycloak CA and follows no redirects (the "browser").
fn browser(ca_pem: &[u8]) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Applies the client Secret, the CA ConfigMap and a production-mode instance with Keycloak as its
/// only provider and the members of Keycloak's `tmi-admins` group as administrators.
fn apply(ns: &str, name: &str, db_url: &str, realm: &Realm, issuer: &str, ca_pem: &str) {
    let instance = json!({
        "apiVersion": "tmi.dev/v1alpha1", "kind": "TmiInstance", "metadata": { "name": name },
        "spec": {
            "version": env!("CARGO_PKG_VERSION"),
            "buildMode": "Production",
            "server": { "replicas": 1, "env": [
                { "name": "TMI_OAUTH_CLIENT_CALLBACK_ALLOWLIST", "value": CLIENT_CALLBACK }
            ] },
            "database": { "external": { "urlSecretRef": { "name": format!("{name}-db"), "key": "url" } } },
            "cache": { "external": { "urlSecretRef": { "name": format!("{name}-redis"), "key": "url" } } },
            "auth": {
                "providers": [{
                    "id": "keycloak",
                    "name": "Keycloak",
                    "clientIdSecretRef": { "name": format!("{name}-oidc"), "key": "client-id" },
                    "clientSecretSecretRef": { "name": format!("{name}-oidc"), "key": "client-secret" },
                    "issuer": issuer,
                }],
                "trustedCA": { "configMapKeyRef": { "name": format!("{name}-idp-ca"), "key": "ca.crt" } },
                "administrators": [{ "provider": "keycloak", "group": "tmi-admins" }],
            },
        }
    });
    let objects = json!({
        "apiVersion": "v1", "kind": "List", "items": [
            { "apiVersion": "v1", "kind": "Secret", "metadata": { "name": format!("{name}-db") },
              "stringData": { "url": db_url } },
            { "apiVersion": "v1", "kind": "Secret", "metadata": { "name": format!("{name}-redis") },
              "stringData": { "url": redis_url() } },
            { "apiVersion": "v1", "kind": "Secret", "metadata": { "name": format!("{name}-oidc") },
              "stringData": { "client-id": realm.client_id(), "client-secret": realm.client_secret() } },
            { "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": format!("{name}-idp-ca") },
              "data": { "ca.crt": ca_pem } },
            instance,
        ]
    });
    let out = cp()
        .kubectl_stdin(
            &["apply", "-n", ns, "--server-side", "-f", "-"],
            &serde_json::to_string(&objects).unwrap(),
        )
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// One sign-in as `user` through the instance at `base`: the token answer.
async fn sign_in(http: &reqwest::Client, base: &str, user: &str) -> Value {
    let (verifier, challenge) = keycloak::pkce();
    let res = http
        .get(format!(
            "{base}/oauth2/authorize?idp=keycloak&scope=openid%20profile%20email&code_challenge={challenge}&code_challenge_method=S256&client_callback={CLIENT_CALLBACK}&state=e2e"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::FOUND,
        "{}",
        res.text().await.unwrap_or_default()
    );
    let to_idp = res.headers()["location"].to_str().unwrap().to_owned();
    let back = keycloak::login(http, &to_idp, user, &format!("{user}-password"))
        .await
        .unwrap_or_else(|e| panic!("Keycloak login of {user}: {e}"));
    // Keycloak redirects the browser to the instance's public callback; deliver it to the Service.
    let query = back.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let res = http
        .get(format!("{base}/oauth2/callback?{query}"))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let location = res
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned());
    assert_eq!(
        status,
        StatusCode::FOUND,
        "callback: {}",
        res.text().await.unwrap_or_default()
    );
    let location = location.unwrap();
    assert!(location.starts_with(CLIENT_CALLBACK), "{location}");
    let code = query_param(&location, "code").unwrap();
    let res = http
        .post(format!("{base}/oauth2/token?idp=keycloak"))
        .json(&json!({"grant_type": "authorization_code", "code": code, "code_verifier": verifier, "redirect_uri": CLIENT_CALLBACK}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

async fn me(http: &reqwest::Client, base: &str, token: &str) -> Value {
    let res = http
        .get(format!("{base}/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

#[tokio::test]
async fn a_production_instance_signs_people_in_through_keycloak() {
    install_operator();
    let kc = Keycloak::from_env();
    let ca_file =
        std::env::var("TMI_TEST_KEYCLOAK_CA_FILE").expect("TMI_TEST_KEYCLOAK_CA_FILE: run `make test`");
    let ca_pem = std::fs::read_to_string(&ca_file).unwrap();
    kc.wait_ready().await;
    let realm = kc.new_realm("e2e").await;
    let issuer = realm
        .pod_issuer()
        .expect("TMI_TEST_POD_KEYCLOAK_URL: run inside scripts/isolated.sh (make test)");
    assert!(issuer.starts_with("https://"), "{issuer}");

    let ns = cp().namespace("sign-in").await;
    let name = "signin";
    let db = database("signin");
    apply(&ns.name, name, &db, &realm, &issuer, &ca_pem);
    let client = ns.client.clone();
    let api: Api<TmiInstance> = Api::namespaced(client.clone(), &ns.name);
    let obj = wait_instance(&api, name, "the instance Ready", is_ready).await;
    let public = obj["status"]["url"].as_str().unwrap().to_owned();
    // The callback the instance registers is its public URL's; the IdP must know it.
    realm.add_redirect_uri(&format!("{public}/oauth2/callback")).await;

    let tmi = service(&client, &ns.name, name).await;
    let http = browser(ca_pem.as_bytes());
    let providers: Value = http
        .get(format!("{}/oauth2/providers", tmi.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = providers["providers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    // Production mode: Keycloak is the only way in.
    assert_eq!(ids, ["keycloak"], "{providers}");
    assert_eq!(
        providers["providers"][0]["redirect_uri"],
        format!("{public}/oauth2/callback")
    );

    let alice = sign_in(&http, &tmi.base, "alice").await;
    let alice_me = me(&http, &tmi.base, alice["access_token"].as_str().unwrap()).await;
    assert_eq!(alice_me["provider"], "keycloak");
    assert_eq!(alice_me["email"], "alice@example.test");
    assert_eq!(alice_me["is_admin"], false);
    let carol = sign_in(&http, &tmi.base, "carol").await;
    let carol_me = me(&http, &tmi.base, carol["access_token"].as_str().unwrap()).await;
    assert_eq!(carol_me["is_admin"], true, "{carol_me}");

    // The dev login is refused in production mode.
    let res = http
        .get(format!(
            "{}/oauth2/authorize?idp=tmi&scope=openid&code_challenge={}&code_challenge_method=S256&client_callback={CLIENT_CALLBACK}&login_hint=alice",
            tmi.base,
            keycloak::pkce().1
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}
