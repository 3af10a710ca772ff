//! The request gate fails closed: every route the server has is either a contract operation or a
//! listed operational route, every non-public operation refuses an anonymous caller with 401, and
//! a route the contract does not define answers 404 without reaching its handler.

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{Backend, TestApp};

/// A concrete path for `template`: fresh UUIDs for UUID parameters, `x` for the others.
fn concrete(template: &str, op: &tmi_server::openapi::Operation) -> String {
    template
        .split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => {
                    let uuid = op.params.iter().any(|p| {
                        p.name == name && p.schema.get("format").and_then(Value::as_str) == Some("uuid")
                    });
                    if uuid {
                        uuid::Uuid::new_v4().to_string()
                    } else {
                        "x".to_owned()
                    }
                }
                None => seg.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn every_route_is_in_the_contract_or_listed_and_anonymous_callers_get_401() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let routes = tmi_server::routes();
    let mut unknown = Vec::new();
    let mut open = Vec::new();
    for (method, template) in routes.table() {
        if tmi_server::gate::is_operational(method, template) {
            continue;
        }
        let Some(op) = app.state.spec.operation(method.as_str(), template) else {
            unknown.push(format!("{method} {template}"));
            continue;
        };
        if op.public {
            continue;
        }
        // A well-formed body of the declared type, so that only authentication can refuse it.
        let body = op.content_types.first().map(|ct| {
            let bytes = if ct.ends_with("json") {
                b"{}".to_vec()
            } else {
                b"a=b".to_vec()
            };
            (ct.as_str(), bytes)
        });
        let res = app
            .send(method.clone(), &concrete(template, &op), None, body, &[])
            .await;
        if res.status.as_u16() != 401 {
            open.push(format!("{method} {template}: {} {}", res.status, res.body));
        }
    }
    assert!(
        unknown.is_empty(),
        "routes without a contract operation (add the operation, or list an operational route in gate::OPERATIONAL): {unknown:#?}"
    );
    assert!(
        open.is_empty(),
        "non-public operations that did not answer 401 without a token: {open:#?}"
    );
    assert!(routes.table().len() > 100, "the walk saw the whole router");

    // The allow-list names routes that exist, and they answer without a token.
    for (method, template) in tmi_server::gate::OPERATIONAL {
        assert!(
            routes
                .table()
                .iter()
                .any(|(m, t)| m.as_str() == *method && t == template),
            "gate::OPERATIONAL lists {method} {template}, which is not a route"
        );
    }
    for path in ["/livez", "/readyz", "/metrics", "/openapi.json"] {
        let res = app
            .client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn a_route_missing_from_the_contract_answers_404_and_never_runs() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = ran.clone();
    let routes = tmi_server::routes().get("/threat_models/{threat_model_id}/secrets", move || async move {
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        "secret"
    });
    let router = tmi_server::router_from(routes, app.state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let alice = app.login("alice").await;
    let path = format!("{base}/threat_models/{}/secrets", uuid::Uuid::new_v4());
    for token in [None, Some(alice.access.as_str())] {
        let mut req = app.client.request(Method::GET, &path);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 404, "token: {}", token.is_some());
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "not_found");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("not defined in the API specification")
        );
    }
    assert!(
        !ran.load(std::sync::atomic::Ordering::SeqCst),
        "the handler never ran"
    );
    server.abort();
}
