//! The exposure's part of the status: `ExposureReady`, `CertificateReady` and `status.url`, from what the
//! cluster shows of the Ingress or HTTPRoute and the Certificate. Pure; `status::compute` calls it.
//!
//! - `ExposureReady`: an Ingress is ready once its controller published an address; an HTTPRoute once every
//!   Gateway it names reports it `Accepted` with its references resolved (the controller's own reason and
//!   message when it refuses). A missing Gateway API, or a missing TLS Secret, says so.
//! - `CertificateReady` (cert-manager issuer only): cert-manager's `Ready` condition, its reason and message,
//!   with the expiry and renewal time when ready.
//! - `status.url`: `https://<hostname>` when TLS is configured and both are ready, `http://<hostname>` when
//!   exposed without TLS and the route is ready, the in-cluster Service URL otherwise.

use k8s_openapi::api::networking::v1::Ingress;

use crate::controller::validate::{Route, Tls, ValidInstance};
use crate::crd::GatewayParentRef;
use crate::external::{Certificate, HTTPRoute};

/// The route (Ingress/HTTPRoute) is served.
pub const EXPOSURE_READY: &str = "ExposureReady";
/// cert-manager issued the certificate.
pub const CERTIFICATE_READY: &str = "CertificateReady";

/// What the cluster shows of the instance's exposure, as read by the reconcile.
#[derive(Debug, Clone, Copy, Default)]
pub struct Observed<'a> {
    /// The live Ingress.
    pub ingress: Option<&'a Ingress>,
    /// The live HTTPRoute.
    pub http_route: Option<&'a HTTPRoute>,
    /// The live Certificate.
    pub certificate: Option<&'a Certificate>,
    /// Whether the Gateway API is served.
    pub gateway_api: bool,
    /// Whether cert-manager's API is served.
    pub cert_manager: bool,
    /// Whether the user's TLS Secret (`tls.secretName`) exists.
    pub tls_secret_present: bool,
    /// A remark on the Ingress preset (e.g. an IngressClass without one).
    pub note: Option<&'a str>,
    /// The Ingress preset in effect.
    pub ingress_controller: Option<crate::crd::IngressController>,
    /// What the Certificate's newest CertificateRequest says, while it is not Ready.
    pub certificate_request: Option<&'a str>,
}

/// One exposure condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// `ExposureReady` or `CertificateReady`.
    pub type_: &'static str,
    /// Whether it holds.
    pub ok: bool,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// When not ok: whether only a human can fix it (`Stalled`) rather than time (`Reconciling`).
    pub stalled: bool,
}

fn check(type_: &'static str, ok: bool, reason: &str, message: String, stalled: bool) -> Check {
    Check {
        type_,
        ok,
        reason: reason.to_owned(),
        message,
        stalled,
    }
}

/// The exposure conditions of `v` (none without exposure), and `status.url`.
pub fn evaluate(v: &ValidInstance, o: &Observed<'_>) -> (Vec<Check>, String) {
    let Some(host) = v.hostname.as_deref() else {
        return (Vec::new(), v.service_url.clone());
    };
    let mut checks = Vec::new();
    let route = match (&v.exposure.route, &v.exposure.tls) {
        (Route::None, _) => return (Vec::new(), v.service_url.clone()),
        (Route::Gateway { .. }, _) if !o.gateway_api => check(
            EXPOSURE_READY,
            false,
            "GatewayAPINotInstalled",
            "spec.exposure.type is Gateway, but the cluster does not serve gateway.networking.k8s.io/v1 HTTPRoutes: install the Gateway API CRDs and a Gateway controller".to_owned(),
            true,
        ),
        (_, Some(Tls::Secret(secret))) if !o.tls_secret_present => check(
            EXPOSURE_READY,
            false,
            "TLSSecretNotFound",
            format!("TLS Secret {secret:?} (spec.exposure.tls.secretName) does not exist"),
            true,
        ),
        (Route::Ingress { .. }, _) => ingress_check(o),
        (Route::Gateway { parent_refs }, _) => route_check(v, parent_refs, o),
    };
    let route_ok = route.ok;
    checks.push(route);
    let tls_ok = match &v.exposure.tls {
        None => None,
        Some(Tls::Secret(_)) => Some(o.tls_secret_present),
        Some(Tls::Issuer(_)) => {
            let c = certificate_check(o);
            let ok = c.ok;
            checks.push(c);
            Some(ok)
        }
    };
    let url = match (route_ok, tls_ok) {
        (true, None) => format!("http://{host}"),
        (true, Some(true)) => format!("https://{host}"),
        _ => v.service_url.clone(),
    };
    (checks, url)
}

fn with_note(message: String, o: &Observed<'_>) -> String {
    match o.note {
        Some(n) => format!("{message}; {n}"),
        None => message,
    }
}

fn ingress_check(o: &Observed<'_>) -> Check {
    let addresses: Vec<String> = o
        .ingress
        .and_then(|i| i.status.as_ref())
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|a| a.ip.clone().or_else(|| a.hostname.clone()))
        .collect();
    if addresses.is_empty() {
        check(
            EXPOSURE_READY,
            false,
            "AddressPending",
            with_note(
                "waiting for the ingress controller to publish an address for the Ingress".to_owned(),
                o,
            ),
            false,
        )
    } else {
        check(
            EXPOSURE_READY,
            true,
            "AddressAssigned",
            with_note(format!("Ingress served at {}", addresses.join(", ")), o),
            false,
        )
    }
}

fn same_parent(
    v: &ValidInstance,
    want: &GatewayParentRef,
    have: &crate::external::route::HttpRouteStatusParentsParentRef,
) -> bool {
    let ns = want.namespace.as_deref().unwrap_or(&v.namespace);
    have.name == want.name
        && have.namespace.as_deref().unwrap_or(&v.namespace) == ns
        && (want.section_name.is_none() || have.section_name == want.section_name)
}

fn route_check(v: &ValidInstance, parents: &[GatewayParentRef], o: &Observed<'_>) -> Check {
    let statuses = o
        .http_route
        .and_then(|r| r.status.as_ref())
        .map(|s| s.parents.as_slice())
        .unwrap_or_default();
    let mut waiting = Vec::new();
    for want in parents {
        let gateway = format!(
            "Gateway {}/{}",
            want.namespace.as_deref().unwrap_or(&v.namespace),
            want.name
        );
        let Some(status) = statuses.iter().find(|s| same_parent(v, want, &s.parent_ref)) else {
            waiting.push(gateway);
            continue;
        };
        for type_ in ["Accepted", "ResolvedRefs"] {
            if let Some(c) = status.conditions.iter().find(|c| c.type_ == type_)
                && c.status == "False"
            {
                return check(
                    EXPOSURE_READY,
                    false,
                    &c.reason,
                    format!(
                        "{gateway} ({}): {type_}=False: {}",
                        status.controller_name, c.message
                    ),
                    true,
                );
            }
        }
        if !status
            .conditions
            .iter()
            .any(|c| c.type_ == "Accepted" && c.status == "True")
        {
            waiting.push(gateway);
        }
    }
    if waiting.is_empty() {
        check(
            EXPOSURE_READY,
            true,
            "Accepted",
            format!("HTTPRoute accepted by {} Gateway(s)", parents.len()),
            false,
        )
    } else {
        check(
            EXPOSURE_READY,
            false,
            "Pending",
            format!("waiting for {} to accept the HTTPRoute", waiting.join(", ")),
            false,
        )
    }
}

fn certificate_check(o: &Observed<'_>) -> Check {
    if !o.cert_manager {
        return check(
            CERTIFICATE_READY,
            false,
            "CertManagerNotInstalled",
            "spec.exposure.tls.issuerRef needs cert-manager, but the cluster does not serve cert-manager.io/v1 Certificates".to_owned(),
            true,
        );
    }
    let status = o.certificate.and_then(|c| c.status.as_ref());
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    match ready {
        Some(c) if c.status == "True" => {
            let s = status.cloned().unwrap_or_default();
            let mut message = "certificate issued".to_owned();
            if let Some(t) = &s.not_after {
                message.push_str(&format!(", valid until {t}"));
            }
            if let Some(t) = &s.renewal_time {
                message.push_str(&format!(", renewal at {t}"));
            }
            check(
                CERTIFICATE_READY,
                true,
                c.reason.as_deref().unwrap_or("Ready"),
                message,
                false,
            )
        }
        Some(c) => check(
            CERTIFICATE_READY,
            false,
            c.reason.as_deref().unwrap_or("NotReady"),
            format!(
                "cert-manager: {}{}",
                c.message.as_deref().unwrap_or("the certificate is not ready"),
                o.certificate_request
                    .map(|r| format!("; {r}"))
                    .unwrap_or_default()
            ),
            false,
        ),
        None => check(
            CERTIFICATE_READY,
            false,
            "Pending",
            "waiting for cert-manager to report on the Certificate".to_owned(),
            false,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::test_support::{EXTERNAL, GATEWAY, INGRESS, valid_from_yaml};
    use crate::external::{CertificateCondition, CertificateStatus, RouteCondition, route};
    use k8s_openapi::api::networking::v1::{
        IngressLoadBalancerIngress, IngressLoadBalancerStatus, IngressStatus,
    };

    fn ingress_with_address(ip: Option<&str>) -> Ingress {
        Ingress {
            status: Some(IngressStatus {
                load_balancer: Some(IngressLoadBalancerStatus {
                    ingress: ip.map(|ip| {
                        vec![IngressLoadBalancerIngress {
                            ip: Some(ip.into()),
                            ..Default::default()
                        }]
                    }),
                }),
            }),
            ..Default::default()
        }
    }

    fn certificate(status: &str, reason: &str) -> Certificate {
        let mut c = Certificate::new("acme", Default::default());
        c.status = Some(CertificateStatus {
            conditions: Some(vec![CertificateCondition {
                type_: "Ready".into(),
                status: status.into(),
                reason: Some(reason.into()),
                message: Some(format!("cert-manager says {reason}")),
                observed_generation: None,
            }]),
            not_after: Some("2027-03-01T00:00:00Z".into()),
            renewal_time: None,
        });
        c
    }

    fn route_with(parent: &str, namespace: &str, conds: &[(&str, &str, &str)]) -> HTTPRoute {
        let mut r = HTTPRoute::new("acme", Default::default());
        r.status = Some(route::HttpRouteStatus {
            parents: vec![route::HttpRouteStatusParents {
                controller_name: "example.com/gateway".into(),
                // Controllers echo the parentRef as the route gave it.
                parent_ref: route::HttpRouteStatusParentsParentRef {
                    name: parent.into(),
                    namespace: Some(namespace.into()),
                    section_name: (parent == "public").then(|| "https".to_owned()),
                    ..Default::default()
                },
                conditions: conds
                    .iter()
                    .map(|(t, s, reason)| RouteCondition {
                        type_: (*t).into(),
                        status: (*s).into(),
                        reason: (*reason).into(),
                        message: format!("{t} is {s}"),
                        last_transition_time: k8s_openapi_028::apimachinery::pkg::apis::meta::v1::Time(
                            k8s_openapi_028::jiff::Timestamp::UNIX_EPOCH,
                        ),
                        observed_generation: None,
                    })
                    .collect(),
            }],
        });
        r
    }

    #[test]
    fn no_exposure_no_conditions_and_the_service_url() {
        let (checks, url) = evaluate(&valid_from_yaml(EXTERNAL), &Observed::default());
        assert!(checks.is_empty());
        assert_eq!(url, "http://acme.tenant.svc");
    }

    /// The URL turns `https://` only once the Ingress has an address and the certificate is issued.
    #[test]
    fn https_url_waits_for_the_address_and_the_certificate() {
        let v = valid_from_yaml(INGRESS);
        let cert_manager = Observed {
            cert_manager: true,
            ..Default::default()
        };
        let (checks, url) = evaluate(&v, &cert_manager);
        assert_eq!(url, "http://acme.tenant.svc");
        assert_eq!(checks[0].reason, "AddressPending");
        assert!(!checks[0].stalled);
        assert_eq!(checks[1].reason, "Pending");

        let (ing, cert) = (
            ingress_with_address(Some("10.0.0.7")),
            certificate("False", "DoesNotExist"),
        );
        let o = Observed {
            ingress: Some(&ing),
            certificate: Some(&cert),
            ..cert_manager
        };
        let (checks, url) = evaluate(&v, &o);
        assert!(checks[0].ok, "{checks:?}");
        assert!(checks[0].message.contains("10.0.0.7"));
        assert_eq!((checks[1].ok, checks[1].reason.as_str()), (false, "DoesNotExist"));
        assert!(checks[1].message.contains("cert-manager says DoesNotExist"));
        assert_eq!(
            url, "http://acme.tenant.svc",
            "not https before the certificate is ready"
        );

        let cert = certificate("True", "Ready");
        let (checks, url) = evaluate(
            &v,
            &Observed {
                certificate: Some(&cert),
                ..o
            },
        );
        assert!(checks.iter().all(|c| c.ok));
        assert!(checks[1].message.contains("valid until 2027-03-01T00:00:00Z"));
        assert_eq!(url, "https://tmi.example.com");
    }

    #[test]
    fn missing_apis_and_secrets_are_stalled_with_their_reason() {
        let (checks, _) = evaluate(&valid_from_yaml(INGRESS), &Observed::default());
        assert_eq!(checks[1].reason, "CertManagerNotInstalled");
        assert!(checks[1].stalled);
        let g = valid_from_yaml(GATEWAY);
        let (checks, url) = evaluate(&g, &Observed::default());
        assert_eq!(checks[0].reason, "GatewayAPINotInstalled");
        assert!(checks[0].stalled);
        assert_eq!(url, "http://acme.tenant.svc");
        let (checks, _) = evaluate(
            &g,
            &Observed {
                gateway_api: true,
                ..Default::default()
            },
        );
        assert_eq!(checks[0].reason, "TLSSecretNotFound");
        assert!(checks[0].message.contains("tmi-cert"));
    }

    /// Every named Gateway must accept the route; a refusal carries the controller's own reason.
    #[test]
    fn route_readiness_follows_each_gateway() {
        let g = valid_from_yaml(GATEWAY);
        let base = Observed {
            gateway_api: true,
            tls_secret_present: true,
            ..Default::default()
        };
        let one = route_with(
            "public",
            "gateways",
            &[
                ("Accepted", "True", "Accepted"),
                ("ResolvedRefs", "True", "ResolvedRefs"),
            ],
        );
        let (checks, url) = evaluate(
            &g,
            &Observed {
                http_route: Some(&one),
                ..base
            },
        );
        assert_eq!(checks[0].reason, "Pending");
        assert!(
            checks[0].message.contains("Gateway tenant/internal"),
            "{}",
            checks[0].message
        );
        assert_eq!(url, "http://acme.tenant.svc");

        let refused = route_with(
            "public",
            "gateways",
            &[("Accepted", "False", "NotAllowedByListeners")],
        );
        let (checks, _) = evaluate(
            &g,
            &Observed {
                http_route: Some(&refused),
                ..base
            },
        );
        assert_eq!(checks[0].reason, "NotAllowedByListeners");
        assert!(checks[0].stalled);
        assert!(checks[0].message.contains("example.com/gateway"));

        let mut both = one.clone();
        let mut second = both.status.as_ref().unwrap().parents[0].clone();
        second.parent_ref = route::HttpRouteStatusParentsParentRef {
            name: "internal".into(),
            ..Default::default()
        };
        both.status.as_mut().unwrap().parents.push(second);
        let (checks, url) = evaluate(
            &g,
            &Observed {
                http_route: Some(&both),
                ..base
            },
        );
        assert!(checks[0].ok, "{checks:?}");
        assert_eq!(url, "https://tmi.example.com");
    }
}
