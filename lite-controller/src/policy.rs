//! The authorization policy resources, `policy.pimesh.io/v1alpha1`, shaped
//! as Linkerd's `policy.linkerd.io` ones (linkerd2
//! `charts/linkerd-crds/templates/policy/*.yaml`; linkerd.io/2/reference/
//! authorization-policy) so that a Linkerd manifest ports by changing its
//! API group: [`Server`], [`AuthorizationPolicy`], [`MeshTLSAuthentication`],
//! [`NetworkAuthentication`], [`HTTPLocalRateLimitPolicy`]; and Gateway
//! API's [`HTTPRoute`] and `GRPCRoute` (`gateway.networking.k8s.io/v1`) for
//! outbound routes (a Service parent) and per-route policy (a Server
//! parent).
//!
//! Layout:
//! - `refs`: the groups, references and label selector the kinds share.
//! - `server`: `Server` (pods, port, protocol, access policy).
//! - `authz`: `AuthorizationPolicy` (target, required authentications).
//! - `authn`: `MeshTLSAuthentication`, `NetworkAuthentication`.
//! - `ratelimit`: `HTTPLocalRateLimitPolicy`.
//! - `httproute`: Gateway API's `HTTPRoute` (outbound routes, traffic
//!   split, timeouts, retry annotations) and its checks.
//! - `grpcroute`: Gateway API's `GRPCRoute`, on `httproute`'s parts.
//! - `outbound`: the routes of one Service, for its discovery watch.
//! - `parents`: routes' `Server` parents (inbound routes, per-route policy).
//! - `resource`: [`Resource`], one document of any kind, parsed and checked.
//! - `validate`: what the CRD schema cannot say, each error naming its field.
//! - `index`: which stored resources take effect, and why not.
//! - `condition`: the kinds' `status` (Kubernetes conditions), a leaf.
//! - `conflict`: Servers that an older one keeps from every pod.
//! - `status`: a resource's Kubernetes `status` (conditions, route
//!   parents) from its `index` status, written by `kube/policy/status.rs`.
//! - `inbound`: the inbound policy of one proxy's ports (with each
//!   Server's routes and their authorizations), for its stream.
//! - `ports`: Servers' named ports resolved against a pod's container ports.
//! - `snapshot`: the resources at one revision, from either source, for
//!   the streams and `pimesh policy ls`.
//! - `stored`: standalone mode's resources in sled (`pimesh apply -f`);
//!   Kubernetes mode's come from `kube/policy.rs`'s watches.
//! - `crd`: the CustomResourceDefinitions from these types (`pimesh
//!   install --crds`, `k3s/pimesh-crds.yaml`).

pub mod authn;
pub mod authz;
pub mod condition;
pub mod conflict;
pub mod crd;
pub mod grpcroute;
pub mod httproute;
pub mod inbound;
pub mod index;
pub mod outbound;
pub mod parents;
pub mod ports;
pub mod ratelimit;
pub mod refs;
pub mod resource;
pub mod server;
pub mod snapshot;
pub mod status;
pub mod stored;
pub mod validate;

pub use authn::{
    MeshTLSAuthentication, MeshTLSAuthenticationSpec, Network, NetworkAuthentication,
    NetworkAuthenticationSpec,
};
pub use authz::{AuthorizationPolicy, AuthorizationPolicySpec};
pub use httproute::{HTTPRoute, HTTPRouteSpec};
pub use ratelimit::{HTTPLocalRateLimitPolicy, HTTPLocalRateLimitPolicySpec};
pub use refs::{
    LabelSelector, LabelSelectorRequirement, ObjectRef, SelectorOperator, TargetRef, GATEWAY_GROUP,
    GROUP, LINKERD_GROUP, VERSION,
};
pub use resource::{validate, Resource};
pub use server::{AccessPolicy, Port, ProxyProtocol, Server, ServerSpec};
pub use validate::Invalid;

#[cfg(test)]
mod tests;
