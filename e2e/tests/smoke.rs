//! Smoke tests of the local control plane: what the operator's tests rely on must work for real.

#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams, WatchEvent, WatchParams,
};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(90);

/// A Deployment with two replicas becomes Available, with two Ready pods on the kwok node.
#[tokio::test]
async fn deployment_pods_become_ready_on_the_fake_node() {
    let cp = tmi_e2e::shared();
    let ns = cp.namespace("smoke-deploy").await;
    let deployments: Api<Deployment> = Api::namespaced(ns.client.clone(), &ns.name);
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "example.invalid/web:1" }] }
            }
        }
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();

    let available = await_condition(deployments.clone(), "web", |d: Option<&Deployment>| {
        d.and_then(|d| d.status.as_ref())
            .is_some_and(|s| s.available_replicas == Some(2))
    });
    tokio::time::timeout(TIMEOUT, available)
        .await
        .expect("deployment never had 2 available replicas")
        .unwrap();

    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let list = pods.list(&ListParams::default().labels("app=web")).await.unwrap();
    assert_eq!(list.items.len(), 2);
    for pod in &list.items {
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some(tmi_e2e::NODE_NAME));
        let status = pod.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let ready = status
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
    }
}

/// A CRD becomes Established and a custom object of it can be created and read back.
#[tokio::test]
async fn crd_is_served_and_custom_objects_persist() {
    let cp = tmi_e2e::shared();
    let ns = cp.namespace("smoke-crd").await;
    let crds: Api<CustomResourceDefinition> = Api::all(ns.client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": { "name": "widgets.smoke.tmi.dev" },
        "spec": {
            "group": "smoke.tmi.dev",
            "names": { "kind": "Widget", "plural": "widgets", "singular": "widget" },
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": { "spec": { "type": "object",
                        "properties": { "size": { "type": "integer", "minimum": 1 } } } }
                } }
            }]
        }
    }))
    .unwrap();
    crds.patch(
        "widgets.smoke.tmi.dev",
        &PatchParams::apply("tmi-e2e-smoke").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    let established = await_condition(crds, "widgets.smoke.tmi.dev", conditions::is_crd_established());
    tokio::time::timeout(TIMEOUT, established)
        .await
        .expect("CRD never established")
        .unwrap();

    let gvk = GroupVersionKind::gvk("smoke.tmi.dev", "v1", "Widget");
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(ns.client.clone(), &ns.name, &ApiResource::from_gvk(&gvk));
    let widget: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "smoke.tmi.dev/v1", "kind": "Widget",
        "metadata": { "name": "w1" }, "spec": { "size": 3 }
    }))
    .unwrap();
    widgets.create(&PostParams::default(), &widget).await.unwrap();
    assert_eq!(widgets.get("w1").await.unwrap().data["spec"]["size"], 3);

    // The schema is enforced: the API server rejects a size below the minimum.
    let bad: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "smoke.tmi.dev/v1", "kind": "Widget",
        "metadata": { "name": "w2" }, "spec": { "size": 0 }
    }))
    .unwrap();
    let err = widgets.create(&PostParams::default(), &bad).await.unwrap_err();
    assert!(err.to_string().contains("spec.size"), "{err}");
}

/// Server-side apply records the field manager, and a second manager's conflicting apply is refused.
#[tokio::test]
async fn server_side_apply_tracks_field_managers() {
    let cp = tmi_e2e::shared();
    let ns = cp.namespace("smoke-ssa").await;
    let cms: Api<ConfigMap> = Api::namespaced(ns.client.clone(), &ns.name);
    let desired = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "settings" }, "data": { "mode": "a" }
    });
    cms.patch(
        "settings",
        &PatchParams::apply("manager-one"),
        &Patch::Apply(&desired),
    )
    .await
    .unwrap();
    let cm = cms.get("settings").await.unwrap();
    let managers: Vec<_> = cm
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(managers.contains(&"manager-one".to_string()), "{managers:?}");

    let conflicting = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "settings" }, "data": { "mode": "b" }
    });
    let err = cms
        .patch(
            "settings",
            &PatchParams::apply("manager-two"),
            &Patch::Apply(&conflicting),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 409), "{err}");
    assert_eq!(cms.get("settings").await.unwrap().data.unwrap()["mode"], "a");
}

/// A watch started at a list's resourceVersion sees an object's creation, update and deletion, in order.
#[tokio::test]
async fn watch_sees_events() {
    let cp = tmi_e2e::shared();
    let ns = cp.namespace("smoke-watch").await;
    let cms: Api<ConfigMap> = Api::namespaced(ns.client.clone(), &ns.name);
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut events = cms.watch(&WatchParams::default(), &rv).await.unwrap().boxed();

    for n in ["1", "2"] {
        let cm = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "watched" }, "data": { "n": n } });
        cms.patch("watched", &PatchParams::apply("smoke"), &Patch::Apply(&cm))
            .await
            .unwrap();
    }
    cms.delete("watched", &DeleteParams::default()).await.unwrap();

    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = tokio::time::timeout(TIMEOUT, events.try_next())
            .await
            .expect("watch timed out")
            .unwrap();
        match event.expect("watch ended early") {
            WatchEvent::Added(cm) => seen.push(format!("added {}", cm.data.unwrap()["n"])),
            WatchEvent::Modified(cm) => seen.push(format!("modified {}", cm.data.unwrap()["n"])),
            WatchEvent::Deleted(cm) => seen.push(format!("deleted {}", cm.data.unwrap()["n"])),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("watch error: {e:?}"),
        }
    }
    assert_eq!(seen, ["added 1", "modified 2", "deleted 2"]);
}
