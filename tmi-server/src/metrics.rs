//! Prometheus metrics: request counts and latencies by route, and collaboration (sockets,
//! operations, resyncs), exposed at `/metrics`. Pure apart from the in-memory registry.

use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::state::AppState;

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
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(reg) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
        }
        out
    }
}

/// Records every request.
pub async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let start = Instant::now();
    let res = next.run(req).await;
    let m = &state.metrics;
    m.requests
        .get_or_create(&RequestLabels {
            method: method.clone(),
            route: route.clone(),
            status: res.status().as_u16(),
        })
        .inc();
    m.latency
        .get_or_create(&RouteLabels { method, route })
        .observe(start.elapsed().as_secs_f64());
    res
}

/// `GET /metrics`.
pub async fn serve(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
