//! GitOps health: the Argo CD health check in `config/argocd/health.lua` and a real kstatus implementation
//! (sigs.k8s.io/cli-utils, the library behind Flux's health checks) judge TmiInstance objects that the real
//! operator produced on the local control plane, at each stage of their life.

#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, CustomResourceExt};
use mlua::serde::SerializeOptions;
use mlua::{Lua, LuaSerdeExt};
use serde_json::{Value, json};
use tmi_operator::controller::{self, Config};
use tmi_operator::crd::TmiInstance;
use tmi_operator::metrics::Metrics;

mod common;
use common::{TIMEOUT, cond_true, condition, current, wait_current};

const HEALTH_LUA: &str = include_str!("../../config/argocd/health.lua");

/// What Argo CD's health check says of an object: (status, message).
fn argo_health(obj: &Value) -> (String, String) {
    let lua = Lua::new();
    // Kubernetes objects have no JSON nulls that matter; map them to nil as Argo CD's converter does.
    let opts = SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    lua.globals()
        .set("obj", lua.to_value_with(obj, opts).unwrap())
        .unwrap();
    let hs: mlua::Table = lua.load(HEALTH_LUA).set_name("health.lua").eval().unwrap();
    (
        hs.get("status").unwrap(),
        hs.get::<Option<String>>("message").unwrap().unwrap_or_default(),
    )
}

/// What kstatus says of an object: (status, message).
fn kstatus(obj: &Value) -> (String, String) {
    let bin = tmi_e2e::shared().bin_dir().join("kstatus");
    let mut child = Command::new(&bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(obj.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kstatus failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["status"].as_str().unwrap().to_owned(),
        v["message"].as_str().unwrap_or_default().to_owned(),
    )
}

async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "tmiinstances.tmi.dev",
        &PatchParams::apply("tmi-e2e").force(),
        &Patch::Apply(TmiInstance::crd()),
    )
    .await
    .unwrap();
    tokio::time::timeout(
        TIMEOUT,
        await_condition(crds, "tmiinstances.tmi.dev", conditions::is_crd_established()),
    )
    .await
    .expect("CRD never established")
    .unwrap();
}

/// Runs the operator in this process for one namespace until the returned sender is used.
fn start_operator(
    client: &Client,
    namespace: &str,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = Config {
        namespaces: vec![namespace.to_owned()],
        resync: Duration::from_secs(2),
        progress_poll: Duration::from_millis(500),
        ..Config::default()
    };
    let task = tokio::spawn(controller::run(
        client.clone(),
        config,
        std::sync::Arc::new(Metrics::default()),
        async {
            let _ = stopped.await;
        },
    ));
    (stop, task)
}

/// Argo CD and kstatus agree with the operator's status through a whole life: created (no status yet),
/// stalled on a missing Secret, Ready, a new spec not yet observed, a rollout that cannot finish, Ready again.
#[tokio::test]
async fn argo_cd_and_kstatus_read_every_stage_of_an_instance() {
    let cp = tmi_e2e::shared();
    let ns = cp.namespace("gitops").await;
    let client = cp.client().await;
    install_crd(&client).await;
    let api: Api<TmiInstance> = Api::namespaced(client.clone(), &ns.name);

    let instance = json!({
        "apiVersion": "tmi.dev/v1alpha1", "kind": "TmiInstance",
        "metadata": { "name": "acme" },
        "spec": { "version": "1.0.0", "database": { "external": { "urlSecretRef": { "name": "db", "key": "url" } } } }
    });
    api.patch(
        "acme",
        &PatchParams::apply("gitops-user"),
        &Patch::Apply(&instance),
    )
    .await
    .unwrap();

    // 1. Applied, no operator yet: nothing may call it healthy.
    let fresh = serde_json::to_value(api.get("acme").await.unwrap()).unwrap();
    assert_eq!(argo_health(&fresh).0, "Progressing");
    assert_eq!(kstatus(&fresh).0, "InProgress");

    let (stop, operator) = start_operator(&client, &ns.name);

    // 2. The database Secret is missing: the operator stalls, and both tools report a failure.
    let stalled = wait_current(&api, "acme", "Stalled", |o| cond_true(o, "Stalled")).await;
    assert_eq!(condition(&stalled, "Stalled").unwrap().1, "SecretNotFound");
    let (argo, message) = argo_health(&stalled);
    assert_eq!(argo, "Degraded");
    assert!(message.starts_with("SecretNotFound"), "{message}");
    assert_eq!(kstatus(&stalled).0, "Failed");

    // 3. The Secret appears: Ready, Healthy, Current.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "db" },
        "stringData": { "url": "postgres://tmi:hunter2@db.example:5432/tmi" }
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    let ready = wait_current(&api, "acme", "Ready", |o| cond_true(o, "Ready")).await;
    assert_eq!(argo_health(&ready).0, "Healthy");
    assert_eq!(kstatus(&ready).0, "Current");

    // 4. A new spec the operator has not seen yet: the old Ready must not be trusted.
    let _ = stop.send(());
    operator.await.unwrap();
    let mut pending = instance.clone();
    pending["spec"]["server"] =
        json!({ "scheduling": { "nodeSelector": { "tmi.dev/no-such-node": "true" } } });
    api.patch(
        "acme",
        &PatchParams::apply("gitops-user"),
        &Patch::Apply(&pending),
    )
    .await
    .unwrap();
    let unobserved = serde_json::to_value(api.get("acme").await.unwrap()).unwrap();
    assert!(!current(&unobserved));
    assert_eq!(argo_health(&unobserved).0, "Progressing");
    assert_eq!(kstatus(&unobserved).0, "InProgress");

    // 5. The operator observes it; the new pods cannot be scheduled, so the rollout stays in progress.
    let (stop, operator) = start_operator(&client, &ns.name);
    let rolling = wait_current(&api, "acme", "Reconciling", |o| cond_true(o, "Reconciling")).await;
    assert_eq!(argo_health(&rolling).0, "Progressing");
    assert_eq!(kstatus(&rolling).0, "InProgress");

    // 6. The user fixes the spec: Ready again.
    api.patch(
        "acme",
        &PatchParams::apply("gitops-user"),
        &Patch::Apply(&instance),
    )
    .await
    .unwrap();
    let ready = wait_current(&api, "acme", "Ready again", |o| cond_true(o, "Ready")).await;
    assert_eq!(argo_health(&ready).0, "Healthy");
    assert_eq!(kstatus(&ready).0, "Current");

    // Never a secret value in what GitOps tools display.
    for obj in [&stalled, &ready] {
        assert!(!obj.to_string().contains("hunter2"));
    }
    let _ = stop.send(());
    operator.await.unwrap();
}

/// The health check's rules on hand-made objects, for the corners a live run does not reach.
#[test]
fn health_check_rules() {
    let base = |status: Value| json!({ "metadata": { "generation": 3 }, "spec": {}, "status": status });
    let cond = |t: &str, s: &str| json!({ "type": t, "status": s, "reason": "R", "message": "m", "observedGeneration": 3 });
    // A condition from an older generation is stale even when observedGeneration is current.
    let mut stale = cond("Ready", "True");
    stale["observedGeneration"] = json!(2);
    assert_eq!(
        argo_health(&base(json!({ "observedGeneration": 3, "conditions": [stale] }))).0,
        "Progressing"
    );
    // Stalled wins over Ready.
    let both =
        json!({ "observedGeneration": 3, "conditions": [cond("Ready", "True"), cond("Stalled", "True")] });
    assert_eq!(argo_health(&base(both)).0, "Degraded");
    // Suspended instances are shown as such.
    let mut suspended = base(json!({ "observedGeneration": 3, "conditions": [cond("Ready", "True")] }));
    suspended["spec"]["suspend"] = json!(true);
    assert_eq!(argo_health(&suspended).0, "Suspended");
    // Ready=False without Stalled is still in progress, as kstatus reads it.
    assert_eq!(
        argo_health(&base(
            json!({ "observedGeneration": 3, "conditions": [cond("Ready", "False")] })
        ))
        .0,
        "Progressing"
    );
}
