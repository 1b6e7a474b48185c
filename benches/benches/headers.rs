//! Hop-by-hop header stripping (RFC 9110 §7.6.1), which the proxy runs on
//! every request and response it forwards, inbound and outbound:
//! `pimesh_proxy::http::headers::strip_hop_by_hop` (one pass over the
//! names, nothing removed when none is hop-by-hop) against `remove_each`,
//! the code it replaced (17e6df6^): every hop-by-hop name removed, each
//! removal parsing and hashing its name, whether present or not.
//!
//! Both run on the same header maps in one group; a `remove_each /
//! strip_hop_by_hop` ratio table is printed at the end when the run saved
//! fresh estimates. The map's clone is made outside the timed part.
//!
//! Run: `cargo bench -p pimesh-benches --bench headers` (see benches/README.md).

use criterion::{criterion_group, BatchSize, BenchmarkId, Criterion};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use pimesh_benches::criterion_ratios::{self, Pair};
use pimesh_proxy::http::headers::strip_hop_by_hop;
use std::hint::black_box;
use std::time::SystemTime;

/// Criterion's group name, also the first directory of its saved results.
const GROUP: &str = "headers";

/// The baseline: `strip_hop_by_hop` before commit 17e6df6.
fn remove_each(headers: &mut HeaderMap, keep_upgrade: bool, explicit: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !(keep_upgrade && n == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    headers.remove(header::CONNECTION);
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    headers.remove(header::TRANSFER_ENCODING);
    if headers
        .get(header::TE)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        headers.remove(header::TE);
    }
    if explicit {
        headers.remove(header::PROXY_AUTHORIZATION);
    }
    if keep_upgrade && headers.contains_key(header::UPGRADE) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// A header map of `(name, value)` pairs.
fn map(fields: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in fields {
        h.append(*n, HeaderValue::from_static(v));
    }
    h
}

/// The inputs: their names in the output and their header maps.
fn inputs() -> Vec<(&'static str, HeaderMap)> {
    vec![
        (
            // What most requests carry (curl, an app's HTTP client, h2).
            "request",
            map(&[
                ("host", "backend.default.svc.cluster.local:8080"),
                ("user-agent", "curl/8.5.0"),
                ("accept", "*/*"),
                ("accept-encoding", "gzip"),
                ("x-request-id", "7f0c2b1e-5d3a-4c1e-9f1e-2b7c4d5e6f70"),
            ]),
        ),
        (
            // An HTTP/1 client that names its keep-alive.
            "request_keep_alive",
            map(&[
                ("host", "backend.default.svc.cluster.local:8080"),
                ("user-agent", "python-requests/2.31"),
                ("accept", "*/*"),
                ("connection", "keep-alive"),
                ("keep-alive", "timeout=5"),
            ]),
        ),
        (
            "response",
            map(&[
                ("content-type", "application/json"),
                ("content-length", "64"),
                ("date", "Sun, 06 Dec 2026 23:00:00 GMT"),
                ("server", "nginx/1.22.1"),
            ]),
        ),
        (
            "response_chunked",
            map(&[
                ("content-type", "application/json"),
                ("transfer-encoding", "chunked"),
                ("connection", "keep-alive"),
                ("date", "Sun, 06 Dec 2026 23:00:00 GMT"),
            ]),
        ),
    ]
}

fn bench_headers(c: &mut Criterion) {
    let mut group = c.benchmark_group(GROUP);
    for (name, headers) in inputs() {
        // A bench of a wrong answer is worthless: both must strip alike.
        let (mut new, mut old) = (headers.clone(), headers.clone());
        strip_hop_by_hop(&mut new, false, false);
        remove_each(&mut old, false, false);
        assert_eq!(new, old, "{name}: both strip the same fields");
        // Every field that is not hop-by-hop (RFC 9110 §7.6.1; the inputs'
        // Connection options are all among these names) stays.
        const HOP: [&str; 7] = [
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "te",
            "upgrade",
            "proxy-authorization",
        ];
        for field in headers.keys().filter(|n| !HOP.contains(&n.as_str())) {
            assert!(
                new.contains_key(field),
                "{name}: the end-to-end field {field} stays"
            );
        }
        group.bench_with_input(
            BenchmarkId::new("strip_hop_by_hop", name),
            &headers,
            |b, h| {
                b.iter_batched(
                    || h.clone(),
                    |mut h| {
                        strip_hop_by_hop(black_box(&mut h), false, false);
                        h
                    },
                    BatchSize::SmallInput,
                )
            },
        );
        group.bench_with_input(BenchmarkId::new("remove_each", name), &headers, |b, h| {
            b.iter_batched(
                || h.clone(),
                |mut h| {
                    remove_each(black_box(&mut h), false, false);
                    h
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench_headers);

fn main() {
    let started = SystemTime::now();
    benches();
    Criterion::default().configure_from_args().final_summary();
    let pairs: Vec<Pair> = inputs()
        .into_iter()
        .map(|(name, _)| Pair {
            name,
            subject: format!("strip_hop_by_hop/{name}"),
            baseline: format!("remove_each/{name}"),
        })
        .collect();
    criterion_ratios::print(
        GROUP,
        "time per call, remove_each / strip_hop_by_hop (> 1: the one-pass strip is faster)",
        &pairs,
        started,
    );
}
