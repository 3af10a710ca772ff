//! The cert-manager `Certificate` for `spec.exposure.tls.issuerRef`. Pure.
//!
//! An explicit Certificate rather than ingress-shim's annotation: its readiness, reason and expiry are
//! observable (`CertificateReady`), and it works the same for an Ingress and for a Gateway's listener.

use crate::controller::names;
use crate::controller::validate::{Tls, ValidInstance};
use crate::crd::IssuerKind;
use crate::external::{CERT_MANAGER_GROUP, Certificate, CertificateIssuerRef, CertificateSpec};

/// Renders the Certificate, or `None` without a cert-manager issuer.
pub fn render(i: &ValidInstance) -> Option<Certificate> {
    let Some(Tls::Issuer(issuer)) = &i.exposure.tls else {
        return None;
    };
    let host = i.hostname.clone()?;
    let mut cert = Certificate::new(
        &names::route(i),
        CertificateSpec {
            secret_name: names::tls_secret(i),
            dns_names: vec![host],
            issuer_ref: CertificateIssuerRef {
                name: issuer.name.clone(),
                kind: match issuer.kind {
                    IssuerKind::Issuer => "Issuer",
                    IssuerKind::ClusterIssuer => "ClusterIssuer",
                }
                .to_owned(),
                group: CERT_MANAGER_GROUP.to_owned(),
            },
            secret_template: None,
        },
    );
    cert.metadata = names::child_meta(i, names::route(i));
    Some(cert)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::test_support::{GATEWAY, INGRESS, valid_from_yaml};

    #[test]
    fn certificate_for_the_hostname_from_the_issuer() {
        let v = serde_json::to_value(render(&valid_from_yaml(INGRESS)).unwrap()).unwrap();
        assert_eq!(v["apiVersion"], "cert-manager.io/v1");
        assert_eq!(v["metadata"]["name"], "acme");
        assert_eq!(
            v["spec"],
            serde_json::json!({
                "secretName": "acme-tls",
                "dnsNames": ["tmi.example.com"],
                "issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer", "group": "cert-manager.io"}
            })
        );
        assert!(
            render(&valid_from_yaml(GATEWAY)).is_none(),
            "an existing Secret needs no Certificate"
        );
    }
}
