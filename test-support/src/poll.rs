//! Polling a condition until it holds or a time limit passes.

use std::time::{Duration, Instant};

/// Polls `f` every 50 ms until it returns true (then true) or `timeout`
/// has passed (then false, after one last call past the deadline). The
/// caller asserts on the answer with its own message.
pub fn eventually(timeout: Duration, f: impl FnMut() -> bool) -> bool {
    eventually_every(Duration::from_millis(50), timeout, f)
}

/// [`eventually`] with the pause `every` between calls: longer where each
/// call is heavy (the lab's checks start processes in namespaces).
pub fn eventually_every(every: Duration, timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn true_once_it_holds_false_after_the_deadline() {
        let mut n = 0;
        assert!(eventually(Duration::from_secs(5), || {
            n += 1;
            n == 3
        }));
        assert_eq!(n, 3);
        let start = Instant::now();
        assert!(!eventually(Duration::from_millis(120), || false));
        assert!(start.elapsed() >= Duration::from_millis(120));
    }
}
