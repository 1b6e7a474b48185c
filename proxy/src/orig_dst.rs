//! The original destination of a connection redirected by iptables/nft
//! `REDIRECT` (netfilter's `SO_ORIGINAL_DST`, and `IP6T_SO_ORIGINAL_DST`
//! for IPv6), as linkerd2-proxy reads it.

use std::net::SocketAddr;
use tokio::net::TcpStream;

/// The address the client originally connected to before netfilter NAT
/// redirected it here. A connection that was not redirected reports the
/// listener's own address (or `ENOENT` without conntrack); callers compare
/// with `local_addr()`.
///
/// # Errors
///
/// The `getsockopt` error, e.g. `ENOENT` when conntrack has no entry.
pub fn original_dst(stream: &TcpStream) -> std::io::Result<SocketAddr> {
    let sock = socket2::SockRef::from(stream);
    let addr = match stream.local_addr()? {
        SocketAddr::V4(_) => sock.original_dst_v4()?,
        SocketAddr::V6(_) => sock.original_dst_v6()?,
    };
    addr.as_socket().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "original destination is not an IP address",
        )
    })
}
