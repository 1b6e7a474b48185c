//! The authentications an `AuthorizationPolicy` requires (Linkerd's
//! `policy.linkerd.io/v1alpha1`): `MeshTLSAuthentication` (the client's
//! mesh identity) and `NetworkAuthentication` (the client's address).

use super::refs::{GROUP_PATTERN, KIND_PATTERN};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A mesh identity, or `*` / `*.` + a suffix (Linkerd's pattern).
pub(crate) const IDENTITY_PATTERN: &str =
    r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// MeshTLSAuthentication defines a list of authenticated client IDs to be
/// referenced by an `AuthorizationPolicy`: exactly one of `identities` and
/// `identityRefs`.
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "policy.pimesh.io",
    version = "v1alpha1",
    kind = "MeshTLSAuthentication",
    status = "super::condition::Status",
    doc = "Authenticates clients by their mesh identity (as Linkerd's MeshTLSAuthentication).",
    plural = "meshtlsauthentications",
    singular = "meshtlsauthentication",
    namespaced
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("oneOf" = [{"required": ["identities"]}, {"required": ["identityRefs"]}]))]
pub struct MeshTLSAuthenticationSpec {
    /// Authorizes clients with the provided proxy identity strings (as
    /// provided via mTLS): `SA.NS.serviceaccount.identity.pimesh.TRUST_DOMAIN`.
    /// The `*` prefix can be used to match all identities in a domain
    /// (`*.shop.serviceaccount.identity.pimesh.cluster.local`). An identity
    /// string of `*` indicates that all authenticated clients are
    /// authorized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(length(max = 253), regex(pattern = IDENTITY_PATTERN)))]
    pub identities: Option<Vec<String>>,
    /// Authorizes clients by their ServiceAccount (a named one, or every
    /// one of a namespace when the name is left out) or their Namespace
    /// (every ServiceAccount in it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_refs: Option<Vec<IdentityRef>>,
}

/// A `ServiceAccount` or `Namespace` whose identities are authorized.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IdentityRef {
    /// Group is the group of the referent. When empty, the Kubernetes core
    /// API group is inferred.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253), regex(pattern = GROUP_PATTERN))]
    pub group: Option<String>,
    /// Kind is the kind of the referent: `ServiceAccount` or `Namespace`.
    #[schemars(length(min = 1, max = 63), regex(pattern = KIND_PATTERN))]
    pub kind: String,
    /// Name is the name of the referent. When unspecified, this refers to
    /// all resources of the specified Group and Kind in the specified
    /// namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub name: Option<String>,
    /// Namespace of the referent. When unspecified, the authentication's
    /// own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub namespace: Option<String>,
}

/// The most networks one NetworkAuthentication lists.
pub const MAX_NETWORKS: usize = 256;

/// NetworkAuthentication defines a list of authenticated client networks
/// to be referenced by an `AuthorizationPolicy`.
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "policy.pimesh.io",
    version = "v1alpha1",
    kind = "NetworkAuthentication",
    status = "super::condition::Status",
    doc = "Authenticates clients by their source network (as Linkerd's NetworkAuthentication).",
    plural = "networkauthentications",
    singular = "networkauthentication",
    namespaced
)]
pub struct NetworkAuthenticationSpec {
    /// The networks whose clients are authenticated (1 to
    /// [`MAX_NETWORKS`]; the bound keeps the API server's CEL cost
    /// estimate of the `cidr` rule within its budget).
    #[schemars(length(min = 1, max = 256))]
    pub networks: Vec<Network>,
}

/// One authenticated network, less its exceptions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Network {
    /// The CIDR of the network to be authorized (`10.42.0.0/16`,
    /// `fd00::/8`; a bare address is a /32 or /128).
    #[schemars(length(min = 1, max = 43), extend("x-kubernetes-validations" = [{
        "rule": "isCIDR(self) ? cidr(self).ip() == cidr(self).masked().ip() : isIP(self)",
        "message": "a network address in CIDR notation, such as 10.42.0.0/16, or an IP address"
    }]))]
    pub cidr: String,
    /// A list of IP networks/addresses not to be included in the above
    /// `cidr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(length(min = 1, max = 43)))]
    pub except: Option<Vec<String>>,
}
