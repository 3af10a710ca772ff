//! The SQLite store. IO: talks to one SQLite file through a `SqlitePool`.

use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use crate::store::schema;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// Migrations for SQLite, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// `Store` on SQLite.
#[derive(Clone)]
pub struct Sqlite {
    pub pool: SqlitePool,
}

impl Sqlite {
    /// Write transactions take the write lock up front: a deferred transaction that reads and then
    /// writes can fail with SQLITE_BUSY without waiting for the busy timeout.
    const BEGIN: &'static str = "BEGIN IMMEDIATE";
    /// `BEGIN IMMEDIATE` already holds the database's write lock.
    const FOR_UPDATE: &'static str = "";
    /// SQLite serializes writers anyway, so the counter row costs nothing extra.
    const TM_ALIAS: &'static str = "INSERT INTO alias_counters (scope, value) VALUES ('threat_model', 1) \
        ON CONFLICT (scope) DO UPDATE SET value = alias_counters.value + 1 RETURNING value";

    /// Opens (creating if missing) the database named by a `sqlite://` URL.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    /// Applies pending migrations (SQLite's write lock serializes concurrent runners).
    pub async fn migrate(&self) -> Result<(), crate::store::StoreError> {
        self.migrate_report().await.map(|_| ())
    }

    /// Applies pending migrations after refusing a database whose schema is newer than this binary knows
    /// (`schema::check`); reports what was applied.
    pub async fn migrate_report(&self) -> Result<schema::MigrationReport, crate::store::StoreError> {
        let migrator = migrator()?;
        let before = schema::applied_sqlite(&self.pool).await?;
        schema::check(&before, migrator)?;
        migrator
            .run(&self.pool)
            .await
            .map_err(crate::store::StoreError::Migrate)?;
        Ok(schema::report(&before, migrator))
    }
}

/// The migrations this binary runs: [`MIGRATOR`], plus the test-only one when `TMI_TEST_EXTRA_MIGRATION` is
/// set (`schema::with_test_migration`).
pub fn migrator() -> Result<&'static Migrator, crate::store::StoreError> {
    static RESOLVED: OnceLock<Result<Migrator, String>> = OnceLock::new();
    RESOLVED
        .get_or_init(|| schema::with_test_migration(&MIGRATOR, schema::test_migration_variant().as_deref()))
        .as_ref()
        .map_err(|e| crate::store::StoreError::TestMigration(e.clone()))
}

sql_store!(Sqlite, sqlx::Sqlite);
org_store!(Sqlite, sqlx::Sqlite);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/tmi.db", dir.path().display());
        let store = Sqlite::connect(&url, 4).await.unwrap();
        store.migrate().await.unwrap();
        crate::store::testsuite::run_all(&store).await;
    }

    /// Arbitrary JSON documents read back as written from every JSON column.
    #[test]
    fn json_documents_round_trip() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/tmi.db", dir.path().display());
        crate::store::json_roundtrip::run(&rt, async {
            let store = Sqlite::connect(&url, 2).await.unwrap();
            store.migrate().await.unwrap();
            store
        });
    }

    #[tokio::test]
    async fn migrations_backfill_existing_rows() {
        use crate::store::testsuite::{
            LEGACY_MEMBER, LEGACY_THREAT_MODEL, legacy_doc, legacy_member_is_listed, legacy_row_is_searchable,
        };
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/tmi.db", dir.path().display());
        let store = Sqlite::connect(&url, 2).await.unwrap();
        let before = Migrator::with_migrations(MIGRATOR.iter().filter(|m| m.version < 2).cloned().collect());
        before.run(&store.pool).await.unwrap();
        let (doc, at) = legacy_doc();
        sqlx::query(LEGACY_THREAT_MODEL)
            .bind(uuid::Uuid::new_v4())
            .bind(at)
            .bind(sqlx::types::Json(doc))
            .execute(&store.pool)
            .await
            .unwrap();
        let user = uuid::Uuid::new_v4();
        sqlx::query(LEGACY_MEMBER[0])
            .bind(user)
            .bind(at)
            .execute(&store.pool)
            .await
            .unwrap();
        sqlx::query(LEGACY_MEMBER[1])
            .bind(crate::store::groups::SECURITY_REVIEWERS)
            .bind(user)
            .execute(&store.pool)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        legacy_row_is_searchable(&store, at).await;
        legacy_member_is_listed(&store).await;
    }
}
