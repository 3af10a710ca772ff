//! What the cluster offers an instance's exposure: whether the optional APIs (Gateway API, cert-manager) are
//! installed, and which controller serves an IngressClass. IO: API discovery and IngressClass lists.
//!
//! Clusters without cert-manager or the Gateway API are normal. The operator neither crashes nor loops on
//! errors there: it asks discovery once a minute (one cheap request, [`wait_for_api`]), watches the API's
//! objects only once it is served, and meanwhile reports what is missing in a condition.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::networking::v1::IngressClass;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use tracing::{info, warn};

use crate::controller::Context;
use crate::controller::render::ingress::preset_for_controller;
use crate::controller::validate::{Route, ValidInstance};
use crate::crd::IngressController;
use crate::external::{CERT_MANAGER_GROUP, CERT_MANAGER_VERSION, GATEWAY_GROUP, GATEWAY_VERSION};

/// The annotation marking the cluster's default IngressClass.
const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// Whether each optional API is served, as last seen by discovery.
#[derive(Debug, Default)]
pub struct OptionalApis {
    /// `gateway.networking.k8s.io/v1` serves `httproutes`.
    pub gateway: AtomicBool,
    /// `cert-manager.io/v1` serves `certificates`.
    pub cert_manager: AtomicBool,
}

/// An optional API the operator may write to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionalApi {
    /// Gateway API `HTTPRoute`.
    Gateway,
    /// cert-manager `Certificate`.
    CertManager,
}

impl OptionalApi {
    fn group_version(self) -> String {
        match self {
            OptionalApi::Gateway => format!("{GATEWAY_GROUP}/{GATEWAY_VERSION}"),
            OptionalApi::CertManager => format!("{CERT_MANAGER_GROUP}/{CERT_MANAGER_VERSION}"),
        }
    }
    fn plural(self) -> &'static str {
        match self {
            OptionalApi::Gateway => "httproutes",
            OptionalApi::CertManager => "certificates",
        }
    }
    fn flag(self, apis: &OptionalApis) -> &AtomicBool {
        match self {
            OptionalApi::Gateway => &apis.gateway,
            OptionalApi::CertManager => &apis.cert_manager,
        }
    }
}

impl OptionalApis {
    /// Whether `api` was served at the last look.
    pub fn served(&self, api: OptionalApi) -> bool {
        api.flag(self).load(Ordering::Relaxed)
    }
}

/// Returns once `api` is served, asking discovery every `interval` until then, and records it in `apis`.
pub async fn wait_for_api(client: Client, apis: Arc<OptionalApis>, api: OptionalApi, interval: Duration) {
    let gv = api.group_version();
    let mut logged = false;
    loop {
        match client.list_api_group_resources(&gv).await {
            Ok(list) if list.resources.iter().any(|r| r.name == api.plural()) => {
                info!(api = %gv, "optional API served; watching it");
                api.flag(&apis).store(true, Ordering::Relaxed);
                return;
            }
            Ok(_) | Err(kube::Error::Api(_)) => {
                if !logged {
                    info!(api = %gv, "optional API not installed; instances that need it report so");
                    logged = true;
                }
            }
            Err(e) => warn!(api = %gv, error = &e as &dyn std::error::Error, "API discovery failed"),
        }
        tokio::time::sleep(interval).await;
    }
}

/// The Ingress controller preset for the instance, and a note for its status when `Auto` found no preset.
/// `None` when the instance has no Ingress.
pub async fn ingress_preset(ctx: &Context, i: &ValidInstance) -> (Option<IngressController>, Option<String>) {
    let Route::Ingress {
        class_name,
        controller,
        ..
    } = &i.exposure.route
    else {
        return (None, None);
    };
    if *controller != IngressController::Auto {
        return (Some(*controller), None);
    }
    // IngressClasses are few and cluster-scoped: one list, no cache.
    let api: Api<IngressClass> = Api::all(ctx.client.clone());
    let classes = match api.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(e) => {
            warn!(
                error = &e as &dyn std::error::Error,
                "listing IngressClasses failed"
            );
            return (
                Some(IngressController::Generic),
                Some(format!(
                    "the IngressClasses could not be read ({}), so no controller preset applies; set spec.exposure.ingress.controller",
                    short_error(&e)
                )),
            );
        }
    };
    let (preset, note) = preset_from_classes(class_name.as_deref(), &classes);
    (Some(preset), note)
}

/// Pure part of [`ingress_preset`]: the class named `class_name` (or the default class) → its preset.
pub fn preset_from_classes(
    class_name: Option<&str>,
    classes: &[IngressClass],
) -> (IngressController, Option<String>) {
    let class = match class_name {
        Some(name) => classes.iter().find(|c| c.name_any() == name),
        None => classes
            .iter()
            .find(|c| c.annotations().get(DEFAULT_CLASS_ANNOTATION).map(String::as_str) == Some("true")),
    };
    let described = class_name.map_or_else(
        || "the default IngressClass".to_owned(),
        |n| format!("IngressClass {n:?}"),
    );
    let Some(class) = class else {
        return (
            IngressController::Generic,
            Some(format!(
                "{described} does not exist, so no controller preset applies"
            )),
        );
    };
    let controller = class
        .spec
        .as_ref()
        .and_then(|s| s.controller.clone())
        .unwrap_or_default();
    match preset_for_controller(&controller) {
        Some(preset) => (preset, None),
        None => (
            IngressController::Generic,
            Some(format!(
                "{described} is served by {controller:?}, which has no preset: WebSocket timeouts and affinity are not set (set spec.exposure.ingress.controller or annotations)"
            )),
        ),
    }
}

/// A Kubernetes error's status message, without request details.
fn short_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} {}", s.code, s.reason),
        other => other.to_string(),
    }
}

/// Whether a Secret named `name` exists in the instance's namespace (from the metadata cache; no request).
pub fn secret_exists(ctx: &Context, i: &ValidInstance, name: &str) -> bool {
    ctx.stores
        .secrets_meta
        .get(&kube::runtime::reflector::ObjectRef::new(name).within(&i.namespace))
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::networking::v1::IngressClassSpec;
    use kube::api::ObjectMeta;

    fn class(name: &str, controller: &str, default: bool) -> IngressClass {
        IngressClass {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: default
                    .then(|| [(DEFAULT_CLASS_ANNOTATION.to_owned(), "true".to_owned())].into()),
                ..Default::default()
            },
            spec: Some(IngressClassSpec {
                controller: Some(controller.into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn auto_reads_the_named_or_default_class() {
        let classes = [
            class("nginx", "k8s.io/ingress-nginx", false),
            class("traefik", "traefik.io/ingress-controller", true),
            class("hap", "haproxy.org/ingress-controller/haproxy", false),
            class("alb", "ingress.k8s.aws/alb", false),
            class("other", "example.com/proxy", false),
        ];
        assert_eq!(
            preset_from_classes(Some("nginx"), &classes).0,
            IngressController::Nginx
        );
        assert_eq!(preset_from_classes(None, &classes).0, IngressController::Traefik);
        assert_eq!(
            preset_from_classes(Some("hap"), &classes).0,
            IngressController::HAProxy
        );
        assert_eq!(
            preset_from_classes(Some("alb"), &classes).0,
            IngressController::Alb
        );
        let (preset, note) = preset_from_classes(Some("other"), &classes);
        assert_eq!(preset, IngressController::Generic);
        assert!(note.unwrap().contains("example.com/proxy"));
        let (preset, note) = preset_from_classes(Some("missing"), &classes);
        assert_eq!(preset, IngressController::Generic);
        assert!(note.unwrap().contains("\"missing\" does not exist"));
        let (_, note) = preset_from_classes(None, &classes[..1]);
        assert!(note.unwrap().contains("default IngressClass"));
    }
}
