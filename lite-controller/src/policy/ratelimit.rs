//! `HTTPLocalRateLimitPolicy`: requests per second a Server's proxy
//! admits, in total, per client identity, and for chosen clients (Linkerd
//! 2.17's `HTTPLocalRateLimitPolicy`, `policy.linkerd.io/v1alpha1`:
//! `targetRef`, `total`, `identity`, `overrides`). Requests above it get
//! 429.

use super::refs::{ObjectRef, TargetRef};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Local rate limits for the HTTP traffic to one Server.
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "policy.pimesh.io",
    version = "v1alpha1",
    kind = "HTTPLocalRateLimitPolicy",
    status = "super::condition::Status",
    doc = "Rate limits for the HTTP traffic to one Server (as Linkerd's HTTPLocalRateLimitPolicy).",
    plural = "httplocalratelimitpolicies",
    singular = "httplocalratelimitpolicy",
    namespaced,
    printcolumn = r#"{"name":"Target_kind","type":"string","description":"The resource kind to which the rate-limit applies","jsonPath":".spec.targetRef.kind"}"#,
    printcolumn = r#"{"name":"Target_name","type":"string","description":"The resource name to which the rate-limit applies","jsonPath":".spec.targetRef.name"}"#,
    printcolumn = r#"{"name":"Total_RPS","type":"integer","format":"int32","description":"The overall rate-limit","jsonPath":".spec.total.requestsPerSecond"}"#,
    printcolumn = r#"{"name":"Identity_RPS","type":"integer","format":"int32","description":"The rate-limit per identity","jsonPath":".spec.identity.requestsPerSecond"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct HTTPLocalRateLimitPolicySpec {
    /// TargetRef references a resource to which the rate limit policy
    /// applies. Only Server is allowed.
    pub target_ref: TargetRef,
    /// Overall rate-limit, which all traffic coming to this target should
    /// abide. If unset no overall limit is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<Limit>,
    /// Fairness for individual identities; each separate client, grouped by
    /// identity, will have this rate-limit. At most `total`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Limit>,
    /// Overrides for traffic from specific clients. Each at most `total`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<Vec<Override>>,
}

/// A rate in requests per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Limit {
    /// Requests per second, at least 1.
    #[schemars(range(min = 1))]
    pub requests_per_second: i64,
}

/// The limit for the clients `clientRefs` names (ServiceAccounts).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Override {
    /// Requests per second, at least 1.
    #[schemars(range(min = 1))]
    pub requests_per_second: i64,
    /// The clients, by `ServiceAccount`.
    pub client_refs: Vec<ObjectRef>,
}
