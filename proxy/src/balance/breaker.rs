//! Circuit breaking by consecutive failure accrual, as linkerd2-proxy's
//! `failure-accrual: consecutive`: an endpoint that fails N times in a row
//! is ejected (not picked); after a backoff one request is let through as
//! a probe; its success re-admits the endpoint, its failure ejects it
//! again for twice as long (up to the maximum, jittered).
//!
//! Time is `tokio::time::Instant`, so tests run on a paused clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// What the breaker lets through now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// The endpoint is in service.
    Yes,
    /// The endpoint was ejected and this request is its probe.
    Probe,
    /// The endpoint is ejected (or its probe is in flight).
    No,
}

/// A state change worth counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Ejected after consecutive failures, or again after a failed probe.
    Ejected,
    /// Back in service after a successful probe.
    Readmitted,
}

#[derive(Debug)]
enum Mode {
    /// In service; consecutive failures so far.
    Closed(u32),
    /// Ejected until `until`; `backoff` is the current wait.
    Open { until: Instant, backoff: Duration },
    /// One probe is in flight; `backoff` is what a failure doubles.
    Probing { backoff: Duration },
}

/// Parameters: consecutive failures that eject (0: never) and the backoff range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Consecutive failures that eject the endpoint; 0 disables ejection.
    pub consecutive: u32,
    /// First wait before a probe.
    pub min_backoff: Duration,
    /// Longest wait between probes.
    pub max_backoff: Duration,
}

/// One endpoint's breaker.
#[derive(Debug)]
pub struct Breaker {
    state: Mutex<(Mode, Params)>,
    /// `Closed(0)`: in service without recent failures, the state of
    /// almost every request — answered without the lock or the clock.
    healthy: AtomicBool,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(params: Params) -> Breaker {
        Breaker {
            state: Mutex::new((Mode::Closed(0), params)),
            healthy: AtomicBool::new(true),
        }
    }

    /// Sets the mode and its lock-free mirror.
    fn set(&self, s: &mut (Mode, Params), mode: Mode) {
        self.healthy
            .store(matches!(mode, Mode::Closed(0)), Ordering::Relaxed);
        s.0 = mode;
    }

    /// Changes the parameters (a policy update); the state is kept.
    pub fn set_params(&self, params: Params) {
        self.lock().1 = params;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Mode, Params)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the endpoint can be picked now, without changing anything.
    pub fn available(&self) -> bool {
        if self.healthy.load(Ordering::Relaxed) {
            return true;
        }
        match self.lock().0 {
            Mode::Closed(_) => true,
            Mode::Open { until, .. } => Instant::now() >= until,
            Mode::Probing { .. } => false,
        }
    }

    /// Admits a request: ejected endpoints whose backoff has passed let
    /// exactly one probe through.
    pub fn admit(&self) -> Admit {
        if self.healthy.load(Ordering::Relaxed) {
            return Admit::Yes;
        }
        let mut s = self.lock();
        match s.0 {
            Mode::Closed(_) => Admit::Yes,
            Mode::Open { until, backoff } if Instant::now() >= until => {
                self.set(&mut s, Mode::Probing { backoff });
                Admit::Probe
            }
            Mode::Open { .. } | Mode::Probing { .. } => Admit::No,
        }
    }

    /// Records a success. Outcomes of requests admitted before an
    /// ejection are ignored while ejected.
    pub fn success(&self) -> Option<Transition> {
        if self.healthy.load(Ordering::Relaxed) {
            return None;
        }
        let mut s = self.lock();
        match s.0 {
            Mode::Closed(_) => {
                self.set(&mut s, Mode::Closed(0));
                None
            }
            Mode::Probing { .. } => {
                self.set(&mut s, Mode::Closed(0));
                Some(Transition::Readmitted)
            }
            Mode::Open { .. } => None,
        }
    }

    /// Records a failure (connect error, timeout, 5xx, retryable gRPC status).
    pub fn failure(&self, now: Instant) -> Option<Transition> {
        let mut s = self.lock();
        let params = s.1;
        match s.0 {
            Mode::Closed(n) => {
                let n = n.saturating_add(1);
                if params.consecutive > 0 && n >= params.consecutive {
                    let backoff = params.min_backoff;
                    let until = now + jittered(backoff);
                    self.set(&mut s, Mode::Open { until, backoff });
                    Some(Transition::Ejected)
                } else {
                    self.set(&mut s, Mode::Closed(n));
                    None
                }
            }
            Mode::Probing { backoff } => {
                let backoff = (backoff * 2).clamp(params.min_backoff, params.max_backoff);
                let until = now + jittered(backoff);
                self.set(&mut s, Mode::Open { until, backoff });
                Some(Transition::Ejected)
            }
            Mode::Open { .. } => None,
        }
    }

    /// A probe ended without an outcome (its client went away): the next
    /// request probes again.
    pub fn abandon_probe(&self) {
        let mut s = self.lock();
        if let Mode::Probing { backoff } = s.0 {
            let until = Instant::now();
            self.set(&mut s, Mode::Open { until, backoff });
        }
    }

    /// Whether the endpoint is ejected now (for gauges and tests).
    pub fn is_ejected(&self) -> bool {
        !self.healthy.load(Ordering::Relaxed) && !matches!(self.lock().0, Mode::Closed(_))
    }
}

/// `d` plus up to 10 % (probes of many proxies do not align).
fn jittered(d: Duration) -> Duration {
    d.mul_f64(1.0 + super::random::random_fraction() * 0.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn params(n: u32) -> Params {
        Params {
            consecutive: n,
            min_backoff: SEC,
            max_backoff: 4 * SEC,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ejects_probes_and_backs_off() {
        let b = Breaker::new(params(3));
        let now = Instant::now;
        assert_eq!(b.failure(now()), None);
        assert_eq!(b.failure(now()), None);
        assert_eq!(b.success(), None, "a success resets the count");
        assert_eq!(b.failure(now()), None);
        assert_eq!(b.failure(now()), None);
        assert_eq!(b.failure(now()), Some(Transition::Ejected));
        assert_eq!(b.admit(), Admit::No);
        assert!(!b.available());
        // Late outcomes of requests admitted before the ejection are ignored.
        assert_eq!(b.success(), None);
        assert!(b.is_ejected());
        tokio::time::advance(SEC + SEC / 10 + Duration::from_millis(1)).await;
        assert!(b.available());
        assert_eq!(b.admit(), Admit::Probe);
        assert_eq!(b.admit(), Admit::No, "one probe at a time");
        // The probe fails: twice the backoff (2 s .. 2.2 s).
        assert_eq!(b.failure(now()), Some(Transition::Ejected));
        tokio::time::advance(SEC + SEC / 2).await;
        assert_eq!(b.admit(), Admit::No, "still backing off");
        tokio::time::advance(SEC).await;
        assert_eq!(b.admit(), Admit::Probe);
        assert_eq!(b.failure(now()), Some(Transition::Ejected)); // 4 s
        tokio::time::advance(5 * SEC).await;
        assert_eq!(b.admit(), Admit::Probe);
        assert_eq!(b.failure(now()), Some(Transition::Ejected)); // capped at 4 s
        tokio::time::advance(4 * SEC + SEC / 2).await;
        assert_eq!(b.admit(), Admit::Probe, "the maximum caps the backoff");
        assert_eq!(b.success(), Some(Transition::Readmitted));
        assert_eq!(b.admit(), Admit::Yes);
        assert!(!b.is_ejected());
    }

    #[tokio::test(start_paused = true)]
    async fn zero_never_ejects() {
        let b = Breaker::new(params(0));
        for _ in 0..100 {
            assert_eq!(b.failure(Instant::now()), None);
        }
        assert_eq!(b.admit(), Admit::Yes);
    }
}
