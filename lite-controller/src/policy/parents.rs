//! A route's parentRefs to `Server`s (`group: policy.pimesh.io`, `kind:
//! Server`, Linkerd's `policy.linkerd.io` Server parent): inbound routes,
//! per-route policy, where Service parents are outbound routes. A leaf
//! of `policy`: no I/O.

use super::httproute::ParentReference;
use super::refs::GROUP;
use super::resource::Resource;
use std::collections::BTreeSet;

/// A parentRef's Server: its namespace, if given, and name; `None` when
/// the parent is not a `Server` of `policy.pimesh.io`.
pub fn server_parent(p: &ParentReference) -> Option<(Option<&str>, &str)> {
    (p.kind.as_deref() == Some("Server") && p.group.as_deref() == Some(GROUP))
        .then_some((p.namespace.as_deref(), p.name.as_str()))
}

/// Why route `r` (an `HTTPRoute` or a `GRPCRoute`) is not applied to a
/// Server parent: the first Server parent missing from `present`
/// (`Server shop/api-http not found`, as an AuthorizationPolicy's).
pub fn missing_server_parent(
    r: &Resource,
    present: &BTreeSet<(&str, &str, &str)>,
) -> Option<String> {
    let parents = match r {
        Resource::HTTPRoute(h) => h.spec.parent_refs.as_deref(),
        Resource::GRPCRoute(g) => g.spec.parent_refs.as_deref(),
        _ => None,
    };
    let ns = r.namespace().unwrap_or_default();
    parents
        .unwrap_or_default()
        .iter()
        .filter_map(server_parent)
        .map(|(pns, name)| (pns.unwrap_or(ns), name))
        .find(|(pns, name)| !present.contains(&("Server", *pns, *name)))
        .map(|(pns, name)| format!("Server {pns}/{name} not found"))
}
