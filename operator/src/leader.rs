//! Leader election on a `coordination.k8s.io` Lease, and the controller running only while this replica
//! leads. IO: the Lease, through `kube-lease-manager`.
//!
//! `kube-lease-manager` 0.13 is built on kube 5; it updates the Lease with server-side apply, so two
//! candidates cannot both take a free Lease, and it releases the Lease when its channel is dropped, so a
//! graceful shutdown hands over at once instead of after the Lease duration. When leadership is lost, the
//! controller is shut down (in-flight reconciles finish, then no further writes) and the replica waits to
//! lead again.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::FutureExt;
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::info;

use crate::controller::{self, Config};
use crate::metrics::Metrics;

/// Lease settings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity (the pod name in a cluster).
    pub identity: String,
    /// Seconds a Lease stays valid without renewal.
    pub duration_seconds: u64,
    /// Seconds before expiry at which the holder renews.
    pub grace_seconds: u64,
}

async fn wait_for(rx: &mut watch::Receiver<bool>, value: bool) -> bool {
    rx.wait_for(|v| *v == value).await.is_ok()
}

/// Runs the controller whenever this replica holds the Lease, until `shutdown` resolves; then releases the
/// Lease. `ready` (for `/readyz`) is set once this replica takes part in the election: a standby is ready to
/// take over, so every healthy replica counts as available to `kubectl rollout status`, `helm --wait` and
/// Argo CD. Leadership itself shows in the `tmi_operator_leader` metric and the Lease.
pub async fn run(
    client: Client,
    config: Config,
    lease: LeaseConfig,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let manager = LeaseManagerBuilder::new(client.clone(), &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_duration(lease.duration_seconds)
        .with_grace(lease.grace_seconds)
        .with_field_manager(format!("{}-lease", controller::names::FIELD_MANAGER))
        .build()
        .await?;
    let (mut rx, task) = manager.watch().await;
    ready.store(true, Ordering::SeqCst);
    let shutdown = Box::pin(shutdown).shared();
    loop {
        tokio::select! {
            _ = shutdown.clone() => break,
            ok = wait_for(&mut rx, true) => if !ok { anyhow::bail!("leader election stopped") },
        }
        info!(identity = %lease.identity, "leading");
        metrics.set_leader(true);
        let mut lost_rx = rx.clone();
        let lost = async move {
            wait_for(&mut lost_rx, false).await;
        };
        let stop = futures::future::select(shutdown.clone(), Box::pin(lost)).map(|_| ());
        controller::run(client.clone(), config.clone(), metrics.clone(), stop).await;
        metrics.set_leader(false);
        info!(identity = %lease.identity, "stopped leading");
        if shutdown.peek().is_some() {
            break;
        }
    }
    drop(rx);
    // Dropping the receiver makes the manager release the Lease and finish.
    task.await??;
    Ok(())
}
