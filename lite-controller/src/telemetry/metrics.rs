//! Telemetry's own series (`pimesh_controller_scrape*`,
//! `pimesh_controller_history*`, seconds) and the re-export of the
//! aggregated workload series (`pimesh_workload_*`) for an external
//! Prometheus, appended to the controller's `/metrics`.

use super::parse::BOUNDS_MS;
use super::scrape::RESULTS;
use super::window::Point;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::fmt::Write;

/// `scrape_duration_seconds` buckets: loopback scrapes take milliseconds,
/// a Pi over Wi-Fi tens; the timeout ends the rest.
const DURATION_BUCKETS: [f64; 9] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// Workloads re-exported; more are left out of `pimesh_workload_*`.
pub const MAX_EXPORTED: usize = 200;

type Labels = [(&'static str, &'static str); 1];

/// The series and their registry.
pub struct TelemetryMetrics {
    registry: Registry,
    /// `pimesh_controller_scrapes_total{result}`.
    scrapes: Family<Labels, Counter>,
    /// `pimesh_controller_scrape_duration_seconds`: one target's scrape.
    pub scrape_duration: Histogram,
    /// `pimesh_controller_scrape_targets{state}`: `up` and `stale` targets.
    targets: Family<Labels, Gauge>,
    /// `pimesh_controller_scrape_targets_dropped_total`: targets left out
    /// over the limit.
    pub targets_dropped: Counter,
    /// `pimesh_controller_scrape_series_dropped_total`: reduced series left
    /// out over the per-target limit.
    pub series_dropped: Counter,
    /// `pimesh_controller_history_writes_total{result}`: batches written.
    history_writes: Family<Labels, Counter>,
    /// `pimesh_controller_history_bytes_total`: bytes of keys and values
    /// handed to the database (the disk sees these plus sled's framing).
    pub history_bytes: Counter,
}

impl Default for TelemetryMetrics {
    fn default() -> Self {
        TelemetryMetrics::new()
    }
}

impl TelemetryMetrics {
    /// Registers every series.
    pub fn new() -> TelemetryMetrics {
        let mut r = Registry::default();
        let m = TelemetryMetrics {
            registry: Registry::default(),
            scrapes: Family::default(),
            scrape_duration: Histogram::new(DURATION_BUCKETS),
            targets: Family::default(),
            targets_dropped: Counter::default(),
            series_dropped: Counter::default(),
            history_writes: Family::default(),
            history_bytes: Counter::default(),
        };
        let p = "pimesh_controller_";
        r.register(
            format!("{p}scrapes"),
            "Scrapes of proxies' /metrics, by result",
            m.scrapes.clone(),
        );
        r.register(
            format!("{p}scrape_duration_seconds"),
            "Time to fetch and parse one proxy's /metrics",
            m.scrape_duration.clone(),
        );
        r.register(
            format!("{p}scrape_targets"),
            "Scrape targets by state (stale: the last scrape failed)",
            m.targets.clone(),
        );
        r.register(
            format!("{p}scrape_targets_dropped"),
            "Targets not scraped because there are too many",
            m.targets_dropped.clone(),
        );
        r.register(
            format!("{p}scrape_series_dropped"),
            "Series of a scrape left out because a target has too many",
            m.series_dropped.clone(),
        );
        r.register(
            format!("{p}history_writes"),
            "Batches of telemetry history written to the database, by result",
            m.history_writes.clone(),
        );
        r.register(
            format!("{p}history_bytes"),
            "Bytes of telemetry history keys and values written to the database",
            m.history_bytes.clone(),
        );
        for result in RESULTS {
            drop(m.scrapes.get_or_create(&[("result", result)]));
        }
        for result in ["success", "failure"] {
            drop(m.history_writes.get_or_create(&[("result", result)]));
        }
        TelemetryMetrics { registry: r, ..m }
    }

    /// Counts a scrape with `result` (one of [`RESULTS`]).
    pub fn scraped(&self, result: &'static str) {
        self.scrapes.get_or_create(&[("result", result)]).inc();
    }

    /// Sets the target gauges.
    pub fn set_targets(&self, up: usize, stale: usize) {
        let set = |s, n: usize| {
            self.targets
                .get_or_create(&[("state", s)])
                .set(i64::try_from(n).unwrap_or(i64::MAX))
        };
        set("up", up);
        set("stale", stale);
    }

    /// Counts a history batch.
    pub fn history_written(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.history_writes
            .get_or_create(&[("result", result)])
            .inc();
    }

    /// The OpenMetrics text of these series, without the final `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        strip_eof(&mut out);
        out
    }
}

/// Removes a trailing `# EOF` line.
pub fn strip_eof(text: &mut String) {
    if text.ends_with("# EOF\n") {
        text.truncate(text.len() - "# EOF\n".len());
    }
}

/// Cumulative totals of one workload since the controller started.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    requests: u64,
    successes: u64,
    failures: u64,
    buckets: [u64; BOUNDS_MS.len()],
    read_bytes: u64,
    write_bytes: u64,
    /// Open connections per target at its latest scrape.
    tcp_open: BTreeMap<std::net::SocketAddr, u64>,
}

impl Totals {
    /// Adds a target's new point.
    pub fn add(&mut self, target: std::net::SocketAddr, p: &Point) {
        self.requests += p.requests;
        self.successes += p.successes;
        self.failures += p.failures;
        for (t, b) in self.buckets.iter_mut().zip(p.buckets.iter()) {
            *t += u64::from(*b);
        }
        self.read_bytes += p.read_bytes;
        self.write_bytes += p.write_bytes;
        self.tcp_open.insert(target, p.tcp_open);
    }

    /// Forgets a target's connections (it went stale or away).
    pub fn forget(&mut self, target: &std::net::SocketAddr) {
        self.tcp_open.remove(target);
    }
}

/// Escapes a label value (OpenMetrics: `\`, `"`, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Appends the `pimesh_workload_*` series of `totals` (keyed by
/// `(namespace, deployment)`): counters since the controller started, so
/// that `rate()` and `histogram_quantile()` work as on the proxies' own
/// series.
pub fn encode_workloads(out: &mut String, totals: &BTreeMap<(String, String), Totals>) {
    let lab =
        |(ns, d): &(String, String)| format!("namespace=\"{}\",deployment=\"{}\"", esc(ns), esc(d));
    let mut family = |name: &str, ty: &str, help: &str, f: &dyn Fn(&str, &Totals, &mut String)| {
        let _ = writeln!(out, "# HELP {name} {help}.");
        let _ = writeln!(out, "# TYPE {name} {ty}");
        for (k, t) in totals {
            f(&lab(k), t, out);
        }
    };
    family(
        "pimesh_workload_requests",
        "counter",
        "HTTP requests to the workload (inbound), since the controller started",
        &|l, t, o| {
            let _ = writeln!(o, "pimesh_workload_requests_total{{{l}}} {}", t.requests);
        },
    );
    family(
        "pimesh_workload_responses",
        "counter",
        "HTTP responses of the workload by classification, since the controller started",
        &|l, t, o| {
            let _ = writeln!(
                o,
                "pimesh_workload_responses_total{{{l},classification=\"success\"}} {}",
                t.successes
            );
            let _ = writeln!(
                o,
                "pimesh_workload_responses_total{{{l},classification=\"failure\"}} {}",
                t.failures
            );
        },
    );
    family(
        "pimesh_workload_response_latency_ms",
        "histogram",
        "Response latency of the workload in milliseconds (linkerd2-proxy's buckets), since the controller started",
        &|l, t, o| {
            let mut cum = 0;
            for (b, n) in BOUNDS_MS.iter().zip(t.buckets.iter()) {
                cum += n;
                let le = if b.is_infinite() {
                    "+Inf".to_string()
                } else {
                    format!("{b:.1}")
                };
                let _ = writeln!(
                    o,
                    "pimesh_workload_response_latency_ms_bucket{{{l},le=\"{le}\"}} {cum}"
                );
            }
            let _ = writeln!(o, "pimesh_workload_response_latency_ms_count{{{l}}} {cum}");
        },
    );
    family(
        "pimesh_workload_tcp_open_connections",
        "gauge",
        "Open inbound client connections of the workload at the latest scrapes",
        &|l, t, o| {
            let n: u64 = t.tcp_open.values().sum();
            let _ = writeln!(o, "pimesh_workload_tcp_open_connections{{{l}}} {n}");
        },
    );
    family(
        "pimesh_workload_tcp_read_bytes",
        "counter",
        "Bytes read from the workload's inbound clients, since the controller started",
        &|l, t, o| {
            let _ = writeln!(
                o,
                "pimesh_workload_tcp_read_bytes_total{{{l}}} {}",
                t.read_bytes
            );
        },
    );
    family(
        "pimesh_workload_tcp_write_bytes",
        "counter",
        "Bytes written to the workload's inbound clients, since the controller started",
        &|l, t, o| {
            let _ = writeln!(
                o,
                "pimesh_workload_tcp_write_bytes_total{{{l}}} {}",
                t.write_bytes
            );
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_names() {
        let m = TelemetryMetrics::new();
        m.scraped("timeout");
        m.set_targets(2, 1);
        let text = m.encode();
        for line in [
            "pimesh_controller_scrapes_total{result=\"timeout\"} 1",
            "pimesh_controller_scrapes_total{result=\"malformed\"} 0",
            "pimesh_controller_scrape_targets{state=\"stale\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
        assert!(!text.contains("# EOF"));

        let mut totals = BTreeMap::new();
        let mut t = Totals::default();
        let mut p = Point {
            requests: 10,
            successes: 9,
            failures: 1,
            tcp_open: 2,
            ..Point::default()
        };
        p.buckets[7] = 10;
        t.add("127.0.0.1:1".parse().unwrap(), &p);
        totals.insert(("shop".to_string(), "web\"x".to_string()), t);
        let mut out = String::new();
        encode_workloads(&mut out, &totals);
        for line in [
            "pimesh_workload_requests_total{namespace=\"shop\",deployment=\"web\\\"x\"} 10",
            "pimesh_workload_responses_total{namespace=\"shop\",deployment=\"web\\\"x\",classification=\"failure\"} 1",
            "pimesh_workload_response_latency_ms_bucket{namespace=\"shop\",deployment=\"web\\\"x\",le=\"20.0\"} 0",
            "pimesh_workload_response_latency_ms_bucket{namespace=\"shop\",deployment=\"web\\\"x\",le=\"30.0\"} 10",
            "pimesh_workload_response_latency_ms_bucket{namespace=\"shop\",deployment=\"web\\\"x\",le=\"+Inf\"} 10",
            "pimesh_workload_tcp_open_connections{namespace=\"shop\",deployment=\"web\\\"x\"} 2",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in:\n{out}");
        }
        // What we export parses back with the parser we scrape with.
        assert!(crate::telemetry::parse::parse(&out).is_ok());
    }
}
