//! Installing the operator. The Helm chart (`charts/tmi-operator`): it lints, renders objects the API server accepts in both RBAC
//! modes, installs for real, and its RBAC is exactly what the operator uses: the operator runs here under the
//! chart's ServiceAccount (its token, its permissions) through a whole lifecycle, every request it makes is
//! recorded, and the recorded verbs must equal the granted ones. The kustomize manifests (`config/`): the same
//! RBAC, a real `kubectl apply -k`, and every sample in `config/samples` brought to Ready.

#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use tmi_operator::controller::Config;
use tmi_operator::crd::TmiInstance;
use tmi_operator::leader::LeaseConfig;
use tmi_operator::metrics::Metrics;

mod common;
use common::{TIMEOUT, cond_true, dynamic_api, ok, wait_current, wait_gone};

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/tmi-operator")
}

fn helm(args: &[&str]) -> Output {
    let cp = tmi_e2e::shared();
    Command::new(cp.bin_dir().join("helm"))
        .args(args)
        .arg(format!("--kubeconfig={}", cp.kubeconfig().display()))
        .env("HELM_CACHE_HOME", cp.dir().join("helm/cache"))
        .env("HELM_CONFIG_HOME", cp.dir().join("helm/config"))
        .env("HELM_DATA_HOME", cp.dir().join("helm/data"))
        .output()
        .expect("running helm")
}

/// (apiGroup, resource, verb) triples granted by the Roles and ClusterRoles in rendered manifests.
fn granted(manifests: &str) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for doc in serde_yaml::Deserializer::from_str(manifests) {
        let v: Value = serde::Deserialize::deserialize(doc).unwrap();
        if !matches!(v["kind"].as_str(), Some("Role" | "ClusterRole")) {
            continue;
        }
        for rule in v["rules"].as_array().unwrap() {
            for g in rule["apiGroups"].as_array().unwrap() {
                for r in rule["resources"].as_array().unwrap() {
                    for verb in rule["verbs"].as_array().unwrap() {
                        out.insert((s(g), s(r), s(verb)));
                    }
                }
            }
        }
    }
    out
}

fn s(v: &Value) -> String {
    v.as_str().unwrap().to_owned()
}

/// One request the operator made.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    query: String,
    content_type: String,
}

/// The RBAC (apiGroup, resource, verb) a request needs. Server-side apply needs `create` as well as `patch` when
/// the object may not exist yet (the API server checks both); on a status subresource it never creates.
fn rbac_of(r: &Request) -> Vec<(String, String, String)> {
    let parts: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest.to_vec()),
        ["apis", group, _version, rest @ ..] => ((*group).to_owned(), rest.to_vec()),
        _ => panic!("unexpected path {}", r.path),
    };
    if rest.is_empty() {
        // API discovery (`/apis/<group>/<version>`, whether an optional API is served): granted to every
        // authenticated user by the built-in `system:discovery` role, not by the chart.
        return Vec::new();
    }
    let rest = match rest.as_slice() {
        ["namespaces", _ns, rest @ ..] if !rest.is_empty() => rest.to_vec(),
        other => other.to_vec(),
    };
    let (resource, named) = match rest.as_slice() {
        [resource] => ((*resource).to_owned(), false),
        [resource, _name] => ((*resource).to_owned(), true),
        [resource, _name, sub] => (format!("{resource}/{sub}"), true),
        _ => panic!("unexpected path {}", r.path),
    };
    let watch = r.query.split('&').any(|kv| kv == "watch=true" || kv == "watch=1");
    let verbs: Vec<&str> = match (r.method.as_str(), named) {
        ("GET", true) => vec!["get"],
        ("GET", false) if watch => vec!["watch"],
        ("GET", false) => vec!["list"],
        ("POST", _) => vec!["create"],
        ("PUT", _) => vec!["update"],
        ("PATCH", _) if r.content_type.contains("apply-patch") && !resource.contains('/') => {
            vec!["patch", "create"]
        }
        ("PATCH", _) => vec!["patch"],
        ("DELETE", true) => vec!["delete"],
        ("DELETE", false) => vec!["deletecollection"],
        other => panic!("unexpected request {other:?} {}", r.path),
    };
    verbs
        .into_iter()
        .map(|v| (group.clone(), resource.clone(), v.to_owned()))
        .collect()
}

/// A client that authenticates with `token` (not the admin certificate) and records every request.
async fn recording_client(token: &str, log: Arc<Mutex<Vec<Request>>>) -> Client {
    let cp = tmi_e2e::shared();
    let kc = kube::config::Kubeconfig::read_from(cp.kubeconfig()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.to_owned().into()),
        ..Default::default()
    };
    let layer = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        log.lock().unwrap().push(Request {
            method: req.method().to_string(),
            path: req.uri().path().to_owned(),
            query: req.uri().query().unwrap_or_default().to_owned(),
            content_type: req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
        });
        req
    });
    kube::client::ClientBuilder::try_from(config)
        .unwrap()
        .with_layer(&layer)
        .build()
}

#[test]
fn chart_lints_and_its_crds_match_the_generated_ones() {
    ok(
        helm(&["lint", "--strict", chart_dir().to_str().unwrap()]),
        "helm lint",
    );
    // Namespaced RBAC without namespaces is refused with a message, not rendered into a useless install.
    let out = helm(&[
        "template",
        "t",
        chart_dir().to_str().unwrap(),
        "--set",
        "rbac.mode=namespaced",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("watchNamespaces"),
        "{out:?}"
    );
    // values.schema.json refuses unknown values.
    let out = helm(&[
        "template",
        "t",
        chart_dir().to_str().unwrap(),
        "--set",
        "rbac.mode=everything",
    ]);
    assert!(!out.status.success());

    let generated = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/tmi.dev_tmiinstances.yaml"),
    )
    .unwrap();
    let in_chart = std::fs::read_to_string(chart_dir().join("crds/tmi.dev_tmiinstances.yaml")).unwrap();
    assert!(
        generated == in_chart,
        "charts/tmi-operator/crds is stale; run `make crds`"
    );
}

/// Both RBAC modes render to objects the API server accepts (server-side dry run).
#[tokio::test]
async fn rendered_chart_passes_server_side_dry_run() {
    let cp = tmi_e2e::shared();
    let release_ns = cp.namespace("chart-dry").await;
    let tenant = cp.namespace("chart-dry-tenant").await;
    let chart = chart_dir();
    for extra in [
        vec![],
        vec![
            "--set".to_owned(),
            "rbac.mode=namespaced".to_owned(),
            "--set".to_owned(),
            format!("watchNamespaces={{{}}}", tenant.name),
        ],
    ] {
        let mut args = vec![
            "template",
            "dry",
            chart.to_str().unwrap(),
            "--namespace",
            &release_ns.name,
            "--include-crds",
        ];
        args.extend(extra.iter().map(String::as_str));
        let manifests = ok(helm(&args), "helm template");
        let out = cp
            .kubectl_stdin(
                &["apply", "--server-side", "--dry-run=server", "-f", "-"],
                &manifests,
            )
            .unwrap();
        ok(out, "kubectl apply --dry-run=server");
    }
}

/// A real `helm install` (namespaced mode); the operator runs with the chart's ServiceAccount token and
/// reconciles an instance through creation, scale-out with a PodDisruptionBudget, scale-in and Ready, and the
/// production-like sample to Ready; the
/// verbs it used are exactly the verbs the chart grants.
#[tokio::test]
async fn installed_chart_grants_exactly_what_the_operator_uses() {
    let cp = tmi_e2e::shared();
    let system = cp.namespace("chart-system").await;
    let tenant = cp.namespace("chart-tenant").await;
    let release = format!("tmi-{}", &system.name[system.name.len() - 6..]);
    let set_ns = format!("watchNamespaces={{{}}}", tenant.name);
    ok(
        helm(&[
            "install",
            &release,
            chart_dir().to_str().unwrap(),
            "--namespace",
            &system.name,
            "--set",
            "rbac.mode=namespaced",
            "--set",
            &set_ns,
            "--wait",
            "--timeout",
            "90s",
        ]),
        "helm install",
    );
    let manifests = ok(
        helm(&["get", "manifest", &release, "--namespace", &system.name]),
        "helm get manifest",
    );
    let granted = granted(&manifests);
    // The optional APIs the operator writes to, so that their verbs are exercised (and checked) too.
    cp.install_gateway_api_crds().expect("Gateway API CRDs");
    cp.install_cert_manager_crds().expect("cert-manager CRDs");

    // The operator pods are fake (kwok); the operator itself runs here, as the chart's ServiceAccount.
    let sa = format!("{release}-tmi-operator");
    let log: Arc<Mutex<Vec<Request>>> = Arc::default();
    let (stop, operator) = run_operator_as(&system.name, &sa, vec![tenant.name.clone()], log.clone()).await;
    let admin = cp.client().await;

    // An instance whose Secrets do not exist yet (the operator looks for them), then do.
    let api: Api<TmiInstance> = Api::namespaced(admin.clone(), &tenant.name);
    let instance = |replicas: i32| {
        json!({
            "apiVersion": "tmi.dev/v1alpha1", "kind": "TmiInstance", "metadata": { "name": "acme" },
            "spec": {
                "version": "1.0.0",
                "server": { "replicas": replicas, "envFrom": [{ "configMapRef": { "name": "extra" } }] },
                "database": { "external": { "urlSecretRef": { "name": "db", "key": "url" } } },
                "cache": { "external": { "urlSecretRef": { "name": "redis", "key": "url" } } }
            }
        })
    };
    api.patch(
        "acme",
        &PatchParams::apply("chart-test"),
        &Patch::Apply(instance(2)),
    )
    .await
    .unwrap();
    wait_current(&api, "acme", "Stalled on the missing Secrets", |v| {
        cond_true(v, "Stalled")
    })
    .await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(admin.clone(), &tenant.name);
    for (name, url) in [
        ("db", "postgres://tmi:pw@db.example:5432/tmi"),
        ("redis", "redis://redis.example:6379/0"),
    ] {
        let s = json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": name }, "stringData": { "url": url } });
        secrets
            .patch(name, &PatchParams::apply("chart-test"), &Patch::Apply(s))
            .await
            .unwrap();
    }
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(admin.clone(), &tenant.name);
    let cm = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "extra" }, "data": { "TMI_LOG_LEVEL": "debug" } });
    cms.patch("extra", &PatchParams::apply("chart-test"), &Patch::Apply(cm))
        .await
        .unwrap();
    wait_current(&api, "acme", "Ready with two replicas", |v| cond_true(v, "Ready")).await;
    api.patch(
        "acme",
        &PatchParams::apply("chart-test"),
        &Patch::Apply(instance(1)),
    )
    .await
    .unwrap();
    wait_current(&api, "acme", "Ready with one replica", |v| {
        cond_true(v, "Ready") && v["status"]["replicas"] == 1
    })
    .await;
    // A version change runs a migrate Job (kwok completes it), then rolls; and back.
    for version in ["1.0.1", "1.0.0"] {
        let mut upgraded = instance(1);
        upgraded["spec"]["version"] = json!(version);
        api.patch("acme", &PatchParams::apply("chart-test"), &Patch::Apply(upgraded))
            .await
            .unwrap();
        wait_current(&api, "acme", "the upgrade Succeeded", |v| {
            cond_true(v, "Ready")
                && v["status"]["upgrade"]["phase"] == "Succeeded"
                && v["status"]["version"] == version
        })
        .await;
    }
    let pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
        Api::namespaced(admin.clone(), &tenant.name);
    assert!(
        pdbs.list(&Default::default()).await.unwrap().items.is_empty(),
        "the PDB of two replicas is gone"
    );

    // Exposure: an Ingress with a cert-manager Certificate, then a Gateway API HTTPRoute, then nothing. No
    // ingress or Gateway controller runs in this cluster (their CRDs are installed): the objects and the
    // conditions waiting for them are what this checks; e2e/tests/exposure.rs proves them with real ones.
    let exposed = |exposure: Value| {
        let mut v = instance(1);
        v["spec"]["hostname"] = json!("tmi.chart.example");
        v["spec"]["exposure"] = exposure;
        v
    };
    let issuer = json!({ "issuerRef": { "name": "ca", "kind": "ClusterIssuer" } });
    api.patch(
        "acme",
        &PatchParams::apply("chart-test"),
        &Patch::Apply(exposed(json!({ "type": "Ingress", "tls": issuer }))),
    )
    .await
    .unwrap();
    wait_current(&api, "acme", "the Ingress waits for an address", |v| {
        reason_of(v, "ExposureReady") == Some("AddressPending")
    })
    .await;
    let ingresses: Api<k8s_openapi::api::networking::v1::Ingress> =
        Api::namespaced(admin.clone(), &tenant.name);
    assert!(
        ingresses.get_opt("acme").await.unwrap().is_some(),
        "the Ingress exists"
    );
    let certificates = dynamic_api(
        &admin,
        &tenant.name,
        "cert-manager.io",
        "Certificate",
        "certificates",
    );
    let routes = dynamic_api(
        &admin,
        &tenant.name,
        "gateway.networking.k8s.io",
        "HTTPRoute",
        "httproutes",
    );
    assert!(
        certificates.get_opt("acme").await.unwrap().is_some(),
        "the Certificate exists"
    );
    api.patch(
        "acme",
        &PatchParams::apply("chart-test"),
        &Patch::Apply(exposed(json!({
            "type": "Gateway", "tls": issuer, "gateway": { "parentRefs": [{ "name": "public" }] }
        }))),
    )
    .await
    .unwrap();
    wait_current(&api, "acme", "the HTTPRoute waits for its Gateway", |v| {
        reason_of(v, "ExposureReady") == Some("Pending")
    })
    .await;
    assert!(
        routes.get_opt("acme").await.unwrap().is_some(),
        "the HTTPRoute exists"
    );
    wait_gone(&ingresses, "acme").await;
    api.patch(
        "acme",
        &PatchParams::apply("chart-test"),
        &Patch::Apply(instance(1)),
    )
    .await
    .unwrap();
    wait_current(&api, "acme", "Ready again without exposure", |v| {
        cond_true(v, "Ready") && reason_of(v, "ExposureReady").is_none()
    })
    .await;
    wait_gone(&routes, "acme").await;
    wait_gone(&certificates, "acme").await;

    // The production-like sample, as shipped, reaches Ready under the chart's permissions.
    for file in [
        "config/samples/production-secrets.example.yaml",
        "config/samples/production.yaml",
    ] {
        ok(
            cp.kubectl()
                .args([
                    "apply",
                    "--server-side",
                    "-n",
                    &tenant.name,
                    "-f",
                    repo(file).to_str().unwrap(),
                ])
                .output()
                .unwrap(),
            file,
        );
    }
    wait_current(&api, "tmi", "the production sample Ready", |v| {
        cond_true(v, "Ready")
    })
    .await;

    // A SQLite instance: the operator creates its PersistentVolumeClaim (nothing provisions volumes here, so
    // its pod stays Pending; the claim is what this checks).
    let lite = json!({
        "apiVersion": "tmi.dev/v1alpha1", "kind": "TmiInstance", "metadata": { "name": "lite" },
        "spec": { "version": "1.0.0", "database": { "sqlite": { "size": "1Gi", "storageClassName": "not-provisioned-here" } } }
    });
    api.patch("lite", &PatchParams::apply("chart-test"), &Patch::Apply(lite))
        .await
        .unwrap();
    let pvcs: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(admin.clone(), &tenant.name);
    let started = Instant::now();
    while pvcs.list(&Default::default()).await.unwrap().items.is_empty() {
        assert!(
            started.elapsed() < TIMEOUT,
            "the SQLite instance got no PersistentVolumeClaim"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_current(&api, "lite", "status of the SQLite instance", |v| {
        v["status"]["conditions"].is_array()
    })
    .await;

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), operator)
        .await
        .expect("operator did not stop")
        .unwrap()
        .unwrap();

    let requests = log.lock().unwrap().clone();
    let used: BTreeSet<_> = requests.iter().flat_map(rbac_of).collect();
    // Granted for what a short run may not reach: the event recorder patches an Event only when the same
    // event repeats (a series).
    // Failed migrate Jobs are deleted only when a failed upgrade is set back (operator/tests/upgrades.rs).
    let may_be_unused: BTreeSet<_> = [("events.k8s.io", "events", "patch"), ("batch", "jobs", "delete")]
        .into_iter()
        .map(|(g, r, v)| (g.to_owned(), r.to_owned(), v.to_owned()))
        .collect();
    let missing: Vec<_> = used.difference(&granted).collect();
    let unused: Vec<_> = granted
        .difference(&used)
        .filter(|g| !may_be_unused.contains(*g))
        .collect();
    assert!(
        missing.is_empty(),
        "the operator used verbs the chart does not grant: {missing:?}"
    );
    assert!(
        unused.is_empty(),
        "the chart grants verbs the operator never used: {unused:?}"
    );
    // Every request succeeded under the chart's permissions: the instance got Ready above.
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// `config/rbac` (kustomize) grants exactly what the chart's cluster mode grants.
#[test]
fn kustomize_rbac_equals_chart_rbac() {
    let cp = tmi_e2e::shared();
    let kustomized = ok(
        cp.kubectl()
            .args(["kustomize", repo("config/rbac").to_str().unwrap()])
            .output()
            .unwrap(),
        "kubectl kustomize",
    );
    let chart = ok(
        helm(&["template", "t", chart_dir().to_str().unwrap()]),
        "helm template",
    );
    assert_eq!(
        granted(&kustomized),
        granted(&chart),
        "config/rbac/role.yaml and the chart's rules differ"
    );
}

/// The `reason` of condition `type_` in a TmiInstance's status, if present.
fn reason_of<'a>(v: &'a Value, type_: &str) -> Option<&'a str> {
    v["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .and_then(|c| c["reason"].as_str())
}

/// Runs the operator in this process as ServiceAccount `namespace/name` (its Lease has the same name and
/// namespace, as both install methods set it up), watching `watch`, until the returned sender is used; the
/// recorded requests go to `log`.
async fn run_operator_as(
    namespace: &str,
    name: &str,
    watch: Vec<String>,
    log: Arc<Mutex<Vec<Request>>>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let cp = tmi_e2e::shared();
    let token = ok(
        cp.kubectl()
            .args(["create", "token", name, "-n", namespace, "--duration=1h"])
            .output()
            .unwrap(),
        "kubectl create token",
    );
    let client = recording_client(token.trim(), log).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = Config {
        namespaces: watch,
        resync: Duration::from_secs(2),
        progress_poll: Duration::from_millis(500),
        ..Config::default()
    };
    let lease = LeaseConfig {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        identity: "install-test".into(),
        duration_seconds: 6,
        grace_seconds: 2,
    };
    let task = tokio::spawn(tmi_operator::leader::run(
        client,
        config,
        lease,
        Arc::new(Metrics::default()),
        Arc::new(AtomicBool::new(false)),
        async {
            let _ = stopped.await;
        },
    ));
    (stop, task)
}

/// `kubectl apply -k config/default` installs the operator (cluster-wide mode); running as its
/// ServiceAccount, the operator brings every sample in `config/samples` to Ready, each in its namespace.
#[tokio::test]
async fn kustomize_install_brings_every_sample_to_ready() {
    let cp = tmi_e2e::shared();
    let client = cp.client().await;
    ok(
        cp.kubectl()
            .args([
                "apply",
                "--server-side",
                "-k",
                repo("config/default").to_str().unwrap(),
            ])
            .output()
            .unwrap(),
        "kubectl apply -k config/default",
    );
    ok(
        cp.kubectl()
            .args([
                "rollout",
                "status",
                "deployment/tmi-operator",
                "-n",
                "tmi-system",
                "--timeout=90s",
            ])
            .output()
            .unwrap(),
        "the operator Deployment rolls out",
    );
    // The local control plane has no volume provisioner: the SQLite samples bind to these.
    ok(
        cp.kubectl()
            .args([
                "apply",
                "-f",
                repo("config/samples/local-pv.yaml").to_str().unwrap(),
            ])
            .output()
            .unwrap(),
        "local PVs",
    );

    let minimal_ns = cp.namespace("sample-minimal").await;
    let production_ns = cp.namespace("sample-production").await;
    // Cluster-wide RBAC, but the watch is limited to this test's namespaces: other tests in this binary run
    // operators of their own on the same control plane.
    let watch = vec![
        minimal_ns.name.clone(),
        production_ns.name.clone(),
        "tenant-red".into(),
        "tenant-blue".into(),
    ];
    let log: Arc<Mutex<Vec<Request>>> = Arc::default();
    let (stop, operator) = run_operator_as("tmi-system", "tmi-operator", watch, log.clone()).await;
    let apply_in = |ns: &str, file: &str| {
        ok(
            cp.kubectl()
                .args([
                    "apply",
                    "--server-side",
                    "-n",
                    ns,
                    "-f",
                    repo(file).to_str().unwrap(),
                ])
                .output()
                .unwrap(),
            file,
        )
    };
    apply_in(&minimal_ns.name, "config/samples/minimal.yaml");
    apply_in(
        &production_ns.name,
        "config/samples/production-secrets.example.yaml",
    );
    apply_in(&production_ns.name, "config/samples/production.yaml");
    ok(
        cp.kubectl()
            .args([
                "apply",
                "--server-side",
                "-f",
                repo("config/samples/multi-tenant.yaml").to_str().unwrap(),
            ])
            .output()
            .unwrap(),
        "multi-tenant sample",
    );

    for (ns, name) in [
        (minimal_ns.name.as_str(), "tmi-minimal"),
        (production_ns.name.as_str(), "tmi"),
        ("tenant-red", "tmi"),
        ("tenant-blue", "tmi"),
    ] {
        let api: Api<TmiInstance> = Api::namespaced(client.clone(), ns);
        wait_current(&api, name, &format!("{ns}/{name} Ready"), |v| {
            cond_true(v, "Ready")
        })
        .await;
    }
    // `kubectl wait`, as the docs tell users to do it.
    ok(
        cp.kubectl()
            .args([
                "wait",
                "--for=condition=Ready",
                "tmi/tmi",
                "-n",
                "tenant-red",
                "--timeout=30s",
            ])
            .output()
            .unwrap(),
        "kubectl wait",
    );

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), operator)
        .await
        .expect("operator did not stop")
        .unwrap()
        .unwrap();
    let manifests = ok(
        cp.kubectl()
            .args(["kustomize", repo("config/rbac").to_str().unwrap()])
            .output()
            .unwrap(),
        "kustomize",
    );
    let used: BTreeSet<_> = log.lock().unwrap().iter().flat_map(rbac_of).collect();
    let config_rbac = granted(&manifests);
    let missing: Vec<_> = used.difference(&config_rbac).collect();
    assert!(
        missing.is_empty(),
        "config/rbac misses verbs the operator used: {missing:?}"
    );
    for ns in ["tenant-red", "tenant-blue"] {
        let _ = cp
            .kubectl()
            .args(["delete", "namespace", ns, "--wait=false"])
            .output();
    }
}
