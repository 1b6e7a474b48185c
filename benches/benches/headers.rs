//! Header work the proxy does on every request and response it forwards:
//!
//! - hop-by-hop stripping (RFC 9110 §7.6.1), inbound and outbound:
//!   `pimesh_proxy::http::headers::strip_hop_by_hop` (one pass over the
//!   names into a set of the fixed hop-by-hop fields present; only those
//!   removed) against two older versions copied here: `remove_each`
//!   (17e6df6^: every hop-by-hop name removed, each removal parsing and
//!   hashing its name, whether present or not) and `scan_remove_all`
//!   (17e6df6 to 5663dd8: one pass, nothing removed when none is there,
//!   else every fixed name removed);
//! - the request target rewrites: `orig_proto::to_h2` (an HTTP/1 request
//!   made absolute-form for the mesh's HTTP/2 hop, outbound) and
//!   `headers::to_origin_form` (back to origin form, inbound), built from
//!   the parsed parts, against the same built by formatting a string and
//!   parsing it again (up to 5663dd8).
//!
//! Each subject runs beside its baselines in one group, and the ratio
//! tables (baseline / subject) are printed at the end when the run saved
//! fresh estimates. Inputs are cloned outside the timed part.
//!
//! Run: `cargo bench -p pimesh-benches --bench headers` (see benches/README.md).

use criterion::{criterion_group, BatchSize, BenchmarkId, Criterion};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Request, Uri, Version};
use pimesh_benches::criterion_ratios::{self, Pair};
use pimesh_proxy::http::headers::{strip_hop_by_hop, to_origin_form};
use pimesh_proxy::http::orig_proto;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::SystemTime;

/// Criterion's group name, also the first directory of its saved results.
const GROUP: &str = "headers";

/// A baseline: `strip_hop_by_hop` before commit 17e6df6.
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

/// `Keep-Alive`, as the proxy's code up to 5663dd8 named it.
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// `Proxy-Connection`, likewise.
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// A baseline: `strip_hop_by_hop` from 17e6df6 to 5663dd8 (nothing
/// removed when no name is hop-by-hop, else every fixed one).
fn scan_remove_all(headers: &mut HeaderMap, keep_upgrade: bool, explicit: bool) {
    let is_hop_by_hop = |name: &HeaderName| {
        name == header::CONNECTION
            || name == header::TRANSFER_ENCODING
            || name == header::TE
            || name == header::UPGRADE
            || name == header::PROXY_AUTHORIZATION
            || name == KEEP_ALIVE
            || name == PROXY_CONNECTION
    };
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
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
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
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

/// A baseline: `orig_proto::to_h2`'s target up to 5663dd8, formatted
/// and parsed again.
fn to_h2_formatted<B>(req: &mut Request<B>, authority: &Authority) {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    *req.uri_mut() = format!("http://{authority}{path}").parse().unwrap();
    let h = req.headers_mut();
    h.remove(header::HOST);
    h.insert("pimesh-orig-proto", HeaderValue::from_static("HTTP/1.1"));
    *req.version_mut() = Version::HTTP_2;
}

/// A baseline: `headers::to_origin_form` up to 5663dd8, its path copied
/// to a string and parsed again.
fn to_origin_form_parsed<B>(req: &mut Request<B>, authority: &Authority) {
    if req.uri().authority().is_some() {
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        *req.uri_mut() = path.parse().unwrap_or_else(|_| Uri::from_static("/"));
    }
    if !req.headers().contains_key(header::HOST) {
        if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
            req.headers_mut().insert(header::HOST, v);
        }
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

/// A stripping function as the benches call it.
type Strip = fn(&mut HeaderMap, bool, bool);

/// The stripping subject and its baselines, by bench name.
const STRIPS: [(&str, Strip); 3] = [
    ("strip_hop_by_hop", strip_hop_by_hop),
    ("scan_remove_all", scan_remove_all),
    ("remove_each", remove_each),
];

fn bench_headers(c: &mut Criterion) {
    let mut group = c.benchmark_group(GROUP);
    for (name, headers) in inputs() {
        // A bench of a wrong answer is worthless: all strip alike.
        let mut new = headers.clone();
        strip_hop_by_hop(&mut new, false, false);
        for (strip_name, strip) in &STRIPS[1..] {
            let mut old = headers.clone();
            strip(&mut old, false, false);
            assert_eq!(new, old, "{name}: {strip_name} strips the same fields");
        }
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
        for (strip_name, strip) in STRIPS {
            group.bench_with_input(BenchmarkId::new(strip_name, name), &headers, |b, h| {
                b.iter_batched(
                    || h.clone(),
                    |mut h| {
                        strip(black_box(&mut h), false, false);
                        h
                    },
                    BatchSize::SmallInput,
                )
            });
        }
    }
    bench_targets(&mut group);
    group.finish();
}

/// An HTTP/1 request as the outbound proxy receives it (origin form), and
/// its authority.
fn origin_request() -> (Request<()>, Authority) {
    let authority: Authority = "web.shop.svc.cluster.local:8080".parse().unwrap();
    let req = Request::get("/api/v1/items?page=2&sort=name")
        .header(header::HOST, authority.as_str())
        .header(header::ACCEPT, "*/*")
        .body(())
        .unwrap();
    (req, authority)
}

/// The request target rewrites against their formatted-and-parsed
/// versions (`to_h2` outbound, `to_origin_form` inbound).
fn bench_targets(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    let addr: SocketAddr = "10.42.0.7:8080".parse().unwrap();
    let (req, authority) = origin_request();
    let (mut new, mut old) = (req.clone(), req.clone());
    orig_proto::to_h2(&mut new, Some(&authority), addr).unwrap();
    to_h2_formatted(&mut old, &authority);
    assert_eq!(
        new.uri().to_string(),
        "http://web.shop.svc.cluster.local:8080/api/v1/items?page=2&sort=name"
    );
    assert_eq!((new.uri(), new.headers()), (old.uri(), old.headers()));
    group.bench_function(BenchmarkId::new("to_h2", "parts"), |b| {
        b.iter_batched(
            || req.clone(),
            |mut r| {
                orig_proto::to_h2(black_box(&mut r), Some(&authority), addr).unwrap();
                r
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function(BenchmarkId::new("to_h2", "formatted"), |b| {
        b.iter_batched(
            || req.clone(),
            |mut r| {
                to_h2_formatted(black_box(&mut r), &authority);
                r
            },
            BatchSize::SmallInput,
        )
    });
    let absolute = new;
    let (mut new, mut old) = (absolute.clone(), absolute.clone());
    to_origin_form(&mut new, Some(&authority));
    to_origin_form_parsed(&mut old, &authority);
    assert_eq!(new.uri(), "/api/v1/items?page=2&sort=name");
    assert_eq!((new.uri(), new.headers()), (old.uri(), old.headers()));
    group.bench_function(BenchmarkId::new("to_origin_form", "parts"), |b| {
        b.iter_batched(
            || absolute.clone(),
            |mut r| {
                to_origin_form(black_box(&mut r), Some(&authority));
                r
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function(BenchmarkId::new("to_origin_form", "parsed"), |b| {
        b.iter_batched(
            || absolute.clone(),
            |mut r| {
                to_origin_form_parsed(black_box(&mut r), &authority);
                r
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench_headers);

fn main() {
    let started = SystemTime::now();
    benches();
    Criterion::default().configure_from_args().final_summary();
    for baseline in ["scan_remove_all", "remove_each"] {
        let pairs: Vec<Pair> = inputs()
            .into_iter()
            .map(|(name, _)| Pair {
                name,
                subject: format!("strip_hop_by_hop/{name}"),
                baseline: format!("{baseline}/{name}"),
            })
            .collect();
        criterion_ratios::print(
            GROUP,
            &format!("time per call, {baseline} / strip_hop_by_hop (> 1: the field set is faster)"),
            &pairs,
            started,
        );
    }
    let pairs = [
        Pair {
            name: "to_h2",
            subject: "to_h2/parts".into(),
            baseline: "to_h2/formatted".into(),
        },
        Pair {
            name: "to_origin_form",
            subject: "to_origin_form/parts".into(),
            baseline: "to_origin_form/parsed".into(),
        },
    ];
    criterion_ratios::print(
        GROUP,
        "time per call, formatted and parsed / built from the parts (> 1: the parts are faster)",
        &pairs,
        started,
    );
}
