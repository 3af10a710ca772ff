//! Prometheus metrics of the operator (prometheus-client). No IO: `admin` serves [`Metrics::encode`].
//!
//! Labels are low-cardinality on purpose: kinds, verbs, results and error reasons, never instance names.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabel {
    verb: String,
}

/// The operator's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciliations: Family<ResultLabel, Counter>,
    failures: Family<ReasonLabel, Counter>,
    duration: Histogram,
    writes: Family<KindLabel, Counter>,
    skipped: Family<KindLabel, Counter>,
    api_requests: Family<VerbLabel, Counter>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tmi_operator");
        let reconciliations = Family::<ResultLabel, Counter>::default();
        let failures = Family::<ReasonLabel, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let writes = Family::<KindLabel, Counter>::default();
        let skipped = Family::<KindLabel, Counter>::default();
        let api_requests = Family::<VerbLabel, Counter>::default();
        let leader = Gauge::default();
        registry.register(
            "reconciliations",
            "Reconciles by result (success, error)",
            reconciliations.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Failed reconciles by error reason",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            duration.clone(),
        );
        registry.register("writes", "Writes to the API server by kind", writes.clone());
        registry.register(
            "apply_skipped",
            "Applies skipped because the live object matched",
            skipped.clone(),
        );
        registry.register(
            "api_requests",
            "Requests to the API server by verb (watch counted once)",
            api_requests.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciliations,
            failures,
            duration,
            writes,
            skipped,
            api_requests,
            leader,
        }
    }
}

impl Metrics {
    /// Records a finished reconcile.
    pub fn reconciled(&self, seconds: f64, error_reason: Option<&str>) {
        self.duration.observe(seconds);
        let result = if error_reason.is_some() {
            "error"
        } else {
            "success"
        };
        self.reconciliations
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
        if let Some(reason) = error_reason {
            self.failures
                .get_or_create(&ReasonLabel {
                    reason: reason.to_owned(),
                })
                .inc();
        }
    }

    /// Records a write (apply, create, delete, status patch) of `kind`.
    pub fn write(&self, kind: &str) {
        self.writes
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Records an apply skipped because the live object already matched.
    pub fn apply_skipped(&self, kind: &str) {
        self.skipped
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Records one request to the API server.
    pub fn api_request(&self, verb: &str) {
        self.api_requests
            .get_or_create(&VerbLabel {
                verb: verb.to_owned(),
            })
            .inc();
    }

    /// Sets the leader gauge.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Total reconciles so far (any result).
    pub fn reconcile_count(&self) -> u64 {
        ["success", "error"]
            .iter()
            .map(|r| {
                self.reconciliations
                    .get_or_create(&ResultLabel {
                        result: (*r).to_owned(),
                    })
                    .get()
            })
            .sum()
    }

    /// Total writes so far, all kinds.
    pub fn write_count(&self) -> u64 {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        sum_of(&text, "tmi_operator_writes_total")
    }

    /// Total API requests so far, excluding watches.
    pub fn request_count(&self) -> u64 {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        sum_of(&text, "tmi_operator_api_requests_total")
            - sum_of(&text, "tmi_operator_api_requests_total{verb=\"WATCH\"}")
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

fn sum_of(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_encodes() {
        let m = Metrics::default();
        m.reconciled(0.01, None);
        m.reconciled(0.02, Some("Apply"));
        m.write("Deployment");
        m.write("Service");
        m.api_request("GET");
        m.api_request("WATCH");
        assert_eq!(m.reconcile_count(), 2);
        assert_eq!(m.write_count(), 2);
        assert_eq!(m.request_count(), 1);
        let text = m.encode();
        assert!(
            text.contains("tmi_operator_reconcile_failures_total{reason=\"Apply\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tmi_operator_reconcile_duration_seconds_count 2"),
            "{text}"
        );
    }
}
