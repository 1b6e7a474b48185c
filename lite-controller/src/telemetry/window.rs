//! The in-memory time series: one [`Point`] per target per successful
//! scrape (the deltas since the previous one), kept for an hour in a ring;
//! windows (1m, 10m, 1h, or any duration up to an hour) are sums over the
//! points inside them. Latency quantiles come from the summed bucket
//! deltas, interpolated as PromQL's `histogram_quantile` does. A ring
//! keeps its points packed (`ring`).

use super::parse::{Buckets, BOUNDS_MS};

mod point;
mod ring;

pub use point::{AuthzPoint, EdgePoint, Point, RETENTION_MS};
pub use ring::{Reader, Ring, Timed};

/// Sums of points over a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sum {
    /// Milliseconds covered by the points (sum of `dt_ms`).
    pub covered_ms: u64,
    /// Requests.
    pub requests: u64,
    /// Successful responses.
    pub successes: u64,
    /// Failed responses.
    pub failures: u64,
    /// Responses per latency bucket.
    pub buckets: [u64; BOUNDS_MS.len()],
    /// Open connections at the newest point.
    pub tcp_open: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
}

impl Sum {
    /// Adds one point (`tcp_open` is taken from the newest added).
    pub fn add(&mut self, p: &Point) {
        self.covered_ms += p.dt_ms;
        self.requests += p.requests;
        self.successes += p.successes;
        self.failures += p.failures;
        for (s, b) in self.buckets.iter_mut().zip(p.buckets.iter()) {
            *s += u64::from(*b);
        }
        self.tcp_open = p.tcp_open;
        self.read_bytes += p.read_bytes;
        self.write_bytes += p.write_bytes;
    }

    /// Requests per second over the covered time; `None` without coverage.
    pub fn rps(&self) -> Option<f64> {
        per_second(self.requests, self.covered_ms)
    }

    /// Success rate of responses, 0–1; `None` without responses.
    pub fn success_rate(&self) -> Option<f64> {
        let total = self.successes + self.failures;
        (total > 0).then(|| self.successes as f64 / total as f64)
    }

    /// The `q` quantile of latency, milliseconds.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        quantile(q, &self.buckets)
    }
}

/// `n` per second over `ms` milliseconds.
pub fn per_second(n: u64, ms: u64) -> Option<f64> {
    (ms > 0).then(|| n as f64 * 1000.0 / ms as f64)
}

/// The `q` quantile (0–1) of per-bucket counts over [`BOUNDS_MS`], as
/// PromQL's `histogram_quantile`: linear interpolation inside the bucket
/// holding the rank (the first bucket starts at 0); a rank in the `+Inf`
/// bucket answers the highest finite bound. `None` without observations.
pub fn quantile(q: f64, counts: &[u64; BOUNDS_MS.len()]) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &c) in counts.iter().enumerate() {
        if c > 0 && (below + c) as f64 >= rank {
            let upper = BOUNDS_MS[i];
            let lower = if i == 0 { 0.0 } else { BOUNDS_MS[i - 1] };
            if upper.is_infinite() {
                return Some(lower);
            }
            return Some(lower + (upper - lower) * (rank - below as f64) / c as f64);
        }
        below += c;
    }
    Some(BOUNDS_MS[BOUNDS_MS.len() - 2])
}

/// Per-bucket counts from the delta of two cumulative bucket vectors.
pub fn bucket_deltas(now: &Buckets, before: Option<&Buckets>) -> [u32; BOUNDS_MS.len()] {
    let mut out = [0u32; BOUNDS_MS.len()];
    let mut prev_cum = 0.0;
    for i in 0..BOUNDS_MS.len() {
        let cum = counter_delta(now[i], before.map(|b| b[i]));
        let d = (cum - prev_cum).max(0.0);
        out[i] = d.round().min(f64::from(u32::MAX)) as u32;
        prev_cum = cum.max(prev_cum);
    }
    out
}

/// A counter's increase: `now - before`, or `now` when the counter went
/// down (the proxy restarted and counts from zero again) or was not seen.
pub fn counter_delta(now: f64, before: Option<f64>) -> f64 {
    if !now.is_finite() || now < 0.0 {
        return 0.0;
    }
    match before {
        Some(b) if b.is_finite() && now >= b => now - b,
        _ => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(usize, u64)]) -> [u64; BOUNDS_MS.len()] {
        let mut c = [0u64; BOUNDS_MS.len()];
        for &(i, n) in pairs {
            c[i] = n;
        }
        c
    }

    #[test]
    fn quantiles_interpolate_like_promql() {
        // 100 observations in (20, 30] ms (index 7 → bound 30).
        let c = counts(&[(7, 100)]);
        assert_eq!(quantile(0.5, &c), Some(25.0));
        assert_eq!(quantile(0.9, &c), Some(29.0));
        // 90 in (0,1], 10 in (1000,2000].
        let c = counts(&[(0, 90), (16, 10)]);
        assert_eq!(quantile(0.5, &c).unwrap(), 0.5 / 0.9 * 1.0);
        assert!((quantile(0.95, &c).unwrap() - 1500.0).abs() < 1e-9);
        // Everything in +Inf: the highest finite bound.
        let c = counts(&[(25, 3)]);
        assert_eq!(quantile(0.99, &c), Some(50000.0));
        assert_eq!(quantile(0.5, &counts(&[])), None);
    }

    #[test]
    fn counters_reset_to_the_new_value() {
        assert_eq!(counter_delta(15.0, Some(10.0)), 5.0);
        assert_eq!(counter_delta(3.0, Some(10.0)), 3.0, "a restart");
        assert_eq!(counter_delta(7.0, None), 7.0);
        assert_eq!(counter_delta(f64::NAN, Some(1.0)), 0.0);
        let mut before: Buckets = [0.0; BOUNDS_MS.len()];
        let mut now: Buckets = [0.0; BOUNDS_MS.len()];
        for i in 0..BOUNDS_MS.len() {
            before[i] = if i >= 5 { 10.0 } else { 0.0 };
            now[i] = if i >= 5 {
                14.0
            } else if i >= 2 {
                1.0
            } else {
                0.0
            };
        }
        let d = bucket_deltas(&now, Some(&before));
        assert_eq!(d[2], 1);
        assert_eq!(d[5], 3);
        assert_eq!(d.iter().map(|&x| u64::from(x)).sum::<u64>(), 4);
    }

    #[test]
    fn ring_keeps_an_hour_and_a_cap() {
        let mut r = Ring::default();
        for i in 0..10u64 {
            r.push(
                EdgePoint {
                    at_ms: i * 1000,
                    ..Default::default()
                },
                4,
            );
        }
        assert_eq!(r.between(0, u64::MAX).count(), 4);
        r.push(
            EdgePoint {
                at_ms: RETENTION_MS + 9_500,
                ..Default::default()
            },
            100,
        );
        assert_eq!(r.between(0, u64::MAX).count(), 1, "older than an hour");
        r.expire(RETENTION_MS + 9_500);
        assert!(r.is_empty());
    }

    #[test]
    fn sums_and_rates() {
        let mut s = Sum::default();
        for _ in 0..10 {
            s.add(&Point {
                dt_ms: 1000,
                requests: 20,
                successes: 18,
                failures: 2,
                ..Default::default()
            });
        }
        assert_eq!(s.rps(), Some(20.0));
        assert_eq!(s.success_rate(), Some(0.9));
        assert_eq!(Sum::default().rps(), None);
    }
}
