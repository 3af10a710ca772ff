//! The PostgreSQL store. IO: talks to PostgreSQL through a `PgPool`.

use std::sync::OnceLock;
use std::time::Duration;

use crate::store::schema;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, migrate::Migrator};

/// Migrations for PostgreSQL, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// `Store` on PostgreSQL.
#[derive(Clone)]
pub struct Postgres {
    pub pool: PgPool,
}

impl Postgres {
    const BEGIN: &'static str = "BEGIN";
    /// Row lock for read-modify-write in one transaction.
    const FOR_UPDATE: &'static str = "FOR UPDATE";
    /// Global threat-model aliases from a sequence (migration 0002), so creates do not queue on a row lock.
    const TM_ALIAS: &'static str = "SELECT nextval('threat_model_alias')";

    /// Connects without migrating.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, sqlx::Error> {
        let options: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    /// Applies pending migrations. sqlx's migrator holds a PostgreSQL advisory lock while it runs,
    /// so replicas starting together (or a `tmi-server migrate` Job) apply each migration once.
    pub async fn migrate(&self) -> Result<(), crate::store::StoreError> {
        self.migrate_report().await.map(|_| ())
    }

    /// Applies pending migrations after refusing a database whose schema is newer than this binary knows
    /// (`schema::check`); reports what was applied.
    pub async fn migrate_report(&self) -> Result<schema::MigrationReport, crate::store::StoreError> {
        let migrator = migrator()?;
        let before = schema::applied_postgres(&self.pool).await?;
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

sql_store!(Postgres, sqlx::Postgres);
org_store!(Postgres, sqlx::Postgres);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::pgdb::TestDatabase;

    #[tokio::test]
    async fn conformance() {
        let db = TestDatabase::create("tmi_test").await;
        let store = Postgres::connect(&db.url, 5).await.unwrap();
        store.migrate().await.unwrap();
        crate::store::testsuite::run_all(&store).await;
        store.pool.close().await;
    }

    /// Arbitrary JSON documents read back as written from every JSON column.
    #[test]
    fn json_documents_round_trip() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let db = rt.block_on(TestDatabase::create("tmi_test"));
        crate::store::json_roundtrip::run(&rt, async {
            let store = Postgres::connect(&db.url, 2).await.unwrap();
            store.migrate().await.unwrap();
            store
        });
    }

    /// Documents written as `jsonb` before migration 0005, with a number near the largest double
    /// (which jsonb renders as a 309-digit integer literal), read back as that double afterwards.
    #[tokio::test]
    async fn jsonb_rows_with_huge_numbers_are_readable_after_migration() {
        use crate::store::testsuite::{LEGACY_THREAT_MODEL, legacy_doc};
        let db = TestDatabase::create("tmi_test").await;
        let store = Postgres::connect(&db.url, 2).await.unwrap();
        let before = Migrator::with_migrations(MIGRATOR.iter().filter(|m| m.version < 5).cloned().collect());
        before.run(&store.pool).await.unwrap();
        let (mut doc, at) = legacy_doc();
        doc["huge"] = serde_json::json!(f64::MAX);
        doc["tiny"] = serde_json::json!(5e-324);
        let id = uuid::Uuid::new_v4();
        sqlx::query(LEGACY_THREAT_MODEL)
            .bind(id)
            .bind(at)
            .bind(sqlx::types::Json(&doc))
            .execute(&store.pool)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let read = crate::store::Store::get_threat_model(&store, id).await.unwrap();
        assert_eq!(read.doc["huge"], serde_json::json!(f64::MAX));
        assert_eq!(read.doc["tiny"], serde_json::json!(5e-324));
        store.pool.close().await;
    }

    #[tokio::test]
    async fn migrations_backfill_existing_rows() {
        use crate::store::testsuite::{
            LEGACY_MEMBER, LEGACY_THREAT_MODEL, legacy_doc, legacy_member_is_listed, legacy_row_is_searchable,
        };
        let db = TestDatabase::create("tmi_test").await;
        let store = Postgres::connect(&db.url, 2).await.unwrap();
        let before = Migrator::with_migrations(MIGRATOR.iter().filter(|m| m.version < 3).cloned().collect());
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
        store.pool.close().await;
    }

    /// The throw-away database's URL keeps everything of `TMI_TEST_DATABASE_URL` but the database.
    #[test]
    fn test_database_urls_keep_credentials_and_parameters() {
        use crate::store::pgdb::database_url;
        assert_eq!(
            database_url("postgres://u:p@127.0.0.1:5432/postgres", "t1"),
            "postgres://u:p@127.0.0.1:5432/t1"
        );
        assert_eq!(
            database_url("postgresql://u@h/postgres?sslmode=disable", "t1"),
            "postgresql://u@h/t1?sslmode=disable"
        );
        assert_eq!(
            database_url("postgres://u@h:5432", "t1"),
            "postgres://u@h:5432/t1"
        );
        assert_eq!(
            database_url("postgres://u@h?sslmode=disable", "t1"),
            "postgres://u@h/t1?sslmode=disable"
        );
    }
}
