//! Which stored policy resources take effect, and why not: an
//! `AuthorizationPolicy` naming a missing Server or authentication, or an
//! `HTTPLocalRateLimitPolicy` naming a missing Server, is *not applied*,
//! its reason given (what `pimesh policy ls` shows; Linkerd reports the
//! same in the resource's status). No I/O.

use super::authz::AuthorizationPolicySpec;
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
                    (!present.contains(&("Server", ns, name)))
                        .then(|| format!("Server {ns}/{name} not found"))
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
        ("HTTPRoute", GATEWAY_GROUP) => {
            return Some(format!(
                "HTTPRoute {ns}/{}: routes are not supported yet",
                t.name
            ));
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
