//! A real Keycloak for the sign-in tests: the one `scripts/services.sh` starts (`TMI_TEST_KEYCLOAK_URL`, realm
//! `tmi` imported from `tests/fixtures/keycloak/realm-tmi.json`). Fresh realms from that template through the
//! admin REST API, so that a test may rotate keys or switch algorithms without disturbing the others; its
//! login form driven as a browser would (its session cookies by hand: they are `Secure`, even over HTTP, and
//! reqwest's cookie store would not send them); a direct code exchange; PKCE and unverified JWT decoding for
//! assertions. Self-contained (reqwest, serde_json, tokio, base64, sha2, uuid) so that `e2e/` includes it by
//! `#[path]` too. IO: HTTP to Keycloak.
//!
//! ```ignore
//! let kc = Keycloak::from_env();
//! kc.wait_ready().await;
//! let realm = kc.new_realm("my-test").await;        // issuer http://127.0.0.1:<port>/realms/my-test-<random>
//! let start = realm.authorization_url("http://127.0.0.1:8080/oauth2/callback", "state", None);
//! let back = keycloak::login(&keycloak::browser(), &start, ALICE.username, ALICE.password).await?;
//! let code = keycloak::query_param(&back, "code").unwrap();
//! let tokens = realm.exchange_code(&code, "http://127.0.0.1:8080/oauth2/callback", None).await?;
//! ```
// Each test binary that includes this module uses a part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};
use sha2::Digest;

/// The realm template (also imported at start as realm `tmi`).
pub const TEMPLATE: &str = include_str!("../fixtures/keycloak/realm-tmi.json");
/// The realm `scripts/services.sh` imports at start.
pub const IMPORTED_REALM: &str = "tmi";
/// The confidential client of the template (standard flow only; redirect URIs `http://127.0.0.1/oauth2/callback`
/// and `http://localhost/oauth2/callback`, which Keycloak matches on any port of that loopback host).
pub const CLIENT_ID: &str = "tmi-server";
/// Its secret (a fixed test value).
pub const CLIENT_SECRET: &str = "tmi-server-test-secret";
/// The bootstrap admin of the master realm (`scripts/services.sh` sets it).
pub const ADMIN_USERNAME: &str = "tmi-test-admin";
pub const ADMIN_PASSWORD: &str = "tmi-test-admin-password";

/// A user of the template: fixed password, verified email; `groups` is what the `groups` claim carries
/// (group names, not paths) in id tokens, access tokens and userinfo.
#[derive(Clone, Copy, Debug)]
pub struct User {
    pub username: &'static str,
    pub password: &'static str,
    pub email: &'static str,
    pub name: &'static str,
    pub groups: &'static [&'static str],
}

pub const ALICE: User = User {
    username: "alice",
    password: "alice-password",
    email: "alice@example.test",
    name: "Alice Liddell",
    groups: &["threat-modelers"],
};
pub const BOB: User = User {
    username: "bob",
    password: "bob-password",
    email: "bob@example.test",
    name: "Bob Example",
    groups: &[],
};
pub const CAROL: User = User {
    username: "carol",
    password: "carol-password",
    email: "carol@example.test",
    name: "Carol Example",
    groups: &["tmi-admins"],
};

/// How long `wait_ready` waits: Keycloak needs 15-40 s on an idle 2-core machine, more beside a build.
const READY_DEADLINE: Duration = Duration::from_secs(240);

/// The running Keycloak.
#[derive(Clone, Debug)]
pub struct Keycloak {
    base: String,
    pod_base: Option<String>,
    http: reqwest::Client,
}

impl Keycloak {
    /// The Keycloak of `TMI_TEST_KEYCLOAK_URL` (and `TMI_TEST_POD_KEYCLOAK_URL`, its address for pods, inside
    /// `scripts/isolated.sh`). Panics (a test failure, never a skip) when the variable is unset.
    pub fn from_env() -> Self {
        let base = std::env::var("TMI_TEST_KEYCLOAK_URL").expect(
            "TMI_TEST_KEYCLOAK_URL is not set: run the tests under scripts/with-services.sh (make test does), \
             which starts Keycloak (fetched and cached by scripts/keycloak.sh)",
        );
        Self {
            base: base.trim_end_matches('/').to_owned(),
            pod_base: std::env::var("TMI_TEST_POD_KEYCLOAK_URL")
                .ok()
                .map(|u| u.trim_end_matches('/').to_owned()),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(60))
                .build()
                .expect("build an HTTP client"),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// `http://<node address>:<port>` inside `scripts/isolated.sh`, where pods reach it; `None` elsewhere.
    pub fn pod_url(&self) -> Option<&str> {
        self.pod_base.as_deref()
    }

    /// Waits until the imported realm's discovery document is served (Keycloak starts in the background while
    /// the tests run); panics after 240 s with the end of Keycloak's log.
    pub async fn wait_ready(&self) {
        let url = format!(
            "{}/realms/{IMPORTED_REALM}/.well-known/openid-configuration",
            self.base
        );
        let began = Instant::now();
        loop {
            let last = match self.http.get(&url).send().await {
                Ok(r) if r.status() == StatusCode::OK => return,
                Ok(r) => format!("status {}", r.status()),
                Err(e) => e.to_string(),
            };
            if began.elapsed() > READY_DEADLINE {
                let log = std::env::var("TMI_TEST_KEYCLOAK_LOG")
                    .ok()
                    .and_then(|p| std::fs::read_to_string(p).ok())
                    .map(|l| {
                        let lines: Vec<&str> = l.lines().collect();
                        lines[lines.len().saturating_sub(30)..].join("\n")
                    })
                    .unwrap_or_default();
                panic!(
                    "Keycloak at {} not ready after {READY_DEADLINE:?} ({last}); its log ends with:\n{log}",
                    self.base
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The realm `name`, which must exist (the imported `tmi`, or one `new_realm` made).
    pub fn realm(&self, name: &str) -> Realm {
        Realm {
            kc: self.clone(),
            name: name.to_owned(),
        }
    }

    /// A fresh realm from the template, named `<prefix>-<random>`: its own keys, client and users.
    pub async fn new_realm(&self, prefix: &str) -> Realm {
        let name = format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let mut rep: Value = serde_json::from_str(TEMPLATE).expect("parse the realm template");
        rep["realm"] = json!(name);
        self.admin(Method::POST, "/admin/realms", Some(&rep)).await;
        self.realm(&name)
    }

    /// An admin REST call as the bootstrap admin; panics unless 2xx. Returns the JSON body (`Null` if none).
    pub async fn admin(&self, method: Method, path: &str, body: Option<&Value>) -> Value {
        let token = self.admin_token().await;
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.expect("reach Keycloak's admin API");
        let status = res.status();
        let text = res.text().await.expect("read an admin API answer");
        assert!(
            status.is_success(),
            "Keycloak admin API {method} {path}: {status}: {text}"
        );
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("admin API answers JSON")
        }
    }

    async fn admin_token(&self) -> String {
        let res = self
            .http
            .post(format!(
                "{}/realms/master/protocol/openid-connect/token",
                self.base
            ))
            .form(&[
                ("grant_type", "password"),
                ("client_id", "admin-cli"),
                ("username", ADMIN_USERNAME),
                ("password", ADMIN_PASSWORD),
            ])
            .send()
            .await
            .expect("reach Keycloak's token endpoint");
        let status = res.status();
        let body: Value = res.json().await.expect("token endpoint answers JSON");
        assert_eq!(status, StatusCode::OK, "admin sign-in: {body}");
        body["access_token"]
            .as_str()
            .expect("an admin access token")
            .to_owned()
    }
}

/// A realm of that Keycloak, with the template's client `tmi-server`.
#[derive(Clone, Debug)]
pub struct Realm {
    kc: Keycloak,
    name: String,
}

/// What `Realm::rotate_keys` did: the RS256 signing key id before and after.
#[derive(Clone, Debug)]
pub struct Rotation {
    pub old_kid: String,
    pub new_kid: String,
}

impl Realm {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `http://127.0.0.1:<port>/realms/<name>`: Keycloak names the issuer after the host a request used, so
    /// tokens got through 127.0.0.1 carry this one.
    pub fn issuer(&self) -> String {
        format!("{}/realms/{}", self.kc.base, self.name)
    }

    /// The issuer seen by pods (`TMI_TEST_POD_KEYCLOAK_URL`), inside `scripts/isolated.sh`.
    pub fn pod_issuer(&self) -> Option<String> {
        self.kc
            .pod_base
            .as_ref()
            .map(|b| format!("{b}/realms/{}", self.name))
    }

    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer())
    }

    pub fn auth_url(&self) -> String {
        format!("{}/protocol/openid-connect/auth", self.issuer())
    }

    pub fn token_url(&self) -> String {
        format!("{}/protocol/openid-connect/token", self.issuer())
    }

    pub fn userinfo_url(&self) -> String {
        format!("{}/protocol/openid-connect/userinfo", self.issuer())
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/protocol/openid-connect/certs", self.issuer())
    }

    pub fn client_id(&self) -> &'static str {
        CLIENT_ID
    }

    pub fn client_secret(&self) -> &'static str {
        CLIENT_SECRET
    }

    /// An authorization request of the code flow (scope `openid email profile`), with PKCE S256 when
    /// `code_challenge` is given: the URL a relying party redirects the browser to.
    pub fn authorization_url(&self, redirect_uri: &str, state: &str, code_challenge: Option<&str>) -> String {
        let mut params = vec![
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", redirect_uri),
            ("scope", "openid email profile"),
            ("state", state),
        ];
        if let Some(c) = code_challenge {
            params.extend([("code_challenge", c), ("code_challenge_method", "S256")]);
        }
        Url::parse_with_params(&self.auth_url(), &params)
            .expect("a valid authorization URL")
            .to_string()
    }

    /// Exchanges an authorization code at the token endpoint as the client (`client_secret_post`): the token
    /// JSON (`id_token`, `access_token`, …), or Keycloak's error JSON (`invalid_grant` for a used or expired
    /// code).
    pub async fn exchange_code(
        &self,
        code: &str,
        redirect_uri: &str,
        code_verifier: Option<&str>,
    ) -> Result<Value, Value> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ];
        if let Some(v) = code_verifier {
            form.push(("code_verifier", v));
        }
        let res = self
            .kc
            .http
            .post(self.token_url())
            .form(&form)
            .send()
            .await
            .expect("reach Keycloak's token endpoint");
        let status = res.status();
        let body: Value = res.json().await.expect("token endpoint answers JSON");
        if status == StatusCode::OK {
            Ok(body)
        } else {
            Err(body)
        }
    }

    /// The realm's JWKS (`{"keys": [...]}`), as a relying party fetches it.
    pub async fn jwks(&self) -> Value {
        let res = self
            .kc
            .http
            .get(self.jwks_url())
            .send()
            .await
            .expect("reach Keycloak's JWKS");
        assert_eq!(res.status(), StatusCode::OK, "JWKS of {}", self.name);
        res.json().await.expect("JWKS is JSON")
    }

    /// The id of the key that signs `alg` (`RS256`, `ES256`, `EdDSA`) now.
    pub async fn active_kid(&self, alg: &str) -> String {
        let keys = self
            .kc
            .admin(Method::GET, &format!("/admin/realms/{}/keys", self.name), None)
            .await;
        keys["active"][alg]
            .as_str()
            .unwrap_or_else(|| panic!("no active {alg} key in {keys}"))
            .to_owned()
    }

    /// Key rotation as an IdP does it: a new RSA key (priority above every other) becomes the active RS256
    /// signing key, and the old ones become passive: no longer used to sign, still published in the JWKS for
    /// the tokens they signed.
    pub async fn rotate_keys(&self) -> Rotation {
        let old_kid = self.active_kid("RS256").await;
        let path = format!(
            "/admin/realms/{}/components?type=org.keycloak.keys.KeyProvider",
            self.name
        );
        let providers = self.kc.admin(Method::GET, &path, None).await;
        let rsa: Vec<Value> = providers
            .as_array()
            .expect("a list of key providers")
            .iter()
            .filter(|c| c["providerId"] == "rsa-generated")
            .cloned()
            .collect();
        let top = rsa
            .iter()
            .filter_map(|c| c["config"]["priority"][0].as_str()?.parse::<i64>().ok())
            .max()
            .unwrap_or(0);
        let realm_id = self.realm_id().await;
        let new = json!({
            "name": format!("rsa-rotated-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            "providerId": "rsa-generated",
            "providerType": "org.keycloak.keys.KeyProvider",
            "parentId": realm_id,
            "config": {
                "priority": [(top + 10).to_string()],
                "keySize": ["2048"],
                "algorithm": ["RS256"],
            },
        });
        let components = format!("/admin/realms/{}/components", self.name);
        self.kc.admin(Method::POST, &components, Some(&new)).await;
        for mut old in rsa {
            old["config"]["active"] = json!(["false"]);
            let id = old["id"].as_str().expect("a component id").to_owned();
            self.kc
                .admin(Method::PUT, &format!("{components}/{id}"), Some(&old))
                .await;
        }
        let new_kid = self.active_kid("RS256").await;
        assert_ne!(old_kid, new_kid, "the rotation changed the signing key");
        Rotation { old_kid, new_kid }
    }

    /// Signs the client's id tokens with `alg` (`RS256`, `ES256` or `EdDSA`; the template has a key for each).
    pub async fn set_id_token_alg(&self, alg: &str) {
        self.update_client(|c| c["attributes"]["id.token.signed.response.alg"] = json!(alg))
            .await;
    }

    /// Registers one more redirect URI for the client (e.g. a pod's address).
    pub async fn add_redirect_uri(&self, uri: &str) {
        self.update_client(|c| {
            let uris = c["redirectUris"]
                .as_array_mut()
                .expect("the client's redirect URIs");
            uris.push(json!(uri));
        })
        .await;
    }

    /// How long an authorization code stays valid (Keycloak's `accessCodeLifespan`, 60 s in the template).
    pub async fn set_code_lifespan(&self, secs: u32) {
        let path = format!("/admin/realms/{}", self.name);
        self.kc
            .admin(Method::PUT, &path, Some(&json!({ "accessCodeLifespan": secs })))
            .await;
    }

    async fn realm_id(&self) -> String {
        let rep = self
            .kc
            .admin(Method::GET, &format!("/admin/realms/{}", self.name), None)
            .await;
        rep["id"].as_str().expect("a realm id").to_owned()
    }

    async fn update_client(&self, change: impl FnOnce(&mut Value)) {
        let clients = format!("/admin/realms/{}/clients", self.name);
        let found = self
            .kc
            .admin(Method::GET, &format!("{clients}?clientId={CLIENT_ID}"), None)
            .await;
        let id = found[0]["id"].as_str().expect("the tmi-server client").to_owned();
        let path = format!("{clients}/{id}");
        let mut client = self.kc.admin(Method::GET, &path, None).await;
        change(&mut client);
        self.kc.admin(Method::PUT, &path, Some(&client)).await;
    }
}

/// An HTTP client for `login`: no redirects followed (the final one carries the code).
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("build an HTTP client")
}

/// Signs `username` in as a browser would: from `start_url` (a relying party's URL that redirects to Keycloak,
/// such as tmi-server's `/oauth2/authorize`, or Keycloak's authorization URL itself) follows the redirects to
/// Keycloak's login page, posts the login form (its `action` read from the page, its cookies sent back by
/// hand), and returns the `Location` of Keycloak's final redirect (to the client's redirect URI, with `code`
/// and `state`) without following it. `client` must not follow redirects (`browser()`).
///
/// `Err` carries Keycloak's message when the login form comes back (a wrong password: "Invalid username or
/// password."), or says which page came instead of the redirect; anything else unexpected panics.
pub async fn login(
    client: &reqwest::Client,
    start_url: &str,
    username: &str,
    password: &str,
) -> Result<String, String> {
    let mut jar = Jar::default();
    let mut url = Url::parse(start_url).expect("an absolute start URL");
    let mut page = None;
    for _ in 0..10 {
        let res = client
            .get(url.clone())
            .header(reqwest::header::COOKIE, jar.header(&url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        jar.store(&url, res.headers());
        let status = res.status();
        if status.is_redirection() {
            url = location(&url, res.headers());
            continue;
        }
        let body = res.text().await.expect("read the login page");
        assert_eq!(status, StatusCode::OK, "GET {url}: {body}");
        page = Some(body);
        break;
    }
    let page = page.unwrap_or_else(|| panic!("more than 10 redirects from {start_url}"));
    let action = form_action(&page, "kc-form-login")
        .ok_or_else(|| format!("no login form at {url}: {}", page_message(&page)))?;
    let action = url.join(&action).expect("a valid form action");
    let res = client
        .post(action.clone())
        .header(reqwest::header::COOKIE, jar.header(&action))
        .form(&[
            ("username", username),
            ("password", password),
            ("credentialId", ""),
        ])
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {action}: {e}"));
    let status = res.status();
    if status.is_redirection() {
        let to = location(&action, res.headers());
        if to.path().contains("/login-actions/") {
            return Err(format!(
                "Keycloak asks for more than a password (a required action): {to}"
            ));
        }
        return Ok(to.to_string());
    }
    let body = res.text().await.unwrap_or_default();
    Err(format!("{status}: {}", page_message(&body)))
}

/// The value of query parameter `name` of `url` (e.g. `code` and `state` of `login`'s result).
pub fn query_param(url: &str, name: &str) -> Option<String> {
    Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A PKCE pair: (`code_verifier`, S256 `code_challenge`).
pub fn pkce() -> (String, String) {
    let verifier = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let challenge =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// A JWT's header and claims, decoded WITHOUT verification (for assertions on what Keycloak issued).
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut decode = |what: &str| -> Value {
        let part = parts
            .next()
            .unwrap_or_else(|| panic!("a JWT has a {what}: {token}"));
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap_or_else(|e| panic!("JWT {what} is base64url: {e}"));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("JWT {what} is JSON: {e}"))
    };
    let header = decode("header");
    let claims = decode("payload");
    (header, claims)
}

/// Cookies by origin, as a browser keeps them for this flow. Keycloak marks its session cookies `Secure`
/// (even over HTTP) and `SameSite=None`; a browser on a loopback origin still sends them, reqwest's cookie
/// store does not, hence this.
#[derive(Default)]
struct Jar(HashMap<String, Vec<(String, String)>>);

impl Jar {
    fn store(&mut self, url: &Url, headers: &reqwest::header::HeaderMap) {
        let cookies = self.0.entry(url.origin().ascii_serialization()).or_default();
        for h in headers.get_all(reqwest::header::SET_COOKIE) {
            let Ok(h) = h.to_str() else { continue };
            let mut attrs = h.split(';');
            let Some((name, value)) = attrs.next().and_then(|nv| nv.split_once('=')) else {
                continue;
            };
            let (name, value) = (name.trim().to_owned(), value.trim().to_owned());
            let expired = attrs.any(|a| {
                let a = a.trim().to_ascii_lowercase();
                a == "max-age=0" || a.starts_with("expires=thu, 01 jan 1970")
            });
            cookies.retain(|(n, _)| *n != name);
            if !expired && !value.is_empty() {
                cookies.push((name, value));
            }
        }
    }

    fn header(&self, url: &Url) -> String {
        self.0
            .get(&url.origin().ascii_serialization())
            .map(|c| {
                c.iter()
                    .map(|(n, v)| format!("{n}={v}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default()
    }
}

fn location(base: &Url, headers: &reqwest::header::HeaderMap) -> Url {
    let to = headers
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .expect("a redirect has a Location");
    base.join(to).expect("a valid Location")
}

/// The `action` of the form with HTML id `id` (Keycloak's login theme: `<form id="kc-form-login" … action="…">`),
/// its character references decoded.
fn form_action(html: &str, id: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\""))?;
    let start = html[..at].rfind("<form")?;
    let end = at + html[at..].find('>')?;
    let tag = &html[start..end];
    let value_at = tag.find("action=\"")? + "action=\"".len();
    let value = &tag[value_at..];
    Some(html_unescape(&value[..value.find('"')?]))
}

/// What Keycloak's page says to the user (the login form's field error or the page's alert), as plain text.
fn page_message(html: &str) -> String {
    for marker in ["id=\"input-error", "kc-feedback-text", "id=\"kc-error-message"] {
        if let Some(at) = html.find(marker) {
            let text = &html[at..];
            let text = &text[text.find('>').map_or(0, |i| i + 1)..];
            let text = &text[..text.find('<').unwrap_or(text.len())];
            let text = html_unescape(text.trim());
            if !text.is_empty() {
                return text;
            }
        }
    }
    let title = html
        .find("<title>")
        .and_then(|s| Some(&html[s + 7..s + html[s..].find("</title>")?]));
    format!("a page titled {:?}", title.unwrap_or("(none)"))
}

/// Decodes the character references of an HTML attribute or text (`&amp;`, `&quot;`, `&#61;`, `&#x3D;`, …).
fn html_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let decoded = rest.find(';').and_then(|end| {
            let entity = &rest[1..end];
            let c = match entity {
                "amp" => Some('&'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "lt" => Some('<'),
                "gt" => Some('>'),
                _ => entity
                    .strip_prefix("#x")
                    .or_else(|| entity.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            }?;
            Some((c, end + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}
