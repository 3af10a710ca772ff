//! Helpers shared by the e2e test binaries: reading a TmiInstance's status as JSON and waiting for it.

#![allow(dead_code, clippy::unwrap_used)] // each test binary uses part of it; a panic is a test failure

pub mod tmi;

use std::process::Output;
use std::time::{Duration, Instant};

use kube::api::Api;
use serde_json::Value;
use tmi_operator::crd::TmiInstance;

pub const TIMEOUT: Duration = Duration::from_secs(90);

/// Whether the status describes the current spec.
pub fn current(obj: &Value) -> bool {
    obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
}

/// A condition's (status, reason).
pub fn condition(obj: &Value, type_: &str) -> Option<(String, String)> {
    let c = obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?;
    Some((
        c["status"].as_str()?.to_owned(),
        c["reason"].as_str().unwrap_or_default().to_owned(),
    ))
}

pub fn cond_true(obj: &Value, type_: &str) -> bool {
    condition(obj, type_).is_some_and(|(s, _)| s == "True")
}

/// Polls the instance until its status is current and `pred` holds; on timeout, panics with the instance
/// and its Deployments, ReplicaSets and pods.
pub async fn wait_current(
    api: &Api<TmiInstance>,
    name: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let obj = serde_json::to_value(api.get(name).await.unwrap()).unwrap();
        if current(&obj) && pred(&obj) {
            return obj;
        }
        if started.elapsed() > TIMEOUT {
            let ns = obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let out = tmi_e2e::shared()
                .kubectl()
                .args(["get", "deploy,rs,pods", "-o", "wide", "-n", &ns])
                .output()
                .unwrap();
            panic!(
                "timed out waiting for {what}; last seen:\n{obj:#}\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The standard output of a command that must have succeeded.
pub fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An API for objects of another project's kind (`group/v1`), untyped.
pub fn dynamic_api(
    client: &kube::Client,
    namespace: &str,
    group: &str,
    kind: &str,
    plural: &str,
) -> Api<kube::api::DynamicObject> {
    let gvk = kube::api::GroupVersionKind::gvk(group, "v1", kind);
    let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, plural);
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// Waits until the object `name` is gone (deleted by the operator).
pub async fn wait_gone<K>(api: &Api<K>, name: &str)
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let started = Instant::now();
    while api.get_opt(name).await.unwrap().is_some() {
        assert!(started.elapsed() < TIMEOUT, "{name} was not deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
