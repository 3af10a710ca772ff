//! The operator against a real API server (the local control plane from `tmi-e2e`; kwok makes pods Ready).
//! Each test runs its own operator in-process, watching only the test's namespace.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is a test failure

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tmi_operator::crd::TmiInstance;

/// The objects of one kind the operator manages in a namespace.
async fn managed<K>(c: &kube::Client, ns: &str) -> Vec<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let lp = ListParams::default().labels("app.kubernetes.io/managed-by=tmi-operator");
    Api::<K>::namespaced(c.clone(), ns).list(&lp).await.unwrap().items
}

const CANARY: &str = "CANARY-s3cr3t-9f8e7d";

fn instance(name: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: tmi.dev/v1alpha1
kind: TmiInstance
metadata: {{ name: {name} }}
spec:
  version: 1.0.0
  database: {{ external: {{ urlSecretRef: {{ name: db, key: url }} }} }}
{extra}"#
    )
}

async fn db_secret(client: &kube::Client, ns: &str) {
    put_secret(
        client,
        ns,
        "db",
        &[("url", &format!("postgres://tmi:{CANARY}@db.example:5432/tmi"))],
    )
    .await;
}

fn ready(i: &TmiInstance) -> bool {
    has_condition(i, "Ready", "True")
}

/// The resourceVersion of every object the operator manages in `ns`, plus the instance's.
async fn resource_versions(client: &kube::Client, ns: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    macro_rules! collect {
        ($k:ty) => {
            for o in managed::<$k>(client, ns).await {
                out.insert(
                    format!("{}/{}", <$k>::kind(&()), o.name_any()),
                    o.resource_version().unwrap(),
                );
            }
        };
    }
    collect!(ServiceAccount);
    collect!(ConfigMap);
    collect!(Secret);
    collect!(Deployment);
    collect!(Service);
    collect!(PodDisruptionBudget);
    for o in Api::<TmiInstance>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .unwrap()
    {
        out.insert(
            format!("TmiInstance/{}", o.name_any()),
            o.resource_version().unwrap(),
        );
    }
    out
}

/// Apply → every child exists and is owned → kwok readies the pods → `Ready=True` at the current generation
/// and `kubectl wait` agrees → a spec change rolls the Deployment (Reconciling, then Ready) → scaling adds and
/// removes the PDB → deleting the instance garbage-collects the children.
#[tokio::test]
async fn lifecycle() {
    let cp = tmi_e2e::shared();
    let ns = cp.namespace("op-life").await;
    let c = &ns.client;
    install_crd(c).await;
    let op = Operator::start(config(&ns.name)).await;
    db_secret(c, &ns.name).await;
    put_secret(c, &ns.name, "redis", &[("url", "redis://redis.example:6379/0")]).await;
    let yaml = instance(
        "acme",
        "  cache: { external: { urlSecretRef: { name: redis, key: url } } }\n",
    );
    apply_instance(c, &ns.name, &yaml).await.unwrap();
    let i = wait_for(c, &ns.name, "acme", "Ready", ready).await;
    let status = i.status.clone().unwrap();
    assert_eq!(
        status.url.as_deref(),
        Some(&*format!("http://acme.{}.svc", ns.name))
    );
    assert_eq!(status.version.as_deref(), Some("1.0.0"));
    assert_eq!((status.replicas, status.ready_replicas), (Some(1), Some(1)));
    assert_eq!(condition(&i, "Reconciling").unwrap().status, "False");
    assert_eq!(condition(&i, "Stalled").unwrap().status, "False");

    let uid = i.uid().unwrap();
    let owned = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        meta.owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == uid && o.controller == Some(true))
    };
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), &ns.name);
    let d = deployments.get("acme-server").await.unwrap();
    assert!(owned(&d.metadata));
    assert!(owned(
        &Api::<Service>::namespaced(c.clone(), &ns.name)
            .get("acme")
            .await
            .unwrap()
            .metadata
    ));
    assert!(owned(
        &Api::<ConfigMap>::namespaced(c.clone(), &ns.name)
            .get("acme-config")
            .await
            .unwrap()
            .metadata
    ));
    assert!(owned(
        &Api::<ServiceAccount>::namespaced(c.clone(), &ns.name)
            .get("acme-server")
            .await
            .unwrap()
            .metadata
    ));
    let generated = Api::<Secret>::namespaced(c.clone(), &ns.name)
        .get("acme-generated")
        .await
        .unwrap();
    assert!(owned(&generated.metadata));

    let name = ns.name.clone();
    let kubectl_wait = tokio::task::spawn_blocking(move || {
        tmi_e2e::shared()
            .kubectl()
            .args([
                "wait",
                "--for=condition=Ready",
                "tmi/acme",
                "-n",
                &name,
                "--timeout=60s",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        kubectl_wait.status.success(),
        "{}",
        String::from_utf8_lossy(&kubectl_wait.stderr)
    );
    let name = ns.name.clone();
    let get = tokio::task::spawn_blocking(move || {
        tmi_e2e::shared()
            .kubectl()
            .args(["get", "tmi", "-n", &name])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let table = String::from_utf8_lossy(&get.stdout).to_string();
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "READY", "VERSION", "URL", "UPGRADE", "REASON", "AGE"],
        "{table}"
    );
    assert!(
        table.contains("True") && table.contains("Available") && table.contains("1.0.0"),
        "{table}"
    );

    // A spec change: Reconciling at the new generation, then Ready again with the new template.
    let hash_before = pod_hash(&d);
    let yaml2 = instance(
        "acme",
        "  cache: { external: { urlSecretRef: { name: redis, key: url } } }\n  server: { replicas: 2 }\n",
    );
    // Record every status the instance passes through while the change rolls out.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(Option<i64>, String, String)>::new()));
    let recorder = {
        let seen = seen.clone();
        let api: Api<TmiInstance> = Api::namespaced(c.clone(), &ns.name);
        let wc = kube::runtime::watcher::Config::default().fields("metadata.name=acme");
        tokio::spawn(async move {
            use futures::StreamExt;
            let mut stream = std::pin::pin!(
                kube::runtime::watcher(api, wc)
                    .default_backoff()
                    .applied_objects()
            );
            while let Some(Ok(i)) = stream.next().await {
                let observed = i.status.as_ref().and_then(|s| s.observed_generation);
                let reconciling = condition(&i, "Reconciling")
                    .map(|c| c.status.clone())
                    .unwrap_or_default();
                let ready = condition(&i, "Ready")
                    .map(|c| c.status.clone())
                    .unwrap_or_default();
                seen.lock().unwrap().push((observed, reconciling, ready));
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let changed = apply_instance(c, &ns.name, &yaml2).await.unwrap();
    let generation = changed.metadata.generation;
    let i = wait_for(c, &ns.name, "acme", "Ready with 2 replicas", |i| {
        ready(i) && i.status.as_ref().and_then(|s| s.ready_replicas) == Some(2)
    })
    .await;
    recorder.abort();
    let seen = seen.lock().unwrap().clone();
    let first_reconciling = seen.iter().position(|(g, r, _)| *g == generation && r == "True");
    let last_ready = seen
        .iter()
        .rposition(|(g, _, ready)| *g == generation && ready == "True");
    assert!(
        matches!((first_reconciling, last_ready), (Some(a), Some(b)) if a < b),
        "expected Reconciling=True then Ready=True at generation {generation:?}: {seen:?}"
    );
    assert_eq!(i.metadata.generation, generation);
    let d = deployments.get("acme-server").await.unwrap();
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(2));
    assert_eq!(pod_hash(&d), hash_before, "replicas do not change the inputs");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(c.clone(), &ns.name);
    assert!(owned(&pdbs.get("acme-server").await.unwrap().metadata));

    // Editing a referenced Secret rolls the pods.
    put_secret(c, &ns.name, "redis", &[("url", "redis://redis2.example:6379/0")]).await;
    let rolled = tokio::time::timeout(TIMEOUT, async {
        loop {
            let d = deployments.get("acme-server").await.unwrap();
            if pod_hash(&d) != hash_before {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("editing a referenced Secret did not change the pod template");
    assert!(pod_hash(&rolled).starts_with("sha256:"));

    // Scaling back to one replica through the scale subresource removes the PDB.
    let api: Api<TmiInstance> = Api::namespaced(c.clone(), &ns.name);
    api.patch_scale(
        "acme",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    wait_for(c, &ns.name, "acme", "Ready with 1 replica", |i| {
        ready(i) && i.status.as_ref().and_then(|s| s.ready_replicas) == Some(1)
    })
    .await;
    tokio::time::timeout(TIMEOUT, async {
        while pdbs.get_opt("acme-server").await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("PDB not removed after scaling to one replica");

    // Events for the transitions exist.
    let events: Api<Event> = Api::namespaced(c.clone(), &ns.name);
    let reasons: Vec<String> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("acme"))
        .filter_map(|e| e.reason)
        .collect();
    assert!(reasons.iter().any(|r| r == "Available"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "RollingOut"), "{reasons:?}");

    // Deleting the instance garbage-collects every child.
    api.delete("acme", &DeleteParams::background()).await.unwrap();
    let started = std::time::Instant::now();
    loop {
        let left = resource_versions(c, &ns.name).await;
        if left.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "children not garbage-collected: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    op.stop().await;
}

fn pod_hash(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap()["tmi.dev/inputs-hash"]
        .clone()
}

/// An unchanged instance reconciled many times (resyncs every 2 s and a restart of the operator) moves no
/// object's resourceVersion, and the operator neither writes nor reads anything in steady state.
#[tokio::test]
async fn steady_state_makes_zero_writes() {
    let cp = tmi_e2e::shared();
    let ns = cp.namespace("op-steady").await;
    let c = &ns.client;
    install_crd(c).await;
    let op = Operator::start(config(&ns.name)).await;
    db_secret(c, &ns.name).await;
    apply_instance(c, &ns.name, &instance("quiet", "")).await.unwrap();
    wait_for(c, &ns.name, "quiet", "Ready", ready).await;
    // Let trailing events (the Deployment's own status updates) settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = resource_versions(c, &ns.name).await;
    let (reconciles, writes, requests) = (
        op.metrics.reconcile_count(),
        op.metrics.write_count(),
        op.metrics.request_count(),
    );
    tokio::time::sleep(Duration::from_secs(12)).await;
    let after = resource_versions(c, &ns.name).await;
    assert_eq!(before, after, "resourceVersions moved in steady state");
    let reconciled = op.metrics.reconcile_count() - reconciles;
    assert!(
        reconciled >= 5,
        "only {reconciled} reconciles in 12 s with a 2 s resync"
    );
    assert_eq!(
        op.metrics.write_count(),
        writes,
        "writes in steady state:\n{}",
        op.metrics.encode()
    );
    assert_eq!(
        op.metrics.request_count(),
        requests,
        "API requests in steady state:\n{}",
        op.metrics.encode()
    );
    op.stop().await;

    // A fresh operator (empty caches) converges without writing either.
    let op = Operator::start(config(&ns.name)).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(op.metrics.reconcile_count() >= 2);
    assert_eq!(
        resource_versions(c, &ns.name).await,
        before,
        "a restarted operator wrote"
    );
    op.stop().await;
}

/// Another writer's edit of a field the operator sets (a merge patch, as `kubectl edit` or a script would do)
/// is put back on the next resync, although the watch caches keep only the fields the operator's field manager
/// owns (`controller::cache`): the edit takes the field over, so the cached object lacks it and the diff
/// applies again. Fields the operator does not set stay as the other writer left them.
#[tokio::test]
async fn edits_of_operator_fields_are_put_back() {
    let cp = tmi_e2e::shared();
    let ns = cp.namespace("op-drift").await;
    let c = &ns.client;
    install_crd(c).await;
    let op = Operator::start(config(&ns.name)).await;
    db_secret(c, &ns.name).await;
    apply_instance(c, &ns.name, &instance("drift", "")).await.unwrap();
    wait_for(c, &ns.name, "drift", "Ready", ready).await;
    let services: Api<Service> = Api::namespaced(c.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), &ns.name);
    let original_service = services.get("drift").await.unwrap();
    let original_labels = original_service.labels().clone();
    let original_port = original_service.spec.unwrap().ports.unwrap()[0]
        .target_port
        .clone();
    let image = |d: &Deployment| {
        d.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .image
            .clone()
    };
    let original_image = image(&deployments.get("drift-server").await.unwrap());

    let editor = PatchParams {
        field_manager: Some("someone-else".into()),
        ..Default::default()
    };
    services
        .patch(
            "drift",
            &editor,
            &Patch::Merge(json!({
                "metadata": {"labels": {"app.kubernetes.io/name": "edited", "team": "blue"}},
                "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 9999}]}
            })),
        )
        .await
        .unwrap();
    deployments
        .patch(
            "drift-server",
            &editor,
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "server", "image": "registry.example/edited:1"}
            ]}}}})),
        )
        .await
        .unwrap();

    let started = std::time::Instant::now();
    loop {
        let s = services.get("drift").await.unwrap();
        let d = deployments.get("drift-server").await.unwrap();
        let port = s.spec.as_ref().unwrap().ports.as_ref().unwrap()[0]
            .target_port
            .clone();
        let name = s.labels().get("app.kubernetes.io/name").cloned();
        if port == original_port
            && name == original_labels.get("app.kubernetes.io/name").cloned()
            && image(&d) == original_image
        {
            // The other writer's own label is theirs: left alone.
            assert_eq!(s.labels().get("team").map(String::as_str), Some("blue"));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the edits were not put back: Service {:?} {:?}, image {:?}",
            s.labels(),
            port,
            image(&d)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    op.stop().await;
}

/// A missing Secret stalls the instance with its reason (no crash loop, nothing rolled); a Secret without the
/// key gives `SecretKeyMissing`; creating the right Secret recovers it.
#[tokio::test]
async fn missing_secret_stalls_and_recovers() {
    let cp = tmi_e2e::shared();
    let ns = cp.namespace("op-secret").await;
    let c = &ns.client;
    install_crd(c).await;
    let op = Operator::start(config(&ns.name)).await;
    apply_instance(c, &ns.name, &instance("lost", "")).await.unwrap();
    let i = wait_for(c, &ns.name, "lost", "Stalled", |i| {
        has_condition(i, "Stalled", "True")
    })
    .await;
    assert_eq!(condition(&i, "Stalled").unwrap().reason, "SecretNotFound");
    assert_eq!(condition(&i, "Ready").unwrap().reason, "SecretNotFound");
    assert!(condition(&i, "Stalled").unwrap().message.contains("\"db\""));
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), &ns.name);
    assert!(
        deployments.get_opt("lost-server").await.unwrap().is_none(),
        "rendered despite a missing Secret"
    );

    put_secret(c, &ns.name, "db", &[("uri", "postgres://x")]).await;
    wait_for(c, &ns.name, "lost", "SecretKeyMissing", |i| {
        condition(i, "Stalled").is_some_and(|c| c.reason == "SecretKeyMissing")
    })
    .await;

    db_secret(c, &ns.name).await;
    let i = wait_for(c, &ns.name, "lost", "Ready", ready).await;
    assert_eq!(condition(&i, "Stalled").unwrap().status, "False");
    op.stop().await;
}

/// `spec.auth.trustedCA` is an input like a Secret: a missing ConfigMap, then a missing key, stall the
/// instance with their reasons and nothing is rendered; once present it is mounted, and a new bundle changes
/// the pod template's inputs hash (the pods roll).
#[tokio::test]
async fn trusted_ca_stalls_until_present_and_rolls_on_change() {
    let cp = tmi_e2e::shared();
    let ns = cp.namespace("op-ca").await;
    let c = &ns.client;
    install_crd(c).await;
    let op = Operator::start(config(&ns.name)).await;
    db_secret(c, &ns.name).await;
    let extra = "  auth: { trustedCA: { configMapKeyRef: { name: corp-ca, key: ca.crt } } }\n";
    apply_instance(c, &ns.name, &instance("private", extra))
        .await
        .unwrap();
    let i = wait_for(c, &ns.name, "private", "ConfigMapNotFound", |i| {
        condition(i, "Stalled").is_some_and(|c| c.reason == "ConfigMapNotFound")
    })
    .await;
    assert!(condition(&i, "Stalled").unwrap().message.contains("\"corp-ca\""));
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), &ns.name);
    assert!(deployments.get_opt("private-server").await.unwrap().is_none());

    let config_maps: Api<ConfigMap> = Api::namespaced(c.clone(), &ns.name);
    let put = |data: serde_json::Value| {
        let config_maps = config_maps.clone();
        async move {
            let cm: ConfigMap = serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "corp-ca" }, "data": data,
            }))
            .unwrap();
            config_maps
                .patch(
                    "corp-ca",
                    &kube::api::PatchParams::apply("test-user").force(),
                    &kube::api::Patch::Apply(&cm),
                )
                .await
                .unwrap();
        }
    };
    put(serde_json::json!({ "other.crt": "x" })).await;
    wait_for(c, &ns.name, "private", "ConfigMapKeyMissing", |i| {
        condition(i, "Stalled").is_some_and(|c| c.reason == "ConfigMapKeyMissing")
    })
    .await;

    put(serde_json::json!({ "ca.crt": "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n" })).await;
    wait_for(c, &ns.name, "private", "Ready", ready).await;
    let d = deployments.get("private-server").await.unwrap();
    let first = pod_hash(&d);
    let pod = d.spec.unwrap().template.spec.unwrap();
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "trusted-ca")
        .unwrap();
    assert_eq!(volume.config_map.as_ref().unwrap().name, "corp-ca");
    assert!(
        pod.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == "trusted-ca" && m.read_only == Some(true))
    );

    put(serde_json::json!({ "ca.crt": "-----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----\n" })).await;
    let started = std::time::Instant::now();
    loop {
        let d = deployments.get("private-server").await.unwrap();
        if pod_hash(&d) != first {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "a new CA bundle did not change the pod template"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    op.stop().await;
}

/// With two leader-elected operators only the leader writes; when it shuts down, the other takes over.
#[tokio::test]
async fn only_the_leader_writes() {
    let cp = tmi_e2e::shared();
    let ns = cp.namespace("op-leader").await;
    let c = &ns.client;
    install_crd(c).await;
    db_secret(c, &ns.name).await;
    let a = Operator::start_elected(config(&ns.name), &ns.name, "replica-a").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b = Operator::start_elected(config(&ns.name), &ns.name, "replica-b").await;
    apply_instance(c, &ns.name, &instance("one", "")).await.unwrap();
    wait_for(c, &ns.name, "one", "Ready", ready).await;
    let (wa, wb) = (a.metrics.write_count(), b.metrics.write_count());
    assert!(wa > 0, "the first replica should lead");
    assert_eq!(wb, 0, "the standby wrote:\n{}", b.metrics.encode());
    assert_eq!(b.metrics.reconcile_count(), 0);

    a.stop().await;
    apply_instance(c, &ns.name, &instance("two", "")).await.unwrap();
    wait_for(c, &ns.name, "two", "Ready", ready).await;
    assert!(b.metrics.write_count() > 0, "the standby never took over");
    b.stop().await;
}

/// An operator killed in the middle of its first reconciles is replaced and the replacement converges, with
/// exactly one of each child and the generated Secret never overwritten.
#[tokio::test]
async fn killed_operator_is_replaced_without_duplicates() {
    let cp = tmi_e2e::shared();
    let ns = cp.namespace("op-kill").await;
    let c = &ns.client;
    install_crd(c).await;
    db_secret(c, &ns.name).await;
    for n in 0..5 {
        apply_instance(c, &ns.name, &instance(&format!("k{n}"), ""))
            .await
            .unwrap();
    }
    let first = Operator::start(config(&ns.name)).await;
    // Kill as soon as the first write went out: reconciles are in flight.
    tokio::time::timeout(TIMEOUT, async {
        while first.metrics.write_count() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the first operator never wrote");
    first.kill();
    let secrets: Api<Secret> = Api::namespaced(c.clone(), &ns.name);
    let early: BTreeMap<String, String> = secrets
        .list(&ListParams::default().labels("tmi.dev/generated=true"))
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.name_any(), s.uid().unwrap()))
        .collect();

    let second = Operator::start(config(&ns.name)).await;
    for n in 0..5 {
        wait_for(c, &ns.name, &format!("k{n}"), "Ready", ready).await;
    }
    assert_eq!(managed::<Deployment>(c, &ns.name).await.len(), 5);
    assert_eq!(managed::<Service>(c, &ns.name).await.len(), 5);
    assert_eq!(managed::<ConfigMap>(c, &ns.name).await.len(), 5);
    let generated = secrets
        .list(&ListParams::default().labels("tmi.dev/generated=true"))
        .await
        .unwrap();
    assert_eq!(generated.items.len(), 5);
    for s in generated {
        if let Some(uid) = early.get(&s.name_any()) {
            assert_eq!(
                Some(uid),
                s.uid().as_ref(),
                "generated Secret {} was replaced",
                s.name_any()
            );
        }
    }
    second.stop().await;
}

/// Secret values never show up in status, events, rendered objects or the operator's logs, including on the
/// failure paths (a rejected object, a missing key).
#[tokio::test]
async fn secret_values_never_leak() {
    let cp = tmi_e2e::shared();
    let ns = cp.namespace("op-leak").await;
    let c = &ns.client;
    install_crd(c).await;
    let op = Operator::start(config(&ns.name)).await;
    db_secret(c, &ns.name).await;
    put_secret(c, &ns.name, "oauth", &[("id", CANARY), ("secret", CANARY)]).await;
    let extra = r#"  buildMode: Test
  auth:
    devLogin: true
    providers:
      - id: github
        clientIdSecretRef: { name: oauth, key: id }
        clientSecretSecretRef: { name: oauth, key: secret }
        authorizationUrl: https://github.com/login/oauth/authorize
        tokenUrl: https://github.com/login/oauth/access_token
        userinfoUrl: https://api.github.com/user
        subjectClaim: id
      - id: other
        clientIdSecretRef: { name: oauth, key: nope }
        clientSecretSecretRef: { name: oauth, key: secret }
        authorizationUrl: https://other.example/authorize
        tokenUrl: https://other.example/token
        userinfoUrl: https://other.example/userinfo
        subjectClaim: sub
"#;
    apply_instance(c, &ns.name, &instance("leaky", extra))
        .await
        .unwrap();
    wait_for(c, &ns.name, "leaky", "SecretKeyMissing", |i| {
        condition(i, "Stalled").is_some_and(|c| c.reason == "SecretKeyMissing")
    })
    .await;
    // Fix the key, then make the API server reject the Deployment (an env var name it refuses).
    put_secret(
        c,
        &ns.name,
        "oauth",
        &[("id", CANARY), ("secret", CANARY), ("nope", CANARY)],
    )
    .await;
    wait_for(c, &ns.name, "leaky", "Ready", ready).await;
    let rejected = format!(
        "{extra}  server: {{ resources: {{ limits: {{ memory: 1Mi }}, requests: {{ memory: 2Mi }} }} }}\n"
    );
    apply_instance(c, &ns.name, &instance("leaky", &rejected))
        .await
        .unwrap();
    let i = wait_for(c, &ns.name, "leaky", "ApplyRejected", |i| {
        condition(i, "Stalled").is_some_and(|c| c.reason == "ApplyRejected")
    })
    .await;
    assert!(has_condition(&i, "Stalled", "True"));

    let mut seen = serde_json::to_string(&i).unwrap();
    let events: Api<Event> = Api::namespaced(c.clone(), &ns.name);
    seen += &serde_json::to_string(&events.list(&Default::default()).await.unwrap().items).unwrap();
    seen += &serde_json::to_string(&managed::<Deployment>(c, &ns.name).await).unwrap();
    seen += &serde_json::to_string(&managed::<ConfigMap>(c, &ns.name).await).unwrap();
    assert!(
        seen.contains("SecretKeyMissing"),
        "the failure paths were exercised"
    );
    assert!(
        !seen.contains(CANARY),
        "a secret value leaked into status, events or rendered objects"
    );
    op.stop().await;
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).to_string();
    assert!(logs.contains("controller starting"), "logs were captured");
    assert!(
        !logs.contains(CANARY),
        "a secret value leaked into the operator's logs"
    );
}

/// SQLite mode: the operator creates an owned claim, the pod mounts it, and with a volume to bind to the
/// instance becomes Ready with one `Recreate` replica.
#[tokio::test]
async fn sqlite_instance_gets_its_volume() {
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    let cp = tmi_e2e::shared();
    let ns = cp.namespace("op-sqlite").await;
    let c = &ns.client;
    install_crd(c).await;
    let class = format!("manual-{}", ns.name);
    let pv: PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": { "name": format!("pv-{}", ns.name) },
        "spec": {
            "capacity": { "storage": "2Gi" }, "accessModes": ["ReadWriteOnce"],
            "storageClassName": class, "hostPath": { "path": format!("/tmp/{}", ns.name) },
            "persistentVolumeReclaimPolicy": "Delete"
        }
    }))
    .unwrap();
    let pvs: Api<PersistentVolume> = Api::all(c.clone());
    pvs.create(&Default::default(), &pv).await.unwrap();
    let op = Operator::start(config(&ns.name)).await;
    let yaml = format!(
        "apiVersion: tmi.dev/v1alpha1\nkind: TmiInstance\nmetadata: {{ name: notes }}\nspec:\n  version: 1.0.0\n  database: {{ sqlite: {{ size: 1Gi, storageClassName: {class} }} }}\n"
    );
    apply_instance(c, &ns.name, &yaml).await.unwrap();
    let i = wait_for(c, &ns.name, "notes", "Ready", ready).await;
    assert_eq!(
        i.status.as_ref().unwrap().effective.as_ref().unwrap().database,
        "Sqlite"
    );
    let pvc = Api::<PersistentVolumeClaim>::namespaced(c.clone(), &ns.name)
        .get("notes-data")
        .await
        .unwrap();
    assert_eq!(pvc.owner_references()[0].uid, i.uid().unwrap());
    let d = Api::<Deployment>::namespaced(c.clone(), &ns.name)
        .get("notes-server")
        .await
        .unwrap();
    let spec = d.spec.unwrap();
    assert_eq!(spec.strategy.unwrap().type_.as_deref(), Some("Recreate"));
    let volumes = spec.template.spec.unwrap().volumes.unwrap();
    assert!(volumes.iter().any(|v| {
        v.persistent_volume_claim
            .as_ref()
            .is_some_and(|p| p.claim_name == "notes-data")
    }));
    op.stop().await;
    let _ = pvs
        .delete(&format!("pv-{}", ns.name), &DeleteParams::default())
        .await;
}

/// `INSTANCE_SELECTOR` shards instances: an operator only touches the instances its selector matches.
#[tokio::test]
async fn instance_selector_shards_instances() {
    let cp = tmi_e2e::shared();
    let ns = cp.namespace("op-shard").await;
    let c = &ns.client;
    install_crd(c).await;
    db_secret(c, &ns.name).await;
    let mut cfg = config(&ns.name);
    cfg.instance_selector = Some("tmi.dev/shard=a".into());
    let op = Operator::start(cfg).await;
    let labelled = instance("mine", "").replace(
        "metadata: { name: mine }",
        "metadata: { name: mine, labels: { tmi.dev/shard: a } }",
    );
    apply_instance(c, &ns.name, &labelled).await.unwrap();
    apply_instance(c, &ns.name, &instance("theirs", ""))
        .await
        .unwrap();
    wait_for(c, &ns.name, "mine", "Ready", ready).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let theirs = Api::<TmiInstance>::namespaced(c.clone(), &ns.name)
        .get("theirs")
        .await
        .unwrap();
    // The only status it may have is the schema's default for an unobserved instance.
    let status = theirs.status.unwrap_or_default();
    assert!(
        status.conditions.is_none() && status.observed_generation.unwrap_or(0) == 0,
        "an instance outside the shard was reconciled: {status:?}"
    );
    assert!(
        Api::<Deployment>::namespaced(c.clone(), &ns.name)
            .get_opt("theirs-server")
            .await
            .unwrap()
            .is_none()
    );
    op.stop().await;
}
