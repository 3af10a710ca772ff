//! One replica: the session lifecycle over REST, the protocol's message semantics, permissions,
//! and bad input. The core flow runs on SQLite (in-process bus) and on PostgreSQL with Redis.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Client, Env, Replica, cid, node, stored_cells};

struct Setup {
    _env: Env,
    r: Replica,
    alice: String,
    bob: String,
    carol: String,
    tm: String,
    d: String,
}

/// Alice owns a diagram; Bob writes, Carol reads.
async fn setup(env: Env) -> Setup {
    let r = env.replica().await;
    let alice = r.login("alice").await;
    let bob = r.login("bob").await;
    let carol = r.login("carol").await;
    let (tm, d) = r.diagram(&alice, &[("bob", "writer"), ("carol", "reader")]).await;
    Setup {
        _env: env,
        r,
        alice,
        bob,
        carol,
        tm,
        d,
    }
}

fn contract() -> tmi_server::openapi::Spec {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/api/tmi-openapi.json"))
        .expect("read api/tmi-openapi.json");
    tmi_server::openapi::Spec::from_json(&text).expect("contract")
}

async fn join(s: &Setup, token: &str, session: &Value) -> Client {
    let mut c = s.r.connect(token, session).await;
    // The web client loads the diagram from the first message (tmi-compat Part B §4.3).
    let first = c.next_within(Duration::from_secs(10)).await;
    let Some(crate::support::Frame::Json(state)) = first else {
        panic!("no first message: {first:?}");
    };
    assert_eq!(
        state["message_type"], "diagram_state",
        "the first message is the diagram"
    );
    assert_eq!(state["diagram_id"], session["diagram_id"]);
    c.expect("participants_update").await;
    c
}

async fn core_flow(env: Env) {
    let s = setup(env).await;
    let spec = contract();
    let path = Replica::collaborate_path(&s.tm, &s.d);

    // The client configuration advertises collaboration and the session size.
    let config = s.r.call(Method::GET, "/config", None, None).await;
    assert_eq!(config.expect(200)["features"]["websocket_enabled"], true);
    assert_eq!(config.body["limits"]["max_diagram_participants"], 50);

    // No session yet; the first POST creates one hosted by the caller, the next joins it.
    s.r.call(Method::GET, &path, Some(&s.alice), None)
        .await
        .expect(404);
    let res =
        s.r.call(Method::POST, &path, Some(&s.alice), Some(json!({})))
            .await;
    let session = res.expect(201).clone();
    spec.validate_component("CollaborationSession", &session)
        .expect("CollaborationSession");
    assert_eq!(session["host"]["provider_id"], "alice");
    assert_eq!(session["presenter"]["provider_id"], "alice");
    let ws = session["websocket_url"].as_str().unwrap();
    assert!(
        ws.starts_with("ws://127.0.0.1:")
            && ws.ends_with(&format!(
                "/ws?session_id={}",
                session["session_id"].as_str().unwrap()
            )),
        "{ws}"
    );
    let again = s.r.call(Method::POST, &path, Some(&s.bob), Some(json!({}))).await;
    assert_eq!(again.expect(200)["session_id"], session["session_id"]);
    let got = s.r.call(Method::GET, &path, Some(&s.carol), None).await;
    assert_eq!(got.expect(200)["session_id"], session["session_id"]);

    // Behind a TLS-terminating proxy the browser must get wss:// on the public host.
    let proxied =
        s.r.client
            .get(format!("{}{path}", s.r.base))
            .bearer_auth(&s.alice)
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "tmi.example.com")
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
    assert!(
        proxied["websocket_url"]
            .as_str()
            .unwrap()
            .starts_with("wss://tmi.example.com/threat_models/")
    );

    // Join: diagram_state first, then participants_update.
    let mut a = join(&s, &s.alice, &session).await;
    let mut b = join(&s, &s.bob, &session).await;
    let update = a.expect("participants_update").await;
    assert_eq!(update["participants"].as_array().unwrap().len(), 2, "{update}");
    assert_eq!(update["host"]["provider_id"], "alice");
    let mine = s.r.call(Method::GET, "/me/sessions", Some(&s.bob), None).await;
    assert_eq!(mine.expect(200).as_array().unwrap().len(), 1);
    let outsider = s.r.login("mallory").await;
    let none = s.r.call(Method::GET, "/me/sessions", Some(&outsider), None).await;
    assert!(
        none.expect(200).as_array().unwrap().is_empty(),
        "sessions are only listed to readers"
    );

    // An operation reaches the other participant, not the originator, with update_vector + 1.
    let op = a
        .op(json!([{"id": "n1", "operation": "add", "data": node("n1", 10)}]))
        .await;
    let ev = b.expect("diagram_operation_event").await;
    assert_eq!(ev["operation_id"], op.as_str());
    assert_eq!(ev["update_vector"], 1);
    assert_eq!(ev["initiating_user"]["provider_id"], "alice");
    assert!(ev["sequence_number"].as_u64().unwrap() >= 1);
    b.op(json!([{"id": "n1", "operation": "update", "data": node("n1", 99)}]))
        .await;
    let ev = a.expect("diagram_operation_event").await;
    assert_eq!(ev["update_vector"], 2);
    assert!(
        a.drain(Duration::from_millis(300))
            .await
            .iter()
            .all(|m| m["message_type"] != "diagram_operation_event"),
        "the originator gets no echo"
    );

    // Persisted: REST sees the cells and the vector.
    let (cells, vector) = stored_cells(&s.r, &s.alice, &s.tm, &s.d).await;
    assert_eq!(vector, 2);
    assert_eq!(cells["n1"]["position"]["x"], 99);

    // REST writes to the diagram and deleting its threat model are refused during the session.
    let d_path = format!("/threat_models/{}/diagrams/{}", s.tm, s.d);
    s.r.call(
        Method::PUT,
        &d_path,
        Some(&s.alice),
        Some(json!({"name": "x", "type": "DFD-1.0.0", "cells": []})),
    )
    .await
    .expect(409);
    s.r.call(Method::DELETE, &d_path, Some(&s.alice), None)
        .await
        .expect(409);
    s.r.call(
        Method::DELETE,
        &format!("/threat_models/{}", s.tm),
        Some(&s.alice),
        None,
    )
    .await
    .expect(409);

    // Sync.
    a.send(json!({"message_type": "sync_status_request"})).await;
    assert_eq!(a.expect("sync_status_response").await["update_vector"], 2);
    a.send(json!({"message_type": "sync_request", "update_vector": 2}))
        .await;
    assert_eq!(a.expect("sync_status_response").await["update_vector"], 2);
    a.send(json!({"message_type": "sync_request", "update_vector": 0}))
        .await;
    assert_eq!(a.expect("diagram_state").await["update_vector"], 2);

    // Undo: everyone gets the event, the requester also a fresh state; redo; then nothing left.
    b.send(json!({"message_type": "undo_request"})).await;
    let ev = a.expect("diagram_operation_event").await;
    assert_eq!(ev["initiating_user"]["provider_id"], "bob");
    let st = b.expect("diagram_state").await;
    assert_eq!(st["update_vector"], 3);
    assert_eq!(
        b.cells["n1"]["position"]["x"], 10,
        "undo restored bob's view of the update"
    );
    assert_eq!(a.cells["n1"]["position"]["x"], 10);
    b.send(json!({"message_type": "redo_request"})).await;
    a.expect("diagram_operation_event").await;
    assert_eq!(b.expect("diagram_state").await["update_vector"], 4);
    assert_eq!(a.cells["n1"]["position"]["x"], 99);
    b.send(json!({"message_type": "redo_request"})).await;
    let h = b.expect("history_operation").await;
    assert_eq!(
        (h["operation_type"].as_str(), h["message"].as_str()),
        (Some("redo"), Some("no_operations_to_redo"))
    );
    let (cells, vector) = stored_cells(&s.r, &s.alice, &s.tm, &s.d).await;
    assert_eq!((vector, cells.len()), (4, 1));
    assert_eq!(cells["n1"]["position"]["x"], 99);

    // The replica's metrics count sockets and operations.
    let metrics =
        s.r.client
            .get(format!("{}/metrics", s.r.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    assert!(metrics.contains("tmi_collab_sockets 2"), "{metrics}");
    assert!(
        metrics.contains("tmi_collab_operations_total{outcome=\"applied\"} 4"),
        "{metrics}"
    );

    // The host ends the session: everyone is told and closed with 1000; REST writes work again.
    s.r.call(Method::DELETE, &path, Some(&s.bob), None)
        .await
        .expect(204);
    s.r.call(Method::GET, &path, Some(&s.bob), None).await.expect(200);
    s.r.call(Method::DELETE, &path, Some(&s.alice), None)
        .await
        .expect(204);
    assert_eq!(b.expect("error").await["error"], "session_terminated");
    assert_eq!(b.expect_close().await, Some(1000));
    assert_eq!(a.expect_close().await, Some(1000));
    s.r.call(Method::GET, &path, Some(&s.alice), None)
        .await
        .expect(404);
    let put =
        s.r.call(
            Method::PUT,
            &d_path,
            Some(&s.alice),
            Some(json!({"name": "renamed", "type": "DFD-1.0.0", "cells": []})),
        )
        .await;
    put.expect(200);
}

#[tokio::test]
async fn core_flow_sqlite_in_process_bus() {
    core_flow(Env::sqlite()).await;
}

#[tokio::test]
async fn core_flow_postgres_redis() {
    core_flow(Env::postgres(Some(Env::test_redis())).await).await;
}

#[tokio::test]
async fn readers_are_read_only_and_conflicting_adds_apply_once() {
    let s = setup(Env::sqlite()).await;
    let session = s.r.session(&s.alice, &s.tm, &s.d).await;
    let mut a = join(&s, &s.alice, &session).await;
    let mut b = join(&s, &s.bob, &session).await;
    let mut c = join(&s, &s.carol, &session).await;
    let rest =
        s.r.call(
            Method::GET,
            &Replica::collaborate_path(&s.tm, &s.d),
            Some(&s.carol),
            None,
        )
        .await;
    let participants = rest.expect(200)["participants"].as_array().unwrap().clone();
    let carol = participants
        .iter()
        .find(|p| p["user"]["provider_id"] == "carol")
        .cloned();
    assert_eq!(carol.unwrap()["permissions"], "reader");

    // A reader's edit and undo are denied; their socket stays and still receives edits.
    let op = c
        .op(json!([{"id": "r1", "operation": "add", "data": node("r1", 1)}]))
        .await;
    let denied = c.expect("authorization_denied").await;
    assert_eq!(denied["original_operation_id"], op.as_str());
    assert_eq!(denied["reason"], "insufficient_permissions");
    c.send(json!({"message_type": "undo_request"})).await;
    c.expect("authorization_denied").await;

    // Alice and Bob add the same cell at once: exactly one applies, the other is rejected.
    let (oa, ob) = tokio::join!(
        a.op(json!([{"id": "same", "operation": "add", "data": node("same", 1)}])),
        b.op(json!([{"id": "same", "operation": "add", "data": node("same", 2)}])),
    );
    let ma = a.drain(Duration::from_millis(500)).await;
    let mb = b.drain(Duration::from_millis(500)).await;
    let rejected: Vec<&Value> = ma
        .iter()
        .chain(mb.iter())
        .filter(|m| m["message_type"] == "operation_rejected")
        .collect();
    assert_eq!(rejected.len(), 1, "exactly one rejection: {ma:?} {mb:?}");
    let r = rejected[0];
    assert!(r["operation_id"] == oa.as_str() || r["operation_id"] == ob.as_str());
    assert_eq!(r["reason"], "conflict_detected");
    assert_eq!(r["requires_resync"], true);
    let ev = c.expect("diagram_operation_event").await;
    assert_eq!(ev["update_vector"], 1);
    let (cells, vector) = stored_cells(&s.r, &s.alice, &s.tm, &s.d).await;
    assert_eq!((cells.len(), vector), (1, 1));
    assert_eq!(c.cells, cells, "the reader's copy equals the database");

    // Operations on missing cells.
    a.op(json!([{"id": "ghost", "operation": "update", "data": node("ghost", 1)}]))
        .await;
    let r = a.expect("operation_rejected").await;
    assert_eq!(
        (r["reason"].as_str(), r["details"].as_str()),
        (Some("conflict_detected"), Some("update_nonexistent_cell"))
    );
    a.op(json!([{"id": "ghost", "operation": "remove"}])).await;
    assert_eq!(a.expect("operation_rejected").await["reason"], "no_state_change");
    a.op(json!([])).await;
    assert_eq!(a.expect("operation_rejected").await["reason"], "empty_operation");
    a.op(json!([{"id": "x", "operation": "add"}])).await;
    assert_eq!(
        a.expect("operation_rejected").await["reason"],
        "validation_failed"
    );
    assert_eq!(
        stored_cells(&s.r, &s.alice, &s.tm, &s.d).await.1,
        1,
        "rejections write nothing"
    );
}

#[tokio::test]
async fn bad_input_leaves_the_session_and_others_unaffected() {
    let s = setup(Env::sqlite()).await;
    let session = s.r.session(&s.alice, &s.tm, &s.d).await;
    let mut a = join(&s, &s.alice, &session).await;
    let mut b = join(&s, &s.bob, &session).await;
    a.drain(Duration::from_millis(200)).await;

    // Unparsable JSON is dropped silently; unknown and server-only types get an error.
    b.send_raw("{not json".into()).await;
    b.send(json!({"message_type": "launch_missiles"})).await;
    assert_eq!(b.expect("error").await["error"], "unsupported_message_type");
    b.send(json!({"message_type": "diagram_operation_event", "update_vector": 99}))
        .await;
    assert_eq!(b.expect("error").await["error"], "invalid_message_type");
    b.send(json!({"message_type": "diagram_operation_request", "operation_id": "not-a-uuid"}))
        .await;
    assert_eq!(b.expect("error").await["error"], "validation_error");
    b.send(json!({"message_type": "sync_status_request"})).await;
    b.expect("sync_status_response").await;

    // An operation that claims to come from someone else is attributed to its real sender.
    b.send(json!({"message_type": "diagram_operation_request", "operation_id": uuid::Uuid::new_v4(), "base_vector": 0,
        "initiating_user": {"principal_type": "user", "provider": "tmi", "provider_id": "alice", "email": "alice@tmi.local", "display_name": "alice"},
        "operation": {"type": "patch", "cells": [{"id": cid("b1"), "operation": "add", "data": node("b1", 1)}]}}))
        .await;
    assert_eq!(
        a.expect("diagram_operation_event").await["initiating_user"]["provider_id"],
        "bob"
    );

    // An oversized frame closes that socket with 1009; the other participant carries on.
    let big = json!({"message_type": "presenter_selection", "selected_cells": vec!["x".repeat(100); 1000]})
        .to_string();
    assert!(big.len() > 64 * 1024);
    b.send_raw(big).await;
    assert_eq!(b.expect_close().await, Some(1009));
    a.op(json!([{"id": "a1", "operation": "add", "data": node("a1", 1)}]))
        .await;
    a.send(json!({"message_type": "sync_status_request"})).await;
    assert_eq!(a.expect("sync_status_response").await["update_vector"], 2);

    // Tickets: single use, bound to their session, required, and the only credential.
    let sid = session["session_id"].as_str().unwrap();
    let ticket = s.r.ticket(&s.bob, sid).await;
    // A plain GET (no upgrade) is refused without consuming the ticket.
    let plain =
        s.r.call(
            Method::GET,
            &format!(
                "/threat_models/{}/diagrams/{}/ws?session_id={sid}&ticket={ticket}",
                s.tm, s.d
            ),
            None,
            None,
        )
        .await;
    assert_eq!(plain.status.as_u16(), 400, "{}", plain.body);
    let c = s.r.connect_with(&session, &ticket).await.expect("first use");
    assert_eq!(
        s.r.connect_with(&session, &ticket).await.err(),
        Some(401),
        "reused ticket"
    );
    drop(c);
    assert_eq!(s.r.connect_with(&session, "forged-ticket").await.err(), Some(401));
    let mut other = session.clone();
    other["session_id"] = json!(uuid::Uuid::new_v4());
    let t = s.r.ticket(&s.bob, sid).await;
    assert_eq!(
        s.r.connect_with(&other, &t).await.err(),
        Some(401),
        "ticket for another session"
    );
    let res =
        s.r.client
            .get(format!(
                "{}/threat_models/{}/diagrams/{}/ws?session_id={sid}",
                s.r.base, s.tm, s.d
            ))
            .bearer_auth(&s.bob)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send()
            .await
            .unwrap();
    assert_eq!(
        res.status().as_u16(),
        401,
        "a bearer token does not open a socket"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");
    s.r.call(
        Method::GET,
        "/ws/ticket?session_id=not-a-uuid",
        Some(&s.bob),
        None,
    )
    .await
    .expect(400);
    s.r.call(
        Method::GET,
        &format!("/ws/ticket?session_id={}", uuid::Uuid::new_v4()),
        Some(&s.bob),
        None,
    )
    .await
    .expect(404);
    let outsider = s.r.login("mallory").await;
    s.r.call(
        Method::GET,
        &format!("/ws/ticket?session_id={sid}"),
        Some(&outsider),
        None,
    )
    .await
    .expect(404);
    let t =
        s.r.call(
            Method::GET,
            &format!("/ws/ticket?session_id={sid}"),
            Some(&s.bob),
            None,
        )
        .await;
    assert_eq!(t.headers.get("cache-control").unwrap(), "no-store");

    // Naming another user with a forged identity gets the sender removed
    // (here the host, which ends the session).
    let mut b = join(&s, &s.bob, &session).await;
    b.send(
        json!({"message_type": "change_presenter_request", "new_presenter": {"principal_type": "user",
        "provider": "tmi", "provider_id": "alice", "email": "eve@evil.example", "display_name": "alice"}}),
    )
    .await;
    assert_eq!(
        b.expect("error").await["error"],
        "permission_denied",
        "only the host may change the presenter"
    );
    a.send(
        json!({"message_type": "remove_participant_request", "removed_user": {"principal_type": "user",
        "provider": "tmi", "provider_id": "bob", "email": "someone-else@tmi.local", "display_name": "bob"}}),
    )
    .await;
    assert_eq!(a.expect("error").await["error"], "SECURITY_VIOLATION");
    assert_eq!(a.expect_close().await, Some(1008));
    assert_eq!(b.expect("error").await["error"], "session_terminated");
}

#[tokio::test]
async fn presenter_flow_and_removal() {
    let s = setup(Env::sqlite()).await;
    let session = s.r.session(&s.alice, &s.tm, &s.d).await;
    let mut a = join(&s, &s.alice, &session).await;
    let mut b = join(&s, &s.bob, &session).await;
    a.drain(Duration::from_millis(200)).await;
    // Bob as the server knows him (the web client takes users from participants_update).
    let rest =
        s.r.call(
            Method::GET,
            &Replica::collaborate_path(&s.tm, &s.d),
            Some(&s.alice),
            None,
        )
        .await;
    let bob = rest.expect(200)["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["user"]["provider_id"] == "bob")
        .map(|p| p["user"].clone())
        .unwrap();

    // Bob asks; the host hears it and hands over; Bob's cursor reaches Alice.
    b.send(json!({"message_type": "presenter_request"})).await;
    assert_eq!(
        a.expect("presenter_request_event").await["requesting_user"]["provider_id"],
        "bob"
    );
    a.send(json!({"message_type": "change_presenter_request", "new_presenter": bob}))
        .await;
    assert_eq!(
        b.expect("participants_update").await["current_presenter"]["provider_id"],
        "bob"
    );
    b.send(json!({"message_type": "presenter_cursor", "cursor_position": {"x": 100, "y": 200.5}}))
        .await;
    let cursor = a.expect("presenter_cursor").await;
    assert_eq!(cursor["cursor_position"], json!({"x": 100, "y": 200.5}));
    b.send(json!({"message_type": "presenter_selection", "selected_cells": ["n1"]}))
        .await;
    assert_eq!(
        a.expect("presenter_selection").await["selected_cells"],
        json!(["n1"])
    );
    // Alice is not the presenter now: her cursor is not relayed.
    a.send(json!({"message_type": "presenter_cursor", "cursor_position": {"x": 1, "y": 1}}))
        .await;
    assert!(
        b.drain(Duration::from_millis(300))
            .await
            .iter()
            .all(|m| m["message_type"] != "presenter_cursor")
    );
    // Denial reaches the denied user.
    a.send(json!({"message_type": "presenter_denied_request", "denied_user": bob}))
        .await;
    assert_eq!(
        b.expect("presenter_denied_event").await["denied_user"]["provider_id"],
        "bob"
    );

    // The host removes Bob: he is told, closed, and cannot come back.
    a.send(json!({"message_type": "remove_participant_request", "removed_user": bob}))
        .await;
    assert_eq!(b.expect("error").await["error"], "removed_from_session");
    b.expect_close().await;
    let update = a.expect("participants_update").await;
    assert_eq!(update["participants"].as_array().unwrap().len(), 1, "{update}");
    assert_eq!(
        update["current_presenter"]["provider_id"], "alice",
        "presenting falls back to the host"
    );
    let ticket = s.r.ticket(&s.bob, session["session_id"].as_str().unwrap()).await;
    assert_eq!(s.r.connect_with(&session, &ticket).await.err(), Some(403));

    // The host leaving ends the session for everyone.
    let mut c = join(&s, &s.carol, &session).await;
    a.close().await;
    assert_eq!(c.expect("error").await["error"], "session_terminated");
    assert_eq!(c.expect_close().await, Some(1000));
    s.r.call(
        Method::GET,
        &Replica::collaborate_path(&s.tm, &s.d),
        Some(&s.alice),
        None,
    )
    .await
    .expect(404);
}

#[tokio::test]
async fn caps_revocation_and_logout() {
    let env = Env::sqlite()
        .var("TMI_WEBSOCKET_MAX_CONNECTIONS_PER_USER", "1")
        .var("TMI_WEBSOCKET_MAX_PARTICIPANTS_PER_SESSION", "2")
        .var("TMI_WEBSOCKET_PING_INTERVAL_SECONDS", "2");
    let s = setup(env).await;
    let session = s.r.session(&s.alice, &s.tm, &s.d).await;
    // Test clients answer keepalive pings only while read: `a.drain` keeps the host's socket alive.
    let mut a = join(&s, &s.alice, &session).await;
    let mut b = join(&s, &s.bob, &session).await;

    // A second socket of the same user is refused before the upgrade.
    let ticket = s.r.ticket(&s.bob, session["session_id"].as_str().unwrap()).await;
    let url = format!(
        "{}/threat_models/{}/diagrams/{}/ws?session_id={}&ticket={ticket}",
        s.r.base,
        s.tm,
        s.d,
        session["session_id"].as_str().unwrap()
    );
    let res =
        s.r.client
            .get(url)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send()
            .await
            .unwrap();
    assert_eq!(res.status().as_u16(), 429);
    assert!(res.headers().get("retry-after").is_some());
    // The session is full (two participants): a third user is refused too.
    let ticket =
        s.r.ticket(&s.carol, session["session_id"].as_str().unwrap())
            .await;
    assert_eq!(s.r.connect_with(&session, &ticket).await.err(), Some(429));

    // Bob is demoted to reader: within a check period the participants list says so, and his edits
    // are denied.
    let acl = |entries: &[(&str, &str)]| {
        let value: Vec<Value> = entries
            .iter()
            .map(|(who, role)| json!({"principal_type": "user", "provider": "tmi", "provider_id": who, "role": role}))
            .collect();
        json!([{"op": "replace", "path": "/authorization", "value": value}])
    };
    let tm_path = format!("/threat_models/{}", s.tm);
    s.r.patch(&tm_path, &s.alice, acl(&[("bob", "reader"), ("carol", "reader")]))
        .await
        .expect(200);
    loop {
        let u = b.expect("participants_update").await;
        let bob = u["participants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["user"]["provider_id"] == "bob")
            .cloned();
        if bob.is_some_and(|p| p["permissions"] == "reader") {
            break;
        }
    }
    b.op(json!([{"id": "z", "operation": "add", "data": node("z", 1)}]))
        .await;
    b.expect("authorization_denied").await;
    a.drain(Duration::from_millis(20)).await;

    // Bob loses access: his socket closes with 4403 at the next check.
    s.r.patch(&tm_path, &s.alice, acl(&[("carol", "reader")]))
        .await
        .expect(200);
    assert_eq!(b.expect_close().await, Some(4403));
    a.drain(Duration::from_millis(20)).await;

    // Carol logs out: her socket closes with 4401.
    let mut c = join(&s, &s.carol, &session).await;
    s.r.call(Method::POST, "/me/logout", Some(&s.carol), None).await;
    assert_eq!(c.expect_close().await, Some(4401));
}
