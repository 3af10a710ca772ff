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
    let classes = match ingress_classes(ctx).await {
        Ok(classes) => classes,
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

/// IngressClasses as last listed, with the time of the list.
pub type IngressClassMemo = std::sync::Mutex<Option<(std::time::Instant, Arc<Vec<IngressClass>>)>>;

/// How long a list of IngressClasses is reused: they are few, cluster-scoped and rarely change, and a watch
/// would need cluster-wide `watch` for a lookup that only `Auto` presets make.
const INGRESS_CLASSES_TTL: Duration = Duration::from_secs(60);

/// The cluster's IngressClasses: one list a minute at most, whatever the number of instances.
async fn ingress_classes(ctx: &Context) -> Result<Arc<Vec<IngressClass>>, kube::Error> {
    let fresh = |memo: &IngressClassMemo| {
        memo.lock().ok().and_then(|m| {
            m.as_ref()
                .filter(|(at, _)| at.elapsed() < INGRESS_CLASSES_TTL)
                .map(|(_, c)| c.clone())
        })
    };
    if let Some(classes) = fresh(&ctx.ingress_classes) {
        return Ok(classes);
    }
    let api: Api<IngressClass> = Api::all(ctx.client.clone());
    let classes = Arc::new(api.list(&ListParams::default()).await?.items);
    if let Ok(mut memo) = ctx.ingress_classes.lock() {
        *memo = Some((std::time::Instant::now(), classes.clone()));
    }
    Ok(classes)
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

/// Why cert-manager has not issued `cert` yet, from the newest CertificateRequest it made for it (its `Ready`
/// reason and message, e.g. that the issuer does not exist; the Certificate's own condition does not say).
/// Read (uncached, one list) only while the Certificate is not Ready; a failed list only loses the detail.
pub async fn certificate_request_problem(
    ctx: &Context,
    cert: &crate::external::Certificate,
) -> Option<String> {
    let ready = cert
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if ready {
        return None;
    }
    let uid = cert.uid()?;
    let gvk =
        kube::api::GroupVersionKind::gvk(CERT_MANAGER_GROUP, CERT_MANAGER_VERSION, "CertificateRequest");
    let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, "certificaterequests");
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &cert.namespace()?, &resource);
    let list = match api.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(e) => {
            warn!(
                error = &e as &dyn std::error::Error,
                "listing CertificateRequests failed"
            );
            return None;
        }
    };
    request_problem(&uid, &list)
}

/// Pure part of [`certificate_request_problem`].
pub fn request_problem(certificate_uid: &str, requests: &[kube::api::DynamicObject]) -> Option<String> {
    let newest = requests
        .iter()
        .filter(|r| r.owner_references().iter().any(|o| o.uid == certificate_uid))
        .max_by_key(|r| r.metadata.creation_timestamp.clone())?;
    let ready = newest.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready" && c["status"] == "False")?;
    Some(format!(
        "CertificateRequest {}: {}: {}",
        newest.name_any(),
        ready["reason"].as_str().unwrap_or("NotReady"),
        ready["message"].as_str().unwrap_or("")
    ))
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
    fn the_newest_owned_request_explains_the_certificate() {
        let request = |name: &str, owner: &str, at: i64, message: &str| -> kube::api::DynamicObject {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
                "metadata": {
                    "name": name,
                    "creationTimestamp": k8s_openapi::jiff::Timestamp::from_second(at).unwrap().to_string(),
                    "ownerReferences": [{"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "name": "tmi", "uid": owner}]
                },
                "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Pending", "message": message}]}
            }))
            .unwrap()
        };
        let requests = [
            request("tmi-1", "cert", 10, "old"),
            request("tmi-2", "cert", 20, "Referenced \"ClusterIssuer\" not found"),
            request("other-1", "other", 30, "not ours"),
        ];
        let problem = request_problem("cert", &requests).unwrap();
        assert_eq!(
            problem,
            "CertificateRequest tmi-2: Pending: Referenced \"ClusterIssuer\" not found"
        );
        assert!(request_problem("none", &requests).is_none());
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
