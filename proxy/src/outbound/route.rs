//! Route: where an outbound request or connection goes, with discovery —
//! a service (balanced over its endpoints), refused (an unknown name, or
//! discovery unavailable), or passed through as addressed.
//!
//! - explicit HTTP-proxy mode: the `Host`/`:authority` name (`web`,
//!   `web.ns`, `web.ns.svc.<domain>`, with a port; bare names are in the
//!   proxy's namespace) is watched by name; IP addresses by address;
//!   other names (`example.com`, `localhost`) use DNS as before;
//! - transparent mode and `CONNECT`: the `ip:port` is watched by address;
//! - static `PIMESH_PROXY_MESH_DESTINATIONS` win over discovery.

use super::dst::Dst;
use crate::config::Config;
use crate::discovery::key::DstKey;
use crate::discovery::{Discovery, Resolved};
use crate::http::error::Error;
use crate::target::Target;
use pimesh_api::discovery::ServiceName;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// A destination that is refused: an unknown name, or one that could not
/// be resolved.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The destination as addressed (`web.shop:80`).
    pub dst: String,
    /// `unknown_service`, `discovery_unavailable` or `discovery_limit`.
    pub reason: &'static str,
}

/// Where a request or connection goes.
#[derive(Debug)]
pub enum Route {
    /// Balanced over a service's endpoints.
    Balanced(Arc<Dst>),
    /// Refused (HTTP: 503, TCP: closed).
    Refuse(Refusal),
    /// Not a service: forwarded as it is (static mesh destinations, DNS).
    Passthrough,
}

/// The route of an outbound connection or request to `addr`.
pub async fn route_addr(config: &Config, d: &Arc<Discovery>, addr: SocketAddr) -> Route {
    if config.mesh_destination(addr).is_some() {
        return Route::Passthrough; // static configuration wins
    }
    match d.resolve(&DstKey::Addr(addr)).await {
        Resolved::Answered(dst) if dst.exists => Route::Balanced(dst),
        _ => Route::Passthrough,
    }
}

/// The route of a service name; `None` when `host` is not shaped like one
/// (then it is a DNS name).
pub async fn route_name(d: &Arc<Discovery>, host: &str, port: u16) -> Option<Route> {
    if host.eq_ignore_ascii_case("localhost") {
        return None;
    }
    let name = ServiceName::parse(host, d.namespace(), d.cluster_domain()).ok()?;
    let key = DstKey::Name(name, port);
    Some(match d.resolve(&key).await {
        Resolved::Answered(dst) if dst.exists => Route::Balanced(dst),
        Resolved::Answered(_) => Route::Refuse(Refusal {
            dst: key.to_string(),
            reason: "unknown_service",
        }),
        Resolved::Unavailable(reason) => Route::Refuse(Refusal {
            dst: key.to_string(),
            reason,
        }),
    })
}

/// The route of an HTTP request on an outbound connection to `target`.
pub async fn route_http(
    config: &Config,
    d: &Arc<Discovery>,
    target: Target,
    authority: Option<&http::uri::Authority>,
) -> Route {
    match target {
        Target::Fixed(addr) => route_addr(config, d, addr).await,
        Target::Explicit(_) => {
            let Some(a) = authority else {
                return Route::Passthrough;
            };
            let port = a.port_u16().unwrap_or(pimesh_api::discovery::DEFAULT_PORT);
            let host = a.host().trim_start_matches('[').trim_end_matches(']');
            match host.parse::<IpAddr>() {
                Ok(ip) => route_addr(config, d, SocketAddr::new(ip, port)).await,
                Err(_) => route_name(d, host, port)
                    .await
                    .unwrap_or(Route::Passthrough),
            }
        }
    }
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Error {
        if r.reason == "unknown_service" {
            Error::UnknownService(r.dst)
        } else {
            Error::DiscoveryUnavailable(r.dst)
        }
    }
}
