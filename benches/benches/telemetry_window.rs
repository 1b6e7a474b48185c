//! The controller's telemetry windows: summing one target's points as
//! `pimesh stat` does, from the packed ring the controller keeps
//! (`pimesh_controller::telemetry::window::Ring`, LEB128 records) against
//! the points as structs in a `VecDeque` (what the ring held before,
//! 168 bytes a point). A full hour of 360 busy 10 s points; windows of
//! 1 h (every point summed) and 10 s (one summed, 359 passed over: the
//! history's 10 s slots and `stat -t 10s`); and pushing a point into a
//! full ring (a scrape). Ratios printed: `structs / packed`.
//!
//! Run: `cargo bench -p pimesh-benches --bench telemetry_window` (see
//! benches/README.md).

use criterion::{criterion_group, BenchmarkId, Criterion};
use pimesh_benches::criterion_ratios::{self, Pair};
use pimesh_controller::telemetry::window::{Point, Ring, Sum};
use std::collections::VecDeque;
use std::hint::black_box;
use std::time::SystemTime;

const GROUP: &str = "telemetry_window";

/// Points in an hour at the default 10 s interval, and the ring's cap.
const POINTS: u64 = 360;
const CAP: usize = 361;

/// The windows timed, seconds.
const WINDOWS: [(&str, u64); 2] = [("1h", 3600), ("10s", 10)];

/// A busy proxy's 10 s point (as `pimesh-bench`'s simulated proxies give).
fn busy(i: u64) -> Point {
    let mut p = Point {
        at_ms: 1_700_000_000_000 + i * 10_000,
        dt_ms: 10_000,
        requests: 235 + i % 7,
        successes: 231,
        failures: 4 + i % 7,
        tcp_open: 6,
        read_bytes: 72_850,
        write_bytes: 145_700,
        ..Point::default()
    };
    for (b, c) in [1u32, 3, 6, 10, 25, 20, 15, 8, 5, 4, 2, 1]
        .iter()
        .enumerate()
    {
        p.buckets[b + 1] = c * 2;
    }
    p
}

/// The structs as the ring kept them before: `Ring::between`'s filter.
fn structs_sum(points: &VecDeque<Point>, from_ms: u64, to_ms: u64) -> Sum {
    let mut s = Sum::default();
    for p in points
        .iter()
        .filter(|p| p.at_ms > from_ms && p.at_ms <= to_ms)
    {
        s.add(p);
    }
    s
}

fn packed_sum(ring: &Ring<Point>, from_ms: u64, to_ms: u64) -> Sum {
    let mut s = Sum::default();
    for p in ring.between(from_ms, to_ms) {
        s.add(&p);
    }
    s
}

fn bench_windows(c: &mut Criterion) {
    let mut group = c.benchmark_group(GROUP);
    let mut ring = Ring::default();
    let mut structs = VecDeque::new();
    for i in 0..POINTS {
        ring.push(busy(i), CAP);
        structs.push_back(busy(i));
    }
    let now_ms = busy(POINTS - 1).at_ms;
    for (name, secs) in WINDOWS {
        let from_ms = now_ms - secs * 1000;
        // Both give the same sums before either is timed.
        let want = structs_sum(&structs, from_ms, now_ms);
        assert_eq!(packed_sum(&ring, from_ms, now_ms), want);
        assert_eq!(want.covered_ms, secs * 1000);
        group.bench_function(BenchmarkId::new("packed", name), |b| {
            b.iter(|| packed_sum(black_box(&ring), from_ms, now_ms))
        });
        group.bench_function(BenchmarkId::new("structs", name), |b| {
            b.iter(|| structs_sum(black_box(&structs), from_ms, now_ms))
        });
    }
    // A scrape: one point into a full ring (the oldest goes).
    let mut i = POINTS;
    group.bench_function(BenchmarkId::new("packed", "push"), |b| {
        b.iter(|| {
            ring.push(black_box(busy(i)), CAP);
            i += 1;
        })
    });
    let mut i = POINTS;
    group.bench_function(BenchmarkId::new("structs", "push"), |b| {
        b.iter(|| {
            if structs.len() >= CAP {
                structs.pop_front();
            }
            structs.push_back(black_box(busy(i)));
            i += 1;
        })
    });
    group.finish();
}

criterion_group!(benches, bench_windows);

fn main() {
    let started = SystemTime::now();
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
    let pairs: Vec<Pair> = ["1h", "10s", "push"]
        .iter()
        .map(|name| Pair {
            name,
            subject: format!("packed/{name}"),
            baseline: format!("structs/{name}"),
        })
        .collect();
    criterion_ratios::print(
        GROUP,
        "time per window sum or push, structs / packed (below 1: packing costs time)",
        &pairs,
        started,
    );
}
