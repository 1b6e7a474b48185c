//! Per-connection metric handles: the request series of one label set
//! (a connection's direction, target, TLS state and client identity, plus
//! one authority) looked up in the families once and reused by every
//! request with those labels, so that a request costs a few atomic
//! increments instead of label clones, hashing and family locks.

use super::labels::{Classification, LatencyLabels, RequestLabels, ResponseLabels, TargetLabels};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

/// Status-keyed handles kept per series; rarer outcomes past these are
/// looked up in the family each time (correct, only slower).
const MAX_OUTCOMES: usize = 8;

/// Authorities remembered per connection (HTTP/1 and HTTP/2 clients
/// usually send one; the cache only has to survive a few alternating).
const MAX_AUTHORITIES: usize = 4;

/// `(status_code, grpc_status, error)` of a `response_total` series.
type ResponseKey = (Option<u16>, Option<u32>, &'static str);

/// The handles of one [`RequestLabels`] set, created on first use: its
/// `request_total` counter, and `response_latency_ms` histograms and
/// `response_total` counters per outcome (up to [`MAX_OUTCOMES`] each).
/// Series appear in the exposition only once a request recorded in them,
/// as with per-request family look-ups.
#[derive(Debug)]
pub struct RequestSeries {
    pub(super) labels: RequestLabels,
    request_total: OnceLock<Counter>,
    latency: Mutex<Vec<(Option<u16>, Histogram)>>,
    responses: Mutex<Vec<(ResponseKey, Counter)>>,
}

impl RequestSeries {
    /// An empty cache for `labels`.
    pub fn new(labels: RequestLabels) -> RequestSeries {
        RequestSeries {
            labels,
            request_total: OnceLock::new(),
            latency: Mutex::new(Vec::new()),
            responses: Mutex::new(Vec::new()),
        }
    }

    /// The labels every handle of this series carries.
    pub fn labels(&self) -> &RequestLabels {
        &self.labels
    }

    /// Counts one request in `request_total` (`family`: the proxy's).
    pub(super) fn count(&self, family: &Family<RequestLabels, Counter>) {
        self.request_total
            .get_or_init(|| family.get_or_create_owned(&self.labels))
            .inc();
    }

    /// Observes `ms` in `response_latency_ms` for `status` (`family`: the
    /// proxy's).
    pub(super) fn observe_latency<F>(
        &self,
        family: &Family<LatencyLabels, Histogram, F>,
        status: Option<u16>,
        ms: f64,
    ) where
        F: Fn() -> Histogram,
    {
        let mut cache = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, h)) = cache.iter().find(|(s, _)| *s == status) {
            h.observe(ms);
            return;
        }
        let h = family.get_or_create_owned(&LatencyLabels {
            request: self.labels.clone(),
            status_code: status,
        });
        h.observe(ms);
        if cache.len() < MAX_OUTCOMES {
            cache.push((status, h));
        }
    }

    /// Counts one response in `response_total` (`family`: the proxy's).
    pub(super) fn count_response(
        &self,
        family: &Family<ResponseLabels, Counter>,
        key: ResponseKey,
        classification: Classification,
    ) {
        let mut cache = self.responses.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = cache.iter().find(|(k, _)| *k == key) {
            c.inc();
            return;
        }
        let (status_code, grpc_status, error) = key;
        let c = family.get_or_create_owned(&ResponseLabels {
            request: self.labels.clone(),
            status_code,
            grpc_status,
            classification,
            error,
        });
        c.inc();
        if cache.len() < MAX_OUTCOMES {
            cache.push((key, c));
        }
    }
}

/// One connection's request series, per authority and, in explicit proxy
/// mode, per target named by the request: the last [`MAX_AUTHORITIES`]
/// keep their [`RequestSeries`].
#[derive(Debug)]
pub struct ConnectionSeries {
    /// The connection's labels (its accepted target).
    target: TargetLabels,
    /// `(explicit target, authority)` → series; `None` is the connection's target.
    by_authority: Mutex<Vec<(SeriesKey, Arc<RequestSeries>)>>,
}

type SeriesKey = (Option<SocketAddr>, Box<str>);

impl ConnectionSeries {
    /// An empty cache for a connection labelled `target`.
    pub fn new(target: TargetLabels) -> ConnectionSeries {
        ConnectionSeries {
            target,
            by_authority: Mutex::new(Vec::new()),
        }
    }

    /// The connection's target labels.
    pub fn target(&self) -> &TargetLabels {
        &self.target
    }

    /// The cached series of `(addr, authority)`, or a new one labelled
    /// `target()` and `intern(authority)` (the last [`MAX_AUTHORITIES`]
    /// are kept). `addr` is `None` for the connection's own target.
    pub(super) fn lookup(
        &self,
        addr: Option<SocketAddr>,
        authority: &str,
        target: impl FnOnce() -> TargetLabels,
        intern: impl FnOnce(&str) -> Arc<str>,
    ) -> Arc<RequestSeries> {
        let mut cache = self.by_authority.lock().unwrap_or_else(|e| e.into_inner());
        let hit = cache
            .iter()
            .find(|((t, a), _)| *t == addr && **a == *authority);
        if let Some((_, s)) = hit {
            return s.clone();
        }
        let series = Arc::new(RequestSeries::new(RequestLabels {
            target: target(),
            authority: intern(authority),
        }));
        if cache.len() >= MAX_AUTHORITIES {
            cache.remove(0);
        }
        cache.push(((addr, authority.into()), series.clone()));
        series
    }
}
