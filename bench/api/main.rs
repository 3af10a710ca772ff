//! API benchmark (`cargo bench -p tmi-server --bench api`, `make bench-api`): starts the release
//! `tmi-server` binary on a fresh database (PostgreSQL from `TMI_TEST_DATABASE_URL`, and a SQLite
//! file), measures the time from process start to ready, then runs the mixed workload (create threat
//! model, get, list 25, create threat, JSON Patch of the threat) at stepped concurrency for a fixed
//! time per step, and after each step the bare-sqlx baseline: the same statements and transactions
//! the server issues for those five requests (read from the store code and checked against
//! PostgreSQL's statement log), with the same pool size, on the same database, timed per request.
//! It reports requests/s, p50 and p99 of both and their ratios (medians over several runs, each ratio
//! taken against the baseline measured in the same run), the server's peak RSS, and writes
//! `$BENCH_RESULTS_DIR/api.json` when that variable is set. IO: processes, HTTP, the databases.
//!
//! Knobs (environment): `BENCH_API_DATABASES` (`postgres,sqlite`), `BENCH_API_CONCURRENCY`
//! (`1,8,32,64`), `BENCH_API_SECONDS` per step (3), `BENCH_API_RUNS` (3), `BENCH_API_WARMUP`
//! seconds at concurrency 8 before the runs (1), `BENCH_API_WRAPPER` (a
//! command the server is started under, e.g. `perf record -g -o api.perf --`; it is stopped with
//! SIGINT so that the wrapper can finish its output).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tmi-server/tests/common/pgdb.rs"]
mod pgdb;
#[path = "../../tmi-server/tests/collab/support.rs"]
mod support;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;

/// The server's `TMI_DB_MAX_OPEN_CONNS` in this benchmark, and the baseline's pool size on
/// PostgreSQL. On SQLite both use `SQLITE_POOL` (the server caps its SQLite pool at 8).
const PG_POOL: u32 = 40;
const SQLITE_POOL: u32 = 8;

/// A JSON document bound as the store binds it (`store::sql::JsonDoc`): its serialized text, as
/// PostgreSQL `json` and SQLite `TEXT`.
struct JsonDoc<'a>(&'a Value);

impl sqlx::Type<sqlx::Postgres> for JsonDoc<'_> {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        sqlx::postgres::PgTypeInfo::with_oid(sqlx::postgres::types::Oid(114))
    }
}

impl sqlx::Encode<'_, sqlx::Postgres> for JsonDoc<'_> {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        serde_json::to_writer(&mut **buf, self.0)?;
        Ok(sqlx::encode::IsNull::No)
    }
}

impl sqlx::Type<sqlx::Sqlite> for JsonDoc<'_> {
    fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
        <str as sqlx::Type<sqlx::Sqlite>>::type_info()
    }
}

impl sqlx::Encode<'_, sqlx::Sqlite> for JsonDoc<'_> {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::sqlite::SqliteArgumentsBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        sqlx::Encode::<sqlx::Sqlite>::encode(serde_json::to_string(self.0)?, buf)
    }
}

/// Kills the server when the benchmark ends, also on panic.
struct ChildGuard(std::process::Child);

impl ChildGuard {
    /// SIGINT, then up to 30 s for the process (and a wrapper such as perf) to finish.
    fn stop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Db {
    Postgres,
    Sqlite,
}

impl Db {
    fn label(self) -> &'static str {
        match self {
            Db::Postgres => "PostgreSQL",
            Db::Sqlite => "SQLite",
        }
    }
    fn id(self) -> &'static str {
        match self {
            Db::Postgres => "postgres",
            Db::Sqlite => "sqlite",
        }
    }
    fn pool(self) -> u32 {
        match self {
            Db::Postgres => PG_POOL,
            Db::Sqlite => SQLITE_POOL,
        }
    }
}

/// One measured step: requests/s and latency percentiles (ms).
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    rps: f64,
    p50: f64,
    p99: f64,
    requests: usize,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Runs `concurrency` workers, each calling `iteration` (which returns the latency of each of its
/// requests) until `secs` have passed; an iteration started in time is finished.
async fn step<F, Fut>(concurrency: usize, secs: f64, iteration: F) -> Sample
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<Duration>> + Send + 'static,
{
    let iteration = Arc::new(iteration);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let iteration = iteration.clone();
        tasks.push(tokio::spawn(async move {
            let mut all = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                all.extend(iteration(w * 1_000_000 + i).await);
                i += 1;
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
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Sample {
        rps: lat.len() as f64 / elapsed.as_secs_f64(),
        p50: ms(percentile(&lat, 0.5)),
        p99: ms(percentile(&lat, 0.99)),
        requests: lat.len(),
    }
}

/// One mixed iteration against the server; returns the latency of each of its five requests.
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
    let res = client
        .get(format!("{base}/threat_models/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    res.bytes().await.unwrap();
    lat.push(t.elapsed());
    let t = Instant::now();
    let res = client
        .get(format!("{base}/threat_models?limit=25&offset=0"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    res.bytes().await.unwrap();
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
    res.bytes().await.unwrap();
    lat.push(t.elapsed());
    lat
}

/// The baseline: for each of the five requests, the statements and transactions the server issues
/// (`tmi-server/src/store/sql.rs`), on a plain sqlx pool, rows decoded into the same column types.
/// `$begin` is the store's `BEGIN` (`BEGIN IMMEDIATE` on SQLite), `$alias` its threat-model alias
/// statement, `$for_update` its row lock.
macro_rules! baseline {
    ($name:ident, $db:ty, $pool:ty, $begin:expr, $alias:expr, $for_update:expr) => {
        mod $name {
            use super::*;
            use chrono::{DateTime, Utc};
            use sqlx::Row as _;
            use sqlx::types::Json;

            const TM_COLUMNS: &str = "t.id, t.alias, t.name, t.owner_provider, t.owner_provider_id, \
                t.owner_email, t.reviewer_email, t.status, t.version, t.created_at, t.modified_at, t.deleted_at, t.doc";
            const COUNT_COLUMNS: &str = "\
                (SELECT COUNT(*) FROM children c WHERE c.threat_model_id = t.id AND c.kind = 'diagram' AND c.deleted_at IS NULL) AS diagrams, \
                (SELECT COUNT(*) FROM children c WHERE c.threat_model_id = t.id AND c.kind = 'threat' AND c.deleted_at IS NULL) AS threats, \
                (SELECT COUNT(*) FROM children c WHERE c.threat_model_id = t.id AND c.kind = 'document' AND c.deleted_at IS NULL) AS documents, \
                (SELECT COUNT(*) FROM children c WHERE c.threat_model_id = t.id AND c.kind = 'repository' AND c.deleted_at IS NULL) AS repositories, \
                (SELECT COUNT(*) FROM children c WHERE c.threat_model_id = t.id AND c.kind = 'note' AND c.deleted_at IS NULL) AS notes, \
                (SELECT COUNT(*) FROM children c WHERE c.threat_model_id = t.id AND c.kind = 'asset' AND c.deleted_at IS NULL) AS assets";
            const CHILD_COLUMNS: &str =
                "id, threat_model_id, kind, alias, version, created_at, modified_at, deleted_at, doc";
            /// The viewer filter of the threat-model list (owner, or an ACL row for the user or everyone).
            const VIEWER: &str = " FROM threat_models t WHERE 1 = 1 AND t.deleted_at IS NULL AND ((t.owner_provider = $1 \
                AND t.owner_provider_id = $2) OR EXISTS (SELECT 1 FROM tm_access a WHERE a.threat_model_id = t.id AND \
                ((a.principal_type = 'user' AND a.provider = $3 AND a.provider_id = $4) OR \
                (a.principal_type = 'group' AND a.provider_id = 'everyone'))))";

            type DbRow = <$db as sqlx::Database>::Row;

            /// Decodes a threat-model row as the store does.
            fn tm(row: &DbRow) -> (Uuid, i64, Value) {
                let id: Uuid = row.get(0);
                let alias: i64 = row.get(1);
                for c in 2..8 {
                    let _: Option<String> = row.get(c);
                }
                let _: i64 = row.get(8);
                let _: DateTime<Utc> = row.get(9);
                let _: DateTime<Utc> = row.get(10);
                let _: Option<DateTime<Utc>> = row.get(11);
                let doc: Json<Value> = row.get(12);
                (id, alias, doc.0)
            }

            /// Decodes a child row as the store does.
            fn child(row: &DbRow) -> (Uuid, i64, Value) {
                let id: Uuid = row.get(0);
                let _: Uuid = row.get(1);
                let _: String = row.get(2);
                let _: i64 = row.get(3);
                let version: i64 = row.get(4);
                let _: DateTime<Utc> = row.get(5);
                let _: DateTime<Utc> = row.get(6);
                let _: Option<DateTime<Utc>> = row.get(7);
                let doc: Json<Value> = row.get(8);
                (id, version, doc.0)
            }

            /// Every authenticated request: the token's user.
            async fn user(pool: &$pool) {
                let row = sqlx::query(
                    "SELECT internal_uuid, provider, provider_user_id, email, name, email_verified FROM users \
                     WHERE provider = $1 AND provider_user_id = $2",
                )
                .bind("tmi")
                .bind("bench")
                .fetch_optional(pool)
                .await
                .unwrap();
                assert!(row.is_some(), "the benchmark user signed in");
            }

            /// The gate's read of the parent threat model and its ACL.
            async fn parent(pool: &$pool, id: Uuid) {
                let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {TM_COLUMNS} FROM threat_models t WHERE t.id = $1"
                )))
                .bind(id)
                .fetch_one(pool)
                .await
                .unwrap();
                tm(&row);
                sqlx::query(
                    "SELECT principal_type, provider, provider_id, role FROM tm_access WHERE threat_model_id = $1",
                )
                .bind(id)
                .fetch_all(pool)
                .await
                .unwrap();
            }

            async fn metadata(pool: &$pool, id: Uuid) {
                sqlx::query("SELECT key, value FROM metadata WHERE entity_id = $1 ORDER BY position, key")
                    .bind(id)
                    .fetch_all(pool)
                    .await
                    .unwrap();
            }

            /// The five requests of one iteration; the latency of each.
            pub async fn iteration(pool: $pool, owner: Uuid, i: usize) -> Vec<Duration> {
                let mut lat = Vec::with_capacity(5);
                let now = Utc::now();

                // POST /threat_models
                let t = Instant::now();
                user(&pool).await;
                let id = Uuid::new_v4();
                let name = format!("baseline {i}");
                let who = json!({"display_name": "Bench (TMI User)", "email": "bench@tmi.local",
                    "principal_type": "user", "provider": "tmi", "provider_id": "bench"});
                // The ACL of a new model: the owner, and the two built-in groups (`acl::for_new_model`).
                let acl = [
                    ("user", "bench", "owner"),
                    ("group", "security-reviewers", "owner"),
                    ("group", "tmi-automation", "writer"),
                ];
                let mut owner_entry = who.clone();
                owner_entry["role"] = json!("owner");
                let doc = json!({"authorization": [owner_entry,
                    {"principal_type": "group", "provider": "tmi", "provider_id": "security-reviewers", "role": "owner"},
                    {"principal_type": "group", "provider": "tmi", "provider_id": "tmi-automation", "role": "writer"}],
                    "created_by": who, "description": "benchmark model", "is_confidential": false, "name": name,
                    "owner": who, "status": "not_started", "status_updated": now.to_rfc3339(),
                    "threat_model_framework": "STRIDE"});
                let mut tx = pool.begin_with($begin).await.unwrap();
                let (alias,): (i64,) = sqlx::query_as($alias).fetch_one(&mut *tx).await.unwrap();
                sqlx::query(
                    "INSERT INTO threat_models (id, alias, name, owner_provider, owner_provider_id, owner_email, \
                     reviewer_email, status, version, created_at, modified_at, deleted_at, doc, search_name, \
                     search_description, search_issue_uri, search_owner, search_reviewer, status_updated) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
                )
                .bind(id)
                .bind(alias)
                .bind(&name)
                .bind("tmi")
                .bind("bench")
                .bind("bench@tmi.local")
                .bind(None::<String>)
                .bind("not_started")
                .bind(1_i64)
                .bind(now)
                .bind(now)
                .bind(None::<DateTime<Utc>>)
                .bind(JsonDoc(&doc))
                .bind(name.to_lowercase())
                .bind("benchmark model")
                .bind(None::<String>)
                .bind("bench@tmi.local bench")
                .bind(None::<String>)
                .bind(now)
                .execute(&mut *tx)
                .await
                .unwrap();
                sqlx::query("DELETE FROM tm_access WHERE threat_model_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                for (principal_type, provider_id, role) in acl {
                    sqlx::query(
                        "INSERT INTO tm_access (threat_model_id, principal_type, provider, provider_id, role) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(id)
                    .bind(principal_type)
                    .bind("tmi")
                    .bind(provider_id)
                    .bind(role)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                }
                tx.commit().await.unwrap();
                let _ = owner;
                lat.push(t.elapsed());

                // GET /threat_models/{id}
                let t = Instant::now();
                user(&pool).await;
                parent(&pool, id).await;
                sqlx::query(
                    "SELECT entity_id, key, value FROM metadata WHERE entity_id = $1 OR entity_id IN \
                     (SELECT id FROM children WHERE threat_model_id = $1) ORDER BY position, key",
                )
                .bind(id)
                .fetch_all(&pool)
                .await
                .unwrap();
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {CHILD_COLUMNS} FROM children WHERE threat_model_id = $1 AND deleted_at IS NULL \
                     ORDER BY created_at, alias"
                )))
                .bind(id)
                .fetch_all(&pool)
                .await
                .unwrap();
                rows.iter().for_each(|r| drop(child(r)));
                lat.push(t.elapsed());

                // GET /threat_models?limit=25&offset=0
                let t = Instant::now();
                user(&pool).await;
                let (_total,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT COUNT(*){VIEWER}")))
                    .bind("tmi")
                    .bind("bench")
                    .bind("tmi")
                    .bind("bench")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {TM_COLUMNS}, {COUNT_COLUMNS}{VIEWER} ORDER BY t.created_at DESC, t.id LIMIT $5 OFFSET $6"
                )))
                .bind("tmi")
                .bind("bench")
                .bind("tmi")
                .bind("bench")
                .bind(25_i64)
                .bind(0_i64)
                .fetch_all(&pool)
                .await
                .unwrap();
                for r in &rows {
                    tm(r);
                    for c in 13..19 {
                        let _: i64 = r.get(c);
                    }
                }
                lat.push(t.elapsed());

                // POST /threat_models/{id}/threats
                let t = Instant::now();
                user(&pool).await;
                parent(&pool, id).await;
                let tid = Uuid::new_v4();
                let threat = json!({"include_in_report": true, "name": "Spoofing", "severity": "high",
                    "threat_type": ["Spoofing"], "timmy_enabled": true});
                let mut tx = pool.begin_with($begin).await.unwrap();
                let (child_alias,): (i64,) = sqlx::query_as(
                    "INSERT INTO alias_counters (scope, value) VALUES ($1, 1) \
                     ON CONFLICT (scope) DO UPDATE SET value = alias_counters.value + 1 RETURNING value",
                )
                .bind(format!("{id}:threat"))
                .fetch_one(&mut *tx)
                .await
                .unwrap();
                sqlx::query(
                    "INSERT INTO children (id, threat_model_id, kind, alias, version, created_at, modified_at, \
                     deleted_at, doc) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(tid)
                .bind(id)
                .bind("threat")
                .bind(child_alias)
                .bind(1_i64)
                .bind(now)
                .bind(now)
                .bind(None::<DateTime<Utc>>)
                .bind(JsonDoc(&threat))
                .execute(&mut *tx)
                .await
                .unwrap();
                tx.commit().await.unwrap();
                metadata(&pool, tid).await;
                lat.push(t.elapsed());

                // PATCH /threat_models/{id}/threats/{tid}
                let t = Instant::now();
                user(&pool).await;
                parent(&pool, id).await;
                let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {CHILD_COLUMNS} FROM children WHERE id = $1 AND threat_model_id = $2 AND kind = $3"
                )))
                .bind(tid)
                .bind(id)
                .bind("threat")
                .fetch_one(&pool)
                .await
                .unwrap();
                let (_, version, mut doc) = child(&row);
                metadata(&pool, tid).await;
                doc["mitigated"] = json!(false);
                doc["mitigation"] = json!("mfa");
                let mut tx = pool.begin_with($begin).await.unwrap();
                let done = sqlx::query(
                    "UPDATE children SET version = $1, modified_at = $2, deleted_at = $3, doc = $4 \
                     WHERE id = $5 AND threat_model_id = $6 AND kind = $7 AND version = $8",
                )
                .bind(version + 1)
                .bind(Utc::now())
                .bind(None::<DateTime<Utc>>)
                .bind(JsonDoc(&doc))
                .bind(tid)
                .bind(id)
                .bind("threat")
                .bind(version)
                .execute(&mut *tx)
                .await
                .unwrap();
                assert_eq!(done.rows_affected(), 1);
                tx.commit().await.unwrap();
                metadata(&pool, tid).await;
                lat.push(t.elapsed());
                let _ = $for_update;
                lat
            }
        }
    };
}

baseline!(
    pg,
    sqlx::Postgres,
    sqlx::PgPool,
    "BEGIN",
    "SELECT nextval('threat_model_alias')",
    "FOR UPDATE"
);
baseline!(
    lite,
    sqlx::Sqlite,
    sqlx::SqlitePool,
    "BEGIN IMMEDIATE",
    "INSERT INTO alias_counters (scope, value) VALUES ('threat_model', 1) \
     ON CONFLICT (scope) DO UPDATE SET value = alias_counters.value + 1 RETURNING value",
    ""
);

/// The baseline's pool on the server's database, opened as the store opens it.
enum Pool {
    Pg(sqlx::PgPool),
    Lite(sqlx::SqlitePool),
}

impl Pool {
    async fn open(db: Db, url: &str) -> Self {
        match db {
            Db::Postgres => Pool::Pg(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(db.pool())
                    .connect(url)
                    .await
                    .unwrap(),
            ),
            Db::Sqlite => {
                use std::str::FromStr;
                let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)
                    .unwrap()
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(10));
                Pool::Lite(
                    sqlx::sqlite::SqlitePoolOptions::new()
                        .max_connections(db.pool())
                        .connect_with(options)
                        .await
                        .unwrap(),
                )
            }
        }
    }

    async fn step(&self, concurrency: usize, secs: f64) -> Sample {
        match self {
            Pool::Pg(p) => {
                let p = p.clone();
                step(concurrency, secs, move |i| {
                    pg::iteration(p.clone(), Uuid::nil(), i)
                })
                .await
            }
            Pool::Lite(p) => {
                let p = p.clone();
                step(concurrency, secs, move |i| {
                    lite::iteration(p.clone(), Uuid::nil(), i)
                })
                .await
            }
        }
    }
}

fn env_list<T: std::str::FromStr>(name: &str, default: &str) -> Vec<T> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Every run's samples of one database at one concurrency.
#[derive(Default)]
struct Cell {
    server: Vec<Sample>,
    baseline: Vec<Sample>,
}

impl Cell {
    fn med(&self, side: &[Sample], f: fn(&Sample) -> f64) -> f64 {
        median(side.iter().map(f).collect())
    }
    /// Median over runs of server/baseline, each run against its own baseline.
    fn ratio(&self, f: fn(&Sample) -> f64) -> f64 {
        median(
            self.server
                .iter()
                .zip(&self.baseline)
                .map(|(s, b)| f(s) / f(b))
                .collect(),
        )
    }
}

/// Results of one database.
struct DbResult {
    db: Db,
    startup_ms: f64,
    rss_mib: f64,
    cells: Vec<(usize, Cell)>,
}

async fn run_database(db: Db, concurrency: &[usize], secs: f64, runs: usize) -> DbResult {
    let pg_db;
    let dir = tempfile::tempdir().unwrap();
    let url = match db {
        Db::Postgres => {
            pg_db = Some(pgdb::TestDatabase::create("tmi_bench").await);
            pg_db.as_ref().unwrap().url.clone()
        }
        Db::Sqlite => {
            pg_db = None;
            format!("sqlite://{}/bench.db", dir.path().display())
        }
    };
    let port = 20_000 + (std::process::id() % 20_000) as u16 + if db == Db::Sqlite { 1 } else { 0 };
    let base = format!("http://127.0.0.1:{port}");
    let data = tempfile::tempdir().unwrap();
    let wrapper: Vec<String> = std::env::var("BENCH_API_WRAPPER")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let server_bin = env!("CARGO_BIN_EXE_tmi-server");
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = std::process::Command::new(first);
            c.args(rest).arg(server_bin);
            c
        }
        None => std::process::Command::new(server_bin),
    };
    let started = Instant::now();
    let child = cmd
        .env("TMI_DATABASE_URL", &url)
        .env("TMI_BUILD_MODE", "test")
        .env("TMI_JWT_SECRET", "benchmark-secret-0123456789abcdef")
        .env("TMI_SERVER_PORT", port.to_string())
        .env("TMI_SERVER_INTERFACE", "127.0.0.1")
        .env("TMI_DB_MAX_OPEN_CONNS", PG_POOL.to_string())
        .env("TMI_DATA_DIR", data.path())
        .env("TMI_LOG_LEVEL", "warn")
        // One user at full speed is what this measures, not the per-user rate limit.
        .env("TMI_DISABLE_RATE_LIMITING", "true")
        .spawn()
        .expect("start tmi-server");
    let mut child = ChildGuard(child);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(256)
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
    let startup_ms = started.elapsed().as_secs_f64() * 1e3;
    let token = support::login_at(&client, &base, "bench").await;
    let pool = Pool::open(db, &url).await;

    let server_step = |c: usize, secs: f64| {
        let (client, base, token) = (client.clone(), base.clone(), token.clone());
        step(c, secs, move |i| {
            let (client, base, token) = (client.clone(), base.clone(), token.clone());
            async move { iteration(&client, &base, &token, i).await }
        })
    };
    // Warm-up: connections, prepared statements, caches.
    let warmup: f64 = env_list("BENCH_API_WARMUP", "1").first().copied().unwrap_or(1.0);
    server_step(8, warmup).await;
    pool.step(8, warmup).await;

    let mut cells: Vec<(usize, Cell)> = concurrency.iter().map(|c| (*c, Cell::default())).collect();
    for run in 0..runs {
        for (c, cell) in &mut cells {
            let s = server_step(*c, secs).await;
            let b = pool.step(*c, secs).await;
            eprintln!(
                "{} run {run} c={c}: server {:.0} req/s p50 {:.2} p99 {:.2} | baseline {:.0} req/s p50 {:.2} p99 {:.2}",
                db.label(),
                s.rps,
                s.p50,
                s.p99,
                b.rps,
                b.p50,
                b.p99
            );
            cell.server.push(s);
            cell.baseline.push(b);
        }
    }
    let rss_mib = support::peak_rss_kib(child.0.id()) as f64 / 1024.0;
    child.stop();
    drop(child);
    match pool {
        Pool::Pg(p) => p.close().await,
        Pool::Lite(p) => p.close().await,
    }
    drop(pg_db);
    DbResult {
        db,
        startup_ms,
        rss_mib,
        cells,
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse::<f64>().ok()))
        })
        .unwrap_or(0.0);
    format!("{cpu}, {cores} cores, {:.0} GiB", mem / 1024.0 / 1024.0)
}

fn report(results: &[DbResult], secs: f64, runs: usize) -> Value {
    let f = |x: f64| format!("{x:.2}");
    let mut tables = Vec::new();
    let mut charts = Vec::new();
    for r in results {
        for (c, cell) in &r.cells {
            let rows = vec![
                json!([
                    "requests/s",
                    format!("{:.0}", cell.med(&cell.server, |s| s.rps)),
                    format!("{:.0}", cell.med(&cell.baseline, |s| s.rps)),
                    f(cell.ratio(|s| s.rps)),
                ]),
                json!([
                    "p50 (ms)",
                    f(cell.med(&cell.server, |s| s.p50)),
                    f(cell.med(&cell.baseline, |s| s.p50)),
                    f(cell.ratio(|s| s.p50)),
                ]),
                json!([
                    "p99 (ms)",
                    f(cell.med(&cell.server, |s| s.p99)),
                    f(cell.med(&cell.baseline, |s| s.p99)),
                    f(cell.ratio(|s| s.p99)),
                ]),
            ];
            tables.push(json!({
                "title": format!("{}, concurrency {c}", r.db.label()),
                "columns": ["metric", "tmi-server", "baseline", "ratio"],
                "rows": rows,
            }));
        }
        let series = |name: &str, baseline: bool, f: fn(&Sample) -> f64| {
            let points: Vec<Value> = r
                .cells
                .iter()
                .map(|(c, cell)| {
                    let side = if baseline { &cell.baseline } else { &cell.server };
                    json!([*c as f64, cell.med(side, f)])
                })
                .collect();
            json!({"name": name, "baseline": baseline, "points": points})
        };
        charts.push(json!({
            "id": format!("api-latency-{}", r.db.id()),
            "title": format!("REST latency against offered load ({})", r.db.label()),
            "x_label": "concurrency",
            "y_label": "latency (ms)",
            "log_y": true,
            "series": [
                series("tmi-server p50", false, |s| s.p50),
                series("tmi-server p99", false, |s| s.p99),
                series("bare sqlx p50", true, |s| s.p50),
                series("bare sqlx p99", true, |s| s.p99),
            ],
        }));
        charts.push(json!({
            "id": format!("api-throughput-{}", r.db.id()),
            "title": format!("REST throughput against concurrency ({})", r.db.label()),
            "x_label": "concurrency",
            "y_label": "requests/s",
            "log_y": false,
            "series": [
                series("tmi-server", false, |s| s.rps),
                series("bare sqlx", true, |s| s.rps),
            ],
        }));
    }
    tables.push(json!({
        "title": "Start-up and memory",
        "columns": ["database", "start to ready (ms)", "server peak RSS (MiB)"],
        "rows": results.iter().map(|r| json!([r.db.label(), format!("{:.0}", r.startup_ms), format!("{:.1}", r.rss_mib)])).collect::<Vec<_>>(),
    }));
    json!({
        "suite": "api",
        "title": "REST API",
        "date": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "machine": machine(),
        "notes": [
            "One iteration is five requests by one user: create a threat model, get it, list 25, create a threat, JSON Patch the threat. Each concurrency step runs for a fixed time; the release server and its client share the machine.",
            "The baseline (bare sqlx) issues, per request, the statements and transactions the server issues (the token's user, the gate's read of the parent threat model and its ACL, the writes, and the reads behind each response), on a pool of the same size on the same database, without HTTP.",
            format!("Medians of {runs} runs of {secs} s per step; each ratio is tmi-server over the baseline measured right after it in the same run (requests/s: higher is better; latency: lower is better)."),
        ],
        "tables": tables,
        "charts": charts,
    })
}

fn print_markdown(results: &[DbResult]) {
    println!(
        "| database | concurrency | server req/s | baseline req/s | ratio | server p50 / p99 (ms) | baseline p50 / p99 (ms) | p99 ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in results {
        for (c, cell) in &r.cells {
            println!(
                "| {} | {c} | {:.0} | {:.0} | {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} |",
                r.db.label(),
                cell.med(&cell.server, |s| s.rps),
                cell.med(&cell.baseline, |s| s.rps),
                cell.ratio(|s| s.rps),
                cell.med(&cell.server, |s| s.p50),
                cell.med(&cell.server, |s| s.p99),
                cell.med(&cell.baseline, |s| s.p50),
                cell.med(&cell.baseline, |s| s.p99),
                cell.ratio(|s| s.p99),
            );
        }
    }
    for r in results {
        println!(
            "{}: start to ready {:.0} ms, server peak RSS {:.1} MiB, requests per step and run: {:?}",
            r.db.label(),
            r.startup_ms,
            r.rss_mib,
            r.cells
                .iter()
                .map(|(c, cell)| (*c, cell.server.iter().map(|s| s.requests).collect::<Vec<_>>()))
                .collect::<Vec<_>>()
        );
    }
}

#[tokio::main]
async fn main() {
    let dbs: Vec<Db> = std::env::var("BENCH_API_DATABASES")
        .unwrap_or_else(|_| "postgres,sqlite".into())
        .split(',')
        .filter_map(|s| match s.trim() {
            "postgres" => Some(Db::Postgres),
            "sqlite" => Some(Db::Sqlite),
            _ => None,
        })
        .collect();
    let concurrency: Vec<usize> = env_list("BENCH_API_CONCURRENCY", "1,8,32,64");
    let secs: f64 = env_list("BENCH_API_SECONDS", "3").first().copied().unwrap_or(3.0);
    let runs: usize = env_list("BENCH_API_RUNS", "3")
        .first()
        .copied()
        .unwrap_or(3)
        .max(1);

    let mut results = Vec::new();
    for db in dbs {
        results.push(run_database(db, &concurrency, secs, runs).await);
    }
    println!("tmi-server API benchmark (release build), medians of {runs} runs, {secs} s per step");
    print_markdown(&results);
    if let Ok(dir) = std::env::var("BENCH_RESULTS_DIR") {
        std::fs::create_dir_all(&dir).unwrap();
        let path = std::path::Path::new(&dir).join("api.json");
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&report(&results, secs, runs)).unwrap(),
        )
        .unwrap();
        println!("wrote {}", path.display());
    }
}
