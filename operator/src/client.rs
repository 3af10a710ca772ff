//! Builds the Kubernetes API client: kubeconfig (explicit path, `KUBECONFIG`, or in-cluster) plus a layer
//! counting every request into the `api_requests` metric. IO: reads the kubeconfig file.

use std::path::Path;
use std::sync::Arc;

use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::metrics::Metrics;

/// Loads the client configuration from `kubeconfig`, or infers it (`KUBECONFIG`, `~/.kube/config`,
/// in-cluster service account).
pub async fn config(kubeconfig: Option<&Path>) -> anyhow::Result<Config> {
    Ok(match kubeconfig {
        Some(path) => {
            Config::from_custom_kubeconfig(Kubeconfig::read_from(path)?, &KubeConfigOptions::default())
                .await?
        }
        None => Config::infer().await?,
    })
}

/// A client whose every request (a watch counts once, when opened) increments `api_requests{verb}`.
pub fn counting(config: Config, metrics: Arc<Metrics>) -> anyhow::Result<Client> {
    let layer = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        let watch = req
            .uri()
            .query()
            .is_some_and(|q| q.contains("watch=true") || q.contains("watch=1"));
        metrics.api_request(if watch { "WATCH" } else { req.method().as_str() });
        req
    });
    Ok(ClientBuilder::try_from(config)?.with_layer(&layer).build())
}
