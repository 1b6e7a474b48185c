//! `GRPCRoute` (Gateway API, `gateway.networking.k8s.io/v1`): outbound
//! routes for gRPC by service and method, as Linkerd's: parentRefs to a
//! Service, rules' matches (`method` by `service` and/or `method`,
//! `Exact`; `headers`), weighted `backendRefs` to Services, and the
//! `retry.pimesh.io/*` annotations (`retry.pimesh.io/grpc` for status
//! names). It reuses `HTTPRoute`'s parts (parents, backends, header
//! conditions, their checks) and reaches proxies as an HTTP route on the
//! request path (`/SERVICE/METHOD`, gRPC's over HTTP/2). The CRD is
//! upstream's.

use super::httproute::validate::{
    backend_ref, parent_refs, retry, value_matches, MAX_BACKENDS, MAX_MATCHES, MAX_RULES,
};
use super::httproute::{HTTPBackendRef, HTTPRouteFilter, HTTPValueMatch, ParentReference};
use super::validate::{invalid, Invalid};
use kube::CustomResource;
use pimesh_api::discovery::route::{PathMatch, RouteMatch};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Routes gRPC requests to a parent Service among backend Services.
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "GRPCRoute",
    status = "super::condition::RouteStatus",
    doc = "Routes gRPC requests to its parent Services among backend Services (Gateway API's GRPCRoute; the CRD is upstream's).",
    plural = "grpcroutes",
    singular = "grpcroute",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct GRPCRouteSpec {
    /// The Services the route attaches to (as `HTTPRoute`'s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_refs: Option<Vec<ParentReference>>,
    /// Host names (not used for Service parents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostnames: Option<Vec<String>>,
    /// The rules, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<GRPCRouteRule>>,
}

/// One rule (Gateway API's `GRPCRouteRule`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GRPCRouteRule {
    /// The rule's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Requests matching any of these take the rule; none: every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<Vec<GRPCRouteMatch>>,
    /// Filters: not supported yet (refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Vec<HTTPRouteFilter>>,
    /// Where matching requests go, by weight; none: the parent Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_refs: Option<Vec<HTTPBackendRef>>,
}

/// One match (Gateway API's `GRPCRouteMatch`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GRPCRouteMatch {
    /// The gRPC service and method; every one when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<GRPCMethodMatch>,
    /// Header conditions (metadata), all of which must hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<HTTPValueMatch>>,
}

/// A gRPC service and method condition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GRPCMethodMatch {
    /// `Exact` (default); `RegularExpression` is not supported.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The fully-qualified service (`shop.Cart`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The method (`Add`); needs `service` here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

impl GRPCRouteMatch {
    /// The HTTP match of the same requests: `/SERVICE/METHOD` exactly, or
    /// the `/SERVICE` prefix.
    pub fn to_http(&self) -> RouteMatch {
        let m = self.method.clone().unwrap_or_default();
        let path = match (m.service, m.method) {
            (Some(s), Some(m)) => Some(PathMatch::Exact(format!("/{s}/{m}"))),
            (Some(s), None) => Some(PathMatch::PathPrefix(format!("/{s}"))),
            _ => None,
        };
        RouteMatch {
            path,
            headers: self
                .headers
                .iter()
                .flatten()
                .map(|h| pimesh_api::discovery::route::NameValue {
                    name: h.name.clone(),
                    value: h.value.clone(),
                })
                .collect(),
            ..Default::default()
        }
    }
}

/// A gRPC service or method name: letters, digits, `_` and (services)
/// `.`, as Gateway API's patterns.
fn grpc_name(v: &str, dots: bool) -> bool {
    !v.is_empty()
        && v.len() <= 1024
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || (dots && b == b'.'))
}

/// Checks a `GRPCRoute` against upstream's schema and what pimesh supports.
///
/// # Errors
///
/// [`Invalid`] naming the first field that breaks a rule.
pub fn validate(r: &GRPCRoute) -> Result<(), Invalid> {
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
            let mf = format!("{f}.matches[{j}]");
            if let Some(g) = &m.method {
                if g.kind.as_deref().is_some_and(|k| k != "Exact") {
                    return Err(invalid(
                        format!("{mf}.method.type"),
                        format!("{:?} is not supported (Exact)", g.kind),
                    ));
                }
                match (&g.service, &g.method) {
                    (None, None) => {
                        return Err(invalid(
                            format!("{mf}.method"),
                            "one of service and method is required",
                        ))
                    }
                    (None, Some(_)) => {
                        return Err(invalid(
                            format!("{mf}.method.service"),
                            "a method without its service is not supported",
                        ))
                    }
                    (Some(sv), _) if !grpc_name(sv, true) => {
                        return Err(invalid(
                            format!("{mf}.method.service"),
                            format!("{sv:?} is not a gRPC service name"),
                        ))
                    }
                    (_, Some(me)) if !grpc_name(me, false) => {
                        return Err(invalid(
                            format!("{mf}.method.method"),
                            format!("{me:?} is not a gRPC method name"),
                        ))
                    }
                    _ => {}
                }
            }
            value_matches(&format!("{mf}.headers"), m.headers.as_deref())?;
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
    }
    Ok(())
}
