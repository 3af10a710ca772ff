//! `spec.exposure` end to end, with the real components: Traefik (built from its Go module) serving the
//! operator's Ingress and HTTPRoute, and the real cert-manager controllers issuing the certificate from a CA
//! ClusterIssuer. Every request goes to Traefik's entry points on the node's address, inside the run's network
//! namespace, with the hostname resolved to it by the client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject};
use reqwest::Method;
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::{Value, json};
use tmi_operator::crd::TmiInstance;

use super::{
    TIMEOUT, common::dynamic_api, common::tmi::Next, common::tmi::Tmi, common::wait_gone, cp, database,
    install_operator, is_ready, redis_url, run, server_pods, wait_instance,
};

fn condition_is(obj: &Value, type_: &str, status: &str) -> bool {
    super::condition(obj, type_).is_some_and(|c| c["status"] == status)
}

fn reason(obj: &Value, type_: &str) -> String {
    super::condition(obj, type_)
        .and_then(|c| c["reason"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Applies the Secrets and a TmiInstance named `name` with `replicas` servers, exposed by `exposure`.
fn apply_exposed(ns: &str, name: &str, host: &str, db_url: &str, replicas: u32, exposure: Value) {
    let mut instance = json!({
        "apiVersion": "tmi.dev/v1alpha1", "kind": "TmiInstance", "metadata": { "name": name },
        "spec": {
            "version": env!("CARGO_PKG_VERSION"),
            "buildMode": "Development",
            "hostname": host,
            "server": { "replicas": replicas },
            "database": { "external": { "urlSecretRef": { "name": format!("{name}-db"), "key": "url" } } },
            "cache": { "external": { "urlSecretRef": { "name": format!("{name}-redis"), "key": "url" } } },
            "auth": { "devLogin": true },
            "exposure": exposure,
        }
    });
    if exposure.is_null() {
        instance["spec"].as_object_mut().unwrap().remove("exposure");
    }
    let secrets = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{ name: {name}-db }}\nstringData: {{ url: \"{db_url}\" }}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{ name: {name}-redis }}\nstringData: {{ url: \"{}\" }}\n---\n{}",
        redis_url(),
        serde_json::to_string(&instance).unwrap()
    );
    let out = cp()
        .kubectl_stdin(&["apply", "-n", ns, "--server-side", "-f", "-"], &secrets)
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// An HTTPS client that trusts only the test CA and resolves `host` to Traefik's entry point.
fn client(ca_pem: &str, host: &str, addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .resolve(host, addr)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// The TMI client of the tests, through the proxy at `https://<host>:<port>`.
fn tmi_through(ca_pem: &str, host: &str, addr: SocketAddr) -> Tmi {
    Tmi {
        base: format!("https://{host}:{}", addr.port()),
        http: client(ca_pem, host, addr),
    }
}

/// Polls `/readyz` through the proxy until it answers 200 (the proxy picks up a new route in a moment).
async fn until_served(tmi: &Tmi, what: &str) {
    let started = Instant::now();
    loop {
        match tmi.try_call(Method::GET, "/readyz", None, None).await {
            Ok(r) if r.status == 200 => return,
            other => assert!(
                started.elapsed() < TIMEOUT,
                "{what}: {} never answered through the proxy: {other:?}\n{}",
                tmi.base,
                cp().log_tail("traefik", 20)
            ),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// TLS to Traefik's HTTPS entry point for `host`, verified against the test CA only.
async fn tls_stream(
    ca_pem: &str,
    host: &str,
    addr: SocketAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(host.to_owned()).unwrap(), tcp)
        .await
        .unwrap()
}

/// SHA-256 fingerprint of the certificate Traefik serves for `host` (`openssl s_client`).
fn served_fingerprint(host: &str, addr: SocketAddr) -> String {
    let out = run(std::process::Command::new("sh").arg("-c").arg(format!(
        "openssl s_client -connect {addr} -servername {host} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
    )));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// SHA-256 fingerprint of the certificate in Secret `name`.
fn secret_fingerprint(ns: &str, name: &str) -> String {
    let out = run(std::process::Command::new("sh").arg("-c").arg(format!(
        "{} --kubeconfig {} get secret -n {ns} {name} -o 'jsonpath={{.data.tls\\.crt}}' | base64 -d | openssl x509 -noout -fingerprint -sha256",
        cp().bin_dir().join("kubectl").display(),
        cp().kubeconfig().display()
    )));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Which pod (address) Traefik sent each request tagged `probe=<tag>-<n>` to, from its access log.
fn backends_of(tag: &str) -> Vec<String> {
    let log = std::fs::read_to_string(cp().edge_access_log()).unwrap_or_default();
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["RequestPath"]
                .as_str()
                .is_some_and(|p| p.contains(&format!("probe={tag}-")))
        })
        .filter_map(|v| v["ServiceAddr"].as_str().map(str::to_owned))
        .collect()
}

/// One TmiInstance, two real server pods, exposed by Traefik with a cert-manager certificate: HTTPS verified
/// against the CA, the dev login, a collaboration socket that outlives Traefik's idle timeout, cookie
/// affinity, a renewal reaching the proxy without a restart, then the same instance through a Gateway API
/// HTTPRoute, and finally without exposure (the routes and the Certificate are deleted). A second instance
/// names an issuer that does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposed_through_traefik_with_a_cert_manager_certificate() {
    install_operator();
    let cp = cp();
    let edge = cp.start_traefik().expect("Traefik");
    cp.install_cert_manager().expect("cert-manager");
    let ca = cp.ca_cluster_issuer("tmi-e2e-ca").expect("CA ClusterIssuer");
    let ns = cp.namespace("expose").await;
    let host = format!("{}.tmi.test", ns.name);
    let api: Api<TmiInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    let db = database("expose");
    let ingress_exposure = json!({
        "type": "Ingress",
        "ingress": { "className": edge.ingress_class },
        "tls": { "issuerRef": { "name": "tmi-e2e-ca", "kind": "ClusterIssuer" } }
    });
    apply_exposed(&ns.name, "tmi", &host, &db, 2, ingress_exposure);
    let obj = wait_instance(
        &api,
        "tmi",
        "Ready, exposed by Traefik with its certificate",
        |v| {
            is_ready(v)
                && condition_is(v, "ExposureReady", "True")
                && condition_is(v, "CertificateReady", "True")
        },
    )
    .await;
    assert_eq!(obj["status"]["url"], format!("https://{host}"));
    assert_eq!(
        obj["status"]["effective"]["ingressController"], "Traefik",
        "Auto found Traefik's class"
    );
    assert_eq!(obj["status"]["effective"]["sessionAffinity"], "Cookie");
    let message = super::condition(&obj, "CertificateReady").unwrap()["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("valid until"), "{message}");

    // HTTPS with the issued certificate, verified against the CA (the client trusts nothing else).
    let tmi = tmi_through(&ca, &host, edge.https);
    until_served(&tmi, "the Ingress").await;
    let token = tmi.login("alice").await;
    let (tm, d) = tmi.threat_model_with_diagram(&token, "through the proxy").await;

    // A collaboration socket through the proxy stays open past Traefik's idle timeout (the server pings).
    let session = tmi.session(&token, &tm, &d).await;
    let mut collab = tmi
        .connect_over(&token, &session, tls_stream(&ca, &host, edge.https).await)
        .await;
    collab.wait_for("diagram_state", |_| true).await;
    let mut watcher = tmi
        .connect_over(&token, &session, tls_stream(&ca, &host, edge.https).await)
        .await;
    watcher.wait_for("diagram_state", |_| true).await;
    let quiet = edge.idle_timeout + Duration::from_secs(10);
    let began = Instant::now();
    while began.elapsed() < quiet {
        if let Next::Closed(code) = collab.next(Duration::from_secs(1)).await {
            panic!(
                "the socket closed after {:.1?} of silence ({code:?})",
                began.elapsed()
            );
        }
    }
    // Both sockets still carry an edit, end to end through the proxy.
    let op = collab.add_cell("after-idle").await;
    watcher
        .wait_for("diagram_operation_event", |m| m["operation_id"] == op.as_str())
        .await;
    collab.close().await;
    watcher.close().await;

    // Cookie affinity: the first answer sets `tmi-affinity` (Secure, since TLS); every request carrying it
    // reaches the same pod, while requests without it reach both.
    let pods = server_pods(&ns.client, &ns.name, "tmi").await;
    assert_eq!(pods.len(), 2, "{pods:?}");
    let first = tmi
        .http
        .get(format!("{}/readyz?probe=pin-0", tmi.base))
        .send()
        .await
        .unwrap();
    let cookie = first
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("tmi-affinity="))
        .unwrap_or_else(|| panic!("no affinity cookie in {:?}", first.headers()))
        .to_owned();
    assert!(cookie.to_ascii_lowercase().contains("secure"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_owned();
    for n in 1..=12 {
        let r = tmi
            .http
            .get(format!("{}/readyz?probe=pin-{n}", tmi.base))
            .header("cookie", &pair)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = tmi
            .http
            .get(format!("{}/readyz?probe=free-{n}", tmi.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let started = Instant::now();
    let (pinned, free) = loop {
        let (pinned, free) = (backends_of("pin"), backends_of("free"));
        if pinned.len() >= 13 && free.len() >= 12 || started.elapsed() > Duration::from_secs(10) {
            break (pinned, free);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let distinct = |v: &[String]| v.iter().collect::<std::collections::BTreeSet<_>>().len();
    assert_eq!(pinned.len(), 13, "access log: {pinned:?}");
    assert_eq!(
        distinct(&pinned),
        1,
        "one pod served every request with the cookie: {pinned:?}"
    );
    assert_eq!(distinct(&free), 2, "without the cookie both pods serve: {free:?}");

    // Renewal: cert-manager issues a new certificate (as `cmctl renew` asks it to); Traefik serves it without
    // a restart.
    let before = secret_fingerprint(&ns.name, "tmi-tls");
    assert_eq!(served_fingerprint(&host, edge.https), before);
    run(cp.kubectl().args([
        "patch", "certificate", "tmi", "-n", &ns.name, "--subresource=status", "--type=json", "-p",
        r#"[{"op":"add","path":"/status/conditions/-","value":{"type":"Issuing","status":"True","reason":"ManuallyTriggered","message":"renewal requested by the test"}}]"#,
    ]));
    let started = Instant::now();
    loop {
        let now = secret_fingerprint(&ns.name, "tmi-tls");
        if now != before && served_fingerprint(&host, edge.https) == now {
            break;
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "the renewed certificate never reached Traefik"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(tmi.call(Method::GET, "/readyz", None, None).await.status, 200);

    // The same instance through a Gateway API HTTPRoute on a Gateway that serves the operator's certificate.
    let gateway = edge.gateway("edge", Some("tmi-tls"));
    let out = cp
        .kubectl_stdin(
            &["apply", "-n", &ns.name, "--server-side", "-f", "-"],
            &serde_json::to_string(&gateway).unwrap(),
        )
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    apply_exposed(
        &ns.name,
        "tmi",
        &host,
        &db,
        2,
        json!({
            "type": "Gateway",
            "gateway": { "parentRefs": [{ "name": "edge", "sectionName": "https" }] },
            "tls": { "issuerRef": { "name": "tmi-e2e-ca", "kind": "ClusterIssuer" } }
        }),
    );
    let obj = wait_instance(&api, "tmi", "Ready through the Gateway", |v| {
        is_ready(v) && reason(v, "ExposureReady") == "Accepted"
    })
    .await;
    assert_eq!(obj["status"]["url"], format!("https://{host}"));
    let ingresses: Api<DynamicObject> =
        dynamic_api(&ns.client, &ns.name, "networking.k8s.io", "Ingress", "ingresses");
    wait_gone(&ingresses, "tmi").await;
    // Traefik drops the Ingress route and serves the HTTPRoute's: poll until a login works again.
    until_served(&tmi, "the HTTPRoute").await;
    let token = tmi.login("bob").await;
    let r = tmi
        .call(Method::GET, &format!("/threat_models/{tm}"), Some(&token), None)
        .await;
    assert!(matches!(r.status, 200 | 403 | 404), "{} {}", r.status, r.body);

    // No exposure: the route and the Certificate go, and the URL is the in-cluster one.
    apply_exposed(&ns.name, "tmi", &host, &db, 2, Value::Null);
    let obj = wait_instance(&api, "tmi", "Ready without exposure", |v| {
        is_ready(v) && super::condition(v, "ExposureReady").is_none()
    })
    .await;
    assert_eq!(obj["status"]["url"], format!("http://tmi.{}.svc", ns.name));
    let routes = dynamic_api(
        &ns.client,
        &ns.name,
        "gateway.networking.k8s.io",
        "HTTPRoute",
        "httproutes",
    );
    let certificates = dynamic_api(
        &ns.client,
        &ns.name,
        "cert-manager.io",
        "Certificate",
        "certificates",
    );
    wait_gone(&routes, "tmi").await;
    wait_gone(&certificates, "tmi").await;

    // An issuer that does not exist: CertificateReady=False with cert-manager's own reason; no https URL.
    apply_exposed(
        &ns.name,
        "lost",
        &format!("lost.{host}"),
        &db,
        0,
        json!({ "type": "Ingress", "tls": { "issuerRef": { "name": "no-such-issuer", "kind": "ClusterIssuer" } } }),
    );
    let obj = wait_instance(&api, "lost", "CertificateReady=False from cert-manager", |v| {
        condition_is(v, "CertificateReady", "False")
            && !reason(v, "CertificateReady").is_empty()
            && reason(v, "CertificateReady") != "Pending"
            && super::condition(v, "CertificateReady").is_some_and(|c| {
                c["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("CertificateRequest")
            })
    })
    .await;
    assert!(!is_ready(&obj));
    let message = super::condition(&obj, "CertificateReady").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("no-such-issuer"),
        "the message names the missing issuer: {message}"
    );
    assert_eq!(obj["status"]["url"], format!("http://lost.{}.svc", ns.name));
    eprintln!(
        "missing issuer: CertificateReady reason {} message {}",
        reason(&obj, "CertificateReady"),
        super::condition(&obj, "CertificateReady").unwrap()["message"]
    );
}
