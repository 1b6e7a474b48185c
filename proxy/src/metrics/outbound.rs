//! Counters of the outbound machinery: discovery watches and
//! registration, retries, connection fail-over and circuit breaking.
//! Labels are static strings (bounded sets).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type One = [(&'static str, &'static str); 1];
type Two = [(&'static str, &'static str); 2];

/// Outbound and discovery series.
#[derive(Debug, Default)]
pub struct OutboundMetrics {
    /// `outbound_http_retries_total{reason,result}`: `reason` is what the
    /// try ended with (`status`, `grpc`, `timeout`, `error`), `result`
    /// `retried` or why not (`limit`, `budget_exhausted`,
    /// `not_replayable`, `timeout`: the request's own timeout passed).
    retries: Family<Two, Counter>,
    /// `outbound_connect_failovers_total`: requests and connections sent
    /// to another endpoint because connecting to the picked one failed.
    failovers: Counter,
    /// `outbound_circuit_breaker_transitions_total{event}`: `ejected`,
    /// `probe`, `readmitted`.
    breaker: Family<One, Counter>,
    /// `discovery_watches`: destinations watched now.
    watches: Gauge,
    /// `discovery_events_total{type}`: watch events received, by type.
    events: Family<One, Counter>,
    /// `discovery_stream_errors_total{error}`: watch streams that failed.
    stream_errors: Family<One, Counter>,
    /// `discovery_registrations_total{result}`: registrations and renewals.
    registrations: Family<One, Counter>,
}

impl OutboundMetrics {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "outbound_http_retries",
            "Retries of outbound HTTP requests, by what the try ended with and whether it was retried",
            self.retries.clone(),
        );
        r.register(
            "outbound_connect_failovers",
            "Outbound requests and connections sent to another endpoint after a connect failure",
            self.failovers.clone(),
        );
        r.register(
            "outbound_circuit_breaker_transitions",
            "Endpoints ejected, probed and re-admitted by consecutive failure accrual",
            self.breaker.clone(),
        );
        r.register(
            "discovery_watches",
            "Destinations watched through the controller",
            self.watches.clone(),
        );
        r.register(
            "discovery_events",
            "Watch events received from the controller, by type",
            self.events.clone(),
        );
        r.register(
            "discovery_stream_errors",
            "Watch streams that failed, by reason",
            self.stream_errors.clone(),
        );
        r.register(
            "discovery_registrations",
            "Endpoint registrations and renewals, by result",
            self.registrations.clone(),
        );
    }

    /// Counts a failed try: retried, or why not.
    pub fn retry(&self, reason: &'static str, result: &'static str) {
        self.retries
            .get_or_create(&[("reason", reason), ("result", result)])
            .inc();
    }

    /// Counts a fail-over after a connect failure.
    pub fn failover(&self) {
        self.failovers.inc();
    }

    /// Counts a breaker event.
    pub fn breaker(&self, event: &'static str) {
        self.breaker.get_or_create(&[("event", event)]).inc();
    }

    /// Adds `n` (±1) to the watched destinations.
    pub fn watches(&self, n: i64) {
        self.watches.inc_by(n);
    }

    /// Counts a watch event of `kind`.
    pub fn event(&self, kind: &'static str) {
        self.events.get_or_create(&[("type", kind)]).inc();
    }

    /// Counts a failed watch stream.
    pub fn stream_error(&self, error: &'static str) {
        self.stream_errors.get_or_create(&[("error", error)]).inc();
    }

    /// Counts a registration outcome (`success` or an error label).
    pub fn registration(&self, result: &'static str) {
        self.registrations
            .get_or_create(&[("result", result)])
            .inc();
    }
}
