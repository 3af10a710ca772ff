//! Fleet waves against a real API server (the local control plane; kwok runs the pods, and completes a Job's
//! pods at once): twenty instances upgraded with at most three at once, proven from the migrate Jobs'
//! timestamps and from the order of the API server's writes, and a failing canary that stops the wave until
//! its version is set back. Each test runs its own operator in-process, watching only its namespace.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is a test failure

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::json;
use tmi_operator::controller::fleet::{FailurePolicy, Limits};
use tmi_operator::crd::{TmiInstance, UpgradePhase};

const OLD: &str = "1.0.0";
const NEW: &str = "1.1.0";

fn instance(name: &str, labels: &str) -> String {
    format!(
        r#"
apiVersion: tmi.dev/v1alpha1
kind: TmiInstance
metadata: {{ name: {name}, labels: {{ {labels} }} }}
spec:
  version: {OLD}
  database: {{ external: {{ urlSecretRef: {{ name: db, key: url }} }} }}
"#
    )
}

fn image(version: &str) -> String {
    format!("ghcr.io/tmi-operator/tmi-server:{version}")
}

fn phase(i: &TmiInstance) -> Option<UpgradePhase> {
    i.status.as_ref()?.upgrade.as_ref().map(|u| u.phase)
}

/// Polls every instance in `ns` until `pred` holds for all of them.
async fn wait_all(
    client: &kube::Client,
    ns: &str,
    what: &str,
    limit: Duration,
    pred: impl Fn(&TmiInstance) -> bool,
) {
    let api: Api<TmiInstance> = Api::namespaced(client.clone(), ns);
    let started = Instant::now();
    loop {
        let list = api.list(&Default::default()).await.unwrap().items;
        if !list.is_empty() && list.iter().all(&pred) {
            return;
        }
        if started.elapsed() > limit {
            let pending: Vec<String> = list
                .iter()
                .filter(|i| !pred(i))
                .map(|i| {
                    format!(
                        "{}: {:?} {:?}",
                        i.name_any(),
                        phase(i),
                        condition(i, "Ready").map(|c| (&c.reason, &c.message))
                    )
                })
                .collect();
            panic!("timed out waiting for {what}: {pending:#?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn set_version(client: &kube::Client, ns: &str, name: &str, spec: serde_json::Value) {
    Api::<TmiInstance>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": spec })),
        )
        .await
        .unwrap();
}

fn rv(o: &impl ResourceExt) -> u64 {
    // etcd revisions: one counter for every write, so they order writes across kinds.
    o.resource_version().unwrap().parse().unwrap()
}

fn complete(j: &Job) -> bool {
    j.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Complete" && c.status == "True"))
}

/// What the watches saw: per Job, the revision of its first appearance and of its completion; per
/// Deployment, the revision at which its template first carried the new image.
#[derive(Default)]
struct Seen {
    job_created: BTreeMap<String, u64>,
    job_completed: BTreeMap<String, u64>,
    deployment_upgraded: BTreeMap<String, u64>,
}

fn record(ns: &str, client: &kube::Client) -> (Arc<Mutex<Seen>>, Vec<tokio::task::JoinHandle<()>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let jobs = {
        let (seen, api) = (seen.clone(), Api::<Job>::namespaced(client.clone(), ns));
        tokio::spawn(async move {
            let mut s = std::pin::pin!(watcher(api, Default::default()));
            while let Some(ev) = s.next().await {
                if let Ok(watcher::Event::Apply(j) | watcher::Event::InitApply(j)) = ev {
                    let mut seen = seen.lock().unwrap();
                    seen.job_created.entry(j.name_any()).or_insert(rv(&j));
                    if complete(&j) {
                        seen.job_completed.entry(j.name_any()).or_insert(rv(&j));
                    }
                }
            }
        })
    };
    let deployments = {
        let (seen, api) = (seen.clone(), Api::<Deployment>::namespaced(client.clone(), ns));
        tokio::spawn(async move {
            let mut s = std::pin::pin!(watcher(api, Default::default()));
            while let Some(ev) = s.next().await {
                if let Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d)) = ev {
                    let upgraded = d.spec.as_ref().is_some_and(|s| {
                        s.template
                            .spec
                            .as_ref()
                            .is_some_and(|p| p.containers[0].image.as_deref() == Some(image(NEW).as_str()))
                    });
                    if upgraded {
                        seen.lock()
                            .unwrap()
                            .deployment_upgraded
                            .entry(d.name_any())
                            .or_insert(rv(&d));
                    }
                }
            }
        })
    };
    (seen, vec![jobs, deployments])
}

/// The most intervals `[start, end)` that overlap at any point.
fn max_overlap(intervals: &[(i64, i64)]) -> usize {
    let mut points: Vec<(i64, i32)> = intervals.iter().flat_map(|(s, e)| [(*s, 1), (*e, -1)]).collect();
    // Ends before starts at the same instant: [a, b) and [b, c) do not overlap.
    points.sort();
    let (mut now, mut max) = (0i32, 0i32);
    for (_, d) in points {
        now += d;
        max = max.max(now);
    }
    max as usize
}

/// Twenty instances, one version bump each (as one GitOps commit would make), at most three upgrading at
/// once: every migrate Job ran, no more than three ran at a time (from the Jobs' own timestamps, and from
/// the order of the API server's writes), and each Deployment got its new image only after its Job completed.
#[tokio::test]
async fn twenty_instances_upgrade_at_most_three_at_a_time() {
    let cp = tmi_e2e::shared();
    let ns = cp.namespace("op-waves").await;
    let c = &ns.client;
    install_crd(c).await;
    let mut cfg = config(&ns.name);
    cfg.concurrency = 10;
    cfg.upgrades = Limits {
        max_concurrent: Some(3),
        on_failure: FailurePolicy::Pause,
    };
    let op = Operator::start(cfg).await;
    put_secret(
        c,
        &ns.name,
        "db",
        &[("url", "postgres://tmi:pw@db.example:5432/tmi")],
    )
    .await;
    let names: Vec<String> = (0..20).map(|i| format!("t{i:02}")).collect();
    for n in &names {
        apply_instance(c, &ns.name, &instance(n, "")).await.unwrap();
    }
    wait_all(c, &ns.name, "20 instances Ready", Duration::from_secs(180), |i| {
        has_condition(i, "Ready", "True")
    })
    .await;

    let (seen, watches) = record(&ns.name, c);
    tokio::time::sleep(Duration::from_millis(500)).await; // the watches' initial lists
    let bumped = Instant::now();
    for n in &names {
        set_version(c, &ns.name, n, json!({ "version": NEW })).await;
    }
    wait_all(
        c,
        &ns.name,
        "20 upgrades Succeeded",
        Duration::from_secs(600),
        |i| {
            phase(i) == Some(UpgradePhase::Succeeded)
                && has_condition(i, "Ready", "True")
                && i.status.as_ref().and_then(|s| s.version.as_deref()) == Some(NEW)
        },
    )
    .await;
    let took = bumped.elapsed();

    // Every Job, from its own timestamps: created → completed, at most three at any second.
    let jobs = Api::<Job>::namespaced(c.clone(), &ns.name)
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    assert_eq!(jobs.len(), 20, "one migrate Job per instance");
    let intervals: Vec<(i64, i64)> = jobs
        .iter()
        .map(|j| {
            assert!(complete(j), "{} did not complete", j.name_any());
            let created = j.metadata.creation_timestamp.as_ref().unwrap().0.as_second();
            let done = j
                .status
                .as_ref()
                .unwrap()
                .completion_time
                .as_ref()
                .unwrap()
                .0
                .as_second();
            (created, done)
        })
        .collect();
    let by_timestamps = max_overlap(&intervals);

    // The same from the API server's write order (finer than seconds), once the watches caught up.
    let started = Instant::now();
    loop {
        let caught_up = {
            let s = seen.lock().unwrap();
            s.job_completed.len() == 20 && s.deployment_upgraded.len() == 20
        };
        if caught_up {
            break;
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "the watches never saw every Job complete"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for w in &watches {
        w.abort();
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let events: Vec<(i64, i64)> = seen
        .job_created
        .iter()
        .map(|(name, created)| (*created as i64, seen.job_completed[name] as i64))
        .collect();
    let by_revisions = max_overlap(&events);
    // Each Deployment took the new image after its Job completed.
    for n in &names {
        let job = jobs
            .iter()
            .find(|j| j.labels().get("app.kubernetes.io/instance") == Some(n))
            .unwrap();
        let completed = seen.job_completed[&job.name_any()];
        let upgraded = seen.deployment_upgraded[&format!("{n}-server")];
        assert!(
            completed < upgraded,
            "{n}: the Deployment got the new image (revision {upgraded}) before the Job completed ({completed})"
        );
    }
    // Each instance's own timeline is in order.
    let api: Api<TmiInstance> = Api::namespaced(c.clone(), &ns.name);
    let mut durations = Vec::new();
    for i in api.list(&Default::default()).await.unwrap() {
        let u = i.status.unwrap().upgrade.unwrap();
        let t = |x: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
            x.as_ref().unwrap().0.as_second()
        };
        let (req, start, mig, fin) = (
            t(&u.requested_at),
            t(&u.started_at),
            t(&u.migrated_at),
            t(&u.finished_at),
        );
        assert!(req <= start && start <= mig && mig <= fin, "{u:?}");
        assert_eq!(u.from_version.as_deref(), Some(OLD));
        durations.push(fin - start);
    }
    eprintln!(
        "waves: 20 instances, limit 3: all upgraded in {took:.1?}; at most {by_timestamps} Jobs at once by their \
         timestamps, {by_revisions} by write order; slot held per instance {}..{} s",
        durations.iter().min().unwrap(),
        durations.iter().max().unwrap()
    );
    assert!(by_timestamps <= 3, "more than 3 Jobs ran at once: {intervals:?}");
    assert_eq!(by_revisions, 3, "at most 3 at once, and the limit was used");
    op.stop().await;
}

/// The canary (`tmi.dev/upgrade-priority: "0"`) goes first; its migration fails (its Job cannot be scheduled
/// and hits its deadline), so it is `Stalled/MigrationFailed` with its old Deployment untouched, and the
/// other instances wait instead of upgrading. Setting the canary's version back lets the wave go on.
#[tokio::test]
async fn a_failing_canary_stops_the_wave_until_it_is_set_back() {
    let cp = tmi_e2e::shared();
    let ns = cp.namespace("op-canary").await;
    let c = &ns.client;
    install_crd(c).await;
    let mut cfg = config(&ns.name);
    cfg.upgrades = Limits {
        max_concurrent: Some(3),
        on_failure: FailurePolicy::Pause,
    };
    cfg.migration_deadline = Duration::from_secs(3);
    let op = Operator::start(cfg).await;
    put_secret(
        c,
        &ns.name,
        "db",
        &[("url", "postgres://tmi:pw@db.example:5432/tmi")],
    )
    .await;
    apply_instance(
        c,
        &ns.name,
        &instance("canary", "tmi.dev/upgrade-priority: \"0\""),
    )
    .await
    .unwrap();
    let others: Vec<String> = (0..4).map(|i| format!("tenant-{i}")).collect();
    for n in &others {
        apply_instance(c, &ns.name, &instance(n, "")).await.unwrap();
    }
    wait_all(c, &ns.name, "all Ready", Duration::from_secs(120), |i| {
        has_condition(i, "Ready", "True")
    })
    .await;

    // One commit bumps everyone; the canary's release cannot migrate (its Job's pod is never scheduled).
    set_version(
        c,
        &ns.name,
        "canary",
        json!({ "version": NEW, "server": { "scheduling": { "nodeSelector": { "tmi.dev/test": "nowhere" } } } }),
    )
    .await;
    for n in &others {
        set_version(c, &ns.name, n, json!({ "version": NEW })).await;
    }
    let canary = wait_for(c, &ns.name, "canary", "Stalled/MigrationFailed", |i| {
        has_condition(i, "Stalled", "True") && condition(i, "Stalled").unwrap().reason == "MigrationFailed"
    })
    .await;
    let message = &condition(&canary, "Stalled").unwrap().message;
    assert!(message.contains("DeadlineExceeded"), "{message}");
    assert!(message.contains("1.0.0 keeps serving"), "{message}");
    assert_eq!(phase(&canary), Some(UpgradePhase::Failed));
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), &ns.name);
    let d = deployments.get("canary-server").await.unwrap();
    let pod = d.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some(image(OLD).as_str()),
        "the Deployment is untouched"
    );
    assert_eq!(
        pod.node_selector, None,
        "nothing of the new spec reached the pods"
    );
    assert_eq!(canary.status.as_ref().unwrap().version.as_deref(), Some(OLD));

    // The others wait, saying why; none of them got a Job.
    for n in &others {
        let i = wait_for(c, &ns.name, n, "Waiting behind the failed canary", |i| {
            has_condition(i, "Reconciling", "True")
                && condition(i, "Reconciling").unwrap().reason == "UpgradeWaiting"
                && condition(i, "Reconciling")
                    .unwrap()
                    .message
                    .contains("/canary failed")
        })
        .await;
        assert_eq!(phase(&i), Some(UpgradePhase::Waiting));
        assert_eq!(i.status.as_ref().unwrap().version.as_deref(), Some(OLD));
    }
    let jobs = Api::<Job>::namespaced(c.clone(), &ns.name)
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    let owners: BTreeSet<String> = jobs
        .iter()
        .filter_map(|j| j.labels().get("app.kubernetes.io/instance").cloned())
        .collect();
    assert_eq!(
        owners,
        BTreeSet::from(["canary".to_owned()]),
        "only the canary migrated"
    );

    // The canary set back: Ready on the old version, its failed Job removed, and the wave goes on.
    Api::<TmiInstance>::namespaced(c.clone(), &ns.name)
        .patch(
            "canary",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "version": OLD, "server": null } })),
        )
        .await
        .unwrap();
    let canary = wait_for(c, &ns.name, "canary", "Ready after the revert", |i| {
        has_condition(i, "Ready", "True")
    })
    .await;
    assert_eq!(phase(&canary), Some(UpgradePhase::Cancelled));
    wait_all(
        c,
        &ns.name,
        "the rest of the wave Succeeded",
        Duration::from_secs(180),
        |i| {
            i.name_any() == "canary"
                || (phase(i) == Some(UpgradePhase::Succeeded) && has_condition(i, "Ready", "True"))
        },
    )
    .await;
    let started = Instant::now();
    while Api::<Job>::namespaced(c.clone(), &ns.name)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .any(|j| j.labels().get("app.kubernetes.io/instance").map(String::as_str) == Some("canary"))
    {
        assert!(
            started.elapsed() < TIMEOUT,
            "the canary's failed Job was not removed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    op.stop().await;
}

/// Two operator builds against the same instances: build A (default TMI version 1.0.0) runs three, then build B
/// (default 1.0.1) takes over. The instance that follows patch releases is upgraded to 1.0.1 through a migrate
/// Job (its `spec.version` still says 1.0.0); the one without a policy and the one on another minor version are
/// not touched at all: their Deployments and pods stay exactly as they were.
#[tokio::test]
async fn an_operator_upgrade_restarts_only_the_instances_that_follow_its_version() {
    let cp = tmi_e2e::shared();
    let ns = cp.namespace("op-opup").await;
    let c = &ns.client;
    install_crd(c).await;
    put_secret(
        c,
        &ns.name,
        "db",
        &[("url", "postgres://tmi:pw@db.example:5432/tmi")],
    )
    .await;
    let with = |name: &str, version: &str, policy: &str| {
        format!(
            r#"
apiVersion: tmi.dev/v1alpha1
kind: TmiInstance
metadata: {{ name: {name} }}
spec:
  version: {version}
  database: {{ external: {{ urlSecretRef: {{ name: db, key: url }} }} }}
{policy}"#
        )
    };
    apply_instance(c, &ns.name, &with("manual", "1.0.0", ""))
        .await
        .unwrap();
    apply_instance(
        c,
        &ns.name,
        &with("follower", "1.0.0", "  upgrade: { policy: Patch }\n"),
    )
    .await
    .unwrap();
    apply_instance(
        c,
        &ns.name,
        &with("elsewhere", "0.9.5", "  upgrade: { policy: Patch }\n"),
    )
    .await
    .unwrap();

    let mut a = config(&ns.name);
    a.default_version = "1.0.0".into();
    let op = Operator::start(a).await;
    wait_all(
        c,
        &ns.name,
        "all Ready under build A",
        Duration::from_secs(120),
        |i| has_condition(i, "Ready", "True"),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await; // the Deployments' own status updates settle
    op.stop().await;
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), &ns.name);
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(c.clone(), &ns.name);
    let snapshot = |name: &'static str| {
        let (deployments, pods) = (deployments.clone(), pods.clone());
        async move {
            let d = deployments.get(&format!("{name}-server")).await.unwrap();
            let lp = kube::api::ListParams::default().labels(&format!(
                "app.kubernetes.io/instance={name},app.kubernetes.io/component=server"
            ));
            let uids: BTreeSet<String> = pods
                .list(&lp)
                .await
                .unwrap()
                .items
                .iter()
                .filter_map(|p| p.metadata.uid.clone())
                .collect();
            (d.metadata.generation, d.resource_version(), uids)
        }
    };
    let before = (snapshot("manual").await, snapshot("elsewhere").await);

    let mut b = config(&ns.name);
    b.default_version = "1.0.1".into();
    let op = Operator::start(b).await;
    let follower = wait_for(
        c,
        &ns.name,
        "follower",
        "upgraded to the operator's version",
        |i| {
            phase(i) == Some(UpgradePhase::Succeeded)
                && has_condition(i, "Ready", "True")
                && i.status.as_ref().and_then(|s| s.version.as_deref()) == Some("1.0.1")
        },
    )
    .await;
    assert_eq!(follower.spec.version, "1.0.0", "spec is never changed");
    let u = follower.status.unwrap().upgrade.unwrap();
    assert_eq!(
        (u.from_version.as_deref(), u.target_version.as_str()),
        (Some("1.0.0"), "1.0.1")
    );
    assert!(u.job.is_some(), "the upgrade went through a migrate Job");
    // Build B has reconciled every instance a few times over (2 s resync) by now.
    let reconciles = op.metrics.reconcile_count();
    let started = Instant::now();
    while op.metrics.reconcile_count() < reconciles + 9 {
        assert!(started.elapsed() < TIMEOUT, "build B stopped reconciling");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = (snapshot("manual").await, snapshot("elsewhere").await);
    assert_eq!(
        before, after,
        "an instance that does not follow the operator's version was touched"
    );
    for name in ["manual", "elsewhere"] {
        let i = wait_for(c, &ns.name, name, "Ready", |i| has_condition(i, "Ready", "True")).await;
        assert_eq!(i.status.as_ref().unwrap().upgrade, None, "{name} had no upgrade");
    }
    op.stop().await;
}
