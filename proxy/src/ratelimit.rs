//! Local rate limits of inbound HTTP requests, as linkerd2-proxy's
//! `LocalRateLimit` (`linkerd/proxy/server-policy/src/local_rate_limit.rs`):
//! a Server's `total` bucket first, then the client's override if one names
//! its identity, else its `identity` bucket (clients without a mesh identity
//! share one). Each bucket is a GCRA (the generic cell rate algorithm that
//! linkerd2-proxy's `governor` implements), `Quota::per_second(rps)`: one
//! request every `1/rps` s, and `rps` at once from a full bucket. Ours is
//! ~100 lines instead of the `governor` crate (see the README for the binary
//! sizes). A leaf: it imports nothing of the flow.

use pimesh_api::policy::inbound::RateLimit;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Past this many identity buckets, a new identity first drops the buckets
/// that are full again (equivalent to absent ones), so memory stays bounded
/// by the clients of the last second.
const MAX_IDENTITY_BUCKETS: usize = 4096;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Why a request was refused, as linkerd2-proxy's `RateLimitError`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Limited {
    /// The Server's `total` limit.
    #[error("total rate limit exceeded: {0}rps")]
    Total(u32),
    /// The client identity's `identity` limit.
    #[error("per-identity rate limit exceeded: {0}rps")]
    PerIdentity(u32),
    /// The limit of an override naming the client.
    #[error("override rate limit exceeded: {0}rps")]
    Override(u32),
}

impl Limited {
    /// The `ratelimit_scope` label: `total`, or `identity` for the identity
    /// and override limits (as linkerd2-proxy's `ratelimit_label`).
    pub fn scope(&self) -> &'static str {
        match self {
            Limited::Total(_) => "total",
            Limited::PerIdentity(_) | Limited::Override(_) => "identity",
        }
    }
}

/// One GCRA bucket: the theoretical arrival time (`tat`, ns since the
/// limiter's epoch) of the next request; a request is admitted when the
/// tat it would leave stays within `tolerance` of now.
#[derive(Debug)]
struct Gcra {
    rps: u32,
    /// `1/rps` s in ns, rounded up (at least 1): never faster than `rps`.
    interval: u64,
    /// `rps * interval`: a full bucket admits `rps` requests at once.
    tolerance: u64,
}

impl Gcra {
    /// `None` for 0 (no limit).
    fn new(rps: u32) -> Option<Gcra> {
        let interval = NANOS_PER_SEC.div_ceil(u64::from(rps).max(1)).max(1);
        (rps > 0).then(|| Gcra {
            rps,
            interval,
            tolerance: interval.saturating_mul(u64::from(rps)),
        })
    }

    /// The tat after admitting a request at `now` with tat `tat`, or `None`
    /// when the request is over the limit.
    fn admit(&self, tat: u64, now: u64) -> Option<u64> {
        let next = tat.max(now).saturating_add(self.interval);
        (next <= now.saturating_add(self.tolerance)).then_some(next)
    }
}

/// A bucket shared by concurrent requests (one atomic tat).
#[derive(Debug)]
struct Direct {
    gcra: Gcra,
    tat: AtomicU64,
}

impl Direct {
    fn new(rps: u32) -> Option<Direct> {
        Some(Direct {
            gcra: Gcra::new(rps)?,
            tat: AtomicU64::new(0),
        })
    }

    fn check(&self, now: u64) -> bool {
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let Some(next) = self.gcra.admit(tat, now) else {
                return false;
            };
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(t) => tat = t,
            }
        }
    }
}

/// One bucket per client identity, and one for clients without.
#[derive(Debug)]
struct Keyed {
    gcra: Gcra,
    tats: Mutex<(u64, HashMap<Box<str>, u64>)>,
}

impl Keyed {
    fn check(&self, identity: Option<&str>, now: u64) -> bool {
        let mut guard = self.tats.lock().unwrap_or_else(|e| e.into_inner());
        let (anonymous, by_id) = &mut *guard;
        let tat = match identity {
            None => anonymous,
            Some(id) => {
                if !by_id.contains_key(id) && by_id.len() >= MAX_IDENTITY_BUCKETS {
                    by_id.retain(|_, tat| *tat > now);
                }
                by_id.entry(id.into()).or_insert(0)
            }
        };
        match self.gcra.admit(*tat, now) {
            Some(next) => {
                *tat = next;
                true
            }
            None => false,
        }
    }
}

/// A Server's local rate limit and its buckets (linkerd2-proxy's
/// `LocalRateLimit`). Equal when made from equal specs: the buckets are
/// state, not configuration.
#[derive(Debug)]
pub struct LocalRateLimit {
    /// What it was made from: a policy update keeps this limiter (and its
    /// buckets) when the spec is unchanged.
    spec: RateLimit,
    /// `ratelimit_name`.
    pub name: Arc<str>,
    epoch: Instant,
    total: Option<Direct>,
    identity: Option<Keyed>,
    /// The override bucket of each named identity (shared by the identities
    /// of one override); an identity named twice gets the first.
    overrides: HashMap<Box<str>, Arc<Direct>>,
}

impl PartialEq for LocalRateLimit {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
}

impl Eq for LocalRateLimit {}

impl LocalRateLimit {
    /// The buckets of `spec`, all full; any rate is taken (0: no limit).
    pub fn new(spec: RateLimit) -> LocalRateLimit {
        let mut overrides = HashMap::new();
        for o in &spec.overrides {
            let Some(bucket) = Direct::new(o.requests_per_second) else {
                continue;
            };
            let bucket = Arc::new(bucket);
            for id in &o.identities {
                overrides
                    .entry(id.as_str().into())
                    .or_insert_with(|| bucket.clone());
            }
        }
        LocalRateLimit {
            name: spec.name.as_str().into(),
            epoch: Instant::now(),
            total: spec.total.and_then(Direct::new),
            identity: spec.identity.and_then(Gcra::new).map(|gcra| Keyed {
                gcra,
                tats: Mutex::default(),
            }),
            overrides,
            spec,
        }
    }

    /// What it was made from.
    pub fn spec(&self) -> &RateLimit {
        &self.spec
    }

    /// Admits one request of the client with mesh `identity` (or none) now,
    /// taking a token from each bucket it passes.
    ///
    /// # Errors
    ///
    /// [`Limited`] naming the first limit the request is over.
    pub fn check(&self, identity: Option<&str>) -> Result<(), Limited> {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.check_at(identity, now)
    }

    fn check_at(&self, identity: Option<&str>, now: u64) -> Result<(), Limited> {
        if let Some(t) = &self.total {
            if !t.check(now) {
                return Err(Limited::Total(t.gcra.rps));
            }
        }
        if let Some(o) = identity.and_then(|id| self.overrides.get(id)) {
            return match o.check(now) {
                true => Ok(()),
                false => Err(Limited::Override(o.gcra.rps)),
            };
        }
        match &self.identity {
            Some(k) if !k.check(identity, now) => Err(Limited::PerIdentity(k.gcra.rps)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
