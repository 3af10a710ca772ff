//! A small TMI client for tests against server pods: the dev login (PKCE), REST calls, and collaboration
//! sockets. IO: HTTP and WebSocket to the addresses it is given (pods and Services inside the run's network
//! namespace).

#![allow(dead_code, clippy::unwrap_used)] // each test binary uses part of it; a panic is a test failure

use std::time::Duration;

use base64::Engine as _;
use futures::{SinkExt as _, StreamExt as _};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Digest as _;
use tokio_tungstenite::tungstenite::Message;

/// A REST response: status and JSON body (a string when the body is not JSON).
#[derive(Debug)]
pub struct Res {
    pub status: u16,
    pub body: Value,
}

impl Res {
    /// The body, after asserting the status.
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.body);
        self.body
    }
}

/// One HTTP client (connection pool) talking to one base URL, `http://<address>:<port>`.
#[derive(Clone)]
pub struct Tmi {
    pub base: String,
    pub http: reqwest::Client,
}

impl Tmi {
    pub fn new(base: impl Into<String>) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        Self {
            base: base.into(),
            http,
        }
    }

    /// Sends a request; `Err` only for transport errors (refused, reset, timed out).
    pub async fn try_call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<Res, reqwest::Error> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        let text = res.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Res { status, body })
    }

    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Res {
        self.try_call(method.clone(), path, token, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {}{path}: {e}", self.base))
    }

    /// A JSON Patch (`application/json-patch+json`), as TMI's PATCH operations take it.
    pub async fn json_patch(&self, path: &str, token: &str, ops: Value) -> Res {
        let res = self
            .http
            .patch(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json-patch+json")
            .body(ops.to_string())
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        Res {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    }

    /// The dev provider's login with PKCE, as tmi-ux does it; returns the access token.
    pub async fn login(&self, hint: &str) -> String {
        let verifier = format!(
            "verifier-{}-{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()));
        let path = format!(
            "/oauth2/authorize?idp=tmi&scope=openid&code_challenge={challenge}&code_challenge_method=S256\
             &client_callback=http://localhost:8079/&state=s&login_hint={hint}"
        );
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let loc = res
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("authorize answered {} without a redirect", res.status()))
            .to_owned();
        let code = loc
            .split("code=")
            .nth(1)
            .and_then(|s| s.split('&').next())
            .expect("code in the redirect");
        let token = self
            .call(
                Method::POST,
                "/oauth2/token?idp=tmi",
                None,
                Some(
                    json!({"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
                    "redirect_uri": "http://localhost:8079/"}),
                ),
            )
            .await
            .expect(200);
        token["access_token"].as_str().unwrap().to_owned()
    }

    /// A threat model with one diagram; returns (threat model id, diagram id).
    pub async fn threat_model_with_diagram(&self, token: &str, name: &str) -> (String, String) {
        let tm = self
            .call(
                Method::POST,
                "/threat_models",
                Some(token),
                Some(json!({"name": name})),
            )
            .await
            .expect(201);
        let tm_id = tm["id"].as_str().unwrap().to_owned();
        let d = self
            .call(
                Method::POST,
                &format!("/threat_models/{tm_id}/diagrams"),
                Some(token),
                Some(json!({"name": "DFD", "type": "DFD-1.0.0"})),
            )
            .await
            .expect(201);
        (tm_id, d["id"].as_str().unwrap().to_owned())
    }

    /// Joins (or starts) the diagram's collaboration session; returns the session body.
    pub async fn session(&self, token: &str, tm: &str, d: &str) -> Value {
        let res = self
            .call(
                Method::POST,
                &format!("/threat_models/{tm}/diagrams/{d}/collaborate"),
                Some(token),
                Some(json!({})),
            )
            .await;
        assert!(
            matches!(res.status, 200 | 201),
            "collaborate: {} {}",
            res.status,
            res.body
        );
        res.body
    }

    /// Opens a collaboration socket through this base URL, with a ticket issued by it.
    pub async fn connect(&self, token: &str, session: &Value) -> Collab {
        let (ws, _) = tokio_tungstenite::connect_async(self.ws_url(token, session).await)
            .await
            .unwrap();
        Collab { ws, vector: 0 }
    }

    /// Like [`Tmi::connect`], over `stream` (e.g. TLS to a proxy) instead of a connection of its own.
    pub async fn connect_over<S>(&self, token: &str, session: &Value, stream: S) -> Collab<S>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let (ws, _) = tokio_tungstenite::client_async(self.ws_url(token, session).await, stream)
            .await
            .unwrap();
        Collab { ws, vector: 0 }
    }

    /// The session's socket URL on this base, with a fresh ticket issued by it.
    async fn ws_url(&self, token: &str, session: &Value) -> String {
        let sid = session["session_id"].as_str().unwrap();
        let ticket = self
            .call(
                Method::GET,
                &format!("/ws/ticket?session_id={sid}"),
                Some(token),
                None,
            )
            .await
            .expect(200)["ticket"]
            .as_str()
            .unwrap()
            .to_owned();
        format!(
            "{}/threat_models/{}/diagrams/{}/ws?session_id={sid}&ticket={ticket}",
            self.base
                .replacen("https://", "wss://", 1)
                .replacen("http://", "ws://", 1),
            session["threat_model_id"].as_str().unwrap(),
            session["diagram_id"].as_str().unwrap(),
        )
    }
}

/// One collaboration socket.
pub struct Collab<S = tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    ws: tokio_tungstenite::WebSocketStream<S>,
    /// The diagram's update vector as last seen (from `diagram_state` and operation events), sent as the
    /// `base_vector` of this client's operations, as tmi-ux does.
    vector: i64,
}

/// What a socket delivered next.
#[derive(Debug)]
pub enum Next {
    Json(Value),
    /// Closed, with the close code when the server sent a close frame (None: the connection just ended).
    Closed(Option<u16>),
    TimedOut,
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Collab<S> {
    /// The next JSON message, close or timeout (pings and other control frames are skipped).
    pub async fn next(&mut self, within: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Next::TimedOut,
                Ok(None) => return Next::Closed(None),
                Ok(Some(Err(_))) => return Next::Closed(None),
                Ok(Some(Ok(Message::Text(t)))) => {
                    if let Ok(v) = serde_json::from_str::<Value>(&t) {
                        if let Some(n) = v["update_vector"].as_i64() {
                            self.vector = self.vector.max(n);
                        }
                        return Next::Json(v);
                    }
                }
                Ok(Some(Ok(Message::Close(f)))) => return Next::Closed(f.map(|f| u16::from(f.code))),
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Waits for a message of `message_type` matching `pred`; panics on close or timeout.
    pub async fn wait_for(&mut self, message_type: &str, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            match self.next(Duration::from_secs(20)).await {
                Next::Json(v) if v["message_type"] == message_type && pred(&v) => return v,
                Next::Json(_) => {}
                other => panic!("waiting for {message_type}: {other:?}"),
            }
        }
    }

    /// Sends an operation adding one node cell with `id`; returns its operation id.
    /// Adds a process node named `name` (its id is [`cell_id`]`(name)`); returns the operation id.
    pub async fn add_cell(&mut self, name: &str) -> String {
        let op_id = uuid::Uuid::new_v4().to_string();
        let id = cell_id(name);
        let cell = json!({"id": id, "shape": "process", "position": {"x": 10, "y": 10},
            "size": {"width": 80, "height": 40}, "attrs": {"text": {"text": name}}, "zIndex": 1});
        let msg = json!({"message_type": "diagram_operation_request", "operation_id": op_id,
            "base_vector": self.vector, "operation": {"type": "patch", "cells": [{"id": id, "operation": "add", "data": cell}]}});
        self.ws.send(Message::Text(msg.to_string().into())).await.unwrap();
        op_id
    }

    /// Closes the socket cleanly.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// The cell ids of a `diagram_state` message.
/// The cell id (a UUID, as TMI requires) of the node [`Collab::add_cell`] adds under `name`: derived from the
/// name, so tests can name cells readably.
pub fn cell_id(name: &str) -> String {
    let digest = sha2::Sha256::digest(name.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
}

/// The names (node text, as [`Collab::add_cell`] sets it) of the cells in a diagram or a `diagram_state`.
pub fn state_cell_ids(state: &Value) -> Vec<String> {
    state["cells"]
        .as_array()
        .map(|cells| {
            cells
                .iter()
                .filter_map(|c| c["attrs"]["text"]["text"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
