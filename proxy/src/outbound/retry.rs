//! Retry: which requests may be sent again, and the retry budget that
//! bounds them, as Linkerd's (a `TpsBudget`: 20 % of requests plus 10
//! retries per second over 10 s by default). The tries themselves are
//! `balanced.rs`'s.

use std::sync::Arc;
use std::time::Duration;
use tower::retry::budget::{Budget as _, TpsBudget};

/// Window of the retry budget, as Linkerd's (10 s).
pub const BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// Largest request body buffered so that the request can be retried,
/// bytes; a bigger body streams and is not retried (issue 4).
pub const MAX_REPLAY_BYTES: usize = 64 * 1024;

/// The retry budget shared by every request to one destination.
#[derive(Debug, Clone)]
pub struct Budget {
    /// Retries allowed per request, and per second regardless.
    params: (f64, u32),
    /// Kept across policy updates unless `params` change.
    tps: Arc<TpsBudget>,
}

impl Budget {
    /// A budget allowing `ratio` retries per request plus `min_per_sec`
    /// per second over [`BUDGET_WINDOW`]; `previous`'s when its
    /// parameters are the same, so that a policy update does not refill it.
    /// `ratio` must be in 0..=1000 and `min_per_sec` at most `i32::MAX`
    /// (tower asserts its ranges; the policy clamps them first).
    pub fn new(ratio: f64, min_per_sec: u32, previous: Option<&Budget>) -> Budget {
        let params = (ratio, min_per_sec);
        match previous {
            Some(prev) if prev.params == params => prev.clone(),
            _ => Budget {
                params,
                tps: Arc::new(TpsBudget::new(BUDGET_WINDOW, min_per_sec, ratio as f32)),
            },
        }
    }

    /// Whether `self` and `other` are one budget (a kept one).
    pub fn is(&self, other: &Budget) -> bool {
        Arc::ptr_eq(&self.tps, &other.tps)
    }

    /// Counts a request in the budget (every original request deposits).
    pub fn deposit(&self) {
        self.tps.deposit();
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub fn withdraw(&self) -> bool {
        self.tps.withdraw()
    }
}
