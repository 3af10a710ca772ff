//! `tmi-server migrate` as the operator's migrate Job runs it, on SQLite and PostgreSQL: the one-line JSON
//! result on stdout and in `--result-file`, a failing migration that leaves the schema as it was, and a
//! database migrated by a newer release refused (exit code 3) by both `migrate` and the server itself.
//! The newer release and the failing one are this binary with `TMI_TEST_EXTRA_MIGRATION` set, exactly as
//! the test images of `scripts/images.sh` are.

#![allow(clippy::unwrap_used)]

#[path = "common/pgdb.rs"]
mod pgdb;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tmi_server::store::schema::{TEST_MIGRATION_ENV, TEST_MIGRATION_VERSION, known_version};

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    result_file: String,
}

fn command(url: &str, data: &std::path::Path, variant: Option<&str>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tmi-server"));
    cmd.env_clear()
        .env("TMI_DATABASE_URL", url)
        .env("TMI_DATA_DIR", data)
        .env("TMI_LOG_LEVEL", "error")
        .env("TMI_SERVER_PORT", "0");
    if let Some(v) = variant {
        cmd.env(TEST_MIGRATION_ENV, v);
    }
    cmd
}

fn migrate(url: &str, variant: Option<&str>) -> (Run, Value) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("termination-log");
    let out = command(url, dir.path(), variant)
        .args(["migrate", "--result-file"])
        .arg(&file)
        .output()
        .unwrap();
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        result_file: std::fs::read_to_string(&file).unwrap_or_default(),
    };
    let line = run.stdout.lines().last().unwrap_or_default().to_owned();
    let json: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
        panic!(
            "stdout's last line is not JSON ({e}): {}\n{}",
            run.stdout, run.stderr
        )
    });
    assert_eq!(
        run.result_file.trim(),
        line,
        "the result file holds the same line"
    );
    (run, json)
}

async fn scenario(url: &str, k: i64) {
    assert!(k > 0 && k < TEST_MIGRATION_VERSION);

    // A fresh database: every migration applied.
    let (run, r) = migrate(url, None);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(r["result"], "Migrated");
    assert_eq!(r["schemaVersion"], k);
    assert_eq!(r["knownSchemaVersion"], k);
    assert!(r.get("previousSchemaVersion").is_none(), "{r}");

    // A release whose migration fails: reported, and the schema is left as it was.
    let (run, r) = migrate(url, Some("fail"));
    assert_eq!(run.code, Some(1));
    assert_eq!(r["result"], "Failed");
    let error = r["error"].as_str().unwrap();
    assert!(error.contains("upgrade_test_missing_table"), "{error}");
    assert!(!error.contains("postgres://"), "no URL in the result: {error}");
    let (run, r) = migrate(url, None);
    assert_eq!(run.code, Some(0));
    assert_eq!(r["schemaVersion"], k, "the failed migration changed nothing");
    assert_eq!(r["applied"], serde_json::json!([]));

    // The newer release migrates.
    let (run, r) = migrate(url, Some("upgrade"));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(r["schemaVersion"], TEST_MIGRATION_VERSION);
    assert_eq!(r["previousSchemaVersion"], k);
    assert_eq!(r["applied"], serde_json::json!([TEST_MIGRATION_VERSION]));

    // The older release refuses the newer schema, naming both versions, and changes nothing.
    let (run, r) = migrate(url, None);
    assert_eq!(run.code, Some(3));
    assert_eq!(r["result"], "SchemaTooNew");
    assert_eq!(r["schemaVersion"], TEST_MIGRATION_VERSION);
    assert_eq!(r["knownSchemaVersion"], k);
    let message = r["error"].as_str().unwrap();
    assert!(
        message.contains(&format!("version {TEST_MIGRATION_VERSION}"))
            && message.contains(&format!("up to {k}")),
        "{message}"
    );
    let (run, r) = migrate(url, Some("upgrade"));
    assert_eq!(run.code, Some(0));
    assert_eq!(r["applied"], serde_json::json!([]), "the refusal changed nothing");

    // The older server refuses to start on it, with the same clear message.
    let dir = tempfile::tempdir().unwrap();
    let mut child = command(url, dir.path(), None)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("the older server started on a newer schema");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "version {TEST_MIGRATION_VERSION}, newer than this tmi-server knows (up to {k})"
        )),
        "{stderr}"
    );
}

#[tokio::test]
async fn sqlite_migrate_reports_and_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let k = known_version(tmi_server::store::sqlite::migrator().unwrap());
    scenario(&format!("sqlite://{}/tmi.db", dir.path().display()), k).await;
}

#[tokio::test]
async fn postgres_migrate_reports_and_refuses_a_newer_schema() {
    let db = pgdb::TestDatabase::create("tmi_migrate").await;
    let k = known_version(tmi_server::store::postgres::migrator().unwrap());
    scenario(&db.url, k).await;
}
