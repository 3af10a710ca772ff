//! Schema versions: the migrations this binary knows, the ones a database has applied, and the rule that a
//! server never runs against (nor migrates) a database whose schema is newer than it knows. Pure, except
//! [`applied_postgres`] and [`applied_sqlite`] (IO: they read sqlx's `_sqlx_migrations` table).
//!
//! The schema version is the highest migration version (sqlx's `_sqlx_migrations.version`). A database that
//! holds a migration this binary does not know was migrated by a newer release: running an older server on
//! it would read and write a schema it was not written for, so both `tmi-server` and `tmi-server migrate`
//! refuse it with [`SchemaTooNew`], naming both versions. This is what makes a downgrade below the
//! database's schema fail before anything is changed (the operator reads the refusal from its migrate Job).
//!
//! `tmi-server migrate` reports its outcome as one JSON line ([`MigrationResult`]): on stdout, and in the
//! file `--result-file` names (the Kubernetes termination-message file, where the operator reads it).

use std::borrow::Cow;

use serde::Serialize;
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// Environment variable selecting a test-only extra migration: `upgrade` (adds a table) or `fail` (a
/// statement that fails). Set only in the test images `scripts/images.sh` builds, so that one binary gives
/// "a newer release with an added migration" and "a release whose migration fails"; unset everywhere else.
pub const TEST_MIGRATION_ENV: &str = "TMI_TEST_EXTRA_MIGRATION";
/// Version of the test-only extra migration: above every real migration, so it is always the newest.
pub const TEST_MIGRATION_VERSION: i64 = 90_000;

/// The database's schema is newer than this binary knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the database schema is at version {database}, newer than this tmi-server knows (up to {known}): it was \
     migrated by a newer release. Run that release or a newer one; downgrading below the database's schema \
     is not supported (restore a backup taken before the upgrade instead)"
)]
pub struct SchemaTooNew {
    /// Highest migration the database has applied.
    pub database: i64,
    /// Highest migration this binary knows.
    pub known: i64,
}

/// What a migration run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Schema version before the run (`None`: an empty database).
    pub previous: Option<i64>,
    /// Schema version after the run.
    pub current: i64,
    /// Migrations this run applied, in order.
    pub applied: Vec<i64>,
}

/// The machine-readable outcome of `tmi-server migrate`, one JSON object on one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all_fields = "camelCase")]
pub enum MigrationResult {
    /// The schema is current (exit code 0).
    Migrated {
        /// Schema version now.
        schema_version: i64,
        /// Schema version before (absent for an empty database).
        #[serde(skip_serializing_if = "Option::is_none")]
        previous_schema_version: Option<i64>,
        /// Migrations applied by this run.
        applied: Vec<i64>,
        /// Highest migration this binary knows.
        known_schema_version: i64,
    },
    /// The database is newer than this binary; nothing was changed (exit code [`EXIT_SCHEMA_TOO_NEW`]).
    SchemaTooNew {
        /// The database's schema version.
        schema_version: i64,
        /// Highest migration this binary knows.
        known_schema_version: i64,
        /// Human-readable explanation.
        error: String,
    },
    /// Anything else went wrong (exit code 1); a failed migration's transaction was rolled back.
    Failed {
        /// The error chain (no credentials: connection errors never include the URL).
        error: String,
    },
}

/// Exit code of `tmi-server migrate` (and of the server) when the database's schema is newer than it knows.
/// Distinct, so that a Job's pod-failure policy can stop retrying at once: retrying cannot help.
pub const EXIT_SCHEMA_TOO_NEW: u8 = 3;

/// The highest version among `migrator`'s migrations.
pub fn known_version(migrator: &Migrator) -> i64 {
    migrator.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Refuses a database holding any migration `migrator` does not know.
pub fn check(applied: &[i64], migrator: &Migrator) -> Result<(), SchemaTooNew> {
    let unknown = applied.iter().any(|v| !migrator.iter().any(|m| m.version == *v));
    match applied.iter().max() {
        Some(&database) if unknown => Err(SchemaTooNew {
            database,
            known: known_version(migrator),
        }),
        _ => Ok(()),
    }
}

/// The report of a run that started from `before` (the applied versions) and succeeded.
pub fn report(before: &[i64], migrator: &Migrator) -> MigrationReport {
    let applied: Vec<i64> = migrator
        .iter()
        .map(|m| m.version)
        .filter(|v| !before.contains(v))
        .collect();
    MigrationReport {
        previous: before.iter().max().copied(),
        current: known_version(migrator),
        applied,
    }
}

/// `embedded` plus the test-only migration `variant` names (see [`TEST_MIGRATION_ENV`]), when set.
pub fn with_test_migration(embedded: &Migrator, variant: Option<&str>) -> Result<Migrator, String> {
    let sql: &'static str = match variant {
        None | Some("") => {
            return Ok(Migrator::with_migrations(embedded.iter().cloned().collect()));
        }
        Some("upgrade") => "CREATE TABLE upgrade_test_marker (id INTEGER PRIMARY KEY)",
        // Fails on both databases, inside the migration's transaction.
        Some("fail") => "INSERT INTO upgrade_test_missing_table (id) VALUES (1)",
        Some(other) => {
            return Err(format!(
                "{TEST_MIGRATION_ENV}={other:?}: expected upgrade or fail"
            ));
        }
    };
    let mut migrations: Vec<Migration> = embedded.iter().cloned().collect();
    migrations.push(Migration::new(
        TEST_MIGRATION_VERSION,
        Cow::Borrowed("upgrade test"),
        MigrationType::Simple,
        sql.into_sql_str(),
        false,
    ));
    Ok(Migrator::with_migrations(migrations))
}

/// The test-only migration variant from the process environment.
pub fn test_migration_variant() -> Option<String> {
    std::env::var(TEST_MIGRATION_ENV).ok().filter(|v| !v.is_empty())
}

/// Versions PostgreSQL has applied successfully (none when the table does not exist yet).
pub async fn applied_postgres(pool: &sqlx::PgPool) -> Result<Vec<i64>, sqlx::Error> {
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations')",
    )
    .fetch_one(pool)
    .await?;
    if !exists {
        return Ok(Vec::new());
    }
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(pool)
        .await
}

/// Versions SQLite has applied successfully (none when the table does not exist yet).
pub async fn applied_sqlite(pool: &sqlx::SqlitePool) -> Result<Vec<i64>, sqlx::Error> {
    let exists: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_one(pool)
    .await?;
    if exists == 0 {
        return Ok(Vec::new());
    }
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(pool)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn migrator(versions: &[i64]) -> Migrator {
        Migrator::with_migrations(
            versions
                .iter()
                .map(|v| {
                    Migration::new(
                        *v,
                        Cow::Borrowed("m"),
                        MigrationType::Simple,
                        "SELECT 1".into_sql_str(),
                        false,
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn a_database_with_an_unknown_migration_is_too_new() {
        let m = migrator(&[1, 2, 10]);
        assert_eq!(check(&[], &m), Ok(()));
        assert_eq!(check(&[1, 2], &m), Ok(()));
        assert_eq!(check(&[1, 2, 10], &m), Ok(()));
        let e = check(&[1, 2, 10, 11], &m).unwrap_err();
        assert_eq!(
            e,
            SchemaTooNew {
                database: 11,
                known: 10
            }
        );
        let text = e.to_string();
        assert!(text.contains("version 11") && text.contains("up to 10"), "{text}");
    }

    #[test]
    fn the_report_names_what_was_applied() {
        let m = migrator(&[1, 2, 10]);
        assert_eq!(
            report(&[1], &m),
            MigrationReport {
                previous: Some(1),
                current: 10,
                applied: vec![2, 10]
            }
        );
        assert_eq!(report(&[], &m).previous, None);
    }

    #[test]
    fn the_test_migration_is_the_newest() {
        let m = migrator(&[1, 2]);
        assert_eq!(known_version(&with_test_migration(&m, None).unwrap()), 2);
        let up = with_test_migration(&m, Some("upgrade")).unwrap();
        assert_eq!(known_version(&up), TEST_MIGRATION_VERSION);
        assert!(with_test_migration(&m, Some("other")).is_err());
    }

    #[test]
    fn results_are_one_json_line() {
        let r = MigrationResult::Migrated {
            schema_version: 10,
            previous_schema_version: Some(5),
            applied: vec![10],
            known_schema_version: 10,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"result":"Migrated","schemaVersion":10,"previousSchemaVersion":5,"applied":[10],"knownSchemaVersion":10}"#
        );
        let r = MigrationResult::SchemaTooNew {
            schema_version: 11,
            known_schema_version: 10,
            error: "e".into(),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"result":"SchemaTooNew","schemaVersion":11,"knownSchemaVersion":10,"error":"e"}"#
        );
    }
}
