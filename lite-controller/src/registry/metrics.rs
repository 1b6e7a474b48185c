//! The discovery role's series (`pimesh_controller_` prefix). Gauges that
//! mirror the registry (services, endpoints, revision) are set at scrape
//! time by [`DiscoveryMetrics::observe`].

use super::Registry;
use pimesh_api::discovery::EventType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry as Prometheus;

/// `reason` values of `registration_refused_total`, created at zero.
pub const REGISTRATION_REFUSALS: [&str; 10] = [
    "invalid_token",
    "token_expired",
    "token_revoked",
    "service_not_allowed",
    "identity_not_allowed",
    "bad_request",
    "payload_too_large",
    "kubernetes_mode",
    "endpoint_conflict",
    "internal",
];

/// `reason` values of `watch_refused_total`, created at zero.
pub const WATCH_REFUSALS: [&str; 3] = ["unauthenticated", "bad_request", "too_many_watches"];

type Labels = [(&'static str, &'static str); 1];

/// Every series of the discovery role.
#[derive(Clone, Default)]
pub struct DiscoveryMetrics {
    /// `registrations_total`: registrations and renewals accepted.
    pub registrations: Counter,
    /// `deregistrations_total`: deregistrations accepted.
    pub deregistrations: Counter,
    /// `registration_refused_total{reason}`: registrations and
    /// deregistrations refused, by `ApiError` code.
    registration_refused: Family<Labels, Counter>,
    /// `lease_expirations_total`: endpoints dropped because their lease ran out.
    pub lease_expirations: Counter,
    /// `watches`: open watch streams.
    pub watches: Gauge,
    /// `watch_refused_total{reason}`.
    watch_refused: Family<Labels, Counter>,
    /// `watch_events_total{type}`: events sent on watch streams.
    watch_events: Family<Labels, Counter>,
    /// `registry_revision`: the registry revision.
    revision: Gauge,
    /// `services`: services in the registry.
    services: Gauge,
    /// `endpoints{source}`: endpoints, registered or added by operators.
    endpoints: Family<Labels, Gauge>,
}

impl std::fmt::Debug for DiscoveryMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DiscoveryMetrics")
    }
}

impl DiscoveryMetrics {
    /// Registers every series in `reg`.
    pub fn register(reg: &mut Prometheus) -> DiscoveryMetrics {
        let m = DiscoveryMetrics::default();
        let p = "pimesh_controller_";
        reg.register(
            format!("{p}registrations"),
            "Endpoint registrations and renewals accepted",
            m.registrations.clone(),
        );
        reg.register(
            format!("{p}deregistrations"),
            "Endpoint deregistrations accepted",
            m.deregistrations.clone(),
        );
        reg.register(
            format!("{p}registration_refused"),
            "Endpoint registrations and deregistrations refused, by reason (the ApiError code)",
            m.registration_refused.clone(),
        );
        reg.register(
            format!("{p}lease_expirations"),
            "Registered endpoints dropped because their lease ran out",
            m.lease_expirations.clone(),
        );
        reg.register(
            format!("{p}watches"),
            "Open discovery watch streams",
            m.watches.clone(),
        );
        reg.register(
            format!("{p}watch_refused"),
            "Discovery watches refused, by reason",
            m.watch_refused.clone(),
        );
        reg.register(
            format!("{p}watch_events"),
            "Events sent on discovery watch streams, by type",
            m.watch_events.clone(),
        );
        reg.register(
            format!("{p}registry_revision"),
            "The service registry's revision",
            m.revision.clone(),
        );
        reg.register(
            format!("{p}services"),
            "Services in the registry",
            m.services.clone(),
        );
        reg.register(
            format!("{p}endpoints"),
            "Endpoints in the registry, by source (registered by proxies, or operator)",
            m.endpoints.clone(),
        );
        for r in REGISTRATION_REFUSALS {
            drop(m.registration_refused.get_or_create(&[("reason", r)]));
        }
        for r in WATCH_REFUSALS {
            drop(m.watch_refused.get_or_create(&[("reason", r)]));
        }
        m
    }

    /// Counts a refused registration; `reason` is an `ApiError` code.
    pub fn registration_refused(&self, reason: &'static str) {
        self.registration_refused
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// Counts a refused watch.
    pub fn watch_refused(&self, reason: &'static str) {
        self.watch_refused
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// Counts an event sent.
    pub fn watch_event(&self, kind: EventType) {
        let t = match kind {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
            EventType::Bookmark => "BOOKMARK",
        };
        self.watch_events.get_or_create(&[("type", t)]).inc();
    }

    /// Sets the gauges that mirror `registry`.
    pub fn observe(&self, registry: &Registry) {
        let (services, registered, operator, kubernetes) = registry.counts();
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.services.set(n(services));
        self.endpoints
            .get_or_create(&[("source", "registered")])
            .set(n(registered));
        self.endpoints
            .get_or_create(&[("source", "operator")])
            .set(n(operator));
        if registry.is_kubernetes() {
            self.endpoints
                .get_or_create(&[("source", "kubernetes")])
                .set(n(kubernetes));
        }
        self.revision
            .set(i64::try_from(registry.revision()).unwrap_or(i64::MAX));
    }
}
