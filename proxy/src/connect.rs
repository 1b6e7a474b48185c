//! Connect: the step that opens connections to targets, balanced
//! endpoints and peer proxies.
//!
//! Layout: `tcp` (plain TCP within the connect timeout, counted),
//! `mtls` (TLS 1.3 to a peer proxy, verifying its identity; what the
//! connection carries is announced by ALPN), `pool` (HTTP client
//! connections: the shared HTTP/1 pool, one HTTP/2 connection per peer,
//! the one HTTP/2 client builder).

pub mod mtls;
pub mod pool;
pub mod tcp;
