//! Golden metrics with linkerd2-proxy's series names and labels, so that
//! Linkerd's dashboards and PromQL work unchanged (DESIGN.md "Metrics").
//! Label values come from bounded sets: authorities and target addresses
//! are interned up to [`MAX_LABEL_VALUES`] each, later ones share `overflow`.

mod authz;
mod labels;
mod outbound;
mod process;
mod series;
#[cfg(test)]
mod tests;

pub use authz::AuthzMetrics;
pub use labels::{
    Classification, Direction, DstLabels, Peer, RequestLabels, TargetLabels, TcpLabels, Tls,
};
use labels::{ErrorLabels, LatencyLabels, RenewalLabels, ResponseLabels, TcpCloseLabels};
pub use outbound::OutboundMetrics;
pub use series::{ConnectionSeries, RequestSeries};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// Distinct values kept per interned label (authority, target address).
pub const MAX_LABEL_VALUES: usize = 1000;

/// `response_latency_ms` buckets, milliseconds, as linkerd2-proxy's.
pub const LATENCY_BUCKETS_MS: [f64; 25] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0,
    1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 10000.0, 20000.0, 30000.0, 40000.0, 50000.0,
];

/// `tcp_connection_duration_ms` buckets, milliseconds: decades, as
/// linkerd2-proxy's, from 1 ms to ~28 h.
pub const DURATION_BUCKETS_MS: [f64; 9] = [1.0, 10.0, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every series the proxy exports, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    request_total: Family<RequestLabels, Counter>,
    response_total: Family<ResponseLabels, Counter>,
    response_latency_ms: HistogramFamily<LatencyLabels>,
    tcp_open_total: Family<TcpLabels, Counter>,
    tcp_close_total: Family<TcpCloseLabels, Counter>,
    tcp_open_connections: Family<TcpLabels, Gauge>,
    tcp_read_bytes_total: Family<TcpLabels, Counter>,
    tcp_write_bytes_total: Family<TcpLabels, Counter>,
    tcp_connection_duration_ms: HistogramFamily<TcpLabels>,
    /// `{inbound,outbound}_tcp_accept_errors_total{error}`: connections
    /// refused or fallen back before any target handled them.
    accept_errors: [Family<ErrorLabels, Counter>; 2],
    /// `{inbound,outbound}_http_errors_total{error}`: HTTP connections that
    /// ended in a protocol error (bad or oversized head, timeout, reset).
    http_errors: [Family<ErrorLabels, Counter>; 2],
    /// `identity_cert_expiration_timestamp_seconds`: when the proxy's
    /// certificate expires (Linkerd's name), 0 before the first one.
    identity_expiry: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// `identity_cert_renewals_total{result,error}`.
    identity_renewals: Family<RenewalLabels, Counter>,
    authorities: Interner,
    targets: Interner,
    identities: Interner,
    dst_values: Interner,
    outbound: OutboundMetrics,
    authz: AuthzMetrics,
    /// Open taps receive each finished request's metadata from here.
    pub tap: crate::tap::hub::Hub,
}

impl Metrics {
    /// Registers every series; `workload_labels` (`namespace`, `pod`, ...)
    /// are added to each of them.
    pub fn new(workload_labels: &[(String, String)]) -> Metrics {
        let mut registry = Registry::with_labels(
            workload_labels
                .iter()
                .map(|(k, v)| (k.clone().into(), v.clone().into())),
        );
        let build_info = Family::<[(&'static str, &'static str); 1], Gauge>::default();
        build_info
            .get_or_create(&[("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        registry.register("proxy_build_info", "Proxy build information", build_info);
        registry.register_collector(Box::new(process::ProcessCollector::new()));

        let m = Metrics {
            request_total: Family::default(),
            response_total: Family::default(),
            response_latency_ms: Family::new_with_constructor(|| {
                Histogram::new(LATENCY_BUCKETS_MS)
            }),
            tcp_open_total: Family::default(),
            tcp_close_total: Family::default(),
            tcp_open_connections: Family::default(),
            tcp_read_bytes_total: Family::default(),
            tcp_write_bytes_total: Family::default(),
            tcp_connection_duration_ms: Family::new_with_constructor(|| {
                Histogram::new(DURATION_BUCKETS_MS)
            }),
            accept_errors: Default::default(),
            http_errors: Default::default(),
            identity_expiry: Gauge::default(),
            identity_renewals: Family::default(),
            authorities: Interner::default(),
            targets: Interner::default(),
            identities: Interner::default(),
            dst_values: Interner::default(),
            outbound: OutboundMetrics::default(),
            authz: AuthzMetrics::default(),
            tap: crate::tap::hub::Hub::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "request",
            "Total count of HTTP requests",
            m.request_total.clone(),
        );
        r.register(
            "response",
            "Total count of HTTP responses",
            m.response_total.clone(),
        );
        r.register(
            "response_latency_ms",
            "Elapsed times between a request's headers being received and its response stream completing",
            m.response_latency_ms.clone(),
        );
        r.register(
            "tcp_open",
            "Total count of opened connections",
            m.tcp_open_total.clone(),
        );
        r.register(
            "tcp_close",
            "Total count of closed connections",
            m.tcp_close_total.clone(),
        );
        r.register(
            "tcp_open_connections",
            "Number of currently-open connections",
            m.tcp_open_connections.clone(),
        );
        r.register(
            "tcp_read_bytes",
            "Total count of bytes read from peers",
            m.tcp_read_bytes_total.clone(),
        );
        r.register(
            "tcp_write_bytes",
            "Total count of bytes written to peers",
            m.tcp_write_bytes_total.clone(),
        );
        r.register(
            "tcp_connection_duration_ms",
            "Connection lifetimes",
            m.tcp_connection_duration_ms.clone(),
        );
        for (i, dir) in ["inbound", "outbound"].iter().enumerate() {
            r.register(
                format!("{dir}_tcp_accept_errors"),
                "Connections that failed before a target handled them",
                m.accept_errors[i].clone(),
            );
            r.register(
                format!("{dir}_http_errors"),
                "HTTP connections that ended in a protocol error",
                m.http_errors[i].clone(),
            );
        }
        r.register(
            "identity_cert_expiration_timestamp_seconds",
            "Time when the proxy's current certificate expires, in seconds since the Unix epoch",
            m.identity_expiry.clone(),
        );
        r.register(
            "identity_cert_renewals",
            "Certificate requests to the controller, by result",
            m.identity_renewals.clone(),
        );
        m.outbound.register(r);
        m.authz.register(r);
        Metrics { registry, ..m }
    }

    /// Discovery, balancing, retry and circuit-breaking counters.
    pub fn outbound(&self) -> &OutboundMetrics {
        &self.outbound
    }

    /// Inbound authorization counters.
    pub fn authz(&self) -> &AuthzMetrics {
        &self.authz
    }

    /// The `tls="true"` state for a verified peer named `peer_name`.
    pub fn tls_established(&self, direction: Direction, peer_name: &str) -> Tls {
        Tls::Established {
            direction,
            peer: self.identities.get(peer_name),
        }
    }

    /// Records a new certificate expiring at `not_after`.
    pub fn identity_renewed(&self, not_after: std::time::SystemTime) {
        let secs = not_after
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.identity_expiry.set(secs);
        self.identity_renewals
            .get_or_create(&RenewalLabels { error: "" })
            .inc();
    }

    /// Counts a failed certificate request.
    pub fn identity_failed(&self, error: &'static str) {
        self.identity_renewals
            .get_or_create(&RenewalLabels { error })
            .inc();
    }

    /// The Prometheus text exposition (OpenMetrics 1.0 flavour) of every series.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The bounded `authority` label value for `authority`.
    pub fn authority(&self, authority: &str) -> Arc<str> {
        self.authorities.get(authority)
    }

    /// Target labels for traffic in `direction` to `target_addr`.
    pub fn target(&self, direction: Direction, target_addr: &str, tls: Tls) -> TargetLabels {
        TargetLabels {
            direction,
            target_addr: self.targets.get(target_addr),
            tls,
            dst: None,
        }
    }

    /// `dst_*` labels from an endpoint's discovery labels (`namespace`,
    /// `service`, `deployment`, `pod`), with `namespace`/`service` falling
    /// back to the resolved service's. Values are interned (bounded).
    pub fn dst_labels(
        &self,
        labels: &std::collections::BTreeMap<String, String>,
        service: &str,
        namespace: &str,
    ) -> Arc<DstLabels> {
        let get = |k: &str, fallback: &str| {
            self.dst_values
                .get(labels.get(k).map_or(fallback, String::as_str))
        };
        Arc::new(DstLabels {
            namespace: get("namespace", namespace),
            service: get("service", service),
            deployment: get("deployment", ""),
            pod: get("pod", ""),
        })
    }

    /// Counts a connection that failed before it was handed to a target.
    pub fn accept_error(&self, direction: Direction, error: &'static str) {
        self.accept_errors[direction as usize]
            .get_or_create(&ErrorLabels { error })
            .inc();
    }

    /// Counts an HTTP connection that ended in a protocol error.
    pub fn http_error(&self, direction: Direction, error: &'static str) {
        self.http_errors[direction as usize]
            .get_or_create(&ErrorLabels { error })
            .inc();
    }

    /// Starts counting one TCP connection; the returned handle counts its
    /// bytes and records its close when dropped.
    pub fn tcp_open(self: &Arc<Self>, labels: TcpLabels) -> Arc<TcpConnection> {
        self.tcp_open_total.get_or_create(&labels).inc();
        self.tcp_open_connections.get_or_create(&labels).inc();
        Arc::new(TcpConnection {
            read: self.tcp_read_bytes_total.get_or_create_owned(&labels),
            write: self.tcp_write_bytes_total.get_or_create_owned(&labels),
            bytes: Default::default(),
            opened: Instant::now(),
            errno: OnceLock::new(),
            metrics: self.clone(),
            labels,
        })
    }

    /// Counts one request; the handle records its response.
    pub fn request(self: &Arc<Self>, labels: RequestLabels) -> RequestMetrics {
        self.request_since(labels, Instant::now())
    }

    /// Counts one request that started at `start`; the handle records its response.
    pub fn request_since(
        self: &Arc<Self>,
        labels: RequestLabels,
        start: Instant,
    ) -> RequestMetrics {
        let mut m = self.request_pending(labels, start);
        m.count();
        m
    }

    /// Counts one request that started at `start` in a cached `series`
    /// (see [`ConnectionSeries`]): no label clone nor family look-up once
    /// the series has seen the same outcome.
    pub fn request_in(
        self: &Arc<Self>,
        series: Arc<RequestSeries>,
        start: Instant,
    ) -> RequestMetrics {
        let mut m = self.new_request(Series::Cached(series), start);
        m.count();
        m
    }

    /// A request whose labels are final only once an endpoint answered
    /// ([`RequestMetrics::relabel`]); it is counted in `request_total` then,
    /// or when it ends, whichever is first.
    pub fn request_pending(
        self: &Arc<Self>,
        labels: RequestLabels,
        start: Instant,
    ) -> RequestMetrics {
        self.new_request(Series::Labels(labels), start)
    }

    fn new_request(self: &Arc<Self>, series: Series, start: Instant) -> RequestMetrics {
        RequestMetrics {
            metrics: self.clone(),
            series,
            start,
            latency_recorded: false,
            ended: false,
            counted: false,
            tap: None,
        }
    }
}

/// One open TCP connection's metrics.
#[derive(Debug)]
pub struct TcpConnection {
    read: Counter,
    write: Counter,
    /// Bytes moved either way, for the idle timeout watchdog.
    pub bytes: std::sync::atomic::AtomicU64,
    opened: Instant,
    errno: OnceLock<&'static str>,
    metrics: Arc<Metrics>,
    labels: TcpLabels,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl TcpConnection {
    /// Counts `n` bytes read from the peer.
    pub fn read(&self, n: usize) {
        self.read.inc_by(n as u64);
        self.bytes
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts `n` bytes written to the peer.
    pub fn wrote(&self, n: usize) {
        self.write.inc_by(n as u64);
        self.bytes
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Records why the connection ended (first error wins), for `errno`.
    pub fn set_error(&self, error: &std::io::Error) {
        let _ = self.errno.set(errno_label(error));
    }
}

impl Drop for TcpConnection {
    fn drop(&mut self) {
        let m = &self.metrics;
        m.tcp_open_connections.get_or_create(&self.labels).dec();
        let errno = self.errno.get().copied().unwrap_or("");
        m.tcp_close_total
            .get_or_create(&TcpCloseLabels {
                tcp: self.labels.clone(),
                errno,
            })
            .inc();
        m.tcp_connection_duration_ms
            .get_or_create(&self.labels)
            .observe(self.opened.elapsed().as_secs_f64() * 1e3);
    }
}

/// One request in flight. Latency is recorded at the response's first
/// frame (linkerd2-proxy's time-to-first-byte; end of stream when there is
/// no data), the response when its stream ends. Dropped without an end
/// (the client cancelled before a response head), it records a failure
/// with `error="cancel"`, so every request gets a response series.
#[derive(Debug)]
pub struct RequestMetrics {
    metrics: Arc<Metrics>,
    series: Series,
    start: Instant,
    latency_recorded: bool,
    ended: bool,
    /// Whether `request_total` was incremented (with the final labels).
    counted: bool,
    /// Request metadata kept for the tap, only while a tap is open.
    tap: Option<Box<TapStart>>,
}

/// A request's labels: its own (looked up in the families at each
/// record) or a connection's cached handles.
#[derive(Debug)]
enum Series {
    Labels(RequestLabels),
    Cached(Arc<RequestSeries>),
}

impl Series {
    fn labels(&self) -> &RequestLabels {
        match self {
            Series::Labels(l) => l,
            Series::Cached(s) => &s.labels,
        }
    }
}

/// What a tap event needs from the request head.
#[derive(Debug)]
struct TapStart {
    ts_ms: u64,
    method: String,
    path: String,
}

impl RequestMetrics {
    /// Keeps the request's method and path (not its query) for the tap, if
    /// one is open; one atomic load otherwise.
    pub fn tap(&mut self, method: &http::Method, uri: &http::Uri) {
        if self.metrics.tap.is_active() {
            let ts_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            self.tap = Some(Box::new(TapStart {
                ts_ms,
                method: method.to_string(),
                path: uri.path().to_string(),
            }));
        }
    }

    /// Replaces the target labels of a request not counted yet (the
    /// endpoint that answered); ignored once counted.
    pub fn relabel(&mut self, target: TargetLabels) {
        if !self.counted {
            let authority = self.series.labels().authority.clone();
            self.series = Series::Labels(RequestLabels { target, authority });
        }
    }

    fn count(&mut self) {
        if std::mem::replace(&mut self.counted, true) {
            return;
        }
        match &self.series {
            Series::Labels(l) => {
                self.metrics.request_total.get_or_create(l).inc();
            }
            Series::Cached(s) => s.count(&self.metrics.request_total),
        }
    }

    /// Records `response_latency_ms` once, at the first response frame.
    pub fn first_frame(&mut self, status: Option<u16>) {
        if std::mem::replace(&mut self.latency_recorded, true) {
            return;
        }
        self.count();
        let ms = self.start.elapsed().as_secs_f64() * 1e3;
        match &self.series {
            Series::Labels(l) => self
                .metrics
                .response_latency_ms
                .get_or_create(&LatencyLabels {
                    request: l.clone(),
                    status_code: status,
                })
                .observe(ms),
            Series::Cached(s) => s.observe_latency(&self.metrics.response_latency_ms, status, ms),
        }
    }

    /// Records the end of the exchange: `status` is the HTTP status sent to
    /// the client (`None`: none was), `grpc_status` the `grpc-status`
    /// trailer if any, `error` a short reason when the exchange failed
    /// (`""` otherwise). 5xx, non-zero gRPC status or an error classify as
    /// `failure`, as linkerd2-proxy does.
    pub fn end(mut self, status: Option<u16>, grpc_status: Option<u32>, error: &'static str) {
        self.record(status, grpc_status, error);
    }

    fn record(&mut self, status: Option<u16>, grpc_status: Option<u32>, error: &'static str) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        self.count();
        self.first_frame(status);
        let failed = !error.is_empty()
            || status.is_none_or(|s| s >= 500)
            || grpc_status.is_some_and(|g| g != 0);
        let classification = if failed {
            Classification::Failure
        } else {
            Classification::Success
        };
        match &self.series {
            Series::Labels(l) => {
                self.metrics
                    .response_total
                    .get_or_create(&ResponseLabels {
                        request: l.clone(),
                        status_code: status,
                        grpc_status,
                        classification,
                        error,
                    })
                    .inc();
            }
            Series::Cached(s) => s.count_response(
                &self.metrics.response_total,
                (status, grpc_status, error),
                classification,
            ),
        }
        if let Some(t) = self.tap.take() {
            self.publish_tap(*t, status, grpc_status, error);
        }
    }

    fn publish_tap(&self, t: TapStart, status: Option<u16>, grpc_status: Option<u32>, error: &str) {
        let target = &self.series.labels().target;
        let peer = match &target.tls {
            Tls::Established { peer, .. } => Some(peer.to_string()),
            Tls::NoIdentity(_) => None,
        };
        let inbound = target.direction == Direction::Inbound;
        self.metrics.tap.publish(pimesh_api::tap::TapEvent {
            ts_ms: t.ts_ms,
            direction: target.direction.as_str().to_string(),
            destination: target.target_addr.to_string(),
            tls: peer.is_some(),
            client_id: peer.clone().filter(|_| inbound),
            server_id: peer.filter(|_| !inbound),
            method: t.method,
            authority: self.series.labels().authority.to_string(),
            path: t.path,
            status,
            grpc_status,
            latency_us: self.start.elapsed().as_micros() as u64,
            error: (!error.is_empty()).then(|| error.to_string()),
            skipped: 0,
            labels: Default::default(),
        });
    }
}

impl Drop for RequestMetrics {
    fn drop(&mut self) {
        self.record(None, None, "cancel");
    }
}

/// `errno` label values for the errors a proxied socket commonly ends with.
fn errno_label(e: &std::io::Error) -> &'static str {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionReset => "ECONNRESET",
        ConnectionRefused => "ECONNREFUSED",
        ConnectionAborted => "ECONNABORTED",
        BrokenPipe => "EPIPE",
        TimedOut => "ETIMEDOUT",
        NotConnected => "ENOTCONN",
        HostUnreachable => "EHOSTUNREACH",
        NetworkUnreachable => "ENETUNREACH",
        _ => "EIO",
    }
}

/// Keeps at most [`MAX_LABEL_VALUES`] distinct strings, so that a client
/// sending random `Host` headers cannot grow the metrics without bound.
#[derive(Default)]
struct Interner {
    values: Mutex<HashSet<Arc<str>>>,
}

impl Interner {
    fn get(&self, value: &str) -> Arc<str> {
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = values.get(value) {
            return v.clone();
        }
        if values.len() >= MAX_LABEL_VALUES {
            return values
                .get("overflow")
                .cloned()
                .unwrap_or_else(|| Arc::from("overflow"));
        }
        let v: Arc<str> = Arc::from(value);
        values.insert(v.clone());
        v
    }
}

/// The look-ups that need the proxy's [`Metrics`] (its authority interner);
/// the cache itself is in `series.rs`, which knows only the families.
impl ConnectionSeries {
    /// The series of requests for `authority` (`""`: none) on this
    /// connection; the authority is interned (bounded) on first sight.
    pub fn get(&self, m: &Metrics, authority: &str) -> Arc<RequestSeries> {
        self.lookup(
            None,
            authority,
            || self.target().clone(),
            |a| m.authority(a),
        )
    }

    /// The series of requests for `authority` that an explicit proxy sends
    /// to `addr`, labelled `target()` on first sight (the labels of a
    /// target depend on the address and the static configuration only).
    pub fn get_explicit(
        &self,
        m: &Metrics,
        addr: SocketAddr,
        authority: &str,
        target: impl FnOnce() -> TargetLabels,
    ) -> Arc<RequestSeries> {
        self.lookup(Some(addr), authority, target, |a| m.authority(a))
    }
}
