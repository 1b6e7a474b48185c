//! A policy resource's Kubernetes `status`, from its [`PolicyStatus`] (as
//! Linkerd's policy controller writes its resources' statuses, linkerd2
//! `policy-controller/k8s/status`): one `Accepted` condition (Kubernetes'
//! `metav1.Condition`), `True` with reason `Accepted`, or `False` with the
//! reason `index` gave (`NoMatchingTarget`, `RateLimitReasonAlreadyExists`,
//! `Conflict`, …) and its text as the message. `lastTransitionTime` is kept
//! while the condition's `status` stays; [`desired`] says `None` when the
//! object already has what it should (no write).
//!
//! Gateway API's routes get upstream's `status.parents[]` instead: for
//! each parentRef that is pimesh's (a Service, or a policy.pimesh.io
//! Server), an entry with `controllerName` [`CONTROLLER_NAME`] and the
//! conditions `Accepted` (`NoMatchingParent` when the parent is not there)
//! and `ResolvedRefs` (`BackendNotFound` when a backend Service is not);
//! other controllers' entries are kept as they are. No I/O: the writer is
//! `kube/policy/status.rs`.

pub use super::condition::{Condition, RouteStatus, Status};
use super::httproute::validate::core_group;
use super::httproute::ParentReference;
use super::index::PolicyStatus;
use super::outbound::refs;
use super::refs::GROUP;
use super::resource::Resource;
use serde_json::{json, Value};

pub use super::condition::ACCEPTED;
/// The route condition saying whether every backend exists.
pub const RESOLVED_REFS: &str = "ResolvedRefs";
/// The `controllerName` of pimesh's route parent statuses (Gateway API's
/// `GatewayController`; Linkerd's is `linkerd.io/policy-controller`).
pub const CONTROLLER_NAME: &str = "pimesh.io/policy-controller";

/// The `metadata.generation` and current `status` of `r`; `None` for the
/// kinds without a [`Status`] (the Gateway API routes).
pub fn current(r: &Resource) -> Option<(Option<i64>, Option<&Status>)> {
    Some(match r {
        Resource::Server(x) => (x.metadata.generation, x.status.as_ref()),
        Resource::AuthorizationPolicy(x) => (x.metadata.generation, x.status.as_ref()),
        Resource::MeshTLSAuthentication(x) => (x.metadata.generation, x.status.as_ref()),
        Resource::NetworkAuthentication(x) => (x.metadata.generation, x.status.as_ref()),
        Resource::HTTPLocalRateLimitPolicy(x) => (x.metadata.generation, x.status.as_ref()),
        Resource::HTTPRoute(_) | Resource::GRPCRoute(_) => return None,
    })
}

/// The status `r` should have, `st` being what `index::statuses` says of
/// it and `now` the time (RFC 3339) a changed condition is stamped with;
/// `None` when `r` already has it, or is a kind without a [`Status`].
pub fn desired(r: &Resource, st: &PolicyStatus, now: &str) -> Option<Status> {
    let (generation, current) = current(r)?;
    let outcome = match &st.reason {
        None => Ok(()),
        Some(text) => Err(reason_of(r, text)),
    };
    let before = current.map_or(&[][..], |s| &s.conditions[..]);
    let want = Status {
        conditions: vec![condition(ACCEPTED, outcome, generation, before, now)],
    };
    (current != Some(&want)).then_some(want)
}

/// Condition `type_`: `True` (reason `type_`, no message) on `Ok`, else
/// `False` with the reason and message; `lastTransitionTime` that of the
/// same condition in `before` when its `status` is the same, else `now`.
fn condition(
    type_: &str,
    outcome: Result<(), (String, String)>,
    generation: Option<i64>,
    before: &[Condition],
    now: &str,
) -> Condition {
    let (status, reason, message) = match outcome {
        Ok(()) => ("True", type_.to_string(), String::new()),
        Err((reason, message)) => ("False", reason, message),
    };
    let last_transition_time = match before.iter().find(|c| c.type_ == type_) {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => now.to_string(),
    };
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason,
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// The status route `r` (an `HTTPRoute` or a `GRPCRoute` of `all`) should
/// have: its other controllers' parent entries as they are, then one of
/// pimesh's per parentRef that is a Service (`known(ns, name, port)` says
/// whether the registry has it, `None`: any port) or a Server of `all`.
/// `None` when `r` already has it, or is another kind.
pub fn desired_route(
    r: &Resource,
    all: &[Resource],
    known: &dyn Fn(&str, &str, Option<u16>) -> bool,
    now: &str,
) -> Option<RouteStatus> {
    let (generation, current) = match r {
        Resource::HTTPRoute(h) => (h.metadata.generation, h.status.as_ref()),
        Resource::GRPCRoute(g) => (g.metadata.generation, g.status.as_ref()),
        _ => return None,
    };
    let (parents, backends) = refs(r)?;
    let ns = r.namespace().unwrap_or_default();
    let port = |p: Option<i32>| p.and_then(|p| u16::try_from(p).ok());
    let before = current.map_or(&[][..], |s| &s.parents[..]);
    let ours = |e: &Value| e["controllerName"] == CONTROLLER_NAME;
    let mut want: Vec<Value> = before.iter().filter(|e| !ours(e)).cloned().collect();
    let resolved = match backends.iter().find(|b| {
        let bns = b.namespace.as_deref().unwrap_or(ns);
        !known(bns, &b.name, port(b.port))
    }) {
        None => Ok(()),
        Some(b) => Err((
            "BackendNotFound".to_string(),
            format!(
                "backend Service {}/{} not registered",
                b.namespace.as_deref().unwrap_or(ns),
                b.name
            ),
        )),
    };
    for p in parents {
        let Some(accepted) = parent_accepted(p, ns, all, known) else {
            continue;
        };
        let parent_ref = serde_json::to_value(p).unwrap_or_default();
        let old: Vec<Condition> = before
            .iter()
            .find(|e| ours(e) && e["parentRef"] == parent_ref)
            .and_then(|e| serde_json::from_value(e["conditions"].clone()).ok())
            .unwrap_or_default();
        let conditions = [
            condition(ACCEPTED, accepted, generation, &old, now),
            condition(RESOLVED_REFS, resolved.clone(), generation, &old, now),
        ];
        want.push(json!({
            "parentRef": parent_ref,
            "controllerName": CONTROLLER_NAME,
            "conditions": conditions,
        }));
    }
    let want = RouteStatus { parents: want };
    let unchanged = match current {
        Some(c) => *c == want,
        None => want.parents.is_empty(),
    };
    (!unchanged).then_some(want)
}

/// Whether parent `p` of a route in `ns` is there: `None` when it is not
/// pimesh's (another kind, e.g. a Gateway), else `Err` with
/// `NoMatchingParent` and why.
fn parent_accepted(
    p: &ParentReference,
    ns: &str,
    all: &[Resource],
    known: &dyn Fn(&str, &str, Option<u16>) -> bool,
) -> Option<Result<(), (String, String)>> {
    let pns = p.namespace.as_deref().unwrap_or(ns);
    let port = p.port.and_then(|p| u16::try_from(p).ok());
    let group = p.group.as_deref();
    let missing = match p.kind.as_deref() {
        Some("Service") if core_group(group) => (!known(pns, &p.name, port)).then(|| match port {
            Some(n) => format!("parent Service {pns}/{} port {n} not registered", p.name),
            None => format!("parent Service {pns}/{} not registered", p.name),
        }),
        Some("Server") if group == Some(GROUP) => {
            let found = all.iter().any(|r| {
                matches!(r, Resource::Server(_)) && r.namespace() == Some(pns) && r.name() == p.name
            });
            (!found).then(|| format!("parent Server {pns}/{} not found", p.name))
        }
        _ => return None,
    };
    Some(match missing {
        None => Ok(()),
        Some(why) => Err(("NoMatchingParent".to_string(), why)),
    })
}

/// The condition's reason and message for `index`'s reason `text`: a
/// leading `Reason: ` names it (`Conflict: …`); a missing target is
/// `NoMatchingTarget` (Linkerd's); another missing reference,
/// `RefNotFound`; anything else, `Invalid`. The message is the whole text
/// (what `pimesh policy ls` shows).
fn reason_of(r: &Resource, text: &str) -> (String, String) {
    if let Some((word, _)) = text.split_once(": ") {
        let camel = word.starts_with(|c: char| c.is_ascii_uppercase())
            && word.chars().all(|c| c.is_ascii_alphanumeric());
        if camel {
            return (word.to_string(), text.to_string());
        }
    }
    let ns = r.namespace().unwrap_or_default();
    let target = match r {
        Resource::AuthorizationPolicy(a) => Some(&a.spec.target_ref),
        Resource::HTTPLocalRateLimitPolicy(l) => Some(&l.spec.target_ref),
        _ => None,
    };
    let reason = if target.is_some_and(|t| text == format!("{} {ns}/{} not found", t.kind, t.name))
    {
        "NoMatchingTarget"
    } else if text.ends_with(" not found") {
        "RefNotFound"
    } else {
        "Invalid"
    };
    (reason.to_string(), text.to_string())
}

#[cfg(test)]
mod tests;
