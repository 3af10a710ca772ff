//! WebSocket limits: the per-user socket cap holds under parallel connects, and a participant that
//! floods the session with operations is closed (1008, with the reason) while the others keep
//! receiving. On SQLite with the in-process bus and on PostgreSQL with Redis.

use serde_json::{Value, json};

use crate::support::{Client, Env, Frame, Replica, node};

/// 20 parallel connects of one user with a cap of 5: exactly 5 sockets open, the rest get 429.
async fn parallel_connects_respect_the_cap(env: Env) {
    let env = env.var("TMI_WEBSOCKET_MAX_CONNECTIONS_PER_USER", "5");
    let r = env.replica().await;
    let alice = r.login("alice").await;
    let (tm, d) = r.diagram(&alice, &[]).await;
    let session = r.session(&alice, &tm, &d).await;
    let sid = session["session_id"].as_str().unwrap().to_owned();
    let mut tickets = Vec::new();
    for _ in 0..20 {
        tickets.push(r.ticket(&alice, &sid).await);
    }
    let attempts = tickets.iter().map(|t| r.connect_with(&session, t));
    let results: Vec<Result<Client, u16>> = futures::future::join_all(attempts).await;
    let open = results.iter().filter(|r| r.is_ok()).count();
    let refused: Vec<u16> = results.iter().filter_map(|r| r.as_ref().err().copied()).collect();
    assert_eq!(open, 5, "sockets admitted past the cap; refusals: {refused:?}");
    assert!(refused.iter().all(|s| *s == 429), "{refused:?}");
}

#[tokio::test]
async fn parallel_connects_respect_the_cap_sqlite() {
    parallel_connects_respect_the_cap(Env::sqlite()).await;
}

#[tokio::test]
async fn parallel_connects_respect_the_cap_postgres_redis() {
    parallel_connects_respect_the_cap(Env::postgres(Some(Env::test_redis())).await).await;
}

/// Joins and reads past the first `diagram_state`.
async fn joined(r: &Replica, token: &str, session: &Value) -> Client {
    let mut c = r.connect(token, session).await;
    c.expect("diagram_state").await;
    c
}

/// A writer sends operations as fast as it can: it is told why and closed with 1008, and the other
/// participants keep receiving each other's edits.
async fn a_flood_is_closed_and_others_keep_receiving(env: Env) {
    let env = env.var("TMI_WEBSOCKET_MAX_MESSAGES_PER_SECOND", "10");
    let r = env.replica().await;
    let alice = r.login("alice").await;
    let bob = r.login("bob").await;
    let carol = r.login("carol").await;
    let (tm, d) = r.diagram(&alice, &[("bob", "writer"), ("carol", "writer")]).await;
    let session = r.session(&alice, &tm, &d).await;
    let mut a = joined(&r, &alice, &session).await;
    let mut b = joined(&r, &bob, &session).await;
    let mut c = joined(&r, &carol, &session).await;

    for i in 0..300 {
        let id = format!("flood{i}");
        let op = json!({"message_type": "diagram_operation_request",
            "operation_id": uuid::Uuid::new_v4().to_string(), "base_vector": 0,
            "operation": {"type": "patch", "cells": [{"id": id, "operation": "add", "data": node(&id, i)}]}});
        b.send_raw(op.to_string()).await;
    }
    let mut told = None;
    let closed = loop {
        match b.next_within(std::time::Duration::from_secs(30)).await {
            Some(Frame::Json(v)) if v["message_type"] == "error" => told = Some(v),
            Some(Frame::Json(_)) => {}
            Some(Frame::Closed(code)) => break code,
            None => panic!("the flooding socket was never closed"),
        }
    };
    assert_eq!(closed, Some(1008));
    let told = told.expect("an error message before the close");
    assert_eq!(told["error"], "rate_limit_exceeded", "{told}");

    // Carol's edit reaches Alice (after whatever of Bob's burst was accepted).
    let op = c
        .op(json!([{"id": "carol-cell", "operation": "add", "data": node("carol-cell", 1)}]))
        .await;
    loop {
        let e = a.expect("diagram_operation_event").await;
        if e["operation_id"] == op.as_str() {
            break;
        }
    }
}

#[tokio::test]
async fn a_flood_is_closed_and_others_keep_receiving_sqlite() {
    a_flood_is_closed_and_others_keep_receiving(Env::sqlite()).await;
}

#[tokio::test]
async fn a_flood_is_closed_and_others_keep_receiving_postgres_redis() {
    a_flood_is_closed_and_others_keep_receiving(Env::postgres(Some(Env::test_redis())).await).await;
}
