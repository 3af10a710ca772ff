//! The Gateway API `HTTPRoute` for `spec.exposure.type: Gateway`. Pure.
//!
//! One rule sends every path of `spec.hostname` to the Service. No `timeouts`: a request timeout would cut
//! WebSockets, and the idle timeout of a Gateway is its implementation's setting. `sessionPersistence` (Gateway
//! API's experimental cookie affinity) only with `sessionAffinity: Cookie`; without it collaboration stays
//! correct, since replicas share sessions through Redis.

use crate::controller::names;
use crate::controller::validate::{Route, ValidInstance};
use crate::external::{HTTPRoute, RouteSpec, route as r};

/// Renders the route, or `None` when the instance is not exposed through a Gateway.
pub fn render(i: &ValidInstance) -> Option<HTTPRoute> {
    let Route::Gateway { parent_refs } = &i.exposure.route else {
        return None;
    };
    let host = i.hostname.clone()?;
    let parents = parent_refs
        .iter()
        .map(|p| r::HttpRouteParentRefs {
            group: Some(crate::external::GATEWAY_GROUP.to_owned()),
            kind: Some("Gateway".to_owned()),
            name: p.name.clone(),
            namespace: p.namespace.clone(),
            section_name: p.section_name.clone(),
            ..Default::default()
        })
        .collect();
    let rule = r::HttpRouteRules {
        matches: Some(vec![r::HttpRouteRulesMatches {
            path: Some(r::HttpRouteRulesMatchesPath {
                r#type: Some(r::HttpRouteRulesMatchesPathType::PathPrefix),
                value: Some("/".to_owned()),
            }),
            ..Default::default()
        }]),
        backend_refs: Some(vec![r::HttpRouteRulesBackendRefs {
            name: names::service(i),
            port: Some(names::SERVICE_PORT),
            ..Default::default()
        }]),
        session_persistence: i
            .exposure
            .cookie_affinity
            .then(|| r::HttpRouteRulesSessionPersistence {
                session_name: Some(names::AFFINITY_COOKIE.to_owned()),
                r#type: Some(r::HttpRouteRulesSessionPersistenceType::Cookie),
                ..Default::default()
            }),
        ..Default::default()
    };
    let mut route = HTTPRoute::new(
        &names::route(i),
        RouteSpec {
            route: r::HttpRouteSpec {
                hostnames: Some(vec![host]),
                parent_refs: Some(parents),
                rules: Some(vec![rule]),
                ..Default::default()
            },
        },
    );
    route.metadata = names::child_meta(i, names::route(i));
    Some(route)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::test_support::{GATEWAY, INGRESS, instance_from_yaml, valid_from_yaml};
    use crate::crd::SessionAffinity;

    #[test]
    fn route_for_the_hostname_to_the_service() {
        let i = valid_from_yaml(GATEWAY);
        let r = render(&i).unwrap();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["apiVersion"], "gateway.networking.k8s.io/v1");
        assert_eq!(v["kind"], "HTTPRoute");
        assert_eq!(v["spec"]["hostnames"], serde_json::json!(["tmi.example.com"]));
        assert_eq!(
            v["spec"]["parentRefs"][0],
            serde_json::json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public", "namespace": "gateways", "sectionName": "https"})
        );
        assert_eq!(v["spec"]["parentRefs"][1]["name"], "internal");
        let rule = &v["spec"]["rules"][0];
        assert_eq!(
            rule["backendRefs"][0],
            serde_json::json!({"name": "acme", "port": 80})
        );
        assert_eq!(
            rule["matches"][0]["path"],
            serde_json::json!({"type": "PathPrefix", "value": "/"})
        );
        assert!(
            rule.get("sessionPersistence").is_none(),
            "Auto adds none on a Gateway"
        );
        assert!(
            rule.get("timeouts").is_none(),
            "a request timeout would cut WebSockets"
        );
        assert!(render(&valid_from_yaml(INGRESS)).is_none());
    }

    #[test]
    fn cookie_affinity_is_session_persistence() {
        let mut obj = instance_from_yaml(GATEWAY);
        obj.spec.exposure.as_mut().unwrap().session_affinity = Some(SessionAffinity::Cookie);
        let i = crate::controller::validate::validate(&obj).unwrap();
        let v = serde_json::to_value(render(&i).unwrap()).unwrap();
        assert_eq!(
            v["spec"]["rules"][0]["sessionPersistence"],
            serde_json::json!({"sessionName": "tmi-affinity", "type": "Cookie"})
        );
    }
}
