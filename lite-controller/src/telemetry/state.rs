//! What telemetry knows about each target: its labels, whether its last
//! scrape worked, the counters of its previous scrape (for deltas), and its
//! points of the last hour (inbound golden metrics, per edge, and per
//! (server, route, authorization)).

use super::parse::{AuthzKey, AuthzSeries, Dst, Key, Metric, Parsed, Sample};
use super::window::{bucket_deltas, counter_delta, AuthzPoint, EdgePoint, Point, Ring};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

/// Edges (peers) kept per target; traffic to more peers is not shown as edges.
pub const MAX_EDGES_PER_TARGET: usize = 100;
/// (server, route, authorization) rings kept per target; more are not
/// shown by `authz` (a proxy has a few Servers and policies per port).
pub const MAX_AUTHZ_PER_TARGET: usize = 100;

/// The peer side of an edge, as one target's series name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeKey {
    /// Seen on the target's inbound side (the peer is the client) or its
    /// outbound side (the peer is the server).
    pub inbound: bool,
    /// `tls="true"`.
    pub tls: bool,
    /// The peer's identity name (`client_id` / `server_id`).
    pub peer_id: Option<String>,
    /// Outbound: the destination workload from the `dst_*` labels.
    pub dst: Option<Dst>,
}

/// One target and its recent history.
#[derive(Debug, Default)]
pub struct TargetState {
    /// Labels given with the target (flags, registry): they win over the
    /// workload labels the proxy reports.
    pub given: BTreeMap<String, String>,
    /// The workload labels the proxy's series carry.
    pub reported: BTreeMap<String, String>,
    /// Whether the target is still listed by a source.
    pub listed: bool,
    /// Whether the last scrape succeeded.
    pub up: bool,
    /// Why the last scrape failed.
    pub last_error: Option<String>,
    /// When the last scrape succeeded, Unix ms.
    pub last_success_ms: Option<u64>,
    /// The previous scrape's samples and process start time.
    prev: Option<(HashMap<Key, Sample>, Option<f64>)>,
    /// The previous scrape's authorization counters (empty, without an
    /// allocation, for a proxy that reports none).
    prev_authz: HashMap<AuthzSeries, f64>,
    /// Inbound golden metrics.
    pub inbound: Ring<Point>,
    /// Per peer.
    pub edges: HashMap<EdgeKey, Ring<EdgePoint>>,
    /// Per (server, route, authorization): allowed and denied, at most
    /// [`MAX_AUTHZ_PER_TARGET`].
    pub authz: HashMap<AuthzKey, Ring<AuthzPoint>>,
}

impl TargetState {
    /// Label `k`: given, else reported.
    pub fn label(&self, k: &str) -> Option<&str> {
        self.given
            .get(k)
            .or_else(|| self.reported.get(k))
            .map(String::as_str)
    }

    /// Records a successful scrape at `now_ms`: computes deltas against the
    /// previous one and appends points. A changed process start time, or a
    /// counter that went down, is a restart: the new values are the deltas.
    /// A target's first scrape counts from zero when the process started
    /// at most `fresh_ms` (the scrape interval) before it (`dt` = the time
    /// since the start), so a new proxy's first requests are shown; a
    /// target first seen later is only a baseline (its counters cover an
    /// unknown time). Returns the new inbound point, if any.
    pub fn record(
        &mut self,
        parsed: Parsed,
        now_ms: u64,
        fresh_ms: u64,
        cap: usize,
    ) -> Option<Point> {
        self.up = true;
        self.last_error = None;
        let dt_ms = match self.last_success_ms {
            Some(t) => now_ms.saturating_sub(t),
            None => fresh_start_dt_ms(parsed.start_time, now_ms, fresh_ms).unwrap_or(0),
        };
        self.last_success_ms = Some(now_ms);
        if !parsed.workload.is_empty() {
            self.reported = parsed.workload;
        }
        let (prev, restarted) = match self.prev.take() {
            Some((series, start)) => {
                let restarted = matches!((start, parsed.start_time), (Some(a), Some(b)) if a != b);
                (Some(series), restarted)
            }
            // First seen: counted from zero if `dt_ms` says the process is fresh.
            None => (Some(HashMap::new()), false),
        };
        let series = parsed.series;
        let point = prev.as_ref().filter(|_| dt_ms > 0).map(|prev| {
            let before = |k: &Key| (!restarted).then(|| prev.get(k)).flatten();
            self.deltas(&series, before, now_ms, dt_ms, cap)
        });
        if point.is_some() {
            // The first scrape of a target seen late is a baseline, as above.
            let before = if restarted {
                HashMap::new()
            } else {
                std::mem::take(&mut self.prev_authz)
            };
            self.authz_deltas(&parsed.authz, &before, now_ms, dt_ms, cap);
        }
        self.prev = Some((series, parsed.start_time));
        self.prev_authz = parsed.authz;
        point
    }

    /// Appends one [`AuthzPoint`] per (server, route, authorization)
    /// counted in `now`, against the counters `before`.
    fn authz_deltas(
        &mut self,
        now: &HashMap<AuthzSeries, f64>,
        before: &HashMap<AuthzSeries, f64>,
        now_ms: u64,
        dt_ms: u64,
        cap: usize,
    ) {
        let mut points: HashMap<&AuthzKey, AuthzPoint> = HashMap::new();
        for (series, &v) in now {
            let delta = counter_delta(v, before.get(series).copied()).round() as u64;
            let p = points.entry(&series.0).or_insert(AuthzPoint {
                at_ms: now_ms,
                dt_ms,
                ..AuthzPoint::default()
            });
            if series.1 {
                p.allowed += delta;
            } else {
                p.denied += delta;
            }
        }
        for (k, p) in points {
            let known = self.authz.len();
            match self.authz.get_mut(k) {
                Some(ring) => ring.push(p, cap),
                None if known < MAX_AUTHZ_PER_TARGET => {
                    let mut ring = Ring::default();
                    ring.push(p, cap);
                    self.authz.insert(k.clone(), ring);
                }
                None => {}
            }
        }
    }

    fn deltas<'a>(
        &mut self,
        series: &HashMap<Key, Sample>,
        before: impl Fn(&Key) -> Option<&'a Sample>,
        now_ms: u64,
        dt_ms: u64,
        cap: usize,
    ) -> Point {
        let mut point = Point {
            at_ms: now_ms,
            dt_ms,
            ..Point::default()
        };
        let mut edges: HashMap<EdgeKey, EdgePoint> = HashMap::new();
        for (key, sample) in series {
            let value = |s: Option<&Sample>| match s {
                Some(Sample::Value(v)) => Some(*v),
                _ => None,
            };
            let delta = || {
                let now = value(Some(sample)).unwrap_or(0.0);
                counter_delta(now, value(before(key))).round() as u64
            };
            if key.inbound {
                match key.metric {
                    Metric::Requests => point.requests += delta(),
                    Metric::Successes => point.successes += delta(),
                    Metric::Failures => point.failures += delta(),
                    Metric::Latency => {
                        if let Sample::Histogram(now) = sample {
                            let prev = match before(key) {
                                Some(Sample::Histogram(b)) => Some(&**b),
                                _ => None,
                            };
                            for (p, d) in point.buckets.iter_mut().zip(bucket_deltas(now, prev)) {
                                *p = p.saturating_add(d);
                            }
                        }
                    }
                    Metric::TcpOpen => point.tcp_open += value(Some(sample)).unwrap_or(0.0) as u64,
                    Metric::ReadBytes => point.read_bytes += delta(),
                    Metric::WriteBytes => point.write_bytes += delta(),
                }
            }
            // Edges: requests and responses with a known peer.
            if !matches!(
                key.metric,
                Metric::Requests | Metric::Successes | Metric::Failures
            ) || (key.peer_id.is_none() && key.dst.is_none())
            {
                continue;
            }
            let ek = EdgeKey {
                inbound: key.inbound,
                tls: key.tls,
                peer_id: key.peer_id.clone(),
                dst: key.dst.clone(),
            };
            let e = edges.entry(ek).or_insert(EdgePoint {
                at_ms: now_ms,
                dt_ms,
                ..EdgePoint::default()
            });
            match key.metric {
                Metric::Requests => e.requests += delta(),
                Metric::Successes => e.successes += delta(),
                _ => e.failures += delta(),
            }
        }
        for (k, p) in edges {
            let known = self.edges.len();
            match self.edges.get_mut(&k) {
                Some(ring) => ring.push(p, cap),
                None if known < MAX_EDGES_PER_TARGET => {
                    let mut ring = Ring::default();
                    ring.push(p, cap);
                    self.edges.insert(k, ring);
                }
                None => {}
            }
        }
        self.inbound.push(point.clone(), cap);
        point
    }

    /// Records a failed scrape: the target is stale until a scrape works.
    pub fn failed(&mut self, error: String) {
        self.up = false;
        self.last_error = Some(error);
    }

    /// Drops points older than `horizon_ms`; whether anything is left
    /// (a target no source lists is forgotten once it has no points).
    pub fn expire(&mut self, horizon_ms: u64) -> bool {
        self.inbound.expire(horizon_ms);
        self.edges.retain(|_, r| {
            r.expire(horizon_ms);
            !r.is_empty()
        });
        self.authz.retain(|_, r| {
            r.expire(horizon_ms);
            !r.is_empty()
        });
        self.listed || !self.inbound.is_empty()
    }
}

/// For a target's first scrape at `now_ms`: the time its counters cover
/// when its process started (`start_s`, Unix seconds) at most `fresh_ms`
/// before, else `None` (started earlier, or no start time: a baseline).
/// A start after `now_ms` (clocks of two hosts apart) counts as fresh with
/// `dt` = `fresh_ms`, the longest it can have been.
fn fresh_start_dt_ms(start_s: Option<f64>, now_ms: u64, fresh_ms: u64) -> Option<u64> {
    let start_ms = start_s.filter(|s| s.is_finite() && *s > 0.0)? * 1000.0;
    let age_ms = now_ms as f64 - start_ms;
    if age_ms > fresh_ms as f64 || age_ms < -(fresh_ms as f64) {
        return None;
    }
    Some(if age_ms >= 1.0 {
        age_ms.round() as u64
    } else {
        fresh_ms.max(1)
    })
}

/// Targets by admin address.
pub type Targets = BTreeMap<SocketAddr, TargetState>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::parse::parse;

    fn text(requests: u64, ok: u64, fail: u64, start: f64) -> String {
        format!(
            "# TYPE process_start_time_seconds gauge\n\
             process_start_time_seconds{{namespace=\"shop\",deployment=\"web\"}} {start}\n\
             # TYPE request counter\n\
             request_total{{namespace=\"shop\",deployment=\"web\",direction=\"inbound\",tls=\"true\",client_id=\"c.shop.serviceaccount.identity.pimesh.cluster.local\"}} {requests}\n\
             response_total{{direction=\"inbound\",tls=\"true\",client_id=\"c.shop.serviceaccount.identity.pimesh.cluster.local\",classification=\"success\"}} {ok}\n\
             response_total{{direction=\"inbound\",tls=\"true\",client_id=\"c.shop.serviceaccount.identity.pimesh.cluster.local\",classification=\"failure\"}} {fail}\n\
             # EOF\n"
        )
    }

    #[test]
    fn deltas_and_restarts() {
        let mut t = TargetState::default();
        // Started 99 s before its first scrape (1 s interval): a baseline.
        assert!(t
            .record(parse(&text(100, 90, 10, 1.0)).unwrap(), 100_000, 1000, 100)
            .is_none());
        assert_eq!(t.reported["deployment"], "web");
        let p = t
            .record(parse(&text(130, 117, 13, 1.0)).unwrap(), 101_000, 1000, 100)
            .unwrap();
        assert_eq!(
            (p.requests, p.successes, p.failures, p.dt_ms),
            (30, 27, 3, 1000)
        );
        // A restart with counters already above the old ones: the start
        // time tells.
        let p = t
            .record(parse(&text(200, 180, 20, 2.0)).unwrap(), 102_000, 1000, 100)
            .unwrap();
        assert_eq!(p.requests, 200);
        // A restart seen only as counters going down.
        let p = t
            .record(parse(&text(5, 5, 0, 2.0)).unwrap(), 103_000, 1000, 100)
            .unwrap();
        assert_eq!((p.requests, p.successes, p.failures), (5, 5, 0));
        assert_eq!(t.edges.len(), 1);
        let ring = t.edges.values().next().unwrap();
        assert_eq!(
            ring.between(0, u64::MAX).map(|e| e.requests).sum::<u64>(),
            235
        );
        t.failed("timeout".into());
        assert!(!t.up);
        // Gone from the sources and without points: forgotten.
        t.listed = false;
        assert!(!t.expire(u64::MAX));
    }

    #[test]
    fn a_fresh_targets_first_scrape_counts_from_zero() {
        // Started 400 ms before its first scrape, within the 1 s interval.
        let mut t = TargetState::default();
        let p = t
            .record(parse(&text(50, 45, 5, 99.6)).unwrap(), 100_000, 1000, 100)
            .unwrap();
        assert_eq!(
            (p.requests, p.successes, p.failures, p.dt_ms),
            (50, 45, 5, 400)
        );
        let ring = t.edges.values().next().unwrap();
        assert_eq!(
            ring.between(0, u64::MAX).map(|e| e.requests).sum::<u64>(),
            50
        );
        let p = t
            .record(parse(&text(60, 54, 6, 99.6)).unwrap(), 101_000, 1000, 100)
            .unwrap();
        assert_eq!((p.requests, p.dt_ms), (10, 1000));
        // Started 1.5 s before: a baseline; no start time: a baseline.
        let mut t = TargetState::default();
        assert!(t
            .record(parse(&text(50, 45, 5, 98.5)).unwrap(), 100_000, 1000, 100)
            .is_none());
        let mut t = TargetState::default();
        let bare = "request_total{direction=\"inbound\"} 50\n";
        assert!(t.record(parse(bare).unwrap(), 100_000, 1000, 100).is_none());
        // A start ahead of the scrape (another host's clock): fresh, over
        // at most the interval.
        assert_eq!(fresh_start_dt_ms(Some(100.2), 100_000, 1000), Some(1000));
        assert_eq!(fresh_start_dt_ms(Some(101.5), 100_000, 1000), None);
    }
}
