//! Helpers shared by the operator's cluster tests: install the CRD, run the operator in-process, wait for
//! conditions, and capture every log line the operator writes (for the secret-leak test).

#![allow(dead_code, clippy::unwrap_used)] // test helpers: a panic is a test failure

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, CustomResourceExt};
use tmi_operator::controller::{self, Config};
use tmi_operator::crd::TmiInstance;
use tmi_operator::metrics::Metrics;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const TIMEOUT: Duration = Duration::from_secs(90);

/// Every log line the operator wrote in this test binary.
pub fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf: Arc<Mutex<Vec<u8>>> = Arc::default();
        let writer = CaptureWriter(buf.clone());
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "debug,hyper=info,tower=info,rustls=info",
            ))
            .with_writer(move || writer.clone())
            .try_init();
        buf
    })
}

#[derive(Clone)]
struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (or updates) the CRD and waits until it is established.
pub async fn install_crd(client: &Client) {
    logs();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = TmiInstance::crd();
    crds.patch(
        "tmiinstances.tmi.dev",
        &PatchParams::apply("tmi-operator-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap_or_else(|e| panic!("installing the CRD: {e}"));
    tokio::time::timeout(
        TIMEOUT,
        await_condition(crds, "tmiinstances.tmi.dev", conditions::is_crd_established()),
    )
    .await
    .expect("CRD never established")
    .unwrap();
}

/// An operator running in this process.
pub struct Operator {
    pub metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// Test settings: one namespace, fast resync and polling.
pub fn config(namespace: &str) -> Config {
    Config {
        namespaces: vec![namespace.to_owned()],
        resync: Duration::from_secs(2),
        progress_poll: Duration::from_millis(500),
        concurrency: 4,
        ..Config::default()
    }
}

/// A client counting requests into `metrics`.
pub async fn counting_client(metrics: Arc<Metrics>) -> Client {
    let cp = tmi_e2e::shared();
    let config = tmi_operator::client::config(Some(cp.kubeconfig())).await.unwrap();
    tmi_operator::client::counting(config, metrics).unwrap()
}

impl Operator {
    /// Starts a controller for `config` (no leader election).
    pub async fn start(config: Config) -> Operator {
        let metrics = Arc::new(Metrics::default());
        let client = counting_client(metrics.clone()).await;
        let (tx, rx) = oneshot::channel::<()>();
        let m = metrics.clone();
        let task = tokio::spawn(async move {
            controller::run(client, config, m, async move {
                let _ = rx.await;
            })
            .await
        });
        Operator {
            metrics,
            stop: Some(tx),
            task,
        }
    }

    /// Starts a leader-elected controller.
    pub async fn start_elected(config: Config, lease_namespace: &str, identity: &str) -> Operator {
        let metrics = Arc::new(Metrics::default());
        let client = counting_client(metrics.clone()).await;
        let (tx, rx) = oneshot::channel::<()>();
        let m = metrics.clone();
        let lease = tmi_operator::leader::LeaseConfig {
            name: "tmi-operator".into(),
            namespace: lease_namespace.into(),
            identity: identity.into(),
            duration_seconds: 6,
            grace_seconds: 2,
        };
        let task = tokio::spawn(async move {
            tmi_operator::leader::run(client, config, lease, m, Arc::default(), async move {
                let _ = rx.await;
            })
            .await
            .unwrap()
        });
        Operator {
            metrics,
            stop: Some(tx),
            task,
        }
    }

    /// Graceful shutdown: in-flight reconciles finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("operator did not stop")
            .unwrap();
    }

    /// Kills the operator wherever it is (no graceful shutdown), like a SIGKILL.
    pub fn kill(self) {
        self.task.abort();
    }
}

/// Creates or replaces an Opaque Secret.
pub async fn put_secret(client: &Client, ns: &str, name: &str, data: &[(&str, &str)]) {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": { "name": name },
        "stringData": data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<std::collections::BTreeMap<_, _>>(),
    }))
    .unwrap();
    let _ = api.delete(name, &Default::default()).await;
    loop {
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 409 => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("creating Secret {name}: {e}"),
        }
    }
}

/// Applies a TmiInstance from YAML (server-side apply as a user would, strict field validation).
pub async fn apply_instance(client: &Client, ns: &str, yaml: &str) -> Result<TmiInstance, kube::Error> {
    let value: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
    let name = value["metadata"]["name"].as_str().unwrap().to_owned();
    let api: Api<TmiInstance> = Api::namespaced(client.clone(), ns);
    api.patch(
        &name,
        &PatchParams::apply("test-user").validation_strict(),
        &Patch::Apply(&value),
    )
    .await
}

pub fn condition<'a>(i: &'a TmiInstance, type_: &str) -> Option<&'a Condition> {
    i.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// Whether condition `type_` is `status` at the instance's current generation.
pub fn has_condition(i: &TmiInstance, type_: &str, status: &str) -> bool {
    let current = i.status.as_ref().and_then(|s| s.observed_generation) == i.metadata.generation;
    current
        && condition(i, type_)
            .is_some_and(|c| c.status == status && c.observed_generation == i.metadata.generation)
}

/// Polls the instance until `pred` holds; panics with its status after `TIMEOUT`.
pub async fn wait_for(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    pred: impl Fn(&TmiInstance) -> bool,
) -> TmiInstance {
    let api: Api<TmiInstance> = Api::namespaced(client.clone(), ns);
    let started = Instant::now();
    loop {
        let current = api.get_opt(name).await.unwrap();
        if let Some(i) = &current
            && pred(i)
        {
            return i.clone();
        }
        if started.elapsed() > TIMEOUT {
            panic!(
                "timed out waiting for {what} on {ns}/{name}; last seen:\n{}",
                serde_yaml::to_string(&current).unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
