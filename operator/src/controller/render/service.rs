//! ClusterIP Service in front of the server pods. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::controller::{names, validate::ValidInstance};

/// Renders the Service: port 80 (`http`) to the container's `http` port, with `annotations` (a proxy's
/// per-Service settings, e.g. Traefik's sticky cookie).
pub fn render(i: &ValidInstance, annotations: BTreeMap<String, String>) -> Service {
    let mut metadata = names::child_meta(i, names::service(i));
    if !annotations.is_empty() {
        metadata.annotations = Some(annotations);
    }
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(names::selector_labels(i)),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                port: names::SERVICE_PORT,
                target_port: Some(IntOrString::String("http".to_owned())),
                protocol: Some("TCP".to_owned()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}
