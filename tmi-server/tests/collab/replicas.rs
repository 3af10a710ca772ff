//! Several replicas sharing PostgreSQL and Redis: one session with one order of operations across
//! them, tickets valid everywhere, a killed or restarted replica, and a Redis restart.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use serde_json::json;

use crate::support::{Client, Env, Frame, Replica, cid, node, stored_cells};

async fn joined(r: &Replica, token: &str, session: &serde_json::Value) -> Client {
    let mut c = r.connect(token, session).await;
    c.expect("diagram_state").await;
    c
}

/// Sends `n` operations on the client's own cells (add, update, and every third one removed),
/// applying them locally as the web client does, while taking in what arrives.
async fn edit(c: &mut Client, who: &str, n: usize) {
    for i in 0..n {
        let id = format!("{who}-{i}");
        let cells = json!([{"id": id, "operation": "add", "data": node(&id, i as i64)}]);
        c.op(cells.clone()).await;
        c.apply_local(&cells);
        let cells = json!([{"id": id, "operation": "update", "data": node(&id, 1000 + i as i64)}]);
        c.op(cells.clone()).await;
        c.apply_local(&cells);
        if i % 3 == 2 {
            let cells = json!([{"id": id, "operation": "remove"}]);
            c.op(cells.clone()).await;
            c.apply_local(&cells);
        }
        while let Some(Frame::Json(m)) = c.next_within(Duration::from_millis(2)).await {
            assert_ne!(m["message_type"], "operation_rejected", "{who}: {m}");
        }
    }
}

fn ops_for(n: usize) -> i64 {
    (2 * n + n / 3) as i64
}

#[tokio::test]
async fn three_clients_on_two_replicas_converge() {
    let env = Env::postgres(Some(Env::test_redis())).await;
    let r1 = env.replica().await;
    let r2 = env.replica().await;
    let alice = r1.login("alice").await;
    let bob = r2.login("bob").await;
    let carol = r1.login("carol").await;
    let (tm, d) = r1
        .diagram(&alice, &[("bob", "writer"), ("carol", "writer")])
        .await;
    let session = r1.session(&alice, &tm, &d).await;
    let sid = session["session_id"].as_str().unwrap();
    let mut a = joined(&r1, &alice, &session).await;
    // A ticket issued by one replica opens a socket on the other.
    let ticket = r1.ticket(&bob, sid).await;
    let mut b = r2
        .connect_with(&session, &ticket)
        .await
        .expect("cross-replica ticket");
    b.expect("diagram_state").await;
    let mut c = joined(&r2, &carol, &session).await;
    // Everyone sees all three participants, wherever they are connected.
    for client in [&mut a, &mut b, &mut c] {
        loop {
            let u = client.expect("participants_update").await;
            if u["participants"].as_array().unwrap().len() == 3 {
                break;
            }
        }
    }
    // The REST view from either replica agrees.
    let from_r2 = r2
        .call(Method::GET, &Replica::collaborate_path(&tm, &d), Some(&bob), None)
        .await;
    assert_eq!(from_r2.expect(200)["participants"].as_array().unwrap().len(), 3);

    const N: usize = 15;
    tokio::join!(edit(&mut a, "a", N), edit(&mut b, "b", N), edit(&mut c, "c", N));
    for client in [&mut a, &mut b, &mut c] {
        let rejected: Vec<_> = client
            .drain(Duration::from_millis(1500))
            .await
            .into_iter()
            .filter(|m| m["message_type"] == "operation_rejected")
            .collect();
        assert!(rejected.is_empty(), "{rejected:?}");
    }
    let (cells, vector) = stored_cells(&r2, &alice, &tm, &d).await;
    assert_eq!(
        vector,
        3 * ops_for(N),
        "every operation applied once, update_vector +1 each"
    );
    assert_eq!(cells.len(), 3 * (N - N / 3));
    for (name, client) in [("alice", &a), ("bob", &b), ("carol", &c)] {
        assert_eq!(client.cells, cells, "{name}'s diagram equals the database");
        assert!(
            client.vectors.windows(2).all(|w| w[0] < w[1]),
            "{name} saw events out of order: {:?}",
            client.vectors
        );
        assert_eq!(
            client.vectors.len() as i64,
            2 * ops_for(N),
            "{name} received every other participant's operation"
        );
    }

    // Two replicas add the same cell at once: exactly one add applies.
    let (oa, ob) = tokio::join!(
        a.op(json!([{"id": "dup", "operation": "add", "data": node("dup", 1)}])),
        b.op(json!([{"id": "dup", "operation": "add", "data": node("dup", 2)}])),
    );
    let ma = a.drain(Duration::from_millis(800)).await;
    let mb = b.drain(Duration::from_millis(800)).await;
    c.drain(Duration::from_millis(200)).await;
    let rejected: Vec<&serde_json::Value> = ma
        .iter()
        .chain(mb.iter())
        .filter(|m| m["message_type"] == "operation_rejected")
        .collect();
    assert_eq!(rejected.len(), 1, "exactly one of the two adds is rejected");
    assert!(rejected[0]["operation_id"] == oa.as_str() || rejected[0]["operation_id"] == ob.as_str());
    assert_eq!(rejected[0]["reason"], "conflict_detected");
    assert_eq!(c.cells["dup"], stored_cells(&r1, &alice, &tm, &d).await.0["dup"]);
    let remove = json!([{"id": "dup", "operation": "remove"}]);
    a.op(remove.clone()).await;
    a.apply_local(&remove);
    b.expect("diagram_operation_event").await;
    c.expect("diagram_operation_event").await;

    // Contested edits of one cell: one total order; a final sync brings every client to it.
    a.op(json!([{"id": "shared", "operation": "add", "data": node("shared", -1)}]))
        .await;
    b.expect("diagram_operation_event").await;
    c.expect("diagram_operation_event").await;
    let upd = |x| json!([{"id": "shared", "operation": "update", "data": node("shared", x)}]);
    tokio::join!(
        async {
            for x in 0..5 {
                a.op(upd(x)).await;
            }
        },
        async {
            for x in 100..105 {
                b.op(upd(x)).await;
            }
        },
        async {
            for x in 200..205 {
                c.op(upd(x)).await;
            }
        },
    );
    for client in [&mut a, &mut b, &mut c] {
        client.drain(Duration::from_millis(800)).await;
    }
    let (cells, vector) = stored_cells(&r1, &alice, &tm, &d).await;
    assert_eq!(vector, 3 * ops_for(N) + 2 + 16);
    for client in [&mut a, &mut b, &mut c] {
        let v = client.vector;
        client
            .send(json!({"message_type": "sync_request", "update_vector": v}))
            .await;
        while let Some(Frame::Json(m)) = client.next_within(Duration::from_millis(800)).await {
            if m["message_type"] == "diagram_state" || m["message_type"] == "sync_status_response" {
                break;
            }
        }
    }
    for (name, client) in [("alice", &a), ("bob", &b), ("carol", &c)] {
        assert!(client.cells == cells, "{name} differs after sync");
        assert_eq!(client.vector, vector, "{name}");
    }
}

#[tokio::test]
async fn a_killed_replica_loses_nothing_acknowledged() {
    let env = Env::postgres(Some(Env::test_redis())).await;
    let r1 = env.replica().await;
    let mut r2 = env.replica().await;
    let mut r3 = env.replica().await;
    let alice = r1.login("alice").await;
    let bob = r1.login("bob").await;
    let carol = r1.login("carol").await;
    let (tm, d) = r1
        .diagram(&alice, &[("bob", "writer"), ("carol", "writer")])
        .await;
    let session = r1.session(&alice, &tm, &d).await;
    let mut a = joined(&r1, &alice, &session).await;
    let mut b = joined(&r2, &bob, &session).await;
    let mut c = joined(&r3, &carol, &session).await;

    // Bob's edits are acknowledged: Alice has seen each of them.
    for i in 0..5 {
        let id = format!("b{i}");
        b.op(json!([{"id": id, "operation": "add", "data": node(&id, i)}]))
            .await;
        assert_eq!(
            a.expect("diagram_operation_event").await["operation"]["cells"][0]["id"],
            cid(&id).as_str()
        );
    }
    // A graceful stop (rolling update) closes sockets with 1012 so clients move elsewhere.
    r3.terminate();
    assert_eq!(c.expect_close().await, Some(1012));
    // Bob's replica dies without warning.
    r2.kill();
    b.expect_close().await;

    // The session carries on; Alice keeps editing.
    for i in 0..5 {
        let id = format!("a{i}");
        a.op(json!([{"id": id, "operation": "add", "data": node(&id, i)}]))
            .await;
    }
    r1.call(
        Method::GET,
        &Replica::collaborate_path(&tm, &d),
        Some(&alice),
        None,
    )
    .await
    .expect(200);

    // Bob and Carol reconnect to the surviving replica and converge.
    let mut b = joined(&r1, &bob, &session).await;
    let mut c = joined(&r1, &carol, &session).await;
    b.drain(Duration::from_millis(500)).await;
    c.drain(Duration::from_millis(200)).await;
    let (cells, vector) = stored_cells(&r1, &alice, &tm, &d).await;
    assert_eq!(vector, 10);
    assert_eq!(
        cells.len(),
        10,
        "Bob's acknowledged edits survived: {:?}",
        cells.keys()
    );
    assert_eq!(b.cells, cells);
    assert_eq!(c.cells, cells);
    a.op(json!([{"id": "after", "operation": "add", "data": node("after", 0)}]))
        .await;
    b.expect("diagram_operation_event").await;
    c.expect("diagram_operation_event").await;
    // The dead replica's participant entries expire with its heartbeat.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = r1
            .call(
                Method::GET,
                &Replica::collaborate_path(&tm, &d),
                Some(&alice),
                None,
            )
            .await;
        let n = s.expect(200)["participants"].as_array().unwrap().len();
        if n == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stale participants remain: {n}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A private Redis this test may stop and start.
struct PrivateRedis {
    child: Child,
    port: u16,
}

impl PrivateRedis {
    fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
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
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (installed by `make test`)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn a_redis_restart_resyncs_the_session() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut redis = PrivateRedis::start(port);
    let env = Env::postgres(Some(format!("redis://127.0.0.1:{port}"))).await;
    let r1 = env.replica().await;
    let r2 = env.replica().await;
    let alice = r1.login("alice").await;
    let bob = r2.login("bob").await;
    let (tm, d) = r1.diagram(&alice, &[("bob", "writer")]).await;
    let session = r1.session(&alice, &tm, &d).await;
    let mut a = joined(&r1, &alice, &session).await;
    let mut b = joined(&r2, &bob, &session).await;
    for i in 0..3 {
        let id = format!("before{i}");
        a.op(json!([{"id": id, "operation": "add", "data": node(&id, i)}]))
            .await;
        b.expect("diagram_operation_event").await;
    }

    // Redis restarts empty (no persistence): sessions, participants and the bus are gone.
    redis.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _redis = PrivateRedis::start(redis.port);

    // The replicas re-register the session (and resync clients that are behind).
    // Edits flow again in both directions, and nothing acknowledged was lost.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut i = 0;
    loop {
        let id = format!("after{i}");
        i += 1;
        a.op(json!([{"id": id, "operation": "add", "data": node(&id, 0)}]))
            .await;
        let got = b.drain(Duration::from_millis(300)).await;
        if got.iter().any(|m| {
            m["message_type"] == "diagram_operation_event"
                && m["operation"]["cells"][0]["id"] == cid(&id).as_str()
        }) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no edits reach the other replica after the restart"
        );
    }
    b.op(json!([{"id": "from-bob", "operation": "add", "data": node("from-bob", 0)}]))
        .await;
    a.expect("diagram_operation_event").await;
    a.drain(Duration::from_millis(500)).await;
    b.drain(Duration::from_millis(500)).await;
    let (cells, _) = stored_cells(&r1, &alice, &tm, &d).await;
    for i in 0..3 {
        assert!(
            cells.contains_key(&format!("before{i}")),
            "acknowledged edit before{i} lost"
        );
    }
    // Both clients' full resync gives the database's diagram.
    for client in [&mut a, &mut b] {
        client.send(json!({"message_type": "sync_request"})).await;
        client.expect("diagram_state").await;
        assert!(client.cells == cells);
    }
    r1.call(
        Method::GET,
        &Replica::collaborate_path(&tm, &d),
        Some(&alice),
        None,
    )
    .await
    .expect(200);
}

/// A stopping replica (SIGTERM, as in a rolling update) keeps answering during its drain, each answer telling
/// the keep-alive client to open its next connection elsewhere (`Connection: close`), then exits. A client
/// thus never sends a request on a connection the server is closing (e2e/tests/pods.rs proves it on real
/// pods: no failed request during a rolling update).
#[tokio::test]
async fn a_stopping_replica_answers_once_more_with_connection_close_then_exits() {
    let env = Env::sqlite().var("TMI_SHUTDOWN_DRAIN_SECONDS", "3");
    let mut r = env.replica().await;
    let token = r.login("alice").await;
    let before = r.call(Method::GET, "/threat_models", Some(&token), None).await;
    before.expect(200);
    assert!(before.headers.get("connection").is_none(), "{:?}", before.headers);

    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(r.pid().to_string())
        .status();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = r.call(Method::GET, "/threat_models", Some(&token), None).await;
    during.expect(200);
    assert_eq!(
        during.headers.get("connection").and_then(|v| v.to_str().ok()),
        Some("close"),
        "{:?}",
        during.headers
    );
    r.terminate();
}

/// How many connections subscribe to a Redis channel.
async fn subscribers(redis: &mut redis::aio::MultiplexedConnection, channel: &str) -> i64 {
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(redis)
        .await
        .unwrap();
    n
}

/// Waits (at most 10 s) until `channel` has `want` subscribers; returns the last count.
async fn subscribers_become(redis: &mut redis::aio::MultiplexedConnection, channel: &str, want: i64) -> i64 {
    let mut n = subscribers(redis, channel).await;
    for _ in 0..200 {
        if n == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        n = subscribers(redis, channel).await;
    }
    n
}

#[tokio::test]
async fn a_replica_receives_only_the_sessions_it_hosts() {
    let env = Env::postgres(Some(Env::test_redis())).await;
    let r1 = env.replica().await;
    let r2 = env.replica().await;
    let alice = r1.login("alice").await;
    let bob = r2.login("bob").await;
    let (tm, d) = r1.diagram(&alice, &[("bob", "writer")]).await;
    let session = r1.session(&alice, &tm, &d).await;
    let sid = session["session_id"].as_str().unwrap();
    let channel = format!("{}collab:events:{sid}", env.prefix);
    let mut redis = redis::Client::open(Env::test_redis())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();

    // Only alice's replica hosts the session: only it subscribes to the session's channel.
    let mut a = joined(&r1, &alice, &session).await;
    assert_eq!(subscribers(&mut redis, &channel).await, 1);
    // Operations travel on that channel, not on one every replica reads.
    let mut counter = redis::Client::open(Env::test_redis())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    counter
        .subscribe(format!("{}collab:events", env.prefix))
        .await
        .unwrap();
    a.op(json!([{"id": "a0", "operation": "add", "data": node("a0", 0)}]))
        .await;

    // Bob joins on the other replica, which then follows the session too, and sees the edits.
    let mut b = joined(&r2, &bob, &session).await;
    assert_eq!(subscribers(&mut redis, &channel).await, 2);
    a.op(json!([{"id": "a1", "operation": "add", "data": node("a1", 1)}]))
        .await;
    let event = b.expect("diagram_operation_event").await;
    assert_eq!(event["operation"]["cells"][0]["id"], cid("a1").as_str());

    // Bob leaves: his replica hosts nothing of the session any more and stops following it.
    b.close().await;
    assert_eq!(subscribers_become(&mut redis, &channel, 1).await, 1);
    let (cells, vector) = stored_cells(&r1, &alice, &tm, &d).await;
    assert_eq!((cells.len(), vector), (2, 2));
    // Nothing of the session went over the shared channel (this can only miss a stray message,
    // never fail on a slow one).
    let mut shared = counter.into_on_message();
    let stray = tokio::time::timeout(Duration::from_millis(300), shared.next()).await;
    assert!(stray.is_err(), "session traffic on the shared channel: {stray:?}");
}
