//! The telemetry role (Linkerd's viz + Prometheus, inside the controller):
//! scrapes every proxy's admin `/metrics` each interval, keeps per-target
//! deltas for an hour in memory (windows 1m/10m/1h), writes downsampled
//! history to sled in batches (every 5 minutes), answers `stat`, `edges`, `authz` and the
//! dashboard, and re-exports the aggregated series on `/metrics`.
//!
//! - `targets`: scrape targets and their sources (`--scrape-target`, the registry hook).
//! - `scrape`: one bounded `GET /metrics`.
//! - `parse`: the text format → the reduced series telemetry keeps.
//! - `window`: points, packed rings, sums, PromQL-style quantiles, counter resets.
//! - `state`: per-target state and deltas.
//! - `query`: `stat`, `edges` and `authz` rows.
//! - `history`: the sled tables.
//! - `metrics`: `pimesh_controller_scrape*` and `pimesh_workload_*`.
//! - `api`: the operator-port handlers and the embedded dashboard.

pub mod api;
pub mod history;
pub mod metrics;
pub mod parse;
pub mod query;
pub mod scrape;
pub mod state;
pub mod targets;
pub mod window;

pub use targets::{Target, TargetSource};

use crate::store::{self, Store};
use history::History;
use metrics::{TelemetryMetrics, Totals};
use state::Targets;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// Scrape interval unless `--scrape-interval` says otherwise (Linkerd viz's
/// Prometheus scrapes every 10 s).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Largest `/metrics` body read, bytes; larger ones are refused whole.
pub const DEFAULT_MAX_BYTES: usize = 2 * 1024 * 1024;
/// Longest scrape; also at most half the interval.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapes in flight at once.
pub const CONCURRENCY: usize = 8;
/// Targets scraped at most; more are left out and counted.
pub const MAX_TARGETS: usize = 500;
/// How often history is written unless `--history-flush-interval` says
/// otherwise: at 20 deployments, every minute measured 1.3–1.9 MiB written
/// per hour (sled rewrites the B-tree leaf each time), every 5 minutes
/// 0.7–0.9 MiB (benches/README.md). A crash loses at most that much history (SIGTERM
/// writes it; the API serves unwritten minutes from memory).
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(300);

/// Telemetry's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `--scrape-target`s.
    pub static_targets: Vec<Target>,
    /// `--scrape-interval`.
    pub interval: Duration,
    /// Per-scrape timeout: half the interval, at most [`MAX_TIMEOUT`].
    pub timeout: Duration,
    /// Body size cap, bytes.
    pub max_bytes: usize,
    /// `--history-flush-interval`.
    pub flush_interval: Duration,
    /// Trust domain, to name identities.
    pub trust_domain: String,
}

impl Settings {
    /// Settings for `interval`, with the derived timeout.
    pub fn new(static_targets: Vec<Target>, interval: Duration, trust_domain: &str) -> Settings {
        Settings {
            static_targets,
            interval,
            timeout: (interval / 2).min(MAX_TIMEOUT),
            max_bytes: DEFAULT_MAX_BYTES,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            trust_domain: trust_domain.to_string(),
        }
    }

    /// Points kept per target: an hour of scrapes.
    pub fn ring_cap(&self) -> usize {
        let per_hour = 3_600_000 / self.interval.as_millis().max(1) as usize;
        per_hour.clamp(1, 3600) + 1
    }
}

/// What the scrape loop and the handlers share.
pub struct State {
    /// Every target known, by admin address.
    pub targets: Targets,
    /// When the latest round ended, Unix ms: the end of every window.
    pub now_ms: u64,
    /// Cumulative workload totals for the re-export, by (namespace, deployment).
    pub totals: BTreeMap<(String, String), Totals>,
}

/// The telemetry role.
pub struct Telemetry {
    /// Its configuration.
    pub settings: Settings,
    /// Targets, points, totals.
    pub state: Mutex<State>,
    sources: Mutex<Vec<Arc<dyn TargetSource>>>,
    /// Its series.
    pub metrics: TelemetryMetrics,
    history: Mutex<History>,
}

/// Now, Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Telemetry {
    /// The role over `store`'s history tables.
    ///
    /// # Errors
    ///
    /// [`store::Error`] when the history tables cannot be opened or read.
    pub fn new(settings: Settings, store: &Store) -> Result<Telemetry, store::Error> {
        let history = History::open(store, now_ms() / 1000)?;
        Ok(Telemetry {
            settings,
            state: Mutex::new(State {
                targets: Targets::new(),
                now_ms: now_ms(),
                totals: BTreeMap::new(),
            }),
            sources: Mutex::new(Vec::new()),
            metrics: TelemetryMetrics::new(),
            history: Mutex::new(history),
        })
    }

    /// Adds a dynamic source of targets, asked before every round. The
    /// registry's hook: `telemetry.add_source(Arc::new(move ||
    /// registry.endpoints().iter().filter_map(Target::from_endpoint).collect()))`.
    pub fn add_source(&self, source: Arc<dyn TargetSource>) {
        lock(&self.sources).push(source);
    }

    /// Scrapes every interval and writes history every flush interval
    /// until `shutdown`; history is written once more on the way out.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flush = tokio::time::interval(self.settings.flush_interval);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        flush.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    // A round waits for its slowest scrapes: shutdown does not.
                    tokio::select! {
                        _ = self.round() => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
                _ = flush.tick() => self.flush_history().await,
            }
        }
        self.flush_history().await;
    }

    /// One round: every target scraped concurrently (at most
    /// [`CONCURRENCY`] at once, each within the timeout), results recorded.
    pub async fn round(self: &Arc<Self>) {
        let sources = lock(&self.sources).clone();
        let (targets, dropped) =
            targets::collect(&self.settings.static_targets, &sources, MAX_TARGETS);
        if dropped > 0 {
            self.metrics.targets_dropped.inc_by(dropped as u64);
        }
        {
            let mut st = lock(&self.state);
            for t in st.targets.values_mut() {
                t.listed = false;
            }
            for t in &targets {
                let e = st.targets.entry(t.admin_addr).or_default();
                e.listed = true;
                e.given = t.labels.clone();
            }
        }
        let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
        // One parse at a time: parsing is quick, and its transient memory
        // (a sample per line) is then bounded by one body's.
        let parsing = Arc::new(tokio::sync::Semaphore::new(1));
        let mut tasks = tokio::task::JoinSet::new();
        for t in targets {
            let permits = permits.clone();
            let parsing = parsing.clone();
            let (timeout, max) = (self.settings.timeout, self.settings.max_bytes);
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let started = std::time::Instant::now();
                let result = match scrape::fetch(t.admin_addr, timeout, max).await {
                    Ok(text) => {
                        let _parsing = parsing.acquire_owned().await;
                        tokio::task::spawn_blocking(move || parse::parse(&text))
                            .await
                            .unwrap_or_else(|e| Err(e.to_string()))
                            .map_err(scrape::Error::Malformed)
                    }
                    Err(e) => Err(e),
                };
                (t.admin_addr, result, started.elapsed(), now_ms())
            });
        }
        while let Some(done) = tasks.join_next().await {
            let Ok((addr, result, took, at_ms)) = done else {
                continue;
            };
            self.metrics.scrape_duration.observe(took.as_secs_f64());
            self.record(addr, result, at_ms);
        }
        let mut st = lock(&self.state);
        st.now_ms = now_ms();
        let horizon = st.now_ms.saturating_sub(window::RETENTION_MS);
        st.targets.retain(|_, t| t.expire(horizon));
        // Targets no source lists any more keep their points for the
        // windows, but pods that churn must not grow this without bound:
        // past twice the target limit, the unlisted ones go.
        if st.targets.len() > 2 * MAX_TARGETS {
            st.targets.retain(|_, t| t.listed);
        }
        let up = st.targets.values().filter(|t| t.listed && t.up).count();
        let stale = st.targets.values().filter(|t| t.listed && !t.up).count();
        self.metrics.set_targets(up, stale);
    }

    fn record(&self, addr: SocketAddr, result: Result<parse::Parsed, scrape::Error>, at_ms: u64) {
        let cap = self.settings.ring_cap();
        let fresh_ms = self.settings.interval.as_millis() as u64;
        let mut st = lock(&self.state);
        let State {
            targets, totals, ..
        } = &mut *st;
        let Some(t) = targets.get_mut(&addr) else {
            return;
        };
        match result {
            Ok(parsed) => {
                self.metrics.scraped("success");
                if parsed.dropped > 0 {
                    self.metrics.series_dropped.inc_by(parsed.dropped as u64);
                }
                if let Some(p) = t.record(parsed, at_ms, fresh_ms, cap) {
                    let name = query::Resource::Deployment
                        .name_of(&addr, t)
                        .unwrap_or_default();
                    let key = (query::namespace_of(t), name);
                    if totals.contains_key(&key) || totals.len() < metrics::MAX_EXPORTED {
                        totals.entry(key).or_default().add(addr, &p);
                    }
                }
            }
            Err(e) => {
                tracing::debug!(target = %addr, error = %crate::error_chain(&e), "scrape failed");
                self.metrics.scraped(e.result());
                t.failed(crate::error_chain(&e));
                for tot in totals.values_mut() {
                    tot.forget(&addr);
                }
            }
        }
    }

    /// Writes the complete minutes not yet in the history (blocking pool).
    pub async fn flush_history(self: &Arc<Self>) {
        let me = self.clone();
        let result = tokio::task::spawn_blocking(move || {
            let now_s = now_ms() / 1000;
            // Compute under the state lock (memory only), write without it:
            // the scrape loop and the handlers never wait for the disk.
            let pending = {
                let st = lock(&me.state);
                lock(&me.history).prepare(&st.targets, now_s)
            };
            lock(&me.history).write(pending)
        })
        .await;
        match result {
            Ok(Ok(0)) => {}
            Ok(Ok(bytes)) => {
                self.metrics.history_written(true);
                self.metrics.history_bytes.inc_by(bytes as u64);
            }
            Ok(Err(e)) => {
                self.metrics.history_written(false);
                tracing::warn!(error = %crate::error_chain(&e), "cannot write telemetry history");
            }
            Err(_) => self.metrics.history_written(false),
        }
    }

    /// Chart series of workload `NS/NAME` (`step` 10 or 60 seconds): the
    /// stored minutes, then those still only in memory. Reads the database:
    /// call on the blocking pool.
    ///
    /// # Errors
    ///
    /// [`store::Error`] when the stored minutes cannot be read.
    pub fn history(&self, workload: &str, step: u64) -> Result<history::Series, store::Error> {
        let now_s = now_ms() / 1000;
        let mut series = lock(&self.history).stored(workload, step, now_s)?;
        let st = lock(&self.state);
        lock(&self.history).live(&mut series, &st.targets, now_s);
        Ok(series)
    }

    /// Telemetry's series and the workload re-export, OpenMetrics text
    /// without `# EOF`.
    pub fn encode_metrics(&self) -> String {
        let mut out = self.metrics.encode();
        metrics::encode_workloads(&mut out, &lock(&self.state).totals);
        out
    }
}

/// Locks `m`, also when a panicking holder poisoned it (the data is plain
/// counters and points: still usable).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
