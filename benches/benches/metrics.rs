//! Metric recording per request: `pimesh_proxy::metrics::Metrics::request`
//! then `RequestMetrics::end` (what the proxy does for every proxied
//! request: `request_total`, `response_latency_ms` and `response_total`
//! through label families keyed by direction, target, TLS state, authority
//! and status), against a baseline of the same three updates on plain
//! unlabelled prometheus-client metrics — the floor of recording anything.
//!
//! Run: `cargo bench -p pimesh-benches --bench metrics` (see benches/README.md).

use criterion::{criterion_group, BenchmarkId, Criterion};
use pimesh_benches::criterion_ratios::{self, Pair};
use pimesh_proxy::metrics::{Direction, Metrics, RequestLabels, Tls, LATENCY_BUCKETS_MS};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use std::hint::black_box;
use std::sync::Arc;
use std::time::SystemTime;

const GROUP: &str = "metrics";

/// Distinct authorities cycled through, per input.
const INPUTS: [(&str, usize); 2] = [("one_authority", 1), ("100_authorities", 100)];

fn labels(m: &Metrics, n: usize) -> Vec<RequestLabels> {
    (0..n)
        .map(|i| RequestLabels {
            target: m.target(
                Direction::Inbound,
                "10.42.0.17:8080",
                Tls::plaintext(Direction::Inbound),
            ),
            authority: m.authority(&format!("svc-{i}.shop.svc.cluster.local:8080")),
        })
        .collect()
}

fn bench_metrics(c: &mut Criterion) {
    let mut group = c.benchmark_group(GROUP);
    for (name, n) in INPUTS {
        let metrics = Arc::new(Metrics::new(&[("namespace".into(), "shop".into())]));
        let sets = labels(&metrics, n);
        // Check the subject records what it should before timing it.
        metrics.request(sets[0].clone()).end(Some(200), None, "");
        let text = metrics.encode();
        assert!(
            text.lines().any(|l| l.starts_with("response_total{")
                && l.contains("classification=\"success\"")
                && l.ends_with(" 1")),
            "no response recorded:\n{text}"
        );
        let mut i = 0;
        group.bench_function(BenchmarkId::new("pimesh_request_end", name), |b| {
            b.iter(|| {
                i = (i + 1) % sets.len();
                metrics
                    .request(black_box(sets[i].clone()))
                    .end(Some(200), None, "")
            })
        });
        let (requests, responses) = (Counter::<u64>::default(), Counter::<u64>::default());
        let latency = Histogram::new(LATENCY_BUCKETS_MS);
        group.bench_function(BenchmarkId::new("plain_counters", name), |b| {
            b.iter(|| {
                requests.inc();
                latency.observe(black_box(0.42));
                responses.inc();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_metrics);

fn main() {
    let started = SystemTime::now();
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
    let pairs: Vec<Pair> = INPUTS
        .iter()
        .map(|(name, _)| Pair {
            name,
            subject: format!("pimesh_request_end/{name}"),
            baseline: format!("plain_counters/{name}"),
        })
        .collect();
    criterion_ratios::print(
        GROUP,
        "time per request, plain_counters / pimesh_request_end (the share that is counting itself)",
        &pairs,
        started,
    );
}
