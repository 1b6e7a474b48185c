//! Outbound routing with discovery: which destinations are services (and
//! balanced over their endpoints), which are refused (unknown names), and
//! which are forwarded as they are (addresses that are not services).
//!
//! - explicit HTTP-proxy mode: the `Host`/`:authority` name (`web`,
//!   `web.ns`, `web.ns.svc.<domain>`, with a port; bare names are in the
//!   proxy's namespace) is watched by name; IP addresses by address;
//!   other names (`example.com`, `localhost`) use DNS as before;
//! - transparent mode and `CONNECT`: the `ip:port` is watched by address;
//! - static `PIMESH_PROXY_MESH_DESTINATIONS` win over discovery.
//!
//! Layout: `policy` (a service's effective resilience settings), `replay`
//! (replayable request bodies), `tcp` (balanced opaque TCP and the
//! `PIMESH_PROXY_TCP_UPSTREAMS` listeners). The HTTP retry loop is
//! `http/balanced.rs`.

pub mod policy;
pub mod replay;
pub mod tcp;

use crate::balance::breaker::{Params, Transition};
use crate::balance::{Balancer, Endpoint, PickError};
use crate::config::{Config, Defaults, MeshDestination};
use crate::discovery::{Discovery, DstKey, Resolved};
use crate::metrics::{Direction, Metrics, TargetLabels, Tls};
use crate::server::{Ctx, Target};
use pimesh_api::discovery::{Resolution, ServiceName};
use policy::Policy;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// One watched destination as the data plane uses it: rebuilt on every
/// change, endpoint state (load, breaker) carried over.
#[derive(Debug)]
pub struct Dst {
    /// What was resolved.
    pub key: DstKey,
    /// Whether it is a known service.
    pub exists: bool,
    /// The service name for messages (`web.shop`), or the key.
    pub name: String,
    /// The balancer over its endpoints.
    pub balancer: Balancer,
    /// Its resilience settings.
    pub policy: Policy,
    /// Labels of failures before an endpoint is chosen (`target_addr`
    /// is the destination as addressed).
    pub labels: TargetLabels,
    /// The registry revision this state is from.
    pub revision: u64,
}

impl Dst {
    /// The error of a failed pick, naming the service.
    pub fn pick_error(&self, e: PickError) -> crate::http::Error {
        match e {
            PickError::NoEndpoints => crate::http::Error::NoEndpoints(self.name.clone()),
            PickError::AllEjected => crate::http::Error::AllEjected(self.name.clone()),
        }
    }
}

/// Builds [`Dst`]s from resolutions.
pub struct DstBuilder {
    metrics: Arc<Metrics>,
    defaults: Defaults,
    trust_domain: String,
    /// The cluster domain of fully-qualified names.
    pub cluster_domain: String,
}

impl DstBuilder {
    /// A builder with the proxy's defaults.
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> DstBuilder {
        DstBuilder {
            metrics,
            defaults: config.outbound.defaults.clone(),
            trust_domain: config
                .identity
                .as_ref()
                .map_or(pimesh_api::DEFAULT_TRUST_DOMAIN.into(), |i| {
                    i.trust_domain.clone()
                }),
            cluster_domain: config.outbound.cluster_domain.clone(),
        }
    }

    /// The state of `key` after `res` (revision `revision`), keeping the
    /// load and breaker state of endpoints that `prev` already had.
    pub fn build(&self, key: &DstKey, res: &Resolution, prev: Option<&Dst>, revision: u64) -> Dst {
        let policy = Policy::new(&res.policy, &self.defaults, prev.map(|p| &p.policy));
        let params = Params {
            consecutive: policy.failure_accrual,
            min_backoff: policy.min_backoff,
            max_backoff: policy.max_backoff,
        };
        // `web.shop.svc.cluster.local` → ("web", "shop").
        let (service, namespace) = match (&res.service, key) {
            (Some(fqdn), _) => {
                let mut parts = fqdn.split('.');
                (
                    parts.next().unwrap_or("").to_string(),
                    parts.next().unwrap_or("").to_string(),
                )
            }
            (None, DstKey::Name(n, _)) => (n.name.clone(), n.namespace.clone()),
            (None, DstKey::Addr(_)) => (String::new(), String::new()),
        };
        let name = if service.is_empty() {
            key.to_string()
        } else {
            format!("{service}.{namespace}:{}", res.port)
        };
        let mut endpoints = Vec::new();
        if res.exists {
            for ep in &res.endpoints {
                let mesh = ep.identity.clone().map(|identity| MeshDestination {
                    addr: ep.addr,
                    identity,
                    proxy_addr: ep.connect_addr(),
                });
                let tls = match &mesh {
                    Some(m) => self.metrics.tls_established(
                        Direction::Outbound,
                        &m.identity.dns_name(&self.trust_domain),
                    ),
                    None => Tls::plaintext(Direction::Outbound),
                };
                let mut labels =
                    self.metrics
                        .target(Direction::Outbound, &ep.addr.to_string(), tls);
                labels.dst = Some(self.metrics.dst_labels(&ep.labels, &service, &namespace));
                let kept = prev
                    .into_iter()
                    .flat_map(|p| p.balancer.endpoints())
                    .find(|e| {
                        e.addr == ep.addr
                            && e.mesh == mesh
                            && e.connect == ep.connect_addr()
                            && e.weight == ep.weight
                            && e.labels == labels
                    });
                match kept {
                    Some(e) => {
                        e.breaker.set_params(params);
                        endpoints.push(e.clone());
                    }
                    None => endpoints.push(Arc::new(Endpoint::new(
                        ep.addr, mesh, ep.weight, labels, params,
                    ))),
                }
            }
        }
        let mut labels = self.metrics.target(
            Direction::Outbound,
            &key.to_string(),
            Tls::plaintext(Direction::Outbound),
        );
        if res.exists {
            labels.dst = Some(
                self.metrics
                    .dst_labels(&Default::default(), &service, &namespace),
            );
        }
        Dst {
            key: key.clone(),
            exists: res.exists,
            name,
            balancer: Balancer::new(endpoints),
            policy,
            labels,
            revision,
        }
    }
}

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
pub async fn route_addr(ctx: &Ctx, d: &Arc<Discovery>, addr: SocketAddr) -> Route {
    if ctx.config.mesh_destination(addr).is_some() {
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
    ctx: &Ctx,
    d: &Arc<Discovery>,
    target: Target,
    authority: Option<&http::uri::Authority>,
) -> Route {
    match target {
        Target::Fixed(addr) => route_addr(ctx, d, addr).await,
        Target::Explicit(_) => {
            let Some(a) = authority else {
                return Route::Passthrough;
            };
            let port = a.port_u16().unwrap_or(pimesh_api::discovery::DEFAULT_PORT);
            let host = a.host().trim_start_matches('[').trim_end_matches(']');
            match host.parse::<IpAddr>() {
                Ok(ip) => route_addr(ctx, d, SocketAddr::new(ip, port)).await,
                Err(_) => route_name(d, host, port)
                    .await
                    .unwrap_or(Route::Passthrough),
            }
        }
    }
}

/// Counts a breaker transition.
pub fn count_transition(metrics: &Metrics, t: Option<Transition>, probe: bool) {
    let m = metrics.outbound();
    if probe {
        m.breaker("probe");
    }
    match t {
        Some(Transition::Ejected) => m.breaker("ejected"),
        Some(Transition::Readmitted) => m.breaker("readmitted"),
        None => {}
    }
}
