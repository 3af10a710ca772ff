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
mod results;
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

use results::{Results, Series};
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

/// The flood scenarios: (replicas, participants, cells).
const FLOOD_SCENARIOS: &[(usize, usize, usize)] = &[(1, 50, 2500)];

/// `TMI_BENCH_FLOOD=0` leaves the flood scenario out.
fn flood_selected() -> bool {
    std::env::var("TMI_BENCH_FLOOD").map_or(true, |v| v != "0")
}

/// `TMI_BENCH_CELLS=2500` (a comma-separated list) runs only the scenarios of those diagram sizes.
/// `TMI_BENCH_ONLY=1/50/100,2/50/2500` runs only those (replicas/participants/cells) scenarios.
fn selected(&(replicas, participants, cells): &(usize, usize, usize)) -> bool {
    let size = match std::env::var("TMI_BENCH_CELLS") {
        Ok(list) if !list.trim().is_empty() => list.split(',').any(|c| c.trim() == cells.to_string()),
        _ => true,
    };
    let only = match std::env::var("TMI_BENCH_ONLY") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .any(|c| c.trim() == format!("{replicas}/{participants}/{cells}")),
        _ => true,
    };
    size && only
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
                        // Only the measured operations count (not a flooder's).
                        if (id >> 64) as u64 == TAG {
                            samples.lock().unwrap().push((id as u32, now));
                            shared.event_len.store(t.len(), Ordering::Relaxed);
                            shared.events.fetch_add(1, Ordering::Relaxed);
                        }
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
    /// The flood running during this step, if any.
    flood: Option<String>,
}

impl StepResult {
    fn saturated(&self) -> bool {
        !self.problems.is_empty()
    }
}

struct ScenarioResult {
    name: String,
    replicas: usize,
    cells: usize,
    mode: Mode,
    flood_notes: Vec<String>,
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
            flood: None,
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
    sqlx::query("UPDATE children SET doc = jsonb_set(doc::jsonb, '{cells}', $1)::json WHERE id = $2")
        .bind(sqlx::types::Json(Value::Array(cells)))
        .bind(Uuid::parse_str(diagram).unwrap())
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

/// How a scenario drives its session.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Offered rates step up until saturation (the per-socket message limit lifted).
    Steps,
    /// [`FLOOD_RATE`] ops/s from the writers, quiet and then with one more participant flooding
    /// (the per-socket message limit as configured by default).
    Flood,
}

/// The writers' rate in the flood scenario.
const FLOOD_RATE: f64 = 100.0;
/// Upper half of a flooder's `operation_id`s (not measured).
const FLOOD_TAG: u64 = 0xf100_d000_0000_0000;

/// A participant that sends operations as fast as its socket takes them (`per_second: None`) or
/// at `per_second`, each changing `cells_per_op` of the filler cells, until `stop`. Returns how
/// many it sent and how its socket ended.
async fn flood(
    client: support::Client,
    per_second: Option<f64>,
    cells_per_op: usize,
    filler: usize,
    until: Instant,
) -> (usize, String) {
    let (mut sink, mut stream) = client.into_socket().split();
    let ended = tokio::spawn(async move {
        while let Some(msg) = stream.next().await {
            match msg {
                Ok(Message::Close(frame)) => return format!("closed by the server: {frame:?}"),
                Err(e) => return format!("socket error: {e}"),
                Ok(_) => {}
            }
        }
        "socket ended".to_owned()
    });
    let start = Instant::now();
    let mut sent = 0usize;
    while Instant::now() < until {
        if let Some(r) = per_second {
            tokio::time::sleep_until((start + Duration::from_secs_f64(sent as f64 / r)).into()).await;
        }
        let cells: Vec<Value> = (0..cells_per_op)
            .map(|k| {
                let name = format!("f{}", (sent * cells_per_op + k) % filler.max(1));
                json!({"id": cid(&name), "operation": "update", "data": node(&name, 100_000 + sent as i64)})
            })
            .collect();
        let op_id = Uuid::from_u128(((FLOOD_TAG as u128) << 64) | sent as u128);
        let text = json!({"message_type": "diagram_operation_request", "operation_id": op_id,
            "base_vector": 0, "operation": {"type": "patch", "cells": cells}})
        .to_string();
        if sink.send(Message::Text(text.into())).await.is_err() {
            break;
        }
        sent += 1;
        if per_second.is_none() && sent.is_multiple_of(64) {
            tokio::task::yield_now().await;
        }
    }
    let how = tokio::time::timeout(Duration::from_millis(500), ended)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_else(|| "still open".into());
    (sent, how)
}

async fn scenario(
    replicas: usize,
    participants: usize,
    cells: usize,
    mode: Mode,
    tck: f64,
    cores: f64,
) -> ScenarioResult {
    let name = format!(
        "{replicas} replica{}, {participants} participants, {cells} cells{}",
        if replicas == 1 { "" } else { "s" },
        if mode == Mode::Flood { ", flood" } else { "" }
    );
    eprintln!("--- {name}");
    let env = Env::postgres(Some(Env::test_redis()))
        .await
        .var("TMI_DISABLE_RATE_LIMITING", "true");
    // The offered rates go past the per-socket message limit (50/s): lifted, since throughput is
    // what this measures. The flood scenario keeps it: it is what stops a flood.
    let env = if mode == Mode::Steps {
        env.var("TMI_WEBSOCKET_MAX_MESSAGES_PER_SECOND", "100000")
    } else {
        env
    };
    // Two more participants in the flood scenario: the flooders (one at full speed, one at the
    // message limit with large operations).
    let flooders = if mode == Mode::Flood { 2 } else { 0 };
    let mut rs: Vec<Replica> = Vec::new();
    for _ in 0..replicas {
        rs.push(env.replica().await);
    }
    let users: Vec<String> = (0..participants + flooders)
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
    let mut flood_clients = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let mut client = rs[i % replicas].connect(token, &session).await;
        if i >= participants {
            client.expect("diagram_state").await;
            flood_clients.push(client);
            continue;
        }
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
    let mut flood_notes = Vec::new();
    if warm_problem.is_none() && mode == Mode::Flood {
        let n = (FLOOD_RATE * STEP.as_secs_f64()).round() as usize;
        let filler = cells.saturating_sub(WRITERS * CELLS_PER_WRITER);
        let quiet = sess.step(FLOOD_RATE, n, false, &pids, tck, cores).await;
        eprintln!("    quiet: p50 {} p99 {}", ms(quiet.p50), ms(quiet.p99));
        steps.push(quiet);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut clients = flood_clients.into_iter();
        for (label, per_second, cells_per_op) in [
            ("full speed, 1 cell per operation", None, 1),
            ("45/s, 25 cells per operation", Some(45.0), 25),
        ] {
            let Some(client) = clients.next() else { break };
            let until = Instant::now() + STEP;
            let flooder = tokio::spawn(flood(client, per_second, cells_per_op, filler, until));
            let mut step = sess.step(FLOOD_RATE, n, false, &pids, tck, cores).await;
            let (sent, how) = flooder.await.unwrap_or((0, "panicked".into()));
            eprintln!(
                "    flood ({label}): p50 {} p99 {}; the flooder sent {sent}, {how}",
                ms(step.p50),
                ms(step.p99)
            );
            flood_notes.push(format!(
                "flooder {label}: sent {sent} operations in {} s; its socket: {how}",
                STEP.as_secs()
            ));
            step.flood = Some(label.to_owned());
            steps.push(step);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    if warm_problem.is_none() && mode == Mode::Steps {
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
        replicas,
        cells,
        mode,
        flood_notes,
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
    let runs = SCENARIOS
        .iter()
        .copied()
        .filter(selected)
        .map(|(r, p, c)| (r, p, c, Mode::Steps))
        .chain(
            FLOOD_SCENARIOS
                .iter()
                .copied()
                .filter(|s| selected(s) && flood_selected())
                .map(|(r, p, c)| (r, p, c, Mode::Flood)),
        )
        .collect::<Vec<_>>();
    for (replicas, participants, cells, mode) in runs {
        let r = scenario(replicas, participants, cells, mode, tck, cores).await;
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
                "| {:.0}{}{} | {:.0} | {} | {} | {} | {:.0}% | {:.0}% | {:.0}% | {} |",
                s.offered,
                if s.retry { " (retry)" } else { "" },
                s.flood
                    .as_ref()
                    .map(|f| format!(" + flood ({f})"))
                    .unwrap_or_default(),
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
        for n in &r.flood_notes {
            println!("{n}");
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
    for (r, _) in results.iter().filter(|(r, _)| r.mode == Mode::Steps) {
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
    for (r, b) in results.iter().filter(|(r, _)| r.mode == Mode::Steps) {
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
    let flood_rows = flood_rows(&results);
    if !flood_rows.is_empty() {
        println!();
        println!(
            "### Flood isolation (the others' fan-out at {FLOOD_RATE:.0} ops/s, quiet and while one participant floods)"
        );
        println!("| scenario | quiet p50 / p99 | flood | flood p50 / p99 | p99 flood ÷ quiet |");
        println!("|---|---|---|---|---|");
        for row in &flood_rows {
            println!("| {} |", row.join(" | "));
        }
    }
    write_results(&results, &flood_rows);
    println!();
    println!("total time: {:.0} s", began.elapsed().as_secs_f64());
}

/// The flood table: per flood step, the quiet step's and the flood step's latencies.
fn flood_rows(results: &[(ScenarioResult, Baseline)]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for (r, _) in results.iter().filter(|(r, _)| r.mode == Mode::Flood) {
        let Some(quiet) = r.steps.iter().find(|s| s.flood.is_none()) else {
            continue;
        };
        for s in r.steps.iter().filter(|s| s.flood.is_some()) {
            rows.push(vec![
                r.name.clone(),
                format!("{} / {}", ms(quiet.p50), ms(quiet.p99)),
                s.flood.clone().unwrap_or_default(),
                format!("{} / {}", ms(s.p50), ms(s.p99)),
                format!("{:.2}", s.p99 as f64 / quiet.p99.max(1) as f64),
            ]);
        }
    }
    rows
}

fn ms_f(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// `$BENCH_RESULTS_DIR/collab.json`: the tables above and the charts the report draws.
fn write_results(results: &[(ScenarioResult, Baseline)], flood: &[Vec<String>]) {
    let mut out = Results::new("collab", "Collaboration");
    out.notes.push(format!(
        "{WRITERS} writers send at a fixed offered rate ({} s per step, open loop), each operation updating one \
         cell; every participant measures the fan-out latency of the others' operations. The baselines are \
         measured right after each scenario: raw Redis pub/sub fan-out to as many subscribers (at 100 \
         messages/s) and the bare PostgreSQL read-modify-write of the scenario's diagram row.",
        STEP.as_secs()
    ));
    out.notes.push(
        "Quote the ratios: the machine has 2 cores shared by the replicas, PostgreSQL, Redis, this client and \
         other work."
            .into(),
    );
    let steps = results.iter().filter(|(r, _)| r.mode == Mode::Steps);
    for (r, b) in steps.clone() {
        let rows = r
            .steps
            .iter()
            .map(|s| {
                vec![
                    format!("{:.0}{}", s.offered, if s.retry { " (retry)" } else { "" }),
                    format!("{:.0}", s.achieved),
                    format!("{:.2}", ms_f(s.p50)),
                    format!("{:.2}", ms_f(s.p99)),
                    format!("{:.0}%", s.cpu.0),
                    format!("{:.0}%", s.cpu.2),
                    if s.saturated() {
                        format!("saturated: {}", s.problems.join(", "))
                    } else {
                        "ok".into()
                    },
                ]
            })
            .collect();
        out.table(
            &format!(
                "{} (raw Redis p50 {:.2} ms, p99 {:.2} ms; bare PostgreSQL {:.0} tx/s)",
                r.name,
                ms_f(b.redis.0),
                ms_f(b.redis.1),
                b.pg()
            ),
            &[
                "offered ops/s",
                "achieved ops/s",
                "p50 (ms)",
                "p99 (ms)",
                "CPU replicas",
                "CPU machine",
                "result",
            ],
            rows,
        );
    }
    let summary = steps
        .clone()
        .map(|(r, b)| {
            let sustained = r.sustained().map_or(0.0, |s| s.achieved);
            vec![
                r.name.clone(),
                format!("{sustained:.0}"),
                format!("{:.0}", b.pg()),
                format!("{:.2}", sustained / b.pg().max(1e-9)),
                r.rss
                    .iter()
                    .map(|m| format!("{m:.1} MiB"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ]
        })
        .collect();
    out.table(
        "Highest sustained ops/s against the bare PostgreSQL read-modify-write",
        &[
            "scenario",
            "sustained ops/s",
            "bare PostgreSQL tx/s",
            "ratio",
            "peak RSS per replica",
        ],
        summary,
    );
    if !flood.is_empty() {
        out.table(
            "Flood isolation",
            &[
                "scenario",
                "quiet p50 / p99",
                "flood",
                "flood p50 / p99",
                "p99 flood ÷ quiet",
            ],
            flood.to_vec(),
        );
    }
    let mut sizes: Vec<usize> = steps.clone().map(|(r, _)| r.cells).collect();
    sizes.sort_unstable();
    sizes.dedup();
    for cells in sizes {
        let mut series: Vec<Series> = Vec::new();
        let mut redis: Option<(usize, &Baseline, Vec<f64>)> = None;
        for (r, b) in steps.clone().filter(|(r, _)| r.cells == cells) {
            let ok: Vec<&StepResult> = r.steps.iter().filter(|s| !s.saturated()).collect();
            series.push((
                format!("{} p50", r.name),
                false,
                ok.iter().map(|s| (s.offered, ms_f(s.p50))).collect(),
            ));
            series.push((
                format!("{} p99", r.name),
                false,
                ok.iter().map(|s| (s.offered, ms_f(s.p99))).collect(),
            ));
            let rates: Vec<f64> = ok.iter().map(|s| s.offered).collect();
            if redis.as_ref().is_none_or(|(p, _, _)| r.participants > *p) {
                redis = Some((r.participants, b, rates));
            }
        }
        if let Some((p, b, rates)) = redis {
            series.push((
                format!("raw Redis pub/sub p50 ({p} subscribers)"),
                true,
                rates.iter().map(|&x| (x, ms_f(b.redis.0))).collect(),
            ));
            series.push((
                format!("raw Redis pub/sub p99 ({p} subscribers)"),
                true,
                rates.iter().map(|&x| (x, ms_f(b.redis.1))).collect(),
            ));
        }
        out.chart(
            &format!("collab-latency-{cells}"),
            &format!("Fan-out latency against offered ops/s ({cells}-cell diagram)"),
            "offered ops/s",
            "fan-out latency (ms)",
            series,
        );
    }
    let mut groups: Vec<(usize, usize)> = steps.clone().map(|(r, _)| (r.participants, r.cells)).collect();
    groups.sort_unstable();
    groups.dedup();
    let mut series: Vec<Series> = Vec::new();
    for (p, cells) in groups {
        let points: Vec<(f64, f64)> = steps
            .clone()
            .filter(|(r, _)| r.participants == p && r.cells == cells)
            .map(|(r, _)| (r.replicas as f64, r.sustained().map_or(0.0, |s| s.achieved)))
            .collect();
        series.push((
            format!("tmi-server, {p} participants, {cells} cells"),
            false,
            points,
        ));
    }
    let mut by_cells: Vec<(usize, f64, Vec<f64>)> = Vec::new();
    for (r, b) in steps.clone() {
        match by_cells.iter_mut().find(|(c, _, _)| *c == r.cells) {
            Some((_, pg, xs)) => {
                *pg = pg.max(b.pg());
                xs.push(r.replicas as f64);
            }
            None => by_cells.push((r.cells, b.pg(), vec![r.replicas as f64])),
        }
    }
    for (cells, pg, mut xs) in by_cells {
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        series.push((
            format!("bare PostgreSQL read-modify-write, {cells} cells"),
            true,
            xs.iter().map(|&x| (x, pg)).collect(),
        ));
    }
    out.chart(
        "collab-throughput",
        "Highest sustained ops/s against replicas",
        "replicas",
        "ops/s",
        series,
    );
    out.write();
}
