//! Protocol detection on a connection's first bytes:
//! `pimesh_proxy::detect::classify` against a naive line-based baseline that
//! waits for the first CRLF (plain `windows(2).position()`, no memchr) and
//! only then looks at the request line.
//!
//! Both run on the same inputs in one group, so each `classify/<input>` line
//! is followed by its `naive_crlf/<input>` line; when the run saved fresh
//! estimates, a `naive_crlf / classify` ratio table is printed at the end.
//!
//! Run: `cargo bench -p pimesh-benches` (see benches/README.md).

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use pimesh_benches::criterion_ratios::{self, Pair};
use pimesh_proxy::detect::{classify, Protocol, H2_PREFACE};
use std::hint::black_box;
use std::time::SystemTime;

/// Criterion's group name, also the first directory of its saved results.
const GROUP: &str = "detect";

/// An HTTP/1.1 request line with typical headers, as a client sends it.
const HTTP1_GET: &[u8] = b"GET /api/v1/items?id=42 HTTP/1.1\r\n\
Host: backend.default.svc.cluster.local:8080\r\n\
User-Agent: curl/8.5.0\r\n\
Accept: */*\r\n\
\r\n";

/// The first 64 bytes of a TLS 1.3 ClientHello: handshake record (0x16),
/// record version 3.1, length, ClientHello (0x01), legacy version 3.3,
/// random, session id.
const TLS_CLIENT_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x9a, 0x4e, 0x1d, 0x63, 0x07,
    0xb2, 0x5c, 0xe8, 0x31, 0x0f, 0x94, 0x6a, 0xd7, 0x22, 0x8b, 0x50, 0xc6, 0x13, 0x7e, 0xaf, 0x48,
    0x05, 0xe1, 0x39, 0x76, 0xbd, 0x2a, 0x90, 0x5f, 0xc3, 0x6e, 0x0b, 0x20, 0x4d, 0x81, 0xf2, 0x17,
    0xa8, 0x66, 0x3b, 0xde, 0x09, 0x72, 0xc5, 0x1e, 0x8f, 0x44, 0xb9, 0x2d, 0x60, 0xfa, 0x13, 0x01,
];

/// 64 deterministic pseudo-random bytes (an LCG, no `rand` dependency).
fn garbage() -> Vec<u8> {
    let mut x: u32 = 0x2545_f491;
    (0..64)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect()
}

/// The baseline: TLS by its first byte, otherwise wait for a whole first
/// line (`None` until a CRLF arrives) and classify that line.
fn naive_crlf(buf: &[u8]) -> Option<Protocol> {
    if buf.first() == Some(&0x16) {
        return Some(Protocol::Tls);
    }
    let eol = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = &buf[..eol];
    if line == b"PRI * HTTP/2.0" {
        return if buf.len() < H2_PREFACE.len() {
            None
        } else if buf.starts_with(H2_PREFACE) {
            Some(Protocol::Http2)
        } else {
            Some(Protocol::Opaque)
        };
    }
    if line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0") {
        Some(Protocol::Http1)
    } else {
        Some(Protocol::Opaque)
    }
}

/// The inputs, their names in the output, and what `classify` must say.
fn inputs() -> Vec<(&'static str, Vec<u8>, Option<Protocol>)> {
    vec![
        ("http1_get", HTTP1_GET.to_vec(), Some(Protocol::Http1)),
        ("h2_preface", H2_PREFACE.to_vec(), Some(Protocol::Http2)),
        (
            "tls_client_hello",
            TLS_CLIENT_HELLO.to_vec(),
            Some(Protocol::Tls),
        ),
        ("garbage_64", garbage(), Some(Protocol::Opaque)),
    ]
}

fn bench_detect(c: &mut Criterion) {
    let mut group = c.benchmark_group(GROUP);
    for (name, bytes, expected) in inputs() {
        // A bench of the wrong answer is worthless: check before timing.
        assert_eq!(classify(&bytes), expected, "classify({name})");
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(BenchmarkId::new("classify", name), &bytes[..], |b, buf| {
            b.iter(|| classify(black_box(buf)))
        });
        group.bench_with_input(
            BenchmarkId::new("naive_crlf", name),
            &bytes[..],
            |b, buf| b.iter(|| naive_crlf(black_box(buf))),
        );
    }
    group.finish();
}

criterion_group!(benches, bench_detect);

fn main() {
    let started = SystemTime::now();
    benches();
    Criterion::default().configure_from_args().final_summary();
    print_ratios(started);
}

/// Prints `naive_crlf / classify` of the times criterion saved during this
/// run; inputs without fresh estimates (`--test`, `--list`, skipped by a
/// filter) are left out.
fn print_ratios(started: SystemTime) {
    let pairs: Vec<Pair> = inputs()
        .into_iter()
        .map(|(name, _, _)| Pair {
            name,
            subject: format!("classify/{name}"),
            baseline: format!("naive_crlf/{name}"),
        })
        .collect();
    criterion_ratios::print(
        GROUP,
        "time per call, naive_crlf / classify (> 1: classify is faster)",
        &pairs,
        started,
    );
}
