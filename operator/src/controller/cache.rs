//! What the watch caches keep of each object (pure): every watch event passes through one of these trims
//! before the reflector stores it, so memory grows with what the operator reads, not with what the API server
//! sends.
//!
//! - **Owned objects** ([`trim_owned`]): `metadata` (without `managedFields` and kubectl's last-applied
//!   annotation), `status` whole (the Deployment's rollout, a Job's conditions, an Ingress's addresses), and of
//!   everything else (`spec`, `data`, …) only the fields the operator's field manager owns, as the object's
//!   own `managedFields` say, read before they are dropped. Those are exactly the fields the apply diff
//!   (`apply::is_subset`) compares: a field another writer took over leaves our set, so the cached object
//!   lacks it, the diff sees a difference and the apply restores it; server defaults (the pod template's
//!   `terminationMessagePath`, `dnsPolicy`, probe timings, …) and other managers' fields are never kept.
//! - **TmiInstances** ([`trim_meta`]): everything but `managedFields` and the last-applied annotation (spec and
//!   status are both read).
//! - **Secrets** ([`trim_secret_meta`]): already metadata-only; of that, the name, namespace, uid and
//!   resourceVersion (existence and change are all the operator asks of a Secret's cache).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::api::PartialObjectMeta;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};

use crate::controller::names;

/// kubectl's client-side apply annotation: a copy of the whole object as last applied, never read.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what no reader of any cache uses: `managedFields` and the last-applied annotation.
pub fn trim_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED_ANNOTATION);
        if a.is_empty() {
            meta.annotations = None;
        }
    }
}

/// Keeps of a Secret's metadata what `cluster::secret_exists`, `inputs` (the resourceVersion of the digest
/// memo) and the Secret → instance mapping read.
pub fn trim_secret_meta<K>(s: &mut PartialObjectMeta<K>) {
    let m = &s.metadata;
    s.metadata = ObjectMeta {
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        ..ObjectMeta::default()
    };
}

/// Trims an owned object to its metadata, its status and the fields the operator applied (see the module
/// doc). An object that does not round-trip through JSON keeps everything but its `managedFields`.
pub fn trim_owned<K>(obj: &mut K)
where
    K: Resource + Serialize + DeserializeOwned,
{
    let owned = owned_fields(obj.meta());
    trim_meta(obj.meta_mut());
    let Ok(Value::Object(mut value)) = serde_json::to_value(&*obj) else {
        return;
    };
    keep_applied(&mut value, &owned);
    if let Ok(trimmed) = serde_json::from_value::<K>(Value::Object(value)) {
        *obj = trimmed;
    }
}

/// The union of the field sets (`fieldsV1`) of the operator's field manager, main resource only.
fn owned_fields(meta: &ObjectMeta) -> Map<String, Value> {
    let mut union = Map::new();
    for entry in meta.managed_fields.iter().flatten() {
        if entry.manager.as_deref() != Some(names::FIELD_MANAGER) || entry.subresource.is_some() {
            continue;
        }
        if let Some(Value::Object(fields)) = entry.fields_v1.as_ref().map(|f| &f.0) {
            merge(&mut union, fields);
        }
    }
    union
}

fn merge(into: &mut Map<String, Value>, from: &Map<String, Value>) {
    for (k, v) in from {
        match (into.get_mut(k), v) {
            (Some(Value::Object(a)), Value::Object(b)) => merge(a, b),
            (Some(_), _) => {}
            (None, _) => {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Top level of an object: identity, metadata and status stay; any other field only as far as `owned` has it.
fn keep_applied(value: &mut Map<String, Value>, owned: &Map<String, Value>) {
    value.retain(|k, v| match k.as_str() {
        "apiVersion" | "kind" | "metadata" | "status" => true,
        _ => match owned.get(&format!("f:{k}")) {
            Some(Value::Object(set)) => {
                prune(v, set);
                true
            }
            _ => false,
        },
    });
}

/// The key fields of a `k:` list element.
type Key = BTreeMap<String, Value>;

/// Keeps in `v` the fields of the field set `set` (`f:<name>` members, `k:<key>` and `v:<value>` list
/// elements). A set with no members below it (`{}` or only `"."`) owns the value whole.
fn prune(v: &mut Value, set: &Map<String, Value>) {
    if set.keys().all(|k| k == ".") {
        return;
    }
    match v {
        Value::Object(map) => map.retain(|k, child| match set.get(&format!("f:{k}")) {
            Some(Value::Object(s)) => {
                prune(child, s);
                true
            }
            _ => false,
        }),
        Value::Array(items) => {
            let keys: Vec<(Key, &Map<String, Value>)> = set
                .iter()
                .filter_map(|(k, s)| {
                    let key = serde_json::from_str(k.strip_prefix("k:")?).ok()?;
                    Some((key, s.as_object()?))
                })
                .collect();
            let values: Vec<(Value, &Map<String, Value>)> = set
                .iter()
                .filter_map(|(k, s)| {
                    Some((serde_json::from_str(k.strip_prefix("v:")?).ok()?, s.as_object()?))
                })
                .collect();
            items.retain_mut(|item| {
                let by_key = keys
                    .iter()
                    .find(|(key, _)| key.iter().all(|(f, want)| item.get(f) == Some(want)));
                if let Some((_, s)) = by_key {
                    prune(item, s);
                    return true;
                }
                values.iter().any(|(value, _)| value == item)
            });
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Secret;
    use serde_json::json;

    /// A Deployment as the API server serves it after the operator applied it: server defaults, another
    /// manager's field (an HPA's replicas), the rollout status.
    fn served() -> Deployment {
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {
                "name": "t", "namespace": "n", "uid": "u", "resourceVersion": "7", "generation": 2,
                "labels": {"app": "t"},
                "annotations": {"tmi.dev/applied-hash": "h", LAST_APPLIED_ANNOTATION: "{\"huge\": true}"},
                "managedFields": [
                    {"manager": names::FIELD_MANAGER, "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {
                        "f:metadata": {"f:annotations": {"f:tmi.dev/applied-hash": {}}, "f:labels": {"f:app": {}}},
                        "f:spec": {"f:selector": {}, "f:template": {"f:metadata": {"f:labels": {"f:app": {}}},
                            "f:spec": {"f:containers": {"k:{\"name\":\"server\"}": {
                                ".": {}, "f:name": {}, "f:image": {}, "f:args": {},
                                "f:ports": {"k:{\"containerPort\":8080,\"protocol\":\"TCP\"}": {
                                    ".": {}, "f:containerPort": {}, "f:name": {}}}}}}}}}},
                    {"manager": "hpa", "operation": "Update", "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:spec": {"f:replicas": {}}}},
                    {"manager": names::FIELD_MANAGER, "operation": "Update", "subresource": "status",
                        "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:replicas": {}}}}
                ]
            },
            "spec": {
                "replicas": 3, "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
                "selector": {"matchLabels": {"app": "t"}},
                "template": {"metadata": {"labels": {"app": "t"}}, "spec": {
                    "dnsPolicy": "ClusterFirst", "restartPolicy": "Always",
                    "containers": [
                        {"name": "server", "image": "tmi:1", "args": ["a", "b"],
                         "imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log",
                         "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}]},
                        {"name": "sidecar", "image": "injected"}
                    ]}}
            },
            "status": {"replicas": 3, "availableReplicas": 3, "observedGeneration": 2}
        }))
        .unwrap()
    }

    #[test]
    fn owned_objects_keep_the_applied_fields_metadata_and_status() {
        let mut d = served();
        trim_owned(&mut d);
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "t", "namespace": "n", "uid": "u", "resourceVersion": "7", "generation": 2,
                    "labels": {"app": "t"}, "annotations": {"tmi.dev/applied-hash": "h"}},
                "spec": {
                    "selector": {"matchLabels": {"app": "t"}},
                    "template": {"metadata": {"labels": {"app": "t"}}, "spec": {"containers": [
                        {"name": "server", "image": "tmi:1", "args": ["a", "b"],
                         "ports": [{"containerPort": 8080, "name": "http"}]}
                    ]}}
                },
                "status": {"replicas": 3, "availableReplicas": 3, "observedGeneration": 2}
            })
        );
    }

    #[test]
    fn a_field_another_writer_took_over_leaves_the_cache_so_the_diff_reapplies_it() {
        // The operator applies the image; someone edits it (and so owns it now).
        let desired =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "server", "image": "tmi:1"}]}}}});
        let mut d = served();
        let c = &mut d
            .spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers[0];
        c.image = Some("evil:1".into());
        let fields = &mut d.metadata.managed_fields.as_mut().unwrap()[0]
            .fields_v1
            .as_mut()
            .unwrap()
            .0;
        fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"server\"}"]
            .as_object_mut()
            .unwrap()
            .remove("f:image");
        trim_owned(&mut d);
        let have = serde_json::to_value(&d).unwrap();
        assert!(!crate::controller::apply::is_subset(&desired, &have));

        let mut untouched = served();
        trim_owned(&mut untouched);
        let have = serde_json::to_value(&untouched).unwrap();
        assert!(crate::controller::apply::is_subset(&desired, &have));
    }

    #[test]
    fn an_object_the_operator_never_applied_keeps_no_spec() {
        let mut d = served();
        d.metadata.managed_fields.as_mut().unwrap().remove(0);
        trim_owned(&mut d);
        assert!(d.spec.is_none());
        assert_eq!(d.status.unwrap().available_replicas, Some(3));
    }

    #[test]
    fn set_lists_keep_the_owned_values() {
        let mut v = json!({"finalizers": ["a", "b"]});
        let set = json!({"f:finalizers": {"v:\"a\"": {}}});
        prune(&mut v, set.as_object().unwrap());
        assert_eq!(v, json!({"finalizers": ["a"]}));
    }

    #[test]
    fn secrets_keep_identity_and_version_only() {
        let mut s: PartialObjectMeta<Secret> = serde_json::from_value(json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": "db", "namespace": "n", "uid": "u", "resourceVersion": "3",
                "labels": {"a": "b"}, "annotations": {LAST_APPLIED_ANNOTATION: "{\"data\": \"secret\"}"}}
        }))
        .unwrap();
        trim_secret_meta(&mut s);
        assert_eq!(
            serde_json::to_value(&s.metadata).unwrap(),
            json!({"name": "db", "namespace": "n", "uid": "u", "resourceVersion": "3"})
        );
    }
}
