//! Where an accepted connection goes, as the accept step (`server`) found
//! it: a fixed address, or explicit HTTP proxy mode.

use std::net::SocketAddr;

/// Where an accepted connection goes.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// A fixed address: inbound app port, or outbound original destination.
    Fixed(SocketAddr),
    /// Explicit HTTP proxy mode: each request names its target. Holds the
    /// listener's own address, to refuse requests that would loop.
    Explicit(SocketAddr),
}
