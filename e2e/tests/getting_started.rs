//! The new user's path: the first shell block of `docs/getting-started.md` ("On the local cluster"), run as
//! written, as one bash script from the repository root, against this binary's cluster with its real node.
//! Two lines stand for what the harness has already done and are left out:
//! - `make cluster-up`: the harness started the same cluster (`tmi_e2e::shared_with_node`, what
//!   `make cluster-up` runs in the background);
//! - `make cluster-shell`: the tests already run inside the cluster's namespaces (`make test` runs them in
//!   `scripts/isolated.sh`), with the kubeconfig and kubectl/helm put in the environment instead.
//!
//! Every other line, the Helm install of the locally built operator image, the sample, the wait for Ready, the
//! port-forward, the dev login and the threat model created through the forwarded port, runs as written and
//! must succeed.

#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use std::path::Path;
use std::process::Command;

/// The first ```sh block after the heading `heading`.
fn first_block_after(doc: &str, heading: &str) -> Vec<String> {
    let section = &doc[doc
        .find(heading)
        .unwrap_or_else(|| panic!("no heading {heading:?}"))..];
    let start = section.find("```sh\n").expect("no sh block") + "```sh\n".len();
    let end = start + section[start..].find("```").expect("unterminated block");
    section[start..end].lines().map(str::to_owned).collect()
}

#[test]
fn the_local_getting_started_path_works_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap();
    let doc = std::fs::read_to_string(root.join("docs/getting-started.md")).unwrap();
    let lines = first_block_after(&doc, "## On the local cluster");
    for needed in [
        "helm install",
        "kubectl wait",
        "scripts/dev-login.sh",
        "port-forward",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(needed)),
            "the path has a `{needed}` line"
        );
    }
    let mut script = String::from("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n");
    for line in &lines {
        let trimmed = line.trim();
        if trimmed.starts_with("make cluster-up") || trimmed.starts_with("make cluster-shell") {
            continue;
        }
        script.push_str(line);
        script.push('\n');
    }

    let cp = tmi_e2e::shared_with_node();
    let path = format!(
        "{}:{}",
        cp.bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let began = std::time::Instant::now();
    let out = Command::new("bash")
        .args(["-c", &script])
        .current_dir(&root)
        .env("KUBECONFIG", cp.kubeconfig())
        .env("PATH", path)
        .env("HELM_CACHE_HOME", cp.dir().join("helm/cache"))
        .env("HELM_CONFIG_HOME", cp.dir().join("helm/config"))
        .env("HELM_DATA_HOME", cp.dir().join("helm/data"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let pods = cp
            .kubectl()
            .args(["get", "pods", "-A", "-o", "wide"])
            .output()
            .unwrap();
        panic!(
            "the getting-started path failed ({}):\n{stdout}\n{stderr}\npods:\n{}\nkubelet:\n{}",
            out.status,
            String::from_utf8_lossy(&pods.stdout),
            cp.log_tail("kubelet", 30)
        );
    }
    eprintln!("getting-started path: {:.1?}", began.elapsed());
    assert!(
        stdout.contains("\"name\":\"My first threat model\""),
        "the threat model created through the port-forward is listed:\n{stdout}"
    );
}
