//! From a proxy's `/metrics` text (Prometheus text or OpenMetrics, as
//! `pimesh-proxy` and linkerd2-proxy write it) to the few series telemetry
//! needs, summed over the labels it does not keep (`authority`,
//! `target_addr`, `status_code`, ...).
//!
//! The text is parsed by the `prometheus-parse` crate; before that, every
//! line is checked with its line parser and a body with any line that is
//! not a comment, a `HELP`/`TYPE` line or a sample with a numeric value is
//! refused whole, as Prometheus refuses a scrape with a parse error.

use prometheus_parse::{LineInfo, Scrape, Value};
use std::collections::{BTreeMap, HashMap};

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
    /// Series left out over [`MAX_SERIES`].
    pub dropped: usize,
}

/// Series names read; every other sample line is only syntax-checked.
const NAMES: [&str; 7] = [
    "request_total",
    "response_total",
    "response_latency_ms",
    "tcp_open_connections",
    "tcp_read_bytes_total",
    "tcp_write_bytes_total",
    "process_start_time_seconds",
];

const WORKLOAD_LABELS: [&str; 4] = ["namespace", "deployment", "pod", "service"];

/// Parses a `/metrics` body. Errors: the first line that is not valid
/// exposition text, with its number (1-based).
pub fn parse(text: &str) -> Result<Parsed, String> {
    // First pass: syntax only, nothing kept.
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match LineInfo::parse(trimmed) {
            LineInfo::Sample { value, labels, .. } => {
                if parse_float(value).is_none() || labels.is_some_and(|l| !balanced(l)) {
                    return Err(format!("line {}: bad sample {}", n + 1, excerpt(trimmed)));
                }
            }
            _ => {
                return Err(format!(
                    "line {}: not a sample: {}",
                    n + 1,
                    excerpt(trimmed)
                ))
            }
        }
    }
    // Second pass: the crate parses the lines telemetry reads (and the
    // TYPE lines that make histograms), fed lazily.
    let kept = text.lines().filter(|line| {
        let t = line.trim_start();
        match t.strip_prefix('#') {
            Some(comment) => comment.trim_start().starts_with("TYPE"),
            None => NAMES.iter().any(|name| t.starts_with(name)),
        }
    });
    let scrape = Scrape::parse(kept.map(|l| Ok(l.to_string()))).map_err(|e| e.to_string())?;
    let mut out = Parsed::default();
    for s in scrape.samples {
        let labels = &s.labels;
        if out.workload.is_empty() {
            for k in WORKLOAD_LABELS {
                if let Some(v) = labels.get(k) {
                    out.workload.insert(k.to_string(), v.to_string());
                }
            }
        }
        let metric = match (s.metric.as_str(), labels.get("classification")) {
            ("process_start_time_seconds", _) => {
                if let Value::Gauge(v) | Value::Untyped(v) = s.value {
                    out.start_time = Some(v);
                }
                continue;
            }
            ("request_total", _) => Metric::Requests,
            ("response_total", Some("success")) => Metric::Successes,
            ("response_total", Some(_)) => Metric::Failures,
            ("response_latency_ms", _) => Metric::Latency,
            ("tcp_open_connections", _) => Metric::TcpOpen,
            ("tcp_read_bytes_total", _) => Metric::ReadBytes,
            ("tcp_write_bytes_total", _) => Metric::WriteBytes,
            _ => continue,
        };
        let inbound = match labels.get("direction") {
            Some("inbound") => true,
            Some("outbound") => false,
            _ => continue,
        };
        if matches!(
            metric,
            Metric::TcpOpen | Metric::ReadBytes | Metric::WriteBytes
        ) && !(inbound && labels.get("peer") == Some("src"))
        {
            continue;
        }
        let id_label = if inbound { "client_id" } else { "server_id" };
        let dst = (!inbound)
            .then(|| Dst {
                namespace: labels.get("dst_namespace").map(str::to_string),
                deployment: labels.get("dst_deployment").map(str::to_string),
                service: labels.get("dst_service").map(str::to_string),
                pod: labels.get("dst_pod").map(str::to_string),
            })
            .filter(|d| d != &Dst::default());
        let key = Key {
            metric,
            inbound,
            tls: labels.get("tls") == Some("true"),
            peer_id: labels.get(id_label).map(str::to_string),
            dst,
        };
        let sample = match s.value {
            Value::Histogram(counts) => {
                let mut b: Buckets = [0.0; BOUNDS_MS.len()];
                let mut sorted: Vec<(f64, f64)> =
                    counts.iter().map(|h| (h.less_than, h.count)).collect();
                sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
                // Cumulative counts at our bounds: the count of the largest
                // given bound that is <= ours.
                for (i, bound) in BOUNDS_MS.iter().enumerate() {
                    b[i] = sorted
                        .iter()
                        .take_while(|(le, _)| le <= bound)
                        .last()
                        .map_or(0.0, |(_, c)| *c);
                }
                Sample::Histogram(Box::new(b))
            }
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Sample::Value(v),
            Value::Summary(_) => continue,
        };
        let present = out.series.len();
        match out.series.get_mut(&key) {
            Some(existing) => add(existing, &sample),
            None if present < MAX_SERIES => {
                out.series.insert(key, sample);
            }
            None => out.dropped += 1,
        }
    }
    Ok(out)
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

/// A sample value as Go's `ParseFloat` reads it (`NaN`, `+Inf`, `-Inf` too).
fn parse_float(v: &str) -> Option<f64> {
    match v {
        "NaN" | "nan" => Some(f64::NAN),
        "+Inf" | "Inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        v => v.parse().ok(),
    }
}

/// Whether every label value in `{...}` is a closed quoted string.
fn balanced(labels: &str) -> bool {
    let mut quoted = false;
    let mut escaped = false;
    for c in labels.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            _ => {}
        }
    }
    !quoted && labels.contains('=')
}

fn excerpt(line: &str) -> String {
    let end = line.char_indices().nth(80).map_or(line.len(), |(i, _)| i);
    format!("{:?}", &line[..end])
}

#[cfg(test)]
mod tests;
