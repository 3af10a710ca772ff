//! The new user's path: the first shell block of `docs/getting-started.md` ("On the local control plane"),
//! executed line by line as written, from the repository root, against this binary's control plane. Three
//! kinds of line cannot run verbatim inside `cargo test` and are replaced by what they stand for:
//! - `make cluster-up`: the harness has already started the same control plane (`ControlPlane::start`, which
//!   is what `make cluster-up` runs in the background);
//! - `export KUBECONFIG=…` and `alias kubectl=…`: the harness's kubeconfig and kubectl are put in the
//!   environment instead;
//! - `cargo run -p tmi-operator -- run …`: a nested cargo would wait forever on this test's build lock, so the
//!   operator runs in this process instead, with the same settings (all namespaces, no leader election).
//!
//! Every other line, every kubectl command and manifest the page shows, runs as written and must succeed;
//! the page's `kubectl wait` for the sample's Ready condition is among them.

#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tmi_operator::controller::{self, Config};
use tmi_operator::metrics::Metrics;

/// The first ```sh block after the heading `heading`.
fn first_block_after(doc: &str, heading: &str) -> Vec<String> {
    let section = &doc[doc
        .find(heading)
        .unwrap_or_else(|| panic!("no heading {heading:?}"))..];
    let start = section.find("```sh\n").expect("no sh block") + "```sh\n".len();
    let end = start + section[start..].find("```").expect("unterminated block");
    section[start..end].lines().map(str::to_owned).collect()
}

#[tokio::test]
async fn the_local_getting_started_path_works_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap();
    let doc = std::fs::read_to_string(root.join("docs/getting-started.md")).unwrap();
    let lines = first_block_after(&doc, "## On the local control plane");
    assert!(
        lines.iter().any(|l| l.starts_with("kubectl wait")),
        "the path ends in a kubectl wait"
    );

    let cp = tmi_e2e::shared();
    let path = format!(
        "{}:{}",
        cp.bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut operator = None;
    for raw in &lines {
        let line = raw.split(" #").next().unwrap().trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "make cluster-up"
            || line.starts_with("export KUBECONFIG=")
            || line.starts_with("alias kubectl=")
        {
            continue;
        }
        if line.starts_with("cargo run -p tmi-operator -- run") {
            assert!(
                line.contains("--leader-elect=false") && line.ends_with('&'),
                "{line}"
            );
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let config = Config {
                resync: Duration::from_secs(2),
                ..Config::default()
            };
            let client = cp.client().await;
            let task = tokio::spawn(controller::run(
                client,
                config,
                Arc::new(Metrics::default()),
                async {
                    let _ = stopped.await;
                },
            ));
            operator = Some((stop, task));
            continue;
        }
        let line = line.to_owned();
        let (kubeconfig, path, root) = (cp.kubeconfig().to_owned(), path.clone(), root.clone());
        let out = tokio::task::spawn_blocking(move || {
            Command::new("bash")
                .args(["-euo", "pipefail", "-c", &line])
                .current_dir(root)
                .env("KUBECONFIG", kubeconfig)
                .env("PATH", path)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "`{raw}` failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (stop, task) = operator.expect("the path starts the operator");
    let _ = stop.send(());
    task.await.unwrap();
}
