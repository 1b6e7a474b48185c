//! The routes of one Server (per-route policy, as Linkerd's policy
//! controller attaches `HTTPRoute`s with a `policy.linkerd.io` Server
//! parent to its `InboundServer`): the `HTTPRoute`s and `GRPCRoute`s of
//! the Server's namespace with a parentRef to it (group
//! `policy.pimesh.io`, kind `Server`), oldest first (`creationTimestamp`,
//! then name), each with its matches (read as the outbound side reads
//! them, `policy::outbound`) and the applied AuthorizationPolicies that
//! target it. Backends, timeouts and retries are not used inbound (as
//! Linkerd). No I/O.

use super::super::outbound::{resolve, resolve_grpc};
use super::super::parents::server_parent;
use super::super::refs::{TargetRef, GATEWAY_GROUP};
use super::super::resource::Resource;
use super::{authorizations, Present};
use pimesh_api::discovery::route::RouteMatch;
use pimesh_api::policy::inbound::{InboundRoute, RouteKind};

/// The routes of Server `server` in `ns`, from `all`.
pub(super) fn routes_of(
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
