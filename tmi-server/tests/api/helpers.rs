//! Test harness: a real server on 127.0.0.1:0 over SQLite (temp dir) or PostgreSQL (a fresh
//! database on `TMI_TEST_DATABASE_URL`), a reqwest client, dev-provider login, and validation of
//! every response body against the vendored OpenAPI contract (`api/tmi-openapi.json`).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use base64::Engine;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Digest;
use tmi_server::auth::kv::{MemoryKv, RedisKv, TokenKv};
use tmi_server::config::Config;
use tmi_server::openapi::Spec;

use crate::pgdb::TestDatabase;

/// The contract, read from the vendored copy (`api/README.md`; a unit test keeps it equal to upstream).
pub static CONTRACT: LazyLock<Spec> = LazyLock::new(|| {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/api/tmi-openapi.json");
    let text = std::fs::read_to_string(path).expect("read api/tmi-openapi.json");
    Spec::from_json(&text).expect("parse the OpenAPI contract")
});

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn redis_url() -> String {
    std::env::var("TMI_TEST_REDIS_URL").expect(
        "TMI_TEST_REDIS_URL is not set: run the tests with `make test`, which starts PostgreSQL and Redis",
    )
}

/// Set in `Options::vars` (with `redis`), the Redis key prefix of the token store, so that two
/// servers share it as the replicas of one deployment do; otherwise each server has its own.
pub const REDIS_PREFIX_VAR: &str = "TMI_TEST_REDIS_PREFIX";

/// Options for a test server.
#[derive(Default, Clone)]
pub struct Options {
    pub redis: bool,
    pub vars: Vec<(&'static str, String)>,
    /// Another server's database (`TestApp::database_url`): a second replica, or the same server
    /// after a restart. That server must outlive this one (it owns the database).
    pub database: Option<String>,
}

/// A running server.
pub struct TestApp {
    pub base: String,
    pub database_url: String,
    pub client: reqwest::Client,
    pub state: tmi_server::state::AppState,
    _dir: tempfile::TempDir,
    _pg: Option<TestDatabase>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A parsed response.
#[derive(Debug)]
pub struct Res {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Res {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        &self.body
    }
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        assert_eq!(
            self.body["error"], code,
            "unexpected error code; body: {}",
            self.body
        );
        assert!(
            self.body["error_description"].is_string(),
            "TMI error body: {}",
            self.body
        );
    }
}

/// A signed-in user.
#[derive(Clone, Debug)]
pub struct Session {
    pub hint: String,
    pub access: String,
    pub refresh: String,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, Options::default()).await
    }

    pub async fn spawn_with(backend: Backend, opts: Options) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (url, pg) = match (backend, &opts.database) {
            (_, Some(url)) => (url.clone(), None),
            (Backend::Sqlite, None) => (format!("sqlite://{}/tmi.db", dir.path().display()), None),
            (Backend::Postgres, None) => {
                let db = TestDatabase::create("tmi_api").await;
                (db.url.clone(), Some(db))
            }
        };
        let mut vars: HashMap<String, String> = HashMap::new();
        vars.insert("TMI_DATABASE_URL".into(), url.clone());
        vars.insert("TMI_BUILD_MODE".into(), "test".into());
        vars.insert(
            "TMI_JWT_SECRET".into(),
            "integration-test-secret-0123456789".into(),
        );
        vars.insert(
            "TMI_OAUTH_CLIENT_CALLBACK_ALLOWLIST".into(),
            "http://localhost:8079/,http://localhost:4200/*".into(),
        );
        vars.insert("TMI_CORS_ALLOWED_ORIGINS".into(), "http://localhost:4200".into());
        vars.insert("TMI_DB_MAX_OPEN_CONNS".into(), "5".into());
        vars.insert("TMI_DATA_DIR".into(), dir.path().display().to_string());
        // The scenarios send bursts of requests as one user from one address; `limits.rs` tests the
        // rate limits with this turned back on.
        vars.insert("TMI_DISABLE_RATE_LIMITING".into(), "true".into());
        for (k, v) in &opts.vars {
            vars.insert((*k).into(), v.clone());
        }
        let config = Config::from_vars(&vars).expect("valid test config");
        let store = tmi_server::connect_store(&config).await.expect("connect store");
        let kv: Arc<dyn TokenKv> = if opts.redis {
            // Replicas of one deployment share their keys: `REDIS_PREFIX_VAR` names the prefix.
            let prefix = vars
                .get(REDIS_PREFIX_VAR)
                .cloned()
                .unwrap_or_else(|| format!("test:{}:", uuid::Uuid::new_v4().simple()));
            // The configured Redis when a test sets one, as `build_state` does; else the test Redis.
            let url = vars.get("TMI_REDIS_URL").cloned().unwrap_or_else(redis_url);
            Arc::new(
                RedisKv::connect(&url, &prefix)
                    .await
                    .expect("connect TMI_TEST_REDIS_URL"),
            )
        } else {
            Arc::new(MemoryKv::default())
        };
        let state = tmi_server::build_state_with(config, store, kv, opts.redis)
            .await
            .expect("state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let st = state.clone();
        let server = tokio::spawn(async move {
            let _ = tmi_server::serve(listener, st, std::future::pending()).await;
        });
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        TestApp {
            base: format!("http://{addr}"),
            database_url: url,
            client,
            state,
            _dir: dir,
            _pg: pg,
            server,
        }
    }

    /// Sends a request and validates the response body against the contract.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
        headers: &[(&str, &str)],
    ) -> Res {
        let mut req = self
            .client
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some((ct, bytes)) = body {
            req = req.header("content-type", ct).body(bytes);
        }
        let res = req.send().await.expect("request");
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        let res = Res {
            status,
            headers,
            body,
        };
        validate(&method, path, &res);
        res
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Res {
        self.send(Method::GET, path, token, None, &[]).await
    }
    pub async fn delete(&self, path: &str, token: Option<&str>) -> Res {
        self.send(Method::DELETE, path, token, None, &[]).await
    }
    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Res {
        self.send(
            Method::POST,
            path,
            token,
            Some(("application/json", body.to_string().into_bytes())),
            &[],
        )
        .await
    }
    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> Res {
        self.send(
            Method::PUT,
            path,
            token,
            Some(("application/json", body.to_string().into_bytes())),
            &[],
        )
        .await
    }
    pub async fn patch(&self, path: &str, token: Option<&str>, ops: Value) -> Res {
        self.send(
            Method::PATCH,
            path,
            token,
            Some(("application/json-patch+json", ops.to_string().into_bytes())),
            &[],
        )
        .await
    }

    /// Runs the dev provider's authorize → token flow for `hint`.
    pub async fn login(&self, hint: &str) -> Session {
        let verifier = format!(
            "verifier-{}-{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let code = self.authorize(hint, &verifier).await;
        let res = self
            .post(
                "/oauth2/token?idp=tmi",
                None,
                json!({"grant_type": "authorization_code", "code": code, "code_verifier": verifier, "redirect_uri": "http://localhost:8079/"}),
            )
            .await;
        let body = res.expect(200).clone();
        Session {
            hint: hint.into(),
            access: body["access_token"].as_str().expect("access").into(),
            refresh: body["refresh_token"].as_str().expect("refresh").into(),
        }
    }

    /// `GET /oauth2/authorize` for the dev provider; returns the code from `Location`.
    pub async fn authorize(&self, hint: &str, verifier: &str) -> String {
        let path = format!(
            "/oauth2/authorize?idp=tmi&scope=openid%20profile%20email&code_challenge={}&code_challenge_method=S256&client_callback=http://localhost:8079/&state=st4te&login_hint={hint}",
            challenge(verifier)
        );
        let res = self.get(&path, None).await;
        assert_eq!(res.status, StatusCode::FOUND, "{}", res.body);
        let loc = res.header("location").expect("Location");
        assert!(loc.starts_with("http://localhost:8079/?code="), "{loc}");
        assert!(loc.ends_with("&state=st4te"), "{loc}");
        let code = loc
            .split("code=")
            .nth(1)
            .and_then(|s| s.split('&').next())
            .expect("code");
        code.to_owned()
    }

    /// Makes `hint` a member of a built-in group (before their next login).
    pub async fn add_to_group(&self, hint: &str, group: uuid::Uuid) {
        let user = self
            .state
            .store
            .find_user("tmi", hint)
            .await
            .expect("db")
            .expect("user exists");
        self.state
            .store
            .add_group_member(group, user.internal_uuid)
            .await
            .expect("add member");
    }
}

pub fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

/// Validates a response body against the contract's schema for this operation and status.
fn validate(method: &Method, path: &str, res: &Res) {
    let path_only = path.split('?').next().unwrap_or(path);
    let Some(template) = CONTRACT.template_for(path_only) else {
        return;
    };
    let m = if *method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    let Some(op) = CONTRACT.operation(m, &template) else {
        return;
    };
    if res.body.is_null() || *method == Method::HEAD {
        return;
    }
    let status = res.status.as_str().to_owned();
    let Some(schema) = op.response_schemas.get(&status) else {
        return;
    };
    // `/me/sessions` is an array in TMI and the real client, despite the spec's object.
    if template == "/me/sessions" {
        return;
    }
    if let Err(errors) = CONTRACT.validate(&format!("response:{}:{status}", op.id), schema, &res.body) {
        panic!(
            "{m} {path} -> {status}: response does not match the contract: {errors:?}\nbody: {}",
            res.body
        );
    }
}

/// A Redis of one test's own on a fixed port, which the test may stop and start again (empty: no
/// persistence), to play a Redis restart.
pub struct PrivateRedis {
    child: std::process::Child,
    pub port: u16,
}

impl PrivateRedis {
    pub fn start_on(port: u16) -> Self {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (installed by `make test`)");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        Self { child, port }
    }

    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        Self::start_on(port)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops it and starts it again on the same port, with nothing in it.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Starts it again on its port after `stop`, with nothing in it.
    pub fn start_again(&mut self) {
        *self = Self::start_on(self.port);
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
