//! The inbound policy of one proxy, computed from the stored resources
//! (as Linkerd's policy controller computes an `InboundServer` per pod
//! port): the `Server`s of the proxy's namespace whose `podSelector`
//! matches its pod labels, per port, the oldest winning a conflict (by
//! `metadata.creationTimestamp`, then name, as Linkerd); each with the
//! applied `AuthorizationPolicy`s that target it or its Namespace,
//! resolved to identity patterns and networks, and its applied
//! `HTTPLocalRateLimitPolicy` (the oldest, as Linkerd), overrides resolved
//! to identities, and its routes (`routes`: `HTTPRoute`s and `GRPCRoute`s
//! with the Server as parent, each with the policies targeting it). No I/O.
//!
//! Ports are matched by number: a Server naming its port (`port: http`)
//! is resolved beforehand against the proxy's container ports
//! (`ports.rs`); one its pod does not name selects nothing.

use super::authn::{MeshTLSAuthenticationSpec, NetworkAuthenticationSpec};
use super::index::{missing_in_authorization, rate_limit_of};
use super::outbound::{resolve, resolve_grpc};
use super::parents::server_parent;
use super::refs::{TargetRef, GATEWAY_GROUP, GROUP};
use super::resource::Resource;
use super::server::{Port, ProxyProtocol, Server};
use pimesh_api::discovery::route::RouteMatch;
use pimesh_api::policy::inbound::{
    Authentication, Authorization, InboundPolicy, InboundRoute, InboundServer, NetworkMatch,
    Protocol, RateLimit, RateLimitOverride, RouteKind, ServerKind,
};
use pimesh_api::policy::Cidr;
use std::collections::{BTreeMap, BTreeSet};

/// Who the policy is for: a proxy's namespace (its identity's) and its
/// pod labels (`PIMESH_PROXY_POD_LABELS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload<'a> {
    /// The namespace of the proxy's identity.
    pub namespace: &'a str,
    /// The labels `podSelector`s match.
    pub labels: &'a BTreeMap<String, String>,
}

/// The inbound policy of `workload` from `all` (the stored resources),
/// identities named in `trust_domain`.
pub fn inbound_policy(
    all: &[Resource],
    workload: &Workload<'_>,
    trust_domain: &str,
) -> InboundPolicy {
    let ns = workload.namespace;
    let mut servers: Vec<&Server> = all
        .iter()
        .filter_map(|r| match r {
            Resource::Server(s) if r.namespace() == Some(ns) => Some(s),
            _ => None,
        })
        .filter(|s| s.spec.pod_selector.matches(workload.labels))
        .collect();
    // Oldest first: it wins its port.
    servers.sort_by(|a, b| {
        let age = |s: &Server| s.metadata.creation_timestamp.as_ref().map(|t| t.0);
        (age(a), &a.metadata.name).cmp(&(age(b), &b.metadata.name))
    });
    let present = present(all);
    let mut out = InboundPolicy::default();
    for s in servers {
        let Port::Number(n) = s.spec.port else {
            continue;
        };
        let Ok(port) = u16::try_from(n) else { continue };
        let name = s.metadata.name.clone().unwrap_or_default();
        if let Some(winner) = out.servers.get(&port) {
            tracing::info!(
                namespace = ns,
                port,
                server = name,
                winner = winner.name,
                "conflicting Servers on one port: the oldest wins"
            );
            continue;
        }
        let targets = |t: &TargetRef| targets_server(t, ns, &name);
        let authorizations = authorizations(all, ns, &present, trust_domain, targets);
        let rate_limit = rate_limit(all, ns, &name, trust_domain);
        let routes = routes_of(all, ns, &name, &present, trust_domain);
        out.servers.insert(
            port,
            InboundServer {
                name,
                kind: ServerKind::Server,
                protocol: protocol(s.spec.proxy_protocol),
                authorizations,
                access_policy: s.spec.access_policy.into(),
                rate_limit,
                routes,
            },
        );
    }
    out
}

/// The stored resources by `(kind, namespace, name)`.
type Present<'a> = BTreeSet<(&'a str, &'a str, &'a str)>;

fn present(all: &[Resource]) -> Present<'_> {
    all.iter()
        .map(|r| (r.kind(), r.namespace().unwrap_or_default(), r.name()))
        .collect()
}

fn protocol(p: ProxyProtocol) -> Protocol {
    match p {
        ProxyProtocol::Unknown => Protocol::Unknown,
        ProxyProtocol::Http1 => Protocol::Http1,
        ProxyProtocol::Http2 => Protocol::Http2,
        ProxyProtocol::Grpc => Protocol::Grpc,
        ProxyProtocol::Opaque => Protocol::Opaque,
        ProxyProtocol::Tls => Protocol::Tls,
    }
}

/// The applied AuthorizationPolicies of `ns` whose target `targets`
/// accepts (a Server and its Namespace, or a route), by name, resolved.
fn authorizations(
    all: &[Resource],
    ns: &str,
    present: &Present<'_>,
    trust_domain: &str,
    targets: impl Fn(&TargetRef) -> bool,
) -> Vec<Authorization> {
    let mut out: Vec<Authorization> = all
        .iter()
        .filter_map(|r| match r {
            Resource::AuthorizationPolicy(a) if r.namespace() == Some(ns) => {
                Some((r.name(), &a.spec))
            }
            _ => None,
        })
        .filter(|(_, a)| targets(&a.target_ref))
        .filter(|(_, a)| missing_in_authorization(a, ns, present).is_none())
        .filter_map(|(name, a)| {
            let authentications = a
                .required_authentication_refs
                .iter()
                .map(|r| {
                    let rns = r.namespace.as_deref().unwrap_or(ns);
                    authentication(all, &r.kind, rns, &r.name, trust_domain)
                })
                .collect::<Option<Vec<_>>>()?;
            Some(Authorization {
                name: name.to_string(),
                authentications,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The routes of a Server (per-route policy, as Linkerd's policy
/// controller attaches `HTTPRoute`s with a Server parent to its
/// `InboundServer`): the `HTTPRoute`s and `GRPCRoute`s of its namespace
/// with a parentRef to it (`parents.rs`), oldest first
/// (`creationTimestamp`, then name), each with its matches (read as the
/// outbound side reads them, `outbound.rs`) and the applied
/// AuthorizationPolicies targeting it. Backends, timeouts and retries are
/// not used inbound (as Linkerd).
fn routes_of(
    all: &[Resource],
    ns: &str,
    server: &str,
    present: &Present<'_>,
    trust_domain: &str,
) -> Vec<InboundRoute> {
    let mut routes: Vec<_> = all
        .iter()
        .filter(|r| r.namespace() == Some(ns))
        .filter_map(|r| {
            let (kind, created, parents, route) = match r {
                Resource::HTTPRoute(h) => (
                    RouteKind::Http,
                    &h.metadata.creation_timestamp,
                    h.spec.parent_refs.as_deref(),
                    resolve(h),
                ),
                Resource::GRPCRoute(g) => (
                    RouteKind::Grpc,
                    &g.metadata.creation_timestamp,
                    g.spec.parent_refs.as_deref(),
                    resolve_grpc(g),
                ),
                _ => return None,
            };
            let attached = parents.unwrap_or_default().iter().any(|p| {
                server_parent(p).is_some_and(|(pns, n)| pns.unwrap_or(ns) == ns && n == server)
            });
            if !attached {
                return None;
            }
            let name = r.name();
            // Every rule's matches; a rule without any matches every request.
            let matches: Vec<RouteMatch> = route
                .rules
                .into_iter()
                .flat_map(|rule| match rule.matches.is_empty() {
                    true => vec![RouteMatch::default()],
                    false => rule.matches,
                })
                .collect();
            let targets = |t: &TargetRef| {
                t.kind == kind.as_str()
                    && t.group.as_deref() == Some(GATEWAY_GROUP)
                    && t.name == name
            };
            let route = InboundRoute {
                name: name.to_string(),
                kind,
                matches,
                authorizations: authorizations(all, ns, present, trust_domain, targets),
            };
            Some(((created.as_ref().map(|t| t.0), name), route))
        })
        .collect();
    // Oldest first, then by name.
    routes.sort_by(|a, b| a.0.cmp(&b.0));
    routes.into_iter().map(|(_, r)| r).collect()
}

/// Whether `t` is Server `server` or the Namespace `ns` (a policy there
/// applies to every route of the Server too).
fn targets_server(t: &TargetRef, ns: &str, server: &str) -> bool {
    let group = t.group.as_deref().unwrap_or_default();
    match t.kind.as_str() {
        "Server" => group == GROUP && t.name == server,
        "Namespace" => group.is_empty() && t.name == ns,
        _ => false,
    }
}

/// One required authentication, resolved; `None` when it cannot be (then
/// the authorization admits nobody, so it is left out).
fn authentication(
    all: &[Resource],
    kind: &str,
    ns: &str,
    name: &str,
    trust_domain: &str,
) -> Option<Authentication> {
    let find = |k: &str| {
        all.iter()
            .find(|r| r.kind() == k && r.namespace() == Some(ns) && r.name() == name)
    };
    match (kind, find(kind)) {
        ("ServiceAccount", _) => Some(Authentication::MeshTls {
            identities: vec![service_account(name, ns, trust_domain)],
        }),
        ("MeshTLSAuthentication", Some(Resource::MeshTLSAuthentication(m))) => {
            Some(mesh_tls(&m.spec, ns, trust_domain))
        }
        ("NetworkAuthentication", Some(Resource::NetworkAuthentication(n))) => network(&n.spec),
        _ => None,
    }
}

/// The applied rate limit of Server `server` in `ns`, its overrides'
/// `clientRefs` (ServiceAccounts; an empty or absent namespace is the
/// policy's) resolved to identities; rates above `u32::MAX` (the wire's
/// and Linkerd's `uint32`) clamped.
fn rate_limit(all: &[Resource], ns: &str, server: &str, trust_domain: &str) -> Option<RateLimit> {
    let (name, spec) = rate_limit_of(all, ns, server)?;
    let rps = |r: i64| u32::try_from(r.max(0)).unwrap_or(u32::MAX);
    let overrides = spec.overrides.iter().flatten().map(|o| RateLimitOverride {
        requests_per_second: rps(o.requests_per_second),
        identities: o
            .client_refs
            .iter()
            .map(|c| {
                let cns = c.namespace.as_deref().filter(|n| !n.is_empty());
                service_account(&c.name, cns.unwrap_or(ns), trust_domain)
            })
            .collect(),
    });
    Some(RateLimit {
        name: name.to_string(),
        total: spec.total.map(|l| rps(l.requests_per_second)),
        identity: spec.identity.map(|l| rps(l.requests_per_second)),
        overrides: overrides.collect(),
    })
}

/// The DNS-style identity of ServiceAccount `sa` in `ns` (see
/// `pimesh_api::identity::Identity::dns_name`).
fn service_account(sa: &str, ns: &str, trust_domain: &str) -> String {
    format!("{sa}.{ns}.serviceaccount.identity.pimesh.{trust_domain}")
}

fn mesh_tls(m: &MeshTLSAuthenticationSpec, ns: &str, trust_domain: &str) -> Authentication {
    let mut identities: Vec<String> = m.identities.clone().unwrap_or_default();
    for r in m.identity_refs.iter().flatten() {
        let rns = r.namespace.as_deref().unwrap_or(ns);
        identities.push(match (r.kind.as_str(), r.name.as_deref()) {
            ("ServiceAccount", Some(sa)) => service_account(sa, rns, trust_domain),
            // Every ServiceAccount of the namespace.
            ("ServiceAccount", None) => service_account("*", rns, trust_domain),
            ("Namespace", n) => service_account("*", n.unwrap_or(rns), trust_domain),
            _ => continue,
        });
    }
    Authentication::MeshTls { identities }
}

fn network(n: &NetworkAuthenticationSpec) -> Option<Authentication> {
    let networks = n
        .networks
        .iter()
        .map(|n| {
            Some(NetworkMatch {
                cidr: n.cidr.parse::<Cidr>().ok()?,
                except: n
                    .except
                    .iter()
                    .flatten()
                    .map(|e| e.parse().ok())
                    .collect::<Option<Vec<Cidr>>>()?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Authentication::Network { networks })
}

#[cfg(test)]
mod tests;
