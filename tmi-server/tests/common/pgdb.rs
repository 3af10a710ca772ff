//! A fresh PostgreSQL database on `TMI_TEST_DATABASE_URL` for one test or benchmark, dropped
//! (with its connections) when the guard is dropped. Shared by the API tests, the collaboration
//! tests and the benchmarks through `#[path]`. IO: PostgreSQL.

/// A database that exists while this value lives.
pub struct TestDatabase {
    /// Its connection URL.
    pub url: String,
    admin: String,
    name: String,
}

impl TestDatabase {
    /// Creates `<prefix>_<uuid>`; panics (never skips) when `TMI_TEST_DATABASE_URL` is unset.
    pub async fn create(prefix: &str) -> Self {
        let admin = std::env::var("TMI_TEST_DATABASE_URL").expect(
            "TMI_TEST_DATABASE_URL is not set: run the tests with `make test`, which starts PostgreSQL and Redis",
        );
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let pg = tmi_server::store::Postgres::connect(&admin, 1)
            .await
            .expect("connect TMI_TEST_DATABASE_URL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&pg.pool)
            .await
            .expect("create test database");
        pg.pool.close().await;
        let scheme_end = admin.find("://").map(|i| i + 3).unwrap_or(0);
        let url = match admin[scheme_end..].find('/') {
            Some(i) => format!("{}/{name}", &admin[..scheme_end + i]),
            None => format!("{admin}/{name}"),
        };
        Self { url, admin, name }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Possibly dropped outside a runtime (or inside one that is shutting down): use a
        // short-lived one on its own thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    if let Ok(pg) = tmi_server::store::Postgres::connect(&admin, 1).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&pg.pool)
                        .await;
                    }
                });
            }
        })
        .join();
    }
}
