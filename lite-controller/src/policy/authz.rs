//! `AuthorizationPolicy`: admits the clients that pass every listed
//! authentication to a target (Linkerd's `AuthorizationPolicy`,
//! `policy.linkerd.io/v1alpha1`: `targetRef`, `requiredAuthenticationRefs`).

use super::refs::{ObjectRef, TargetRef};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Authorizes clients to communicate with pimesh-proxied server resources.
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "policy.pimesh.io",
    version = "v1alpha1",
    kind = "AuthorizationPolicy",
    status = "super::condition::Status",
    doc = "Authorizes clients to communicate with the Servers, HTTPRoutes or Namespace it targets (as Linkerd's AuthorizationPolicy).",
    plural = "authorizationpolicies",
    singular = "authorizationpolicy",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    /// TargetRef references a resource to which the authorization policy
    /// applies: a `Server` (policy.pimesh.io), an `HTTPRoute` or a
    /// `GRPCRoute` (gateway.networking.k8s.io) with a Server parent (that
    /// route only), or the policy's `Namespace` (every Server in it).
    pub target_ref: TargetRef,
    /// RequiredAuthenticationRefs enumerates a set of required
    /// authentications: `MeshTLSAuthentication` and `NetworkAuthentication`
    /// (policy.pimesh.io), or a `ServiceAccount` (core).
    pub required_authentication_refs: Vec<ObjectRef>,
}
