//! `tmi-controlplane up [DIR]`: the tests' local control plane, for people. Starts it with its files under DIR
//! (default `.cluster`), writes `DIR/kubeconfig`, touches `DIR/ready`, and runs until SIGINT or SIGTERM, then
//! stops every component. `make cluster-up` runs it in the background; `make cluster-down` stops it.

use std::path::PathBuf;

use anyhow::Context as _;
use tmi_e2e::{ControlPlane, Options, controlplane::locate_binaries};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("up") => {}
        _ => anyhow::bail!("usage: tmi-controlplane up [DIR]"),
    }
    let dir = PathBuf::from(args.next().unwrap_or_else(|| ".cluster".into()));
    let dir = std::path::absolute(&dir)?;
    let ready = dir.join("ready");
    let _ = std::fs::remove_file(&ready);
    // A previous run's etcd data would hold objects signed by its (now discarded) keys: start clean.
    for stale in ["etcd", "pki", "logs"] {
        let _ = std::fs::remove_dir_all(dir.join(stale));
    }
    let bin_dir = locate_binaries()?;
    let started = std::time::Instant::now();
    let node = std::env::var("TMI_E2E_ISOLATED").as_deref() == Ok("1");
    let cp =
        tokio::task::spawn_blocking(move || ControlPlane::start(Options { dir, bin_dir, node })).await??;
    println!("control plane ready in {:.1?}", started.elapsed());
    println!("  export KUBECONFIG={}", cp.kubeconfig().display());
    println!("  export PATH={}:$PATH   # kubectl 1.37", cp.bin_dir().display());
    println!("  logs: {}", cp.dir().join("logs").display());
    std::fs::write(&ready, cp.server()).context("writing the ready marker")?;

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let _ = std::fs::remove_file(&ready);
    println!("stopping the control plane");
    tokio::task::spawn_blocking(move || drop(cp)).await?;
    Ok(())
}
