//! The outbound HTTP routes of a service, as its watch carries them
//! (`Resolution::routes`): the Gateway API `HTTPRoute`s whose parentRef is
//! the service, resolved by the controller (as Linkerd's OutboundPolicies
//! API carries a Service's `HttpRoute`s). Routes are in precedence order
//! for ties (oldest `creationTimestamp` first, then `NAMESPACE/NAME`);
//! the proxy orders the matches themselves (Gateway API's precedence).

use serde::{Deserialize, Serialize};

/// One `HTTPRoute` attached to the watched service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpRoute {
    /// `NAMESPACE/NAME` of the HTTPRoute, for logs.
    pub name: String,
    /// Its rules, in order.
    #[serde(default)]
    pub rules: Vec<RouteRule>,
}

/// One rule: which requests, to which backends, with which timeouts and
/// retries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteRule {
    /// Requests matching any of these take the rule; empty: every request
    /// (Gateway API's default match, `PathPrefix /`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<RouteMatch>,
    /// Where requests go, picked per request by weight; empty: the parent
    /// service itself (as Linkerd).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<Backend>,
    /// Whole request, retries included, until the response head, ms
    /// (Gateway API's `timeouts.request`); then 504.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Each try to a backend, ms (`timeouts.backendRequest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_timeout_ms: Option<u64>,
    /// Retries, from the route's `retry.pimesh.io/*` annotations (as
    /// Linkerd 2.16's `retry.linkerd.io/*`); `None`: the backend
    /// service's own retry settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RouteRetry>,
}

/// One `HTTPRouteMatch`: every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteMatch {
    /// The path condition; `None`: `PathPrefix /`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// Headers that must be present with these exact values (names are
    /// case-insensitive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<NameValue>,
    /// Query parameters that must be present with these exact values
    /// (names case-sensitive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<NameValue>,
    /// The request method (`GET`), exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// A path condition (Gateway API's `PathMatchType`s Linkerd supports).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value")]
pub enum PathMatch {
    /// The whole path, exactly.
    Exact(String),
    /// A prefix of whole path segments (`/api` matches `/api` and
    /// `/api/x`, not `/apix`; a trailing `/` is ignored).
    PathPrefix(String),
}

/// An exact header or query parameter condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameValue {
    /// The header or parameter name.
    pub name: String,
    /// Its value, exactly.
    pub value: String,
}

/// A backend service of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    /// `NAME.NAMESPACE` of the Service.
    pub service: String,
    /// Its port; `None`: the parent's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Share of the rule's requests, relative to the other backends'
    /// (Gateway API's `weight`, default 1; 0: none).
    pub weight: u32,
}

/// A route's retries (Linkerd 2.16's retry annotations).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRetry {
    /// Retries after the first try (`retry.pimesh.io/limit`, default 1).
    pub limit: u32,
    /// HTTP statuses retried (`retry.pimesh.io/http`: `5xx`, `503`,
    /// `500-504`, `gateway-error`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<String>,
    /// gRPC status names retried (`retry.pimesh.io/grpc`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grpc: Vec<String>,
    /// Each try's timeout, ms (`retry.pimesh.io/timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}
