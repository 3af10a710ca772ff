//! Collaboration sessions benchmark (`make bench-collab-sessions`, i.e. `cargo bench -p tmi-server
//! --bench collab-sessions`): many small sessions at once across two release `tmi-server` replicas
//! sharing PostgreSQL and Redis, to measure what one session costs a replica.
//!
//! Setup: `TMI_BENCH_SESSIONS` sessions (1,000 by default), each on its own diagram with 5
//! participants over real WebSockets, all five on the same replica (as behind a load balancer with
//! session affinity), sessions alternating between the two replicas; each replica therefore
//! follows the Redis channels of its own half only. Measured: the replicas' RSS before the
//! sessions and with them open (per session), their CPU while the sessions are open and idle (10
//! s: heartbeats, keepalives and the janitor), and while every session has one writer sending one
//! operation per second (10 s), with how many of the events reached the other four participants.
//! Writes `$BENCH_RESULTS_DIR/collab-sessions.json` when that is set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tmi-server/tests/common/pgdb.rs"]
mod pgdb;
#[allow(dead_code)]
mod results;
#[path = "../../tmi-server/tests/collab/support.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use results::Results;
use support::{Env, Replica, cid, node};

const PER_SESSION: usize = 5;
const PHASE: Duration = Duration::from_secs(10);

fn sessions() -> usize {
    std::env::var("TMI_BENCH_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// Current RSS of a process, MiB.
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse::<f64>().ok()))
        .unwrap_or(0.0)
        / 1024.0
}

/// utime + stime of a process, seconds.
fn cpu_secs(pid: u32) -> f64 {
    let tck: f64 = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0);
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_owned();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0) as f64
        / tck
}

fn cpu_all(rs: &[Arc<Replica>]) -> f64 {
    rs.iter().map(|r| cpu_secs(r.pid())).sum()
}

fn rss_all(rs: &[Arc<Replica>]) -> f64 {
    rs.iter().map(|r| rss_mib(r.pid())).sum()
}

/// One open session: its writer's socket half and the readers' tasks.
struct Open {
    writer: futures::stream::SplitSink<support::Ws, Message>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn open(i: usize, r: Arc<Replica>, tokens: Arc<Vec<String>>, events: Arc<AtomicU64>) -> Open {
    let acl: Vec<(String, &str)> = (1..PER_SESSION).map(|j| (format!("p{j}"), "writer")).collect();
    let acl: Vec<(&str, &str)> = acl.iter().map(|(u, role)| (u.as_str(), *role)).collect();
    let (tm, d) = r.diagram(&tokens[0], &acl).await;
    let session = r.session(&tokens[0], &tm, &d).await;
    let mut writer = None;
    let mut tasks = Vec::new();
    for (j, token) in tokens.iter().enumerate() {
        let mut c = r.connect(token, &session).await;
        c.expect("diagram_state").await;
        let (sink, mut stream) = c.into_socket().split();
        if j == 1 {
            writer = Some(sink);
        } else {
            // The other halves stay open with the readers.
            let keep = sink;
            let events = events.clone();
            tasks.push(tokio::spawn(async move {
                let _keep = keep;
                while let Some(Ok(m)) = stream.next().await {
                    if let Message::Text(t) = m
                        && t.as_str().contains("\"diagram_operation_event\"")
                    {
                        events.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
            continue;
        }
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(_)) = stream.next().await {}
        }));
    }
    let _ = i;
    Open {
        writer: writer.expect("writer"),
        tasks,
    }
}

#[tokio::main]
async fn main() {
    let began = Instant::now();
    let n = sessions();
    let env = Env::postgres(Some(Env::test_redis()))
        .await
        .var("TMI_DISABLE_RATE_LIMITING", "true")
        .var("TMI_WEBSOCKET_MAX_CONNECTIONS_PER_USER", "100000")
        .var("TMI_DB_MAX_OPEN_CONNS", "16");
    let rs = vec![Arc::new(env.replica().await), Arc::new(env.replica().await)];
    let mut tokens = vec![rs[0].login("host").await];
    for j in 1..PER_SESSION {
        tokens.push(rs[0].login(&format!("p{j}")).await);
    }
    let tokens = Arc::new(tokens);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss0 = rss_all(&rs);
    let events = Arc::new(AtomicU64::new(0));
    eprintln!("opening {n} sessions × {PER_SESSION} participants on 2 replicas");
    let t_open = Instant::now();
    let cpu_open0 = cpu_all(&rs);
    let mut sessions: Vec<Open> = futures::stream::iter(0..n)
        .map(|i| open(i, rs[i % 2].clone(), tokens.clone(), events.clone()))
        .buffer_unordered(8)
        .collect()
        .await;
    let open_secs = t_open.elapsed().as_secs_f64();
    let cpu_open = cpu_all(&rs) - cpu_open0;
    eprintln!("opened in {open_secs:.0} s");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1 = rss_all(&rs);

    // Idle: the sessions stay open, nobody edits.
    let cpu_idle0 = cpu_all(&rs);
    tokio::time::sleep(PHASE).await;
    let cpu_idle = cpu_all(&rs) - cpu_idle0;

    // Active: one operation per second per session, spread over the second.
    let cpu_active0 = cpu_all(&rs);
    let events0 = events.load(Ordering::Relaxed);
    let start = Instant::now();
    let ticks = PHASE.as_secs() as usize;
    let mut sent = 0u64;
    for k in 0..ticks {
        for (i, s) in sessions.iter_mut().enumerate() {
            let due = start + Duration::from_secs_f64(k as f64 + i as f64 / n as f64);
            tokio::time::sleep_until(due.into()).await;
            let kind = if k == 0 { "add" } else { "update" };
            let text = json!({"message_type": "diagram_operation_request",
                "operation_id": uuid::Uuid::new_v4(), "base_vector": 0,
                "operation": {"type": "patch", "cells": [{"id": cid("c"), "operation": kind, "data": node("c", k as i64)}]}})
            .to_string();
            if s.writer.send(Message::Text(text.into())).await.is_ok() {
                sent += 1;
            }
        }
    }
    let expected = sent * (PER_SESSION as u64 - 2);
    let deadline = Instant::now() + Duration::from_secs(5);
    while events.load(Ordering::Relaxed) - events0 < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let active_secs = start.elapsed().as_secs_f64();
    let cpu_active = cpu_all(&rs) - cpu_active0;
    let delivered = (events.load(Ordering::Relaxed) - events0) as f64 / expected.max(1) as f64;
    let rss2 = rss_all(&rs);
    for s in &sessions {
        for t in &s.tasks {
            t.abort();
        }
    }

    let per = |v: f64| v / n as f64;
    let rows = vec![
        vec!["sessions × participants".into(), format!("{n} × {PER_SESSION}")],
        vec!["opening them (s)".into(), format!("{open_secs:.1}")],
        vec![
            "replica CPU to open one session (ms)".into(),
            format!("{:.1}", per(cpu_open) * 1e3),
        ],
        vec!["replicas' RSS before (MiB, both)".into(), format!("{rss0:.1}")],
        vec![
            "replicas' RSS with the sessions open (MiB, both)".into(),
            format!("{rss1:.1}"),
        ],
        vec![
            "RSS per open session (KiB)".into(),
            format!("{:.1}", per(rss1 - rss0) * 1024.0),
        ],
        vec![
            "replica CPU per idle session (ms per s)".into(),
            format!("{:.3}", per(cpu_idle) / PHASE.as_secs_f64() * 1e3),
        ],
        vec![
            "replica CPU per session at 1 op/s (ms per s)".into(),
            format!("{:.3}", per(cpu_active) / active_secs * 1e3),
        ],
        vec![
            "operations sent / events delivered to the other participants".into(),
            format!("{sent} / {:.1}%", delivered * 100.0),
        ],
        vec![
            "replicas' RSS after the active phase (MiB, both)".into(),
            format!("{rss2:.1}"),
        ],
    ];
    println!("tmi-server collaboration sessions benchmark (release build, 2 replicas, PostgreSQL + Redis)");
    println!("| metric | value |");
    println!("|---|---|");
    for r in &rows {
        println!("| {} | {} |", r[0], r[1]);
    }
    println!("total time: {:.0} s", began.elapsed().as_secs_f64());
    let mut out = Results::new("collab-sessions", "Collaboration sessions");
    out.notes.push(format!(
        "{n} sessions of {PER_SESSION} participants (real WebSockets), each session on one of two replicas; \
         idle for {} s, then one operation per second per session for {} s. CPU is the replicas' user+system \
         time; RSS is their resident memory (VmRSS).",
        PHASE.as_secs(),
        PHASE.as_secs()
    ));
    out.table("Cost of a session", &["metric", "value"], rows);
    out.write();
    drop(sessions);
}
