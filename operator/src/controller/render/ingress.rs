//! The Ingress for `spec.exposure.type: Ingress`, with each controller preset's annotations for WebSockets and
//! cookie affinity. Pure.
//!
//! What each preset sets (docs/exposure/*.md repeat it for users):
//! - **ingress-nginx**: `proxy-read-timeout`/`proxy-send-timeout` (the WebSocket idle timeout),
//!   `proxy-body-size` (the server's own 16 MiB limit), and with affinity `affinity: cookie`,
//!   `affinity-mode: persistent` and the cookie's name, path, SameSite and Secure.
//! - **Traefik**: `router.tls` with TLS. Traefik's sticky cookie is configured on the Service (see
//!   `service.rs`), and its idle timeouts belong to the entry point (static configuration), which the server's
//!   keepalive pings keep busy.
//! - **HAProxy** (haproxytech kubernetes-ingress): `timeout-tunnel` (WebSockets), and with affinity
//!   `cookie-persistence`.
//! - **ALB** (AWS Load Balancer Controller): `target-type: ip`, the load balancer's `idle_timeout` (at most
//!   4000 s, AWS's limit), the health check on `/readyz`, and with affinity `lb_cookie` stickiness.
//! - **Generic**: nothing; the user's annotations only.
//!
//! The user's annotations are merged over the preset's.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule, IngressServiceBackend,
    IngressSpec, IngressTLS, ServiceBackendPort,
};

use crate::controller::names;
use crate::controller::validate::{Exposure, Route, Tls, ValidInstance};
use crate::crd::IngressController;

/// Largest request body the server accepts (its own limit), for proxies whose default is smaller.
const MAX_BODY: &str = "16m";
/// AWS's upper bound for an ALB's idle timeout.
const ALB_MAX_IDLE_SECONDS: i32 = 4000;

/// The Secret holding the certificate, when TLS is configured.
pub fn tls_secret_name(i: &ValidInstance) -> Option<String> {
    match &i.exposure.tls {
        Some(Tls::Issuer(_)) => Some(names::tls_secret(i)),
        Some(Tls::Secret(s)) => Some(s.clone()),
        None => None,
    }
}

/// Renders the Ingress for `controller` (the preset, `Auto` already resolved), or `None` when the instance is
/// not exposed through an Ingress.
pub fn render(i: &ValidInstance, controller: IngressController) -> Option<Ingress> {
    let Route::Ingress {
        class_name,
        annotations: user,
        ..
    } = &i.exposure.route
    else {
        return None;
    };
    let host = i.hostname.clone()?;
    let mut annotations = preset_annotations(controller, &i.exposure);
    annotations.extend(user.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut meta = names::child_meta(i, names::route(i));
    if !annotations.is_empty() {
        meta.annotations = Some(annotations);
    }
    Some(Ingress {
        metadata: meta,
        spec: Some(IngressSpec {
            ingress_class_name: class_name.clone(),
            rules: Some(vec![IngressRule {
                host: Some(host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".to_owned()),
                        path_type: "Prefix".to_owned(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: names::service(i),
                                port: Some(ServiceBackendPort {
                                    name: Some("http".to_owned()),
                                    ..Default::default()
                                }),
                            }),
                            ..Default::default()
                        },
                    }],
                }),
            }]),
            tls: tls_secret_name(i).map(|secret| {
                vec![IngressTLS {
                    hosts: Some(vec![host]),
                    secret_name: Some(secret),
                }]
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The annotations a controller needs for long-lived WebSockets and (when wanted) cookie affinity.
pub fn preset_annotations(controller: IngressController, e: &Exposure) -> BTreeMap<String, String> {
    let idle = e.idle_timeout_seconds.to_string();
    let tls = e.tls.is_some();
    let mut a = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        a.insert(k.to_owned(), v.to_owned());
    };
    match controller {
        IngressController::Nginx => {
            let n = |k: &str| format!("nginx.ingress.kubernetes.io/{k}");
            put(&n("proxy-read-timeout"), &idle);
            put(&n("proxy-send-timeout"), &idle);
            put(&n("proxy-body-size"), MAX_BODY);
            if e.cookie_affinity {
                put(&n("affinity"), "cookie");
                put(&n("affinity-mode"), "persistent");
                put(&n("session-cookie-name"), names::AFFINITY_COOKIE);
                put(&n("session-cookie-path"), "/");
                put(&n("session-cookie-samesite"), "Lax");
                put(&n("session-cookie-secure"), if tls { "true" } else { "false" });
            }
        }
        IngressController::Traefik => {
            if tls {
                put("traefik.ingress.kubernetes.io/router.tls", "true");
            }
        }
        IngressController::HAProxy => {
            put("haproxy.org/timeout-tunnel", &format!("{idle}s"));
            if e.cookie_affinity {
                put("haproxy.org/cookie-persistence", names::AFFINITY_COOKIE);
            }
        }
        IngressController::Alb => {
            let idle = e.idle_timeout_seconds.min(ALB_MAX_IDLE_SECONDS);
            put("alb.ingress.kubernetes.io/target-type", "ip");
            put(
                "alb.ingress.kubernetes.io/load-balancer-attributes",
                &format!("idle_timeout.timeout_seconds={idle}"),
            );
            put("alb.ingress.kubernetes.io/healthcheck-path", "/readyz");
            if e.cookie_affinity {
                put(
                    "alb.ingress.kubernetes.io/target-group-attributes",
                    "stickiness.enabled=true,stickiness.type=lb_cookie,stickiness.lb_cookie.duration_seconds=86400",
                );
            }
        }
        IngressController::Generic | IngressController::Auto => {}
    }
    a
}

/// Annotations on the Service, for controllers that read affinity there (Traefik).
pub fn service_annotations(controller: IngressController, e: &Exposure) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    if controller == IngressController::Traefik && e.cookie_affinity {
        let t = |k: &str| format!("traefik.ingress.kubernetes.io/service.sticky.cookie{k}");
        a.insert(t(""), "true".to_owned());
        a.insert(t(".name"), names::AFFINITY_COOKIE.to_owned());
        a.insert(t(".secure"), e.tls.is_some().to_string());
        a.insert(t(".samesite"), "lax".to_owned());
        a.insert(t(".httponly"), "true".to_owned());
    }
    a
}

/// The preset for an IngressClass's `spec.controller`, or `None` for a controller without one.
pub fn preset_for_controller(controller: &str) -> Option<IngressController> {
    match controller {
        "k8s.io/ingress-nginx" => Some(IngressController::Nginx),
        "traefik.io/ingress-controller" => Some(IngressController::Traefik),
        "ingress.k8s.aws/alb" => Some(IngressController::Alb),
        c if c.starts_with("haproxy.org/ingress-controller") => Some(IngressController::HAProxy),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::test_support::{EXTERNAL, INGRESS, valid_from_yaml};

    fn annotations(ing: &Ingress) -> &BTreeMap<String, String> {
        ing.metadata.annotations.as_ref().unwrap()
    }

    /// ingress-nginx gets the WebSocket timeouts, the body size and (two replicas) cookie affinity with a
    /// Secure cookie, since TLS is configured; the user's annotations win over the preset's.
    #[test]
    fn nginx_preset_with_tls_and_two_replicas() {
        let i = valid_from_yaml(INGRESS);
        let ing = render(&i, IngressController::Nginx).unwrap();
        let a = annotations(&ing);
        let n = |k: &str| a[&format!("nginx.ingress.kubernetes.io/{k}")].as_str();
        assert_eq!(n("proxy-read-timeout"), "3600");
        assert_eq!(n("proxy-send-timeout"), "3600");
        assert_eq!(n("affinity"), "cookie");
        assert_eq!(n("session-cookie-name"), "tmi-affinity");
        assert_eq!(n("session-cookie-secure"), "true");
        assert_eq!(n("proxy-body-size"), "64m", "the user's value wins");
        assert_eq!(a["example.com/team"], "a");
        let spec = ing.spec.as_ref().unwrap();
        assert_eq!(spec.ingress_class_name.as_deref(), Some("public"));
        let tls = &spec.tls.as_ref().unwrap()[0];
        assert_eq!(tls.secret_name.as_deref(), Some("acme-tls"));
        assert_eq!(tls.hosts.as_ref().unwrap(), &["tmi.example.com".to_owned()]);
        let rule = &spec.rules.as_ref().unwrap()[0];
        assert_eq!(rule.host.as_deref(), Some("tmi.example.com"));
        let backend = rule.http.as_ref().unwrap().paths[0]
            .backend
            .service
            .as_ref()
            .unwrap();
        assert_eq!(backend.name, "acme");
    }

    /// One replica and `Auto`: no affinity (nothing to pin to), but the timeouts stay.
    #[test]
    fn auto_affinity_needs_more_than_one_replica() {
        let mut obj = crate::controller::test_support::instance_from_yaml(INGRESS);
        obj.spec.server = None;
        let i = crate::controller::validate::validate(&obj).unwrap();
        assert!(!i.exposure.cookie_affinity);
        let a = preset_annotations(IngressController::Nginx, &i.exposure);
        assert!(!a.contains_key("nginx.ingress.kubernetes.io/affinity"));
        assert_eq!(a["nginx.ingress.kubernetes.io/proxy-read-timeout"], "3600");
    }

    #[test]
    fn traefik_sets_stickiness_on_the_service_and_tls_on_the_router() {
        let i = valid_from_yaml(INGRESS);
        let a = preset_annotations(IngressController::Traefik, &i.exposure);
        assert_eq!(a["traefik.ingress.kubernetes.io/router.tls"], "true");
        let s = service_annotations(IngressController::Traefik, &i.exposure);
        assert_eq!(s["traefik.ingress.kubernetes.io/service.sticky.cookie"], "true");
        assert_eq!(
            s["traefik.ingress.kubernetes.io/service.sticky.cookie.name"],
            "tmi-affinity"
        );
        assert_eq!(
            s["traefik.ingress.kubernetes.io/service.sticky.cookie.secure"],
            "true"
        );
        assert!(service_annotations(IngressController::Nginx, &i.exposure).is_empty());
    }

    #[test]
    fn haproxy_and_alb_presets() {
        let mut i = valid_from_yaml(INGRESS);
        let h = preset_annotations(IngressController::HAProxy, &i.exposure);
        assert_eq!(h["haproxy.org/timeout-tunnel"], "3600s");
        assert_eq!(h["haproxy.org/cookie-persistence"], "tmi-affinity");
        i.exposure.idle_timeout_seconds = 7200;
        i.exposure.tls = None;
        let a = preset_annotations(IngressController::Alb, &i.exposure);
        assert_eq!(
            a["alb.ingress.kubernetes.io/load-balancer-attributes"], "idle_timeout.timeout_seconds=4000",
            "clamped to AWS's limit"
        );
        assert_eq!(a["alb.ingress.kubernetes.io/target-type"], "ip");
        assert!(a["alb.ingress.kubernetes.io/target-group-attributes"].contains("stickiness.enabled=true"));
        assert!(preset_annotations(IngressController::Generic, &i.exposure).is_empty());
    }

    #[test]
    fn no_ingress_without_ingress_exposure() {
        assert!(render(&valid_from_yaml(EXTERNAL), IngressController::Nginx).is_none());
    }
}
