//! Limits that keep one client from starving the others: per-user and per-address rate limits (429
//! with TMI's body and `Retry-After`), authentication before the body is read, header-read and body
//! timeouts, and the cap on open connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Backend, Options, Res, TestApp};

/// A server with the given variables and rate limiting on.
async fn app_with(b: Backend, vars: &[(&'static str, &str)]) -> TestApp {
    let mut all = vec![("TMI_DISABLE_RATE_LIMITING", "false".to_owned())];
    all.extend(vars.iter().map(|(k, v)| (*k, (*v).to_owned())));
    TestApp::spawn_with(
        b,
        Options {
            vars: all,
            ..Default::default()
        },
    )
    .await
}

/// Sends `GET /me` with `token` until the answer is not 200 (or 401 for a bad token); that answer.
async fn until_refused(app: &TestApp, token: &str, passing: u16, at_most: usize) -> Res {
    for _ in 0..at_most {
        let r = app.get("/me", Some(token)).await;
        if r.status.as_u16() != passing {
            return r;
        }
    }
    panic!("{at_most} requests and never a 429");
}

#[track_caller]
fn assert_429(r: &Res) {
    r.expect_error(429, "too_many_requests");
    let wait: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!(wait >= 1, "Retry-After: {wait}");
}

/// One user's burst is cut off with 429 while another user, and the same user's later requests,
/// are not affected; requests with bad tokens are limited per address, and do not use up the
/// users' budgets.
async fn rate_limits_answer_429(b: Backend) {
    let app = app_with(
        b,
        &[
            ("TMI_RATELIMIT_USER_RPM", "60"),
            ("TMI_RATELIMIT_PUBLIC_RPM", "60"),
        ],
    )
    .await;
    let alice = app.login("alice").await;
    let bob = app.login("bob").await;
    let r = until_refused(&app, &alice.access, 200, 200).await;
    assert_429(&r);
    app.get("/me", Some(&bob.access)).await.expect(200);

    let bad = format!("{}x", bob.access);
    let r = until_refused(&app, &bad, 401, 200).await;
    assert_429(&r);
    // Public endpoints from this address are limited now too; a user with a valid token is not.
    assert_429(&app.get("/oauth2/providers", None).await);
    app.get("/me", Some(&bob.access)).await.expect(200);
    // The probes are never limited.
    app.get("/readyz", None).await.expect(200);
}

/// Reads one HTTP response (head and the body announced by Content-Length) from `s`; `None` when
/// the server closed the connection without one.
async fn read_response(s: &mut TcpStream) -> Option<(u16, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if body.len() >= len {
                let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
                return Some((status, body.to_owned()));
            }
        }
    }
}

/// Fails the test instead of hanging when the server never answers (the behaviour before limits).
async fn guarded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: the server kept the connection waiting"))
}

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// A protected operation called without credentials is refused without waiting for (or buffering)
/// its announced body.
async fn unauthenticated_bodies_are_not_read(b: Backend) {
    let app = TestApp::spawn(b).await;
    let mut s = TcpStream::connect(addr(&app)).await.unwrap();
    s.write_all(
        b"POST /threat_models HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 10485760\r\n\r\n{\"name\": \"",
    )
    .await
    .unwrap();
    let (status, body) = guarded("unauthenticated 10 MiB body", read_response(&mut s))
        .await
        .expect("an answer");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"unauthorized\""), "{body}");
}

/// A request head that never completes, and a body trickled in, are cut off.
async fn slow_clients_are_cut_off(b: Backend) {
    let app = TestApp::spawn_with(
        b,
        Options {
            vars: vec![
                ("TMI_SERVER_READ_TIMEOUT", "1s".into()),
                ("TMI_SERVER_BODY_TIMEOUT", "1s".into()),
            ],
            ..Default::default()
        },
    )
    .await;
    let s = app.login("alice").await;

    // Half a request head: the server closes the connection.
    let mut half = TcpStream::connect(addr(&app)).await.unwrap();
    half.write_all(b"GET /me HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let answer = guarded("half-sent head", read_response(&mut half)).await;
    assert!(
        answer.is_none() || answer.as_ref().is_some_and(|(st, _)| *st == 408),
        "{answer:?}"
    );

    // An idle keep-alive connection is closed after its exchange.
    let mut idle = TcpStream::connect(addr(&app)).await.unwrap();
    idle.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut idle).await.map(|r| r.0), Some(200));
    assert_eq!(guarded("idle connection", read_response(&mut idle)).await, None);

    // A body trickled a byte at a time: 408 before it is complete.
    let body = br#"{"name": "a threat model sent very slowly, one byte at a time"}"#;
    let mut slow = TcpStream::connect(addr(&app)).await.unwrap();
    let head = format!(
        "POST /threat_models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        s.access,
        body.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let trickle = async {
        for byte in body {
            if slow.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        read_response(&mut slow).await
    };
    let (status, text) = guarded("trickled body", trickle).await.expect("an answer");
    assert_eq!(status, 408, "{text}");
    assert!(text.contains("\"request_timeout\""), "{text}");
}

/// At the connection cap a new client waits until a connection closes.
async fn connections_are_capped(b: Backend) {
    let app = TestApp::spawn_with(
        b,
        Options {
            vars: vec![("TMI_SERVER_MAX_CONNECTIONS", "2".into())],
            ..Default::default()
        },
    )
    .await;
    let mut first = TcpStream::connect(addr(&app)).await.unwrap();
    first
        .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut first).await.map(|r| r.0), Some(200));
    let mut second = TcpStream::connect(addr(&app)).await.unwrap();
    second
        .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut second).await.map(|r| r.0), Some(200));

    let freed = Arc::new(AtomicBool::new(false));
    let mut third = TcpStream::connect(addr(&app)).await.unwrap();
    third
        .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let seen = freed.clone();
    let waiting = tokio::spawn(async move {
        let answer = read_response(&mut third).await.map(|r| r.0);
        (answer, seen.load(Ordering::SeqCst))
    });
    // Give an uncapped server every chance to answer the third client first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    freed.store(true, Ordering::SeqCst);
    drop(first);
    let (answer, after_a_close) = guarded("third connection", waiting).await.unwrap();
    assert_eq!(answer, Some(200));
    assert!(after_a_close, "the third client was served while two were open");
    drop(second);
}

both_backends!(
    rate_limits_answer_429,
    unauthenticated_bodies_are_not_read,
    slow_clients_are_cut_off,
    connections_are_capped,
);
