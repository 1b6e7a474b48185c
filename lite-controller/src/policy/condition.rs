//! The `status` the policy.pimesh.io kinds carry (their CRDs' `status`
//! subresource): Kubernetes' `metav1.Condition`s. Types only, shared by the
//! kinds (a leaf); `status.rs` computes them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The condition type written (Linkerd's and Gateway API's).
pub const ACCEPTED: &str = "Accepted";

/// The `status` of the five policy.pimesh.io kinds (the CRDs' `status`
/// subresource).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The resource's conditions: `Accepted`, written by the controller.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// One condition (Kubernetes' `metav1.Condition`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The condition's type (`Accepted`).
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Why, in CamelCase (`Accepted`, `NoMatchingTarget`, `Conflict`).
    pub reason: String,
    /// Why, for humans (empty when accepted).
    #[serde(default)]
    pub message: String,
    /// The `metadata.generation` the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When `status` last changed (RFC 3339, seconds).
    pub last_transition_time: String,
}

/// The `status` of Gateway API's routes (`HTTPRoute`, `GRPCRoute`;
/// upstream's `RouteStatus`): one entry per parent and controller. Entries
/// are kept as JSON so that other controllers' come back untouched.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    /// `RouteParentStatus` objects: `parentRef`, `controllerName`,
    /// `conditions`.
    #[serde(default)]
    pub parents: Vec<serde_json::Value>,
}
