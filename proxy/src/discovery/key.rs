//! The key of a watch: a destination as the watch API resolves it — a
//! service name with a port, or an `ip:port`.

use pimesh_api::discovery::{ServiceName, WATCH_PATH};
use std::fmt;
use std::net::SocketAddr;

/// A destination as the watch API resolves it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DstKey {
    /// A service name and port (`?name=NAME.NS:PORT`).
    Name(ServiceName, u16),
    /// An address, e.g. a transparent connection's original destination (`?addr=`).
    Addr(SocketAddr),
}

impl DstKey {
    /// The watch path and query, resuming after `revision`.
    pub(super) fn query(&self, revision: Option<u64>) -> String {
        let mut q = match self {
            DstKey::Name(n, port) => format!("{WATCH_PATH}?name={n}:{port}"),
            // IPv6 brackets percent-encoded (RFC 3986 query characters).
            DstKey::Addr(a) => format!(
                "{WATCH_PATH}?addr={}",
                a.to_string().replace('[', "%5B").replace(']', "%5D")
            ),
        };
        if let Some(r) = revision {
            q.push_str(&format!("&revision={r}"));
        }
        q
    }
}

impl fmt::Display for DstKey {
    /// `web.shop:80` or `10.0.0.1:80`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DstKey::Name(n, port) => write!(f, "{n}:{port}"),
            DstKey::Addr(a) => write!(f, "{a}"),
        }
    }
}
