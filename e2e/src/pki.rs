//! Certificates and keys for one control-plane run: a CA, the API server's serving certificate, an admin
//! client certificate (group `system:masters`) and the service-account signing key. Pure: returns PEM strings;
//! the caller writes them. Every run generates its own, so no key material is ever committed or reused.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

/// PEM material for one control plane.
pub struct Pki {
    pub ca_cert: String,
    pub serving_cert: String,
    pub serving_key: String,
    pub admin_cert: String,
    pub admin_key: String,
    /// Private key the API server signs service-account tokens with (and kube-controller-manager uses).
    pub service_account_key: String,
    /// Its public half, which the API server verifies tokens with.
    pub service_account_pub: String,
}

/// The first address of the service range we give the API server: the `kubernetes` Service's ClusterIP.
/// Pods on a real node reach the API server through it (kube-proxy forwards it to the node's address).
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

/// Generates a run's PKI; `extra_ips` are further addresses of the API server (the real node's).
pub fn generate(extra_ips: &[Ipv4Addr]) -> anyhow::Result<Pki> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tmi-e2e-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?).context("self-signing the CA")?;

    let mut serving = CertificateParams::new(vec![
        "localhost".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        "kubernetes.default.svc.cluster.local".to_string(),
    ])?;
    serving
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    serving
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(KUBERNETES_SERVICE_IP)));
    for ip in extra_ips {
        serving
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(*ip)));
    }
    serving
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    serving.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let serving_key = KeyPair::generate()?;
    let serving_cert = serving
        .signed_by(&serving_key, &ca)
        .context("signing the serving certificate")?;

    let mut admin = CertificateParams::new(Vec::<String>::new())?;
    admin.distinguished_name.push(DnType::CommonName, "tmi-e2e-admin");
    admin
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    admin.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let admin_key = KeyPair::generate()?;
    let admin_cert = admin
        .signed_by(&admin_key, &ca)
        .context("signing the admin certificate")?;

    let sa = KeyPair::generate()?;
    Ok(Pki {
        ca_cert: ca.pem(),
        serving_cert: serving_cert.pem(),
        serving_key: serving_key.serialize_pem(),
        admin_cert: admin_cert.pem(),
        admin_key: admin_key.serialize_pem(),
        service_account_pub: sa.public_key_pem(),
        service_account_key: sa.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_run_gets_fresh_keys() {
        let a = generate(&[]).unwrap();
        let b = generate(&[]).unwrap();
        assert_ne!(a.admin_key, b.admin_key);
        assert_ne!(a.service_account_key, b.service_account_key);
        assert!(a.ca_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(a.service_account_pub.starts_with("-----BEGIN PUBLIC KEY-----"));
    }
}
