//! Endpoint selection: the proxy's balancer (`pimesh_proxy::balance`:
//! power of two choices over tower's peak-EWMA load, weighted draws,
//! circuit-breaker checks, a load handle per pick) beside the reference
//! p2c over a bare `ewma × (pending + 1)` cost and the cheapest possible
//! pick, round robin, over 3 to 1,000 endpoints.
//!
//! Run: `cargo bench -p pimesh-benches --bench endpoint` (see benches/README.md).

use criterion::{criterion_group, BenchmarkId, Criterion};
use pimesh_benches::criterion_ratios::{self, Pair};
use pimesh_proxy::balance::breaker::Params;
use pimesh_proxy::balance::{Balancer, Endpoint as ProxyEndpoint};
use pimesh_proxy::metrics::{Direction, Metrics, Tls};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const GROUP: &str = "endpoint";
const SIZES: [usize; 4] = [3, 10, 100, 1000];

/// One endpoint's load as the balancer would track it.
#[derive(Clone)]
struct Endpoint {
    /// Moving average of response latency, ms.
    ewma_ms: f64,
    /// Requests in flight.
    pending: u32,
}

impl Endpoint {
    fn cost(&self) -> f64 {
        self.ewma_ms * (self.pending + 1) as f64
    }
}

/// xorshift64: cheap, deterministic randomness for the picks.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Two distinct random endpoints; the cheaper one wins and gets a request.
fn p2c(eps: &mut [Endpoint], rng: &mut Rng) -> usize {
    let n = eps.len();
    let a = rng.below(n);
    let b = (a + 1 + rng.below(n - 1)) % n;
    let pick = if eps[a].cost() <= eps[b].cost() { a } else { b };
    eps[pick].pending += 1;
    pick
}

/// The next endpoint in turn; it gets a request.
fn round_robin(eps: &mut [Endpoint], next: &mut usize) -> usize {
    let pick = *next;
    *next = (*next + 1) % eps.len();
    eps[pick].pending += 1;
    pick
}

fn endpoints(n: usize) -> Vec<Endpoint> {
    (0..n)
        .map(|i| Endpoint {
            ewma_ms: 1.0 + (i % 7) as f64 * 0.3,
            pending: 0,
        })
        .collect()
}

/// The proxy's balancer over `n` plaintext endpoints of equal weight.
fn balancer(n: usize) -> Balancer {
    let m = Metrics::new(&[]);
    Balancer::new(
        (0..n)
            .map(|i| {
                let addr: std::net::SocketAddr = format!("10.0.{}.{}:80", i / 250, i % 250 + 1)
                    .parse()
                    .unwrap();
                let labels = m.target(
                    Direction::Outbound,
                    &addr.to_string(),
                    Tls::plaintext(Direction::Outbound),
                );
                Arc::new(ProxyEndpoint::new(
                    addr,
                    None,
                    10_000,
                    labels,
                    Params {
                        consecutive: 7,
                        min_backoff: Duration::from_secs(1),
                        max_backoff: Duration::from_secs(60),
                    },
                ))
            })
            .collect(),
    )
}

fn bench_endpoint(c: &mut Criterion) {
    // The balancer picks, and never an ejected endpoint.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let b = balancer(10);
    let ejected = b.endpoints()[3].clone();
    for _ in 0..7 {
        ejected.breaker.failure(tokio::time::Instant::now());
    }
    assert!((0..10_000).all(|_| !Arc::ptr_eq(&b.pick(None).unwrap().endpoint, &ejected)));

    // p2c never picks the most expensive endpoint: it can only win against
    // itself, and the two choices are distinct.
    let mut eps = endpoints(10);
    eps[3].ewma_ms = 1e9;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    assert!((0..10_000).all(|_| p2c(&mut eps, &mut rng) != 3));

    let mut group = c.benchmark_group(GROUP);
    for n in SIZES {
        let b = balancer(n);
        group.bench_function(BenchmarkId::new("balancer", n), |bench| {
            bench.iter(|| {
                // Pick, then the response comes back (the handle ends).
                let mut p = black_box(&b).pick(None).unwrap();
                p.responded();
                p.success()
            })
        });
        let mut eps = endpoints(n);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        group.bench_function(BenchmarkId::new("p2c", n), |b| {
            b.iter(|| {
                let i = p2c(black_box(&mut eps), &mut rng);
                // The response comes back: keep pending bounded.
                eps[i].pending -= 1;
                i
            })
        });
        let mut eps = endpoints(n);
        let mut next = 0;
        group.bench_function(BenchmarkId::new("round_robin", n), |b| {
            b.iter(|| {
                let i = round_robin(black_box(&mut eps), &mut next);
                eps[i].pending -= 1;
                i
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_endpoint);

fn main() {
    let started = SystemTime::now();
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
    let names: Vec<String> = SIZES.iter().map(|n| format!("{n}_endpoints")).collect();
    let pairs: Vec<Pair> = SIZES
        .iter()
        .zip(&names)
        .map(|(n, name)| Pair {
            name,
            subject: format!("p2c/{n}"),
            baseline: format!("round_robin/{n}"),
        })
        .collect();
    criterion_ratios::print(
        GROUP,
        "time per pick, round_robin / p2c (what choosing by load costs)",
        &pairs,
        started,
    );
    let pairs: Vec<Pair> = SIZES
        .iter()
        .zip(&names)
        .map(|(n, name)| Pair {
            name,
            subject: format!("balancer/{n}"),
            baseline: format!("round_robin/{n}"),
        })
        .collect();
    criterion_ratios::print(
        GROUP,
        "time per pick and completion, round_robin / pimesh balancer",
        &pairs,
        started,
    );
}
