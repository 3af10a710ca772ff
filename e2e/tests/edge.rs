//! The cluster's edge (`tmi_e2e::edge`) on the real node: the real cert-manager controller issues certificates
//! from a CA ClusterIssuer and reports a missing issuer in the Certificate's Ready condition, and Traefik serves
//! a plain tmi-server Deployment over HTTPS, with the issued certificate, through a Kubernetes Ingress and
//! through a Gateway API Gateway and HTTPRoute, and publishes their addresses in status. Traffic goes only to
//! the node's address inside the run's network namespace (`scripts/isolated.sh`).

#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tmi_e2e::{ControlPlane, Edge};

mod common;
use common::tmi::Tmi;

const TIMEOUT: Duration = Duration::from_secs(180);
/// The CA ClusterIssuer every test here uses.
const ISSUER: &str = "e2e-ca";

fn cp() -> &'static ControlPlane {
    tmi_e2e::shared_with_node()
}

fn apply(ns: &str, doc: &Value) {
    let out = cp()
        .kubectl_stdin(
            &[
                "apply",
                "-n",
                ns,
                "--server-side",
                "--field-manager=edge-test",
                "-f",
                "-",
            ],
            &doc.to_string(),
        )
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `kubectl get <what> -o json`, or None when it does not exist (yet).
fn get(ns: &str, what: &str) -> Option<Value> {
    let out = cp()
        .kubectl()
        .args(["get", "-n", ns, what, "-o", "json"])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn condition<'a>(conditions: &'a Value, type_: &str) -> Option<&'a Value> {
    conditions.as_array()?.iter().find(|c| c["type"] == type_)
}

/// Polls `what` until `pred` holds for it; panics with the last object seen and `debug`'s output.
async fn wait_for(ns: &str, what: &str, desc: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let obj = get(ns, what);
        if let Some(obj) = &obj
            && pred(obj)
        {
            return obj.clone();
        }
        if started.elapsed() > TIMEOUT {
            panic!(
                "timed out waiting for {what} in {ns}: {desc}; last seen:\n{:#}\n{}",
                obj.unwrap_or_default(),
                debug(ns)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What helps when a wait fails: the namespace's objects and the controllers' logs.
fn debug(ns: &str) -> String {
    let objects = cp()
        .kubectl()
        .args([
            "get",
            "-n",
            ns,
            "deploy,pods,svc,ingress,certificates,certificaterequests,gateways,httproutes,events",
            "-o",
            "wide",
        ])
        .output()
        .unwrap();
    format!(
        "{}{}\ncert-manager:\n{}\ntraefik:\n{}",
        String::from_utf8_lossy(&objects.stdout),
        String::from_utf8_lossy(&objects.stderr),
        cp().log_tail("cert-manager-controller", 30),
        cp().log_tail("traefik", 30)
    )
}

fn certificate(name: &str, host: &str, issuer: &str, issuer_kind: &str) -> Value {
    json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": { "name": name },
        "spec": {
            "secretName": format!("{name}-tls"),
            "dnsNames": [host],
            "privateKey": { "algorithm": "ECDSA", "size": 256 },
            "issuerRef": { "group": "cert-manager.io", "kind": issuer_kind, "name": issuer },
        },
    })
}

fn is_ready(obj: &Value) -> bool {
    condition(&obj["status"]["conditions"], "Ready").is_some_and(|c| c["status"] == "True")
}

/// A Certificate for `host` from the CA ClusterIssuer, Ready; returns its Secret's name.
async fn issued(ns: &str, name: &str, host: &str) -> String {
    apply(ns, &certificate(name, host, ISSUER, "ClusterIssuer"));
    wait_for(ns, &format!("certificate/{name}"), "Ready=True", is_ready).await;
    format!("{name}-tls")
}

/// A one-replica tmi-server Deployment (the image of `make images`, SQLite in the pod) and its Service
/// (`<name>:80`), Available.
async fn server(ns: &str, name: &str) {
    let labels = json!({ "app": name });
    apply(
        ns,
        &json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": { "name": name },
            "spec": {
                "replicas": 1,
                "selector": { "matchLabels": labels },
                "template": {
                    "metadata": { "labels": labels },
                    "spec": { "containers": [{
                        "name": "server",
                        "image": tmi_e2e::node::image_ref("tmi-server"),
                        "imagePullPolicy": "Never",
                        "env": [
                            { "name": "TMI_BUILD_MODE", "value": "dev" },
                            { "name": "TMI_DATABASE_URL", "value": "sqlite:///tmp/tmi.db" },
                        ],
                        "ports": [{ "name": "http", "containerPort": 8080 }],
                        "readinessProbe": { "httpGet": { "path": "/readyz", "port": 8080 }, "periodSeconds": 1 },
                    }]},
                },
            },
        }),
    );
    apply(
        ns,
        &json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": { "name": name },
            "spec": { "selector": labels, "ports": [{ "name": "http", "port": 80, "targetPort": "http" }] },
        }),
    );
    wait_for(ns, &format!("deployment/{name}"), "Available", |d| {
        condition(&d["status"]["conditions"], "Available").is_some_and(|c| c["status"] == "True")
    })
    .await;
}

/// An HTTPS client that trusts only `ca_pem` and sends `host` to `addr`.
fn https_client(ca_pem: Option<&str>, host: &str, addr: SocketAddr) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .resolve(host, addr)
        .timeout(Duration::from_secs(5));
    if let Some(pem) = ca_pem {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

/// Polls `https://<host>:<port>/readyz` through Traefik until tmi-server answers 200 (Traefik picks up new
/// routes and endpoints a moment after they appear, and serves its default certificate until then); returns
/// the body.
async fn through_proxy(ns: &str, ca_pem: &str, host: &str, addr: SocketAddr) -> String {
    let client = https_client(Some(ca_pem), host, addr);
    let url = format!("https://{host}:{}/readyz", addr.port());
    let started = Instant::now();
    loop {
        let last = match client.get(&url).send().await {
            Ok(r) if r.status() == reqwest::StatusCode::OK => return r.text().await.unwrap(),
            Ok(r) => format!("HTTP {}", r.status()),
            Err(e) => format!("{e:?}"),
        };
        if started.elapsed() > TIMEOUT {
            panic!(
                "{url} through Traefik at {addr} never answered 200; last: {last}\n{}",
                debug(ns)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The served certificate is the issued one: a client that does not trust the CA is refused.
async fn refused_without_ca(host: &str, addr: SocketAddr) {
    let err = https_client(None, host, addr)
        .get(format!("https://{host}:{}/readyz", addr.port()))
        .send()
        .await
        .expect_err("a client without the CA must not accept the served certificate");
    let chain = format!("{err:?}");
    assert!(
        chain.contains("UnknownIssuer") || chain.contains("certificate"),
        "{chain}"
    );
}

fn edge() -> Edge {
    cp().start_traefik().unwrap()
}

fn ca() -> String {
    cp().ca_cluster_issuer(ISSUER).unwrap()
}

#[tokio::test]
async fn certificates_from_the_ca_issuer_chain_to_the_ca_and_a_missing_issuer_shows_in_ready() {
    let ca = ca();
    let cp = cp();
    let ns = cp.namespace("edge-certs").await;
    let secret = issued(&ns.name, "web", "web.edge.test").await;

    let s = get(&ns.name, &format!("secret/{secret}")).unwrap();
    let decode = |k: &str| {
        let b64 = s["data"][k]
            .as_str()
            .unwrap_or_else(|| panic!("{secret} has no {k}: {s:#}"));
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap()
    };
    assert_eq!(
        decode("ca.crt").trim(),
        ca.trim(),
        "the Secret's ca.crt is the issuer's root"
    );
    let dir = cp.dir().join("edge-certs");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.pem"), &ca).unwrap();
    std::fs::write(dir.join("web.pem"), decode("tls.crt")).unwrap();
    let verify = Command::new("openssl")
        .args(["verify", "-purpose", "sslserver", "-CAfile"])
        .arg(dir.join("ca.pem"))
        .arg(dir.join("web.pem"))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "the issued certificate does not chain to the CA: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    // An Issuer that does not exist: the Certificate stays not Ready, with cert-manager's reason, and the
    // request it made says what is missing.
    apply(
        &ns.name,
        &certificate("orphan", "orphan.edge.test", "no-such-issuer", "Issuer"),
    );
    let cert = wait_for(&ns.name, "certificate/orphan", "Ready=False with a reason", |c| {
        condition(&c["status"]["conditions"], "Ready")
            .is_some_and(|r| r["status"] == "False" && r["reason"].as_str().is_some_and(|s| !s.is_empty()))
    })
    .await;
    let ready = condition(&cert["status"]["conditions"], "Ready").unwrap();
    eprintln!("Certificate with a missing issuer: Ready={ready}");
    let requests = wait_for(
        &ns.name,
        "certificaterequests",
        "the orphan's request says why",
        |l| {
            l["items"].as_array().is_some_and(|items| {
                items.iter().any(|r| {
                    condition(&r["status"]["conditions"], "Ready").is_some_and(|c| {
                        c["status"] == "False"
                            && c["message"]
                                .as_str()
                                .is_some_and(|m| m.contains("no-such-issuer"))
                    })
                })
            })
        },
    )
    .await;
    let request_ready = requests["items"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|r| condition(&r["status"]["conditions"], "Ready"))
        .unwrap();
    eprintln!("its CertificateRequest: Ready={request_ready}");
    assert!(!is_ready(&get(&ns.name, "certificate/orphan").unwrap()));
}

#[tokio::test]
async fn an_ingress_of_class_traefik_serves_https_with_the_issued_certificate() {
    let ca = ca();
    let edge = edge();
    let ns = cp().namespace("edge-ingress").await;
    let host = "tmi-ingress.edge.test";
    let (secret, ()) = tokio::join!(issued(&ns.name, "ingress", host), server(&ns.name, "tmi"));
    apply(
        &ns.name,
        &json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": { "name": "tmi" },
            "spec": {
                "ingressClassName": edge.ingress_class,
                "tls": [{ "hosts": [host], "secretName": secret }],
                "rules": [{ "host": host, "http": { "paths": [{
                    "path": "/", "pathType": "Prefix",
                    "backend": { "service": { "name": "tmi", "port": { "number": 80 } } },
                }]}}],
            },
        }),
    );
    let body = through_proxy(&ns.name, &ca, host, edge.https).await;
    eprintln!("through the Ingress: {body}");
    refused_without_ca(host, edge.https).await;
    let ing = wait_for(&ns.name, "ingress/tmi", "an address in status", |i| {
        i["status"]["loadBalancer"]["ingress"][0]["ip"].is_string()
    })
    .await;
    assert_eq!(
        ing["status"]["loadBalancer"]["ingress"][0]["ip"],
        edge.address.to_string(),
        "Traefik publishes the node's address"
    );
}

#[tokio::test]
async fn a_gateway_and_httproute_serve_https_with_the_issued_certificate() {
    let ca = ca();
    let edge = edge();
    let ns = cp().namespace("edge-gateway").await;
    let host = "tmi-gateway.edge.test";
    let (secret, ()) = tokio::join!(issued(&ns.name, "gateway", host), server(&ns.name, "tmi"));
    apply(&ns.name, &edge.gateway("edge", Some(&secret)));
    apply(
        &ns.name,
        &json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": { "name": "tmi" },
            "spec": {
                "parentRefs": [{ "name": "edge", "sectionName": "https" }],
                "hostnames": [host],
                "rules": [{ "backendRefs": [{ "name": "tmi", "port": 80 }] }],
            },
        }),
    );
    let route = wait_for(&ns.name, "httproute/tmi", "Accepted and ResolvedRefs", |r| {
        r["status"]["parents"].as_array().is_some_and(|ps| {
            ps.iter().any(|p| {
                ["Accepted", "ResolvedRefs"]
                    .iter()
                    .all(|t| condition(&p["conditions"], t).is_some_and(|c| c["status"] == "True"))
            })
        })
    })
    .await;
    assert_eq!(
        route["status"]["parents"][0]["controllerName"],
        tmi_e2e::edge::GATEWAY_CONTROLLER
    );
    let body = through_proxy(&ns.name, &ca, host, edge.https).await;
    eprintln!("through the HTTPRoute: {body}");
    refused_without_ca(host, edge.https).await;
    let gw = wait_for(&ns.name, "gateway/edge", "Programmed with an address", |g| {
        condition(&g["status"]["conditions"], "Programmed").is_some_and(|c| c["status"] == "True")
            && g["status"]["addresses"][0]["value"].is_string()
    })
    .await;
    assert_eq!(gw["status"]["addresses"][0]["value"], edge.address.to_string());
}

/// The entry points' idle timeout is the one `Edge` reports: Traefik closes a keep-alive connection that stays
/// idle after a response once `idle_timeout` has passed, and not before.
#[tokio::test]
async fn traefik_closes_an_idle_keep_alive_connection_after_the_reported_timeout() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let edge = edge();
    let mut conn = tokio::net::TcpStream::connect(edge.http).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: idle.edge.test\r\n\r\n")
        .await
        .unwrap();
    // One whole response (no router matches this host: Traefik's own 404, with a Content-Length).
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let response_len = loop {
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut chunk))
            .await
            .expect("Traefik answers within 10 s")
            .unwrap();
        assert!(
            n > 0,
            "Traefik closed before answering: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or_else(|| panic!("no Content-Length in {text}"));
            if buf.len() >= end + 4 + length {
                break end + 4 + length;
            }
        }
    };
    assert_eq!(buf.len(), response_len, "{}", String::from_utf8_lossy(&buf));
    let idle_since = Instant::now();
    let n = tokio::time::timeout(edge.idle_timeout + Duration::from_secs(15), conn.read(&mut chunk))
        .await
        .expect("Traefik keeps an idle connection open well past its idle timeout")
        .unwrap_or(0);
    let idle = idle_since.elapsed();
    assert_eq!(n, 0, "Traefik sent more on an idle connection");
    assert!(
        idle + Duration::from_secs(1) >= edge.idle_timeout,
        "Traefik closed an idle connection after {idle:.1?}, before its idle timeout {:?}",
        edge.idle_timeout
    );
    eprintln!("Traefik closed an idle keep-alive connection after {idle:.1?}");
}

/// A collaboration WebSocket through Traefik (an Ingress on the `web` entry point) stays open past the entry
/// points' idle timeout, and still answers afterwards: Traefik's read and idle timeouts do not end an upgraded
/// connection.
#[tokio::test]
async fn a_websocket_through_traefik_outlives_the_entry_points_idle_timeout() {
    use futures::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest as _};

    let edge = edge();
    let ns = cp().namespace("edge-ws").await;
    let host = "tmi-ws.edge.test";
    server(&ns.name, "tmi").await;
    apply(
        &ns.name,
        &json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": { "name": "tmi" },
            "spec": {
                "ingressClassName": edge.ingress_class,
                "rules": [{ "host": host, "http": { "paths": [{
                    "path": "/", "pathType": "Prefix",
                    "backend": { "service": { "name": "tmi", "port": { "number": 80 } } },
                }]}}],
            },
        }),
    );
    let authority = format!("{host}:{}", edge.http.port());
    let tmi = Tmi {
        base: format!("http://{authority}"),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .resolve(host, edge.http)
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
    };
    let started = Instant::now();
    while tmi
        .try_call(reqwest::Method::GET, "/readyz", None, None)
        .await
        .map(|r| r.status)
        .ok()
        != Some(200)
    {
        assert!(
            started.elapsed() < TIMEOUT,
            "the route never answered\n{}",
            debug(&ns.name)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let token = tmi.login("alice").await;
    let (tm, d) = tmi.threat_model_with_diagram(&token, "edge").await;
    let session = tmi.session(&token, &tm, &d).await;
    let sid = session["session_id"].as_str().unwrap();
    let ticket = tmi
        .call(
            reqwest::Method::GET,
            &format!("/ws/ticket?session_id={sid}"),
            Some(&token),
            None,
        )
        .await
        .expect(200)["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    // To the entry point's address, with the Ingress's host in the Host header.
    let mut req = format!(
        "ws://{}/threat_models/{tm}/diagrams/{d}/ws?session_id={sid}&ticket={ticket}",
        edge.http
    )
    .into_client_request()
    .unwrap();
    req.headers_mut().insert("host", authority.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();

    // Everything the server sends until well past the idle timeout; a close or an error fails.
    let opened = Instant::now();
    let window = edge.idle_timeout + Duration::from_secs(5);
    let mut frames: Vec<String> = Vec::new();
    while let Some(left) = window.checked_sub(opened.elapsed()) {
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Close(f)))) => panic!("closed after {:.1?}: {f:?}", opened.elapsed()),
            Ok(None) | Ok(Some(Err(_))) => panic!("the connection ended after {:.1?}", opened.elapsed()),
            Ok(Some(Ok(m))) => frames.push(format!(
                "{:.1?} {}",
                opened.elapsed(),
                match m {
                    Message::Text(t) => serde_json::from_str::<Value>(&t).map_or("text".into(), |v| {
                        v["message_type"].as_str().unwrap_or("text").to_owned()
                    }),
                    Message::Ping(_) => "ping".into(),
                    other => format!("{other:?}"),
                }
            )),
        }
    }
    ws.send(Message::Ping(b"edge".to_vec().into())).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Pong(p)))) if p.as_ref() == b"edge" => break,
            Ok(Some(Ok(Message::Close(f)))) => panic!("closed instead of answering the ping: {f:?}"),
            Ok(Some(Ok(_))) => {}
            other => panic!("no pong after {:.1?}: {other:?}", opened.elapsed()),
        }
    }
    eprintln!(
        "a WebSocket through Traefik answered after {:.1?} (idle timeout {:?}); frames from the server meanwhile: {frames:?}",
        opened.elapsed(),
        edge.idle_timeout
    );
}
