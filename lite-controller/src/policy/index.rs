//! Which stored policy resources take effect, and why not: an
//! `AuthorizationPolicy` naming a missing Server or authentication, or an
//! `HTTPLocalRateLimitPolicy` naming a missing Server or a Server another
//! one already limits, or a route naming a missing Server parent, is *not
//! applied*, its reason given (what `pimesh
//! policy ls` shows; Linkerd reports the same in the resource's status:
//! `NoMatchingTarget`, `RateLimitReasonAlreadyExists`); a `Server` that a
//! conflict with an older one keeps from every pod is not applied either
//! (`Conflict`, the rule in `conflict.rs`). No I/O.

use super::authz::AuthorizationPolicySpec;
use super::parents::missing_server_parent;
use super::ratelimit::HTTPLocalRateLimitPolicySpec;
use super::refs::{GATEWAY_GROUP, GROUP};
use super::resource::Resource;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// One resource and whether it takes effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyStatus {
    /// Its kind (`Server`, `AuthorizationPolicy`, …).
    pub kind: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Whether everything it names exists.
    pub applied: bool,
    /// Why it is not applied (the first missing reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The statuses of `all`, in their order.
pub fn statuses(all: &[Resource]) -> Vec<PolicyStatus> {
    let present: BTreeSet<(&str, &str, &str)> = all
        .iter()
        .map(|r| (r.kind(), r.namespace().unwrap_or_default(), r.name()))
        .collect();
    all.iter()
        .map(|r| {
            let ns = r.namespace().unwrap_or_default();
            let reason = match r {
                Resource::AuthorizationPolicy(a) => missing_in_authorization(&a.spec, ns, &present),
                Resource::HTTPLocalRateLimitPolicy(l) => {
                    let name = l.spec.target_ref.name.as_str();
                    let winner = rate_limit_of(all, ns, name).map(|(w, _)| w);
                    if !present.contains(&("Server", ns, name)) {
                        Some(format!("Server {ns}/{name} not found"))
                    } else {
                        winner.filter(|w| *w != r.name()).map(|w| {
                            format!(
                                "RateLimitReasonAlreadyExists: Server {ns}/{name} is limited by \
                                 {w}, older (one HTTPLocalRateLimitPolicy per Server)"
                            )
                        })
                    }
                }
                Resource::Server(s) => super::conflict::superseded(all, s),
                Resource::HTTPRoute(_) | Resource::GRPCRoute(_) => {
                    missing_server_parent(r, &present)
                }
                _ => None,
            };
            PolicyStatus {
                kind: r.kind().to_string(),
                namespace: ns.to_string(),
                name: r.name().to_string(),
                applied: reason.is_none(),
                reason,
            }
        })
        .collect()
}

/// The first thing `a` (in `ns`) names that is not in `present`
/// (`(kind, namespace, name)`), said as `pimesh policy ls` says it.
pub(super) fn missing_in_authorization(
    a: &AuthorizationPolicySpec,
    ns: &str,
    present: &BTreeSet<(&str, &str, &str)>,
) -> Option<String> {
    let t = &a.target_ref;
    match (t.kind.as_str(), t.group.as_deref().unwrap_or_default()) {
        ("Server", GROUP) if !present.contains(&("Server", ns, t.name.as_str())) => {
            return Some(format!("Server {ns}/{} not found", t.name));
        }
        ("HTTPRoute" | "GRPCRoute", GATEWAY_GROUP)
            if !present.contains(&(t.kind.as_str(), ns, t.name.as_str())) =>
        {
            return Some(format!("{} {ns}/{} not found", t.kind, t.name));
        }
        _ => {}
    }
    for r in &a.required_authentication_refs {
        if r.kind == "ServiceAccount" {
            continue;
        }
        let rns = r.namespace.as_deref().unwrap_or(ns);
        if !present.contains(&(r.kind.as_str(), rns, r.name.as_str())) {
            return Some(format!("{} {rns}/{} not found", r.kind, r.name));
        }
    }
    None
}

/// The `HTTPLocalRateLimitPolicy` of Server `server` in `ns` (its name and
/// spec): of those targeting it, the oldest by `creationTimestamp` (those
/// without one last), then by name, as Linkerd's policy controller accepts
/// one per Server and marks the others `RateLimitReasonAlreadyExists`.
pub(super) fn rate_limit_of<'a>(
    all: &'a [Resource],
    ns: &str,
    server: &str,
) -> Option<(&'a str, &'a HTTPLocalRateLimitPolicySpec)> {
    all.iter()
        .filter_map(|r| match r {
            Resource::HTTPLocalRateLimitPolicy(l)
                if r.namespace() == Some(ns)
                    && l.spec.target_ref.kind == "Server"
                    && l.spec.target_ref.name == server =>
            {
                let created = l.metadata.creation_timestamp.as_ref().map(|t| t.0);
                Some(((created.is_none(), created, r.name()), &l.spec))
            }
            _ => None,
        })
        .min_by(|a, b| a.0.cmp(&b.0))
        .map(|((_, _, name), spec)| (name, spec))
}
