//! Downsampled history in sled, per deployment-level workload: 10 s points
//! for the last hour (table `telemetry_10s`, one record per minute holding
//! every workload's six points) and 1 min points for 24 hours (table
//! `telemetry_1m`, one record per minute). Records are written in one
//! batch per flush interval (default 5 minutes) with one flush, and pruned
//! past their retention in the same batch, so the tables stay bounded
//! (≤ 60 and ≤ 1,440 records of at most [`MAX_WORKLOADS`] workloads) and
//! the SD card sees a few kilobytes per minute (see ARCHITECTURE.md).

use super::query::{namespace_of, Resource};
use super::state::Targets;
use super::window::Sum;
use crate::store::{self, Store, Table};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Workloads kept per record; more are left out of the history.
pub const MAX_WORKLOADS: usize = 200;
/// Retention of the 10 s points, seconds.
pub const RETENTION_10S: u64 = 3600;
/// Retention of the 1 min points, seconds.
pub const RETENTION_1M: u64 = 24 * 3600;

/// One history point: `[requests, successes, failures, p50_ms, p95_ms,
/// p99_ms, tcp_open, read_bytes, write_bytes]` (a JSON array: compact).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HPoint(
    pub u64,
    pub u64,
    pub u64,
    pub Option<f32>,
    pub Option<f32>,
    pub Option<f32>,
    pub u64,
    pub u64,
    pub u64,
);

impl HPoint {
    fn from_sum(s: &Sum) -> HPoint {
        let q = |q| s.quantile_ms(q).map(|v| ((v * 10.0).round() / 10.0) as f32);
        HPoint(
            s.requests,
            s.successes,
            s.failures,
            q(0.5),
            q(0.95),
            q(0.99),
            s.tcp_open,
            s.read_bytes,
            s.write_bytes,
        )
    }
}

/// A 10 s point: [`HPoint`] without the byte counts (the charts do not
/// show them; the 1 min points keep them), a third smaller on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HPoint10(
    pub u64,
    pub u64,
    pub u64,
    pub Option<f32>,
    pub Option<f32>,
    pub Option<f32>,
    pub u64,
);

impl From<HPoint> for HPoint10 {
    fn from(p: HPoint) -> HPoint10 {
        HPoint10(p.0, p.1, p.2, p.3, p.4, p.5, p.6)
    }
}

impl From<&HPoint10> for HPoint {
    fn from(p: &HPoint10) -> HPoint {
        HPoint(p.0, p.1, p.2, p.3, p.4, p.5, p.6, 0, 0)
    }
}

/// A minute of 10 s points: workload (`NS/NAME`) → six slots.
pub type Minute10s = BTreeMap<String, Vec<Option<HPoint10>>>;
/// A minute's 1 min points: workload → point.
pub type Minute1m = BTreeMap<String, HPoint>;

/// A point of a chart series (`Telemetry::history`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChartPoint {
    /// Start of the step, Unix seconds.
    pub t: u64,
    /// Requests per second.
    pub rps: f64,
    /// Success rate, 0–1.
    pub success: Option<f64>,
    /// Latency quantiles, ms.
    pub p50: Option<f32>,
    /// 95th.
    pub p95: Option<f32>,
    /// 99th.
    pub p99: Option<f32>,
    /// Open connections.
    pub tcp: u64,
}

/// `GET /v1/history` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// `NS/NAME`.
    pub workload: String,
    /// Seconds per point (10 or 60).
    pub step_seconds: u64,
    /// Points, oldest first; steps without data are left out.
    pub points: Vec<ChartPoint>,
}

impl Series {
    fn push(&mut self, t: u64, p: &HPoint) {
        if p.0 == 0 && p.1 + p.2 == 0 && p.6 == 0 {
            return;
        }
        let responses = p.1 + p.2;
        self.points.push(ChartPoint {
            t,
            rps: p.0 as f64 / self.step_seconds as f64,
            success: (responses > 0).then(|| p.1 as f64 / responses as f64),
            p50: p.3,
            p95: p.4,
            p99: p.5,
            tcp: p.6,
        });
    }
}

/// Records computed from memory, to be written.
#[derive(Debug, Default)]
pub struct Pending {
    current: u64,
    p10: Vec<(String, Minute10s)>,
    p1m: Vec<(String, Minute1m)>,
}

/// The two tables and what was written.
pub struct History {
    store: Store,
    t10: Table<Minute10s>,
    t1m: Table<Minute1m>,
    /// Start (Unix s) of the last minute written; later ones are computed
    /// from memory when asked.
    pub written_until: u64,
}

fn key(minute: u64) -> String {
    format!("{minute:012}")
}

/// Every deployment-level workload's points in `[from_s, to_s)`, `NS/NAME` → sum.
fn sums(targets: &Targets, from_s: u64, to_s: u64) -> BTreeMap<String, Sum> {
    let mut out: BTreeMap<String, Sum> = BTreeMap::new();
    for (addr, t) in targets {
        let Some(name) = Resource::Deployment.name_of(addr, t) else {
            continue;
        };
        let mut s = Sum::default();
        let mut any = false;
        for p in t.inbound.between(
            (from_s * 1000).saturating_sub(1),
            (to_s * 1000).saturating_sub(1),
        ) {
            s.add(&p);
            any = true;
        }
        if !any {
            continue;
        }
        let w = format!("{}/{name}", namespace_of(t));
        if !out.contains_key(&w) && out.len() >= MAX_WORKLOADS {
            continue;
        }
        let acc = out.entry(w).or_default();
        acc.requests += s.requests;
        acc.successes += s.successes;
        acc.failures += s.failures;
        acc.covered_ms = acc.covered_ms.max(s.covered_ms);
        acc.tcp_open += s.tcp_open;
        acc.read_bytes += s.read_bytes;
        acc.write_bytes += s.write_bytes;
        for (a, b) in acc.buckets.iter_mut().zip(s.buckets.iter()) {
            *a += b;
        }
    }
    out
}

/// The two records of minute `m` (Unix s, a multiple of 60) from memory.
fn minute(targets: &Targets, m: u64) -> (Minute10s, Minute1m) {
    let mut tens = Minute10s::new();
    for slot in 0..6u64 {
        for (w, s) in sums(targets, m + slot * 10, m + slot * 10 + 10) {
            tens.entry(w).or_insert_with(|| vec![None; 6])[slot as usize] =
                Some(HPoint::from_sum(&s).into());
        }
    }
    let ones = sums(targets, m, m + 60)
        .iter()
        .map(|(w, s)| (w.clone(), HPoint::from_sum(s)))
        .collect();
    (tens, ones)
}

impl History {
    /// Opens the tables; history resumes after the last minute stored.
    ///
    /// # Errors
    ///
    /// [`store::Error`] when a table cannot be opened or read.
    pub fn open(store: &Store, now_s: u64) -> Result<History, store::Error> {
        let t10 = store.table("telemetry_10s")?;
        let t1m: Table<Minute1m> = store.table("telemetry_1m")?;
        let stored = t1m.last_key()?.and_then(|k| k.parse::<u64>().ok());
        let floor = now_s / 60 * 60;
        Ok(History {
            store: store.clone(),
            t10,
            t1m,
            written_until: stored.unwrap_or(0).max(floor.saturating_sub(60)),
        })
    }

    /// The records of every complete minute not yet written (at most the
    /// last hour's), computed from memory: call with the state locked, then
    /// [`History::write`] without it.
    pub fn prepare(&self, targets: &Targets, now_s: u64) -> Pending {
        let current = now_s / 60 * 60;
        let first = (self.written_until + 60).max(current.saturating_sub(RETENTION_10S));
        let mut pending = Pending {
            current,
            ..Pending::default()
        };
        let mut m = first;
        while m < current {
            let (tens, ones) = minute(targets, m);
            if !ones.is_empty() {
                pending.p10.push((key(m), tens));
                pending.p1m.push((key(m), ones));
            }
            m += 60;
        }
        pending
    }

    /// Writes `pending` and prunes expired records, in one batch per table
    /// and one flush. Returns the bytes handed to sled (keys and values).
    ///
    /// # Errors
    ///
    /// [`store::Error`] when sled cannot read the expired keys, write a batch
    /// or flush; what was not written is lost (history may lose minutes, never
    /// the CA).
    pub fn write(&mut self, pending: Pending) -> Result<usize, store::Error> {
        let current = pending.current;
        let r10 = self
            .t10
            .keys_before(&key(current.saturating_sub(RETENTION_10S)))?;
        let r1m = self
            .t1m
            .keys_before(&key(current.saturating_sub(RETENTION_1M)))?;
        let mut bytes = 0;
        if !(pending.p10.is_empty() && r10.is_empty() && r1m.is_empty()) {
            bytes += self.t10.write_batch(&pending.p10, &r10)?;
            bytes += self.t1m.write_batch(&pending.p1m, &r1m)?;
            self.store.flush()?;
        }
        self.written_until = self.written_until.max(current.saturating_sub(60));
        Ok(bytes)
    }

    /// The stored part of a chart series of workload `NS/NAME` (see
    /// `Telemetry::history`); no lock on the state needed.
    ///
    /// # Errors
    ///
    /// [`store::Error`] when the records cannot be read.
    pub fn stored(&self, workload: &str, step: u64, now_s: u64) -> Result<Series, store::Error> {
        let current = now_s / 60 * 60;
        let retention = if step == 10 {
            RETENTION_10S
        } else {
            RETENTION_1M
        };
        let from = current.saturating_sub(retention);
        let mut series = Series {
            workload: workload.to_string(),
            step_seconds: step,
            points: Vec::new(),
        };
        let stored_to = key(self.written_until + 60);
        if step == 10 {
            for (k, rec) in self.t10.range(&key(from), &stored_to)? {
                let m: u64 = k.parse().unwrap_or(0);
                for (i, p) in rec.get(workload).into_iter().flatten().enumerate() {
                    if let Some(p) = p {
                        series.push(m + i as u64 * 10, &p.into());
                    }
                }
            }
        } else {
            for (k, rec) in self.t1m.range(&key(from), &stored_to)? {
                if let Some(p) = rec.get(workload) {
                    series.push(k.parse().unwrap_or(0), p);
                }
            }
        }
        Ok(series)
    }

    /// Adds to `series` the minutes not written yet, the current one
    /// included, from memory (call with the state locked); a step that has
    /// not ended yet is left out (its rate would read low).
    pub fn live(&self, series: &mut Series, targets: &Targets, now_s: u64) {
        let current = now_s / 60 * 60;
        let step = series.step_seconds;
        let retention = if step == 10 {
            RETENTION_10S
        } else {
            RETENTION_1M
        };
        let mut m = (self.written_until + 60).max(current.saturating_sub(retention));
        while m <= current {
            let (tens, ones) = minute(targets, m);
            if step == 10 {
                for (i, p) in tens.get(&series.workload).into_iter().flatten().enumerate() {
                    let t = m + i as u64 * 10;
                    if let Some(p) = p.as_ref().filter(|_| t + 10 <= now_s) {
                        series.push(t, &p.into());
                    }
                }
            } else if let Some(p) = ones.get(&series.workload).filter(|_| m + 60 <= now_s) {
                series.push(m, p);
            }
            m += 60;
        }
    }

    /// Records held (10 s table, 1 min table).
    pub fn records(&self) -> (usize, usize) {
        (self.t10.len(), self.t1m.len())
    }
}

#[cfg(test)]
mod tests;
