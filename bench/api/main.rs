//! API benchmark (`cargo bench -p tmi-server --bench api`): starts the release `tmi-server` binary
//! on a fresh PostgreSQL database (from `TMI_TEST_DATABASE_URL`), measures the time from process
//! start to ready, runs a mixed workload (create threat model, get, list 25, create threat, JSON
//! Patch) at concurrency 1 and 32, reports requests/s, p50/p99 latency and the server's peak RSS,
//! and, as a baseline, the same inserts done directly with a bare sqlx loop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tmi-server/tests/common/pgdb.rs"]
mod pgdb;
#[path = "../../tmi-server/tests/collab/support.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

const ITERATIONS_SERIAL: usize = 200;
const ITERATIONS_PER_WORKER: usize = 40;

/// Kills the server when the benchmark ends, also on panic.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One mixed iteration; returns the latency of each of its five requests.
async fn iteration(client: &reqwest::Client, base: &str, token: &str, i: usize) -> Vec<Duration> {
    let mut lat = Vec::with_capacity(5);
    let t = Instant::now();
    let tm: Value = client
        .post(format!("{base}/threat_models"))
        .bearer_auth(token)
        .json(&json!({"name": format!("bench {i}"), "description": "benchmark model"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    lat.push(t.elapsed());
    let id = tm["id"].as_str().expect("created").to_owned();
    let t = Instant::now();
    assert!(
        client
            .get(format!("{base}/threat_models/{id}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    lat.push(t.elapsed());
    let t = Instant::now();
    assert!(
        client
            .get(format!("{base}/threat_models?limit=25&offset=0"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    lat.push(t.elapsed());
    let t = Instant::now();
    let threat: Value = client
        .post(format!("{base}/threat_models/{id}/threats"))
        .bearer_auth(token)
        .json(&json!({"name": "Spoofing", "threat_type": ["Spoofing"], "severity": "high"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    lat.push(t.elapsed());
    let tid = threat["id"].as_str().expect("threat").to_owned();
    let t = Instant::now();
    let res = client
        .patch(format!("{base}/threat_models/{id}/threats/{tid}"))
        .bearer_auth(token)
        .header("content-type", "application/json-patch+json")
        .body(json!([{"op": "replace", "path": "/mitigation", "value": "mfa"}]).to_string())
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    lat.push(t.elapsed());
    lat
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn workload(
    base: &str,
    token: &str,
    concurrency: usize,
    per_worker: usize,
) -> (f64, Duration, Duration, usize) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (client, base, token) = (client.clone(), base.to_owned(), token.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut all = Vec::new();
            for i in 0..per_worker {
                all.extend(iteration(&client, &base, &token, w * per_worker + i).await);
            }
            all
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    lat.sort();
    (
        lat.len() as f64 / elapsed.as_secs_f64(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.len(),
    )
}

/// The same inserts (threat model + ACL rows, threat) straight through sqlx.
async fn baseline(url: &str, concurrency: usize, per_worker: usize) -> f64 {
    let pool = Arc::new(
        PgPoolOptions::new()
            .max_connections(concurrency as u32 + 1)
            .connect(url)
            .await
            .unwrap(),
    );
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_worker {
                let mut tx = pool.begin().await.unwrap();
                let (alias,): (i64,) =
                    sqlx::query_as("SELECT nextval('threat_model_alias')").fetch_one(&mut *tx).await.unwrap();
                let id = Uuid::new_v4();
                let now = chrono::Utc::now();
                sqlx::query(
                    "INSERT INTO threat_models (id, alias, name, owner_provider, owner_provider_id, owner_email, \
                     status, version, created_at, modified_at, doc) VALUES ($1, $2, $3, 'tmi', 'base', \
                     'base@tmi.local', 'not_started', 1, $4, $4, $5)",
                )
                .bind(id)
                .bind(alias)
                .bind(format!("baseline {w}-{i}"))
                .bind(now)
                .bind(sqlx::types::Json(json!({"name": "baseline"})))
                .execute(&mut *tx)
                .await
                .unwrap();
                sqlx::query("INSERT INTO tm_access VALUES ($1, 'user', 'tmi', 'base', 'owner')").bind(id).execute(&mut *tx).await.unwrap();
                sqlx::query(
                    "INSERT INTO children (id, threat_model_id, kind, alias, version, created_at, modified_at, doc) \
                     VALUES ($1, $2, 'threat', 1, 1, $3, $3, $4)",
                )
                .bind(Uuid::new_v4())
                .bind(id)
                .bind(now)
                .bind(sqlx::types::Json(json!({"name": "Spoofing", "threat_type": []})))
                .execute(&mut *tx)
                .await
                .unwrap();
                tx.commit().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (concurrency * per_worker) as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let db = pgdb::TestDatabase::create("tmi_bench").await;
    let url = db.url.clone();
    let port = 20_000 + (std::process::id() % 20_000) as u16;
    let base = format!("http://127.0.0.1:{port}");
    let data = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tmi-server"))
        .env("TMI_DATABASE_URL", &url)
        .env("TMI_BUILD_MODE", "test")
        .env("TMI_JWT_SECRET", "benchmark-secret-0123456789abcdef")
        .env("TMI_SERVER_PORT", port.to_string())
        .env("TMI_SERVER_INTERFACE", "127.0.0.1")
        .env("TMI_DB_MAX_OPEN_CONNS", "40")
        .env("TMI_DATA_DIR", data.path())
        .env("TMI_LOG_LEVEL", "warn")
        // One user at full speed is what this measures, not the per-user rate limit.
        .env("TMI_DISABLE_RATE_LIMITING", "true")
        .spawn()
        .expect("start tmi-server");
    let mut child = ChildGuard(child);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "server did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let startup = started.elapsed();
    let token = support::login_at(&client, &base, "bench").await;

    let serial = workload(&base, &token, 1, ITERATIONS_SERIAL).await;
    let parallel = workload(&base, &token, 32, ITERATIONS_PER_WORKER).await;
    let rss = support::peak_rss_kib(child.0.id());
    let _ = child.0.kill();
    let _ = child.0.wait();
    let base1 = baseline(&url, 1, ITERATIONS_SERIAL).await;
    let base32 = baseline(&url, 32, ITERATIONS_PER_WORKER).await;
    drop(db);

    println!("tmi-server API benchmark (PostgreSQL, release build)");
    println!("start to ready on an empty database: {} ms", startup.as_millis());
    println!("| concurrency | requests | requests/s | p50 | p99 |");
    println!("|---|---|---|---|---|");
    for (c, (rps, p50, p99, n)) in [(1, serial), (32, parallel)] {
        println!(
            "| {c} | {n} | {rps:.0} | {:.2} ms | {:.2} ms |",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
    }
    println!("server peak RSS: {:.1} MiB", rss as f64 / 1024.0);
    println!(
        "baseline, bare sqlx (threat model + ACL row + threat per transaction): {base1:.0} tx/s at 1, {base32:.0} tx/s at 32"
    );
}
