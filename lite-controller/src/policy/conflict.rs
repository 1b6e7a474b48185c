//! Conflicting `Server`s, decided without knowing the pods (so alike in
//! standalone and Kubernetes mode): as Linkerd's policy controller, the
//! oldest Server on a pod's port wins and the others do not take effect
//! there; Linkerd's admission webhook refuses the certain case (an
//! identical `podSelector` and `port`), which pimesh reports instead. No I/O.
//!
//! The rule: a Server *conflicts* with an older one (by
//! `metadata.creationTimestamp`, those without one last, then by name,
//! as `inbound.rs` picks the winner) when both are in the same namespace,
//! name the same port (the same number, or the same name) and the older
//! one's `podSelector` selects every pod the younger one selects: each of
//! its `matchLabels` pairs and `matchExpressions` is also the younger's
//! (an identical selector, or an empty one, which selects every pod).
//! Then the younger Server takes effect on no pod at all, and is reported
//! not applied, naming the older one. Selectors that merely overlap
//! (`app: api` and `tier: back`), or a port number and a port name that
//! resolve to the same container port, depend on the pods' labels and
//! ports: the younger Server still takes effect on the other pods, so it
//! is not reported (the proxies' streams resolve those per pod, and the
//! controller logs each conflict it meets there).

use super::refs::LabelSelector;
use super::resource::Resource;
use super::server::Server;

/// Why `server` does not take effect anywhere: the older Server of `all`
/// that selects all of its pods on the same port, said as `pimesh policy
/// ls` says it (`Conflict: …`, the reason [`super::status`] writes on
/// Kubernetes); `None` when no such Server exists.
pub fn superseded(all: &[Resource], server: &Server) -> Option<String> {
    let ns = server.metadata.namespace.as_deref().unwrap_or_default();
    let older = all
        .iter()
        .filter_map(|r| match r {
            Resource::Server(s) if r.namespace() == Some(ns) => Some(s),
            _ => None,
        })
        .filter(|s| age(s) < age(server))
        .filter(|s| s.spec.port == server.spec.port)
        .filter(|s| covers(&s.spec.pod_selector, &server.spec.pod_selector))
        .min_by(|a, b| age(a).cmp(&age(b)))?;
    Some(format!(
        "Conflict: port {} of every pod it selects is already Server {ns}/{}'s, older \
         (the oldest Server on a port wins)",
        server.spec.port,
        older.metadata.name.as_deref().unwrap_or_default()
    ))
}

/// The order in which Servers win a port: older first, those without a
/// `creationTimestamp` last, then by name.
fn age(s: &Server) -> (bool, Option<k8s_openapi::jiff::Timestamp>, &str) {
    let created = s.metadata.creation_timestamp.as_ref().map(|t| t.0);
    (
        created.is_none(),
        created,
        s.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// Whether `older` selects every pod `younger` selects, as far as the
/// selectors alone say: each of `older`'s requirements is one of
/// `younger`'s.
fn covers(older: &LabelSelector, younger: &LabelSelector) -> bool {
    let labels = older.match_labels.iter().flatten().all(|(k, v)| {
        younger
            .match_labels
            .as_ref()
            .is_some_and(|y| y.get(k) == Some(v))
    });
    let expressions = older
        .match_expressions
        .iter()
        .flatten()
        .all(|e| younger.match_expressions.iter().flatten().any(|y| y == e));
    labels && expressions
}

#[cfg(test)]
mod tests;
