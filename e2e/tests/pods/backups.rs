//! Backups before migration on real pods (`spec.upgrade.backup`): the migrate Job's init container runs
//! `pg_dump` (the test image `tmi-pgdump`, Debian's pg_dump and busybox, from `scripts/images.sh`) onto a
//! PersistentVolumeClaim bound to a hostPath PersistentVolume, before `tmi-server migrate` runs. The dump
//! restores with the host's `pg_restore` into a fresh database and holds what was written before the upgrade;
//! `keep` removes the oldest dumps of the instance only; a backup that cannot write leaves the old version
//! serving, unmigrated, `Stalled/BackupFailed`, and reverting, fixing the volume and upgrading again succeeds.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use reqwest::Method;
use serde_json::json;
use tmi_e2e::TestNamespace;
use tmi_operator::crd::TmiInstance;

use super::{
    Running, VERSION, condition, cp, database, install_operator, is_ready, next, rand_u32, run, secs,
    set_version, two_replicas, upgrade, wait_instance,
};

/// A directory on the node for the volume, and a PersistentVolume (hostPath) pre-bound to the claim `dumps`
/// in `ns`, and that claim. `writable`: whether UID 65532 (the pods' user) may write to it.
async fn backup_volume(ns: &TestNamespace, writable: bool) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tmi-backup-{}-{:08x}", ns.name, rand_u32()));
    std::fs::create_dir_all(&dir).unwrap();
    set_writable(&dir, writable);
    let yaml = format!(
        r#"apiVersion: v1
kind: PersistentVolume
metadata: {{ name: backup-{ns} }}
spec:
  capacity: {{ storage: 1Gi }}
  accessModes: [ReadWriteOnce]
  storageClassName: backup-{ns}
  persistentVolumeReclaimPolicy: Retain
  hostPath: {{ path: "{dir}" }}
  claimRef: {{ namespace: {ns}, name: dumps }}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{ name: dumps, namespace: {ns} }}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: backup-{ns}
  resources: {{ requests: {{ storage: 1Gi }} }}
"#,
        ns = ns.name,
        dir = dir.display()
    );
    let out = cp()
        .kubectl_stdin(&["apply", "--server-side", "-f", "-"], &yaml)
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    dir
}

fn set_writable(dir: &Path, writable: bool) {
    let mode = if writable { 0o777 } else { 0o755 };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
}

async fn set_backup(api: &Api<TmiInstance>, keep: Option<i32>) {
    let image = format!("ghcr.io/tmi-operator/tmi-pgdump:{VERSION}");
    api.patch(
        "tmi",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "upgrade": { "backup": {
            "enabled": true,
            "persistentVolumeClaim": { "claimName": "dumps" },
            "image": image,
            "keep": keep,
        } } } })),
    )
    .await
    .unwrap();
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The migrate Job's pod, from the kubelet's timestamps (seconds): how long its backup container ran, and how
/// long after the backup container started the migrate container started (what the backup adds to the Job).
async fn backup_seconds(client: &kube::Client, ns: &str, job: &str) -> (i64, i64) {
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
        .await
        .unwrap();
    let status = pods.items[0].status.clone().unwrap();
    let t = status.init_container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    let m = status.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    let backup_started = t.started_at.unwrap().0.as_second();
    (
        t.finished_at.unwrap().0.as_second() - backup_started,
        m.started_at.unwrap().0.as_second() - backup_started,
    )
}

/// `psql` on the admin URL with another database name.
fn on_database(admin: &str, db: &str) -> String {
    format!("{}/{db}", admin.rsplit_once('/').unwrap().0)
}

/// An instance with two replicas on PostgreSQL and a backup to a claim: a threat model written, then the
/// upgrade to `<v>-next`. The dump named in `status.upgrade.backup` is on the volume (no temporary file left),
/// the Job's spec carries no database URL, `pg_restore` of the dump into a fresh database holds the threat
/// model, and with `keep: 2` the oldest dump of this instance is gone while another instance's dump and an
/// unrelated file stay. Prints the dump's time and size and the upgrade's apply-to-Ready time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migrate_job_dumps_the_database_first_and_the_dump_restores() {
    install_operator();
    let ns = cp().namespace("pods-backup").await;
    let dir = backup_volume(&ns, true).await;
    // Older dumps of this instance, one of another instance whose name starts the same, an unrelated file.
    for old in [
        "tmi-0.8.0-to-0.9.0-20240101T000000Z.dump",
        "tmi-0.9.0-to-1.0.0-20250101T000000Z.dump",
        "tmi-2-0.9.0-to-1.0.0-20200101T000000Z.dump",
        "notes.txt",
    ] {
        std::fs::write(dir.join(old), b"old").unwrap();
    }
    let db = database("backup");
    let Running { api, service, .. } = two_replicas(&ns, &db).await;
    set_backup(&api, Some(2)).await;
    let alice = service.login("alice").await;
    let tm = service
        .call(
            Method::POST,
            "/threat_models",
            Some(&alice),
            Some(json!({"name": "written before the backup"})),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let applied = Instant::now();
    set_version(&api, &next()).await;
    let done = wait_instance(&api, "tmi", "the upgrade Succeeded and Ready", |o| {
        upgrade(o)["phase"] == "Succeeded" && is_ready(o) && o["status"]["version"] == next().as_str()
    })
    .await;
    let ready_after = applied.elapsed();
    let u = upgrade(&done);
    let dump = u["backup"]
        .as_str()
        .unwrap_or_else(|| panic!("no backup in {u}"))
        .to_owned();
    let prefix = format!("tmi-{VERSION}-to-{}-", next());
    assert!(dump.starts_with(&prefix) && dump.ends_with("Z.dump"), "{dump}");
    let job = u["job"].as_str().unwrap().to_owned();
    let spec = serde_json::to_string(
        &Api::<Job>::namespaced(ns.client.clone(), &ns.name)
            .get(&job)
            .await
            .unwrap()
            .spec,
    )
    .unwrap();
    assert!(
        !spec.contains("postgres://"),
        "no database URL in the Job: {spec}"
    );

    // keep: 2 — the new dump and the newest older one of this instance; the rest untouched.
    assert_eq!(
        files(&dir),
        [
            "notes.txt".to_owned(),
            "tmi-0.9.0-to-1.0.0-20250101T000000Z.dump".to_owned(),
            "tmi-2-0.9.0-to-1.0.0-20200101T000000Z.dump".to_owned(),
            dump.clone(),
        ]
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>(),
        "the oldest dump of this instance removed, nothing else; no temporary file left"
    );
    let size = std::fs::metadata(dir.join(&dump)).unwrap().len();

    // The host's pg_restore of the dump into a fresh database: the threat model written before is there.
    let admin = std::env::var("TMI_TEST_DATABASE_URL").unwrap();
    let restored = format!("restored_{:08x}", rand_u32());
    run(Command::new("psql").args([admin.as_str(), "-qc", &format!("CREATE DATABASE {restored}")]));
    let began = Instant::now();
    run(Command::new("pg_restore")
        .args(["--no-owner", "--exit-on-error", "--dbname"])
        .arg(on_database(&admin, &restored))
        .arg(dir.join(&dump)));
    let restore_time = began.elapsed();
    let out = run(Command::new("psql").args([
        on_database(&admin, &restored).as_str(),
        "-tAc",
        &format!("SELECT name FROM threat_models WHERE id = '{tm}'"),
    ]));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "written before the backup"
    );
    // Taken before the migration: the restored schema is the old release's (no migration 90000).
    let out = run(Command::new("psql").args([
        on_database(&admin, &restored).as_str(),
        "-tAc",
        "SELECT count(*) FROM _sqlx_migrations WHERE version = 90000",
    ]));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");

    let (dump_seconds, migrate_after) = backup_seconds(&ns.client, &ns.name, &job).await;
    // The same dump by the host's pg_dump, timed to the millisecond (the kubelet's timestamps are seconds).
    let host_file = std::env::temp_dir().join(format!("host-{dump}"));
    let began = Instant::now();
    run(Command::new("pg_dump")
        .args(["--format=custom", "--dbname"])
        .arg(on_database(&admin, db.rsplit_once('/').unwrap().1))
        .arg("--file")
        .arg(&host_file));
    let host_dump = began.elapsed();
    let _ = std::fs::remove_file(&host_file);
    eprintln!(
        "backup before migration (2 replicas, real pods): dump {dump} {size} bytes, pg_dump container ran \
         {dump_seconds} s, migrate container started {migrate_after} s after the backup container; host pg_dump \
         of the test database (migrated by then) {host_dump:.1?}; Job created +{} s → Job done +{} s → rolled out +{} s after the request; Ready \
         observed {ready_after:.1?} after the apply; host pg_restore {restore_time:.1?}",
        secs(&u["startedAt"]) - secs(&u["requestedAt"]),
        secs(&u["migratedAt"]) - secs(&u["requestedAt"]),
        secs(&u["finishedAt"]) - secs(&u["requestedAt"]),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A backup that cannot write to its volume: the Job fails before any migration (the schema is unchanged),
/// the instance is `Stalled/BackupFailed` with the backup's reason, a Warning Event says so, and the old
/// version keeps serving from an untouched Deployment. Setting the version back recovers; with the volume
/// fixed, the same upgrade then succeeds and writes its dump.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_backup_migrates_nothing_and_reverting_then_fixing_recovers() {
    install_operator();
    let ns = cp().namespace("pods-badbackup").await;
    let dir = backup_volume(&ns, false).await;
    let db = database("badbackup");
    let Running { api, service, .. } = two_replicas(&ns, &db).await;
    set_backup(&api, None).await;
    let alice = service.login("alice").await;

    set_version(&api, &next()).await;
    let failed = wait_instance(&api, "tmi", "Stalled/BackupFailed", |o| {
        condition(o, "Stalled").is_some_and(|c| c["status"] == "True" && c["reason"] == "BackupFailed")
    })
    .await;
    let message = condition(&failed, "Stalled").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    for part in [
        "cannot write to /backup on PersistentVolumeClaim dumps",
        "nothing was migrated",
        &format!("{VERSION} keeps serving"),
    ] {
        assert!(message.contains(part), "{part:?} in {message}");
    }
    assert!(!message.contains("postgres://"), "{message}");
    assert_eq!(upgrade(&failed)["phase"], "Failed");
    assert_eq!(failed["status"]["version"], VERSION);
    let d = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(ns.client.clone(), &ns.name)
        .get("tmi-server")
        .await
        .unwrap();
    assert_eq!(
        d.spec.unwrap().template.spec.unwrap().containers[0].image,
        Some(format!("ghcr.io/tmi-operator/tmi-server:{VERSION}"))
    );
    // Nothing migrated: the next release's migration is not in the database.
    let admin = std::env::var("TMI_TEST_DATABASE_URL").unwrap();
    let name = db.rsplit_once('/').unwrap().1;
    let out = run(Command::new("psql").args([
        on_database(&admin, name).as_str(),
        "-tAc",
        "SELECT count(*) FROM _sqlx_migrations WHERE version = 90000",
    ]));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
    service
        .call(Method::GET, "/threat_models", Some(&alice), None)
        .await
        .expect(200);
    let events = Api::<Event>::namespaced(ns.client.clone(), &ns.name)
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("BackupFailed") && e.type_.as_deref() == Some("Warning")),
        "an Event says so: {:?}",
        events.iter().map(|e| &e.reason).collect::<Vec<_>>()
    );
    assert!(files(&dir).is_empty(), "nothing written: {:?}", files(&dir));

    // Back to the running version: Ready again at once.
    set_version(&api, VERSION).await;
    let back = wait_instance(&api, "tmi", "Ready after setting the version back", is_ready).await;
    assert_eq!(upgrade(&back)["phase"], "Cancelled");
    // The failed Job is removed, so that the same upgrade runs a new one.
    let jobs: Api<Job> = Api::namespaced(ns.client.clone(), &ns.name);
    let started = Instant::now();
    while !jobs.list(&Default::default()).await.unwrap().items.is_empty() {
        assert!(
            started.elapsed() < super::TIMEOUT,
            "the failed Job was not removed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }

    // The volume fixed, the same upgrade again: it backs up, migrates and rolls out.
    set_writable(&dir, true);
    set_version(&api, &next()).await;
    let done = wait_instance(&api, "tmi", "the upgrade Succeeded after the fix", |o| {
        upgrade(o)["phase"] == "Succeeded" && is_ready(o) && o["status"]["version"] == next().as_str()
    })
    .await;
    let dump = upgrade(&done)["backup"].as_str().unwrap().to_owned();
    assert_eq!(files(&dir), [dump]);
    let _ = std::fs::remove_dir_all(&dir);
}
