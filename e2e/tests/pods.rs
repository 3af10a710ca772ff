//! Real pods on the local cluster's real node (`tmi_e2e::shared_with_node`): the operator, installed by its
//! Helm chart from the locally built image, runs as two pods under the chart's ServiceAccount with leader
//! election, and turns TmiInstances into server pods that run the locally built tmi-server image against the
//! run's PostgreSQL and Redis. Everything here talks to pod and Service addresses that exist only inside the
//! run's network namespace (`scripts/isolated.sh`).

#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams, Patch, PatchParams};
use reqwest::Method;
use serde_json::{Value, json};
use tmi_e2e::{ControlPlane, TestNamespace};
use tmi_operator::crd::TmiInstance;

mod common;
use common::tmi::{Next, Tmi, cell_id, state_cell_ids};

#[path = "pods/backups.rs"]
mod backups;
#[path = "pods/exposure.rs"]
mod exposure;
#[path = "../../tmi-server/tests/common/keycloak.rs"]
mod keycloak;
#[path = "pods/sign_in.rs"]
mod sign_in;
#[path = "pods/upgrades.rs"]
mod upgrades;

const TIMEOUT: Duration = Duration::from_secs(180);

fn cp() -> &'static ControlPlane {
    tmi_e2e::shared_with_node()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Installs the operator once per test binary: `helm install` of the chart, the image built by `make images`.
fn install_operator() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let cp = cp();
        let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/tmi-operator");
        run(Command::new(cp.bin_dir().join("helm"))
            .args(["install", "tmi-operator"])
            .arg(&chart)
            .args([
                "-n",
                "tmi-system",
                "--create-namespace",
                "--set",
                "image.pullPolicy=Never",
            ])
            .arg(format!("--kubeconfig={}", cp.kubeconfig().display()))
            .env("HELM_CACHE_HOME", cp.dir().join("helm/cache"))
            .env("HELM_CONFIG_HOME", cp.dir().join("helm/config"))
            .env("HELM_DATA_HOME", cp.dir().join("helm/data")));
        // One of the two replicas leads (and is the Ready one); the other stands by.
        let started = Instant::now();
        loop {
            let out = cp
                .kubectl()
                .args([
                    "get",
                    "lease",
                    "tmi-operator",
                    "-n",
                    "tmi-system",
                    "-o",
                    "jsonpath={.spec.holderIdentity}",
                ])
                .output()
                .unwrap();
            if out.status.success() && !out.stdout.is_empty() {
                break;
            }
            if started.elapsed() > TIMEOUT {
                let pods = cp
                    .kubectl()
                    .args(["get", "pods", "-n", "tmi-system", "-o", "wide"])
                    .output()
                    .unwrap();
                let logs = cp
                    .kubectl()
                    .args([
                        "logs",
                        "-n",
                        "tmi-system",
                        "-l",
                        "app.kubernetes.io/name=tmi-operator",
                        "--tail=30",
                    ])
                    .output()
                    .unwrap();
                panic!(
                    "the operator never took its Lease:\n{}\n{}{}\nkubelet: {}",
                    String::from_utf8_lossy(&pods.stdout),
                    String::from_utf8_lossy(&logs.stdout),
                    String::from_utf8_lossy(&logs.stderr),
                    cp.log_tail("kubelet", 20)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
}

/// A fresh PostgreSQL database for one instance; returns its URL as pods reach it (the node's address).
fn database(name: &str) -> String {
    let admin = std::env::var("TMI_TEST_DATABASE_URL").expect("TMI_TEST_DATABASE_URL: run `make test`");
    let pods =
        std::env::var("TMI_TEST_POD_DATABASE_URL").expect("TMI_TEST_POD_DATABASE_URL: run `make test`");
    let db = format!("{name}_{:08x}", rand_u32()).replace('-', "_");
    run(Command::new("psql").args([admin.as_str(), "-qc", &format!("CREATE DATABASE {db}")]));
    format!("{}/{db}", pods.rsplit_once('/').unwrap().0)
}

/// Puts `url`'s host and port behind a Service named `name` in `ns` (no selector; an EndpointSlice names the
/// address), the way a cluster reaches a database that runs elsewhere, and returns the URL with the host
/// replaced by the Service's DNS name: pods resolve it through CoreDNS and reach it through kube-proxy.
fn behind_service(ns: &str, name: &str, url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (auth, rest) = rest.rsplit_once('@').map_or(("", rest), |(a, r)| (a, r));
    let (host_port, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
    let (host, port) = host_port.rsplit_once(':').unwrap();
    let yaml = format!(
        r#"apiVersion: v1
kind: Service
metadata: {{ name: {name} }}
spec:
  ports: [{{ name: main, port: 5432, targetPort: {port}, protocol: TCP }}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-external
  labels: {{ kubernetes.io/service-name: {name} }}
addressType: IPv4
ports: [{{ name: main, port: {port}, protocol: TCP }}]
endpoints: [{{ addresses: ["{host}"] }}]
"#
    );
    let out = cp()
        .kubectl_stdin(&["apply", "-n", ns, "--server-side", "-f", "-"], &yaml)
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let at = if auth.is_empty() {
        String::new()
    } else {
        format!("{auth}@")
    };
    format!("{scheme}://{at}{name}.{ns}.svc.cluster.local:5432/{path}")
}

fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    t.subsec_nanos() ^ std::process::id()
}

fn redis_url() -> String {
    std::env::var("TMI_TEST_POD_REDIS_URL").expect("TMI_TEST_POD_REDIS_URL: run `make test`")
}

/// The per-user rate limit of these instances: the rolling-update test sends one user's requests from
/// four workers without pause (far above the default 1000/min), to prove that none fails.
const LOAD_TEST_USER_RPM: &str = "1000000";

/// Applies the Secrets and a TmiInstance running `replicas` servers on PostgreSQL and Redis.
fn apply_instance(ns: &str, name: &str, db_url: &str, replicas: u32) {
    let yaml = format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{ name: {name}-db }}
stringData: {{ url: "{db_url}" }}
---
apiVersion: v1
kind: Secret
metadata: {{ name: {name}-redis }}
stringData: {{ url: "{redis}" }}
---
apiVersion: tmi.dev/v1alpha1
kind: TmiInstance
metadata: {{ name: {name} }}
spec:
  version: {version}
  buildMode: Development
  server:
    replicas: {replicas}
    env: [{{ name: TMI_RATELIMIT_USER_RPM, value: "{user_rpm}" }}]
  database:
    external: {{ urlSecretRef: {{ name: {name}-db, key: url }} }}
  cache:
    external: {{ urlSecretRef: {{ name: {name}-redis, key: url }} }}
  auth:
    devLogin: true
"#,
        redis = redis_url(),
        version = VERSION,
        user_rpm = LOAD_TEST_USER_RPM,
    );
    let out = cp()
        .kubectl_stdin(&["apply", "-n", ns, "--server-side", "-f", "-"], &yaml)
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Waits until the instance's status is current and `pred` holds; panics with the pods and their logs.
async fn wait_instance(
    api: &Api<TmiInstance>,
    name: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let obj = serde_json::to_value(api.get(name).await.unwrap()).unwrap();
        if obj["status"]["observedGeneration"] == obj["metadata"]["generation"] && pred(&obj) {
            return obj;
        }
        if started.elapsed() > TIMEOUT {
            let ns = obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let pods = cp()
                .kubectl()
                .args(["get", "deploy,rs,pods", "-o", "wide", "-n", &ns])
                .output()
                .unwrap();
            let logs = cp()
                .kubectl()
                .args([
                    "logs",
                    "-n",
                    &ns,
                    "-l",
                    "app.kubernetes.io/component=server",
                    "--tail=20",
                    "--prefix",
                ])
                .output()
                .unwrap();
            panic!(
                "timed out waiting for {what}; last seen:\n{obj:#}\n{}\n{}{}",
                String::from_utf8_lossy(&pods.stdout),
                String::from_utf8_lossy(&logs.stdout),
                String::from_utf8_lossy(&logs.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn is_ready(obj: &Value) -> bool {
    condition(obj, "Ready").is_some_and(|c| c["status"] == "True")
}

/// The instance's running server pods: (name, `http://<pod IP>:8080`), sorted by name.
async fn server_pods(client: &kube::Client, ns: &str, name: &str) -> Vec<(String, String)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&format!(
            "app.kubernetes.io/instance={name},app.kubernetes.io/component=server"
        )))
        .await
        .unwrap();
    let mut out: Vec<(String, String)> = list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|p| {
            let ip = p.status.as_ref()?.pod_ip.clone()?;
            Some((p.metadata.name.clone()?, format!("http://{ip}:8080")))
        })
        .collect();
    out.sort();
    out
}

/// The instance's Service (`http://<ClusterIP>:80`, through kube-proxy's rules in the run's namespace), once
/// it answers: kube-proxy programs a Service's endpoints a moment after the pods are Ready.
async fn service(client: &kube::Client, ns: &str, name: &str) -> Tmi {
    let svc = Api::<Service>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    let ip = svc.spec.unwrap().cluster_ip.unwrap();
    let tmi = Tmi::new(format!("http://{ip}:80"));
    let started = Instant::now();
    loop {
        match tmi.try_call(Method::GET, "/readyz", None, None).await {
            Ok(r) if r.status == 200 => return tmi,
            other => assert!(
                started.elapsed() < Duration::from_secs(30),
                "the Service never answered: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How many of the instance's server pods are terminating.
async fn terminating_pods(client: &kube::Client, ns: &str, name: &str) -> usize {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&format!(
            "app.kubernetes.io/instance={name},app.kubernetes.io/component=server"
        )))
        .await
        .unwrap();
    list.items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some())
        .count()
}

/// A TmiInstance `tmi` with two server replicas on `db_url` and the run's Redis, once Ready: its API, its two
/// Ready pods, and its Service (answering).
struct Running {
    api: Api<TmiInstance>,
    pods: Vec<(String, String)>,
    service: Tmi,
}

async fn two_replicas(ns: &TestNamespace, db_url: &str) -> Running {
    let api: Api<TmiInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    let applied = Instant::now();
    apply_instance(&ns.name, "tmi", db_url, 2);
    wait_instance(&api, "tmi", "Ready with two real pods", is_ready).await;
    eprintln!(
        "kubectl apply to Ready (2 replicas, real pods): {:.1?}",
        applied.elapsed()
    );
    let pods = server_pods(&ns.client, &ns.name, "tmi").await;
    assert_eq!(pods.len(), 2, "two Ready server pods: {pods:?}");
    let service = service(&ns.client, &ns.name, "tmi").await;
    Running { api, pods, service }
}

/// Two server pods on PostgreSQL (by its Service's DNS name) and Redis: a login through the Service, a threat
/// model written through one pod and read through the other, and two collaborators on different pods editing
/// one diagram.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_like_instance_serves_through_its_service_and_both_pods() {
    install_operator();
    let ns = cp().namespace("pods-prod").await;
    // The database by its Service's DNS name, as in a real cluster: CoreDNS and kube-proxy on the node.
    let db = behind_service(&ns.name, "postgres", &database("prod"));
    assert!(db.contains("postgres.pods-prod-"), "{db}");
    let Running { pods, service, .. } = two_replicas(&ns, &db).await;
    let a = Tmi::new(pods[0].1.clone());
    let b = Tmi::new(pods[1].1.clone());

    // The dev login through the Service; the token works on every pod (they share the JWT Secret).
    let alice = service.login("alice").await;
    assert_eq!(service.call(Method::GET, "/readyz", None, None).await.status, 200);
    let (tm, d) = a.threat_model_with_diagram(&alice, "written through pod A").await;
    let read = b
        .call(Method::GET, &format!("/threat_models/{tm}"), Some(&alice), None)
        .await
        .expect(200);
    assert_eq!(read["name"], "written through pod A");

    // Two collaborators, one socket on each pod: an edit on one reaches the other through Redis.
    let bob = service.login("bob").await;
    a.json_patch(
        &format!("/threat_models/{tm}"),
        &alice,
        json!([{"op": "add", "path": "/authorization/-",
            "value": {"principal_type": "user", "provider": "tmi", "provider_id": "bob", "role": "writer"}}]),
    )
    .await
    .expect(200);
    let session = a.session(&alice, &tm, &d).await;
    let mut on_a = a.connect(&alice, &session).await;
    on_a.wait_for("diagram_state", |_| true).await;
    let mut on_b = b.connect(&bob, &session).await;
    on_b.wait_for("diagram_state", |_| true).await;
    let op = on_a.add_cell("from-a").await;
    let ev = on_b
        .wait_for("diagram_operation_event", |v| v["operation_id"] == op.as_str())
        .await;
    assert_eq!(ev["initiating_user"]["provider_id"], "alice");
    let op = on_b.add_cell("from-b").await;
    on_a.wait_for("diagram_operation_event", |v| v["operation_id"] == op.as_str())
        .await;
    on_a.close().await;
    on_b.close().await;
}

/// A server pod killed in the middle of a session: its collaborator reconnects through the Service and
/// finds every operation that was acknowledged (delivered to the other participant) before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_killed_mid_session_loses_nothing_acknowledged() {
    install_operator();
    let ns = cp().namespace("pods-kill").await;
    let Running { pods, service, .. } = two_replicas(&ns, &database("kill")).await;
    let (a, b) = (Tmi::new(pods[0].1.clone()), Tmi::new(pods[1].1.clone()));
    let alice = service.login("alice").await;
    let (tm, d) = a.threat_model_with_diagram(&alice, "kill").await;
    let session = a.session(&alice, &tm, &d).await;
    let mut watcher = a.connect(&alice, &session).await;
    watcher.wait_for("diagram_state", |_| true).await;
    let mut editor = b.connect(&alice, &session).await;
    editor.wait_for("diagram_state", |_| true).await;

    let mut acknowledged = Vec::new();
    for i in 0..5 {
        let id = format!("before-{i}");
        let op = editor.add_cell(&id).await;
        watcher
            .wait_for("diagram_operation_event", |v| v["operation_id"] == op.as_str())
            .await;
        acknowledged.push(id);
    }

    // SIGKILL to the editor's server: no graceful close, the socket just ends.
    let killed = &pods[1].0;
    run(cp().kubectl().args([
        "delete",
        "pod",
        killed,
        "-n",
        &ns.name,
        "--grace-period=0",
        "--force",
        "--wait=false",
    ]));
    loop {
        match editor.next(Duration::from_secs(30)).await {
            Next::Closed(_) => break,
            Next::Json(_) => {}
            Next::TimedOut => panic!("the killed pod's socket stayed open"),
        }
    }

    // The editor reconnects through the Service (the surviving pod, or the replacement once Ready).
    let mut editor = service
        .connect(&alice, &service.session(&alice, &tm, &d).await)
        .await;
    let state = editor.wait_for("diagram_state", |_| true).await;
    let cells = state_cell_ids(&state);
    for id in &acknowledged {
        assert!(
            cells.contains(id),
            "{id} was acknowledged before the kill but is gone: {cells:?}"
        );
    }
    for i in 0..5 {
        let id = format!("after-{i}");
        let op = editor.add_cell(&id).await;
        watcher
            .wait_for("diagram_operation_event", |v| v["operation_id"] == op.as_str())
            .await;
        acknowledged.push(id);
    }
    let stored = service
        .call(
            Method::GET,
            &format!("/threat_models/{tm}/diagrams/{d}"),
            Some(&alice),
            None,
        )
        .await;
    // The session is still open, so REST reads the stored cells as they are.
    let stored = state_cell_ids(&stored.body);
    for id in &acknowledged {
        assert!(
            stored.contains(id),
            "{id} acknowledged but not stored: {stored:?}"
        );
    }
    watcher.close().await;
    editor.close().await;
}

/// A rolling update (an env change) under continuous REST traffic and with collaborators connected through
/// the Service: no request fails, and every socket that ends gets a close frame (1012, service restart) and
/// reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_under_traffic_fails_no_request() {
    install_operator();
    let ns = cp().namespace("pods-roll").await;
    let Running {
        api,
        pods: before,
        service,
    } = two_replicas(&ns, &database("roll")).await;
    let alice = service.login("alice").await;
    let (tm, d) = service.threat_model_with_diagram(&alice, "roll").await;

    // Continuous traffic: reads and writes through the Service, on pooled keep-alive connections.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut traffic = Vec::new();
    for w in 0..4 {
        let (svc, token, tm) = (service.clone(), alice.clone(), tm.clone());
        let (stop, ok, failed, failures) = (stop.clone(), ok.clone(), failed.clone(), failures.clone());
        traffic.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let res = if i.is_multiple_of(3) {
                    svc.try_call(
                        Method::POST,
                        &format!("/threat_models/{tm}/threats"),
                        Some(&token),
                        Some(json!({"name": format!("w{w}-{i}"), "threat_type": ["Spoofing"]})),
                    )
                    .await
                } else {
                    svc.try_call(Method::GET, &format!("/threat_models/{tm}"), Some(&token), None)
                        .await
                };
                match res {
                    Ok(r) if r.status < 300 => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(r) => {
                        failures.lock().unwrap().push(format!("{} {}", r.status, r.body));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => {
                        failures.lock().unwrap().push(format!("{e:?}"));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }

    // A collaborator through the Service; when its pod goes away it must see a close frame, then reconnect.
    let session = service.session(&alice, &tm, &d).await;
    let mut socket = service.connect(&alice, &session).await;
    socket.wait_for("diagram_state", |_| true).await;

    tokio::time::sleep(Duration::from_secs(2)).await;
    api.patch(
        "tmi",
        &PatchParams::apply("e2e-roll"),
        &Patch::Merge(json!({"spec": {"server": {"env": [
            {"name": "TMI_LOG_LEVEL", "value": "debug"},
            {"name": "TMI_RATELIMIT_USER_RPM", "value": LOAD_TEST_USER_RPM},
        ]}}})),
    )
    .await
    .unwrap();
    let generation = api.get("tmi").await.unwrap().metadata.generation.unwrap();
    let mut closes = Vec::new();
    let roll_began = Instant::now();
    loop {
        let obj = serde_json::to_value(api.get("tmi").await.unwrap()).unwrap();
        let after = server_pods(&ns.client, &ns.name, "tmi").await;
        let replaced = after.iter().all(|p| !before.contains(p)) && after.len() == 2;
        if obj["status"]["observedGeneration"] == generation
            && is_ready(&obj)
            && replaced
            && terminating_pods(&ns.client, &ns.name, "tmi").await == 0
        {
            break;
        }
        assert!(
            roll_began.elapsed() < TIMEOUT,
            "the rollout did not finish: {obj:#}"
        );
        match socket.next(Duration::from_millis(200)).await {
            Next::Closed(code) => {
                closes.push(code);
                let session = service.session(&alice, &tm, &d).await;
                socket = service.connect(&alice, &session).await;
                socket.wait_for("diagram_state", |_| true).await;
            }
            Next::Json(_) | Next::TimedOut => {}
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for t in traffic {
        t.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("rolling update: {ok} requests succeeded, {failed} failed; socket closes: {closes:?}");
    assert!(ok > 50, "too little traffic to prove anything: {ok}");
    assert_eq!(
        failed,
        0,
        "requests failed during the rollout: {:?}",
        failures.lock().unwrap()
    );
    assert!(
        !closes.is_empty(),
        "the collaborator's pod was replaced, so its socket must have ended"
    );
    assert!(
        closes.iter().all(|c| *c == Some(1012)),
        "every socket that ended got a close frame with 1012 (service restart): {closes:?}"
    );
    // The reconnected socket works: an edit is applied and stored.
    let id = "after-the-rollout";
    socket.add_cell(id).await;
    let started = Instant::now();
    loop {
        let d = service
            .call(
                Method::GET,
                &format!("/threat_models/{tm}/diagrams/{d}"),
                Some(&alice),
                None,
            )
            .await
            .expect(200);
        if d["cells"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["id"] == cell_id(id).as_str())
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the edit after reconnecting was not stored"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    socket.close().await;
}

/// A database URL that points nowhere: the instance says so in its conditions, with a reason naming the
/// database, not only as pods in CrashLoopBackOff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_database_url_is_a_condition_naming_the_database() {
    install_operator();
    let ns = cp().namespace("pods-baddb").await;
    let api: Api<TmiInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    let node_ip = std::env::var("TMI_E2E_NODE_IP").unwrap();
    // A closed port on the node: connections are refused at once.
    apply_instance(
        &ns.name,
        "tmi",
        &format!("postgres://tmi:secret-password@{node_ip}:1/tmi"),
        1,
    );
    let obj = wait_instance(&api, "tmi", "a DatabaseUnreachable condition", |o| {
        condition(o, "Ready").is_some_and(|c| c["reason"] == "DatabaseUnreachable")
    })
    .await;
    let ready = condition(&obj, "Ready").unwrap();
    assert_eq!(ready["status"], "False");
    let message = ready["message"].as_str().unwrap();
    assert!(message.contains("database"), "{message}");
    assert!(
        !message.contains("secret-password"),
        "the password leaked into the status: {message}"
    );

    // Fixed URL: Ready again.
    let good = database("baddb");
    let patch = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tmi-db"}, "stringData": {"url": good}});
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(ns.client.clone(), &ns.name)
        .patch(
            "tmi-db",
            &PatchParams::apply("e2e-baddb").force(),
            &Patch::Apply(patch),
        )
        .await
        .unwrap();
    wait_instance(&api, "tmi", "Ready after the URL was fixed", is_ready).await;
}

/// Sets the instance `tmi`'s `spec.version`; returns the generation that makes.
async fn set_version(api: &Api<TmiInstance>, version: &str) -> i64 {
    api.patch(
        "tmi",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "version": version } })),
    )
    .await
    .unwrap();
    api.get("tmi").await.unwrap().metadata.generation.unwrap()
}

/// The instance's `status.upgrade`.
fn upgrade(obj: &Value) -> &Value {
    &obj["status"]["upgrade"]
}

/// An RFC 3339 timestamp of the status as seconds since the epoch.
fn secs(t: &Value) -> i64 {
    t.as_str()
        .and_then(|s| s.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .map(|t| t.as_second())
        .unwrap_or_else(|| panic!("not a timestamp: {t}"))
}

/// This build's version, the tag of the locally built tmi-server image.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The tag of the locally built release with one more migration.
fn next() -> String {
    format!("{VERSION}-next")
}
