//! The state of one watched destination as the data plane uses it
//! ([`Dst`]: its balancer, policy and labels), built from the controller's
//! resolutions by [`DstBuilder`], endpoint state carried over.

use super::http_route::table::RouteTable;
use super::policy::Policy;
use crate::balance::breaker::{Params, Transition};
use crate::balance::{Balancer, Endpoint, PickError};
use crate::config::{Config, Defaults, MeshDestination};
use crate::discovery::key::DstKey;
use crate::http::error::Error;
use crate::metrics::{Direction, Metrics, TargetLabels, Tls};
use pimesh_api::discovery::Resolution;
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
    /// Its HTTP routes (`HTTPRoute`s), when it has any.
    pub routes: Option<RouteTable>,
    /// Labels of failures before an endpoint is chosen (`target_addr`
    /// is the destination as addressed).
    pub labels: TargetLabels,
    /// The registry revision this state is from.
    pub revision: u64,
}

impl Dst {
    /// The error of a failed pick, naming the service.
    pub fn pick_error(&self, e: PickError) -> Error {
        match e {
            PickError::NoEndpoints => Error::NoEndpoints(self.name.clone()),
            PickError::AllEjected => Error::AllEjected(self.name.clone()),
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
            routes: RouteTable::new(&res.routes, res.port),
            labels,
            revision,
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
