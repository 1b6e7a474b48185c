//! `HTTPRoute` (Gateway API, `gateway.networking.k8s.io/v1`): the subset
//! Linkerd supports for outbound routes — parentRefs to a Service, rules'
//! matches (path `Exact`/`PathPrefix`, headers and query parameters
//! `Exact`, method), weighted `backendRefs` to Services (traffic split),
//! `timeouts.request`/`.backendRequest`, and retries through the route's
//! annotations as Linkerd 2.16's `retry.linkerd.io/*` (here
//! `retry.pimesh.io/http`, `/grpc`, `/limit`, `/timeout`).
//!
//! The type mirrors upstream's (gateway-api `apis/v1/httproute_types.go`)
//! so that a Kubernetes watch can read the objects of the upstream CRD,
//! which users install from a Gateway API release: pimesh does not
//! generate its own. Its checks are in `httproute/validate`.

pub mod validate;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The Gateway API version of the routes.
pub const GATEWAY_VERSION: &str = "v1";

/// Annotation: retried HTTP statuses, comma-separated (`5xx`, `503`,
/// `500-504`, `gateway-error`), as Linkerd's `retry.linkerd.io/http`.
pub const RETRY_HTTP: &str = "retry.pimesh.io/http";
/// Annotation: retried gRPC status names, comma-separated
/// (`unavailable,internal`), as Linkerd's `retry.linkerd.io/grpc`.
pub const RETRY_GRPC: &str = "retry.pimesh.io/grpc";
/// Annotation: retries after the first try (default 1), as Linkerd's
/// `retry.linkerd.io/limit`.
pub const RETRY_LIMIT: &str = "retry.pimesh.io/limit";
/// Annotation: each try's timeout (`300ms`), as Linkerd's
/// `retry.linkerd.io/timeout`.
pub const RETRY_TIMEOUT: &str = "retry.pimesh.io/timeout";

/// Routes HTTP requests to a parent Service among backend Services.
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "HTTPRoute",
    status = "super::condition::RouteStatus",
    doc = "Routes HTTP requests to its parent Services among backend Services (Gateway API's HTTPRoute; the CRD is upstream's).",
    plural = "httproutes",
    singular = "httproute",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteSpec {
    /// The resources the route attaches to: Services (`group: ""`,
    /// `kind: Service`), each with an optional port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_refs: Option<Vec<ParentReference>>,
    /// Host names the route applies to (not used for Service parents, as
    /// Linkerd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostnames: Option<Vec<String>>,
    /// The rules, in order; the default is one rule sending every
    /// request to the parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<HTTPRouteRule>>,
}

/// A route's parent (Gateway API's `ParentReference`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    /// The referent's group: `""` (or Linkerd's `core`) for a Service.
    /// Gateway API's default is `gateway.networking.k8s.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The referent's kind: `Service`. Gateway API's default is `Gateway`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The referent's namespace; the route's when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The referent's name.
    pub name: String,
    /// A section of the parent (not used for Services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// The Service port the route applies to; every port when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

/// One rule (Gateway API's `HTTPRouteRule`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteRule {
    /// The rule's name, for status and logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Requests matching any of these take the rule; default: `PathPrefix /`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<Vec<HTTPRouteMatch>>,
    /// Request filters: not supported yet (refused, rather than ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Vec<HTTPRouteFilter>>,
    /// Where matching requests go, picked per request by weight; none:
    /// the parent Service itself (as Linkerd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_refs: Option<Vec<HTTPBackendRef>>,
    /// The rule's timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<HTTPRouteTimeouts>,
}

/// One match: every condition given must hold (Gateway API's
/// `HTTPRouteMatch`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteMatch {
    /// The path condition; default `PathPrefix /`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HTTPPathMatch>,
    /// Header conditions, all of which must hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<HTTPValueMatch>>,
    /// Query parameter conditions, all of which must hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_params: Option<Vec<HTTPValueMatch>>,
    /// The request method (`GET`, `POST`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// A path condition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HTTPPathMatch {
    /// How `value` is compared; default `PathPrefix`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<PathMatchType>,
    /// The path or prefix, starting with `/`; default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// How a path is compared (Gateway API's `PathMatchType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PathMatchType {
    /// The whole path.
    Exact,
    /// A prefix of whole path segments.
    PathPrefix,
    /// A regular expression: not supported (refused).
    RegularExpression,
}

/// A header or query parameter condition (Gateway API's
/// `HTTPHeaderMatch` / `HTTPQueryParamMatch`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HTTPValueMatch {
    /// How `value` is compared; default `Exact`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ValueMatchType>,
    /// The header (case-insensitive) or parameter (case-sensitive) name.
    pub name: String,
    /// The value.
    pub value: String,
}

/// How a header or query value is compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ValueMatchType {
    /// Exactly.
    Exact,
    /// A regular expression: not supported (refused).
    RegularExpression,
}

/// A filter, by type only: pimesh applies none yet and refuses them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HTTPRouteFilter {
    /// The filter's type (`RequestHeaderModifier`, …).
    #[serde(rename = "type")]
    pub kind: String,
}

/// A backend (Gateway API's `HTTPBackendRef`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HTTPBackendRef {
    /// The referent's group: `""` for a Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The referent's kind; default `Service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The Service's name.
    pub name: String,
    /// The Service's namespace; the route's when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The Service port (required for a Service, as Gateway API says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Share of the rule's requests relative to the other backends',
    /// 0 to 1,000,000; default 1; 0: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    /// Backend filters: not supported yet (refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Vec<HTTPRouteFilter>>,
}

/// A rule's timeouts, Gateway API `Duration`s (`200ms`, `1h30m`; `0s`:
/// none).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteTimeouts {
    /// The whole request, retries included, until the response head; 504
    /// after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// Each try to a backend; at most `request`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<String>,
}
