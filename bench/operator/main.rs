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
//! - what the operator's watch caches hold per object: for each cached kind, the objects in the scenario's
//!   namespaces as the API server serves them, listed once after steady state, and their JSON size as served,
//!   with only `managedFields` dropped (what the caches kept before `controller::cache`), and as the operator
//!   caches them now (the same `controller::cache` trims the operator runs).
//!
//! Scenarios: `BENCH_SCENARIOS` (default `100x10,1000x100`), concurrency `BENCH_CONCURRENCY` (default 10).
//! `TMI_BENCH_OPERATOR_BIN` runs another operator binary (e.g. a copy of an earlier build) in the same bench.
//! With `BENCH_RESULTS_DIR` set, the results are also written to `$BENCH_RESULTS_DIR/operator.json`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is the right outcome

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::PartialObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, CustomResourceExt, Resource, ResourceExt};
use serde::Serialize;
use serde_json::json;
use tmi_operator::controller::{cache, inputs::Inputs, names, render, validate};
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
        // `TMI_BENCH_OPERATOR_BIN` runs another build (e.g. a copy of an earlier one) against the same bench.
        let bin = std::env::var("TMI_BENCH_OPERATOR_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_tmi-operator").to_owned());
        let child = Command::new(bin)
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
    instances: usize,
    caches: Vec<CacheRow>,
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
) -> (f64, f64, f64, f64, f64, Vec<CacheRow>) {
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
    let caches = cache_sizes(client, namespaces).await;
    let per = |x: f64| {
        if reconciles > 0.0 {
            x / reconciles
        } else {
            f64::NAN
        }
    };
    eprintln!("steady state: {reconciles} reconciles, {requests} requests, {writes} writes");
    (elapsed, rss, cpu, per(requests), per(writes), caches)
}

/// JSON size of one cached object of a kind, averaged: as served, with only managedFields dropped (the
/// caches before `controller::cache`), and as cached now.
struct CacheRow {
    kind: &'static str,
    objects: usize,
    served: f64,
    managed_fields_dropped: f64,
    cached: f64,
}

fn json_len<T: Serialize>(o: &T) -> f64 {
    serde_json::to_vec(o).map(|v| v.len()).unwrap_or(0) as f64
}

fn cache_row<K: Serialize + Clone>(
    kind: &'static str,
    items: &[K],
    drop_managed: impl Fn(&mut K),
    trim: impl Fn(&mut K),
) -> CacheRow {
    let n = items.len().max(1) as f64;
    let (mut served, mut before, mut now) = (0.0, 0.0, 0.0);
    for o in items {
        served += json_len(o);
        let mut b = o.clone();
        drop_managed(&mut b);
        before += json_len(&b);
        let mut c = o.clone();
        trim(&mut c);
        now += json_len(&c);
    }
    CacheRow {
        kind,
        objects: items.len(),
        served: served / n,
        managed_fields_dropped: before / n,
        cached: now / n,
    }
}

/// What each of the operator's caches holds per object, for the objects in `namespaces`.
async fn cache_sizes(client: &Client, namespaces: &[String]) -> Vec<CacheRow> {
    async fn owned<K>(client: &Client, namespaces: &[String]) -> Vec<K>
    where
        K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned,
    {
        let lp = ListParams::default().labels(&names::managed_selector());
        let items = Api::<K>::all(client.clone()).list(&lp).await.unwrap().items;
        items
            .into_iter()
            .filter(|o| namespaces.contains(&o.namespace().unwrap_or_default()))
            .collect()
    }
    macro_rules! owned_row {
        ($kind:ty, $name:expr) => {
            cache_row(
                $name,
                &owned::<$kind>(client, namespaces).await,
                |o| o.managed_fields_mut().clear(),
                cache::trim_owned::<$kind>,
            )
        };
    }
    let instances: Vec<TmiInstance> = Api::<TmiInstance>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|o| namespaces.contains(&o.namespace().unwrap_or_default()))
        .collect();
    let secrets: Vec<PartialObjectMeta<Secret>> = Api::<Secret>::all(client.clone())
        .list_metadata(&ListParams::default().fields("type!=helm.sh/release.v1"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|o| namespaces.contains(&o.namespace().unwrap_or_default()))
        .collect();
    vec![
        cache_row(
            "TmiInstance",
            &instances,
            |o| o.managed_fields_mut().clear(),
            |o| cache::trim_meta(o.meta_mut()),
        ),
        owned_row!(k8s_openapi::api::core::v1::ServiceAccount, "ServiceAccount"),
        owned_row!(k8s_openapi::api::core::v1::ConfigMap, "ConfigMap"),
        owned_row!(Deployment, "Deployment"),
        owned_row!(k8s_openapi::api::core::v1::Service, "Service"),
        owned_row!(
            k8s_openapi::api::core::v1::PersistentVolumeClaim,
            "PersistentVolumeClaim"
        ),
        owned_row!(
            k8s_openapi::api::policy::v1::PodDisruptionBudget,
            "PodDisruptionBudget"
        ),
        owned_row!(k8s_openapi::api::networking::v1::Ingress, "Ingress"),
        owned_row!(k8s_openapi::api::batch::v1::Job, "Job"),
        cache_row(
            "Secret (metadata)",
            &secrets,
            |o| o.metadata.managed_fields = None,
            cache::trim_secret_meta,
        ),
    ]
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    format!("{model}, {cores} cores, {:.0} GiB", mem_kib / 1024.0 / 1024.0)
}

/// `$BENCH_RESULTS_DIR/operator.json` (format: the lead's `bench/report`).
fn write_json(rows: &[Row], concurrency: usize) {
    let Ok(dir) = std::env::var("BENCH_RESULTS_DIR") else {
        return;
    };
    let mut tables = Vec::new();
    for r in rows {
        let ratio = r.operator / r.raw;
        tables.push(json!({
            "title": r.scenario,
            "columns": ["metric", "tmi-operator", "raw SSA", "ratio"],
            "rows": [
                ["seconds until Ready (raw SSA: until available)", format!("{:.1}", r.operator), format!("{:.1}", r.raw), format!("{ratio:.2}")],
                ["peak RSS (MiB)", format!("{:.1}", r.rss), "", ""],
                ["CPU (s)", format!("{:.1}", r.cpu), "", ""],
                ["steady-state API requests / reconcile", format!("{:.3}", r.requests_per_reconcile), "", ""],
                ["steady-state writes / reconcile", format!("{:.3}", r.writes_per_reconcile), "", ""],
            ]
        }));
        let cache_rows: Vec<_> = r
            .caches
            .iter()
            .map(|c| {
                json!([
                    c.kind,
                    c.objects.to_string(),
                    format!("{:.0}", c.served),
                    format!("{:.0}", c.managed_fields_dropped),
                    format!("{:.0}", c.cached)
                ])
            })
            .collect();
        tables.push(json!({
            "title": format!("{}: JSON bytes per cached object", r.scenario),
            "columns": ["kind", "objects", "as served", "managedFields dropped (before)", "as cached now"],
            "rows": cache_rows
        }));
    }
    let points = |f: &dyn Fn(&Row) -> f64| -> Vec<[f64; 2]> {
        rows.iter().map(|r| [r.instances as f64, f(r)]).collect()
    };
    let doc = json!({
        "suite": "operator",
        "title": "Operator",
        "date": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "machine": machine(),
        "notes": [
            format!("Local control plane (kwok makes pods Ready), client concurrency {concurrency}. Raw SSA: the same rendered objects server-side applied directly, until every Deployment is available; operator: the release binary, until every TmiInstance is Ready at its generation."),
            "Peak RSS is the operator process's VmHWM; steady state is 32 s with a 10 s resync.",
            "JSON bytes per cached object: the objects listed once after steady state, serialized as served, with managedFields dropped (what the caches held before), and trimmed as the operator caches them now (controller::cache)."
        ],
        "tables": tables,
        "charts": [
            {"id": "operator-convergence", "title": "Operator convergence against instance count",
             "x_label": "instances", "y_label": "seconds until Ready", "log_y": false,
             "series": [
                {"name": "tmi-operator", "baseline": false, "points": points(&|r| r.operator)},
                {"name": "raw server-side apply", "baseline": true, "points": points(&|r| r.raw)}
             ]},
            {"id": "operator-peak-rss", "title": "Operator peak RSS against instance count",
             "x_label": "instances", "y_label": "peak RSS (MiB)", "log_y": false,
             "series": [
                {"name": "tmi-operator", "baseline": false, "points": points(&|r| r.rss)},
                {"name": "target (issue 18: 64 MiB)", "baseline": true, "points": points(&|_| 64.0)}
             ]}
        ]
    });
    std::fs::create_dir_all(&dir).unwrap();
    let path = std::path::Path::new(&dir).join("operator.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    eprintln!("wrote {}", path.display());
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
            let (operator, rss, cpu, rpr, wpr, caches) = operator_run(&client, cp.kubeconfig(), &op_ns, instances, concurrency).await;
            eprintln!("operator: {operator:.1} s, peak RSS {rss:.1} MiB, CPU {cpu:.1} s");
            delete_namespaces(&client, &op_ns).await;
            rows.push(Row {
                scenario: format!("{instances} instances / {namespaces} namespaces"),
                instances,
                caches,
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
        for r in &rows {
            println!("\n{}: JSON bytes per cached object", r.scenario);
            println!("| kind | objects | as served | managedFields dropped (before) | as cached now |");
            println!("|---|---|---|---|---|");
            for c in &r.caches {
                println!(
                    "| {} | {} | {:.0} | {:.0} | {:.0} |",
                    c.kind, c.objects, c.served, c.managed_fields_dropped, c.cached
                );
            }
        }
        write_json(&rows, concurrency);
    });
}
