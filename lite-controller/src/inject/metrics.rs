//! `pimesh_controller_injections_total{result}`: every AdmissionReview the
//! proxy injector answers, by outcome (a leaf: the controller's metrics
//! registry takes it without the webhook server).

use super::patch::Skip;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry as Prometheus;

type Labels = [(&'static str, &'static str); 1];

/// `pimesh_controller_injections_total{result}`.
#[derive(Clone, Default)]
pub struct InjectMetrics {
    results: Family<Labels, Counter>,
}

impl std::fmt::Debug for InjectMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InjectMetrics")
    }
}

impl InjectMetrics {
    /// Registers the series in `reg`, every result at zero.
    pub fn register(reg: &mut Prometheus) -> InjectMetrics {
        let m = InjectMetrics::default();
        reg.register(
            "pimesh_controller_injections",
            "AdmissionReviews answered by the proxy injector, by result",
            m.results.clone(),
        );
        let results = ["injected", "malformed"]
            .into_iter()
            .chain(Skip::ALL.iter().map(|s| s.result()));
        for r in results {
            drop(m.results.get_or_create(&[("result", r)]));
        }
        m
    }

    /// Counts one outcome.
    pub fn count(&self, result: &'static str) {
        self.results.get_or_create(&[("result", result)]).inc();
    }

    /// How many AdmissionReviews had `result` so far.
    pub fn get(&self, result: &'static str) -> u64 {
        self.results.get_or_create(&[("result", result)]).get()
    }
}
