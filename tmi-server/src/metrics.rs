//! Prometheus metrics: request counts and latencies by route, and collaboration (sockets,
//! operations, resyncs). The registry only; `layers::record_request` counts requests and
//! `health::metrics` serves `/metrics`. Pure apart from the in-memory registry.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// Collaboration on this replica.
#[derive(Clone, Default)]
pub struct CollabMetrics {
    /// Open collaboration sockets.
    pub sockets: Gauge,
    /// Diagram operations (incl. undo/redo) by outcome: `applied` or `rejected`.
    pub operations: Family<OutcomeLabels, Counter>,
    /// Sessions brought up to date from the database (a lost event or a bus interruption).
    pub resyncs: Counter,
    /// Interruptions of the bus subscription (Redis restarted or unreachable, or a lagging replica).
    pub bus_gaps: Counter,
}

/// The server's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    pub collab: CollabMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tmi");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            latency.clone(),
        );
        let collab = CollabMetrics::default();
        registry.register(
            "collab_sockets",
            "Open collaboration sockets",
            collab.sockets.clone(),
        );
        registry.register(
            "collab_operations",
            "Collaboration diagram operations by outcome",
            collab.operations.clone(),
        );
        registry.register(
            "collab_resyncs",
            "Collaboration sessions resynced from the database",
            collab.resyncs.clone(),
        );
        registry.register(
            "collab_bus_gaps",
            "Interruptions of the collaboration bus subscription",
            collab.bus_gaps.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            requests,
            latency,
            collab,
        }
    }
}

impl Metrics {
    /// Counts one request and its latency.
    pub fn observe_request(&self, method: String, route: String, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.clone(),
                route: route.clone(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { method, route })
            .observe(seconds);
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(reg) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
        }
        out
    }
}
