//! The `tmi-operator` binary end to end: `run` with leader election reconciles an instance, serves
//! `/healthz`, `/readyz` and `/metrics`, logs JSON, and on SIGTERM stops gracefully and releases its Lease.
//! `crd` prints the committed CRD.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is a test failure

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;

#[test]
fn crd_subcommand_prints_the_committed_crd() {
    let out = Command::new(env!("CARGO_BIN_EXE_tmi-operator"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(out.status.success());
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/tmi.dev_tmiinstances.yaml"
    ))
    .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), committed);
}

async fn get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::get(url).await.ok()?;
    Some((r.status().as_u16(), r.text().await.ok()?))
}

#[tokio::test]
async fn run_serves_admin_endpoints_and_shuts_down_gracefully() {
    let cp = tmi_e2e::shared();
    let ns = cp.namespace("op-bin").await;
    let c = &ns.client;
    install_crd(c).await;
    put_secret(c, &ns.name, "db", &[("url", "postgres://u:p@db.example/tmi")]).await;

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::env::temp_dir().join(format!("tmi-operator-bin-{port}.log"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_tmi-operator"))
        .args(["run", "--log-format=json", "--resync-period-seconds=5"])
        .arg(format!("--kubeconfig={}", cp.kubeconfig().display()))
        .arg(format!("--watch-namespaces={}", ns.name))
        .arg(format!("--lease-namespace={}", ns.name))
        .arg("--identity=bin-test")
        .arg(format!("--admin-addr=127.0.0.1:{port}"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");

    let yaml = "apiVersion: tmi.dev/v1alpha1\nkind: TmiInstance\nmetadata: { name: bin }\nspec:\n  version: 1.0.0\n  database: { external: { urlSecretRef: { name: db, key: url } } }\n";
    apply_instance(c, &ns.name, yaml).await.unwrap();
    wait_for(c, &ns.name, "bin", "Ready", |i| has_condition(i, "Ready", "True")).await;

    assert_eq!(get(&format!("{base}/healthz")).await.unwrap().0, 200);
    let started = Instant::now();
    while get(&format!("{base}/readyz")).await.map(|r| r.0) != Some(200) {
        assert!(
            started.elapsed() < TIMEOUT,
            "/readyz never returned 200 while leading"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, metrics) = get(&format!("{base}/metrics")).await.unwrap();
    assert_eq!(status, 200);
    for name in [
        "tmi_operator_reconciliations_total",
        "tmi_operator_reconcile_duration_seconds",
        "tmi_operator_writes_total",
        "tmi_operator_api_requests_total",
        "tmi_operator_leader 1",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics:\n{metrics}");
    }
    let lease: Api<Lease> = Api::namespaced(c.clone(), &ns.name);
    let held = lease.get("tmi-operator").await.unwrap();
    assert_eq!(held.spec.unwrap().holder_identity.as_deref(), Some("bin-test"));

    // SIGTERM: graceful stop, exit code 0, Lease released.
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no exit 30 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(exit.success(), "exit {exit}; logs:\n{logs}");
    let released = lease.get("tmi-operator").await.unwrap();
    let holder = released.spec.unwrap().holder_identity;
    assert!(
        holder.as_deref().is_none_or(str::is_empty),
        "Lease still held by {holder:?}"
    );

    // Every log line is a JSON object.
    assert!(logs.lines().count() >= 2, "{logs}");
    for line in logs.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.get("level").is_some() && v.get("timestamp").is_some(), "{line}");
    }
    assert!(!logs.contains("p@db.example"), "a secret value was logged");
}
