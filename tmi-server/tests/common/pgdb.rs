//! A fresh PostgreSQL database on `TMI_TEST_DATABASE_URL` for one test or benchmark, dropped
//! (with its connections) when the guard is dropped. The one throw-away database helper: shared by
//! the store's conformance tests (`src/store`), the API tests, the collaboration tests and the
//! benchmarks through `#[path]`, so it uses sqlx directly. IO: PostgreSQL.

use sqlx::postgres::PgPoolOptions;

/// A database that exists while this value lives.
pub struct TestDatabase {
    /// Its connection URL.
    pub url: String,
    admin: String,
    name: String,
}

/// `admin` (a PostgreSQL URL) with its database replaced by `name`; user, password, host, port and
/// query parameters (`?sslmode=…`) are kept.
pub fn database_url(admin: &str, name: &str) -> String {
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

async fn execute(admin: &str, sql: String) -> Result<(), sqlx::Error> {
    let pool = PgPoolOptions::new().max_connections(1).connect(admin).await?;
    let result = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
    pool.close().await;
    result.map(|_| ())
}

impl TestDatabase {
    /// Creates `<prefix>_<uuid>`; panics (never skips) when `TMI_TEST_DATABASE_URL` is unset.
    pub async fn create(prefix: &str) -> Self {
        let admin = std::env::var("TMI_TEST_DATABASE_URL").expect(
            "TMI_TEST_DATABASE_URL is not set: run the tests with `make test`, which starts PostgreSQL and Redis",
        );
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        execute(&admin, format!("CREATE DATABASE {name}"))
            .await
            .expect("create a test database on TMI_TEST_DATABASE_URL");
        let url = database_url(&admin, &name);
        Self { url, admin, name }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Possibly dropped outside a runtime (or inside one that is shutting down): use a
        // short-lived one on its own thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
            if let Ok(rt) = rt {
                let _ = rt.block_on(execute(&admin, sql));
            }
        })
        .join();
    }
}
