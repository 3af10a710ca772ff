//! Operator benchmark on the local control plane (`cargo bench -p tmi-operator --bench operator`).
//!
//! For each scenario (instances over namespaces), in one run:
//! - baseline: a raw server-side apply of the same rendered objects (what the operator would create, owner
//!   references left out) at the same client concurrency, timed until every Deployment is available;
//! - operator: the release `tmi-operator` binary as a child process; the instances are created at the same
//!   concurrency and timed until every instance is `Ready` at its generation;
//! - the ratio of the two, the operator's peak RSS (VmHWM) and CPU seconds (utime + stime), and API requests
//!   per reconcile in steady state (from its own `/metrics`, over a window of resyncs).
//!
//! Scenarios: `BENCH_SCENARIOS` (default `100x10,1000x100`), concurrency `BENCH_CONCURRENCY` (default 10).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is the right outcome

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, CustomResourceExt, Resource, ResourceExt};
use serde_json::json;
use tmi_operator::controller::{inputs::Inputs, render, validate};
use tmi_operator::crd::TmiInstance;

const SECRET_URL: &str = "postgres://tmi:bench@postgres.bench.svc:5432/tmi";

fn instance_yaml(name: &str, ns: &str) -> serde_json::Value {
    json!({
        "apiVersion": "tmi.dev/v1alpha1", "kind": "TmiInstance",
        "metadata": { "name": name, "namespace": ns },
        "spec": {
            "version": "1.0.0",
            "database": { "external": { "urlSecretRef": { "name": "db", "key": "url" } } },
            // Small requests so that 1000 pods fit on the one fake node.
            "server": { "resources": { "requests": { "cpu": "10m", "memory": "16Mi" } } }
        }
    })
}

async fn for_each_concurrent<T, F, Fut>(items: Vec<T>, concurrency: usize, f: F)
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    futures::stream::iter(items)
        .for_each_concurrent(concurrency, f)
        .await;
}

async fn create_namespaces(client: &Client, prefix: &str, count: usize) -> Vec<String> {
    let api: Api<Namespace> = Api::all(client.clone());
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i:03}")).collect();
    for_each_concurrent(names.clone(), 10, |name| {
        let api = api.clone();
        let client = client.clone();
        async move {
            let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
            api.create(&PostParams::default(), &ns).await.unwrap();
            let secret: Secret = serde_json::from_value(json!({
                "metadata": {"name": "db"}, "stringData": {"url": SECRET_URL}
            }))
            .unwrap();
            Api::<Secret>::namespaced(client, &name)
                .create(&PostParams::default(), &secret)
                .await
                .unwrap();
        }
    })
    .await;
    names
}

async fn delete_namespaces(client: &Client, names: &[String]) {
    let api: Api<Namespace> = Api::all(client.clone());
    for n in names {
        let _ = api.delete(n, &DeleteParams::background()).await;
    }
    // Wait for the pods to go, so the next phase has the fake node's capacity.
    let pods: Api<Pod> = Api::all(client.clone());
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(600) {
        let left = pods.list(&ListParams::default()).await.unwrap().items.len();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn placements(namespaces: &[String], instances: usize) -> Vec<(String, String)> {
    (0..instances)
        .map(|i| (namespaces[i % namespaces.len()].clone(), format!("tmi-{i:04}")))
        .collect()
}

/// Seconds until every Deployment in `namespaces` (by label) is available.
async fn wait_deployments_available(client: &Client, expected: usize, started: Instant) -> f64 {
    let api: Api<Deployment> = Api::all(client.clone());
    let lp = ListParams::default().labels("app.kubernetes.io/managed-by=tmi-operator");
    loop {
        let ready = api
            .list(&lp)
            .await
            .unwrap()
            .items
            .iter()
            .filter(|d| d.status.as_ref().and_then(|s| s.available_replicas) == Some(1))
            .count();
        if ready >= expected {
            return started.elapsed().as_secs_f64();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn baseline(client: &Client, namespaces: &[String], instances: usize, concurrency: usize) -> f64 {
    let work = placements(namespaces, instances);
    let started = Instant::now();
    let pp = PatchParams::apply("tmi-bench-raw").force();
    for_each_concurrent(work, concurrency, |(ns, name)| {
        let client = client.clone();
        let pp = pp.clone();
        async move {
            let mut obj: TmiInstance = serde_json::from_value(instance_yaml(&name, &ns)).unwrap();
            obj.metadata.uid = Some("00000000-0000-0000-0000-000000000000".into());
            let valid = validate::validate(&obj).unwrap();
            let desired = render::render(&valid, &Inputs::default());
            let secret = render::generated_secret::render(&valid, "bench-jwt-key".into());
            macro_rules! ssa {
                ($obj:expr, $k:ty) => {{
                    let mut o: $k = $obj;
                    o.meta_mut().owner_references = None;
                    Api::<$k>::namespaced(client.clone(), &ns)
                        .patch(&o.name_any(), &pp, &Patch::Apply(&o))
                        .await
                        .unwrap();
                }};
            }
            ssa!(
                desired.service_account,
                k8s_openapi::api::core::v1::ServiceAccount
            );
            ssa!(desired.config_map, k8s_openapi::api::core::v1::ConfigMap);
            ssa!(secret, Secret);
            ssa!(desired.deployment, Deployment);
            ssa!(desired.service, k8s_openapi::api::core::v1::Service);
        }
    })
    .await;
    wait_deployments_available(client, instances, started).await
}

struct OperatorProcess {
    child: Child,
    admin: String,
}

impl OperatorProcess {
    fn start(kubeconfig: &std::path::Path, resync_seconds: u64) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let admin = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_tmi-operator"))
            .args([
                "run",
                "--leader-elect=false",
                "--log-format=json",
                "--max-concurrent-reconciles=10",
            ])
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--admin-addr={admin}"))
            .arg(format!("--resync-period-seconds={resync_seconds}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        OperatorProcess { child, admin }
    }

    /// (peak RSS in MiB, CPU seconds) from /proc.
    fn usage(&self) -> (f64, f64) {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let hwm_kib: f64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, r)| r.split_whitespace().collect())
            .unwrap_or_default();
        // After the `(comm)` field: state is index 0, utime 11, stime 12 (clock ticks, 100 per second on Linux).
        let ticks: f64 = [11, 12]
            .iter()
            .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
            .sum();
        (hwm_kib / 1024.0, ticks / 100.0)
    }

    async fn metrics(&self) -> BTreeMap<String, f64> {
        let body = reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let mut out = BTreeMap::new();
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            if let Some((k, v)) = line.rsplit_once(' ')
                && let Ok(v) = v.parse::<f64>()
            {
                out.insert(k.to_owned(), v);
            }
        }
        out
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sum(m: &BTreeMap<String, f64>, prefix: &str, exclude: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(prefix) && !k.contains(exclude))
        .map(|(_, v)| v)
        .sum()
}

struct Row {
    scenario: String,
    raw: f64,
    operator: f64,
    rss: f64,
    cpu: f64,
    requests_per_reconcile: f64,
    writes_per_reconcile: f64,
}

async fn operator_run(
    client: &Client,
    kubeconfig: &std::path::Path,
    namespaces: &[String],
    instances: usize,
    concurrency: usize,
) -> (f64, f64, f64, f64, f64) {
    let resync = 10;
    let op = OperatorProcess::start(kubeconfig, resync);
    // Wait for the admin endpoint.
    let started = Instant::now();
    while reqwest::get(format!("http://{}/healthz", op.admin))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "operator did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let work = placements(namespaces, instances);
    let started = Instant::now();
    for_each_concurrent(work, concurrency, |(ns, name)| {
        let client = client.clone();
        async move {
            let api: Api<TmiInstance> = Api::namespaced(client, &ns);
            api.patch(
                &name,
                &PatchParams::apply("tmi-bench"),
                &Patch::Apply(instance_yaml(&name, &ns)),
            )
            .await
            .unwrap();
        }
    })
    .await;
    let api: Api<TmiInstance> = Api::all(client.clone());
    let elapsed = loop {
        let ready = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|i| namespaces.contains(&i.namespace().unwrap_or_default()))
            .filter(|i| {
                let s = i.status.as_ref();
                s.and_then(|s| s.observed_generation) == i.metadata.generation
                    && s.and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        if ready >= instances {
            break started.elapsed().as_secs_f64();
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "only {ready} of {instances} Ready after 30 min"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // Steady state: let the last Deployment status events settle, then measure over several resyncs.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = op.metrics().await;
    tokio::time::sleep(Duration::from_secs(resync * 3 + 2)).await;
    let after = op.metrics().await;
    let reconciles = sum(&after, "tmi_operator_reconciliations_total", "~")
        - sum(&before, "tmi_operator_reconciliations_total", "~");
    let requests = sum(&after, "tmi_operator_api_requests_total", "WATCH")
        - sum(&before, "tmi_operator_api_requests_total", "WATCH");
    let writes =
        sum(&after, "tmi_operator_writes_total", "~") - sum(&before, "tmi_operator_writes_total", "~");
    let (rss, cpu) = op.usage();
    let per = |x: f64| {
        if reconciles > 0.0 {
            x / reconciles
        } else {
            f64::NAN
        }
    };
    eprintln!("steady state: {reconciles} reconciles, {requests} requests, {writes} writes");
    (elapsed, rss, cpu, per(requests), per(writes))
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let cp = tmi_e2e::shared();
        let client = cp.client().await;
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        crds.patch("tmiinstances.tmi.dev", &PatchParams::apply("tmi-bench").force(), &Patch::Apply(TmiInstance::crd()))
            .await
            .unwrap();
        await_condition(crds, "tmiinstances.tmi.dev", conditions::is_crd_established()).await.unwrap();

        let scenarios = std::env::var("BENCH_SCENARIOS").unwrap_or_else(|_| "100x10,1000x100".into());
        let concurrency: usize = std::env::var("BENCH_CONCURRENCY").ok().and_then(|c| c.parse().ok()).unwrap_or(10);
        let mut rows = Vec::new();
        for scenario in scenarios.split(',') {
            let (instances, namespaces) = scenario.split_once('x').expect("scenario is <instances>x<namespaces>");
            let (instances, namespaces): (usize, usize) = (instances.parse().unwrap(), namespaces.parse().unwrap());
            eprintln!("scenario {instances} instances over {namespaces} namespaces, concurrency {concurrency}");

            let raw_ns = create_namespaces(&client, &format!("bench-raw-{instances}"), namespaces).await;
            let raw = baseline(&client, &raw_ns, instances, concurrency).await;
            eprintln!("baseline: {raw:.1} s");
            delete_namespaces(&client, &raw_ns).await;

            let op_ns = create_namespaces(&client, &format!("bench-op-{instances}"), namespaces).await;
            let (operator, rss, cpu, rpr, wpr) = operator_run(&client, cp.kubeconfig(), &op_ns, instances, concurrency).await;
            eprintln!("operator: {operator:.1} s, peak RSS {rss:.1} MiB, CPU {cpu:.1} s");
            delete_namespaces(&client, &op_ns).await;
            rows.push(Row {
                scenario: format!("{instances} instances / {namespaces} namespaces"),
                raw,
                operator,
                rss,
                cpu,
                requests_per_reconcile: rpr,
                writes_per_reconcile: wpr,
            });
        }
        println!("\n| scenario | raw SSA until available (s) | operator until Ready (s) | ratio | operator peak RSS (MiB) | operator CPU (s) | steady-state API requests / reconcile | writes / reconcile |");
        println!("|---|---|---|---|---|---|---|---|");
        for r in &rows {
            println!(
                "| {} | {:.1} | {:.1} | {:.2} | {:.1} | {:.1} | {:.3} | {:.3} |",
                r.scenario,
                r.raw,
                r.operator,
                r.operator / r.raw,
                r.rss,
                r.cpu,
                r.requests_per_reconcile,
                r.writes_per_reconcile
            );
        }
    });
}
