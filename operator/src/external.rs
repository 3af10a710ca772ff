//! Other projects' custom resources that the operator creates and reads: the Gateway API `HTTPRoute` and
//! cert-manager's `Certificate`. Types only, no IO.
//!
//! `HTTPRoute`'s spec and status are the `gateway-api` crate's (kube-rs's gateway-api-rs, experimental
//! channel for `sessionPersistence`). That crate is built on kube 4, whose `Resource` trait the operator's kube 5
//! client does not accept, so the resource itself is declared here around the crate's spec and status types.
//! cert-manager publishes no Rust types: [`Certificate`] declares the fields the operator sets and the status
//! it reads, with cert-manager's names; unknown fields are ignored when reading.

pub use gateway_api::experimental::httproutes as route;
use gateway_api::experimental::httproutes::{HttpRouteSpec, HttpRouteStatus};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Gateway API group.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// Gateway API version of `HTTPRoute` the operator writes.
pub const GATEWAY_VERSION: &str = "v1";
/// cert-manager's API group.
pub const CERT_MANAGER_GROUP: &str = "cert-manager.io";
/// cert-manager's API version.
pub const CERT_MANAGER_VERSION: &str = "v1";

/// The spec of a Gateway API `HTTPRoute` (`gateway.networking.k8s.io/v1`), as the gateway-api crate types it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "HTTPRoute",
    plural = "httproutes",
    namespaced,
    status = "HttpRouteStatus",
    derive = "PartialEq"
)]
pub struct RouteSpec {
    /// The route.
    #[serde(flatten)]
    pub route: HttpRouteSpec,
}

/// The part of a cert-manager `Certificate` (`cert-manager.io/v1`) the operator sets.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[kube(
    group = "cert-manager.io",
    version = "v1",
    kind = "Certificate",
    plural = "certificates",
    namespaced,
    status = "CertificateStatus",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSpec {
    /// Secret the key pair is written to.
    pub secret_name: String,
    /// Names in the certificate.
    pub dns_names: Vec<String>,
    /// The issuer.
    pub issuer_ref: CertificateIssuerRef,
    /// Labels and annotations for the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<SecretTemplate>,
}

/// `spec.issuerRef` of a Certificate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct CertificateIssuerRef {
    /// Issuer name.
    pub name: String,
    /// `Issuer` or `ClusterIssuer`.
    pub kind: String,
    /// `cert-manager.io`.
    pub group: String,
}

/// `spec.secretTemplate` of a Certificate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplate {
    /// Labels for the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
}

/// The status fields of a Certificate the operator reads.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    /// `Ready` and `Issuing`, each with cert-manager's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<CertificateCondition>>,
    /// Expiry of the current certificate (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// When cert-manager will renew it (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<String>,
}

/// A cert-manager condition (its own shape: `lastTransitionTime` and `observedGeneration` optional).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct CertificateCondition {
    /// `Ready` or `Issuing`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The Certificate generation the condition describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A condition of an `HTTPRoute`'s parent status (k8s-openapi 0.28's type, as the gateway-api crate uses it).
pub type RouteCondition = k8s_openapi_028::apimachinery::pkg::apis::meta::v1::Condition;
