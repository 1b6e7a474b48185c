//! [`free_port`]: a loopback port for a server the test starts with a
//! fixed port (nginx, a controller that must keep its port on restart).

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// First port of the range drawn from.
const LOW: u16 = 20_000;
/// Ports in the range: 20000–31999, below the kernel's default ephemeral
/// range (`net.ipv4.ip_local_port_range`, 32768–60999).
const SPAN: u32 = 12_000;

/// A port that was free on 127.0.0.1 a moment ago, drawn from 20000–31999:
/// below the kernel's default ephemeral range (32768–60999), so that other
/// tests' port-0 binds and outgoing connections, which take their ports
/// from that range, cannot take it before the caller binds it. Each test
/// process (and each call in it) starts at its own place in the range, so
/// that parallel tests do not all try the same ports.
///
/// Falls back to a port the kernel picks (`127.0.0.1:0`) when none of the
/// range is free, and to 0 when not even that bind works (the caller's own
/// bind then fails with the reason).
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id()
        .wrapping_mul(7919)
        .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(104_729));
    (0..SPAN)
        // A step of 7 (prime to SPAN) visits every port of the range once.
        .map(|i| LOW + (start.wrapping_add(i * 7) % SPAN) as u16)
        .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .unwrap_or_else(|| {
            TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_or(0, |a| a.port())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_the_ephemeral_range_and_bindable() {
        let (a, b) = (free_port(), free_port());
        assert_ne!(a, b, "two calls start at different places");
        for p in [a, b] {
            assert!((20_000..32_000).contains(&p), "{p}");
            TcpListener::bind(("127.0.0.1", p)).unwrap();
        }
    }
}
