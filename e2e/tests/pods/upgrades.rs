//! Upgrades on real pods, with the test images `scripts/images.sh` builds from the same binary:
//! `tmi-server:<v>` (the running release), `<v>-next` (one more migration) and `<v>-broken` (a migration
//! that fails). A version change runs `tmi-server migrate` with the new image as a Job, and only then rolls the
//! Deployment: under continuous traffic no request fails and no acknowledged write is lost; a failing
//! migration leaves the old version serving and reverting recovers; a downgrade below the schema is refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use reqwest::Method;
use serde_json::{Value, json};

use super::{
    Running, TIMEOUT, VERSION, common::tmi::Tmi, condition, cp, database, install_operator, is_ready, next,
    secs, server_pods, set_version, terminating_pods, two_replicas, upgrade, wait_instance,
};

fn broken() -> String {
    format!("{VERSION}-broken")
}

fn image(version: &str) -> String {
    format!("ghcr.io/tmi-operator/tmi-server:{version}")
}

fn reason_is(obj: &Value, type_: &str, status: &str, reason: &str) -> bool {
    condition(obj, type_).is_some_and(|c| c["status"] == status && c["reason"] == reason)
}

/// The image of the instance's Deployment.
async fn deployment_image(client: &kube::Client, ns: &str) -> String {
    let d = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), ns)
        .get("tmi-server")
        .await
        .unwrap();
    d.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone()
        .unwrap()
}

/// Two replicas behind their Service, version bumped to the release with one more migration while four
/// workers read and write through the Service: the migrate Job runs (and completes) before the Deployment
/// changes, the rollout replaces both pods, no request fails, every acknowledged write is still there, and the
/// status records the database's new schema version. Prints the instance's upgrade timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_migrates_first_then_rolls_under_traffic_losing_nothing() {
    install_operator();
    let ns = cp().namespace("pods-upgrade").await;
    let Running {
        api,
        pods: before,
        service,
    } = two_replicas(&ns, &database("upgrade")).await;
    let alice = service.login("alice").await;
    let tm = service
        .call(
            Method::POST,
            "/threat_models",
            Some(&alice),
            Some(json!({"name": "upgrade"})),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let written = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut traffic = Vec::new();
    for w in 0..4 {
        let (svc, token, tm) = (service.clone(), alice.clone(), tm.clone());
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let (failures, written) = (failures.clone(), written.clone());
        traffic.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let write = i.is_multiple_of(3);
                let res = if write {
                    svc.try_call(
                        Method::POST,
                        &format!("/threat_models/{tm}/threats"),
                        Some(&token),
                        Some(json!({"name": format!("w{w}-{i}"), "threat_type": ["Spoofing"]})),
                    )
                    .await
                } else {
                    svc.try_call(Method::GET, &format!("/threat_models/{tm}"), Some(&token), None)
                        .await
                };
                match res {
                    Ok(r) if r.status < 300 => {
                        if write {
                            written
                                .lock()
                                .unwrap()
                                .push(r.body["id"].as_str().unwrap_or_default().to_owned());
                        }
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        failures.lock().unwrap().push(format!("{} {}", r.status, r.body));
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failures.lock().unwrap().push(format!("{e:?}"));
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;

    let applied = Instant::now();
    let generation = set_version(&api, &next()).await;
    // While the Job runs, the Deployment keeps the old image and the instance says it is migrating.
    let migrating = wait_instance(&api, "tmi", "Reconciling/Migrating", |o| {
        reason_is(o, "Reconciling", "True", "Migrating")
    })
    .await;
    assert_eq!(migrating["metadata"]["generation"], generation);
    let job_name = upgrade(&migrating)["job"].as_str().unwrap().to_owned();
    let seen_migrating = applied.elapsed();
    let done = wait_instance(&api, "tmi", "the upgrade Succeeded and Ready", |o| {
        upgrade(o)["phase"] == "Succeeded" && is_ready(o) && o["status"]["version"] == next().as_str()
    })
    .await;
    let ready_after = applied.elapsed();
    // Both old pods replaced, none left terminating.
    let started = Instant::now();
    loop {
        let after = server_pods(&ns.client, &ns.name, "tmi").await;
        if after.len() == 2
            && after.iter().all(|p| !before.contains(p))
            && terminating_pods(&ns.client, &ns.name, "tmi").await == 0
        {
            break;
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "the old pods were not replaced: {after:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for t in traffic {
        t.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let written = written.lock().unwrap().clone();
    eprintln!(
        "upgrade under traffic: {ok} requests succeeded, {failed} failed, {} writes acknowledged",
        written.len()
    );
    assert!(ok > 50, "too little traffic to prove anything: {ok}");
    assert_eq!(
        failed,
        0,
        "requests failed during the upgrade: {:?}",
        failures.lock().unwrap()
    );
    // Every acknowledged write survived the migration and the rollout.
    for id in &written {
        service
            .call(
                Method::GET,
                &format!("/threat_models/{tm}/threats/{id}"),
                Some(&alice),
                None,
            )
            .await
            .expect(200);
    }

    // The Job completed before the Deployment's new ReplicaSet was created.
    let job = Api::<Job>::namespaced(ns.client.clone(), &ns.name)
        .get(&job_name)
        .await
        .unwrap();
    let completed = job
        .status
        .as_ref()
        .and_then(|s| s.completion_time.clone())
        .unwrap()
        .0
        .as_second();
    let new_rs = Api::<ReplicaSet>::namespaced(ns.client.clone(), &ns.name)
        .list(
            &ListParams::default()
                .labels("app.kubernetes.io/instance=tmi,app.kubernetes.io/component=server"),
        )
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .and_then(|t| t.spec.as_ref())
                .is_some_and(|p| p.containers[0].image.as_deref() == Some(image(&next()).as_str()))
        })
        .unwrap();
    let rs_created = new_rs.metadata.creation_timestamp.as_ref().unwrap().0.as_second();
    assert!(
        completed <= rs_created,
        "the rollout began (ReplicaSet {} at {rs_created}) before the migration completed ({completed})",
        new_rs.name_any()
    );
    let u = upgrade(&done);
    assert_eq!(u["schemaVersion"], 90000, "read from the Job's result: {u}");
    assert_eq!(u["schemaMigratedBy"], next().as_str());
    assert_eq!(u["fromVersion"], VERSION);
    let (req, start, mig, fin) = (
        secs(&u["requestedAt"]),
        secs(&u["startedAt"]),
        secs(&u["migratedAt"]),
        secs(&u["finishedAt"]),
    );
    eprintln!(
        "upgrade timeline ({VERSION} → {}, 2 replicas, real pods): apply → Migrating seen {seen_migrating:.1?}; \
         requested +0 s → Job created +{} s → Job done +{} s → rollout done +{} s; Ready observed {ready_after:.1?} \
         after the apply",
        next(),
        start - req,
        mig - req,
        fin - req,
    );
}

/// One instance through the failure paths: a release whose migration fails is `Stalled/MigrationFailed` with
/// the migration's error (and an Event) while the old version keeps serving from an untouched Deployment;
/// setting the version back recovers. After a real upgrade, a downgrade below the new schema is refused,
/// naming both versions, and the upgraded version keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_migration_keeps_the_old_version_and_a_downgrade_is_refused() {
    install_operator();
    let ns = cp().namespace("pods-badmig").await;
    let Running { api, service, .. } = two_replicas(&ns, &database("badmig")).await;
    let alice = service.login("alice").await;
    let serves = |svc: Tmi, token: String| async move {
        svc.call(Method::GET, "/threat_models", Some(&token), None)
            .await
            .expect(200);
    };

    // The broken release: its Job fails, the Deployment keeps the old image, the old pods keep serving.
    set_version(&api, &broken()).await;
    let failed = wait_instance(&api, "tmi", "Stalled/MigrationFailed", |o| {
        reason_is(o, "Stalled", "True", "MigrationFailed")
    })
    .await;
    let message = condition(&failed, "Stalled").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("upgrade_test_missing_table"),
        "the migration's error: {message}"
    );
    assert!(message.contains(&format!("{VERSION} keeps serving")), "{message}");
    assert!(
        !message.contains("postgres://"),
        "no database URL in the status: {message}"
    );
    assert_eq!(upgrade(&failed)["phase"], "Failed");
    assert_eq!(failed["status"]["version"], VERSION);
    assert_eq!(deployment_image(&ns.client, &ns.name).await, image(VERSION));
    serves(service.clone(), alice.clone()).await;
    let events = Api::<Event>::namespaced(ns.client.clone(), &ns.name)
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("MigrationFailed") && e.type_.as_deref() == Some("Warning")),
        "an Event says so: {:?}",
        events.iter().map(|e| &e.reason).collect::<Vec<_>>()
    );

    // Setting the version back recovers; the failed Job is removed.
    set_version(&api, VERSION).await;
    let back = wait_instance(&api, "tmi", "Ready after setting the version back", is_ready).await;
    assert_eq!(upgrade(&back)["phase"], "Cancelled");
    let jobs: Api<Job> = Api::namespaced(ns.client.clone(), &ns.name);
    let started = Instant::now();
    while jobs
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .any(|j| j.status.as_ref().and_then(|s| s.failed).unwrap_or(0) > 0)
    {
        assert!(started.elapsed() < TIMEOUT, "the failed Job was not removed");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }

    // A real upgrade, then a downgrade below its schema: refused, nothing changes, the new version serves.
    set_version(&api, &next()).await;
    wait_instance(&api, "tmi", "the upgrade Succeeded", |o| {
        upgrade(o)["phase"] == "Succeeded" && is_ready(o)
    })
    .await;
    set_version(&api, VERSION).await;
    let refused = wait_instance(&api, "tmi", "Stalled/DowngradeRefused", |o| {
        reason_is(o, "Stalled", "True", "DowngradeRefused")
    })
    .await;
    let message = condition(&refused, "Stalled").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    for part in [
        format!("spec.version {VERSION}"),
        "schema version 90000".to_owned(),
        format!("migrated by {}", next()),
        format!("{} keeps serving", next()),
    ] {
        assert!(message.contains(&part), "{part:?} in {message}");
    }
    assert_eq!(upgrade(&refused)["phase"], "Refused");
    assert_eq!(deployment_image(&ns.client, &ns.name).await, image(&next()));
    serves(service.clone(), alice.clone()).await;
    // And back to the upgraded version: Ready.
    set_version(&api, &next()).await;
    wait_instance(&api, "tmi", "Ready on the upgraded version", is_ready).await;
}
