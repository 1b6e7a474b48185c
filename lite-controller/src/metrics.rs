//! The controller's Prometheus series (`pimesh_controller_` prefix, times
//! in seconds), served as OpenMetrics text on the operator port. Gauges
//! that mirror stored state (tokens, expiries) are set at scrape time by
//! [`Metrics::encode`]'s caller, so they never drift from the database.

use crate::kube::KubeMetrics;
use crate::registry::metrics::DiscoveryMetrics;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// `reason` values of `certify_refused_total`, created at zero so that
/// dashboards and alerts see every series from the start.
pub const REFUSAL_REASONS: [&str; 10] = [
    "invalid_token",
    "token_expired",
    "token_revoked",
    "identity_not_allowed",
    "bad_csr",
    "bad_request",
    "payload_too_large",
    "issuer_expired",
    "unavailable",
    "internal",
];

/// `certify_duration_seconds` buckets: signing and a flushed write take
/// milliseconds on a Pi 4's SD card; seconds mean trouble.
const DURATION_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

type Labels = [(&'static str, &'static str); 1];

/// Every series of the controller.
pub struct Metrics {
    registry: Registry,
    /// `pimesh_controller_certificates_issued_total`: leaves issued to proxies.
    pub certificates_issued: Counter,
    /// `pimesh_controller_certify_refused_total{reason}`: certify requests refused.
    certify_refused: Family<Labels, Counter>,
    /// `pimesh_controller_certify_duration_seconds`: time to check, sign and record.
    pub certify_duration: Histogram,
    /// `pimesh_controller_tokens{status}`: join tokens by status.
    tokens: Family<Labels, Gauge>,
    /// `pimesh_controller_issuer_expiry_timestamp_seconds`: `notAfter` of the signing issuer.
    pub issuer_expiry: Gauge,
    /// `pimesh_controller_trust_anchor_expiry_timestamp_seconds`: earliest `notAfter` in the bundle.
    pub anchor_expiry: Gauge,
    /// `pimesh_controller_serving_cert_expiry_timestamp_seconds`: the controller's own certificate.
    pub serving_cert_expiry: Gauge,
    /// `pimesh_controller_issued_certificates`: issued-serial records held.
    pub issued_records: Gauge,
    /// The discovery role's series (registrations, leases, watches).
    pub discovery: DiscoveryMetrics,
    /// Kubernetes mode's series (`pimesh_controller_kube_*`).
    pub kube: KubeMetrics,
    /// The proxy injector's `pimesh_controller_injections_total{result}`.
    pub inject: crate::inject::metrics::InjectMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every series.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            certificates_issued: Counter::default(),
            certify_refused: Family::default(),
            certify_duration: Histogram::new(DURATION_BUCKETS),
            tokens: Family::default(),
            issuer_expiry: Gauge::default(),
            anchor_expiry: Gauge::default(),
            serving_cert_expiry: Gauge::default(),
            issued_records: Gauge::default(),
            discovery: DiscoveryMetrics::register(&mut registry),
            kube: KubeMetrics::register(&mut registry),
            inject: crate::inject::metrics::InjectMetrics::register(&mut registry),
            registry: Registry::default(),
        };
        let p = "pimesh_controller_";
        registry.register(
            format!("{p}certificates_issued"),
            "Certificates issued to proxies",
            m.certificates_issued.clone(),
        );
        registry.register(
            format!("{p}certify_refused"),
            "Certify requests refused, by reason (the ApiError code)",
            m.certify_refused.clone(),
        );
        registry.register(
            format!("{p}certify_duration_seconds"),
            "Time to check a certify request, sign and record the certificate",
            m.certify_duration.clone(),
        );
        registry.register(
            format!("{p}tokens"),
            "Join tokens, by status",
            m.tokens.clone(),
        );
        registry.register(
            format!("{p}issuer_expiry_timestamp_seconds"),
            "When the issuer that signs now expires (Unix time)",
            m.issuer_expiry.clone(),
        );
        registry.register(
            format!("{p}trust_anchor_expiry_timestamp_seconds"),
            "When the first trust anchor of the bundle expires (Unix time)",
            m.anchor_expiry.clone(),
        );
        registry.register(
            format!("{p}serving_cert_expiry_timestamp_seconds"),
            "When the controller's own certificate expires (Unix time)",
            m.serving_cert_expiry.clone(),
        );
        registry.register(
            format!("{p}issued_certificates"),
            "Issued-serial records held in the database",
            m.issued_records.clone(),
        );
        for reason in REFUSAL_REASONS {
            drop(m.certify_refused.get_or_create(&[("reason", reason)]));
        }
        Metrics { registry, ..m }
    }

    /// Counts a refused certify request; `reason` is an `ApiError` code
    /// (one of [`REFUSAL_REASONS`]).
    pub fn refused(&self, reason: &'static str) {
        self.certify_refused
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// Sets the `tokens` gauge for `status`.
    pub fn set_tokens(&self, status: &'static str, n: usize) {
        self.tokens
            .get_or_create(&[("status", status)])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_names_and_labels() {
        let m = Metrics::new();
        m.certificates_issued.inc();
        m.refused("token_revoked");
        m.set_tokens("active", 3);
        m.issuer_expiry.set(1_800_000_000);
        m.certify_duration.observe(0.002);
        let text = m.encode();
        for line in [
            "pimesh_controller_certificates_issued_total 1",
            "pimesh_controller_certify_refused_total{reason=\"token_revoked\"} 1",
            "pimesh_controller_certify_refused_total{reason=\"bad_csr\"} 0",
            "pimesh_controller_tokens{status=\"active\"} 3",
            "pimesh_controller_issuer_expiry_timestamp_seconds 1800000000",
            "pimesh_controller_certify_duration_seconds_count 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
