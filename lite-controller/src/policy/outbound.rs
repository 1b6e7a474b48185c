//! The outbound routes of one Service, for its discovery watch (as
//! Linkerd's policy controller serves a Service's `OutboundPolicy`): the
//! `HTTPRoute`s with a parentRef to it (and its port, when the parentRef
//! names one), oldest first (`creationTimestamp`, then `NAMESPACE/NAME`,
//! Gateway API's tie-break), resolved to `pimesh_api::discovery::route`.
//! And why a route is not applied when its parent or a backend is not a
//! registered Service (`pimesh policy ls`). No I/O.

use super::grpcroute::GRPCRoute;
use super::httproute::validate::{core_group, gateway_duration, retry};
use super::httproute::{HTTPBackendRef, HTTPRoute, ParentReference, PathMatchType};
use super::index::PolicyStatus;
use super::parents::server_parent;
use super::resource::Resource;
use pimesh_api::discovery::route::{
    Backend, HttpRoute, NameValue, PathMatch, RouteMatch, RouteRule,
};

/// The routes of Service `name` in `ns`, port `port`, from `all`
/// (`HTTPRoute`s and `GRPCRoute`s alike).
pub fn routes_for(all: &[Resource], ns: &str, name: &str, port: u16) -> Vec<HttpRoute> {
    let mut routes: Vec<_> = all
        .iter()
        .filter_map(|r| {
            let (parents, _) = refs(r)?;
            if !attaches(r, parents, ns, name, port) {
                return None;
            }
            let (created, route) = match r {
                Resource::HTTPRoute(h) => (&h.metadata.creation_timestamp, resolve(h)),
                Resource::GRPCRoute(g) => (&g.metadata.creation_timestamp, resolve_grpc(g)),
                _ => return None,
            };
            Some(((created.as_ref().map(|t| t.0), route.name.clone()), route))
        })
        .collect();
    // Oldest first, then by `NAMESPACE/NAME`.
    routes.sort_by(|a, b| a.0.cmp(&b.0));
    routes.into_iter().map(|(_, r)| r).collect()
}

/// A route's parentRefs and backendRefs; `None` for other kinds.
pub(super) fn refs(r: &Resource) -> Option<(&[ParentReference], Vec<&HTTPBackendRef>)> {
    let (parents, backends) = match r {
        Resource::HTTPRoute(h) => (
            h.spec.parent_refs.as_deref(),
            h.spec
                .rules
                .iter()
                .flatten()
                .flat_map(|rule| rule.backend_refs.iter().flatten())
                .collect(),
        ),
        Resource::GRPCRoute(g) => (
            g.spec.parent_refs.as_deref(),
            g.spec
                .rules
                .iter()
                .flatten()
                .flat_map(|rule| rule.backend_refs.iter().flatten())
                .collect(),
        ),
        _ => return None,
    };
    Some((parents.unwrap_or_default(), backends))
}

/// Whether route `r` has a parentRef to Service `ns/name` on `port`.
fn attaches(r: &Resource, parents: &[ParentReference], ns: &str, name: &str, port: u16) -> bool {
    let own = r.namespace().unwrap_or_default();
    parents.iter().any(|p| {
        p.kind.as_deref() == Some("Service")
            && core_group(p.group.as_deref())
            && p.name == name
            && p.namespace.as_deref().unwrap_or(own) == ns
            && p.port.is_none_or(|p| p == i32::from(port))
    })
}

/// The wire form of a `GRPCRoute`: its matches on the request path.
pub(super) fn resolve_grpc(g: &GRPCRoute) -> HttpRoute {
    let ns = g.metadata.namespace.as_deref().unwrap_or_default();
    let retry = retry(g.metadata.annotations.as_ref()).ok().flatten();
    let rules: Vec<RouteRule> = g
        .spec
        .rules
        .iter()
        .flatten()
        .map(|rule| RouteRule {
            matches: rule.matches.iter().flatten().map(|m| m.to_http()).collect(),
            backends: backends(rule.backend_refs.as_deref(), ns),
            retry: retry.clone(),
            ..Default::default()
        })
        .collect();
    named(ns, g.metadata.name.as_deref(), rules)
}

/// A route named `ns/name` with `rules`, or one rule sending everything
/// to the parent when there are none (Gateway API).
fn named(ns: &str, name: Option<&str>, rules: Vec<RouteRule>) -> HttpRoute {
    HttpRoute {
        name: format!("{ns}/{}", name.unwrap_or_default()),
        rules: if rules.is_empty() {
            vec![RouteRule::default()]
        } else {
            rules
        },
    }
}

/// The backends of a rule in namespace `ns`.
fn backends(refs: Option<&[HTTPBackendRef]>, ns: &str) -> Vec<Backend> {
    refs.unwrap_or_default()
        .iter()
        .map(|b| Backend {
            service: format!("{}.{}", b.name, b.namespace.as_deref().unwrap_or(ns)),
            port: b.port.and_then(|p| u16::try_from(p).ok()),
            weight: b.weight.map_or(1, |w| w.max(0) as u32),
        })
        .collect()
}

/// The wire form of a validated route (values `validate` refused cannot
/// occur; were they to, they are dropped rather than panicking).
pub(super) fn resolve(h: &HTTPRoute) -> HttpRoute {
    let ns = h.metadata.namespace.as_deref().unwrap_or_default();
    let retry = retry(h.metadata.annotations.as_ref()).ok().flatten();
    let ms = |v: Option<&str>| {
        v.and_then(|v| gateway_duration(v).ok())
            .filter(|d| !d.is_zero())
            .map(|d| d.as_millis() as u64)
    };
    let rules = h
        .spec
        .rules
        .iter()
        .flatten()
        .map(|rule| {
            let t = rule.timeouts.clone().unwrap_or_default();
            RouteRule {
                matches: rule
                    .matches
                    .iter()
                    .flatten()
                    .map(|m| RouteMatch {
                        path: m.path.as_ref().map(|p| {
                            let v = p.value.clone().unwrap_or_else(|| "/".into());
                            match p.kind {
                                Some(PathMatchType::Exact) => PathMatch::Exact(v),
                                _ => PathMatch::PathPrefix(v),
                            }
                        }),
                        headers: pairs(m.headers.as_deref()),
                        query_params: pairs(m.query_params.as_deref()),
                        method: m.method.clone(),
                    })
                    .collect(),
                backends: backends(rule.backend_refs.as_deref(), ns),
                timeout_ms: ms(t.request.as_deref()),
                backend_timeout_ms: ms(t.backend_request.as_deref()),
                retry: retry.clone(),
            }
        })
        .collect::<Vec<_>>();
    named(ns, h.metadata.name.as_deref(), rules)
}

fn pairs(v: Option<&[super::httproute::HTTPValueMatch]>) -> Vec<NameValue> {
    v.unwrap_or_default()
        .iter()
        .map(|c| NameValue {
            name: c.name.clone(),
            value: c.value.clone(),
        })
        .collect()
}

/// Marks the applied `HTTPRoute`s and `GRPCRoute`s of `list` not applied when a parent or
/// backend is not a registered Service with that port: `known(ns, name,
/// port)` says whether it is (`None`: any port).
pub fn mark_unregistered(
    list: &mut [PolicyStatus],
    all: &[Resource],
    known: impl Fn(&str, &str, Option<u16>) -> bool,
) {
    for r in all {
        let Some((parents, backend_refs)) = refs(r) else {
            continue;
        };
        let ns = r.namespace().unwrap_or_default();
        let port = |p: Option<i32>| p.and_then(|p| u16::try_from(p).ok());
        // Server parents are inbound (`parents`), whose backends are not
        // used (as Linkerd): only Service parents need registered Services.
        let parents: Vec<_> = parents
            .iter()
            .filter(|p| server_parent(p).is_none())
            .collect();
        if parents.is_empty() {
            continue;
        }
        let parents = parents.into_iter().map(|p| {
            let pns = p.namespace.as_deref().unwrap_or(ns);
            (pns, p.name.as_str(), port(p.port), "parent")
        });
        let backends = backend_refs.into_iter().map(|b| {
            let bns = b.namespace.as_deref().unwrap_or(ns);
            (bns, b.name.as_str(), port(b.port), "backend")
        });
        let missing = parents
            .chain(backends)
            .find(|(sns, name, p, _)| !known(sns, name, *p));
        let Some((sns, name, p, role)) = missing else {
            continue;
        };
        let status = list
            .iter_mut()
            .find(|s| s.kind == r.kind() && s.namespace == ns && s.name == r.name());
        if let Some(s) = status.filter(|s| s.applied) {
            s.applied = false;
            s.reason = Some(match p {
                Some(p) => format!("{role} Service {sns}/{name} port {p} not registered"),
                None => format!("{role} Service {sns}/{name} not registered"),
            });
        }
    }
}

#[cfg(test)]
mod tests;
