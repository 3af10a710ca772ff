//! `ValidInstance` + resolved inputs → every object the instance needs. Pure: no client, clock or randomness.
//!
//! One file per Kubernetes kind. The generated Secret is not part of [`Desired`]: it is created once with a
//! random value (see `generated_secret.rs` and `apply::ensure_generated_secret`).

pub mod certificate;
pub mod config_map;
pub mod deployment;
pub mod generated_secret;
pub mod http_route;
pub mod ingress;
pub mod migration_job;
pub mod persistent_volume_claim;
pub mod pod_disruption_budget;
pub mod service;
pub mod service_account;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::crd::IngressController;
use crate::external::{Certificate, HTTPRoute};
use sha2::{Digest, Sha256};

use crate::controller::{inputs::Inputs, validate::ValidInstance};

/// Every object the operator applies for one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// The server's ServiceAccount.
    pub service_account: ServiceAccount,
    /// Non-secret environment.
    pub config_map: ConfigMap,
    /// SQLite volume, for `database.sqlite` only.
    pub data_volume_claim: Option<PersistentVolumeClaim>,
    /// The server Deployment.
    pub deployment: Deployment,
    /// The Service in front of it.
    pub service: Service,
    /// PDB, for replicas > 1 only.
    pub pod_disruption_budget: Option<PodDisruptionBudget>,
    /// The Ingress, for `exposure.type: Ingress`.
    pub ingress: Option<Ingress>,
    /// The HTTPRoute, for `exposure.type: Gateway`.
    pub http_route: Option<HTTPRoute>,
    /// The cert-manager Certificate, for `exposure.tls.issuerRef`.
    pub certificate: Option<Certificate>,
}

/// The desired objects and the inputs hash their pod template carries (computed once, here; the
/// controller reports the same value in the status).
#[derive(Clone, Debug)]
pub struct Rendered {
    pub desired: Desired,
    pub inputs_hash: String,
}

/// Renders the desired objects.
pub fn render(i: &ValidInstance, inputs: &Inputs) -> Desired {
    render_with_hash(i, inputs).desired
}

/// Renders the desired objects and returns the inputs hash with them.
pub fn render_with_hash(i: &ValidInstance, inputs: &Inputs) -> Rendered {
    let config_map = config_map::render(i);
    let hash = inputs_hash(inputs, &config_map);
    let controller = inputs.ingress_controller.unwrap_or(IngressController::Generic);
    let desired = Desired {
        service_account: service_account::render(i),
        data_volume_claim: persistent_volume_claim::render(i),
        deployment: deployment::render(i, &hash),
        service: service::render(i, ingress::service_annotations(controller, &i.exposure)),
        pod_disruption_budget: pod_disruption_budget::render(i),
        ingress: ingress::render(i, controller),
        http_route: http_route::render(i),
        certificate: certificate::render(i),
        config_map,
    };
    Rendered {
        desired,
        inputs_hash: hash,
    }
}

/// SHA-256 over the digest of every referenced Secret/ConfigMap key and over the rendered ConfigMap.
/// Only digests enter it, so the annotation reveals nothing about secret values.
fn inputs_hash(inputs: &Inputs, config_map: &ConfigMap) -> String {
    let mut h = Sha256::new();
    for (reference, digest) in &inputs.digests {
        h.update(reference.as_bytes());
        h.update([0]);
        h.update(digest.as_bytes());
        h.update([0]);
    }
    for (k, v) in config_map.data.iter().flatten() {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    format!("sha256:{:x}", h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::names;
    use crate::controller::test_support::{FULL, SQLITE, valid_from_yaml};
    use kube::Resource;

    fn check<K: Resource<DynamicType = ()>>(obj: &K, name: String) {
        let m = obj.meta();
        assert_eq!(m.name.as_deref(), Some(name.as_str()), "{}", K::kind(&()));
        assert_eq!(m.namespace.as_deref(), Some("tenant"));
        let labels = m.labels.as_ref().unwrap();
        assert_eq!(labels[names::MANAGED_BY_LABEL], names::MANAGED_BY);
        let owners = m.owner_references.as_ref().unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].controller, Some(true));
        assert_eq!(owners[0].kind, "TmiInstance");
    }

    /// Every rendered object carries the owner reference, the managed-by label and a name from `names`.
    #[test]
    fn every_object_is_owned_labelled_and_named() {
        for yaml in [FULL, SQLITE] {
            let i = valid_from_yaml(yaml);
            let d = render(&i, &Inputs::default());
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
            } = &d;
            for route in ingress.iter() {
                check(route, names::route(&i));
            }
            for route in http_route.iter() {
                check(route, names::route(&i));
            }
            for cert in certificate.iter() {
                check(cert, names::route(&i));
            }
            check(service_account, names::service_account(&i));
            check(config_map, names::config_map(&i));
            check(deployment, names::deployment(&i));
            check(service, names::service(&i));
            if let Some(pdb) = pod_disruption_budget {
                check(pdb, names::pod_disruption_budget(&i));
            }
            if let Some(pvc) = data_volume_claim {
                check(pvc, names::data_volume_claim(&i));
            }
            let secret = generated_secret::render(&i, "x".into());
            check(&secret, names::generated_secret(&i));
        }
    }

    #[test]
    fn hash_moves_with_inputs_and_config() {
        let i = valid_from_yaml(FULL);
        let cm = config_map::render(&i);
        let mut inputs = Inputs::default();
        inputs.digests.insert("secret/db/url".into(), "aaaa".into());
        let h1 = inputs_hash(&inputs, &cm);
        inputs.digests.insert("secret/db/url".into(), "bbbb".into());
        let h2 = inputs_hash(&inputs, &cm);
        assert_ne!(h1, h2);
        let mut cm2 = cm.clone();
        cm2.data.as_mut().unwrap().insert("X".into(), "1".into());
        assert_ne!(h2, inputs_hash(&inputs, &cm2));
        assert_eq!(h2, inputs_hash(&inputs, &cm), "deterministic");
    }

    /// The pod template and the status carry the same hash: the one `render` computed.
    #[test]
    fn the_pod_template_carries_the_rendered_hash() {
        let i = valid_from_yaml(FULL);
        let mut inputs = Inputs::default();
        inputs.digests.insert("secret/db/url".into(), "aaaa".into());
        let r = render_with_hash(&i, &inputs);
        let annotations = r
            .desired
            .deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .unwrap();
        assert!(r.inputs_hash.starts_with("sha256:"));
        assert_eq!(
            annotations.get(names::INPUTS_HASH_ANNOTATION),
            Some(&r.inputs_hash)
        );
    }
}
