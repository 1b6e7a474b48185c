//! The tap hub: where the data path publishes finished requests for the
//! open taps, at the cost of one relaxed load while nobody taps.

use pimesh_api::tap::TapEvent;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::broadcast;

/// Events buffered for all taps together before the slowest one lags.
const HUB_CAPACITY: usize = 256;

/// Where finished requests are published for open taps.
#[derive(Debug)]
pub struct Hub {
    pub(super) tx: broadcast::Sender<Arc<TapEvent>>,
    /// Taps open now: what the data path checks, one relaxed load.
    pub(super) open: AtomicUsize,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            tx: broadcast::channel(HUB_CAPACITY).0,
            open: AtomicUsize::new(0),
        }
    }
}

impl Hub {
    /// Whether any tap is open (so that requests record tap metadata).
    #[inline]
    pub fn is_active(&self) -> bool {
        // Not `receiver_count()`: that takes the channel's lock.
        self.open.load(Ordering::Relaxed) > 0
    }

    /// Publishes one finished request to the open taps (dropped if none).
    pub fn publish(&self, event: TapEvent) {
        let _ = self.tx.send(Arc::new(event));
    }
}
