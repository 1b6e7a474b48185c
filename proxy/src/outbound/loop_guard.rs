//! The loop guard of explicit proxy mode: a request that names the proxy's
//! own outbound listener would come back to it forever, so it is refused
//! (`Error::Loop`, 502 with `pimesh-proxy-error`).

use std::net::SocketAddr;

/// Whether `addr` is the listener at `local`: the same address, or the
/// same port where both are loopback or unspecified (`0.0.0.0:4140` and
/// `127.0.0.1:4140` are one listener).
pub fn targets_self(addr: SocketAddr, local: SocketAddr) -> bool {
    addr == local
        || (addr.port() == local.port()
            && (addr.ip().is_loopback() || addr.ip().is_unspecified())
            && (local.ip().is_loopback() || local.ip().is_unspecified()))
}
