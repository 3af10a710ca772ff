//! Collaboration test and benchmark support: real `tmi-server` processes (replicas) over a shared
//! database (a fresh PostgreSQL database or a SQLite file) and optionally a shared Redis, a dev
//! login, REST calls, and a WebSocket client that keeps its own copy of the diagram.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::time::Duration;

use base64::Engine;
use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Digest;

use crate::pgdb::TestDatabase;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

pub const BIN: &str = env!("CARGO_BIN_EXE_tmi-server");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Where replicas keep their state.
pub struct Env {
    pub database_url: String,
    pub redis_url: Option<String>,
    pub prefix: String,
    pub vars: Vec<(String, String)>,
    pub dir: tempfile::TempDir,
    _pg: Option<TestDatabase>,
}

impl Env {
    /// One machine: SQLite and the in-process bus.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self {
            database_url: format!("sqlite://{}/tmi.db", dir.path().display()),
            redis_url: None,
            prefix: String::new(),
            vars: Vec::new(),
            dir,
            _pg: None,
        }
    }

    /// A fresh PostgreSQL database on `TMI_TEST_DATABASE_URL`, with `redis` (a URL) shared by the
    /// replicas under a unique key prefix.
    pub async fn postgres(redis: Option<String>) -> Self {
        let db = TestDatabase::create("tmi_collab").await;
        Self {
            database_url: db.url.clone(),
            redis_url: redis,
            prefix: format!("collab-test:{}:", uuid::Uuid::new_v4().simple()),
            vars: Vec::new(),
            dir: tempfile::tempdir().expect("temp dir"),
            _pg: Some(db),
        }
    }

    pub fn test_redis() -> String {
        std::env::var("TMI_TEST_REDIS_URL").expect(
            "TMI_TEST_REDIS_URL is not set: run the tests with `make test`, which starts PostgreSQL and Redis",
        )
    }

    pub fn var(mut self, k: &str, v: &str) -> Self {
        self.vars.push((k.into(), v.into()));
        self
    }

    /// Starts one replica and waits until it is ready.
    pub async fn replica(&self) -> Replica {
        let port = free_port();
        let log = self.dir.path().join(format!("replica-{port}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TMI_DATABASE_URL", &self.database_url)
            .env("TMI_BUILD_MODE", "test")
            .env("TMI_JWT_SECRET", "collaboration-test-secret-0123456789")
            .env("TMI_SERVER_PORT", port.to_string())
            .env("TMI_SERVER_INTERFACE", "127.0.0.1")
            .env("TMI_DATA_DIR", self.dir.path())
            .env("TMI_OAUTH_CLIENT_CALLBACK_ALLOWLIST", "http://localhost:8079/")
            .env(
                "TMI_LOG_LEVEL",
                std::env::var("TMI_TEST_REPLICA_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env("TMI_DB_MAX_OPEN_CONNS", "8")
            .env("HOSTNAME", format!("replica-{port}"));
        if let Some(r) = &self.redis_url {
            cmd.env("TMI_REDIS_URL", r)
                .env("TMI_REDIS_KEY_PREFIX", &self.prefix);
        }
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(file.try_clone().expect("log"))
            .stderr(file.try_clone().expect("log"))
            .spawn()
            .expect("start tmi-server");
        let replica = Replica {
            child,
            base: format!("http://127.0.0.1:{port}"),
            port,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            log,
        };
        for _ in 0..300 {
            if let Ok(r) = replica
                .client
                .get(format!("{}/readyz", replica.base))
                .send()
                .await
                && r.status().is_success()
            {
                return replica;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "replica did not become ready:\n{}",
            std::fs::read_to_string(&replica.log).unwrap_or_default()
        );
    }
}

/// One `tmi-server` process.
pub struct Replica {
    child: Child,
    pub base: String,
    pub port: u16,
    pub client: reqwest::Client,
    pub log: std::path::PathBuf,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        if !std::thread::panicking() && log.contains("panicked at") {
            panic!("replica {} had a panicking task:\n{log}", self.port);
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- replica {} log (last lines) ---", self.port);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// A response.
#[derive(Debug)]
pub struct Res {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Res {
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
}

impl Replica {
    /// The process id (the benchmark reads its CPU time and peak RSS from /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process without warning (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks the process to stop (SIGTERM) and waits for it.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }

    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Res {
        call_at(&self.client, &self.base, method, path, token, body).await
    }

    /// A JSON Patch request.
    pub async fn patch(&self, path: &str, token: &str, ops: Value) -> Res {
        let res = self
            .client
            .patch(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json-patch+json")
            .body(ops.to_string())
            .send()
            .await
            .expect("request");
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.json().await.unwrap_or(Value::Null);
        Res {
            status,
            headers,
            body,
        }
    }

    /// The dev provider's PKCE login; returns the access token.
    pub async fn login(&self, hint: &str) -> String {
        login_at(&self.client, &self.base, hint).await
    }

    /// A threat model owned by the holder of `owner` (a token) with `acl` entries `(hint, role)`,
    /// and one diagram; returns their ids.
    pub async fn diagram(&self, owner: &str, acl: &[(&str, &str)]) -> (String, String) {
        let auth: Vec<Value> = acl
            .iter()
            .map(|(hint, role)| json!({"principal_type": "user", "provider": "tmi", "provider_id": hint, "role": role}))
            .collect();
        let tm = self
            .call(
                Method::POST,
                "/threat_models",
                Some(owner),
                Some(json!({"name": "Collaboration", "authorization": auth})),
            )
            .await;
        let tm_id = tm.expect(201)["id"].as_str().expect("tm id").to_owned();
        let d = self
            .call(
                Method::POST,
                &format!("/threat_models/{tm_id}/diagrams"),
                Some(owner),
                Some(json!({"name": "DFD", "type": "DFD-1.0.0"})),
            )
            .await;
        let d_id = d.expect(201)["id"].as_str().expect("diagram id").to_owned();
        (tm_id, d_id)
    }

    pub fn collaborate_path(tm: &str, d: &str) -> String {
        format!("/threat_models/{tm}/diagrams/{d}/collaborate")
    }

    /// POST collaborate (201 or 200); returns the session body.
    pub async fn session(&self, token: &str, tm: &str, d: &str) -> Value {
        let res = self
            .call(
                Method::POST,
                &Self::collaborate_path(tm, d),
                Some(token),
                Some(json!({})),
            )
            .await;
        assert!(
            matches!(res.status.as_u16(), 200 | 201),
            "collaborate: {} {}",
            res.status,
            res.body
        );
        res.body
    }

    pub async fn ticket(&self, token: &str, session_id: &str) -> String {
        let res = self
            .call(
                Method::GET,
                &format!("/ws/ticket?session_id={session_id}"),
                Some(token),
                None,
            )
            .await;
        res.expect(200)["ticket"].as_str().expect("ticket").to_owned()
    }

    /// Opens a socket with a fresh ticket from this replica.
    pub async fn connect(&self, token: &str, session: &Value) -> Client {
        let sid = session["session_id"].as_str().expect("session_id");
        let ticket = self.ticket(token, sid).await;
        self.connect_with(session, &ticket)
            .await
            .unwrap_or_else(|s| panic!("upgrade refused: {s}"))
    }

    /// Opens a socket with `ticket`; `Err(status)` when the upgrade is refused.
    pub async fn connect_with(&self, session: &Value, ticket: &str) -> Result<Client, u16> {
        let url = format!(
            "ws://127.0.0.1:{}/threat_models/{}/diagrams/{}/ws?session_id={}&ticket={ticket}",
            self.port,
            session["threat_model_id"].as_str().expect("tm"),
            session["diagram_id"].as_str().expect("d"),
            session["session_id"].as_str().expect("sid"),
        );
        let mut config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
        config.max_message_size = Some(64 << 20);
        match tokio_tungstenite::connect_async_with_config(url, Some(config), true).await {
            Ok((ws, _)) => Ok(Client::new(ws)),
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
            Err(e) => panic!("connect: {e}"),
        }
    }
}

/// What a client received.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Json(Value),
    Closed(Option<u16>),
}

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A collaboration client that applies what it receives to its own copy of the diagram, as the
/// web client does.
pub struct Client {
    ws: Ws,
    pub cells: BTreeMap<String, Value>,
    pub vector: i64,
    /// `update_vector`s of the operation events received, in arrival order.
    pub vectors: Vec<i64>,
    pub closed: Option<Option<u16>>,
}

impl Client {
    fn new(ws: Ws) -> Self {
        Self {
            ws,
            cells: BTreeMap::new(),
            vector: 0,
            vectors: Vec::new(),
            closed: None,
        }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("send");
    }

    pub async fn send_raw(&mut self, text: String) {
        let _ = self.ws.send(Message::Text(text.into())).await;
    }

    /// Sends an operation; returns its id. Cell ids may be short names (`cid`).
    pub async fn op(&mut self, mut cells: Value) -> String {
        for c in cells.as_array_mut().into_iter().flatten() {
            if let Some(name) = c["id"].as_str() {
                c["id"] = json!(cid(name));
            }
        }
        let id = uuid::Uuid::new_v4().to_string();
        let base = self.vector;
        self.send(
            json!({"message_type": "diagram_operation_request", "operation_id": id, "base_vector": base,
            "operation": {"type": "patch", "cells": cells}}),
        )
        .await;
        id
    }

    /// The next frame within `timeout`, applying diagram messages to the local copy.
    pub async fn next_within(&mut self, timeout: Duration) -> Option<Frame> {
        if let Some(c) = self.closed {
            return Some(Frame::Closed(c));
        }
        loop {
            let msg = match tokio::time::timeout(timeout, self.ws.next()).await {
                Err(_) => return None,
                Ok(None) | Ok(Some(Err(_))) => {
                    self.closed = Some(None);
                    return Some(Frame::Closed(None));
                }
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("server sent JSON");
                    self.absorb(&v);
                    return Some(Frame::Json(v));
                }
                Message::Close(frame) => {
                    let code = frame.map(|f| u16::from(f.code));
                    self.closed = Some(code);
                    return Some(Frame::Closed(code));
                }
                _ => continue,
            }
        }
    }

    /// The next message of `message_type`, skipping others; panics after 10 s.
    pub async fn expect(&mut self, message_type: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                Some(Frame::Json(v)) if v["message_type"] == message_type => return v,
                Some(Frame::Json(_)) => continue,
                Some(Frame::Closed(c)) => panic!("socket closed ({c:?}) while waiting for {message_type}"),
                None => panic!("no {message_type} within 10 s"),
            }
        }
    }

    /// Waits for the close frame; returns its code.
    pub async fn expect_close(&mut self) -> Option<u16> {
        loop {
            match self.next_within(Duration::from_secs(10)).await {
                Some(Frame::Closed(c)) => return c,
                Some(Frame::Json(_)) => continue,
                None => panic!("socket not closed within 10 s"),
            }
        }
    }

    /// Receives until nothing arrives for `quiet`.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(Frame::Json(v)) = self.next_within(quiet).await {
            out.push(v);
        }
        out
    }

    /// Applies what the web client applies: full states and others' operations.
    fn absorb(&mut self, v: &Value) {
        match v["message_type"].as_str() {
            Some("diagram_state") => {
                self.cells = v["cells"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| (cname(c["id"].as_str().unwrap_or_default()), c.clone()))
                    .collect();
                self.vector = v["update_vector"].as_i64().unwrap_or(0);
            }
            Some("diagram_operation_event") => {
                let vector = v["update_vector"].as_i64().unwrap_or(0);
                self.vectors.push(vector);
                self.vector = self.vector.max(vector);
                self.apply_local(&v["operation"]["cells"]);
            }
            _ => {}
        }
    }

    /// Applies an operation to the local copy (what a client does optimistically for its own).
    /// The copy is keyed by cell name (`cname`).
    pub fn apply_local(&mut self, cells: &Value) {
        for c in cells.as_array().into_iter().flatten() {
            let id = cname(c["id"].as_str().unwrap_or_default());
            match c["operation"].as_str() {
                Some("add") | Some("update") => {
                    let mut data = c["data"].clone();
                    data["id"] = json!(cid(&id));
                    self.cells.insert(id, data);
                }
                Some("remove") => {
                    self.cells.remove(&id);
                }
                _ => {}
            }
        }
    }

    /// The underlying socket, for callers that read and write it from separate tasks (the
    /// benchmark).
    pub fn into_socket(self) -> Ws {
        self.ws
    }

    pub async fn close(mut self) {
        let _ = self
            .ws
            .send(Message::Close(Some(
                tokio_tungstenite::tungstenite::protocol::CloseFrame {
                    code: CloseCode::Normal,
                    reason: "bye".into(),
                },
            )))
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while self.ws.next().await.is_some() {}
        })
        .await;
    }
}

/// The cell id (a UUID, as the contract and the server require) for a readable cell name of at
/// most 16 bytes: the name's bytes in hex, padded with zeros. `cname` reverses it; an id that is
/// already a UUID is kept.
pub fn cid(name: &str) -> String {
    if uuid::Uuid::parse_str(name).is_ok() {
        return name.to_owned();
    }
    assert!(name.len() <= 16 && !name.is_empty(), "cell name {name:?}");
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    let hex = format!("{hex:0<32}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The name a `cid` id was made from (other ids unchanged).
pub fn cname(id: &str) -> String {
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    let bytes: Option<Vec<u8>> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    let name = bytes
        .map(|b| b.into_iter().take_while(|b| *b != 0).collect::<Vec<u8>>())
        .and_then(|b| String::from_utf8(b).ok());
    match name {
        Some(n) if !n.is_empty() && cid(&n) == id => n,
        _ => id.to_owned(),
    }
}

/// A node cell as the web client sends it, named `name` (its id is `cid(name)`).
pub fn node(name: &str, x: i64) -> Value {
    json!({"id": cid(name), "shape": "process", "position": {"x": x, "y": 10}, "size": {"width": 80, "height": 40},
        "attrs": {"text": {"text": name}}, "zIndex": 1})
}

/// The stored cells of a diagram, by cell name (`cname`).
pub async fn stored_cells(r: &Replica, token: &str, tm: &str, d: &str) -> (BTreeMap<String, Value>, i64) {
    let res = r
        .call(
            Method::GET,
            &format!("/threat_models/{tm}/diagrams/{d}"),
            Some(token),
            None,
        )
        .await;
    let body = res.expect(200);
    let cells = body["cells"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| (cname(c["id"].as_str().unwrap_or_default()), c.clone()))
        .collect();
    (cells, body["update_vector"].as_i64().unwrap_or(0))
}

/// One request to a server at `base`; the body parsed as JSON (or kept as a string).
pub async fn call_at(
    client: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Res {
    let mut req = client.request(method, format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("request");
    let status = res.status();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(if text.is_empty() {
        Value::Null
    } else {
        Value::String(text)
    });
    Res {
        status,
        headers,
        body,
    }
}

/// The dev provider's PKCE login against a server at `base`; returns the access token.
pub async fn login_at(client: &reqwest::Client, base: &str, hint: &str) -> String {
    let verifier = format!(
        "verifier-{}-{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let challenge =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let path = format!(
        "/oauth2/authorize?idp=tmi&scope=openid&code_challenge={challenge}&code_challenge_method=S256\
         &client_callback=http://localhost:8079/&state=s&login_hint={hint}"
    );
    let res = call_at(client, base, Method::GET, &path, None, None).await;
    let loc = res
        .headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("authorize: {} {}", res.status, res.body))
        .to_owned();
    let code = loc
        .split("code=")
        .nth(1)
        .and_then(|s| s.split('&').next())
        .expect("code");
    let res = call_at(
        client,
        base,
        Method::POST,
        "/oauth2/token?idp=tmi",
        None,
        Some(
            json!({"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
                "redirect_uri": "http://localhost:8079/"}),
        ),
    )
    .await;
    res.expect(200)["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// Peak resident memory of a process (`VmHWM`), in KiB; 0 when unknown.
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}
