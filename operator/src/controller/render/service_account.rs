//! ServiceAccount of the server pods. Pure.
//!
//! The server never talks to the Kubernetes API, so the pods do not mount its token
//! (`automountServiceAccountToken: false`); the dedicated account exists so that RBAC and cloud identity
//! bindings have something narrower than `default` to attach to.

use k8s_openapi::api::core::v1::ServiceAccount;

use crate::controller::{names, validate::ValidInstance};

/// Renders the ServiceAccount.
pub fn render(i: &ValidInstance) -> ServiceAccount {
    ServiceAccount {
        metadata: names::child_meta(i, names::service_account(i)),
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}
