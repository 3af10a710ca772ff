//! Collaboration benchmark (`make bench-collab`, i.e. `cargo bench -p tmi-server --bench collab`):
//! real-time diagram editing over WebSockets against the release `tmi-server` binary, on a fresh
//! PostgreSQL database per scenario with Redis (`TMI_TEST_DATABASE_URL`, `TMI_TEST_REDIS_URL`).
//!
//! Scenarios: {1 replica, 2 replicas through Redis} × {10, 50 participants} in one session,
//! participants spread evenly over the replicas. Five of them are writers that send
//! `diagram_operation_request`s at a fixed offered rate (open loop: a ticker hands each operation
//! to its writer, whatever the server does), each updating a distinct cell of a diagram of 100
//! cells (added during a warm-up). Every participant reads its socket continuously in its own
//! task and measures the fan-out latency of the operations it did not send: the arrival of the
//! `diagram_operation_event` minus the hand-off of the request to the writer (matched by
//! `operation_id`; one process, one clock). The rate is stepped up (25, 50, 100, 150, 200, 300,
//! 400, … ops/s, 3 s each) until saturation: fewer than 90% of the offered operations/s delivered,
//! p99 above 1 s, anything undelivered 3 s after the step, or any `operation_rejected`, `error`,
//! resync (`diagram_state`) or closed socket. A step that misses only on rate or latency is tried
//! once more after the backlog is delivered (a burst of other work on the shared machine should
//! not end a scenario). Reported per step: offered and achieved ops/s, fan-out p50/p99/max, CPU
//! of the replicas, of this process and of the machine; per scenario: the highest sustained
//! ops/s and each replica's peak RSS (`VmHWM`).
//!
//! Baselines, measured right after each scenario (same run, same background load): (a) raw Redis
//! pub/sub fan-out (redis-rs, one publisher, as many subscribers as participants, messages of the
//! size of a `diagram_operation_event`) and (b) the same read-modify-write straight against
//! PostgreSQL (bare sqlx loop: `BEGIN; SELECT doc … FOR UPDATE; UPDATE …; COMMIT` on one row
//! holding the scenario's diagram document), the ceiling of ops/s on one diagram. Printed ratios:
//! server fan-out p50 / Redis fan-out p50, and highest sustained ops/s / bare PostgreSQL tx/s.
//!
//! Runtime: about 2–3 minutes of measurement plus the release build; kept under 5 minutes on
//! purpose. The machine is shared and noisy: 2 cores that the replicas, PostgreSQL, Redis, this
//! client and other people's work all compete for (the "CPU machine" column shows it). Compare
//! the ratios, not absolute numbers, and rerun before drawing conclusions from a small change.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tmi-server/tests/common/pgdb.rs"]
mod pgdb;
#[path = "../../tmi-server/tests/collab/support.rs"]
mod support;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use support::{Env, Replica, cid, node};

/// Writers in each session (participants 0..WRITERS; participant 0 is the host).
const WRITERS: usize = 5;
/// Cells per writer: the diagram holds WRITERS × CELLS_PER_WRITER cells.
const CELLS_PER_WRITER: usize = 20;
/// Offered rates, ops/s, tried in order until saturation.
const RATES: &[f64] = &[
    25.0, 50.0, 100.0, 150.0, 200.0, 300.0, 400.0, 600.0, 800.0, 1200.0, 1600.0, 2400.0, 3200.0,
];
const STEP: Duration = Duration::from_secs(3);
/// How long after a step the stragglers may still arrive.
const DRAIN: Duration = Duration::from_secs(3);
const P99_LIMIT: Duration = Duration::from_secs(1);
const MIN_DELIVERED: f64 = 0.9;
/// Upper half of every benchmark `operation_id`; the lower half is the operation's number.
const TAG: u64 = 0xbe4c_c011_ab00_0000;
const MAX_OPS: usize = 100_000;
/// (replicas, participants, cells in the diagram).
const SCENARIOS: &[(usize, usize, usize)] = &[
    (1, 10, 100),
    (1, 50, 100),
    (2, 10, 100),
    (2, 50, 100),
    (1, 50, 2500),
    (2, 50, 2500),
];

/// `TMI_BENCH_CELLS=2500` (a comma-separated list) runs only the scenarios of those diagram sizes.
fn selected(&(_, _, cells): &(usize, usize, usize)) -> bool {
    match std::env::var("TMI_BENCH_CELLS") {
        Ok(list) if !list.trim().is_empty() => list.split(',').any(|c| c.trim() == cells.to_string()),
        _ => true,
    }
}

/// What every socket reader shares.
struct Shared {
    t0: Instant,
    /// Hand-off time of each operation to its writer, ns since `t0`.
    sent: Vec<AtomicU64>,
    /// Operation events received (all participants).
    events: AtomicU64,
    rejected: AtomicU64,
    /// `diagram_state`s after the first (a replica resynchronized its sockets).
    resyncs: AtomicU64,
    errors: AtomicU64,
    closed: AtomicU64,
    /// The first problem seen (a rejection, an error, a close), for the report.
    problem: Mutex<Option<String>>,
    /// Size of an operation event as received.
    event_len: AtomicUsize,
}

impl Shared {
    fn new() -> Self {
        Self {
            t0: Instant::now(),
            sent: (0..MAX_OPS).map(|_| AtomicU64::new(0)).collect(),
            events: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            problem: Mutex::new(None),
            event_len: AtomicUsize::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    fn note(&self, what: String) {
        let mut p = self.problem.lock().unwrap();
        if p.is_none() {
            *p = Some(what.chars().take(300).collect());
        }
    }
}

/// The fields of a server message the readers look at.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    message_type: &'a str,
    #[serde(default)]
    operation_id: Option<Uuid>,
}

type Samples = Arc<Mutex<Vec<(u32, u64)>>>;

/// Reads one participant's socket until it closes: (operation number, arrival ns) per event.
async fn read(mut stream: futures::stream::SplitStream<support::Ws>, shared: Arc<Shared>, samples: Samples) {
    while let Some(msg) = stream.next().await {
        let now = shared.now();
        match msg {
            Ok(Message::Text(t)) => {
                let Ok(head) = serde_json::from_str::<Head>(t.as_str()) else {
                    continue;
                };
                match head.message_type {
                    "diagram_operation_event" => {
                        let id = head.operation_id.map(|u| u.as_u128()).unwrap_or(0);
                        if (id >> 64) as u64 == TAG {
                            samples.lock().unwrap().push((id as u32, now));
                            shared.event_len.store(t.len(), Ordering::Relaxed);
                        }
                        shared.events.fetch_add(1, Ordering::Relaxed);
                    }
                    "operation_rejected" => {
                        shared.rejected.fetch_add(1, Ordering::Relaxed);
                        shared.note(format!("operation_rejected: {}", t.as_str()));
                    }
                    "diagram_state" => {
                        shared.resyncs.fetch_add(1, Ordering::Relaxed);
                    }
                    "error" | "authorization_denied" => {
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                        shared.note(format!("{}: {}", head.message_type, t.as_str()));
                    }
                    _ => {}
                }
            }
            Ok(Message::Close(frame)) => {
                shared.closed.fetch_add(1, Ordering::Relaxed);
                shared.note(format!("socket closed by the server: {frame:?}"));
                return;
            }
            Err(e) => {
                shared.closed.fetch_add(1, Ordering::Relaxed);
                shared.note(format!("socket error: {e}"));
                return;
            }
            Ok(_) => {}
        }
    }
    shared.closed.fetch_add(1, Ordering::Relaxed);
    shared.note("socket ended".into());
}

/// Operation `seq`: writer `seq % WRITERS` adds its cells, then keeps updating them in turn.
fn operation(seq: usize) -> String {
    let w = seq % WRITERS;
    let j = seq / WRITERS;
    let id = format!("w{w}-c{}", j % CELLS_PER_WRITER);
    let kind = if j < CELLS_PER_WRITER { "add" } else { "update" };
    let op_id = Uuid::from_u128(((TAG as u128) << 64) | seq as u128);
    json!({"message_type": "diagram_operation_request", "operation_id": op_id, "base_vector": 0,
        "operation": {"type": "patch", "cells": [{"id": cid(&id), "operation": kind, "data": node(&id, seq as i64)}]}})
    .to_string()
}

// --- CPU and memory from /proc ----------------------------------------------------------------

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_owned();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// (busy, total) ticks of the whole machine.
fn machine_ticks() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|n| n.parse().ok())
        .collect();
    let total: u64 = f.iter().take(8).sum();
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// CPU use over an interval: replicas, this process, the machine (100% = one core).
struct Cpu {
    at: Instant,
    servers: u64,
    me: u64,
    machine: (u64, u64),
}

impl Cpu {
    fn sample(pids: &[String]) -> Self {
        Self {
            at: Instant::now(),
            servers: pids.iter().map(|p| cpu_ticks(p)).sum(),
            me: cpu_ticks("self"),
            machine: machine_ticks(),
        }
    }

    fn since(&self, earlier: &Cpu, tck: f64, cores: f64) -> (f64, f64, f64) {
        let secs = (self.at - earlier.at).as_secs_f64().max(1e-3);
        let pct = |t: u64| t as f64 / tck / secs * 100.0;
        let (busy, total) = (
            self.machine.0 - earlier.machine.0,
            (self.machine.1 - earlier.machine.1).max(1),
        );
        (
            pct(self.servers - earlier.servers),
            pct(self.me - earlier.me),
            busy as f64 / total as f64 * 100.0 * cores,
        )
    }
}

// --- Statistics --------------------------------------------------------------------------------

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(ns: u64) -> String {
    let v = ns as f64 / 1e6;
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else if v >= 10.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.2} ms")
    }
}

struct StepResult {
    offered: f64,
    /// A second try at this rate after a soft saturation.
    retry: bool,
    achieved: f64,
    delivered: f64,
    p50: u64,
    p99: u64,
    max: u64,
    cpu: (f64, f64, f64),
    /// A rejection, error, resync or closed socket (no retry).
    hard: bool,
    problems: Vec<String>,
}

impl StepResult {
    fn saturated(&self) -> bool {
        !self.problems.is_empty()
    }
}

struct ScenarioResult {
    name: String,
    participants: usize,
    steps: Vec<StepResult>,
    event_len: usize,
    rss: Vec<f64>,
    problem: Option<String>,
    log_warnings: Vec<String>,
    diagram_doc: Option<Value>,
}

impl ScenarioResult {
    /// The highest step that passed: its achieved ops/s.
    fn sustained(&self) -> Option<&StepResult> {
        self.steps.iter().rev().find(|s| !s.saturated())
    }
}

// --- One scenario -------------------------------------------------------------------------------

struct Session {
    shared: Arc<Shared>,
    samples: Vec<Samples>,
    writers: Vec<mpsc::UnboundedSender<String>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    participants: usize,
    next_seq: usize,
}

impl Session {
    /// Offers `n` operations at `rate` ops/s; returns (first seq, count, start ns).
    async fn offer(&mut self, rate: f64, n: usize) -> (usize, usize, u64) {
        let first = self.next_seq;
        let start = Instant::now();
        let start_ns = self.shared.now();
        for i in 0..n {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
            let seq = first + i;
            let text = operation(seq);
            self.shared.sent[seq].store(self.shared.now(), Ordering::Relaxed);
            let _ = self.writers[seq % WRITERS].send(text);
        }
        self.next_seq += n;
        (first, n, start_ns)
    }

    /// Waits until every other participant got the `n` operations since `events_before`, or
    /// DRAIN after the last was offered, or a socket closed.
    async fn settle(&self, events_before: u64, n: usize) {
        let expected = (n * (self.participants - 1)) as u64;
        let deadline = Instant::now() + DRAIN;
        while Instant::now() < deadline
            && self.shared.events.load(Ordering::Relaxed) - events_before < expected
            && self.shared.closed.load(Ordering::Relaxed) == 0
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// One step at `rate`: offers `n` operations, waits for them, and measures.
    async fn step(
        &mut self,
        rate: f64,
        n: usize,
        retry: bool,
        pids: &[String],
        tck: f64,
        cores: f64,
    ) -> StepResult {
        let shared = self.shared.clone();
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (rejected0, errors0, resyncs0, events0) = (
            count(&shared.rejected),
            count(&shared.errors),
            count(&shared.resyncs),
            count(&shared.events),
        );
        let cpu0 = Cpu::sample(pids);
        let (first, n, start_ns) = self.offer(rate, n).await;
        self.settle(events0, n).await;
        let cpu1 = Cpu::sample(pids);
        let (lat, last) = self.harvest(first, n);
        let delivered = lat.len() as f64 / (n * (self.participants - 1)) as f64;
        let span = (last.saturating_sub(start_ns) as f64 / 1e9).max(1e-3);
        let achieved = n as f64 * delivered / span;
        let mut problems = Vec::new();
        if achieved < MIN_DELIVERED * rate {
            problems.push(format!("achieved < {:.0}% of offered", MIN_DELIVERED * 100.0));
        }
        let p99 = percentile(&lat, 0.99);
        if p99 > P99_LIMIT.as_nanos() as u64 {
            problems.push(format!("p99 > {} ms", P99_LIMIT.as_millis()));
        }
        if delivered < 0.999 {
            problems.push(format!(
                "{:.1}% not delivered {} s after the step",
                (1.0 - delivered) * 100.0,
                DRAIN.as_secs()
            ));
        }
        let mut hard = Vec::new();
        let rejected = count(&shared.rejected) - rejected0;
        if rejected > 0 {
            hard.push(format!("{rejected} operation_rejected"));
        }
        let errors = count(&shared.errors) - errors0;
        if errors > 0 {
            hard.push(format!("{errors} error messages"));
        }
        let resyncs = count(&shared.resyncs) - resyncs0;
        if resyncs > 0 {
            hard.push(format!("{resyncs} diagram_state resyncs"));
        }
        if count(&shared.closed) > 0 {
            hard.push("a socket closed".into());
        }
        StepResult {
            offered: rate,
            retry,
            achieved,
            delivered,
            p50: percentile(&lat, 0.5),
            p99,
            max: lat.last().copied().unwrap_or(0),
            cpu: cpu1.since(&cpu0, tck, cores),
            hard: !hard.is_empty(),
            problems: problems.into_iter().chain(hard).collect(),
        }
    }

    /// Waits until every operation offered so far reached every other participant.
    async fn drained(&self, timeout: Duration) -> bool {
        let expected = (self.next_seq * (self.participants - 1)) as u64;
        let deadline = Instant::now() + timeout;
        while self.shared.events.load(Ordering::Relaxed) < expected {
            if Instant::now() >= deadline || self.shared.closed.load(Ordering::Relaxed) > 0 {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        true
    }

    /// Takes the samples of operations `first..first + n`: sorted latencies, latest arrival.
    fn harvest(&self, first: usize, n: usize) -> (Vec<u64>, u64) {
        let range = first as u32..(first + n) as u32;
        let mut lat = Vec::new();
        let mut last = 0;
        for s in &self.samples {
            for (seq, at) in std::mem::take(&mut *s.lock().unwrap()) {
                if range.contains(&seq) {
                    let sent = self.shared.sent[seq as usize].load(Ordering::Relaxed);
                    lat.push(at.saturating_sub(sent));
                    last = last.max(at);
                }
            }
        }
        lat.sort_unstable();
        (lat, last)
    }
}

/// Fills the diagram with `n` cells that nobody edits (straight into its row, before the session
/// starts), so that the writers' operations run against a diagram of the scenario's size.
async fn fill(database_url: &str, diagram: &str, n: usize) {
    if n == 0 {
        return;
    }
    let cells: Vec<Value> = (0..n).map(|i| node(&format!("f{i}"), i as i64)).collect();
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(database_url)
        .await
        .unwrap();
    sqlx::query("UPDATE children SET doc = jsonb_set(doc, '{cells}', $1) WHERE id = $2")
        .bind(sqlx::types::Json(Value::Array(cells)))
        .bind(Uuid::parse_str(diagram).unwrap())
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

async fn scenario(
    replicas: usize,
    participants: usize,
    cells: usize,
    tck: f64,
    cores: f64,
) -> ScenarioResult {
    let name = format!(
        "{replicas} replica{}, {participants} participants, {cells} cells",
        if replicas == 1 { "" } else { "s" }
    );
    eprintln!("--- {name}");
    // The offered rates go past the per-socket message limit (50/s): lifted, since throughput is
    // what this measures.
    let env = Env::postgres(Some(Env::test_redis()))
        .await
        .var("TMI_WEBSOCKET_MAX_MESSAGES_PER_SECOND", "100000")
        .var("TMI_DISABLE_RATE_LIMITING", "true");
    let mut rs: Vec<Replica> = Vec::new();
    for _ in 0..replicas {
        rs.push(env.replica().await);
    }
    let users: Vec<String> = (0..participants)
        .map(|i| if i == 0 { "host".into() } else { format!("user{i}") })
        .collect();
    let mut tokens = Vec::new();
    for (i, u) in users.iter().enumerate() {
        tokens.push(rs[i % replicas].login(u).await);
    }
    let acl: Vec<(&str, &str)> = users[1..].iter().map(|u| (u.as_str(), "writer")).collect();
    let (tm, d) = rs[0].diagram(&tokens[0], &acl).await;
    fill(
        &env.database_url,
        &d,
        cells.saturating_sub(WRITERS * CELLS_PER_WRITER),
    )
    .await;
    let session = rs[0].session(&tokens[0], &tm, &d).await;

    let shared = Arc::new(Shared::new());
    let mut sess = Session {
        shared: shared.clone(),
        samples: Vec::new(),
        writers: Vec::new(),
        tasks: Vec::new(),
        participants,
        next_seq: 0,
    };
    for (i, token) in tokens.iter().enumerate() {
        let mut client = rs[i % replicas].connect(token, &session).await;
        client.expect("diagram_state").await;
        let (mut sink, stream) = client.into_socket().split();
        let samples: Samples = Arc::default();
        sess.samples.push(samples.clone());
        sess.tasks
            .push(tokio::spawn(read(stream, shared.clone(), samples)));
        if i < WRITERS {
            let (tx, mut rx) = mpsc::unbounded_channel::<String>();
            let shared = shared.clone();
            sess.tasks.push(tokio::spawn(async move {
                while let Some(text) = rx.recv().await {
                    if let Err(e) = sink.send(Message::Text(text.into())).await {
                        shared.note(format!("sending failed: {e}"));
                        return;
                    }
                }
            }));
            sess.writers.push(tx);
        }
    }
    // The joins' participant updates settle; then the warm-up adds the cells.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = shared.events.load(Ordering::Relaxed);
    let (first, n, _) = sess.offer(100.0, WRITERS * CELLS_PER_WRITER).await;
    sess.settle(before, n).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    sess.harvest(first, n);
    let diagram_doc = {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&env.database_url)
            .await
            .unwrap();
        let doc: Option<(sqlx::types::Json<Value>,)> =
            sqlx::query_as("SELECT doc FROM children WHERE id = $1")
                .bind(Uuid::parse_str(&d).unwrap())
                .fetch_optional(&pool)
                .await
                .unwrap();
        pool.close().await;
        doc.map(|d| d.0.0)
    };
    let warm_problem = shared.problem.lock().unwrap().clone();

    let pids: Vec<String> = rs.iter().map(|r| r.pid().to_string()).collect();
    let mut steps = Vec::new();
    if warm_problem.is_none() {
        'rates: for &rate in RATES {
            let n = (rate * STEP.as_secs_f64()).round() as usize;
            for attempt in 1..=2 {
                if sess.next_seq + n > MAX_OPS {
                    break 'rates;
                }
                let step = sess.step(rate, n, attempt > 1, &pids, tck, cores).await;
                eprintln!(
                    "    {rate:>5} ops/s offered{}: {:.0} achieved, p50 {} p99 {}{}",
                    if step.retry { " (retry)" } else { "" },
                    step.achieved,
                    ms(step.p50),
                    ms(step.p99),
                    if step.saturated() { " (saturated)" } else { "" }
                );
                let (saturated, hard) = (step.saturated(), step.hard);
                steps.push(step);
                if !saturated {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    continue 'rates;
                }
                // A soft saturation (rate or latency) may be a burst of other work on the shared
                // machine: once the backlog is delivered, the step gets one more try.
                if hard || attempt == 2 || !sess.drained(Duration::from_secs(5)).await {
                    break 'rates;
                }
            }
        }
    }
    let rss = rs
        .iter()
        .map(|r| support::peak_rss_kib(r.pid()) as f64 / 1024.0)
        .collect();
    let log_warnings = rs
        .iter()
        .flat_map(|r| {
            std::fs::read_to_string(&r.log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                .map(|l| format!("replica {}: {l}", r.port))
                .collect::<Vec<_>>()
        })
        .collect();
    for t in &sess.tasks {
        t.abort();
    }
    drop(sess);
    drop(rs);
    drop(env);
    ScenarioResult {
        name,
        participants,
        steps,
        event_len: shared.event_len.load(Ordering::Relaxed),
        rss,
        problem: warm_problem.or_else(|| shared.problem.lock().unwrap().clone()),
        log_warnings,
        diagram_doc,
    }
}

// --- Baselines ----------------------------------------------------------------------------------

/// Raw Redis pub/sub: one publisher, `subscribers` connections, `size`-byte messages at 100/s.
/// Returns (p50, p99) in ns.
async fn redis_fanout(url: &str, subscribers: usize, size: usize) -> (u64, u64) {
    let client = redis::Client::open(url).unwrap();
    let channel = format!("bench-collab:{}", Uuid::new_v4().simple());
    let t0 = Instant::now();
    let samples: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..subscribers {
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        pubsub.subscribe(&channel).await.unwrap();
        let samples = samples.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = pubsub.into_on_message();
            while let Some(msg) = stream.next().await {
                let now = t0.elapsed().as_nanos() as u64;
                let payload = msg.get_payload_bytes();
                if payload.first() != Some(&b'M') {
                    continue;
                }
                let sent: u64 = std::str::from_utf8(&payload[1..21])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(now);
                samples.lock().unwrap().push(now.saturating_sub(sent));
            }
        }));
    }
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let padding = "x".repeat(size.saturating_sub(21));
    let start = Instant::now();
    for i in 0..250u32 {
        tokio::time::sleep_until((start + Duration::from_millis(10) * i).into()).await;
        let phase = if i < 50 { 'W' } else { 'M' };
        let payload = format!("{phase}{:020}{padding}", t0.elapsed().as_nanos() as u64);
        let _: i64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(payload)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for t in tasks {
        t.abort();
    }
    let mut lat = std::mem::take(&mut *samples.lock().unwrap());
    lat.sort_unstable();
    (percentile(&lat, 0.5), percentile(&lat, 0.99))
}

/// The operation's database write by hand: `BEGIN; SELECT doc … FOR UPDATE; UPDATE …; COMMIT`
/// on one row holding `doc`, changing one cell per transaction, from `concurrency` connections
/// for `for_how_long`. Returns transactions/s.
async fn bare_postgres(doc: &Value, concurrency: usize, for_how_long: Duration) -> f64 {
    let env = Env::postgres(None).await;
    let pool = PgPoolOptions::new()
        .max_connections(concurrency as u32 + 1)
        .connect(&env.database_url)
        .await
        .unwrap();
    sqlx::query(
        "CREATE TABLE bench_doc (id UUID PRIMARY KEY, version BIGINT NOT NULL, \
         modified_at TIMESTAMPTZ NOT NULL, doc JSONB NOT NULL)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO bench_doc VALUES ($1, 1, now(), $2)")
        .bind(id)
        .bind(sqlx::types::Json(doc))
        .execute(&pool)
        .await
        .unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (pool, count) = (pool.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut k = w;
            while start.elapsed() < for_how_long {
                let mut tx = pool.begin().await.unwrap();
                let (version, sqlx::types::Json(mut doc)): (i64, sqlx::types::Json<Value>) =
                    sqlx::query_as("SELECT version, doc FROM bench_doc WHERE id = $1 FOR UPDATE")
                        .bind(id)
                        .fetch_one(&mut *tx)
                        .await
                        .unwrap();
                if let Some(cells) = doc.get_mut("cells").and_then(Value::as_array_mut)
                    && !cells.is_empty()
                {
                    let i = k % cells.len();
                    cells[i]["position"]["x"] = json!(k);
                }
                let vector = doc.get("update_vector").and_then(Value::as_i64).unwrap_or(0);
                doc["update_vector"] = json!(vector + 1);
                sqlx::query("UPDATE bench_doc SET version = $1, modified_at = now(), doc = $2 WHERE id = $3")
                    .bind(version + 1)
                    .bind(sqlx::types::Json(&doc))
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                count.fetch_add(1, Ordering::Relaxed);
                k += concurrency;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rate = count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    pool.close().await;
    rate
}

// --- Report -------------------------------------------------------------------------------------

/// The baselines measured right after a scenario, on its diagram document and message size.
struct Baseline {
    /// Raw Redis fan-out to as many subscribers as participants: (p50, p99) ns.
    redis: (u64, u64),
    /// Bare PostgreSQL read-modify-writes/s on 1 and on WRITERS connections.
    pg1: f64,
    pg_writers: f64,
}

impl Baseline {
    fn pg(&self) -> f64 {
        self.pg1.max(self.pg_writers)
    }
}

async fn baseline(redis_url: &str, r: &ScenarioResult) -> Baseline {
    let doc = r.diagram_doc.clone().unwrap_or_else(|| json!({"cells": []}));
    Baseline {
        redis: redis_fanout(redis_url, r.participants, r.event_len.max(64)).await,
        pg1: bare_postgres(&doc, 1, Duration::from_millis(1500)).await,
        pg_writers: bare_postgres(&doc, WRITERS, Duration::from_millis(1500)).await,
    }
}

#[tokio::main]
async fn main() {
    let began = Instant::now();
    let redis_url = Env::test_redis();
    let tck = clock_ticks();
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;

    // Each scenario is followed at once by its baselines, so that a ratio compares measurements
    // taken under the same background load.
    let mut results = Vec::new();
    for (replicas, participants, cells) in SCENARIOS.iter().copied().filter(|s| selected(s)) {
        let r = scenario(replicas, participants, cells, tck, cores).await;
        eprintln!("    baselines");
        let b = baseline(&redis_url, &r).await;
        results.push((r, b));
    }

    let (doc_cells, doc_kib, event_len) = results
        .iter()
        .find_map(|(r, _)| {
            let doc = r.diagram_doc.as_ref()?;
            let cells = doc.get("cells").and_then(Value::as_array).map_or(0, Vec::len);
            let kib = serde_json::to_string(doc).map_or(0, |s| s.len()) as f64 / 1024.0;
            Some((cells, kib, r.event_len))
        })
        .unwrap_or((0, 0.0, 0));
    println!("tmi-server collaboration benchmark (release build, PostgreSQL + Redis, shared 2-core machine)");
    println!(
        "One session; {WRITERS} writers send at a fixed offered rate ({} s per step, open loop), each operation \
         updating a distinct cell of a {doc_cells}-cell diagram ({doc_kib:.1} KiB document); every participant \
         measures the fan-out latency of the others' operations (event arrival − request hand-off); an \
         operation event is {event_len} bytes.",
        STEP.as_secs(),
    );
    println!(
        "Saturated: achieved < {:.0}% of offered, p99 > {} ms, anything undelivered {} s after the step, a \
         rejection, an error, a resync or a closed socket. CPU: 100% = one core; \"machine\" counts every \
         process (other work on the shared machine included).",
        MIN_DELIVERED * 100.0,
        P99_LIMIT.as_millis(),
        DRAIN.as_secs()
    );
    for (r, b) in &results {
        println!();
        println!("### {}", r.name);
        println!(
            "| offered ops/s | achieved ops/s | fan-out p50 | p99 | max | CPU replicas | CPU bench | CPU machine | result |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for s in &r.steps {
            println!(
                "| {:.0}{} | {:.0} | {} | {} | {} | {:.0}% | {:.0}% | {:.0}% | {} |",
                s.offered,
                if s.retry { " (retry)" } else { "" },
                s.achieved,
                ms(s.p50),
                ms(s.p99),
                ms(s.max),
                s.cpu.0,
                s.cpu.1,
                s.cpu.2,
                if s.saturated() {
                    format!("saturated: {}", s.problems.join(", "))
                } else {
                    format!("ok ({:.1}% delivered)", s.delivered * 100.0)
                }
            );
        }
        if r.steps.is_empty() {
            println!("| – | – | – | – | – | – | – | – | warm-up failed |");
        }
        if let Some(p) = &r.problem {
            println!("First problem seen by a client: {p}");
        }
        if !r.log_warnings.is_empty() {
            println!("Replica logs: {} warnings/errors, first:", r.log_warnings.len());
            for l in r.log_warnings.iter().take(3) {
                println!("    {}", l.chars().take(300).collect::<String>());
            }
        }
        println!(
            "Baselines right after: raw Redis pub/sub to {} subscribers p50 {} p99 {}; bare PostgreSQL \
             read-modify-write {:.0} tx/s on 1 connection, {:.0} tx/s on {WRITERS}.",
            r.participants,
            ms(b.redis.0),
            ms(b.redis.1),
            b.pg1,
            b.pg_writers
        );
    }
    println!();
    println!("### Summary");
    println!(
        "| scenario | highest sustained ops/s | achieved when saturated | fan-out p50 / p99 at {:.0} ops/s | peak RSS per replica |",
        RATES[0]
    );
    println!("|---|---|---|---|---|");
    for (r, _) in &results {
        println!(
            "| {} | {} | {} | {} | {} |",
            r.name,
            r.sustained()
                .map(|s| format!("{:.0} (offered {:.0})", s.achieved, s.offered))
                .unwrap_or_else(|| "none".into()),
            r.steps
                .last()
                .filter(|s| s.saturated())
                .map(|s| format!("{:.0} (offered {:.0})", s.achieved, s.offered))
                .unwrap_or_else(|| "not saturated".into()),
            r.steps
                .first()
                .map(|s| format!("{} / {}", ms(s.p50), ms(s.p99)))
                .unwrap_or_else(|| "–".into()),
            r.rss
                .iter()
                .map(|m| format!("{m:.1} MiB"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!();
    println!("### Ratios against the baselines measured right after each scenario");
    println!(
        "| scenario | fan-out p50 at {:.0} ops/s ÷ raw Redis p50 | highest sustained ops/s ÷ bare PostgreSQL tx/s |",
        RATES[0]
    );
    println!("|---|---|---|");
    for (r, b) in &results {
        let lat = r
            .steps
            .first()
            .map(|s| {
                format!(
                    "{:.1}× ({} ÷ {})",
                    s.p50 as f64 / b.redis.0.max(1) as f64,
                    ms(s.p50),
                    ms(b.redis.0)
                )
            })
            .unwrap_or_else(|| "–".into());
        let ops = r
            .sustained()
            .map(|s| {
                format!(
                    "{:.2} ({:.0} ÷ {:.0})",
                    s.achieved / b.pg().max(1e-9),
                    s.achieved,
                    b.pg()
                )
            })
            .unwrap_or_else(|| "–".into());
        println!("| {} | {lat} | {ops} |", r.name);
    }
    println!();
    println!("total time: {:.0} s", began.elapsed().as_secs_f64());
}
