//! From a proxy's `/metrics` text (Prometheus text or OpenMetrics, as
//! `pimesh-proxy` and linkerd2-proxy write it) to the few series telemetry
//! needs, summed over the labels it does not keep (`authority`,
//! `target_addr`, `status_code`, ...).
//!
//! Every line is parsed (`text.rs`, the exposition format's grammar, label
//! escapes included); a body with any line that is neither a comment nor a
//! well-formed sample is refused whole, as Prometheus refuses a scrape with
//! a parse error. Histograms are recognised by their `_bucket` samples, so
//! `TYPE` lines are not needed (OpenMetrics and Prometheus text both work).

mod text;

use std::collections::{BTreeMap, HashMap};
use text::{parse_float, parse_line, Line};

/// Upper bounds of `response_latency_ms` buckets, milliseconds:
/// linkerd2-proxy's (and `pimesh-proxy`'s), then `+Inf`. Buckets of other
/// bounds are counted in the next bound up.
pub const BOUNDS_MS: [f64; 26] = [
    1.0,
    2.0,
    3.0,
    4.0,
    5.0,
    10.0,
    20.0,
    30.0,
    40.0,
    50.0,
    100.0,
    200.0,
    300.0,
    400.0,
    500.0,
    1000.0,
    2000.0,
    3000.0,
    4000.0,
    5000.0,
    10000.0,
    20000.0,
    30000.0,
    40000.0,
    50000.0,
    f64::INFINITY,
];

/// Cumulative bucket counts over [`BOUNDS_MS`].
pub type Buckets = [f64; BOUNDS_MS.len()];

/// Reduced series kept per target; more are dropped (and counted).
pub const MAX_SERIES: usize = 2000;
/// Reduced authorization series kept per target (each (server, route,
/// authorization) twice at most: allowed and denied); more are dropped
/// (and counted).
pub const MAX_AUTHZ_SERIES: usize = 400;

/// Which quantity a series holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// `request_total`.
    Requests,
    /// `response_total{classification="success"}`.
    Successes,
    /// `response_total{classification="failure"}`.
    Failures,
    /// `response_latency_ms` (histogram).
    Latency,
    /// `tcp_open_connections{direction="inbound",peer="src"}` (gauge).
    TcpOpen,
    /// `tcp_read_bytes_total{direction="inbound",peer="src"}`: bytes from clients.
    ReadBytes,
    /// `tcp_write_bytes_total{direction="inbound",peer="src"}`: bytes to clients.
    WriteBytes,
}

/// The destination of outbound traffic, from the `dst_*` labels that
/// discovery adds to a client proxy's outbound series.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dst {
    /// `dst_namespace`.
    pub namespace: Option<String>,
    /// `dst_deployment`.
    pub deployment: Option<String>,
    /// `dst_service`.
    pub service: Option<String>,
    /// `dst_pod`.
    pub pod: Option<String>,
}

/// A series after reduction: what it measures and who the peer is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// The quantity.
    pub metric: Metric,
    /// `direction="inbound"` (else outbound).
    pub inbound: bool,
    /// `tls="true"`: mesh mTLS with a verified peer identity.
    pub tls: bool,
    /// The peer's identity name: `client_id` inbound, `server_id` outbound.
    pub peer_id: Option<String>,
    /// Outbound only: the destination workload, when discovery labelled it.
    pub dst: Option<Dst>,
}

/// Which server, route and authorization an inbound authorization counter
/// names: the `srv_*`, `route_*` and `authz_*` labels of
/// `inbound_{http,tcp}_authz_{allow,deny}_total`, as linkerd2-proxy and
/// `pimesh-proxy` write them (summed over `target_addr`, `tls`,
/// `client_id`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AuthzKey {
    /// `inbound_http_*` (requests; else `inbound_tcp_*`, connections).
    pub http: bool,
    /// `srv_kind`: `server` (a Server resource) or `default` (a default policy).
    pub srv_kind: String,
    /// `srv_name`: the Server, or the default policy (`all-unauthenticated`, `deny`, ...).
    pub srv_name: String,
    /// `route_name` of HTTP series (`default`: a Server without routes).
    pub route: Option<String>,
    /// `authz_kind` of allowed series: `authorizationpolicy`,
    /// `serverauthorization` (Linkerd's older resource) or `default`;
    /// `None` on denials (no authorization admitted them).
    pub authz_kind: Option<String>,
    /// `authz_name` of allowed series.
    pub authz_name: Option<String>,
}

/// An authorization counter: its key and whether it counts allowed
/// (`*_allow_total`) or denied (`*_deny_total`) requests or connections.
pub type AuthzSeries = (AuthzKey, bool);

/// A reduced sample.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// A counter or gauge value.
    Value(f64),
    /// Cumulative bucket counts.
    Histogram(Box<Buckets>),
}

/// What one scrape yielded.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    /// The workload labels of the proxy's series (`namespace`,
    /// `deployment`, `pod`, `service`), from `proxy_build_info` or any series.
    pub workload: BTreeMap<String, String>,
    /// `process_start_time_seconds`: a change means the proxy restarted.
    pub start_time: Option<f64>,
    /// The reduced series.
    pub series: HashMap<Key, Sample>,
    /// Authorization counters (empty for a proxy without them, so a
    /// proxy that reports none costs nothing more).
    pub authz: HashMap<AuthzSeries, f64>,
    /// Series left out over [`MAX_SERIES`] or [`MAX_AUTHZ_SERIES`].
    pub dropped: usize,
}

/// Series names read; every other sample line is only syntax-checked.
const NAMES: [&str; 11] = [
    "request_total",
    "response_total",
    "response_latency_ms_bucket",
    "tcp_open_connections",
    "tcp_read_bytes_total",
    "tcp_write_bytes_total",
    "process_start_time_seconds",
    "inbound_http_authz_allow_total",
    "inbound_http_authz_deny_total",
    "inbound_tcp_authz_allow_total",
    "inbound_tcp_authz_deny_total",
];

const WORKLOAD_LABELS: [&str; 4] = ["namespace", "deployment", "pod", "service"];

/// Parses a `/metrics` body.
///
/// # Errors
///
/// The first line that is not valid exposition text, with its number
/// (1-based) and what is wrong.
pub fn parse(text: &str) -> Result<Parsed, String> {
    let mut out = Parsed::default();
    // Histogram buckets per original series (its labels but `le`), turned
    // into our bounds at the end.
    let mut histograms: HashMap<String, (Key, Vec<(f64, f64)>)> = HashMap::new();
    for (n, raw) in text.lines().enumerate() {
        let line = match parse_line(raw) {
            Ok(Some(line)) => line,
            Ok(None) => continue,
            Err(why) => return Err(format!("line {}: {why}: {}", n + 1, excerpt(raw.trim()))),
        };
        if !NAMES.contains(&line.name) {
            continue;
        }
        if out.workload.is_empty() {
            for k in WORKLOAD_LABELS {
                if let Some(v) = line.label(k) {
                    out.workload.insert(k.to_string(), v.to_string());
                }
            }
        }
        if let Some(series) = authz_series(&line) {
            let present = out.authz.len();
            match out.authz.get_mut(&series) {
                Some(v) => *v += line.value,
                None if present < MAX_AUTHZ_SERIES => {
                    out.authz.insert(series, line.value);
                }
                None => out.dropped += 1,
            }
            continue;
        }
        let metric = match (line.name, line.label("classification")) {
            ("process_start_time_seconds", _) => {
                out.start_time = Some(line.value);
                continue;
            }
            ("request_total", _) => Metric::Requests,
            ("response_total", Some("success")) => Metric::Successes,
            ("response_total", Some(_)) => Metric::Failures,
            ("response_latency_ms_bucket", _) => Metric::Latency,
            ("tcp_open_connections", _) => Metric::TcpOpen,
            ("tcp_read_bytes_total", _) => Metric::ReadBytes,
            ("tcp_write_bytes_total", _) => Metric::WriteBytes,
            _ => continue,
        };
        let Some(key) = reduce(metric, &line) else {
            continue;
        };
        if metric == Metric::Latency {
            let Some(le) = line.label("le").and_then(parse_float) else {
                continue;
            };
            let mut id = String::new();
            for (k, v) in line.labels.iter().filter(|(k, _)| *k != "le") {
                id.push_str(k);
                id.push('=');
                id.push_str(v);
                id.push('\u{0}');
            }
            let known = histograms.len();
            match histograms.get_mut(&id) {
                Some((_, buckets)) => buckets.push((le, line.value)),
                None if known < MAX_SERIES => {
                    histograms.insert(id, (key, vec![(le, line.value)]));
                }
                None => out.dropped += 1,
            }
            continue;
        }
        insert(&mut out, key, Sample::Value(line.value));
    }
    for (_, (key, mut given)) in histograms {
        given.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Cumulative counts at our bounds: the count of the largest given
        // bound that is <= ours.
        let mut b: Buckets = [0.0; BOUNDS_MS.len()];
        for (i, bound) in BOUNDS_MS.iter().enumerate() {
            b[i] = given
                .iter()
                .take_while(|(le, _)| le <= bound)
                .last()
                .map_or(0.0, |(_, c)| *c);
        }
        insert(&mut out, key, Sample::Histogram(Box::new(b)));
    }
    Ok(out)
}

/// The reduced key of a sample, or `None` for series telemetry skips
/// (no direction; TCP series other than inbound client connections).
fn reduce(metric: Metric, line: &Line<'_>) -> Option<Key> {
    let inbound = match line.label("direction") {
        Some("inbound") => true,
        Some("outbound") => false,
        _ => return None,
    };
    if matches!(
        metric,
        Metric::TcpOpen | Metric::ReadBytes | Metric::WriteBytes
    ) && !(inbound && line.label("peer") == Some("src"))
    {
        return None;
    }
    let id_label = if inbound { "client_id" } else { "server_id" };
    let owned = |k| line.label(k).map(str::to_string);
    let dst = (!inbound)
        .then(|| Dst {
            namespace: owned("dst_namespace"),
            deployment: owned("dst_deployment"),
            service: owned("dst_service"),
            pod: owned("dst_pod"),
        })
        .filter(|d| d != &Dst::default());
    Some(Key {
        metric,
        inbound,
        tls: line.label("tls") == Some("true"),
        peer_id: owned(id_label),
        dst,
    })
}

/// The authorization series of an `inbound_{http,tcp}_authz_*_total`
/// sample, or `None` for other samples. The `*_allow_total` ones without
/// `authz_*` labels keep `None` there, as denials do.
///
/// Hook for rate limits: `inbound_http_local_ratelimit_total` (same
/// `srv_*`/`route_*` labels) would be one more name here, a third verdict
/// beside allowed/denied and a third count in `AuthzPoint`; it is not read
/// yet, so that `authz` does not depend on it.
fn authz_series(line: &Line<'_>) -> Option<AuthzSeries> {
    let (http, allow) = match line.name {
        "inbound_http_authz_allow_total" => (true, true),
        "inbound_http_authz_deny_total" => (true, false),
        "inbound_tcp_authz_allow_total" => (false, true),
        "inbound_tcp_authz_deny_total" => (false, false),
        _ => return None,
    };
    let owned = |k| line.label(k).map(str::to_string);
    let key = AuthzKey {
        http,
        srv_kind: owned("srv_kind").unwrap_or_default(),
        srv_name: owned("srv_name").unwrap_or_default(),
        route: if http { owned("route_name") } else { None },
        authz_kind: owned("authz_kind").filter(|k| !k.is_empty()),
        authz_name: owned("authz_name").filter(|n| !n.is_empty()),
    };
    Some((key, allow))
}

/// Adds `sample` to the series `key` (at most [`MAX_SERIES`]).
fn insert(out: &mut Parsed, key: Key, sample: Sample) {
    let present = out.series.len();
    match out.series.get_mut(&key) {
        Some(existing) => add(existing, &sample),
        None if present < MAX_SERIES => {
            out.series.insert(key, sample);
        }
        None => out.dropped += 1,
    }
}

/// `a += b`.
fn add(a: &mut Sample, b: &Sample) {
    match (a, b) {
        (Sample::Value(x), Sample::Value(y)) => *x += y,
        (Sample::Histogram(x), Sample::Histogram(y)) => {
            for (x, y) in x.iter_mut().zip(y.iter()) {
                *x += y;
            }
        }
        _ => {}
    }
}

fn excerpt(line: &str) -> String {
    let end = line.char_indices().nth(80).map_or(line.len(), |(i, _)| i);
    format!("{:?}", &line[..end])
}

#[cfg(test)]
mod tests;
