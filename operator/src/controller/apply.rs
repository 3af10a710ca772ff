//! `Desired` → live objects. IO: server-side apply under [`names::FIELD_MANAGER`], one create-once Secret,
//! the create-once migrate Job of an upgrade (and deletion of failed ones), and deletion of owned objects that are no longer wanted (a PodDisruptionBudget; the Ingress, HTTPRoute or
//! Certificate of an exposure that changed or went away).
//!
//! Steady state makes no writes and no requests: before applying, each desired object is compared with the
//! live one in the operator's (label-filtered) watch cache, and skipped when every field the operator sets
//! already has the desired value ([`is_subset`]). Anything else (a changed spec, a drifted field, an object
//! not yet in the cache) is applied. `force` is used because the operator owns these objects; fields other
//! managers set that the operator does not (e.g. an HPA's `replicas`) stay theirs.

use std::fmt::Debug;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use rand::RngCore;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use base64::Engine;

use crate::controller::cluster::OptionalApi;
use crate::controller::render::{Desired, generated_secret, migration_job};
use crate::controller::{Context, Error, names, validate::ValidInstance};
use crate::external::{Certificate, HTTPRoute};

/// What `apply` leaves behind that status needs.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The live Deployment (status included).
    pub deployment: k8s_openapi::api::apps::v1::Deployment,
    /// The live Ingress, when one is wanted.
    pub ingress: Option<Ingress>,
    /// The live HTTPRoute, when one is wanted and the Gateway API is installed.
    pub http_route: Option<HTTPRoute>,
    /// The live Certificate, when one is wanted and cert-manager is installed.
    pub certificate: Option<Certificate>,
}

/// Applies every desired object, in dependency order. With `hold_deployment` (an upgrade waits or migrates,
/// see `upgrade`), a Deployment that exists is left exactly as it is and reported as cached.
pub async fn apply(
    ctx: &Context,
    i: &ValidInstance,
    desired: Desired,
    hold_deployment: bool,
) -> Result<Applied, Error> {
    // No `..`: a new field in `Desired` must be applied here, or this stops compiling.
    let Desired {
        service_account,
        config_map,
        data_volume_claim,
        deployment,
        service,
        pod_disruption_budget,
        ingress,
        http_route,
        certificate,
    } = desired;
    // Pods reference the ServiceAccount, ConfigMap and claim: they go first.
    ssa(ctx, &ctx.stores.service_accounts, service_account).await?;
    ssa(ctx, &ctx.stores.config_maps, config_map).await?;
    if let Some(pvc) = data_volume_claim {
        ssa(ctx, &ctx.stores.data_volume_claims, pvc).await?;
    }
    let live = ctx
        .stores
        .deployments
        .get(&ObjectRef::new(&names::deployment(i)).within(&i.namespace));
    let deployment = match live {
        Some(live) if hold_deployment => live.as_ref().clone(),
        _ => ssa(ctx, &ctx.stores.deployments, deployment).await?,
    };
    ssa(ctx, &ctx.stores.services, service).await?;
    match pod_disruption_budget {
        Some(pdb) => {
            ssa(ctx, &ctx.stores.pod_disruption_budgets, pdb).await?;
        }
        None => {
            let name = names::pod_disruption_budget(i);
            delete_stale(ctx, &ctx.stores.pod_disruption_budgets, i, &name).await?;
        }
    }
    // The certificate before the routes that serve it. An optional API that is not installed gets nothing
    // (status says so); nothing of its kind can exist to clean up either.
    let route = names::route(i);
    let certificate = match certificate {
        Some(c) if ctx.apis.served(OptionalApi::CertManager) => {
            Some(ssa(ctx, &ctx.stores.certificates, c).await?)
        }
        Some(_) => None,
        None => {
            delete_stale(ctx, &ctx.stores.certificates, i, &route).await?;
            None
        }
    };
    let ingress = match ingress {
        Some(ing) => Some(ssa(ctx, &ctx.stores.ingresses, ing).await?),
        None => {
            delete_stale(ctx, &ctx.stores.ingresses, i, &route).await?;
            None
        }
    };
    let http_route = match http_route {
        Some(r) if ctx.apis.served(OptionalApi::Gateway) => Some(ssa(ctx, &ctx.stores.http_routes, r).await?),
        Some(_) => None,
        None => {
            delete_stale(ctx, &ctx.stores.http_routes, i, &route).await?;
            None
        }
    };
    Ok(Applied {
        deployment,
        ingress,
        http_route,
        certificate,
    })
}

/// Applies `obj` unless the cached live object already matches it (same applied hash, and every field still
/// as desired); returns the live object.
async fn ssa<K>(ctx: &Context, store: &Store<K>, mut obj: K) -> Result<K, Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let kind = K::kind(&()).to_string();
    let name = obj.name_any();
    let namespace = obj.namespace().unwrap_or_default();
    let hash = applied_hash(&to_value(&obj, &kind, &name)?);
    obj.annotations_mut()
        .insert(names::APPLIED_HASH_ANNOTATION.to_owned(), hash.clone());
    if let Some(live) = store.get(&ObjectRef::new(&name).within(&namespace)) {
        let (want, have) = (
            to_value(&obj, &kind, &name)?,
            to_value(live.as_ref(), &kind, &name)?,
        );
        let same_desired = live.annotations().get(names::APPLIED_HASH_ANNOTATION) == Some(&hash);
        if same_desired && is_subset(&want, &have) {
            ctx.metrics.apply_skipped(&kind);
            return Ok(live.as_ref().clone());
        }
    }
    ctx.metrics.write(&kind);
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    api.patch(
        &name,
        &PatchParams::apply(names::FIELD_MANAGER).force(),
        &Patch::Apply(&obj),
    )
    .await
    .map_err(|source| Error::Apply { kind, name, source })
}

/// Hash of a desired object (before the annotation is added). serde_json writes struct fields in declaration
/// order and maps sorted, so equal objects hash equally.
fn applied_hash(desired: &Value) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(desired.to_string().as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

fn to_value<K: Serialize>(obj: &K, kind: &str, name: &str) -> Result<Value, Error> {
    serde_json::to_value(obj).map_err(|source| Error::Serialize {
        kind: kind.to_owned(),
        name: name.to_owned(),
        source,
    })
}

/// Whether every field set in `want` has the same value in `have`. Objects may have extra keys in `have`
/// (server defaults, status, other managers); arrays must match element by element.
pub fn is_subset(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w.iter().all(|(k, wv)| {
            h.get(k).is_some_and(|hv| is_subset(wv, hv)) || is_empty(wv) && !h.contains_key(k)
        }),
        (Value::Array(w), Value::Array(h)) => {
            w.len() == h.len() && w.iter().zip(h).all(|(a, b)| is_subset(a, b))
        }
        _ => want == have,
    }
}

/// Empty maps and lists the API server drops on its way to storage (`emptyDir: {}` survives, but e.g. an
/// empty `labels` would not).
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Object(o) => o.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Null => true,
        _ => false,
    }
}

/// Deletes the object `name` of kind `K` if the cache holds one this instance owns.
async fn delete_stale<K>(ctx: &Context, store: &Store<K>, i: &ValidInstance, name: &str) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let kind = K::kind(&()).to_string();
    let cached = store.get(&ObjectRef::<K>::new(name).within(&i.namespace));
    let owned = cached.is_some_and(|o| o.owner_references().iter().any(|r| r.uid == i.uid));
    if !owned {
        return Ok(());
    }
    ctx.metrics.write(&format!("{kind}/delete"));
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &i.namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(Error::Apply {
            kind,
            name: name.to_owned(),
            source,
        }),
    }
}

/// Creates the migrate Job (and applies its ServiceAccount first). A Job that already exists is left alone:
/// its template is immutable, and its name already says which upgrade it is for.
pub async fn create_migration_job(ctx: &Context, i: &ValidInstance, job: Job) -> Result<(), Error> {
    ssa(
        ctx,
        &ctx.stores.service_accounts,
        migration_job::service_account(i),
    )
    .await?;
    let name = job.name_any();
    ctx.metrics.write("Job/create");
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &i.namespace);
    let params = PostParams {
        field_manager: Some(names::FIELD_MANAGER.to_owned()),
        ..Default::default()
    };
    match api.create(&params, &job).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(source) => Err(Error::Apply {
            kind: "Job".into(),
            name,
            source,
        }),
    }
}

/// Deletes this instance's failed migrate Jobs (with their pods), so that trying the same upgrade again
/// runs a new Job.
pub async fn delete_failed_jobs(ctx: &Context, i: &ValidInstance) -> Result<(), Error> {
    for job in failed_jobs(&ctx.stores.jobs, i) {
        let name = job.name_any();
        ctx.metrics.write("Job/delete");
        let api: Api<Job> = Api::namespaced(ctx.client.clone(), &i.namespace);
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => {
                return Err(Error::Apply {
                    kind: "Job".into(),
                    name,
                    source,
                });
            }
        }
    }
    Ok(())
}

/// This instance's migrate Jobs that failed, from the cache.
pub fn failed_jobs(store: &Store<Job>, i: &ValidInstance) -> Vec<std::sync::Arc<Job>> {
    store
        .state()
        .into_iter()
        .filter(|j| j.namespace().as_deref() == Some(i.namespace.as_str()))
        .filter(|j| j.owner_references().iter().any(|r| r.uid == i.uid))
        .filter(|j| job_condition(j, "Failed"))
        .collect()
}

/// Whether the Job has condition `type_` set to True.
pub fn job_condition(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// Creates the generated Secret with a fresh random JWT key if it does not exist yet. Never updates it.
/// Existence is checked in the Secret metadata cache, so steady state costs no request.
pub async fn ensure_generated_secret(ctx: &Context, i: &ValidInstance) -> Result<(), Error> {
    if !i.jwt_generated {
        return Ok(());
    }
    let name = names::generated_secret(i);
    if crate::controller::cluster::secret_exists(ctx, i, &name) {
        return Ok(());
    }
    let mut key = [0u8; 48];
    rand::rng().fill_bytes(&mut key);
    let secret = generated_secret::render(i, base64::engine::general_purpose::STANDARD.encode(key));
    ctx.metrics.write("Secret/create");
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &i.namespace);
    match api
        .create(
            &PostParams {
                field_manager: Some(names::FIELD_MANAGER.to_owned()),
                ..Default::default()
            },
            &secret,
        )
        .await
    {
        Ok(_) => Ok(()),
        // Created by an earlier reconcile the cache has not seen yet: it must not be overwritten.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        // The error names the object only; the body with the key is never part of it.
        Err(source) => Err(Error::Apply {
            kind: "Secret".into(),
            name,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_ignores_server_added_fields() {
        let want = json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}});
        let have = json!({"spec": {"replicas": 1, "progressDeadlineSeconds": 600,
            "template": {"spec": {"containers": [{"name": "a", "image": "x", "terminationMessagePath": "/dev/termination-log"}]}}},
            "status": {"replicas": 1}});
        assert!(is_subset(&want, &have));
    }

    #[test]
    fn subset_detects_drift() {
        let want = json!({"spec": {"replicas": 2, "list": [1, 2]}});
        assert!(!is_subset(
            &want,
            &json!({"spec": {"replicas": 1, "list": [1, 2]}})
        ));
        assert!(!is_subset(&want, &json!({"spec": {"replicas": 2, "list": [1]}})));
        assert!(!is_subset(&want, &json!({"spec": {"list": [1, 2]}})));
        assert!(is_subset(&json!({"a": {}, "b": []}), &json!({})));
    }
}
