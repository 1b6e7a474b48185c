//! Validation of the policy resources: what `pimesh apply` and the
//! controller's index refuse, each error naming its field
//! (`spec.networks[0].cidr: …`). The CRD schema says what it can (enums,
//! ranges, patterns, CEL rules) so the API server refuses the same; the
//! rest (an `except` outside its `cidr`, a `*` inside an identity, which
//! kinds a reference may name) is here, one function per kind
//! (`resource::validate` picks it). Rules are Linkerd's (its CRDs and
//! its policy controller's admission checks) under pimesh's group.
//! No I/O.

use super::authn::MAX_NETWORKS;
use super::authn::{IdentityRef, MeshTLSAuthenticationSpec, NetworkAuthenticationSpec};
use super::authz::AuthorizationPolicySpec;
use super::ratelimit::HTTPLocalRateLimitPolicySpec;
use super::refs::{
    LabelSelector, ObjectRef, SelectorOperator, TargetRef, GATEWAY_GROUP, GROUP, LINKERD_GROUP,
};
use super::server::{Port, ServerSpec};
use pimesh_api::policy::Cidr;

/// The first thing wrong with a resource: the field's path from the
/// object's root (`spec.port`, `spec.identities[1]`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    /// The field, as `kubectl explain` and the API server name it.
    pub field: String,
    /// What is wrong and what it must be.
    pub reason: String,
}

pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// An RFC 1123 label (namespaces).
pub(crate) fn dns_label(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !v.starts_with('-')
        && !v.ends_with('-')
}

/// An RFC 1123 subdomain (object names).
pub(crate) fn dns_subdomain(v: &str) -> bool {
    v.len() <= 253 && v.split('.').all(dns_label)
}

/// An IANA service name as Kubernetes checks a `containerPort`'s name
/// (`IsValidPortName`): 1–15 of a-z, 0-9 and `-`, a letter somewhere, no
/// `-` at either end nor two together.
fn port_name(v: &str) -> bool {
    (1..=15).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && v.bytes().any(|b| b.is_ascii_lowercase())
        && !v.starts_with('-')
        && !v.ends_with('-')
        && !v.contains("--")
}

pub(crate) fn server(s: &ServerSpec) -> Result<(), Invalid> {
    match &s.port {
        Port::Number(n) if !(1..=65535).contains(n) => {
            return Err(invalid(
                "spec.port",
                format!("{n} is out of range: a port number is 1 to 65535"),
            ));
        }
        Port::Name(n) if !port_name(n) => {
            return Err(invalid(
                "spec.port",
                format!(
                    "{n:?} is not a port name (1 to 15 of a-z, 0-9 and '-', with a letter) \
                     nor a number"
                ),
            ));
        }
        _ => {}
    }
    selector(&s.pod_selector, "spec.podSelector")
}

fn selector(s: &LabelSelector, field: &str) -> Result<(), Invalid> {
    for (i, r) in s.match_expressions.iter().flatten().enumerate() {
        let values = r.values.as_deref().unwrap_or_default();
        let needs_values = matches!(r.operator, SelectorOperator::In | SelectorOperator::NotIn);
        if needs_values && values.is_empty() {
            return Err(invalid(
                format!("{field}.matchExpressions[{i}].values"),
                format!("{:?} needs at least one value", r.operator),
            ));
        }
        if !needs_values && !values.is_empty() {
            return Err(invalid(
                format!("{field}.matchExpressions[{i}].values"),
                format!("{:?} takes no values", r.operator),
            ));
        }
    }
    Ok(())
}

/// Whether a reference's `group` is `want` (`""` for the core group, where
/// a missing group is the same).
fn group_is(group: Option<&str>, want: &str) -> bool {
    group.unwrap_or_default() == want
}

/// The group a reference to `kind` must carry, checked.
fn check_group(group: Option<&str>, want: &str, kind: &str, field: &str) -> Result<(), Invalid> {
    if group_is(group, want) {
        return Ok(());
    }
    let got = group.unwrap_or_default();
    let reason = if got == LINKERD_GROUP {
        format!("{got:?} is Linkerd's group; a {kind} is in {want}")
    } else if want.is_empty() {
        format!("{got:?}: a {kind} is in the core group (leave group out)")
    } else {
        format!("{got:?}: a {kind} is in {want}")
    };
    Err(invalid(format!("{field}.group"), reason))
}

pub(crate) fn authorization(a: &AuthorizationPolicySpec, ns: Option<&str>) -> Result<(), Invalid> {
    let TargetRef { group, kind, name } = &a.target_ref;
    let group = group.as_deref();
    match kind.as_str() {
        "Server" => check_group(group, GROUP, kind, "spec.targetRef")?,
        "HTTPRoute" | "GRPCRoute" => check_group(group, GATEWAY_GROUP, kind, "spec.targetRef")?,
        "Namespace" => {
            check_group(group, "", kind, "spec.targetRef")?;
            if ns.is_some_and(|ns| ns != name) {
                return Err(invalid(
                    "spec.targetRef.name",
                    format!("{name:?}: a policy can only target its own Namespace"),
                ));
            }
        }
        _ => {
            return Err(invalid(
                "spec.targetRef.kind",
                format!(
                    "{kind:?}: the target is a Server, an HTTPRoute, a GRPCRoute or a Namespace"
                ),
            ))
        }
    }
    let (mut mesh_tls, mut service_accounts, mut networks) = (0, 0, 0);
    for (i, r) in a.required_authentication_refs.iter().enumerate() {
        let field = format!("spec.requiredAuthenticationRefs[{i}]");
        let group = r.group.as_deref();
        match r.kind.as_str() {
            "MeshTLSAuthentication" => {
                check_group(group, GROUP, &r.kind, &field)?;
                mesh_tls += 1;
            }
            "NetworkAuthentication" => {
                check_group(group, GROUP, &r.kind, &field)?;
                networks += 1;
            }
            "ServiceAccount" => {
                check_group(group, "", &r.kind, &field)?;
                service_accounts += 1;
            }
            other => {
                return Err(invalid(
                    format!("{field}.kind"),
                    format!(
                        "{other:?}: an authentication is a MeshTLSAuthentication, a \
                         NetworkAuthentication or a ServiceAccount"
                    ),
                ))
            }
        }
        // As Linkerd's admission: one identity requirement, one network one.
        if mesh_tls + service_accounts > 1 {
            return Err(invalid(
                field,
                "at most one MeshTLSAuthentication or ServiceAccount may be required",
            ));
        }
        if networks > 1 {
            return Err(invalid(
                field,
                "at most one NetworkAuthentication may be required",
            ));
        }
    }
    Ok(())
}

/// Why `id` is not a mesh identity pattern, if it is not one: `*`, or DNS
/// labels (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63) of which only the
/// first may be `*` (Linkerd's `identities` rule); at most 253 long.
pub fn identity_pattern(id: &str) -> Result<(), String> {
    if id == "*" {
        return Ok(());
    }
    if id.is_empty() || id.len() > 253 {
        return Err(format!("{id:?} must be 1 to 253 characters"));
    }
    for (i, label) in id.split('.').enumerate() {
        if label == "*" && i == 0 {
            continue;
        }
        if label.contains('*') {
            return Err(format!(
                "{id:?}: '*' may only be the whole first label (*.NS.serviceaccount.identity.pimesh.DOMAIN) \
                 or the whole identity"
            ));
        }
        if !dns_label(label) {
            return Err(format!(
                "{id:?}: {label:?} is not a DNS label (a-z, 0-9, '-', at most 63)"
            ));
        }
    }
    if id.contains(".identity.linkerd.") {
        return Err(format!(
            "{id:?} is a Linkerd identity; pimesh's are \
             SA.NS.serviceaccount.identity.pimesh.TRUST_DOMAIN"
        ));
    }
    Ok(())
}

pub(crate) fn mesh_tls(m: &MeshTLSAuthenticationSpec) -> Result<(), Invalid> {
    match (&m.identities, &m.identity_refs) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "spec.identityRefs",
                "give identities or identityRefs, not both",
            ))
        }
        (None, None) => {
            return Err(invalid(
                "spec.identities",
                "give identities or identityRefs",
            ))
        }
        _ => {}
    }
    for (i, id) in m.identities.iter().flatten().enumerate() {
        identity_pattern(id).map_err(|r| invalid(format!("spec.identities[{i}]"), r))?;
    }
    for (i, r) in m.identity_refs.iter().flatten().enumerate() {
        let field = format!("spec.identityRefs[{i}]");
        let IdentityRef { group, kind, .. } = r;
        if !matches!(kind.as_str(), "ServiceAccount" | "Namespace") {
            return Err(invalid(
                format!("{field}.kind"),
                format!("{kind:?}: an identity is a ServiceAccount's or a Namespace's"),
            ));
        }
        check_group(group.as_deref(), "", kind, &field)?;
    }
    Ok(())
}

pub(crate) fn network(n: &NetworkAuthenticationSpec) -> Result<(), Invalid> {
    if n.networks.is_empty() {
        return Err(invalid(
            "spec.networks",
            "at least one network must be given",
        ));
    }
    if n.networks.len() > MAX_NETWORKS {
        return Err(invalid(
            "spec.networks",
            format!("{} networks: at most {MAX_NETWORKS}", n.networks.len()),
        ));
    }
    for (i, net) in n.networks.iter().enumerate() {
        let field = format!("spec.networks[{i}]");
        let cidr: Cidr = net
            .cidr
            .parse()
            .map_err(|e| invalid(format!("{field}.cidr"), e))?;
        for (j, e) in net.except.iter().flatten().enumerate() {
            let field = format!("{field}.except[{j}]");
            let except: Cidr = e.parse().map_err(|e| invalid(&field, e))?;
            if !cidr.contains(except.addr()) || except.prefix_len() < cidr.prefix_len() {
                return Err(invalid(field, format!("{except} is not inside {cidr}")));
            }
        }
    }
    Ok(())
}

pub(crate) fn rate_limit(l: &HTTPLocalRateLimitPolicySpec) -> Result<(), Invalid> {
    let TargetRef { group, kind, .. } = &l.target_ref;
    if kind != "Server" {
        return Err(invalid(
            "spec.targetRef.kind",
            format!("{kind:?}: a rate limit targets a Server"),
        ));
    }
    check_group(group.as_deref(), GROUP, kind, "spec.targetRef")?;
    let total = l.total.map(|t| t.requests_per_second);
    let rate = |field: &str, rps: i64| -> Result<(), Invalid> {
        if rps < 1 {
            return Err(invalid(
                field,
                format!("{rps}: a rate limit is at least 1 request per second"),
            ));
        }
        match total {
            Some(total) if rps > total => Err(invalid(
                field,
                format!("{rps} is above spec.total.requestsPerSecond ({total})"),
            )),
            _ => Ok(()),
        }
    };
    if let Some(t) = l.total {
        rate("spec.total.requestsPerSecond", t.requests_per_second)?;
    }
    if let Some(id) = l.identity {
        rate("spec.identity.requestsPerSecond", id.requests_per_second)?;
    }
    for (i, o) in l.overrides.iter().flatten().enumerate() {
        let field = format!("spec.overrides[{i}]");
        rate(&format!("{field}.requestsPerSecond"), o.requests_per_second)?;
        if o.client_refs.is_empty() {
            return Err(invalid(
                format!("{field}.clientRefs"),
                "an override names at least one client",
            ));
        }
        for (j, c) in o.client_refs.iter().enumerate() {
            let field = format!("{field}.clientRefs[{j}]");
            let ObjectRef { group, kind, .. } = c;
            if kind != "ServiceAccount" {
                return Err(invalid(
                    format!("{field}.kind"),
                    format!("{kind:?}: a client is a ServiceAccount"),
                ));
            }
            check_group(group.as_deref(), "", kind, &field)?;
        }
    }
    Ok(())
}
