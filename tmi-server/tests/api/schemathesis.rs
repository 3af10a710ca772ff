//! The contract, fuzzed: schemathesis (PyPI, pinned and cached by `scripts/schemathesis.sh`) runs against a
//! real server on each database, signed in through the dev provider (`tests/schemathesis/hooks.py`), over
//! every operation the server serves (`tmi_server::routes()`, less the operational routes), with a fixed seed
//! and a bounded number of examples. It fails on any 5xx and on any answer outside the contract (status code,
//! content type, documented headers, response schema), except the deliberate deviations listed, each with its
//! reason, in `tests/schemathesis/schemathesis.toml`.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp};

/// The schemathesis command: `TMI_SCHEMATHESIS`, else where `scripts/schemathesis.sh` installs it.
fn command() -> PathBuf {
    if let Ok(p) = std::env::var("TMI_SCHEMATHESIS") {
        return PathBuf::from(p);
    }
    let cache = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache"));
    let p = cache.join("tmi-operator/schemathesis-4.32.5/bin/schemathesis");
    assert!(
        p.exists(),
        "schemathesis is not installed at {}: run scripts/schemathesis.sh (make test does)",
        p.display()
    );
    p
}

/// The served part of the contract: every (method, path) the router has, pointed at `base`.
fn served_contract(base: &str) -> Value {
    let mut doc: Value = serde_json::from_str(tmi_server::openapi::DOCUMENT).unwrap();
    let routes = tmi_server::routes();
    let served: Vec<(String, String)> = routes
        .table()
        .iter()
        .filter(|(m, t)| !tmi_server::gate::is_operational(m, t))
        .map(|(m, t)| (m.as_str().to_lowercase(), t.clone()))
        .collect();
    let paths = doc["paths"].as_object_mut().unwrap();
    for (path, item) in paths.iter_mut() {
        let item = item.as_object_mut().unwrap();
        item.retain(|method, _| {
            ![
                "get", "put", "post", "patch", "delete", "head", "options", "trace",
            ]
            .contains(&method.as_str())
                || served.iter().any(|(m, t)| m == method && t == path)
        });
    }
    paths.retain(|_, item| {
        item.as_object()
            .unwrap()
            .keys()
            .any(|k| ["get", "put", "post", "patch", "delete"].contains(&k.as_str()))
    });
    doc["servers"] = json!([{"url": base}]);
    doc
}

pub async fn the_served_contract_holds_under_schemathesis(backend: Backend) {
    // Internal errors (500s) are logged with their cause; the test output shows them.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("tmi_server=error")
        .with_test_writer()
        .try_init();
    let app = TestApp::spawn(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let contract = served_contract(&app.base);
    let operations: usize = contract["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|i| i.as_object().unwrap().len())
        .sum();
    let spec = dir.path().join("openapi.json");
    std::fs::write(&spec, serde_json::to_vec(&contract).unwrap()).unwrap();
    let here = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis");
    let out = tokio::process::Command::new(command())
        .current_dir(dir.path())
        .env("TMI_CONTRACT_BASE", &app.base)
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", here)
        .env("NO_COLOR", "1")
        .arg("--config-file")
        .arg(format!("{here}/schemathesis.toml"))
        .arg("run")
        .arg(&spec)
        .args(["--url", &app.base])
        .args(["--seed", "20261203", "--max-examples", "4"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--workers", "2", "--request-timeout", "30"])
        .output()
        .await
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The summary (operations, test cases, failures) goes to the test's output either way.
    let summary = stdout.find("SUMMARY").map_or(stdout.as_ref(), |i| &stdout[i..]);
    println!("{backend:?}: {operations} served operations\n{summary}");
    assert!(
        out.status.success(),
        "schemathesis found contract violations on {backend:?}:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(&format!("Selected: {operations}/{operations}")),
        "every served operation was selected:\n{stdout}"
    );
}

both_backends!(the_served_contract_holds_under_schemathesis);
