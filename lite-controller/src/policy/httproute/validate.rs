//! What `pimesh apply` refuses in an `HTTPRoute`, each error naming its
//! field (`spec.rules[0].backendRefs[1].port: …`): what upstream's CRD
//! schema and CEL rules refuse (ranges, paths starting with `/`, a
//! `backendRequest` longer than `request`), what pimesh does not support
//! yet (regular expressions, filters, parents other than Services and
//! Servers), and
//! the retry annotations. Also reads the annotations and Gateway API
//! durations for `policy::outbound`. No I/O.

use super::super::refs::{GROUP, LINKERD_GROUP};
use super::super::validate::{dns_label, invalid, Invalid};
use super::{
    HTTPBackendRef, HTTPRoute, HTTPRouteMatch, HTTPValueMatch, ParentReference, PathMatchType,
    ValueMatchType, RETRY_GRPC, RETRY_HTTP, RETRY_LIMIT, RETRY_TIMEOUT,
};
use crate::registry::validate::policy as service_policy;
use pimesh_api::discovery::route::RouteRetry;
use pimesh_api::discovery::ServicePolicy;
use std::collections::BTreeMap;
use std::time::Duration;

/// Gateway API's limits: parentRefs, rules, matches per rule, headers or
/// query parameters per match, backendRefs per rule.
const MAX_PARENTS: usize = 32;
pub(crate) const MAX_RULES: usize = 16;
pub(crate) const MAX_MATCHES: usize = 64;
pub(crate) const MAX_CONDITIONS: usize = 16;
pub(crate) const MAX_BACKENDS: usize = 16;
/// Largest backend weight (Gateway API).
pub const MAX_WEIGHT: i32 = 1_000_000;
/// Most retries a route may ask for.
const MAX_RETRY_LIMIT: u32 = 10;

/// Methods Gateway API's `HTTPMethod` enumerates.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// A Gateway API `Duration` (GEP-2257): 1 to 4 parts of up to 5 digits
/// and a unit `h`, `m`, `s` or `ms` (`200ms`, `1h30m`, `0s`).
///
/// # Errors
///
/// A message giving the accepted form.
pub fn gateway_duration(v: &str) -> Result<Duration, String> {
    let bad = || format!("{v:?} is not a Gateway API duration (such as 200ms, 10s, 1h30m)");
    let (mut total, mut parts, mut rest) = (Duration::ZERO, 0, v);
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if !(1..=5).contains(&digits) {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else {
            match rest.bytes().next() {
                Some(b'h') => (Duration::from_secs(3600), 1),
                Some(b'm') => (Duration::from_secs(60), 1),
                Some(b's') => (Duration::from_secs(1), 1),
                _ => return Err(bad()),
            }
        };
        rest = &rest[len..];
        total += unit * n as u32;
        parts += 1;
    }
    if parts == 0 || parts > 4 {
        return Err(bad());
    }
    Ok(total)
}

/// The route's retries from its `retry.pimesh.io/*` annotations: `None`
/// when none is set; otherwise the limit defaults to 1 (as Linkerd 2.16).
///
/// # Errors
///
/// [`Invalid`] naming the annotation (`metadata.annotations[retry.pimesh.io/limit]`):
/// a Linkerd annotation, an unknown status condition or gRPC name, a
/// limit that is not 0–10, a timeout that is not a duration above zero.
pub fn retry(
    annotations: Option<&BTreeMap<String, String>>,
) -> Result<Option<RouteRetry>, Invalid> {
    let Some(a) = annotations else {
        return Ok(None);
    };
    let field = |k: &str| format!("metadata.annotations[{k}]");
    if let Some(k) = a.keys().find(|k| k.starts_with("retry.linkerd.io/")) {
        let ours = k.replace("linkerd.io", "pimesh.io");
        return Err(invalid(
            field(k),
            format!("Linkerd's annotation; pimesh's is {ours}"),
        ));
    }
    if ![RETRY_HTTP, RETRY_GRPC, RETRY_LIMIT, RETRY_TIMEOUT]
        .iter()
        .any(|k| a.contains_key(*k))
    {
        return Ok(None);
    }
    let list = |k: &str| -> Vec<String> {
        a.get(k)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    let (http, grpc) = (list(RETRY_HTTP), list(RETRY_GRPC));
    // The same conditions as `pimesh service set`'s, checked the same way.
    let check = ServicePolicy {
        retry_http: Some(http.clone()),
        retry_grpc: Some(grpc.clone()),
        ..Default::default()
    };
    if let Err(e) = service_policy(&check) {
        let k = if e.field == "retry_http" {
            RETRY_HTTP
        } else {
            RETRY_GRPC
        };
        return Err(invalid(field(k), e.reason));
    }
    let limit = match a.get(RETRY_LIMIT) {
        None => 1,
        Some(v) => v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n <= MAX_RETRY_LIMIT)
            .ok_or_else(|| {
                invalid(
                    field(RETRY_LIMIT),
                    format!("{v:?} is not a number of retries from 0 to {MAX_RETRY_LIMIT}"),
                )
            })?,
    };
    let timeout_ms = match a.get(RETRY_TIMEOUT) {
        None => None,
        Some(v) => match pimesh_api::text::parse_positive_duration(v) {
            Ok(d) => Some(d.as_millis() as u64),
            Err(reason) => return Err(invalid(field(RETRY_TIMEOUT), reason)),
        },
    };
    Ok(Some(RouteRetry {
        limit,
        http,
        grpc,
        timeout_ms,
    }))
}

/// Whether a reference's group is the core group (`""`, or Linkerd's
/// spelling `core`).
pub(crate) fn core_group(group: Option<&str>) -> bool {
    matches!(group, Some("" | "core"))
}

/// Checks an `HTTPRoute` against upstream's schema and what pimesh
/// supports.
///
/// # Errors
///
/// [`Invalid`] naming the first field that breaks a rule.
pub fn http_route(r: &HTTPRoute) -> Result<(), Invalid> {
    retry(r.metadata.annotations.as_ref())?;
    let s = &r.spec;
    parent_refs(s.parent_refs.as_deref())?;
    let rules = s.rules.as_deref().unwrap_or_default();
    if rules.len() > MAX_RULES {
        return Err(invalid("spec.rules", format!("at most {MAX_RULES} rules")));
    }
    for (i, rule) in rules.iter().enumerate() {
        let f = format!("spec.rules[{i}]");
        if !rule.filters.as_deref().unwrap_or_default().is_empty() {
            return Err(invalid(
                format!("{f}.filters"),
                "filters are not supported yet",
            ));
        }
        let matches = rule.matches.as_deref().unwrap_or_default();
        if matches.len() > MAX_MATCHES {
            return Err(invalid(
                format!("{f}.matches"),
                format!("at most {MAX_MATCHES} matches"),
            ));
        }
        for (j, m) in matches.iter().enumerate() {
            route_match(&format!("{f}.matches[{j}]"), m)?;
        }
        let backends = rule.backend_refs.as_deref().unwrap_or_default();
        if backends.len() > MAX_BACKENDS {
            return Err(invalid(
                format!("{f}.backendRefs"),
                format!("at most {MAX_BACKENDS} backends"),
            ));
        }
        for (j, b) in backends.iter().enumerate() {
            backend_ref(&format!("{f}.backendRefs[{j}]"), b)?;
        }
        if let Some(t) = &rule.timeouts {
            let d = |name: &str, v: Option<&str>| {
                v.map(gateway_duration)
                    .transpose()
                    .map_err(|e| invalid(format!("{f}.timeouts.{name}"), e))
            };
            let request = d("request", t.request.as_deref())?;
            let backend = d("backendRequest", t.backend_request.as_deref())?;
            if let (Some(r), Some(b)) = (request, backend) {
                if !r.is_zero() && (b > r || b.is_zero()) {
                    return Err(invalid(
                        format!("{f}.timeouts.backendRequest"),
                        format!("{b:?} is longer than the request timeout {r:?}"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A route's parents: 1 to 32 Services (outbound routes) or Servers
/// (`policy.pimesh.io`, inbound routes: per-route policy, as Linkerd's
/// `policy.linkerd.io` Server parents; no `port`, the Server names it).
pub(crate) fn parent_refs(parents: Option<&[ParentReference]>) -> Result<(), Invalid> {
    let parents = parents.unwrap_or_default();
    if parents.is_empty() || parents.len() > MAX_PARENTS {
        return Err(invalid(
            "spec.parentRefs",
            format!("needs 1 to {MAX_PARENTS} parents (a route without one attaches to nothing)"),
        ));
    }
    for (i, p) in parents.iter().enumerate() {
        let f = format!("spec.parentRefs[{i}]");
        let group = p.group.as_deref();
        let server = p.kind.as_deref() == Some("Server") && group == Some(GROUP);
        if server && p.port.is_some() {
            return Err(invalid(
                format!("{f}.port"),
                "a Server parent takes no port (the Server selects it)",
            ));
        }
        if !server && (p.kind.as_deref() != Some("Service") || !core_group(group)) {
            let reason = if group == Some(LINKERD_GROUP) {
                format!("{LINKERD_GROUP:?} is Linkerd's group; a Server is in {GROUP}")
            } else {
                format!(
                    "{:?} in group {:?}: pimesh supports Service parents (group \"\", kind \
                     Service), outbound routes, and Server parents (group {GROUP}), inbound \
                     routes",
                    p.kind.as_deref().unwrap_or("Gateway"),
                    group.unwrap_or("gateway.networking.k8s.io")
                )
            };
            return Err(invalid(format!("{f}.kind"), reason));
        }
        name_and_namespace(&f, &p.name, p.namespace.as_deref())?;
        port(&format!("{f}.port"), p.port)?;
    }
    Ok(())
}

/// One backend (field `f`): a Service with a port, a weight in range, no
/// filters.
pub(crate) fn backend_ref(f: &str, b: &HTTPBackendRef) -> Result<(), Invalid> {
    let kind = b.kind.as_deref().unwrap_or("Service");
    if kind != "Service" || !b.group.as_deref().is_none_or(|g| core_group(Some(g))) {
        return Err(invalid(
            format!("{f}.kind"),
            format!("{kind:?}: backends are Services (group \"\", kind Service)"),
        ));
    }
    name_and_namespace(f, &b.name, b.namespace.as_deref())?;
    if b.port.is_none() {
        return Err(invalid(
            format!("{f}.port"),
            "a Service backend needs its port (Gateway API)",
        ));
    }
    port(&format!("{f}.port"), b.port)?;
    if let Some(w) = b.weight.filter(|w| !(0..=MAX_WEIGHT).contains(w)) {
        return Err(invalid(
            format!("{f}.weight"),
            format!("{w} is not a weight from 0 to {MAX_WEIGHT}"),
        ));
    }
    if !b.filters.as_deref().unwrap_or_default().is_empty() {
        return Err(invalid(
            format!("{f}.filters"),
            "filters are not supported yet",
        ));
    }
    Ok(())
}

fn name_and_namespace(f: &str, name: &str, ns: Option<&str>) -> Result<(), Invalid> {
    if !dns_label(name) {
        return Err(invalid(
            format!("{f}.name"),
            format!("{name:?} is not a Service name"),
        ));
    }
    match ns {
        Some(ns) if !dns_label(ns) => Err(invalid(
            format!("{f}.namespace"),
            format!("{ns:?} is not a namespace name"),
        )),
        _ => Ok(()),
    }
}

fn port(f: &str, p: Option<i32>) -> Result<(), Invalid> {
    match p {
        Some(p) if !(1..=65535).contains(&p) => Err(invalid(
            f,
            format!("{p} is out of range: a port number is 1 to 65535"),
        )),
        _ => Ok(()),
    }
}

fn route_match(f: &str, m: &HTTPRouteMatch) -> Result<(), Invalid> {
    if let Some(p) = &m.path {
        if p.kind == Some(PathMatchType::RegularExpression) {
            return Err(invalid(
                format!("{f}.path.type"),
                "RegularExpression is not supported (Exact or PathPrefix)",
            ));
        }
        if let Some(v) = &p.value {
            if !v.starts_with('/') || v.contains("//") || v.len() > 1024 {
                return Err(invalid(
                    format!("{f}.path.value"),
                    format!("{v:?} must start with '/', hold no '//' and be at most 1024 long"),
                ));
            }
        }
    }
    value_matches(&format!("{f}.headers"), m.headers.as_deref())?;
    value_matches(&format!("{f}.queryParams"), m.query_params.as_deref())?;
    if let Some(method) = &m.method {
        if !METHODS.contains(&method.as_str()) {
            return Err(invalid(
                format!("{f}.method"),
                format!("{method:?} is not one of {}", METHODS.join(", ")),
            ));
        }
    }
    Ok(())
}

/// Header or query parameter conditions (field `f`): at most 16, `Exact`,
/// each name a header token.
pub(crate) fn value_matches(f: &str, list: Option<&[HTTPValueMatch]>) -> Result<(), Invalid> {
    let list = list.unwrap_or_default();
    if list.len() > MAX_CONDITIONS {
        return Err(invalid(f, format!("at most {MAX_CONDITIONS} conditions")));
    }
    for (k, c) in list.iter().enumerate() {
        if c.kind == Some(ValueMatchType::RegularExpression) {
            return Err(invalid(
                format!("{f}[{k}].type"),
                "RegularExpression is not supported (Exact)",
            ));
        }
        let token = !c.name.is_empty()
            && c.name.len() <= 256
            && http::HeaderName::from_bytes(c.name.as_bytes()).is_ok();
        if !token {
            return Err(invalid(
                format!("{f}[{k}].name"),
                format!("{:?} is not a header or parameter name", c.name),
            ));
        }
    }
    Ok(())
}
